//! Prometheus metrics: one recorder per process, rendered at `/metrics`.
//!
//! Call sites use the small functions below rather than metric names, so
//! every name and label set is spelled once, here.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The `transport` label of a Socket.IO client served by socketioxide
/// (everyone, with `SOCKETIO_FAST_PATH=false`).
pub const SOCKETIOXIDE: &str = "socketio";
/// The `transport` label of a Socket.IO client on our fast path, on
/// WebSocket, long-polling or upgraded alike.
pub const SOCKETIO_FAST: &str = "socketio_fast";
/// The `transport` label of a plain WebSocket (JSON) client.
pub const WEBSOCKET: &str = "websocket";

/// Installs the recorder (once per process; later calls reuse it). Every
/// series carries `replica`, so one Prometheus query over several replicas
/// (or a scrape through a load balancer) still tells them apart.
pub fn install(replica: &str) -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            match PrometheusBuilder::new()
                .add_global_label("replica", replica)
                .install_recorder()
            {
                Ok(handle) => {
                    // Scrapers and dashboards see every series from the first
                    // scrape, not only after the first event of each kind.
                    ::metrics::gauge!("gateway_up").set(1.0);
                    for transport in [SOCKETIOXIDE, SOCKETIO_FAST, WEBSOCKET] {
                        ::metrics::gauge!("gateway_clients", "transport" => transport).set(0.0);
                    }
                    ::metrics::counter!("gateway_bus_messages_total").absolute(0);
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

pub fn render() -> String {
    HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default()
}

pub fn bus_message_received() {
    ::metrics::counter!("gateway_bus_messages_total").increment(1);
}

pub fn bus_message_rejected(reason: &'static str) {
    ::metrics::counter!("gateway_bus_messages_rejected_total", "reason" => reason).increment(1);
}

/// The relay reopened its bus feed: `reconnect` (the NATS client came back),
/// `stall` (the stall watch), `ended` (the feed ended by itself).
pub fn feed_reopened(reason: &'static str) {
    ::metrics::counter!("gateway_bus_feed_reopens_total", "reason" => reason).increment(1);
}

pub fn frames_queued(n: usize) {
    ::metrics::counter!("gateway_frames_queued_total").increment(n as u64);
}

pub fn client_connected(transport: &'static str) {
    ::metrics::counter!("gateway_connections_total", "transport" => transport).increment(1);
    ::metrics::gauge!("gateway_clients", "transport" => transport).increment(1.0);
}

pub fn client_disconnected(transport: &'static str) {
    ::metrics::gauge!("gateway_clients", "transport" => transport).decrement(1.0);
}

/// A connection or request refused by an edge limit (before any token).
pub fn edge_refused(limit: &'static str) {
    ::metrics::counter!("gateway_edge_refused_total", "limit" => limit).increment(1);
}

pub fn auth_refused(code: &'static str) {
    ::metrics::counter!("gateway_auth_refused_total", "code" => code).increment(1);
}

pub fn client_error(code: &'static str) {
    ::metrics::counter!("gateway_client_errors_total", "code" => code).increment(1);
}

pub fn client_cut_off(reason: &'static str) {
    ::metrics::counter!("gateway_clients_cut_off_total", "reason" => reason).increment(1);
}

pub fn session_resumed() {
    ::metrics::counter!("gateway_sessions_resumed_total").increment(1);
}

/// One checkpoint pass: how it ended (`saved`, `cut` at its deadline,
/// `failed`, `skipped` while the store is down) and how long it took. The
/// longest pass so far is kept beside the deadline, so an operator (and a
/// test) sees that no pass outlived it.
pub fn checkpoint_pass(outcome: &'static str, seconds: f64, deadline: f64) {
    ::metrics::counter!("gateway_checkpoint_passes_total", "outcome" => outcome).increment(1);
    // A pass cut at its deadline ends within moments of it; one that does
    // not was held up by something else (a starved runtime, a bug).
    let late = u64::from(seconds > deadline + LATE_SLACK_SECS);
    ::metrics::counter!("gateway_checkpoint_passes_late_total").increment(late);
    ::metrics::gauge!("gateway_checkpoint_pass_deadline_seconds").set(deadline);
    let longest = LONGEST_PASS_US.fetch_max((seconds * 1e6) as u64, Ordering::Relaxed);
    ::metrics::gauge!("gateway_checkpoint_pass_seconds_max")
        .set(longest.max((seconds * 1e6) as u64) as f64 / 1e6);
}

/// How far past its deadline a checkpoint pass may end before it counts
/// as late.
const LATE_SLACK_SECS: f64 = 0.2;

/// The longest checkpoint pass so far, in microseconds.
static LONGEST_PASS_US: AtomicU64 = AtomicU64::new(0);
