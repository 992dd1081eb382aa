//! Command line and environment: which source to run and where to publish.
//!
//! One clap struct holds every setting; each option that operators set per
//! deployment can also come from the environment or `.env` (read before
//! parsing), with flags taking precedence. Values are validated here so the
//! sources never see an account or prefix that cannot form a NATS subject.

use crate::replay::ReplayOptions;
use crate::sim::SimConfig;
use clap::builder::TypedValueParser;
use clap::{CommandFactory, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_ACCOUNT: &str = "demo";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ingestor",
    version,
    about = "Publishes MT5 data (terminal bridge, simulator or recording) to NATS"
)]
pub struct Cli {
    /// NATS server URL, or several separated by commas. Required.
    #[arg(long, env = "NATS_URL", global = true)]
    pub nats_url: Option<String>,

    /// First token(s) of every subject: <prefix>.<account>.<channel>.
    #[arg(long, env = "SUBJECT_PREFIX", default_value = "mt5", global = true, value_parser = parse_prefix)]
    pub subject_prefix: String,

    /// Account the data is published as [default: demo]. For `replay`,
    /// setting it re-targets the recording to this account.
    #[arg(long, env = "MT5_ACCOUNT", global = true, value_parser = parse_account)]
    pub account: Option<String>,

    /// Serve `/metrics` (Prometheus) and `/health` (JSON) on this address
    /// [default: off].
    #[arg(long, env = "INGESTOR_HTTP_ADDR", global = true)]
    pub http_addr: Option<SocketAddr>,

    /// Copies of each JetStream stream: 1, or 3 on a 3-node NATS cluster
    /// (never lowered on an existing stream).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1, global = true,
          value_parser = clap::value_parser!(u8).range(1..=5).map(usize::from))]
    pub stream_replicas: usize,

    #[command(subcommand)]
    pub source: Source,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Source {
    /// A simulated account: quotes, positions, orders, account, logs, signals.
    Sim(SimArgs),
    /// Listen for the MT5Bridge Expert Advisor running in a terminal.
    Bridge(BridgeArgs),
    /// Publish a recording made by `record`, with its original timing.
    Replay(ReplayArgs),
    /// Record everything under the subject prefix to DIR/<UTC time>.ndjson
    /// (`--raw`: the terminals' own lines, see `bridge`).
    Record(RecordArgs),
}

impl Source {
    pub fn name(&self) -> &'static str {
        match self {
            Source::Sim(_) => "sim",
            Source::Bridge(_) => "bridge",
            Source::Replay(_) => "replay",
            Source::Record(_) => "record",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Quotes per second, across all symbols (0 = none).
    #[arg(long, default_value_t = SimConfig::default().quotes_per_sec, value_parser = parse_rate)]
    pub quotes_per_sec: f64,
    /// Positions snapshot period (0 = none).
    #[arg(long, default_value_t = millis(SimConfig::default().positions_interval))]
    pub positions_interval_ms: u64,
    /// Pending orders snapshot period (0 = none).
    #[arg(long, default_value_t = millis(SimConfig::default().orders_interval))]
    pub orders_interval_ms: u64,
    /// Account update period (0 = none).
    #[arg(long, default_value_t = millis(SimConfig::default().account_interval))]
    pub account_interval_ms: u64,
    /// Log entries per second (0 = none).
    #[arg(long, default_value_t = SimConfig::default().logs_per_sec, value_parser = parse_rate)]
    pub logs_per_sec: f64,
    /// Trading signals per second (0 = none).
    #[arg(long, default_value_t = SimConfig::default().signals_per_sec, value_parser = parse_rate)]
    pub signals_per_sec: f64,
    /// How many of the built-in symbols to quote.
    #[arg(long, default_value_t = SimConfig::default().symbols,
          value_parser = clap::value_parser!(u16).range(1..=crate::sim::symbol_names().len() as i64).map(usize::from))]
    pub symbols: usize,
    /// Seed for reproducible prices, positions and signals.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SimArgs {
    pub fn to_config(&self, account: &str) -> SimConfig {
        SimConfig {
            account: account.to_owned(),
            quotes_per_sec: self.quotes_per_sec,
            positions_interval: Duration::from_millis(self.positions_interval_ms),
            orders_interval: Duration::from_millis(self.orders_interval_ms),
            account_interval: Duration::from_millis(self.account_interval_ms),
            logs_per_sec: self.logs_per_sec,
            signals_per_sec: self.signals_per_sec,
            seed: self.seed,
            symbols: self.symbols,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BridgeArgs {
    /// Address the Expert Advisors connect to.
    #[arg(long, env = "BRIDGE_ADDR", default_value = crate::bridge::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// One key for every terminal (at least 16 characters); each terminal
    /// names its account label in `hello`.
    #[arg(long, env = "BRIDGE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// One key per terminal, each pinned to its account: lines
    /// `<account> <key>`, `#` comments.
    #[arg(long, env = "BRIDGE_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// PEM certificate chain: terminals connect with TLS.
    #[arg(long, env = "BRIDGE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "BRIDGE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Longest line a terminal may send; a longer one closes its connection.
    #[arg(long, env = "BRIDGE_MAX_LINE_BYTES", default_value_t = crate::bridge::MAX_LINE,
          value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024).map(|v| v as usize))]
    pub max_line_bytes: usize,
    /// Log and signal entries waiting for NATS before new ones are dropped
    /// (and counted).
    #[arg(long, env = "BRIDGE_EVENT_QUEUE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|v| v as usize))]
    pub event_queue: usize,
    /// At most one value per state subject (each symbol's quote, positions,
    /// orders, account) reaches NATS per this many ms; the latest wins.
    #[arg(long, env = "BRIDGE_STATE_INTERVAL_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub state_interval_ms: u64,
    /// Also write every line terminals send to DIR/<UTC time>.raw.ndjson
    /// (what `record --raw` does).
    #[arg(long, env = "BRIDGE_RAW_DIR")]
    pub raw_dir: Option<PathBuf>,
}

impl BridgeArgs {
    /// Reads the keys and TLS files: any problem stops the start, with a
    /// message naming the variable.
    pub fn to_config(&self) -> Result<crate::bridge::BridgeConfig, crate::bridge::BridgeError> {
        use crate::bridge::{keys::Keys, tls, BridgeConfig};
        let keys = Keys::load(self.key.as_deref(), self.keys_file.as_deref())?;
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => return Err(tls::TlsError::Half.into()),
        };
        let mut cfg = BridgeConfig::new(self.listen, keys);
        cfg.tls = tls;
        cfg.max_line = self.max_line_bytes;
        cfg.outlet.event_queue = self.event_queue;
        cfg.outlet.state_interval = Duration::from_millis(self.state_interval_ms);
        cfg.raw_dir = self.raw_dir.clone();
        Ok(cfg)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// A recording (NDJSON lines {"t", "subject", "payload"}) or a raw
    /// capture (lines {"t", "conn", "account", "line"}), which goes through
    /// the bridge's conversion again.
    pub file: PathBuf,
    /// Playback speed: 1 real time, 10 ten times faster, 0 flat out.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Start over at the end of the file.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Stamp payload `timestamp`/`time` fields with the time of publishing.
    #[arg(long)]
    pub retime: bool,
}

impl ReplayArgs {
    pub fn to_options(&self, account: Option<String>) -> ReplayOptions {
        ReplayOptions {
            file: self.file.clone(),
            speed: self.speed,
            looping: self.looping,
            retime: self.retime,
            account,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// Directory for the recording (created if missing).
    pub dir: PathBuf,
    /// Record what terminals send instead of the bus: runs the bridge
    /// (with its options below) and writes every line to
    /// DIR/<UTC time>.raw.ndjson, publishing as `bridge` does.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub bridge: BridgeArgs,
}

impl Cli {
    /// Reads `.env` (if any), then the command line and environment. Exits
    /// with a usage error, as clap does, when `NATS_URL` is missing: the
    /// ingestor always publishes to (or records from) NATS.
    pub fn load() -> (Cli, Result<(), dotenvy::Error>) {
        let dotenv = match dotenvy::dotenv() {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(e),
        };
        let cli = Cli::parse();
        if let Err(msg) = cli.check() {
            Cli::command()
                .error(clap::error::ErrorKind::MissingRequiredArgument, msg)
                .exit();
        }
        (cli, dotenv)
    }

    fn check(&self) -> Result<(), String> {
        match self.nats_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => bus::server_addrs(url)
                .map(|_| ())
                .map_err(|e| format!("NATS_URL: {e}")),
            _ => Err("NATS_URL is required (--nats-url or the NATS_URL environment variable, e.g. nats://127.0.0.1:4222)".to_owned()),
        }
    }

    /// The NATS URL; present after [`Cli::load`].
    pub fn nats_url(&self) -> &str {
        self.nats_url.as_deref().map(str::trim).unwrap_or_default()
    }

    pub fn account_or_default(&self) -> &str {
        self.account.as_deref().unwrap_or(DEFAULT_ACCOUNT)
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=crate::sim::MAX_RATE).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be between 0 and {}", crate::sim::MAX_RATE))
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("must be a number >= 0".to_owned())
    }
}

/// The same rule the gateway applies to a token's `account` claim.
fn parse_account(s: &str) -> Result<String, String> {
    protocol::Account::new(s)
        .map(String::from)
        .map_err(|e| format!("MT5_ACCOUNT {e}"))
}

fn parse_prefix(s: &str) -> Result<String, String> {
    protocol::SubjectScheme::try_new(s)
        .map(|scheme| scheme.prefix().to_owned())
        .map_err(|e| format!("SUBJECT_PREFIX must be dot-separated tokens; a part {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ingestor").chain(args.iter().copied()))
    }

    #[test]
    fn sim_flags_map_to_config() {
        let cli = parse(&[
            "sim",
            "--nats-url",
            "nats://x:4222",
            "--quotes-per-sec",
            "1000",
            "--positions-interval-ms",
            "500",
            "--orders-interval-ms",
            "0",
            "--account-interval-ms",
            "250",
            "--logs-per-sec",
            "5",
            "--signals-per-sec",
            "0",
            "--symbols",
            "10",
            "--seed",
            "42",
            "--account",
            "acc-1",
        ])
        .unwrap();
        assert_eq!(cli.nats_url(), "nats://x:4222");
        let Source::Sim(args) = &cli.source else {
            panic!()
        };
        let cfg = args.to_config(cli.account_or_default());
        assert_eq!(
            cfg,
            SimConfig {
                account: "acc-1".into(),
                quotes_per_sec: 1000.0,
                positions_interval: Duration::from_millis(500),
                orders_interval: Duration::ZERO,
                account_interval: Duration::from_millis(250),
                logs_per_sec: 5.0,
                signals_per_sec: 0.0,
                seed: Some(42),
                symbols: 10,
            }
        );
    }

    #[test]
    fn defaults_match_sim_config() {
        let cli = parse(&["--nats-url", "n", "sim"]).unwrap();
        let Source::Sim(args) = &cli.source else {
            panic!()
        };
        assert_eq!(args.to_config("demo"), SimConfig::default());
        assert_eq!(cli.subject_prefix, "mt5");
    }

    #[test]
    fn other_sources() {
        let cli = parse(&["replay", "f.ndjson", "--speed", "0", "--loop", "--retime"]).unwrap();
        let Source::Replay(r) = &cli.source else {
            panic!()
        };
        assert!(r.looping && r.retime && r.speed == 0.0);
        assert_eq!(r.to_options(None).file, PathBuf::from("f.ndjson"));
        let cli = parse(&["record", "/tmp/rec"]).unwrap();
        assert_eq!(cli.source.name(), "record");
        let cli = parse(&["bridge", "--listen", "0.0.0.0:6000"]).unwrap();
        let Source::Bridge(b) = &cli.source else {
            panic!()
        };
        assert_eq!(b.listen.port(), 6000);
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &["sim", "--account", "a.b"][..],
            &["sim", "--subject-prefix", "mt5.*"],
            &["sim", "--quotes-per-sec", "-1"],
            &["sim", "--quotes-per-sec", "NaN"],
            &["sim", "--symbols", "0"],
            &["sim", "--symbols", "99"],
            &["replay", "f", "--speed", "-2"],
            &["bridge", "--listen", "nowhere"],
            &[],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let cli = parse(&["sim", "--subject-prefix", "prod.mt5"]).unwrap();
        assert_eq!(cli.subject_prefix, "prod.mt5");
    }

    #[test]
    fn nats_url_is_required() {
        let mut cli = parse(&["sim"]).unwrap();
        cli.nats_url = None;
        assert!(cli.check().is_err());
        cli.nats_url = Some("nats://127.0.0.1:4222".into());
        assert!(cli.check().is_ok());
        cli.nats_url = Some("nats://a:4222,nats://b:4222, nats://c:4222".into());
        assert!(cli.check().is_ok());
        cli.nats_url = Some("nats://a:4222,nats://b:port".into());
        let err = cli.check().unwrap_err();
        assert!(
            err.contains("NATS_URL") && err.contains("nats://b:port"),
            "{err}"
        );
    }

    #[test]
    fn stream_replicas_default_to_one_and_are_bounded() {
        assert_eq!(parse(&["sim"]).unwrap().stream_replicas, 1);
        assert_eq!(
            parse(&["--stream-replicas", "3", "sim"])
                .unwrap()
                .stream_replicas,
            3
        );
        assert!(parse(&["--stream-replicas", "0", "sim"]).is_err());
        assert!(parse(&["--stream-replicas", "6", "sim"]).is_err());
    }

    #[test]
    fn bridge_settings_are_checked_at_start() {
        let bridge = |args: &[&str]| match parse(args).map(|c| c.source) {
            Ok(Source::Bridge(b)) => b,
            other => panic!("{args:?}: {other:?}"),
        };
        let err = bridge(&["bridge"]).to_config().err().unwrap().to_string();
        assert!(
            err.contains("BRIDGE_KEY") && err.contains("BRIDGE_KEYS_FILE"),
            "{err}"
        );
        let err = bridge(&["bridge", "--key", "short"])
            .to_config()
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("BRIDGE_KEY"), "{err}");
        let half = bridge(&[
            "bridge",
            "--key",
            "0123456789abcdef",
            "--tls-cert-file",
            "/c.pem",
        ]);
        let err = half.to_config().err().unwrap().to_string();
        assert!(err.contains("BRIDGE_TLS_KEY_FILE"), "{err}");
        let missing = bridge(&[
            "bridge",
            "--key",
            "0123456789abcdef",
            "--tls-cert-file",
            "/nonexistent/c.pem",
            "--tls-key-file",
            "/nonexistent/k.pem",
        ]);
        let err = missing.to_config().err().unwrap().to_string();
        assert!(err.contains("BRIDGE_TLS_CERT_FILE"), "{err}");
        let ok = bridge(&[
            "bridge",
            "--key",
            "0123456789abcdef",
            "--event-queue",
            "5",
            "--state-interval-ms",
            "0",
        ]);
        let cfg = ok.to_config().unwrap();
        assert_eq!(
            (cfg.outlet.event_queue, cfg.outlet.state_interval),
            (5, Duration::ZERO)
        );
        for bad in [
            &["bridge", "--max-line-bytes", "10"][..],
            &["bridge", "--event-queue", "0"],
            &["bridge", "--state-interval-ms", "-1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let cli = parse(&[
            "record",
            "/tmp/raw",
            "--raw",
            "--key",
            "0123456789abcdef",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .unwrap();
        let Source::Record(r) = &cli.source else {
            panic!()
        };
        assert!(r.raw && r.bridge.to_config().is_ok());
        assert!(cli.http_addr.is_some());
    }

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
