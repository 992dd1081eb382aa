//! What the clients measure, and how they share it cheaply.
//!
//! The measured window is a span of *publish* times: a quote belongs to it
//! when its `sent_us` stamp falls inside, whenever it arrives. The publisher
//! counts what it sent in the window, each client counts what it got, so the
//! delivery ratio needs no clock agreement beyond this one process.
//!
//! Each client keeps its own counters and a small buffer of latencies and
//! hands them over in batches (to a few mutex-protected HDR histograms,
//! picked by client id), so the hot path touches no shared cache line per
//! message.

use crate::eio::Stamp;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

const SHARDS: usize = 16;
const BATCH: usize = 256;
/// Latencies are recorded in µs, 1 µs to 10 minutes, 3 significant digits.
const MAX_LATENCY_US: u64 = 600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

#[derive(Default)]
pub struct Counters {
    /// In-window quotes received by measured (not slow) clients.
    pub received: AtomicU64,
    /// Quotes received outside the window (warm-up, snapshots).
    pub outside: AtomicU64,
    /// Missing per-symbol counters seen by measured clients.
    pub gaps: AtomicU64,
    /// Quotes whose per-symbol counter was not above the last one seen.
    pub reorders: AtomicU64,
    /// Clients that completed the handshake, namespace connect and subscribe.
    pub ready: AtomicU64,
    /// Of those, the ones whose quotes are measured.
    pub ready_measured: AtomicU64,
    pub connect_failures: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Connections the server closed (or that broke) while we wanted them.
    pub disconnects: AtomicU64,
    /// `disconnected` events received from the server.
    pub told_to_leave: AtomicU64,
    /// Protocol or I/O errors after the connection was up.
    pub errors: AtomicU64,
    /// Quotes whose stamp could not be read.
    pub unreadable: AtomicU64,
    /// Engine.IO pings answered.
    pub pongs: AtomicU64,
}

pub struct Shared {
    pub counters: Counters,
    /// Quotes stamped before this (µs) come from an earlier run (a server's
    /// last-value snapshot) and are ignored by the per-symbol checks.
    run_started_us: u64,
    window_start_us: AtomicU64,
    window_end_us: AtomicU64,
    histograms: Vec<Mutex<Histogram<u64>>>,
    /// Handshake times (connect mode and the ramp of every run).
    pub handshakes: Mutex<Histogram<u64>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            counters: Counters::default(),
            run_started_us: now_us(),
            window_start_us: AtomicU64::new(u64::MAX),
            window_end_us: AtomicU64::new(u64::MAX),
            histograms: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
            handshakes: Mutex::new(new_histogram()),
        }
    }
}

impl Shared {
    pub fn set_window(&self, start_us: u64, end_us: u64) {
        self.window_end_us.store(end_us, Relaxed);
        self.window_start_us.store(start_us, Relaxed);
    }

    pub fn in_window(&self, sent_us: u64) -> bool {
        sent_us >= self.window_start_us.load(Relaxed) && sent_us < self.window_end_us.load(Relaxed)
    }

    pub fn latencies(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for h in &self.histograms {
            let h = h.lock().unwrap_or_else(|p| p.into_inner());
            // Same bounds everywhere: adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }

    pub fn record_handshake(&self, micros: u64) {
        let mut h = self.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        h.saturating_record(micros.max(1));
    }
}

/// One client's running tally, handed to [`Shared`] in batches.
pub struct Tally {
    shard: usize,
    latencies: Vec<u64>,
    received: u64,
    outside: u64,
    gaps: u64,
    reorders: u64,
    unreadable: u64,
    /// Last per-symbol counter seen; u64::MAX: none yet.
    last_n: Vec<u64>,
}

impl Tally {
    pub fn new(client: usize, symbols: usize) -> Tally {
        Tally {
            shard: client % SHARDS,
            latencies: Vec::with_capacity(BATCH),
            received: 0,
            outside: 0,
            gaps: 0,
            reorders: 0,
            unreadable: 0,
            last_n: vec![u64::MAX; symbols.max(1)],
        }
    }

    /// Records one quote received at `now_us` (µs since the epoch).
    pub fn quote(&mut self, shared: &Shared, stamp: Option<Stamp>, now_us: u64) {
        let Some(stamp) = stamp else {
            self.unreadable += 1;
            return;
        };
        if stamp.sent_us < shared.run_started_us {
            self.outside += 1;
            return;
        }
        let slot = stamp.symbol % self.last_n.len();
        let last = self.last_n[slot];
        let in_window = shared.in_window(stamp.sent_us);
        if in_window {
            self.received += 1;
            self.latencies
                .push(now_us.saturating_sub(stamp.sent_us).max(1));
            if last != u64::MAX {
                if stamp.n > last + 1 {
                    self.gaps += stamp.n - last - 1;
                } else if stamp.n <= last {
                    self.reorders += 1;
                }
            }
        } else {
            self.outside += 1;
        }
        if last == u64::MAX || stamp.n > last {
            self.last_n[slot] = stamp.n;
        }
        if self.latencies.len() >= BATCH {
            self.flush(shared);
        }
    }

    pub fn flush(&mut self, shared: &Shared) {
        if !self.latencies.is_empty() {
            let mut h = shared.histograms[self.shard]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for &l in &self.latencies {
                h.saturating_record(l);
            }
            drop(h);
            self.latencies.clear();
        }
        let c = &shared.counters;
        for (field, value) in [
            (&c.received, &mut self.received),
            (&c.outside, &mut self.outside),
            (&c.gaps, &mut self.gaps),
            (&c.reorders, &mut self.reorders),
            (&c.unreadable, &mut self.unreadable),
        ] {
            if *value > 0 {
                field.fetch_add(*value, Relaxed);
                *value = 0;
            }
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Percentiles of a histogram as JSON (µs), or nulls when empty.
pub fn summary(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return serde_json::json!({"count": 0});
    }
    serde_json::json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(sent_us: u64, n: u64) -> Option<Stamp> {
        Some(Stamp {
            sent_us,
            global: 0,
            symbol: 1,
            n,
        })
    }

    #[test]
    fn counts_window_gaps_and_reorders() {
        let shared = Shared {
            run_started_us: 0,
            ..Shared::default()
        };
        shared.set_window(100, 200);
        let mut t = Tally::new(3, 4);
        t.quote(&shared, stamp(50, 1), 60); // warm-up
        t.quote(&shared, stamp(110, 2), 130);
        t.quote(&shared, stamp(120, 5), 150); // 3 and 4 missing
        t.quote(&shared, stamp(130, 4), 150); // late
        t.quote(&shared, stamp(250, 9), 260); // after the window
        t.quote(&shared, None, 260);
        t.flush(&shared);
        let c = &shared.counters;
        assert_eq!(c.received.load(Relaxed), 3);
        assert_eq!(c.outside.load(Relaxed), 2);
        assert_eq!(c.gaps.load(Relaxed), 2);
        assert_eq!(c.reorders.load(Relaxed), 1);
        assert_eq!(c.unreadable.load(Relaxed), 1);
        let h = shared.latencies();
        assert_eq!(h.len(), 3);
        assert_eq!(h.max(), 30);
    }
}
