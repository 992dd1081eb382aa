//! Notices a JetStream feed that has gone silent while its stream moved on,
//! and asks the relay to reopen it.
//!
//! async-nats recreates an ordered consumer that lived on a cluster node
//! that died, but it does so quietly and with a backoff that grows to 10 s
//! per attempt; in CI a gateway once read no log for 40 s after a node died
//! while the other replica, on the same cluster, had them all. The relay
//! cannot tell a quiet account from a stuck consumer by itself, so this
//! task compares what the relay read with where each stream stands: a
//! stream that has entries past the relay's newest one, over two checks in
//! which the relay read nothing, is a stuck feed.

use bus::{NatsBus, StreamKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the streams are compared with what was read.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long one position request may take before that check is skipped
/// (a cluster electing a leader answers late; the next check asks again).
const ASK_PATIENCE: Duration = Duration::from_secs(2);

/// The newest stream sequence the relay has read from each stream.
#[derive(Default)]
pub struct ReadMarks {
    /// Of the events stream (logs, signals).
    events: AtomicU64,
    /// Of the state stream (quotes, positions, orders, account).
    state: AtomicU64,
}

impl ReadMarks {
    /// Records that the relay read `seq` from `kind`'s stream.
    pub fn read(&self, kind: StreamKind, seq: u64) {
        self.mark(kind).fetch_max(seq, Ordering::Relaxed);
    }

    fn get(&self, kind: StreamKind) -> u64 {
        self.mark(kind).load(Ordering::Relaxed)
    }

    fn mark(&self, kind: StreamKind) -> &AtomicU64 {
        match kind {
            StreamKind::Events => &self.events,
            StreamKind::State => &self.state,
        }
    }
}

/// What one stream's checks have seen so far.
#[derive(Default, Debug, PartialEq)]
pub struct Suspicion {
    /// The relay's mark at the previous check.
    read: u64,
    /// Checks in a row with no progress while the stream was ahead.
    strikes: u32,
    /// The stream's end when a reopen was last asked for: one reopen per
    /// new entry at most, so entries the stream no longer holds (aged out,
    /// purged) cannot make the relay reopen forever.
    reopened_at: u64,
}

impl Suspicion {
    /// One check: the relay's mark `read` and the stream's newest entry
    /// `stream_last` (None: the stream did not answer). True when the feed
    /// should be reopened.
    pub fn check(&mut self, read: u64, stream_last: Option<u64>) -> bool {
        let moved = read != self.read;
        self.read = read;
        match stream_last {
            _ if moved => self.strikes = 0,
            Some(last) if last > read && last > self.reopened_at => {
                self.strikes += 1;
                if self.strikes >= 2 {
                    self.strikes = 0;
                    self.reopened_at = last;
                    return true;
                }
            }
            Some(_) => self.strikes = 0,
            // No answer says nothing either way.
            None => {}
        }
        false
    }
}

/// Checks both streams every [`CHECK_EVERY`] until `shutdown`, and wakes
/// `stalled` when the relay should reopen its feed.
pub async fn watch(
    nats: NatsBus,
    prefix: String,
    marks: Arc<ReadMarks>,
    stalled: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut events = Suspicion::default();
    let mut state = Suspicion::default();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (kind, suspicion) in [
            (StreamKind::Events, &mut events),
            (StreamKind::State, &mut state),
        ] {
            let read = marks.get(kind);
            // Only a feed that read nothing since the last check is asked
            // about: a busy one costs no request.
            let last = if read == suspicion.read {
                tokio::time::timeout(ASK_PATIENCE, nats.stream_position(&prefix, kind))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|p| p.last)
            } else {
                None
            };
            if suspicion.check(read, last) {
                tracing::warn!(stream = ?kind, read, stream_last = ?last, "the bus feed reads nothing while its stream moved on; reopening it");
                stalled.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_behind_its_stream_for_two_checks_is_reopened_once() {
        let mut s = Suspicion::default();
        assert!(
            !s.check(10, Some(12)),
            "the relay read since the last check"
        );
        assert!(
            !s.check(10, Some(12)),
            "one check may catch an entry in flight"
        );
        assert!(s.check(10, Some(12)));
        // Reopened, but the entries are gone from the stream: no loop.
        assert!(!s.check(10, Some(12)));
        assert!(!s.check(10, Some(12)));
        assert!(!s.check(10, Some(12)));
        // A new entry that is not read either: once more.
        assert!(!s.check(10, Some(13)));
        assert!(s.check(10, Some(13)));
    }

    #[test]
    fn a_feed_that_reads_or_is_caught_up_is_left_alone() {
        let mut s = Suspicion::default();
        for read in 1..10 {
            assert!(!s.check(read, Some(read + 5)), "reading: progress");
        }
        for _ in 0..5 {
            assert!(!s.check(9, Some(9)), "caught up: a quiet account");
        }
        for _ in 0..5 {
            assert!(!s.check(9, None), "no answer: nothing known");
        }
        assert!(!s.check(9, Some(11)));
        assert!(!s.check(10, Some(11)), "progress clears the first strike");
        assert!(!s.check(10, Some(11)));
        assert!(s.check(10, Some(11)));
    }
}
