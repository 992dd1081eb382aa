//! What one client and one session may use: the numbers every client is
//! built with ([`Limits`]), and the per-connection guard on inbound traffic:
//! an event rate limit (governor's GCRA, so bursts are allowed but the
//! average is not exceeded) with a strike count that turns sustained abuse
//! into a disconnect, and a payload size cap.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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
    /// Rate-limited events tolerated before the connection is closed.
    pub strikes: u32,
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
    limiter: DefaultDirectRateLimiter,
    /// Rate-limited events so far.
    strikes: AtomicU32,
    /// The limits applied.
    config: LimitConfig,
}

impl InboundGuard {
    pub fn new(config: LimitConfig) -> Self {
        let per_sec = NonZeroU32::new(config.per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(per_sec);
        InboundGuard {
            limiter: RateLimiter::direct(Quota::per_second(per_sec).allow_burst(burst)),
            strikes: AtomicU32::new(0),
            config,
        }
    }

    pub fn check_rate(&self) -> Verdict {
        if self.limiter.check().is_ok() {
            return Verdict::Allow;
        }
        let strikes = self.strikes.fetch_add(1, Ordering::Relaxed) + 1;
        if strikes >= self.config.strikes {
            Verdict::Abusive
        } else {
            Verdict::Limited
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
            max_payload_bytes: 10,
        });
        assert_eq!(g.check_rate(), Verdict::Allow);
        assert_eq!(g.check_rate(), Verdict::Allow);
        assert_eq!(g.check_rate(), Verdict::Allow);
        assert_eq!(g.check_rate(), Verdict::Limited);
        assert_eq!(g.check_rate(), Verdict::Abusive);
        assert!(g.too_large(11) && !g.too_large(10));
    }
}
