//! Replaying a recording (see [`crate::record`]) onto the bus, with its
//! original pacing. A raw capture of terminal lines
//! ([`crate::bridge::capture`]) is replayed through the bridge's own
//! conversion ([`crate::bridge::session`]), connection by connection, with
//! the capture's arrival times as "now": a conversion bug is reproduced, and
//! its fix checked, from what the terminal really sent.
//!
//! Used for demos with real market data, for reproducing what a dashboard
//! saw, and for load tests (`speed` 0 sends as fast as the bus takes it).
//! Timing is measured from the start of each pass rather than slept line by
//! line, so a long replay does not drift.

use crate::bridge::capture::RawLine;
use crate::bridge::clock::Clocks;
use crate::bridge::session::{read_hello, LineFault, Session};
use crate::ndjson::{Line, LineReader};
use crate::publisher::{FailureLog, Publisher};
use crate::record::Recorded;
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Recorded positions snapshots can be large; still, bound what one line
/// may allocate.
const MAX_LINE: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    pub file: PathBuf,
    /// 1.0 is real time, 2.0 twice as fast, 0 as fast as possible.
    pub speed: f64,
    /// Start over at the end of the file, until shut down.
    pub looping: bool,
    /// Set top-level `timestamp`/`time` fields (and signal validators'
    /// timestamps) to the time of publishing.
    pub retime: bool,
    /// Publish under this account instead of the recorded one.
    pub account: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("speed must be a finite number >= 0, got {0}")]
    Speed(f64),
    #[error("{0} has no line that can be replayed")]
    Empty(PathBuf),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub published: u64,
    pub skipped: u64,
    pub passes: u64,
}

/// Replays `opts.file` through `publisher` (which supplies fresh message ids
/// and trace context) until the end, or forever with `looping`.
pub async fn run(
    publisher: Publisher,
    opts: ReplayOptions,
    shutdown: CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    if !(opts.speed.is_finite() && opts.speed >= 0.0) {
        return Err(ReplayError::Speed(opts.speed));
    }
    let mut summary = ReplaySummary::default();
    let mut failures = FailureLog::default();
    loop {
        let outcome = pass(&publisher, &opts, &shutdown, &mut summary, &mut failures).await?;
        summary.passes += 1;
        match outcome {
            // A file with nothing to replay would make `--loop` spin forever.
            Pass::Finished { replayable: 0 } => return Err(ReplayError::Empty(opts.file.clone())),
            Pass::Finished { .. } if opts.looping => continue,
            Pass::Finished { .. } | Pass::Stopped => break,
        }
    }
    tracing::info!(
        published = summary.published,
        skipped = summary.skipped,
        passes = summary.passes,
        publish_failures = failures.failures(),
        "replay finished"
    );
    Ok(summary)
}

enum Pass {
    Finished { replayable: u64 },
    Stopped,
}

/// One pass over the file.
async fn pass(
    publisher: &Publisher,
    opts: &ReplayOptions,
    shutdown: &CancellationToken,
    summary: &mut ReplaySummary,
    failures: &mut FailureLog,
) -> Result<Pass, ReplayError> {
    let read_err = |source| ReplayError::Read {
        path: opts.file.clone(),
        source,
    };
    let file = tokio::fs::File::open(&opts.file).await.map_err(read_err)?;
    let mut lines = LineReader::new(file, MAX_LINE);
    let started = Instant::now();
    let mut first_t: Option<i64> = None;
    let mut line_no = 0u64;
    let mut replayable = 0u64;
    // Raw captures: each connection's session, fresh every pass.
    let mut raw = RawSessions::default();
    loop {
        if shutdown.is_cancelled() {
            return Ok(Pass::Stopped);
        }
        line_no += 1;
        let text = match lines.next().await.map_err(read_err)? {
            None => return Ok(Pass::Finished { replayable }),
            Some(Line::TooLong { len }) => {
                summary.skipped += 1;
                tracing::warn!(line = line_no, len, "skipping over-long line");
                continue;
            }
            Some(Line::Text(text)) => text,
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry = match entry(&text) {
            Ok(e) => e,
            Err(e) => {
                summary.skipped += 1;
                tracing::warn!(line = line_no, error = %e, "skipping malformed line");
                continue;
            }
        };
        let t = match &entry {
            Entry::Bus(rec) => rec.t,
            Entry::Raw(r) => r.t,
        };
        if opts.speed > 0.0 {
            let t0 = *first_t.get_or_insert(t);
            // Lines out of order (clock steps) go out at once, not never.
            let offset_ms = (t - t0).max(0) as f64 / opts.speed;
            let due = started + Duration::from_secs_f64(offset_ms / 1000.0);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Pass::Stopped),
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        replayable += 1;
        match entry {
            Entry::Raw(r) => raw.replay(r, publisher, opts, summary, failures).await,
            Entry::Bus(rec) => publish_recorded(rec, publisher, opts, summary, failures).await,
        }
        if opts.speed == 0.0 && replayable.is_multiple_of(1024) {
            // Flat out, the memory bus never makes us wait: let others run.
            tokio::task::yield_now().await;
        }
    }
}

/// A recorded bus message, published as it was (re-targeted, re-timed
/// when asked).
async fn publish_recorded(
    rec: Recorded,
    publisher: &Publisher,
    opts: &ReplayOptions,
    summary: &mut ReplaySummary,
    failures: &mut FailureLog,
) {
    let subject = match &opts.account {
        Some(account) => retarget(publisher.scheme().prefix(), &rec.subject, account),
        None => rec.subject,
    };
    let payload = if opts.retime {
        retime(rec.payload.get())
    } else {
        Bytes::copy_from_slice(rec.payload.get().as_bytes())
    };
    match publisher.publish_raw(subject, payload).await {
        Ok(()) => summary.published += 1,
        Err(e) => failures.record("replay", &e),
    }
}

/// One line of a file: a bus recording or a raw terminal capture.
enum Entry {
    Bus(Recorded),
    Raw(RawLine),
}

fn entry(text: &[u8]) -> Result<Entry, serde_json::Error> {
    match serde_json::from_slice::<Recorded>(text) {
        Ok(r) => Ok(Entry::Bus(r)),
        Err(e) => serde_json::from_slice::<RawLine>(text)
            .map(Entry::Raw)
            .map_err(|_| e),
    }
}

/// The terminal connections of a raw capture, as the bridge saw them.
#[derive(Default)]
struct RawSessions {
    /// Connection id → its session and publisher.
    live: HashMap<u64, (Session, Publisher)>,
    /// Trade-server clocks per account, as the bridge keeps them.
    clocks: Clocks,
}

impl RawSessions {
    /// One captured line through the bridge's conversion: the first line
    /// of a connection is its `hello` (without key: the capture was made by
    /// a bridge that checked it), later lines are data.
    async fn replay(
        &mut self,
        raw: RawLine,
        publisher: &Publisher,
        opts: &ReplayOptions,
        summary: &mut ReplaySummary,
        failures: &mut FailureLog,
    ) {
        let Some((session, conn_publisher)) = self.live.get_mut(&raw.conn) else {
            match read_hello(raw.line.as_bytes()) {
                Ok(hello) => {
                    let account = opts.account.clone().unwrap_or(raw.account);
                    let Ok(label) = protocol::Account::new(account.as_str()) else {
                        summary.skipped += 1;
                        tracing::warn!(conn = raw.conn, account = ?account, "raw capture: account cannot be a subject token, line skipped");
                        return;
                    };
                    let session = Session::start(&hello, account, &self.clocks, raw.t);
                    self.live
                        .insert(raw.conn, (session, publisher.with_account(label)));
                }
                Err(e) => {
                    summary.skipped += 1;
                    tracing::warn!(conn = raw.conn, reason = %e, "raw capture: connection without hello, line skipped");
                }
            }
            return;
        };
        let out = match session.on_line(raw.line.as_bytes(), raw.t) {
            Ok(Some(out)) => out,
            Ok(None) => return,
            Err(LineFault::Skip(e)) => {
                summary.skipped += 1;
                tracing::warn!(conn = raw.conn, reason = %e, "raw capture: malformed line skipped");
                return;
            }
            Err(LineFault::Refuse(r)) => {
                tracing::warn!(conn = raw.conn, reason = %r, "raw capture: the bridge closed this connection here");
                self.live.remove(&raw.conn);
                return;
            }
        };
        let sent = match crate::bridge::prepare(conn_publisher, &out) {
            Ok(Some(p)) => conn_publisher.send(p).await,
            Ok(None) => return,
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => summary.published += 1,
            Err(e) => failures.record("replay", &e),
        }
    }
}

/// Replaces the account token, the one right after the prefix.
fn retarget(prefix: &str, subject: &str, account: &str) -> String {
    let Some(rest) = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
    else {
        return subject.to_owned();
    };
    match rest.split_once('.') {
        Some((_, tail)) => format!("{prefix}.{account}.{tail}"),
        None => subject.to_owned(),
    }
}

fn retime(payload: &str) -> Bytes {
    let Ok(mut value) = serde_json::from_str::<Value>(payload) else {
        return Bytes::copy_from_slice(payload.as_bytes());
    };
    if let Value::Object(map) = &mut value {
        let now = protocol::time::now_rfc3339();
        for key in ["timestamp", "time"] {
            if let Some(v @ Value::String(_)) = map.get_mut(key) {
                *v = Value::String(now.clone());
            }
        }
        // A signal's validators decided after the signal, not days before.
        if let Some(Value::Array(validators)) = map.get_mut("validators") {
            for v in validators {
                if let Some(t @ Value::String(_)) = v.get_mut("timestamp") {
                    *t = Value::String(now.clone());
                }
            }
        }
    }
    match serde_json::to_vec(&value) {
        Ok(v) => Bytes::from(v),
        Err(_) => Bytes::copy_from_slice(payload.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Recorder;
    use bus::{Bus, BusMessage, Headers, MemoryBus};
    use futures::StreamExt;
    use protocol::SubjectScheme;

    #[test]
    fn retargets_the_account_token() {
        assert_eq!(
            retarget("mt5", "mt5.demo.quotes.EURUSD", "live"),
            "mt5.live.quotes.EURUSD"
        );
        assert_eq!(retarget("a.b", "a.b.x.logs", "y"), "a.b.y.logs");
        assert_eq!(retarget("mt5", "other.demo.logs", "y"), "other.demo.logs");
    }

    #[test]
    fn retime_touches_only_top_level_times() {
        let out = retime(
            r#"{"timestamp":"2020-01-01T00:00:00Z","bid":1.5,"extra":{"time":"old"},"validators":[{"timestamp":"old"}]}"#,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_ne!(v["timestamp"], "2020-01-01T00:00:00Z");
        assert_eq!(v["extra"]["time"], "old");
        assert_ne!(v["validators"][0]["timestamp"], "old");
        assert_eq!(v["bid"], 1.5);
        assert_eq!(&retime("[1,2]")[..], b"[1,2]");
    }

    const PAYLOADS: [(&str, &str); 4] = [
        (
            "mt5.demo.quotes.EURUSD",
            r#"{"symbol":"EURUSD","bid":1.085,"ask":1.0852,"spread":20,"timestamp":"2024-01-01T12:00:00Z"}"#,
        ),
        ("mt5.demo.positions", "[]"),
        (
            "mt5.demo.logs",
            r#"{"timestamp":"2024-01-01T12:00:00Z","level":"INFO","message":"m","module":"x","extra":{}}"#,
        ),
        (
            "mt5.demo.account",
            r#"{"balance":1.0,"equity":1.0,"margin":0.0,"free_margin":1.0,"margin_level":0.0,"profit":0.0,"currency":"USD"}"#,
        ),
    ];

    async fn record_sample(dir: &std::path::Path) -> PathBuf {
        let mem = MemoryBus::new();
        let bus = Bus::Memory(mem.clone());
        let recorder = Recorder::open(&bus, &SubjectScheme::default(), dir)
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(recorder.run(stop.clone()));
        for (subject, payload) in PAYLOADS {
            mem.publish(
                subject.into(),
                Bytes::from_static(payload.as_bytes()),
                Headers::default(),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        mem.publish(
            "other.demo.logs".into(),
            Bytes::from_static(b"{}"),
            Headers::default(),
        );
        mem.publish(
            "mt5.demo.logs".into(),
            Bytes::from_static(b"not json"),
            Headers::default(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
        let summary = task.await.unwrap().unwrap();
        assert_eq!((summary.lines, summary.skipped), (4, 1));
        summary.path
    }

    async fn collect(sub: &mut bus::Subscription, n: usize) -> Vec<BusMessage> {
        let mut out = Vec::new();
        for _ in 0..n {
            let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .unwrap()
                .unwrap();
            out.push(m);
        }
        out
    }

    #[tokio::test]
    async fn record_then_replay_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_sample(dir.path()).await;
        // A line that is not a recording is skipped, not fatal.
        let mut content = tokio::fs::read_to_string(&path).await.unwrap();
        content.push_str("garbage\n\n");
        tokio::fs::write(&path, content).await.unwrap();

        let mem = MemoryBus::new();
        let mut sub = mem.subscribe(">");
        let publisher = Publisher::new(
            Bus::Memory(mem),
            SubjectScheme::default(),
            "demo".parse().unwrap(),
        );
        let opts = ReplayOptions {
            file: path.clone(),
            speed: 1.0,
            looping: false,
            retime: false,
            account: None,
        };
        let started = std::time::Instant::now();
        let summary = run(publisher.clone(), opts.clone(), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            (summary.published, summary.skipped, summary.passes),
            (4, 1, 1)
        );
        // Original spacing (about 3 x 20 ms) is kept at speed 1.
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "{:?}",
            started.elapsed()
        );
        let got = collect(&mut sub, 4).await;
        for (m, (subject, payload)) in got.iter().zip(PAYLOADS) {
            assert_eq!(m.subject, subject);
            let a: Value = serde_json::from_slice(&m.payload).unwrap();
            let b: Value = serde_json::from_str(payload).unwrap();
            assert_eq!(a, b);
            assert!(m.headers.msg_id.is_some() && m.headers.traceparent.is_some());
        }

        // Flat out, under another account, with fresh timestamps.
        let opts = ReplayOptions {
            speed: 0.0,
            retime: true,
            account: Some("acc2".into()),
            ..opts
        };
        run(publisher, opts, CancellationToken::new())
            .await
            .unwrap();
        let got = collect(&mut sub, 4).await;
        assert_eq!(got[0].subject, "mt5.acc2.quotes.EURUSD");
        let q: Value = serde_json::from_slice(&got[0].payload).unwrap();
        assert_ne!(q["timestamp"], "2024-01-01T12:00:00Z");
        assert_eq!(q["bid"], 1.085);
    }

    #[tokio::test]
    async fn looping_replays_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_sample(dir.path()).await;
        let mem = MemoryBus::new();
        let mut sub = mem.subscribe(">");
        let publisher = Publisher::new(
            Bus::Memory(mem),
            SubjectScheme::default(),
            "demo".parse().unwrap(),
        );
        let stop = CancellationToken::new();
        let opts = ReplayOptions {
            file: path,
            speed: 10.0,
            looping: true,
            retime: false,
            account: None,
        };
        let task = tokio::spawn(run(publisher, opts, stop.clone()));
        collect(&mut sub, 10).await;
        stop.cancel();
        let summary = task.await.unwrap().unwrap();
        assert!(summary.passes >= 3, "{summary:?}");
    }

    #[tokio::test]
    async fn an_empty_recording_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.ndjson");
        tokio::fs::write(&path, "junk\n").await.unwrap();
        let publisher = Publisher::new(
            Bus::Memory(MemoryBus::new()),
            SubjectScheme::default(),
            "demo".parse().unwrap(),
        );
        let opts = ReplayOptions {
            file: path,
            speed: 0.0,
            looping: true,
            retime: false,
            account: None,
        };
        let err = run(publisher, opts, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ReplayError::Empty(_)), "{err}");
    }
}
