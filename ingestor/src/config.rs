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
    /// Record everything under the subject prefix to DIR/<UTC time>.ndjson.
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
    /// Address the Expert Advisor connects to.
    #[arg(long, env = "BRIDGE_ADDR", default_value = crate::bridge::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// A recording (NDJSON lines {"t", "subject", "payload"}).
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
            Some(url) if !url.is_empty() => Ok(()),
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
    }

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
