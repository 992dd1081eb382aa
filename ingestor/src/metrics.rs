//! What the ingestor counts, shown on `/metrics` (Prometheus text) and
//! `/health` (JSON) when `INGESTOR_HTTP_ADDR` is set.
//!
//! Plain atomics, no registry: the numbers are few, written from hot paths
//! (every bridge line) and read rarely. Each connected terminal has its own
//! [`Terminal`] entry whose times are atomics too, so a line never takes a
//! lock.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::bridge::session::Refusal;

/// Counters of the ingestor (the bridge fills most; every source counts
/// what it published).
#[derive(Debug, Default)]
pub struct Metrics {
    /// TCP connections accepted on the bridge port.
    pub connections: AtomicU64,
    /// Lines read from authenticated terminals.
    pub lines: AtomicU64,
    /// Lines skipped as malformed (the connection stayed).
    pub malformed: AtomicU64,
    /// Messages handed to NATS.
    pub published: AtomicU64,
    /// Publishes that failed (NATS down, encode error).
    pub publish_failures: AtomicU64,
    /// Log/signal entries dropped because the event queue was full.
    pub overflow: AtomicU64,
    /// State values replaced by a newer one before they were published.
    pub superseded: AtomicU64,
    /// Terminals declared down after three missed heartbeats.
    pub terminals_down: AtomicU64,
    /// Raw capture lines dropped because the writer fell behind.
    pub capture_dropped: AtomicU64,
    /// Connections closed by a refusal, by [`Refusal::CODES`] index.
    refused: [AtomicU64; Refusal::CODES.len()],
    /// Connected terminals by connection id.
    terminals: Mutex<BTreeMap<u64, Arc<Terminal>>>,
    /// Next connection id.
    next_id: AtomicU64,
}

/// One authenticated terminal connection.
#[derive(Debug)]
pub struct Terminal {
    /// Connection id (also in the raw capture).
    pub id: u64,
    /// Account it publishes under.
    pub account: String,
    /// Remote address.
    pub peer: String,
    /// Login, server and EA version, from `hello`.
    pub about: String,
    /// When it connected, UTC epoch ms.
    pub since_ms: i64,
    /// Last line of any kind, UTC epoch ms.
    pub last_line_ms: AtomicI64,
    /// Last quote, UTC epoch ms (0: none yet).
    pub last_tick_ms: AtomicI64,
    /// Trade server offset in force, seconds.
    pub gmt_offset_s: AtomicI64,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// A fresh connection id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn refused(&self, refusal: &Refusal) {
        if let Some(i) = Refusal::CODES.iter().position(|c| *c == refusal.code()) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refused_count(&self, code: &str) -> u64 {
        Refusal::CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }

    /// Registers a terminal; it stays listed until [`Metrics::remove`].
    pub fn register(&self, terminal: Terminal) -> Arc<Terminal> {
        let t = Arc::new(terminal);
        self.lock().insert(t.id, t.clone());
        t
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The connected terminals.
    pub fn terminals(&self) -> Vec<Arc<Terminal>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Terminal>>> {
        self.terminals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Prometheus text exposition.
    pub fn render(&self, nats_up: bool, now_ms: i64) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "ingestor_bridge_connections_total",
            "TCP connections accepted on the bridge port.",
            load(&self.connections),
        );
        counter(
            "ingestor_bridge_lines_total",
            "Lines read from authenticated terminals.",
            load(&self.lines),
        );
        counter(
            "ingestor_bridge_malformed_total",
            "Terminal lines skipped as malformed.",
            load(&self.malformed),
        );
        counter(
            "ingestor_published_total",
            "Messages handed to NATS.",
            load(&self.published),
        );
        counter(
            "ingestor_publish_failures_total",
            "Publishes that failed.",
            load(&self.publish_failures),
        );
        counter(
            "ingestor_bridge_event_overflow_total",
            "Log and signal entries dropped because the event queue was full.",
            load(&self.overflow),
        );
        counter(
            "ingestor_bridge_state_superseded_total",
            "State values replaced by a newer one before publishing.",
            load(&self.superseded),
        );
        counter(
            "ingestor_bridge_terminals_down_total",
            "Terminals declared down after three missed heartbeats.",
            load(&self.terminals_down),
        );
        counter(
            "ingestor_bridge_capture_dropped_total",
            "Raw capture lines dropped.",
            load(&self.capture_dropped),
        );
        let _ = writeln!(
            out,
            "# HELP ingestor_bridge_refused_total Connections closed by a refusal.\n# TYPE ingestor_bridge_refused_total counter"
        );
        for (i, code) in Refusal::CODES.iter().enumerate() {
            let _ = writeln!(
                out,
                "ingestor_bridge_refused_total{{reason=\"{code}\"}} {}",
                self.refused[i].load(Ordering::Relaxed)
            );
        }
        let terminals = self.terminals();
        let _ = writeln!(
            out,
            "# HELP ingestor_bridge_terminals Authenticated terminals connected.\n# TYPE ingestor_bridge_terminals gauge\ningestor_bridge_terminals {}",
            terminals.len()
        );
        let _ = writeln!(out, "# HELP ingestor_nats_up 1 when the NATS connection is up.\n# TYPE ingestor_nats_up gauge\ningestor_nats_up {}", u8::from(nats_up));
        let _ = writeln!(out, "# HELP ingestor_bridge_last_tick_age_seconds Seconds since the terminal's last quote (-1: none yet).\n# TYPE ingestor_bridge_last_tick_age_seconds gauge");
        for t in &terminals {
            let _ = writeln!(
                out,
                "ingestor_bridge_last_tick_age_seconds{{account=\"{}\",terminal=\"{}\"}} {}",
                t.account,
                t.id,
                age_s(t.last_tick_ms.load(Ordering::Relaxed), now_ms)
            );
        }
        let _ = writeln!(out, "# HELP ingestor_bridge_last_line_age_seconds Seconds since the terminal's last line.\n# TYPE ingestor_bridge_last_line_age_seconds gauge");
        for t in &terminals {
            let _ = writeln!(
                out,
                "ingestor_bridge_last_line_age_seconds{{account=\"{}\",terminal=\"{}\"}} {}",
                t.account,
                t.id,
                age_s(t.last_line_ms.load(Ordering::Relaxed), now_ms)
            );
        }
        out
    }

    /// `/health` body: NATS and every terminal.
    pub fn health(&self, nats_up: bool, now_ms: i64) -> Value {
        let terminals: Vec<Value> = self
            .terminals()
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "account": t.account,
                    "peer": t.peer,
                    "terminal": t.about,
                    "connected_for_s": (now_ms - t.since_ms).max(0) / 1000,
                    "last_line_age_s": age_s(t.last_line_ms.load(Ordering::Relaxed), now_ms),
                    "last_tick_age_s": age_s(t.last_tick_ms.load(Ordering::Relaxed), now_ms),
                    "gmt_offset_s": t.gmt_offset_s.load(Ordering::Relaxed),
                })
            })
            .collect();
        json!({
            "status": if nats_up { "ok" } else { "degraded" },
            "nats": if nats_up { "up" } else { "down" },
            "terminals": terminals,
            "event_overflow": self.overflow.load(Ordering::Relaxed),
            "terminals_down": self.terminals_down.load(Ordering::Relaxed),
        })
    }
}

/// Seconds since `then_ms` with millisecond precision; -1 for never.
fn age_s(then_ms: i64, now_ms: i64) -> f64 {
    if then_ms <= 0 {
        -1.0
    } else {
        (now_ms - then_ms).max(0) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_terminals() {
        let m = Metrics::new();
        Metrics::add(&m.lines, 3);
        m.refused(&Refusal::BadKey);
        let t = m.register(Terminal {
            id: m.next_id(),
            account: "acc-A".into(),
            peer: "127.0.0.1:1".into(),
            about: "login 1".into(),
            since_ms: 1000,
            last_line_ms: AtomicI64::new(2000),
            last_tick_ms: AtomicI64::new(0),
            gmt_offset_s: AtomicI64::new(7200),
        });
        let text = m.render(true, 4500);
        assert!(text.contains("ingestor_bridge_lines_total 3"), "{text}");
        assert!(text.contains("ingestor_bridge_refused_total{reason=\"BAD_KEY\"} 1"));
        assert!(text.contains("ingestor_bridge_refused_total{reason=\"NO_KEY\"} 0"));
        assert!(text.contains("ingestor_bridge_terminals 1"));
        assert!(text.contains(
            "ingestor_bridge_last_line_age_seconds{account=\"acc-A\",terminal=\"1\"} 2.5"
        ));
        assert!(text.contains(
            "ingestor_bridge_last_tick_age_seconds{account=\"acc-A\",terminal=\"1\"} -1"
        ));
        let h = m.health(false, 4500);
        assert_eq!(h["status"], "degraded");
        assert_eq!(h["terminals"][0]["gmt_offset_s"], 7200);
        m.remove(t.id);
        assert!(m.terminals().is_empty());
        assert_eq!(m.refused_count("BAD_KEY"), 1);
    }
}
