//! In-process API tests: a whole gateway (`gateway::run`, standalone, on
//! port 0, with its own shutdown) driven over real sockets by a
//! tokio-tungstenite client, so protocol behaviour is tested without
//! spawning processes. Configuration comes from explicit flags only (never
//! the developer's environment), and every wait has a deadline.

mod support;

mod admission;
mod eio;
mod http;
mod ws;
