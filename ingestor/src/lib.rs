//! The ingestor: everything that puts MT5 data onto the bus.
//!
//! A source (the MQL5 bridge, the simulator, or a replayed recording) turns
//! what it sees into the spec's payloads and hands them to a [`Publisher`],
//! which owns subjects and headers. The simulator and the publisher live in
//! the `sim` crate (the gateway's standalone mode runs [`sim::run`]
//! in-process without linking the bridge); they are re-exported here under
//! their old paths.

pub mod bridge;
pub mod config;
mod ndjson;
pub mod record;
pub mod replay;
pub use ::sim;
pub use sim::publisher;

pub use publisher::{PublishError, Publisher};
