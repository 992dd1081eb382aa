//! Where the data comes from: NATS, its subject prefix, and how long
//! JetStream keeps logs and signals for resumed sessions.

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Bus")]
pub struct BusConfig {
    /// NATS server(s), comma-separated.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,

    /// NATS subject prefix.
    #[arg(long, env = "SUBJECT_PREFIX", default_value = "mt5")]
    pub subject_prefix: String,

    /// JetStream: how long logs and signals are kept, in seconds.
    #[arg(long, env = "EVENTS_MAX_AGE_SECS", default_value_t = 900)]
    pub events_max_age_secs: u64,

    /// JetStream: how many logs and signals are kept at most.
    #[arg(long, env = "EVENTS_MAX_MESSAGES", default_value_t = 1_000_000)]
    pub events_max_messages: i64,
}
