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

    /// Seconds (fractions allowed) an entry must have been written before
    /// it counts as delivered in the session checkpoint (see `delivery`):
    /// with checkpoints every 0.5 s, what a crash re-sends stays under a
    /// second of traffic.
    #[arg(long, env = "DELIVERY_SETTLE_SECS", default_value_t = 0.3)]
    pub delivery_settle_secs: f64,
}
