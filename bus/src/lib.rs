//! The bus: one small interface over NATS and an in-memory broadcast.
//!
//! The ingestor publishes payload bytes to a subject; the gateway subscribes
//! to a wildcard and gets the same bytes back. Nothing here parses payloads.
//! Standalone mode uses [`MemoryBus`] so that one process needs no server;
//! every other deployment uses [`NatsBus`].
//!
//! `Bus` is an enum rather than a trait object: there are exactly two
//! implementations and the enum keeps the async code free of boxing.

pub mod jetstream;
mod memory;
mod nats;
mod pattern;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use jetstream::{EventPages, Start, StreamKind, StreamLimits, StreamPosition};
pub use memory::MemoryBus;
pub use nats::{redact, server_addrs, NatsBus, NatsOptions};
pub use pattern::subject_matches;

/// Headers a message may carry across the bus: W3C trace context and the
/// JetStream de-duplication id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub msg_id: Option<String>,
}

/// One message as the gateway sees it.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub subject: String,
    pub payload: Bytes,
    pub headers: Headers,
    /// The position in the bus's ordered history, when the bus keeps one
    /// (the in-memory bus always; NATS when read through JetStream).
    pub seq: Option<u64>,
    /// For a JetStream read: how many messages were still waiting after
    /// this one (0: the reader has caught up with the stream).
    pub pending: Option<u64>,
}

pub type Subscription = BoxStream<'static, BusMessage>;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("publish to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("subscribe to {subject} failed: {reason}")]
    Subscribe { subject: String, reason: String },
    #[error("jetstream {what}: {reason}")]
    JetStream { what: String, reason: String },
}

/// Whether the bus can carry messages right now (reported on readiness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusHealth {
    Up,
    Down,
}

#[derive(Clone)]
pub enum Bus {
    Memory(MemoryBus),
    Nats(NatsBus),
}

impl Bus {
    pub async fn publish(
        &self,
        subject: String,
        payload: Bytes,
        headers: Headers,
    ) -> Result<(), BusError> {
        match self {
            Bus::Memory(b) => {
                b.publish(subject, payload, headers);
                Ok(())
            }
            Bus::Nats(b) => b.publish(subject, payload, headers).await,
        }
    }

    /// Publishes and, on NATS, waits until JetStream has stored it: for
    /// entries that must survive (logs, signals).
    pub async fn publish_stored(
        &self,
        subject: String,
        payload: Bytes,
        headers: Headers,
    ) -> Result<(), BusError> {
        match self {
            Bus::Memory(b) => {
                b.publish(subject, payload, headers);
                Ok(())
            }
            Bus::Nats(b) => b.publish_stored(subject, payload, headers).await,
        }
    }

    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        match self {
            Bus::Memory(b) => Ok(b.subscribe(pattern)),
            Bus::Nats(b) => b.subscribe(pattern).await,
        }
    }

    /// Makes sure everything published so far has left this process.
    pub async fn flush(&self) -> Result<(), BusError> {
        match self {
            Bus::Memory(_) => Ok(()),
            Bus::Nats(b) => b.flush().await,
        }
    }

    pub fn health(&self) -> BusHealth {
        match self {
            Bus::Memory(_) => BusHealth::Up,
            Bus::Nats(b) => b.health(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Bus::Memory(_) => "memory",
            Bus::Nats(_) => "nats",
        }
    }
}
