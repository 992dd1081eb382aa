//! The gateway's one typed configuration, read from flags, the environment
//! and `.env` (in that order of precedence), with the defaults of contract
//! section 10. Everything a replica needs to know is here, so startup can
//! validate it once and fail with a clear message.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Real-time gateway for MT5 trading dashboards (Socket.IO and plain WebSocket)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Mint a token signed with the configured key (JWT_SECRET, or
    /// JWT_PRIVATE_KEY_FILE for RS256/ES256) and print it.
    Token(TokenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user the token is for (`sub`).
    #[arg(long)]
    pub sub: String,
    /// The MT5 account the token may see (default: the gateway's DEFAULT_ACCOUNT).
    #[arg(long)]
    pub account: Option<String>,
    /// Comma-separated channel allow-list (default: all six).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Lifetime in seconds; negative makes an already expired token (for tests).
    #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
    pub ttl: i64,
    /// PEM private key for RS256/ES256 tokens (instead of JWT_SECRET).
    #[arg(long, env = "JWT_PRIVATE_KEY_FILE")]
    pub private_key_file: Option<PathBuf>,
    /// `kid` header to set (to pick a key from a JWKS file).
    #[arg(long)]
    pub kid: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// One process, in-memory bus, simulated terminal, memory session store.
    #[arg(long)]
    pub standalone: bool,

    /// Listen address (port 0 picks a free port; the chosen one is printed).
    #[arg(long = "addr", env = "GATEWAY_ADDR", default_value = "127.0.0.1:9090")]
    pub addr: SocketAddr,

    /// NATS server(s), comma-separated.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,

    /// Redis for session state; none means an in-memory store (one replica only).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// HS256 shared secret.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM or JWKS file with the RS256/ES256 public key(s).
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Account for tokens without an `account` claim.
    #[arg(long, env = "DEFAULT_ACCOUNT", default_value = "demo")]
    pub default_account: String,

    /// NATS subject prefix.
    #[arg(long, env = "SUBJECT_PREFIX", default_value = "mt5")]
    pub subject_prefix: String,

    /// Comma-separated allowed origins for cross-origin browsers ("*" for any).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// At most one quote per symbol per this many milliseconds (0: no throttle).
    #[arg(long, env = "QUOTE_THROTTLE_MS", default_value_t = 100)]
    pub quote_throttle_ms: u64,

    /// Serve WSS/HTTPS directly with this certificate (PEM)...
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// ...and this private key (PEM).
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// OpenTelemetry collector (OTLP); none: no trace export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_endpoint: Option<String>,

    /// Name of this replica in logs, metrics and /api/status (default: random).
    #[arg(long, env = "REPLICA_ID")]
    pub replica_id: Option<String>,

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

    /// Serve WebSocket-only Socket.IO clients on our own path (one encoded
    /// packet shared by every recipient, coalesced writes) instead of
    /// socketioxide's; polling clients always use socketioxide.
    #[arg(long, env = "SOCKETIO_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    pub socketio_fast_path: bool,

    /// Packets a Socket.IO socket may have queued inside socketioxide.
    #[arg(long, env = "SOCKET_BUFFER", default_value_t = 128)]
    pub socket_buffer: usize,

    /// Kernel send buffer of each connection, in bytes (SO_SNDBUF; 0 leaves
    /// it to the kernel, which grows it to megabytes). Small, so that a
    /// client that stops reading pushes back within seconds and is cut off
    /// as a slow consumer rather than hidden behind megabytes of buffers.
    #[arg(long, env = "TCP_SEND_BUFFER", default_value_t = 64 * 1024)]
    pub tcp_send_buffer: usize,

    /// Seconds an entry must have been written before it counts as
    /// delivered in the session checkpoint (see `delivery`).
    #[arg(long, env = "DELIVERY_SETTLE_SECS", default_value_t = 2)]
    pub delivery_settle_secs: u64,

    /// JetStream: how long logs and signals are kept, in seconds.
    #[arg(long, env = "EVENTS_MAX_AGE_SECS", default_value_t = 900)]
    pub events_max_age_secs: u64,

    /// JetStream: how many logs and signals are kept at most.
    #[arg(long, env = "EVENTS_MAX_MESSAGES", default_value_t = 1_000_000)]
    pub events_max_messages: i64,

    /// How long a disconnected session can be resumed, in seconds.
    #[arg(long, env = "RESUME_WINDOW_SECS", default_value_t = 120)]
    pub resume_window_secs: u64,

    /// On SIGTERM, how long to wait for clients to leave before exiting.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,

    /// `text` or `json` logs on stderr.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Standalone simulator: quotes per second across all symbols.
    #[arg(long, env = "SIM_QUOTES_PER_SEC", default_value_t = 50.0)]
    pub sim_quotes_per_sec: f64,

    /// Standalone simulator: log entries per second.
    #[arg(long, env = "SIM_LOGS_PER_SEC", default_value_t = 5.0)]
    pub sim_logs_per_sec: f64,

    /// Standalone simulator: signals per second.
    #[arg(long, env = "SIM_SIGNALS_PER_SEC", default_value_t = 2.0)]
    pub sim_signals_per_sec: f64,
}

impl Cli {
    /// Reads `.env` (if any) into the environment, then parses flags.
    pub fn load() -> Self {
        // A missing .env is the normal case; a broken one should not be silent.
        if let Err(e) = dotenvy::dotenv() {
            if !e.not_found() {
                eprintln!("warning: ignoring .env: {e}");
            }
        }
        Cli::parse()
    }
}

impl Config {
    pub fn quote_throttle(&self) -> Duration {
        Duration::from_millis(self.quote_throttle_ms)
    }

    pub fn resume_window(&self) -> Duration {
        Duration::from_secs(self.resume_window_secs)
    }

    pub fn delivery_settle(&self) -> Duration {
        Duration::from_secs(self.delivery_settle_secs)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// The transport-level cap on one inbound message. Anything between
    /// `max_payload_bytes` and this gets a `PAYLOAD_TOO_LARGE` error and the
    /// connection stays; beyond it the transport closes the connection.
    pub fn hard_payload_limit(&self) -> usize {
        (self.max_payload_bytes * 2).max(2 * 1024 * 1024)
    }

    /// A config for tests and embedding: standalone defaults, port 0.
    pub fn for_tests() -> Self {
        let cli = Cli::parse_from(["gateway", "--standalone", "--addr", "127.0.0.1:0"]);
        cli.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["gateway"]).unwrap();
        let c = cli.config;
        assert_eq!(c.addr.to_string(), "127.0.0.1:9090");
        assert_eq!(c.default_account, "demo");
        assert_eq!(c.subject_prefix, "mt5");
        assert_eq!(c.quote_throttle_ms, 100);
        assert!(!c.standalone && c.cors_origins.is_empty());
    }

    #[test]
    fn token_subcommand_parses() {
        let cli = Cli::try_parse_from([
            "gateway",
            "token",
            "--sub",
            "alice",
            "--channels",
            "quotes,logs",
            "--ttl",
            "-10",
        ])
        .unwrap();
        let Some(Command::Token(t)) = cli.command else {
            panic!("no token command")
        };
        assert_eq!(t.sub, "alice");
        assert_eq!(t.channels.unwrap(), ["quotes", "logs"]);
        assert_eq!(t.ttl, -10);
    }
}
