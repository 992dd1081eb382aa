//! The gateway's one typed configuration, read from flags, the environment
//! and `.env` (in that order of precedence), with the defaults of contract
//! section 10. Settings come in groups by concern (`auth`, `bus`, `limits`,
//! `session`, `sim`, `tls`), flattened into one command line: every flag
//! and variable keeps its plain name. [`Config::validate`] checks it once
//! at start, naming the variable in every message.

mod auth;
mod bus;
mod edge;
mod engineio;
mod limits;
mod session;
mod sim;
mod tls;

pub use auth::AuthConfig;
pub use bus::BusConfig;
pub use edge::{Cidr, EdgeConfig};
pub use engineio::EngineIoConfig;
pub use limits::LimitsConfig;
pub use session::SessionConfig;
pub use sim::SimConfig;
pub use tls::TlsConfig;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
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
    /// `token`, or none to serve.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The server's settings.
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Mint a token signed with the configured key (JWT_SECRET, or
    /// JWT_PRIVATE_KEY_FILE for RS256/ES256) and print it.
    Token(TokenArgs),
    /// Check the configuration: print it with secrets redacted, list every
    /// problem, exit 2 if there is any (for CI and operators).
    CheckConfig,
    /// Cut a token off before it expires, on every replica (records it in
    /// Redis and announces it on NATS).
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// Revoke the token with this `jti`.
    #[arg(long, conflicts_with = "sub", required_unless_present = "sub")]
    pub jti: Option<String>,
    /// Revoke every token of this user (`sub`)...
    #[arg(long)]
    pub sub: Option<String>,
    /// ...issued before this time (RFC 3339; default: now).
    #[arg(long, requires = "sub")]
    pub before: Option<String>,
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

    /// Comma-separated allowed origins for cross-origin browsers ("*" for any).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// At most one quote per symbol per this many milliseconds (0: no throttle).
    #[arg(long, env = "QUOTE_THROTTLE_MS", default_value_t = 100)]
    pub quote_throttle_ms: u64,

    /// Serve WebSocket-only Socket.IO clients on our own path (one encoded
    /// packet shared by every recipient, coalesced writes) instead of
    /// socketioxide's; polling clients always use socketioxide.
    #[arg(long, env = "SOCKETIO_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    pub socketio_fast_path: bool,

    /// Name of this replica in logs, metrics and /api/status (default: random).
    #[arg(long, env = "REPLICA_ID")]
    pub replica_id: Option<String>,

    /// OpenTelemetry collector (OTLP); none: no trace export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_endpoint: Option<String>,

    /// `text` or `json` logs on stderr.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// On SIGTERM, how long to wait for clients to leave before exiting.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,

    /// Token verification.
    #[command(flatten)]
    pub auth: AuthConfig,

    /// Engine.IO timers (both Socket.IO paths).
    #[command(flatten)]
    pub engineio: EngineIoConfig,

    /// NATS and JetStream.
    #[command(flatten)]
    pub bus: BusConfig,

    /// Per-connection and per-user limits.
    #[command(flatten)]
    pub limits: LimitsConfig,

    /// Session store and resume.
    #[command(flatten)]
    pub session: SessionConfig,

    /// Standalone simulator rates.
    #[command(flatten)]
    pub sim: SimConfig,

    /// Direct TLS.
    #[command(flatten)]
    pub tls: TlsConfig,

    /// Limits before authentication, metrics listener, access log.
    #[command(flatten)]
    pub edge: EdgeConfig,
}

/// A setting that makes no sense, named by its variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var} {problem}")]
pub struct ConfigError {
    /// The environment variable (and, in kebab case, the flag) at fault.
    pub var: &'static str,
    /// What is wrong with it.
    pub problem: String,
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

    /// Parses `args` (the first is the program name) and nothing else: the
    /// environment is not read, so tests see the defaults whatever the
    /// developer has set.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches)
    }
}

impl Config {
    pub fn quote_throttle(&self) -> Duration {
        Duration::from_millis(self.quote_throttle_ms)
    }

    pub fn resume_window(&self) -> Duration {
        Duration::from_secs(self.session.resume_window_secs)
    }

    pub fn delivery_settle(&self) -> Duration {
        Duration::from_secs_f64(self.session.delivery_settle_secs.clamp(0.0, 3600.0))
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// How long an Engine.IO session may wait for its CONNECT, on both
    /// Socket.IO paths: `CONNECT_TIMEOUT_MS`, and never longer than an
    /// unauthenticated session may live (`PENDING_SESSION_TIMEOUT_SECS`).
    pub fn connect_timeout(&self) -> Duration {
        self.engineio
            .connect_timeout()
            .min(self.edge.pending_session_timeout())
    }

    /// The transport-level cap on one inbound message. Anything between
    /// `max_payload_bytes` and this gets a `PAYLOAD_TOO_LARGE` error and the
    /// connection stays; beyond it the transport closes the connection.
    pub fn hard_payload_limit(&self) -> usize {
        (self.limits.max_payload_bytes * 2).max(2 * 1024 * 1024)
    }

    /// Standalone defaults on port 0, from `extra` flags on top, without
    /// reading the environment.
    pub fn for_tests(extra: &[&str]) -> Result<Self, clap::Error> {
        let base = ["gateway", "--standalone", "--addr", "127.0.0.1:0"];
        Ok(Cli::from_args(base.iter().chain(extra))?.config)
    }

    /// Checks what clap cannot: ranges, words, secrets, and settings that
    /// only make sense together. The first problem, naming its variable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Every problem of the configuration, each naming its variable.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut fail = |var, problem: String| out.push(ConfigError { var, problem });
        let at_least_one = [
            ("RATE_LIMIT_PER_SEC", self.limits.rate_limit_per_sec as u64),
            ("RATE_LIMIT_BURST", self.limits.rate_limit_burst as u64),
            ("RATE_LIMIT_STRIKES", self.limits.rate_limit_strikes as u64),
            (
                "RATE_LIMIT_STRIKE_DECAY_MS",
                self.limits.rate_limit_strike_decay_ms,
            ),
            ("MAX_PAYLOAD_BYTES", self.limits.max_payload_bytes as u64),
            ("CLIENT_QUEUE_LIMIT", self.limits.client_queue_limit as u64),
            (
                "MAX_CONNECTIONS_PER_USER",
                self.limits.max_connections_per_user as u64,
            ),
            ("SOCKET_BUFFER", self.limits.socket_buffer as u64),
            ("RESUME_WINDOW_SECS", self.session.resume_window_secs),
            ("EVENTS_MAX_AGE_SECS", self.bus.events_max_age_secs),
            ("DRAIN_TIMEOUT_SECS", self.drain_timeout_secs),
            ("MAX_TOKEN_LIFETIME_SECS", self.auth.max_token_lifetime_secs),
            ("MAX_CONNECTIONS", self.edge.max_connections as u64),
            (
                "MAX_CONNECTIONS_PER_IP",
                self.edge.max_connections_per_ip as u64,
            ),
            (
                "HANDSHAKES_PER_SEC_PER_IP",
                self.edge.handshakes_per_sec_per_ip as u64,
            ),
            (
                "MAX_PENDING_SESSIONS_PER_IP",
                self.edge.max_pending_sessions_per_ip as u64,
            ),
            (
                "PENDING_SESSION_TIMEOUT_SECS",
                self.edge.pending_session_timeout_secs,
            ),
            (
                "HEADER_READ_TIMEOUT_SECS",
                self.edge.header_read_timeout_secs,
            ),
            (
                "TLS_HANDSHAKE_TIMEOUT_SECS",
                self.edge.tls_handshake_timeout_secs,
            ),
            ("MAX_TLS_HANDSHAKES", self.edge.max_tls_handshakes as u64),
            ("PING_INTERVAL_MS", self.engineio.ping_interval_ms),
            ("PING_TIMEOUT_MS", self.engineio.ping_timeout_ms),
            ("CONNECT_TIMEOUT_MS", self.engineio.connect_timeout_ms),
        ];
        for (var, value) in at_least_one {
            if value == 0 {
                fail(var, "must be at least 1, got 0".into());
            }
        }
        let settle = self.session.delivery_settle_secs;
        if !(0.0..=3600.0).contains(&settle) {
            fail(
                "DELIVERY_SETTLE_SECS",
                format!("must be between 0 and 3600 seconds, got {settle}"),
            );
        }
        if self.bus.events_max_messages == 0 || self.bus.events_max_messages < -1 {
            fail(
                "EVENTS_MAX_MESSAGES",
                format!(
                    "must be at least 1 (or -1: no limit), got {}",
                    self.bus.events_max_messages
                ),
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            fail(
                "LOG_FORMAT",
                format!("must be `text` or `json`, got {:?}", self.log_format),
            );
        }
        // One token (no dots): it also names the JetStream streams.
        if let Err(e) = protocol::subject::check_token(&self.bus.subject_prefix) {
            fail(
                "SUBJECT_PREFIX",
                format!("must be one NATS subject token (no dots, spaces or wildcards): it {e}"),
            );
        }
        if let Err(e) = self.session.sentinels() {
            fail("REDIS_SENTINELS", e.to_string());
        }
        if self.session.redis_url.is_some() && !self.session.redis_sentinels.is_empty() {
            fail(
                "REDIS_SENTINELS",
                "and REDIS_URL are both set: give one (the sentinels find the primary)".into(),
            );
        }
        if !protocol::subject::is_token(&self.session.redis_master_name) {
            fail(
                "REDIS_MASTER_NAME",
                format!("must be one word, got `{}`", self.session.redis_master_name),
            );
        }
        if let Err(e) = protocol::Account::new(self.auth.default_account.as_str()) {
            fail(
                "DEFAULT_ACCOUNT",
                format!("must be one NATS subject token (no dots, spaces or wildcards): it {e}"),
            );
        }
        if let Some(problem) = secret_problem(self.auth.jwt_secret.as_deref(), self.standalone) {
            fail("JWT_SECRET", problem);
        }
        let keyless = self.auth.jwt_secret.is_none() && self.auth.jwt_public_key_file.is_none();
        if keyless && !self.standalone {
            fail(
                "JWT_SECRET",
                "is not set (nor JWT_PUBLIC_KEY_FILE): set a secret of at least 32 bytes \
                 (openssl rand -base64 48) or a public key file"
                    .into(),
            );
        }
        if self.auth.jwt_secret.is_some() && self.auth.jwt_public_key_file.is_some() {
            fail(
                "JWT_PUBLIC_KEY_FILE",
                "and JWT_SECRET are both set: choose one key source".into(),
            );
        }
        if self
            .replica_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            fail("REPLICA_ID", "is set but empty".into());
        }
        for (var, rate) in [
            ("SIM_QUOTES_PER_SEC", self.sim.sim_quotes_per_sec),
            ("SIM_LOGS_PER_SEC", self.sim.sim_logs_per_sec),
            ("SIM_SIGNALS_PER_SEC", self.sim.sim_signals_per_sec),
        ] {
            if !(0.0..=::sim::MAX_RATE).contains(&rate) {
                fail(
                    var,
                    format!("must be between 0 and {}, got {rate}", ::sim::MAX_RATE),
                );
            }
        }
        out
    }

    /// The effective configuration as `VARIABLE=value` lines, secrets
    /// redacted (`gateway check-config`).
    pub fn describe(&self) -> Vec<String> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        let path = |v: &Option<std::path::PathBuf>| {
            v.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(unset)".into())
        };
        let secret = match &self.auth.jwt_secret {
            Some(s) => format!("(redacted, {} bytes)", s.len()),
            None => "(unset)".into(),
        };
        let redis = self
            .session
            .redis_url
            .as_ref()
            .map(|u| redact_url(u))
            .unwrap_or_else(|| "(unset)".into());
        let nats = self
            .bus
            .nats_url
            .as_ref()
            .map(|u| redact_url(u))
            .unwrap_or_else(|| "(unset)".into());
        let proxies: Vec<String> = self
            .edge
            .trusted_proxies
            .iter()
            .map(|c| format!("{c:?}"))
            .collect();
        vec![
            format!(
                "mode={}",
                if self.standalone {
                    "standalone"
                } else {
                    "nats"
                }
            ),
            format!("GATEWAY_ADDR={}", self.addr),
            format!("NATS_URL={nats}"),
            format!("REDIS_URL={redis}"),
            format!("JWT_SECRET={secret}"),
            format!(
                "JWT_PUBLIC_KEY_FILE={}",
                path(&self.auth.jwt_public_key_file)
            ),
            format!("JWT_ISSUER={}", opt(&self.auth.jwt_issuer)),
            format!("JWT_AUDIENCE={}", opt(&self.auth.jwt_audience)),
            format!("JWT_LEEWAY_SECS={}", self.auth.jwt_leeway_secs),
            format!(
                "MAX_TOKEN_LIFETIME_SECS={}",
                self.auth.max_token_lifetime_secs
            ),
            format!("DEFAULT_ACCOUNT={}", self.auth.default_account),
            format!("SUBJECT_PREFIX={}", self.bus.subject_prefix),
            format!("CORS_ORIGINS={}", self.cors_origins.join(",")),
            format!("TLS_CERT_FILE={}", path(&self.tls.tls_cert_file)),
            format!("MAX_PAYLOAD_BYTES={}", self.limits.max_payload_bytes),
            format!(
                "MAX_CONNECTIONS_PER_USER={}",
                self.limits.max_connections_per_user
            ),
            format!("MAX_CONNECTIONS={}", self.edge.max_connections),
            format!(
                "MAX_CONNECTIONS_PER_IP={}",
                self.edge.max_connections_per_ip
            ),
            format!(
                "HANDSHAKES_PER_SEC_PER_IP={}",
                self.edge.handshakes_per_sec_per_ip
            ),
            format!(
                "MAX_PENDING_SESSIONS_PER_IP={}",
                self.edge.max_pending_sessions_per_ip
            ),
            format!(
                "PENDING_SESSION_TIMEOUT_SECS={}",
                self.edge.pending_session_timeout_secs
            ),
            format!(
                "HEADER_READ_TIMEOUT_SECS={}",
                self.edge.header_read_timeout_secs
            ),
            format!(
                "TLS_HANDSHAKE_TIMEOUT_SECS={}",
                self.edge.tls_handshake_timeout_secs
            ),
            format!("MAX_TLS_HANDSHAKES={}", self.edge.max_tls_handshakes),
            format!("TRUSTED_PROXIES={}", proxies.join(",")),
            format!(
                "METRICS_ADDR={}",
                self.edge
                    .metrics_addr
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "(main listener)".into())
            ),
            format!("ACCESS_LOG={}", self.edge.access_log),
            format!("LOG_FORMAT={}", self.log_format),
            format!("DRAIN_TIMEOUT_SECS={}", self.drain_timeout_secs),
        ]
    }
}

/// The shortest HS256 secret accepted: 256 bits, the size of the MAC.
pub const MIN_SECRET_BYTES: usize = 32;

/// Placeholder secrets found in our own deployment files and README; any
/// secret containing one is refused outside `--standalone`.
const PLACEHOLDERS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "your-secret",
];

/// What is wrong with an HS256 secret, if anything. Never quotes it.
fn secret_problem(secret: Option<&str>, standalone: bool) -> Option<String> {
    let secret = secret?;
    if secret.trim().is_empty() {
        return Some("is set but empty: anyone could sign tokens".into());
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Some(format!(
            "must be at least {MIN_SECRET_BYTES} bytes, got {} (generate one: openssl rand -base64 48)",
            secret.len()
        ));
    }
    let lower = secret.to_ascii_lowercase();
    if !standalone && PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return Some(
            "is the placeholder from the deployment files; set a secret of your own \
             (openssl rand -base64 48)"
                .into(),
        );
    }
    None
}

/// A URL with any password replaced (`redis://:***@host`).
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://(credentials redacted)@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let cli = Cli::from_args([
            "gateway",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .unwrap();
        let c = cli.config;
        assert_eq!(c.addr.to_string(), "127.0.0.1:9090");
        assert_eq!(c.auth.default_account, "demo");
        assert_eq!(c.bus.subject_prefix, "mt5");
        assert_eq!(c.quote_throttle_ms, 100);
        assert!(!c.standalone && c.cors_origins.is_empty());
        assert_eq!(
            (
                c.engineio.ping_interval_ms,
                c.engineio.ping_timeout_ms,
                c.engineio.connect_timeout_ms
            ),
            (25_000, 20_000, 10_000)
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn token_subcommand_parses() {
        let cli = Cli::from_args([
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

    #[test]
    fn flags_keep_their_names_in_groups() {
        let c = Config::for_tests(&[
            "--jwt-secret",
            "k",
            "--nats-url",
            "nats://x:4222",
            "--rate-limit-per-sec",
            "7",
            "--redis-url",
            "redis://r",
            "--sim-quotes-per-sec",
            "3",
            "--socketio-fast-path",
            "false",
        ])
        .unwrap();
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("k"));
        assert_eq!(c.bus.nats_url.as_deref(), Some("nats://x:4222"));
        assert_eq!(c.limits.rate_limit_per_sec, 7);
        assert_eq!(c.session.redis_url.as_deref(), Some("redis://r"));
        assert_eq!(c.sim.sim_quotes_per_sec, 3.0);
        assert!(!c.socketio_fast_path);
        assert!(
            Config::for_tests(&["--tls-cert-file", "c.pem"]).is_err(),
            "needs the key too"
        );
    }

    #[test]
    fn placeholder_secrets_are_refused_outside_standalone() {
        let placeholder = "change-me-in-production-0123456789";
        let serving = Cli::from_args(["gateway", "--jwt-secret", placeholder]).unwrap();
        let keyless = Cli::from_args(["gateway"]).unwrap();
        assert_eq!(keyless.config.validate().unwrap_err().var, "JWT_SECRET");
        let err = serving.config.validate().unwrap_err();
        assert_eq!(err.var, "JWT_SECRET");
        assert!(!err.to_string().contains(placeholder), "{err}");
        let demo = Config::for_tests(&["--jwt-secret", placeholder]).unwrap();
        assert!(demo.validate().is_ok());
        let both = Config::for_tests(&[
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--jwt-public-key-file",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(both.validate().unwrap_err().var, "JWT_PUBLIC_KEY_FILE");
    }

    #[test]
    fn every_problem_is_listed_and_secrets_never_described() {
        let c = Config::for_tests(&[
            "--jwt-secret",
            "short-secret",
            "--log-format",
            "jsno",
            "--default-account",
            "*",
        ])
        .unwrap();
        let vars: Vec<&str> = c.problems().iter().map(|p| p.var).collect();
        assert_eq!(vars, ["LOG_FORMAT", "DEFAULT_ACCOUNT", "JWT_SECRET"]);
        let described = c.describe().join("\n");
        assert!(!described.contains("short-secret"), "{described}");
        assert!(described.contains("JWT_SECRET=(redacted"), "{described}");
        assert_eq!(
            redact_url("redis://:pw@r:6379"),
            "redis://(credentials redacted)@r:6379"
        );
    }

    #[test]
    fn validation_names_the_variable() {
        for (flags, var) in [
            (&["--rate-limit-per-sec", "0"][..], "RATE_LIMIT_PER_SEC"),
            (&["--client-queue-limit", "0"][..], "CLIENT_QUEUE_LIMIT"),
            (&["--log-format", "xml"][..], "LOG_FORMAT"),
            (&["--subject-prefix", "a.b"][..], "SUBJECT_PREFIX"),
            (&["--default-account", "x y"][..], "DEFAULT_ACCOUNT"),
            (&["--sim-logs-per-sec=-1"][..], "SIM_LOGS_PER_SEC"),
            (&["--events-max-messages", "0"][..], "EVENTS_MAX_MESSAGES"),
            (&["--jwt-secret="][..], "JWT_SECRET"),
            (&["--redis-sentinels", "a:1,b"][..], "REDIS_SENTINELS"),
            (
                &["--redis-sentinels", "a:1", "--redis-url", "redis://r"][..],
                "REDIS_SENTINELS",
            ),
            (&["--redis-master-name", "a b"][..], "REDIS_MASTER_NAME"),
            (&["--jwt-secret", "too-short"][..], "JWT_SECRET"),
            (
                &["--max-connections-per-ip", "0"][..],
                "MAX_CONNECTIONS_PER_IP",
            ),
            (&["--default-account", "*"][..], "DEFAULT_ACCOUNT"),
            (&["--subject-prefix", "mt5.>"][..], "SUBJECT_PREFIX"),
            (&["--ping-interval-ms", "0"][..], "PING_INTERVAL_MS"),
            (&["--ping-timeout-ms", "0"][..], "PING_TIMEOUT_MS"),
            (&["--connect-timeout-ms", "0"][..], "CONNECT_TIMEOUT_MS"),
        ] {
            let err = Config::for_tests(flags).unwrap().validate().unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }
}
