//! Raw capture: the lines terminals send, as they sent them, so that
//! `ingestor replay` can put them through the same conversion again (a bug
//! in the conversion can be reproduced and its fix checked).
//!
//! One line per terminal line: `{"t": <UTC epoch ms on arrival>, "conn":
//! <connection id>, "account": "<label>", "line": "<the line as a JSON
//! string>"}`. The `hello` is stored without its key. Writing goes through
//! a bounded queue to its own task: a slow disk drops capture lines
//! (counted), never terminal lines.

use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Capture lines waiting for the disk.
const QUEUE: usize = 65_536;

/// One captured terminal line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RawLine {
    /// Arrival, UTC epoch ms.
    pub t: i64,
    /// Connection id: lines of one connection share it.
    pub conn: u64,
    /// The account the connection publishes under.
    pub account: String,
    /// The line as received (UTF-8, lossy), without its newline.
    pub line: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot create the raw capture in {path}: {source}")]
pub struct CaptureError {
    path: PathBuf,
    source: std::io::Error,
}

/// The connections' handle to the capture file.
#[derive(Clone)]
pub struct Capture {
    /// Lines for the writer task.
    tx: mpsc::Sender<RawLine>,
    /// Counts dropped lines.
    metrics: Arc<Metrics>,
}

impl Capture {
    /// Creates `DIR/<UTC time>.raw.ndjson` and starts its writer; the task
    /// ends once every [`Capture`] clone is dropped.
    pub async fn open(
        dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<(Capture, JoinHandle<()>, PathBuf), CaptureError> {
        let (path, file) = crate::record::create_timestamped(dir, ".raw.ndjson")
            .await
            .map_err(|(path, source)| CaptureError { path, source })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write(file, rx, path.clone()));
        tracing::info!(path = %path.display(), "capturing raw terminal lines");
        Ok((Capture { tx, metrics }, task, path))
    }

    /// Queues a line (a `hello` loses its key first).
    pub fn line(&self, t: i64, conn: u64, account: &str, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let line = match strip_key(&text) {
            Some(stripped) => stripped,
            None => text.into_owned(),
        };
        let raw = RawLine {
            t,
            conn,
            account: account.to_owned(),
            line,
        };
        if self.tx.try_send(raw).is_err() {
            Metrics::add(&self.metrics.capture_dropped, 1);
        }
    }
}

/// A `hello` without its `key`; `None` for any other line.
fn strip_key(text: &str) -> Option<String> {
    if !text.contains("\"hello\"") {
        return None;
    }
    let mut v: Value = serde_json::from_str(text).ok()?;
    let obj = v.as_object_mut()?;
    if obj.get("type")?.as_str()? != "hello" {
        return None;
    }
    obj.remove("key");
    serde_json::to_string(&v).ok()
}

async fn write(file: tokio::fs::File, mut rx: mpsc::Receiver<RawLine>, path: PathBuf) {
    let mut out = tokio::io::BufWriter::new(file);
    let mut failed = false;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for raw in batch {
            let Ok(mut line) = serde_json::to_vec(&raw) else {
                continue;
            };
            line.push(b'\n');
            if let Err(e) = out.write_all(&line).await {
                if !failed {
                    tracing::warn!(path = %path.display(), error = %e, "raw capture write failed");
                }
                failed = true;
            }
        }
        // Flushed whenever the queue runs dry: a crash loses little.
        let _ = out.flush().await;
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_loses_its_key_only() {
        let s =
            strip_key(r#"{"type":"hello","key":"secret-secret-secret","account":"a"}"#).unwrap();
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("\"account\":\"a\""));
        assert_eq!(strip_key(r#"{"type":"log","message":"hello"}"#), None);
        assert_eq!(strip_key("\"hello\" not json"), None);
    }

    #[tokio::test]
    async fn writes_lines_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cap, task, path) = Capture::open(dir.path(), Metrics::new()).await.unwrap();
        cap.line(1, 7, "a", br#"{"type":"hello","key":"k","gmt_offset_s":0}"#);
        cap.line(2, 7, "a", b"{\"type\":\"heartbeat\"}");
        drop(cap);
        task.await.unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<RawLine> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert!(!lines[0].line.contains("\"key\""));
        assert_eq!((lines[1].t, lines[1].conn), (2, 7));
    }
}
