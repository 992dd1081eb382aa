//! From a client's socket to its [`Client`](crate::session::Client) and
//! back. Three endpoints: the plain WebSocket dialect (`ws`), our own
//! Engine.IO/Socket.IO path, the fast path (`eio`: the session, for
//! WebSocket and long-polling alike, with the polling transport and its
//! sid table in `polling`), and the socketioxide adapter that serves
//! Socket.IO instead with `SOCKETIO_FAST_PATH=false` (`socketio`). What
//! they share: one way to read credentials and admit (`credentials`), the
//! WebSocket plumbing and the one reader loop (`websocket`), and the
//! per-client writer that drains the outbox into the socket (`writer`).
//! `tls` serves WSS/HTTPS directly; `listener` admits connections against
//! the global and per-address limits and serves HTTP with a header-read
//! deadline, for both.

pub mod credentials;
pub mod eio;
pub mod listener;
pub mod polling;
pub(crate) mod sio_packet;
pub mod socketio;
pub mod tls;
mod websocket;
pub mod writer;
pub mod ws;
