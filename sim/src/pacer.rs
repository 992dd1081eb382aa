//! Keeps a stream at an exact average rate without sleeping per message.
//!
//! At thousands of messages a second a timer per message costs more than
//! the messages; instead a coarse interval wakes the loop and the pacer says
//! how many messages are due since the start, so the average rate is exact
//! whatever the timer's granularity.

use std::time::Duration;
use tokio::time::Instant;

/// The finest wake-up period; at higher rates several messages go per wake.
const MIN_PERIOD: Duration = Duration::from_millis(10);
/// Longest wait for very low rates (still exact on average, via `due`).
const MAX_PERIOD: Duration = Duration::from_secs(60);
/// After a stall (the bus blocked, the machine slept) at most this much
/// backlog is sent at once; the rest is dropped rather than flooding.
const MAX_BACKLOG: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct Pacer {
    rate: f64,
    start: Instant,
    sent: u64,
}

impl Pacer {
    /// `None` when the rate is zero: that kind is switched off.
    pub fn new(rate: f64, start: Instant) -> Option<Self> {
        (rate > 0.0).then_some(Pacer {
            rate,
            start,
            sent: 0,
        })
    }

    pub fn period(&self) -> Duration {
        Duration::from_secs_f64((1.0 / self.rate).min(MAX_PERIOD.as_secs_f64())).max(MIN_PERIOD)
    }

    /// How many messages to send now to be back on schedule.
    pub fn due(&mut self, now: Instant) -> u64 {
        let target = (now.saturating_duration_since(self.start).as_secs_f64() * self.rate) as u64;
        let backlog_cap = ((self.rate * MAX_BACKLOG.as_secs_f64()).ceil() as u64).max(1);
        let mut n = target.saturating_sub(self.sent);
        if n > backlog_cap {
            n = backlog_cap;
            self.sent = target - n;
        }
        self.sent += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_rate_is_exact() {
        let start = Instant::now();
        let mut p = Pacer::new(1234.0, start).unwrap();
        let mut total = 0;
        let mut t = start;
        for _ in 0..1000 {
            t += p.period();
            total += p.due(t);
        }
        let expected = (t - start).as_secs_f64() * 1234.0;
        assert!(
            (total as f64 - expected).abs() <= 1.0,
            "{total} vs {expected}"
        );
        assert_eq!(p.period(), MIN_PERIOD);
    }

    #[test]
    fn low_rates_wait_longer_and_zero_is_off() {
        let start = Instant::now();
        let mut p = Pacer::new(0.2, start).unwrap();
        assert_eq!(p.period(), Duration::from_secs(5));
        assert_eq!(p.due(start + Duration::from_secs(4)), 0);
        assert_eq!(p.due(start + Duration::from_secs(5)), 1);
        assert!(Pacer::new(0.0, start).is_none());
    }

    #[test]
    fn a_stall_does_not_cause_a_flood() {
        let start = Instant::now();
        let mut p = Pacer::new(1000.0, start).unwrap();
        assert_eq!(p.due(start + Duration::from_secs(10)), 500);
        assert_eq!(p.due(start + Duration::from_millis(10_010)), 10);
    }
}
