//! The ingestor: everything that puts MT5 data onto the bus.
//!
//! A source (the MQL5 bridge, the simulator, or a replayed recording) turns
//! what it sees into the spec's payloads and hands them to a [`Publisher`],
//! which owns subjects and headers. The gateway's standalone mode runs
//! [`sim::run`] in-process against a memory bus, so the library API is the
//! same whether the data ends up in NATS or not.

pub mod bridge;
pub mod config;
pub mod http;
pub mod metrics;
mod ndjson;
pub mod publisher;
pub mod record;
pub mod replay;
pub mod sim;

pub use metrics::Metrics;
pub use publisher::{Prepared, PublishError, Publisher};
