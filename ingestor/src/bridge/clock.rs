//! Trade-server time to true UTC.
//!
//! MT5 stamps ticks, positions and orders with the broker's server clock
//! (`TimeTradeServer()`), which most brokers run at UTC+2 in winter and
//! UTC+3 in summer. The terminal reports the offset in force
//! (`gmt_offset_s`) in its `hello` and in every heartbeat; a
//! [`ServerClock`] remembers each offset with the UTC moment it was first
//! seen, so a position opened before a DST change is still converted with
//! the offset of its own time, as long as the change happened while a
//! terminal of that account was connected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The largest offset a trade server can have (UTC−12 to UTC+14).
pub const MAX_OFFSET_S: i64 = 14 * 3600;
/// Offsets are rounded to a quarter hour (Nepal's UTC+5:45 is the odd one).
pub const OFFSET_STEP_S: i64 = 900;
/// Offset changes remembered per account (two a year: plenty).
const HISTORY: usize = 16;

/// An offset that cannot be a time zone.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("gmt_offset_s {0} is outside -{MAX_OFFSET_S}..={MAX_OFFSET_S}")]
pub struct BadOffset(pub i64);

/// Checks an offset and rounds it to the nearest quarter hour (the EA
/// rounds already; a clock a few seconds off must not make an odd zone).
pub fn checked_offset(offset_s: i64) -> Result<i64, BadOffset> {
    if !(-MAX_OFFSET_S..=MAX_OFFSET_S).contains(&offset_s) {
        return Err(BadOffset(offset_s));
    }
    let step = OFFSET_STEP_S;
    Ok((offset_s + step / 2).div_euclid(step) * step)
}

/// The offsets a trade server has had, each from a UTC moment on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerClock {
    /// `(utc_from_ms, offset_ms)`, oldest first; the first starts at
    /// `i64::MIN` so every time has an offset.
    segments: Vec<(i64, i64)>,
}

impl ServerClock {
    /// A clock whose offset has always been `offset_s` (already checked).
    pub fn new(offset_s: i64) -> ServerClock {
        ServerClock {
            segments: vec![(i64::MIN, offset_s * 1000)],
        }
    }

    /// The offset in force now, in seconds.
    pub fn offset_s(&self) -> i64 {
        self.segments.last().map_or(0, |s| s.1 / 1000)
    }

    /// Records that the offset is `offset_s` as of `now_utc_ms` (a DST
    /// change, when it differs from the one in force). The terminal reports
    /// a change up to a heartbeat after it happened, and servers change
    /// their clocks on a quarter hour, so the new offset applies from the
    /// quarter hour before `now_utc_ms`: ticks stamped between the change
    /// and its report are converted right too.
    pub fn set(&mut self, offset_s: i64, now_utc_ms: i64) {
        let offset_ms = offset_s * 1000;
        let Some(&(last_from, last_offset)) = self.segments.last() else {
            return;
        };
        if last_offset == offset_ms {
            return;
        }
        let quarter = OFFSET_STEP_S * 1000;
        let from = (now_utc_ms.div_euclid(quarter) * quarter).max(last_from.saturating_add(1));
        self.segments.push((from, offset_ms));
        if self.segments.len() > HISTORY {
            self.segments.remove(1);
            self.segments[0].0 = i64::MIN;
        }
    }

    /// A trade-server time (epoch ms on the server's clock) as true UTC:
    /// the newest offset whose period contains the result. In the hour a
    /// clock goes back, server times repeat; they are read as the later one.
    pub fn to_utc(&self, server_ms: i64) -> i64 {
        for &(from, offset) in self.segments.iter().rev() {
            let utc = server_ms.saturating_sub(offset);
            if utc >= from {
                return utc;
            }
        }
        server_ms.saturating_sub(self.segments.first().map_or(0, |s| s.1))
    }
}

/// Each account's clock, shared by its connections over time, so a
/// reconnect keeps what an earlier connection learnt about DST changes.
#[derive(Debug, Default, Clone)]
pub struct Clocks {
    /// Account label → its server clock.
    inner: Arc<Mutex<HashMap<String, ServerClock>>>,
}

impl Clocks {
    /// Records `offset_s` for `account` as of `now_utc_ms` and returns a
    /// copy of the clock to convert with.
    pub fn update(&self, account: &str, offset_s: i64, now_utc_ms: i64) -> ServerClock {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let clock = map
            .entry(account.to_owned())
            .or_insert_with(|| ServerClock::new(offset_s));
        clock.set(offset_s, now_utc_ms);
        clock.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn offsets_are_checked_and_rounded() {
        assert_eq!(checked_offset(7200), Ok(7200));
        assert_eq!(checked_offset(7199), Ok(7200));
        assert_eq!(checked_offset(-18_000 + 20), Ok(-18_000));
        assert_eq!(checked_offset(20_700 + 300), Ok(20_700));
        assert_eq!(checked_offset(0), Ok(0));
        assert!(checked_offset(15 * 3600).is_err());
        assert!(checked_offset(-15 * 3600).is_err());
    }

    #[test]
    fn converts_with_the_offset_of_the_time() {
        // UTC+2 until the change at UTC 1000 h, UTC+3 afterwards.
        let change = 1000 * H;
        let mut clock = ServerClock::new(7200);
        assert_eq!(clock.to_utc(500 * H), 498 * H);
        clock.set(10_800, change);
        clock.set(10_800, change + H);
        assert_eq!(clock.offset_s(), 10_800);
        // A tick stamped just after the change, reported 10 s later.
        let mut late = ServerClock::new(7200);
        late.set(10_800, change + 10_000);
        assert_eq!(late.to_utc(change + 3 * H + 1), change + 1);
        // Opened at server 999:30 (before the change): UTC+2 still.
        assert_eq!(clock.to_utc(999 * H + H / 2), 997 * H + H / 2);
        // Stamped server 1004:00 (after): UTC+3.
        assert_eq!(clock.to_utc(1004 * H), 1001 * H);
        // Back to UTC+2 later; the summer is still known.
        clock.set(7200, 2000 * H);
        assert_eq!(clock.to_utc(1500 * H), 1497 * H);
        assert_eq!(clock.to_utc(2100 * H), 2098 * H);
        assert_eq!(clock.to_utc(10 * H), 8 * H);
    }

    #[test]
    fn history_is_bounded_and_shared() {
        let mut clock = ServerClock::new(0);
        for i in 0..100 {
            clock.set(if i % 2 == 0 { 3600 } else { 0 }, i * H);
        }
        assert!(clock.segments.len() <= HISTORY);
        assert_eq!(clock.segments[0].0, i64::MIN);
        let clocks = Clocks::default();
        clocks.update("a", 7200, 0);
        let c = clocks.update("a", 10_800, 10 * H);
        assert_eq!(c.to_utc(5 * H), 3 * H);
        assert_eq!(clocks.update("b", 0, 0).offset_s(), 0);
    }
}
