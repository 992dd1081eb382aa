//! Notices a JetStream feed that has gone silent while its stream moved on,
//! and asks the relay to reopen it.
//!
//! async-nats recreates an ordered consumer that lived on a cluster node
//! that died, but only after it missed heartbeats twice (about a minute
//! with the 30 s pull expiry the bus uses), quietly, and with a backoff
//! that grows to 10 s per attempt; in CI a gateway once read no log for 40 s after a node died
//! while the other replica, on the same cluster, had them all. The relay
//! cannot tell a quiet account from a stuck consumer by itself, so this
//! task compares what the relay read with where each stream stands: a
//! stream that has entries past the relay's newest one, over two checks in
//! which the relay read nothing, is a stuck feed.
//!
//! Each reopened feed is judged on its own (a request about an older one
//! is ignored, and counting starts again), and a feed reopened in vain
//! waits longer before the next reopen: reopening takes a couple of seconds
//! while a cluster re-elects, and a watch that fired again meanwhile kept a
//! gateway reopening for good in a test.

use bus::{NatsBus, StreamKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the streams are compared with what was read.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one position request may take before that check is skipped
/// (a cluster electing a leader answers late; the next check asks again).
const ASK_PATIENCE: Duration = Duration::from_secs(1);

/// The newest stream sequence the relay has read from each stream, and
/// which feed it reads.
#[derive(Default)]
pub struct ReadMarks {
    /// Of the events stream (logs, signals).
    events: AtomicU64,
    /// Of the state stream (quotes, positions, orders, account).
    state: AtomicU64,
    /// Counts the feeds opened: the current one's number.
    feed: AtomicU64,
}

impl ReadMarks {
    /// Records that a new feed was opened; returns its number.
    pub fn opened(&self) -> u64 {
        self.feed.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The number of the feed open now.
    pub fn feed(&self) -> u64 {
        self.feed.load(Ordering::Relaxed)
    }

    /// Records that the relay read `seq` from `kind`'s stream.
    pub fn read(&self, kind: StreamKind, seq: u64) {
        self.mark(kind).fetch_max(seq, Ordering::Relaxed);
    }

    /// The newest `seq` read from `kind`'s stream.
    pub fn newest(&self, kind: StreamKind) -> u64 {
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
#[derive(Default)]
struct Suspicion {
    /// The relay's mark at the previous check.
    read: u64,
    /// Checks in a row with no progress while the stream was ahead.
    strikes: u32,
    /// Reopens in a row after which nothing was read: each one makes the
    /// next wait one check longer (at most [`MAX_STRIKES`]).
    fruitless: u32,
    /// The stream's end when a reopen was last asked for: one reopen per
    /// new entry at most, so entries the stream no longer holds (aged out,
    /// purged) cannot make the relay reopen forever.
    reopened_at: u64,
}

/// The most checks a feed is given before it is reopened.
const MAX_STRIKES: u32 = 10;

impl Suspicion {
    /// A new feed was opened: it gets its own checks.
    fn new_feed(&mut self) {
        self.strikes = 0;
    }

    /// One check: the relay's mark `read` and the stream's newest entry
    /// `stream_last` (None: the stream did not answer). True when the feed
    /// should be reopened.
    fn check(&mut self, read: u64, stream_last: Option<u64>) -> bool {
        let moved = read != self.read;
        self.read = read;
        match stream_last {
            _ if moved => {
                self.strikes = 0;
                self.fruitless = 0;
            }
            Some(last) if last > read && last > self.reopened_at => {
                self.strikes += 1;
                if self.strikes >= (2 + self.fruitless).min(MAX_STRIKES) {
                    self.strikes = 0;
                    self.fruitless += 1;
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

/// Checks both streams every [`CHECK_EVERY`] until `shutdown`, and sends
/// on `stalled` the number of the feed the relay should reopen.
pub async fn watch(
    nats: NatsBus,
    prefix: String,
    marks: Arc<ReadMarks>,
    stalled: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut events = Suspicion::default();
    let mut state = Suspicion::default();
    let mut feed = marks.feed();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = marks.feed();
        if now != feed {
            feed = now;
            events.new_feed();
            state.new_feed();
        }
        for (kind, suspicion) in [
            (StreamKind::Events, &mut events),
            (StreamKind::State, &mut state),
        ] {
            let read = marks.newest(kind);
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
                stalled.send_replace(feed);
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
        // A new entry that is not read either: once more, after one more
        // check (the reopen was in vain).
        assert!(!s.check(10, Some(13)));
        assert!(!s.check(10, Some(13)));
        assert!(s.check(10, Some(14)));
    }

    #[test]
    fn a_new_feed_is_given_its_checks_and_vain_reopens_wait_longer() {
        let mut s = Suspicion::default();
        s.check(10, None);
        let mut waited = Vec::new();
        let mut last = 100;
        for _ in 0..12 {
            s.new_feed();
            let mut checks = 1;
            last += 1;
            while !s.check(10, Some(last)) {
                checks += 1;
                last += 1;
            }
            waited.push(checks);
        }
        assert_eq!(waited[..3], [2, 3, 4], "{waited:?}");
        assert!(waited.iter().all(|&n| n <= MAX_STRIKES), "{waited:?}");
        // Reading again resets the patience.
        assert!(!s.check(11, Some(last)));
        assert!(!s.check(11, Some(last + 1)));
        assert!(s.check(11, Some(last + 2)));
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
