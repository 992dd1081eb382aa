//! Which logs and signals a client has *surely* received: the checkpoint a
//! resumed session replays from.
//!
//! Writing a frame is not delivering it. Socket.IO frames first wait in
//! socketioxide's bounded queue (in this process: lost if it crashes), then
//! in kernel buffers (lost if the client's network drops). So an entry
//! counts as delivered only once it is both old enough (`settle`) and
//! followed by enough other frames (`queue_depth`) to have left any queue.
//! The price is a few duplicates after a crash (same `seq`, which clients
//! can drop), never a loss.

use crate::fanout::frame::Frame;
use protocol::Channel;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const LOGS: usize = 0;
const SIGNALS: usize = 1;
/// Bound on the entries tracked per client; past it the oldest settle early.
const MAX_TRACKED: usize = 16_384;

pub struct Delivery {
    /// How old an entry must be to count as delivered.
    settle: Duration,
    /// How many frames must follow it.
    queue_depth: u64,
    /// Frames written so far.
    written: u64,
    /// (frame number, when written, LOGS/SIGNALS, seq), oldest first.
    recent: VecDeque<(u64, Instant, usize, u64)>,
    /// The last surely delivered `seq`, for logs and signals.
    safe: [u64; 2],
    /// Where each subscription started (stored with the session, so a
    /// resume never reaches before it).
    floor: [u64; 2],
}

impl Delivery {
    pub fn new(settle: Duration, queue_depth: u64) -> Self {
        Delivery {
            settle,
            queue_depth,
            written: 0,
            recent: VecDeque::new(),
            safe: [0, 0],
            floor: [0, 0],
        }
    }

    /// Starts (or restarts) a channel's count at `seq`: everything up to it
    /// is not this client's to receive, or was received before. `floor` is
    /// where the subscription began (`seq` itself for a new one).
    pub fn start_at(&mut self, channel: Channel, seq: u64, floor: u64) {
        if let Some(i) = index(channel) {
            self.recent.retain(|e| e.2 != i);
            self.safe[i] = seq;
            self.floor[i] = floor.min(seq);
        }
    }

    /// Where the logs and the signals subscriptions began.
    pub fn floors(&self) -> (u64, u64) {
        (self.floor[LOGS], self.floor[SIGNALS])
    }

    pub fn wrote(&mut self, frame: &Frame, now: Instant) {
        self.written += 1;
        if let (Some(i), Some(seq)) = (frame.channel.and_then(index), frame.seq) {
            self.recent.push_back((self.written, now, i, seq));
            if self.recent.len() > MAX_TRACKED {
                self.settle_front();
            }
        }
    }

    /// The last `seq` surely delivered, for logs and for signals.
    pub fn safe(&mut self, now: Instant) -> (u64, u64) {
        while let Some(&(n, at, _, _)) = self.recent.front() {
            let old_enough = now.duration_since(at) >= self.settle;
            let pushed_out = self.written - n >= self.queue_depth;
            if !(old_enough && pushed_out) {
                break;
            }
            self.settle_front();
        }
        (self.safe[LOGS], self.safe[SIGNALS])
    }

    fn settle_front(&mut self) {
        if let Some((_, _, i, seq)) = self.recent.pop_front() {
            self.safe[i] = self.safe[i].max(seq);
        }
    }
}

fn index(channel: Channel) -> Option<usize> {
    match channel {
        Channel::Logs => Some(LOGS),
        Channel::Signals => Some(SIGNALS),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(seq: u64) -> Frame {
        Frame::from_bus(Channel::Logs, None, b"{}", Some(seq)).unwrap()
    }

    fn quote() -> Frame {
        Frame::from_bus(Channel::Quotes, Some("X"), b"{}", None).unwrap()
    }

    #[test]
    fn an_entry_is_safe_once_old_and_pushed_out() {
        let t0 = Instant::now();
        let mut d = Delivery::new(Duration::from_secs(2), 3);
        d.start_at(Channel::Logs, 10, 10);
        d.wrote(&log(11), t0);
        assert_eq!(
            d.safe(t0 + Duration::from_secs(5)),
            (10, 0),
            "not pushed out yet"
        );
        for _ in 0..3 {
            d.wrote(&quote(), t0);
        }
        assert_eq!(
            d.safe(t0 + Duration::from_secs(1)),
            (10, 0),
            "not old enough"
        );
        assert_eq!(d.safe(t0 + Duration::from_secs(2)), (11, 0));
    }

    #[test]
    fn channels_are_counted_apart() {
        let t0 = Instant::now();
        let mut d = Delivery::new(Duration::ZERO, 0);
        d.wrote(&log(5), t0);
        d.wrote(
            &Frame::from_bus(Channel::Signals, None, b"{}", Some(6)).unwrap(),
            t0,
        );
        assert_eq!(d.safe(t0), (5, 6));
        d.start_at(Channel::Logs, 2, 2);
        assert_eq!(d.safe(t0), (2, 6));
    }
}
