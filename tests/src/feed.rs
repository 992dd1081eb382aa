//! Logs published straight into JetStream from the test, each one stored
//! before the next (the way the ingestor publishes logs), and the events
//! stream's position: so a test knows exactly which `seq`s exist and which
//! came before a moment it chose.
//!
//! Uses the workspace's own bus crate on a private current-thread runtime;
//! the streams must already exist (a gateway creates them at start), and
//! are never reconfigured here, so a test's retention limits hold.

use bus::{Headers, NatsBus, NatsOptions, StreamPosition};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The subject prefix the fixtures' gateways use.
const PREFIX: &str = "mt5";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

async fn connect(nats_url: &str) -> NatsBus {
    NatsBus::connect(&NatsOptions {
        url: nats_url.to_owned(),
        name: "e2e-feed".into(),
    })
    .await
    .unwrap_or_else(|e| panic!("feed cannot reach NATS at {nats_url}: {e}"))
}

fn entry(n: u64) -> bytes::Bytes {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        r#"{{"timestamp":"{now}","level":"INFO","message":"e2e {n}","module":"e2e","extra":{{}}}}"#
    )
    .into()
}

/// Publishes `n` log entries of `account` now, each stored by JetStream.
pub fn publish_logs(nats_url: &str, account: &str, n: u64) {
    runtime().block_on(async {
        let bus = connect(nats_url).await;
        for i in 0..n {
            bus.publish_stored(
                format!("{PREFIX}.{account}.logs"),
                entry(i),
                Headers::default(),
            )
            .await
            .expect("a stored log");
        }
    });
}

/// The events stream's oldest and newest stored sequence.
pub fn events_position(nats_url: &str) -> StreamPosition {
    runtime().block_on(async {
        connect(nats_url)
            .await
            .events_position(PREFIX)
            .await
            .expect("the events stream")
    })
}

/// A steady stream of `account`'s logs at `per_sec`, until stopped.
pub struct LogFeed {
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl LogFeed {
    pub fn start(nats_url: &str, account: &str, per_sec: f64) -> LogFeed {
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let (url, subject) = (nats_url.to_owned(), format!("{PREFIX}.{account}.logs"));
        let (stop2, published2) = (stop.clone(), published.clone());
        let thread = std::thread::spawn(move || {
            runtime().block_on(async move {
                let bus = connect(&url).await;
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
                while !stop2.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let n = published2.load(Ordering::Relaxed);
                    // While NATS is away the publish fails; the feed goes on.
                    if bus
                        .publish_stored(subject.clone(), entry(n), Headers::default())
                        .await
                        .is_ok()
                    {
                        published2.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        });
        LogFeed {
            stop,
            published,
            thread: Some(thread),
        }
    }

    /// Entries published so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Stops publishing; returns how many entries were published.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.published()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LogFeed {
    fn drop(&mut self) {
        self.halt();
    }
}
