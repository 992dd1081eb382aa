//! Recording the bus to NDJSON files, for replay and for test fixtures.
//!
//! A recording is what the gateway would have seen: every message under
//! the prefix, with its subject, its payload byte-for-byte (as raw JSON) and
//! when it arrived. One line per message:
//! `{"t": <epoch ms>, "subject": "...", "payload": <payload>}`.

use bus::{Bus, BusError, Subscription};
use futures::StreamExt;
use protocol::SubjectScheme;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio_util::sync::CancellationToken;

/// How often buffered lines reach the file: a crash loses at most this much.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One recorded message. The payload is kept as raw JSON so a replay
/// publishes exactly the bytes' meaning that was recorded.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recorded {
    pub t: i64,
    pub subject: String,
    pub payload: Box<RawValue>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot create recording in {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Subscribe(#[from] BusError),
}

/// A recorder that has subscribed and opened its file, and is ready to run.
pub struct Recorder {
    sub: Subscription,
    path: PathBuf,
    out: BufWriter<tokio::fs::File>,
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSummary {
    pub path: PathBuf,
    pub lines: u64,
    pub skipped: u64,
}

/// Subscribes to everything under the prefix and records it until
/// `shutdown`.
pub async fn run(
    bus: Bus,
    scheme: SubjectScheme,
    dir: PathBuf,
    shutdown: CancellationToken,
) -> Result<RecordSummary, RecordError> {
    Recorder::open(&bus, &scheme, &dir)
        .await?
        .run(shutdown)
        .await
}

/// Creates `DIR/<UTC time><suffix>` (and `DIR`): a new file for every
/// recording or raw capture, never appending to an earlier run's. On error,
/// the path that could not be made.
pub(crate) async fn create_timestamped(
    dir: &Path,
    suffix: &str,
) -> Result<(PathBuf, tokio::fs::File), (PathBuf, std::io::Error)> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| (dir.to_owned(), e))?;
    let name = format!(
        "{}{suffix}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let path = dir.join(name);
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|e| (path.clone(), e))?;
    Ok((path, file))
}

impl Recorder {
    /// Subscribes first and then creates `DIR/<UTC time>.ndjson`, so that
    /// nothing published after this returns is missed.
    pub async fn open(bus: &Bus, scheme: &SubjectScheme, dir: &Path) -> Result<Self, RecordError> {
        let sub = bus.subscribe(&scheme.all()).await?;
        let (path, file) = create_timestamped(dir, ".ndjson")
            .await
            .map_err(|(path, source)| RecordError::Create { path, source })?;
        Ok(Recorder {
            sub,
            path,
            out: BufWriter::with_capacity(256 * 1024, file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn run(mut self, shutdown: CancellationToken) -> Result<RecordSummary, RecordError> {
        tracing::info!(path = %self.path.display(), "recording");
        let mut summary = RecordSummary {
            path: self.path.clone(),
            lines: 0,
            skipped: 0,
        };
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut line = Vec::with_capacity(1024);
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = flush.tick() => {
                    self.flush().await?;
                    continue;
                }
                m = self.sub.next() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let payload = match serde_json::from_slice::<&RawValue>(&msg.payload) {
                Ok(p) => p,
                Err(e) => {
                    summary.skipped += 1;
                    tracing::warn!(subject = %msg.subject, error = %e, "not recording a payload that is not JSON");
                    continue;
                }
            };
            line.clear();
            let entry = RecordedRef {
                t: protocol::time::now_epoch_ms(),
                subject: &msg.subject,
                payload,
            };
            // Writing into a Vec only fails for non-string map keys, which
            // this struct does not have.
            if serde_json::to_writer(&mut line, &entry).is_err() {
                summary.skipped += 1;
                continue;
            }
            line.push(b'\n');
            self.out
                .write_all(&line)
                .await
                .map_err(|source| RecordError::Write {
                    path: self.path.clone(),
                    source,
                })?;
            summary.lines += 1;
        }
        self.flush().await?;
        tracing::info!(path = %summary.path.display(), lines = summary.lines, skipped = summary.skipped, "recording closed");
        Ok(summary)
    }

    async fn flush(&mut self) -> Result<(), RecordError> {
        self.out.flush().await.map_err(|source| RecordError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// [`Recorded`] borrowing from the bus message, to write without copying.
#[derive(Serialize)]
struct RecordedRef<'a> {
    t: i64,
    subject: &'a str,
    payload: &'a RawValue,
}
