//! Where sessions are kept and for how long they can be resumed.

use crate::session::sentinel::{SentinelError, SentinelSettings};
use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sessions")]
pub struct SessionConfig {
    /// Redis for session state; none means an in-memory store (one replica only).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis Sentinels (`host:port`, comma-separated): the session store
    /// asks them for the primary and follows a failover. Instead of REDIS_URL.
    #[arg(long, env = "REDIS_SENTINELS", value_delimiter = ',')]
    pub redis_sentinels: Vec<String>,

    /// The name the sentinels monitor the primary under.
    #[arg(long, env = "REDIS_MASTER_NAME", default_value = "mt5")]
    pub redis_master_name: String,

    /// Password of the Redis servers found through Sentinel (with REDIS_URL,
    /// put it in the URL).
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// How long a disconnected session can be resumed, in seconds.
    #[arg(long, env = "RESUME_WINDOW_SECS", default_value_t = 120)]
    pub resume_window_secs: u64,

    /// Seconds (fractions allowed) an entry must have been written before
    /// it counts as delivered in the session checkpoint (see `delivery`):
    /// with checkpoints every 0.5 s, what a crash re-sends stays under a
    /// second of traffic.
    #[arg(long, env = "DELIVERY_SETTLE_SECS", default_value_t = 0.3)]
    pub delivery_settle_secs: f64,
}

impl SessionConfig {
    /// The Sentinel settings when `REDIS_SENTINELS` is set.
    pub fn sentinels(&self) -> Result<Option<SentinelSettings>, SentinelError> {
        if self.redis_sentinels.iter().all(|s| s.trim().is_empty()) {
            return Ok(None);
        }
        SentinelSettings::parse(
            &self.redis_sentinels,
            &self.redis_master_name,
            self.redis_password.clone(),
        )
        .map(Some)
    }
}
