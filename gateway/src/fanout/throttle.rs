//! The quote throttle: at most one quote per account and symbol per
//! interval goes out, and the last one held back is always sent when the
//! interval ends, so clients see the latest price without seeing every tick.
//!
//! It runs once in the relay (per symbol, not per client), so its cost does
//! not grow with the number of clients. Each symbol sent recently has one
//! timer in a [`DelayQueue`] (a timer wheel), due when its interval ends:
//! a new quote costs a hash lookup, never a scan of every held quote.

use crate::fanout::frame::Frame;
use futures::future::poll_fn;
use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio_util::time::DelayQueue;

/// A quote's throttling key: (account, symbol).
pub type QuoteKey = (protocol::Account, Arc<str>);

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
    /// The keys sent within the last interval, each with the newest quote
    /// held back meanwhile, if any.
    recent: HashMap<QuoteKey, Option<Arc<Frame>>>,
    /// One timer per recent key.
    due: DelayQueue<QuoteKey>,
}

impl Throttle {
    /// A throttle letting one quote per key through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            recent: HashMap::new(),
            due: DelayQueue::new(),
        }
    }

    /// True when quotes pass straight through (interval 0).
    pub fn is_off(&self) -> bool {
        self.interval.is_zero()
    }

    /// Decides for a new quote: send it now, or hold it (replacing the one
    /// held for the same key) until its interval ends.
    pub fn offer(&mut self, key: QuoteKey, frame: Arc<Frame>) -> Offer {
        match self.recent.get_mut(&key) {
            Some(held) => {
                *held = Some(frame.clone());
                Offer::Held(frame)
            }
            None => {
                self.sent(key);
                Offer::Send(frame)
            }
        }
    }

    /// Starts `key`'s interval now.
    fn sent(&mut self, key: QuoteKey) {
        self.due.insert(key.clone(), self.interval);
        self.recent.insert(key, None);
    }

    /// Waits for the next held quote whose interval ended and returns it
    /// (it counts as sent now). Pending while nothing is held. Cancel-safe:
    /// nothing is lost when the future is dropped.
    pub async fn released(&mut self) -> (QuoteKey, Arc<Frame>) {
        loop {
            let expired = poll_fn(|cx| match self.due.poll_expired(cx) {
                Poll::Ready(Some(expired)) => Poll::Ready(expired.into_inner()),
                // No timer at all: the relay asks again after its next message.
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            })
            .await;
            if let Some(Some(frame)) = self.recent.remove(&expired) {
                self.sent(expired.clone());
                return (expired, frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Channel;

    fn quote(symbol: &str, bid: u32) -> Arc<Frame> {
        let json = format!(r#"{{"bid":{bid}}}"#);
        Arc::new(Frame::from_bus(Channel::Quotes, Some(symbol), json.as_bytes(), None).unwrap())
    }

    fn key(symbol: &str) -> QuoteKey {
        (protocol::Account::new("demo").unwrap(), Arc::from(symbol))
    }

    #[tokio::test(start_paused = true)]
    async fn one_per_interval_and_the_latest_is_released() {
        let mut t = Throttle::new(Duration::from_millis(100));
        assert!(matches!(t.offer(key("A"), quote("A", 1)), Offer::Send(_)));
        assert!(matches!(t.offer(key("B"), quote("B", 1)), Offer::Send(_)));
        for bid in 2..=5 {
            assert!(matches!(t.offer(key("A"), quote("A", bid)), Offer::Held(_)));
        }
        let start = tokio::time::Instant::now();
        let (k, frame) = t.released().await;
        assert_eq!(k, key("A"));
        assert_eq!(frame.data.get(), r#"{"bid":5}"#);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // Released counts as sent: the next one waits a full interval.
        assert!(matches!(t.offer(key("A"), quote("A", 6)), Offer::Held(_)));
        // B held nothing: its interval ended quietly, so B goes straight out.
        let (k, _) = t.released().await;
        assert_eq!(k, key("A"));
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        assert!(matches!(t.offer(key("B"), quote("B", 2)), Offer::Send(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_held_means_nothing_released() {
        let mut t = Throttle::new(Duration::from_millis(100));
        assert!(matches!(t.offer(key("A"), quote("A", 1)), Offer::Send(_)));
        let waited = tokio::time::timeout(Duration::from_secs(1), t.released()).await;
        assert!(waited.is_err(), "nothing was held back");
        assert!(matches!(t.offer(key("A"), quote("A", 2)), Offer::Send(_)));
    }
}
