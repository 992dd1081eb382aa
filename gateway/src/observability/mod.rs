//! What the gateway tells its operators: Prometheus metrics and logs/traces.
//! Everything else may call into here; this folder calls nothing back.

pub mod metrics;
pub mod telemetry;
