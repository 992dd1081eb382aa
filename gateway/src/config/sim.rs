//! The simulated account of standalone mode: how fast it publishes.

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Standalone simulator")]
pub struct SimConfig {
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
