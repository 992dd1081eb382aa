//! What one client and one session may use: the numbers every client is
//! built with ([`Limits`]), and the per-connection guard on inbound traffic:
//! an event rate limit (governor's GCRA, so bursts are allowed but the
//! average is not exceeded) with strikes that turn sustained abuse into a
//! disconnect, and a payload size cap.
//!
//! Strikes decay: they are a second GCRA whose burst is the tolerated
//! strikes and which forgives one every `strike_decay`. A dashboard open
//! all day that bursts past the limit now and then is never cut off; a
//! flood runs out of strikes within a second. Every inbound frame counts,
//! malformed ones and pings included (the transport asks before parsing).

use governor::clock::MonotonicClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

/// A GCRA on the OS monotonic clock. Not governor's default (quanta's TSC),
/// which can read earlier on another core and so refuse a fresh client's
/// first events: seen as a flood cut off before a single answer.
type Gcra = RateLimiter<NotKeyed, InMemoryState, MonotonicClock>;

/// The per-client and per-session numbers from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Inbound rate and size limits.
    pub inbound: LimitConfig,
    /// Logs, signals and replies queued before a client is cut off.
    pub queue_limit: usize,
    /// State values queued before newer ones replace queued ones.
    pub state_backlog: usize,
    /// Concurrent connections one user may hold, across replicas.
    pub connections_per_user: usize,
    /// How long a disconnected session can be resumed.
    pub resume_window: Duration,
    /// How long an entry must have been written to count as delivered.
    pub delivery_settle: Duration,
    /// Frames that may sit in a transport queue past the outbox (how many
    /// must follow an entry before it counts as delivered).
    pub transport_queue: u64,
}

/// Inbound traffic limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct LimitConfig {
    /// Events per second, sustained.
    pub per_sec: u32,
    /// Events in a burst.
    pub burst: u32,
    /// Rate-limited events tolerated (at once) before the connection is closed.
    pub strikes: u32,
    /// How long until one strike is forgiven.
    pub strike_decay: Duration,
    /// Largest event payload handled, in bytes.
    pub max_payload_bytes: usize,
}

/// What to do with one inbound event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the rate: answer with `RATE_LIMITED`, do not act on it.
    Limited,
    /// Over the rate too often: close the connection as abusive.
    Abusive,
}

/// Applies a [`LimitConfig`] to one connection's inbound events.
pub struct InboundGuard {
    /// The GCRA rate limiter.
    limiter: Gcra,
    /// The strikes left: a GCRA that forgives one per `strike_decay`.
    strikes: Gcra,
    /// The limits applied.
    config: LimitConfig,
}

impl InboundGuard {
    pub fn new(config: LimitConfig) -> Self {
        let per_sec = NonZeroU32::new(config.per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(per_sec);
        // The strike that empties the allowance is the last one tolerated.
        let tolerated =
            NonZeroU32::new(config.strikes.saturating_sub(1)).unwrap_or(NonZeroU32::MIN);
        let decay = Quota::with_period(config.strike_decay.max(Duration::from_millis(1)))
            .unwrap_or(Quota::per_second(NonZeroU32::MIN))
            .allow_burst(tolerated);
        InboundGuard {
            limiter: RateLimiter::direct_with_clock(
                Quota::per_second(per_sec).allow_burst(burst),
                MonotonicClock,
            ),
            strikes: RateLimiter::direct_with_clock(decay, MonotonicClock),
            config,
        }
    }

    pub fn check_rate(&self) -> Verdict {
        if self.limiter.check().is_ok() {
            return Verdict::Allow;
        }
        if self.config.strikes > 1 && self.strikes.check().is_ok() {
            Verdict::Limited
        } else {
            Verdict::Abusive
        }
    }

    pub fn too_large(&self, payload_bytes: usize) -> bool {
        payload_bytes > self.config.max_payload_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_then_abusive() {
        let g = InboundGuard::new(LimitConfig {
            per_sec: 1,
            burst: 3,
            strikes: 2,
            strike_decay: Duration::from_secs(3600),
            max_payload_bytes: 10,
        });
        assert_eq!(g.check_rate(), Verdict::Allow);
        assert_eq!(g.check_rate(), Verdict::Allow);
        assert_eq!(g.check_rate(), Verdict::Allow);
        assert_eq!(g.check_rate(), Verdict::Limited);
        assert_eq!(g.check_rate(), Verdict::Abusive);
        assert!(g.too_large(11) && !g.too_large(10));
    }

    /// A connection's reader task may run on any core: a fresh guard lets
    /// its whole burst through wherever it is asked (with quanta's TSC
    /// clock, a core that reads an earlier time refused the first events).
    #[test]
    fn a_fresh_guard_allows_its_burst_from_any_thread() {
        let g = std::sync::Arc::new(InboundGuard::new(LimitConfig {
            per_sec: 1,
            burst: 40,
            strikes: 2,
            strike_decay: Duration::from_secs(3600),
            max_payload_bytes: 10,
        }));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..10).map(|_| g.check_rate()).collect::<Vec<_>>())
            })
            .collect();
        for t in threads {
            let verdicts = t.join().expect("thread");
            assert!(
                verdicts.iter().all(|v| *v == Verdict::Allow),
                "{verdicts:?}"
            );
        }
    }

    /// Bursts over the limit, spaced by more than the decay of the strikes
    /// they cost, never add up; the same bursts back to back do.
    #[test]
    fn strikes_decay_between_bursts() {
        let config = LimitConfig {
            per_sec: 1000,
            burst: 10,
            strikes: 5,
            strike_decay: Duration::from_millis(10),
            max_payload_bytes: 10,
        };
        let g = InboundGuard::new(config);
        for _ in 0..20 {
            let verdicts: Vec<Verdict> = (0..13).map(|_| g.check_rate()).collect();
            assert!(!verdicts.contains(&Verdict::Abusive), "{verdicts:?}");
            assert!(verdicts.contains(&Verdict::Limited));
            std::thread::sleep(Duration::from_millis(60));
        }
        let flood = InboundGuard::new(config);
        let verdicts: Vec<Verdict> = (0..100).map(|_| flood.check_rate()).collect();
        assert!(verdicts.contains(&Verdict::Abusive));
    }
}
