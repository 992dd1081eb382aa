//! What one connection and one user may use: inbound rate and size, queue
//! lengths, connections per user, socket buffers.

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitsConfig {
    /// Largest inbound event payload accepted, in bytes.
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    pub max_payload_bytes: usize,

    /// Inbound events per second allowed per connection (sustained).
    #[arg(long, env = "RATE_LIMIT_PER_SEC", default_value_t = 20)]
    pub rate_limit_per_sec: u32,

    /// Inbound events a connection may send in a burst.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 40)]
    pub rate_limit_burst: u32,

    /// Rate-limited events tolerated before the connection is closed as abusive.
    #[arg(long, env = "RATE_LIMIT_STRIKES", default_value_t = 50)]
    pub rate_limit_strikes: u32,

    /// Log and signal entries queued for one client before it is cut off as
    /// a slow consumer (state channels never queue: they conflate).
    #[arg(long, env = "CLIENT_QUEUE_LIMIT", default_value_t = 4096)]
    pub client_queue_limit: usize,

    /// State values (quotes, positions, orders, account) queued for one
    /// client before newer values replace queued ones of the same key: a
    /// client that lags for a moment still gets every quote, one that
    /// stays behind gets the latest.
    #[arg(long, env = "STATE_BACKLOG", default_value_t = 64)]
    pub state_backlog: usize,

    /// Concurrent connections one user (token `sub`) may hold, across replicas.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 20)]
    pub max_connections_per_user: usize,

    /// Packets a Socket.IO socket may have queued inside socketioxide.
    #[arg(long, env = "SOCKET_BUFFER", default_value_t = 128)]
    pub socket_buffer: usize,

    /// Kernel send buffer of each connection, in bytes (SO_SNDBUF; 0 leaves
    /// it to the kernel, which grows it to megabytes). Small, so that a
    /// client that stops reading pushes back within seconds and is cut off
    /// as a slow consumer rather than hidden behind megabytes of buffers.
    #[arg(long, env = "TCP_SEND_BUFFER", default_value_t = 64 * 1024)]
    pub tcp_send_buffer: usize,
}
