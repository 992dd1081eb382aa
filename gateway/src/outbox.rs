//! One client's bounded, conflating queue of frames to write.
//!
//! The fan-out pushes here and never waits; the client's writer task drains
//! it as fast as the socket takes data. State frames (quotes per symbol,
//! positions, orders, account) keep only the newest pending value per key,
//! in the position the key was first queued, so a slow client skips
//! intermediate values but never sees an older one after a newer one.
//! Event frames (logs, signals, replies) queue in order up to a limit; past
//! it the client is cut off as a slow consumer and can resume its session.
//! Memory per client is therefore bounded by (keys + limit) frames.

use crate::frame::{Frame, StateKey};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Why a writer should stop writing and close its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    /// The event queue overflowed: a slow consumer.
    SlowConsumer,
    /// Told by the gateway (drain, token expiry, abuse).
    Told { reason: String, reconnect: bool },
    /// The client is already gone: nothing to say, just stop.
    Gone,
}

enum Slot {
    State(StateKey),
    Event(Arc<Frame>),
}

#[derive(Default)]
struct Inner {
    order: VecDeque<Slot>,
    pending: HashMap<StateKey, Arc<Frame>>,
    events: usize,
    closing: Option<Closing>,
}

pub struct Outbox {
    inner: Mutex<Inner>,
    ready: Notify,
    event_limit: usize,
}

impl Outbox {
    pub fn new(event_limit: usize) -> Self {
        Outbox {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            event_limit: event_limit.max(1),
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
        match frame.key.clone() {
            Some(key) => {
                if inner.pending.insert(key.clone(), frame).is_none() {
                    inner.order.push_back(Slot::State(key));
                }
            }
            None => {
                if inner.events >= self.event_limit {
                    inner.closing = Some(Closing::SlowConsumer);
                    crate::metrics::client_cut_off("slow_consumer");
                    drop(inner);
                    self.ready.notify_one();
                    return false;
                }
                inner.events += 1;
                inner.order.push_back(Slot::Event(frame));
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
        loop {
            match inner.order.pop_front()? {
                Slot::Event(frame) => {
                    inner.events -= 1;
                    return Some(frame);
                }
                Slot::State(key) => {
                    if let Some(frame) = inner.pending.remove(&key) {
                        return Some(frame);
                    }
                }
            }
        }
    }

    /// Puts back a frame the socket could not take yet, at the front. A
    /// state frame that has meanwhile been superseded is dropped instead.
    pub fn unpop(&self, frame: Arc<Frame>) {
        let mut inner = self.lock();
        match frame.key.clone() {
            Some(key) => {
                if !inner.pending.contains_key(&key) {
                    inner.pending.insert(key.clone(), frame);
                    inner.order.push_front(Slot::State(key));
                }
            }
            None => {
                inner.events += 1;
                inner.order.push_front(Slot::Event(frame));
            }
        }
    }

    /// Frames waiting to be written.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the writer to say goodbye and close. The first reason wins.
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
        let o = Outbox::new(10);
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
        let o = Outbox::new(2);
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
        let o = Outbox::new(10);
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
        let o = Outbox::new(100);
        for i in 0..100_000 {
            o.push(quote(["A", "B", "C"][i % 3], i as f64));
        }
        assert_eq!(o.len(), 3);
    }
}
