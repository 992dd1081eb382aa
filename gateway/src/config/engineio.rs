//! The Engine.IO timers, the same on both Socket.IO paths (our fast path
//! and socketioxide) and advertised in the open packet, so that clients
//! and protocol tests can rely on them.

use clap::Args;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Socket.IO timers")]
pub struct EngineIoConfig {
    /// Milliseconds between the server's pings (`pingInterval`).
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,

    /// Milliseconds a client has to answer a ping before it is dropped
    /// (`pingTimeout`).
    #[arg(long, env = "PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,

    /// Milliseconds a new Socket.IO connection has to join the namespace
    /// (send its CONNECT) before it is closed.
    #[arg(long, env = "CONNECT_TIMEOUT_MS", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
}

impl EngineIoConfig {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}
