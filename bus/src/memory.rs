//! In-process bus for standalone mode: a tokio broadcast channel.
//!
//! Every message gets the next value of one counter as its `seq`, the way a
//! single JetStream stream numbers what it stores, so the gateway's resume
//! logic works the same in both modes.

use crate::{pattern::subject_matches, BusMessage, Headers, Subscription};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Large enough that a gateway busy for a moment does not lag behind a
/// simulator; a lagging subscriber skips ahead (with a warning).
const CAPACITY: usize = 65_536;

#[derive(Clone)]
pub struct MemoryBus {
    tx: broadcast::Sender<BusMessage>,
    seq: Arc<AtomicU64>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        MemoryBus {
            tx,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn publish(&self, subject: String, payload: Bytes, headers: Headers) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        // No subscriber yet is not an error: nobody was listening.
        let _ = self.tx.send(BusMessage {
            subject,
            payload,
            headers,
            seq: Some(seq),
            pending: None,
        });
    }

    /// The `seq` of the last message published (0: none yet): a feed that
    /// subscribes now gets everything after it.
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self, pattern: &str) -> Subscription {
        let pattern = pattern.to_owned();
        let rx = self.tx.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(msg) => return Some((msg, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "memory bus subscriber lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |m| futures::future::ready(subject_matches(&pattern, &m.subject)))
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_matching_subjects_in_order_with_seq() {
        let bus = MemoryBus::new();
        let mut sub = bus.subscribe("mt5.*.logs");
        bus.publish(
            "mt5.a.logs".into(),
            Bytes::from_static(b"1"),
            Headers::default(),
        );
        bus.publish(
            "mt5.a.orders".into(),
            Bytes::from_static(b"x"),
            Headers::default(),
        );
        bus.publish(
            "mt5.b.logs".into(),
            Bytes::from_static(b"2"),
            Headers::default(),
        );
        let first = sub.next().await.unwrap();
        let second = sub.next().await.unwrap();
        assert_eq!(&first.payload[..], b"1");
        assert_eq!(&second.payload[..], b"2");
        assert!(first.seq < second.seq);
    }
}
