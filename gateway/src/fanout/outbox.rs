//! One client's bounded, conflating queue of frames to write.
//!
//! The fan-out pushes here and never waits; the client's writer task drains
//! it as fast as the socket takes data. Everything queues in order. State
//! frames (quotes per symbol, positions, orders, account) may queue up to a
//! small backlog, so a client that falls behind for a moment still gets
//! every value; past it, a new state value replaces the newest queued value
//! of its key in place, so a slow client skips intermediate values but never
//! sees an older one after a newer one. Event frames (logs, signals,
//! replies) queue up to a limit; past it the client is cut off as a slow
//! consumer and can resume its session. Memory per client is therefore
//! bounded by (state backlog + keys + event limit) shared frames.

use crate::fanout::frame::{Frame, StateKey};
use crate::observability::metrics;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Why a writer should stop writing and close its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    /// The event queue overflowed: a slow consumer.
    SlowConsumer,
    /// Told by the gateway (drain, token expiry, abuse).
    Told {
        /// Shown to the client in `disconnected`.
        reason: String,
        /// Whether the client should reconnect.
        reconnect: bool,
    },
    /// The client is already gone: nothing to say, just stop.
    Gone,
}

#[derive(Default)]
struct Inner {
    /// Frames to write, oldest first.
    order: VecDeque<Arc<Frame>>,
    /// The position (see `head`) of each key's newest queued frame.
    newest: HashMap<StateKey, u64>,
    /// The position of `order[0]`; positions only grow.
    head: u64,
    /// State frames queued.
    states: usize,
    /// Event frames (logs, signals, replies) queued.
    events: usize,
    /// Set once the writer must stop.
    closing: Option<Closing>,
}

impl Inner {
    fn newest_index(&self, key: &StateKey) -> Option<usize> {
        let at = *self.newest.get(key)?;
        at.checked_sub(self.head).map(|i| i as usize)
    }
}

pub struct Outbox {
    /// The queue.
    inner: Mutex<Inner>,
    /// Wakes the writer.
    ready: Notify,
    /// Event frames queued before the client is cut off.
    event_limit: usize,
    /// State frames queued before new values replace queued ones.
    state_backlog: usize,
}

impl Outbox {
    /// `event_limit`: logs, signals and replies queued before the client
    /// is cut off; `state_backlog`: state frames queued before new values
    /// replace queued ones (0: always keep only the newest per key).
    pub fn new(event_limit: usize, state_backlog: usize) -> Self {
        Outbox {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            event_limit: event_limit.max(1),
            state_backlog,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half
        // updated in a way that matters more than losing the client.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame. Returns false when the client is closing (the frame
    /// is dropped) so callers can stop feeding it.
    pub fn push(&self, frame: Arc<Frame>) -> bool {
        let mut inner = self.lock();
        if inner.closing.is_some() {
            return false;
        }
        let was_empty = inner.order.is_empty();
        match &frame.key {
            Some(key) => {
                let queued = inner.newest_index(key);
                match queued {
                    Some(i) if inner.states >= self.state_backlog => inner.order[i] = frame,
                    _ => {
                        let at = inner.head + inner.order.len() as u64;
                        inner.newest.insert(key.clone(), at);
                        inner.states += 1;
                        inner.order.push_back(frame);
                    }
                }
            }
            None => {
                if inner.events >= self.event_limit {
                    inner.closing = Some(Closing::SlowConsumer);
                    metrics::client_cut_off("slow_consumer");
                    drop(inner);
                    self.ready.notify_one();
                    return false;
                }
                inner.events += 1;
                inner.order.push_back(frame);
            }
        }
        drop(inner);
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Takes the next frame to write, if any. A slow consumer's queue is
    /// abandoned: it will resume from its session instead.
    pub fn pop(&self) -> Option<Arc<Frame>> {
        let mut inner = self.lock();
        if matches!(inner.closing, Some(Closing::SlowConsumer | Closing::Gone)) {
            return None;
        }
        let frame = inner.order.pop_front()?;
        let at = inner.head;
        inner.head += 1;
        match &frame.key {
            Some(key) => {
                inner.states -= 1;
                if inner.newest.get(key) == Some(&at) {
                    inner.newest.remove(key);
                }
            }
            None => inner.events -= 1,
        }
        Some(frame)
    }

    /// Puts back a frame the socket could not take yet, at the front. A
    /// state frame whose key has a newer value queued is dropped instead.
    pub fn unpop(&self, frame: Arc<Frame>) {
        let mut inner = self.lock();
        match &frame.key {
            Some(key) => {
                if inner.newest.contains_key(key) {
                    return;
                }
                inner.head -= 1;
                let at = inner.head;
                inner.newest.insert(key.clone(), at);
                inner.states += 1;
            }
            None => {
                inner.head -= 1;
                inner.events += 1;
            }
        }
        inner.order.push_front(frame);
    }

    /// Frames waiting to be written.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the writer to say goodbye and stop. The first reason given
    /// wins; true when this call was the first.
    pub fn close(&self, closing: Closing) -> bool {
        let mut inner = self.lock();
        let first = inner.closing.is_none();
        if first {
            inner.closing = Some(closing);
        }
        drop(inner);
        self.ready.notify_one();
        first
    }

    pub fn closing(&self) -> Option<Closing> {
        self.lock().closing.clone()
    }

    /// Resolves when there may be something to do (frames or closing).
    pub async fn wait(&self) {
        self.ready.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Channel;

    fn quote(symbol: &str, bid: f64) -> Arc<Frame> {
        let json = format!(r#"{{"symbol":"{symbol}","bid":{bid}}}"#);
        Arc::new(Frame::from_bus(Channel::Quotes, Some(symbol), json.as_bytes(), None).unwrap())
    }

    fn log(seq: u64) -> Arc<Frame> {
        Arc::new(Frame::from_bus(Channel::Logs, None, b"{}", Some(seq)).unwrap())
    }

    #[test]
    fn conflates_state_per_key_in_first_queued_order() {
        let o = Outbox::new(10, 0);
        o.push(quote("EURUSD", 1.0));
        o.push(quote("GBPUSD", 2.0));
        o.push(quote("EURUSD", 1.5));
        assert_eq!(o.len(), 2);
        assert_eq!(
            o.pop().unwrap().data.get(),
            r#"{"symbol":"EURUSD","bid":1.5}"#
        );
        assert_eq!(
            o.pop().unwrap().data.get(),
            r#"{"symbol":"GBPUSD","bid":2}"#
        );
        assert!(o.pop().is_none());
    }

    #[test]
    fn events_keep_order_and_overflow_marks_slow_consumer() {
        let o = Outbox::new(2, 0);
        assert!(o.push(log(1)));
        assert!(o.push(log(2)));
        assert!(!o.push(log(3)));
        assert_eq!(o.closing(), Some(Closing::SlowConsumer));
        assert!(
            !o.push(quote("X", 1.0)),
            "a closing client takes nothing more"
        );
        assert!(o.pop().is_none(), "a slow consumer's backlog is abandoned");
    }

    #[test]
    fn unpop_never_resurrects_a_superseded_value() {
        let o = Outbox::new(10, 0);
        o.push(quote("EURUSD", 1.0));
        let old = o.pop().unwrap();
        o.push(quote("EURUSD", 2.0));
        o.unpop(old);
        assert_eq!(
            o.pop().unwrap().data.get(),
            r#"{"symbol":"EURUSD","bid":2}"#
        );
        assert!(o.pop().is_none());
        let l = log(5);
        o.push(log(6));
        o.unpop(l);
        assert_eq!(o.pop().unwrap().seq, Some(5));
        assert_eq!(o.pop().unwrap().seq, Some(6));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let o = Outbox::new(100, 50);
        for i in 0..100_000 {
            o.push(quote(["A", "B", "C"][i % 3], i as f64));
        }
        assert_eq!(o.len(), 50);
        // The newest value of each key is queued, and nothing older
        // follows anything newer of the same key.
        let mut last: HashMap<String, f64> = HashMap::new();
        while let Some(f) = o.pop() {
            let v: serde_json::Value = serde_json::from_str(f.data.get()).unwrap();
            let (sym, bid) = (
                v["symbol"].as_str().unwrap().to_owned(),
                v["bid"].as_f64().unwrap(),
            );
            assert!(
                last.get(&sym).is_none_or(|b| *b < bid),
                "{sym} went back to {bid}"
            );
            last.insert(sym, bid);
        }
        assert_eq!(last["A"], 99_999.0);
        assert_eq!(last["B"], 99_997.0);
        assert_eq!(last["C"], 99_998.0);
    }

    #[test]
    fn a_short_lag_loses_no_state_value() {
        let o = Outbox::new(10, 8);
        for i in 0..8 {
            o.push(quote("EURUSD", i as f64));
        }
        let bids: Vec<String> = std::iter::from_fn(|| o.pop())
            .map(|f| f.data.get().to_owned())
            .collect();
        assert_eq!(bids.len(), 8, "{bids:?}");
        assert_eq!(o.len(), 0);
        // Positions keep working after the queue emptied.
        o.push(quote("EURUSD", 9.0));
        o.push(log(1));
        assert_eq!(o.pop().unwrap().key, Some(StateKey::Quote("EURUSD".into())));
        assert_eq!(o.pop().unwrap().seq, Some(1));
    }
}
