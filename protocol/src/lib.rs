//! The shared vocabulary of the MT5 dashboard system.
//!
//! Both services depend on this crate so that a channel name, an event name,
//! a NATS subject or a payload field is spelled in exactly one place. The
//! payload structs mirror `shared/spec/websocket-spec.pt.md` field for field;
//! the gateway never parses them on the hot path (it relays bytes), but the
//! ingestor builds them and the tests check them.

pub mod account;
pub mod channel;
pub mod error_code;
pub mod payload;
pub mod subject;
pub mod time;

pub use account::{Account, TokenError};
pub use channel::{Channel, ParseChannelError};
pub use error_code::ErrorCode;
pub use subject::{Route, SubjectScheme};
