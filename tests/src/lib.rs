//! End-to-end test fixtures for the MT5 dashboard gateway.
//!
//! Everything here runs the real programs: `nats-server`, `redis-server`,
//! the workspace's `gateway` and `ingestor` binaries, and real clients
//! (socket.io-client under Node, python-socketio, and a raw WebSocket client
//! in Rust). Every fixture is a struct that cleans up on `Drop` (kills its
//! process by PID, removes its temporary directory), and when a test panics
//! the fixtures print the tail of their process's stderr so the failure
//! explains itself.
//!
//! Each test starts its own servers on free ports, so tests run in parallel.
//!
//! Modules:
//! - [`procs`]: processes: [`NatsServer`], [`RedisServer`], [`Gateway`], [`Ingestor`];
//! - [`sio`]: the scriptable Socket.IO clients ([`Plan`], [`SioClient`], [`Transcript`]);
//! - [`ws`]: the plain WebSocket client ([`WsClient`]);
//! - [`eio`]: Engine.IO / Socket.IO spoken by hand (WebSocket and polling),
//!   for the protocol conformance tests;
//! - [`http`]: a tiny HTTP/1.1 GET;
//! - [`order`]: the order clients (many connections sending back-to-back
//!   events, under Node and Python) and what they saw;
//! - [`nginx`]: the real nginx with `deploy/nginx/gateway.conf` ([`Nginx`]);
//! - [`cluster`]: NATS, Redis, N gateway replicas and nginx ([`Cluster`]);
//! - [`ha`]: a 3-node NATS cluster and Redis with Sentinel ([`ha::NatsCluster`], [`ha::SentinelRedis`]);
//! - [`checks`]: the spec's payload shapes, field by field;
//! - [`keys`]: RSA/EC test keys (openssl CLI), JWKS, hand-built tokens;
//! - [`bridge`]: `ingestor bridge` and fake MT5 terminals speaking its protocol.
//! - [`feed`]: logs stored straight into JetStream, the events stream's position;
//! - [`dashboard`]: a plain WebSocket dashboard pinned to one replica that
//!   resumes on another, and what it received of the logs sequence.
//! - [`edge`]: raw and hostile clients (any `Host`/`Origin`, Engine.IO by
//!   hand, floods from another source address) and [`edge::MemoryJail`];
//! - [`admin`]: one-shot `gateway` runs (`check-config`, `revoke`, refused
//!   starts) and log checks.

pub mod admin;
pub mod bridge;
pub mod checks;
pub mod cluster;
pub mod dashboard;
pub mod edge;
pub mod eio;
pub mod feed;
pub mod ha;
pub mod http;
pub mod keys;
pub mod nginx;
pub mod order;
pub mod procs;
pub mod sio;
pub mod ws;

pub use cluster::Cluster;
pub use nginx::Nginx;
pub use procs::{
    binary, free_port, workspace_root, Gateway, Ingestor, NatsServer, Proc, RedisServer,
};
pub use sio::{Lang, Line, Plan, SioClient, Transcript};
pub use ws::{WsClient, WsMsg};

use std::time::Duration;

/// The HS256 secret the NATS-mode fixtures use.
pub const SECRET: &str = "e2e-test-secret-0123456789abcdef";

/// The six channels, in the contract's order.
pub const CHANNELS: [&str; 6] = [
    "quotes",
    "positions",
    "orders",
    "logs",
    "signals",
    "account",
];

/// The six data events, in the order of [`CHANNELS`].
pub const DATA_EVENTS: [&str; 6] = [
    "quotes",
    "positions_update",
    "orders_update",
    "logs_update",
    "signals_update",
    "account_update",
];

/// An HS256 token for `sub`, signed with `secret` (via the gateway's own
/// `Minter`). `ttl` in seconds; negative makes an expired token.
pub fn mint(
    secret: &str,
    sub: &str,
    account: Option<&str>,
    channels: Option<&[&str]>,
    ttl: i64,
) -> String {
    gateway::auth::Minter::from_secret(secret.as_bytes())
        .mint_for(
            sub,
            account,
            channels.map(|c| c.iter().map(|s| s.to_string()).collect()),
            ttl,
        )
        .expect("minting a token")
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Polls `f` every 20 ms until it returns `Some`, or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A NATS server, a gateway relaying from it (HS256 with [`SECRET`]) and a
/// simulating ingestor: the production data path, on free ports.
pub struct SimStack {
    pub nats: NatsServer,
    pub gateway: Gateway,
    pub ingestor: Ingestor,
}

impl SimStack {
    /// `sim_args` are extra `ingestor sim` flags (rates, seed, …);
    /// `gateway_env` extra gateway environment.
    pub fn start(account: &str, sim_args: &[&str], gateway_env: &[(&str, &str)]) -> SimStack {
        let nats = NatsServer::start();
        let url = nats.url();
        let mut env: Vec<(&str, &str)> = vec![("NATS_URL", &url), ("JWT_SECRET", SECRET)];
        env.extend_from_slice(gateway_env);
        let gateway = Gateway::start(&env, false);
        let mut args = vec!["--account", account, "sim"];
        args.extend_from_slice(sim_args);
        let ingestor = Ingestor::start(&args, &[("NATS_URL", &url)]);
        SimStack {
            nats,
            gateway,
            ingestor,
        }
    }

    /// A busy simulator: every kind of data several times a second.
    pub fn busy(account: &str) -> SimStack {
        SimStack::start(account, BUSY_SIM, &[])
    }

    pub fn token(&self, sub: &str) -> String {
        mint(SECRET, sub, None, None, 3600)
    }
}

/// `ingestor sim` flags that make every kind of data arrive several times a
/// second, so tests can wait for events rather than sleep.
pub const BUSY_SIM: &[&str] = &[
    "--quotes-per-sec",
    "200",
    "--logs-per-sec",
    "20",
    "--signals-per-sec",
    "5",
    "--positions-interval-ms",
    "200",
    "--orders-interval-ms",
    "200",
    "--account-interval-ms",
    "200",
    "--seed",
    "7",
];
