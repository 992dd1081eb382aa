//! Where sessions are kept and for how long they can be resumed.

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sessions")]
pub struct SessionConfig {
    /// Redis for session state; none means an in-memory store (one replica only).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// How long a disconnected session can be resumed, in seconds.
    #[arg(long, env = "RESUME_WINDOW_SECS", default_value_t = 120)]
    pub resume_window_secs: u64,

    /// Seconds an entry must have been written before it counts as
    /// delivered in the session checkpoint (see `delivery`).
    #[arg(long, env = "DELIVERY_SETTLE_SECS", default_value_t = 2)]
    pub delivery_settle_secs: u64,
}
