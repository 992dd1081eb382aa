//! The MT5 dashboard gateway.
//!
//! A message's path through the folders: `fanout` (bus → relay → throttle
//! → rooms → each client's outbox), `transport` (outbox → writer → socket,
//! and socket → reader → client), with `session` (the client, its
//! admission, replay, checkpoints and store) between the two. `http`
//! routes requests to the transports and serves probes and the console;
//! `observability` holds metrics and telemetry; `config` the settings.
//! `app` is the shared handles, `server` starts everything and drains.
//!
//! Modules, by concern (dependencies point down this list):
//! - `server`: [`run`], serve, drain; `http`: router, middleware, probes,
//!   console;
//! - `transport`: `ws` (plain dialect), `eio` (Engine.IO fast path),
//!   `socketio` (socketioxide adapter), `credentials`, `websocket` (the
//!   shared reader loop and sink), `writer`, `tls`;
//! - `app`: the handles every handler shares;
//! - `session`: `client`, `commands`, `admission`, `replay`, `registry`,
//!   `checkpoint`, `delivery`, `limits`, `store`, `auth`;
//! - `fanout`: `relay`, `throttle`, `rooms`, `history`, `outbox`, `frame`;
//! - `observability`: `metrics`, `telemetry`; `config`: the settings.

mod app;
pub mod config;
mod fanout;
mod http;
mod observability;
mod server;
mod session;
mod transport;

pub use observability::telemetry;
pub use server::{default_replica_id, run, StartError};
pub use session::auth;
