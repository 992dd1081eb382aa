//! The quote throttle: at most one quote per account and symbol per
//! interval goes out, and the last one held back is always sent when the
//! interval ends, so clients see the latest price without seeing every tick.
//!
//! It runs once in the relay (per symbol, not per client), so its cost does
//! not grow with the number of clients.

use crate::fanout::frame::Frame;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A quote's throttling key: (account, symbol).
pub type QuoteKey = (String, Arc<str>);

/// What to do with a quote offered to the throttle.
pub enum Offer {
    /// Send it now.
    Send(Arc<Frame>),
    /// Held back until its interval ends; remember it as the last value.
    Held(Arc<Frame>),
}

pub struct Throttle {
    /// The interval between two quotes of one symbol.
    interval: Duration,
    /// When each key last went out.
    last_sent: HashMap<QuoteKey, Instant>,
    /// The newest quote held back per key, with the time it is due.
    held: HashMap<QuoteKey, (Instant, Arc<Frame>)>,
}

impl Throttle {
    /// A throttle letting one quote per key through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last_sent: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// True when quotes pass straight through (interval 0).
    pub fn is_off(&self) -> bool {
        self.interval.is_zero()
    }

    /// Decides for a new quote: send it now, or hold it (replacing the one
    /// held for the same key) until its interval ends.
    pub fn offer(&mut self, key: QuoteKey, frame: Arc<Frame>) -> Offer {
        let now = Instant::now();
        match self.last_sent.get(&key) {
            Some(sent) if now.duration_since(*sent) < self.interval => {
                let due = *sent + self.interval;
                self.held.insert(key, (due, frame.clone()));
                Offer::Held(frame)
            }
            _ => {
                self.held.remove(&key);
                self.last_sent.insert(key, now);
                Offer::Send(frame)
            }
        }
    }

    /// Waits until held quotes are due and returns them (they count as
    /// sent now). Pending forever while nothing is held. Cancel-safe.
    pub async fn released(&mut self) -> Vec<(QuoteKey, Arc<Frame>)> {
        match self.held.values().map(|(due, _)| *due).min() {
            Some(due) => tokio::time::sleep_until(due).await,
            None => std::future::pending().await,
        }
        let now = Instant::now();
        let due: Vec<QuoteKey> = self
            .held
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut released = Vec::with_capacity(due.len());
        for key in due {
            if let Some((_, frame)) = self.held.remove(&key) {
                self.last_sent.insert(key.clone(), now);
                released.push((key, frame));
            }
        }
        released
    }
}
