//! Issue 15, end to end: a token sees exactly its account for exactly as
//! long as it may, the configuration cannot be made unsafe by accident, and
//! nothing an unauthenticated client does can take the gateway down.
//!
//! - Identity: `account` and `sub` claims that are not one NATS subject
//!   token (`*`, `>`, `a.b`, blanks, control characters) are refused with
//!   `UNAUTHORIZED` on `/ws`, Socket.IO over WebSocket and over polling;
//!   so are `channels: null`, an empty `sub`, an unknown `crit` header and a
//!   lifetime past `MAX_TOKEN_LIFETIME_SECS`.
//! - Configuration: an empty, short or placeholder `JWT_SECRET` (the one
//!   shipped in our own deployment files) stops the start with exit code 2
//!   and a message naming the variable; so do the other unsafe settings;
//!   `gateway check-config` prints the configuration with secrets redacted.
//! - Revocation: `gateway revoke --jti` / `--sub` disconnects the token's
//!   sessions on two replicas within a second and the token (also with a
//!   resume id) is refused afterwards, by a replica started later too.
//! - Keys: a JWKS file rotated while the replica runs (and on SIGHUP);
//!   clock leeway configurable.
//! - The edge: a foreign `Origin` and a rebinding `Host` are refused on every
//!   transport; from one address, 50,000 abandoned polling handshakes, 50
//!   oversized frames before `CONNECT` and 2,000 idle sockets are each cut
//!   to their limit while the gateway stays under the memory limit of
//!   `deploy/k8s/gateway.yaml`, a bystander keeps its quotes and a new
//!   client still connects; TLS gets the same timeouts and answers 503
//!   during a drain.
//! - Logs: one access line per request and per connection (when it ends),
//!   with no token in it; no line can be forged through a claim; `/metrics` on an internal listener; security
//!   headers on the console page.

use e2e_tests::admin::{access_lines, run_gateway, suspicious_log_lines, Finished};
use e2e_tests::edge::{
    self, auth, mib, request, sio_polling, sio_websocket, upgrade_headers, ws_attempt, Bystander,
    IdleSockets, MemoryJail, SioOutcome,
};
use e2e_tests::keys::{self, KeyKind, KeyPair};
use e2e_tests::{mint, Gateway, NatsServer, RedisServer, WsClient, SECRET};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

/// A standalone gateway (simulated quotes, memory store) with
/// [`SECRET`] and `env`.
fn gateway(env: &[(&str, &str)]) -> Gateway {
    let mut all = vec![("JWT_SECRET", SECRET)];
    all.extend_from_slice(env);
    Gateway::standalone(&all)
}

/// Claims for `sub` on `account`, valid for an hour.
fn claims(sub: &str, account: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": sub, "account": account, "iat": now, "exp": now + 3600})
}

fn hs(claims: &Value) -> String {
    keys::hs256_token(SECRET.as_bytes(), claims)
}

/// What each transport made of `token`: `Ok` when let in, else the code.
fn try_every_transport(addr: SocketAddr, token: &str) -> Vec<(&'static str, Result<(), String>)> {
    let sio = |o: SioOutcome| match o {
        SioOutcome::Connected(_) => Ok(()),
        SioOutcome::Refused(m) => Err(m),
        SioOutcome::Http(s, b) => Err(format!("HTTP {s}: {b}")),
    };
    vec![
        ("/ws", ws_attempt(addr, token).map(|_| ())),
        (
            "socket.io websocket",
            sio(sio_websocket(addr, &auth(token), &[])),
        ),
        (
            "socket.io polling",
            sio(sio_polling(addr, &auth(token), &[])),
        ),
    ]
}

fn assert_refused_everywhere(addr: SocketAddr, what: &str, token: &str) {
    for (transport, result) in try_every_transport(addr, token) {
        assert_eq!(
            result,
            Err("UNAUTHORIZED".to_owned()),
            "{what} on {transport}: expected UNAUTHORIZED"
        );
    }
}

fn assert_accepted_everywhere(addr: SocketAddr, what: &str, token: &str) {
    for (transport, result) in try_every_transport(addr, token) {
        assert_eq!(
            result,
            Ok(()),
            "{what} on {transport}: expected to be let in"
        );
    }
}

// ---------------------------------------------------------------- identity

#[test]
fn wildcard_and_dotted_account_claims_are_refused_on_every_transport() {
    let gw = gateway(&[]);
    let addr = gw.addr();
    assert_accepted_everywhere(addr, "a plain account", &hs(&claims("alice", "acc-1")));
    let long = "x".repeat(65);
    for account in [
        "*",
        ">",
        "a.b",
        "mt5.>",
        "demo.*",
        "acc-1.logs",
        "",
        " demo",
        "demo\n",
        "a b",
        &long,
    ] {
        assert_refused_everywhere(
            addr,
            &format!("account {account:?}"),
            &hs(&claims("alice", account)),
        );
    }
    for sub in ["*", ">", "alice.bob", "", "alice bob", "alice\n"] {
        assert_refused_everywhere(addr, &format!("sub {sub:?}"), &hs(&claims(sub, "acc-1")));
    }
    gw.assert_no_panic();
}

#[test]
fn claims_that_widen_access_are_refused() {
    let gw = gateway(&[("MAX_TOKEN_LIFETIME_SECS", "86400")]);
    let addr = gw.addr();
    let now = chrono::Utc::now().timestamp();
    let mut null_channels = claims("alice", "acc-1");
    null_channels["channels"] = Value::Null;
    assert_refused_everywhere(addr, "channels: null", &hs(&null_channels));
    let mut no_iat = claims("alice", "acc-1");
    no_iat.as_object_mut().map(|o| o.remove("iat"));
    no_iat["exp"] = json!(now + 2 * 86400);
    assert_refused_everywhere(addr, "two days without iat", &hs(&no_iat));
    let mut too_long = claims("alice", "acc-1");
    too_long["exp"] = json!(now + 86400 * 30);
    assert_refused_everywhere(addr, "a 30-day token", &hs(&too_long));
    // A critical header extension the gateway does not understand.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.crit = Some(vec!["exp-by-kid".into()]);
    let crit = jsonwebtoken::encode(
        &header,
        &claims("alice", "acc-1"),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signing");
    assert_refused_everywhere(addr, "crit: [exp-by-kid]", &crit);
    gw.assert_no_panic();
}

// ----------------------------------------------------------- configuration

/// The placeholder secret our deployment files shipped with until they
/// required a secret of the operator's own (public, so never acceptable).
/// Checks that no deployment file still carries a default for it.
fn shipped_placeholder() -> String {
    for file in ["deploy/k8s/gateway.yaml", "docker-compose.yml"] {
        let text = std::fs::read_to_string(e2e_tests::workspace_root().join(file))
            .unwrap_or_else(|e| panic!("reading {file}: {e}"));
        assert!(
            !text.contains("${JWT_SECRET:-") && !text.contains("JWT_SECRET: change-me"),
            "{file} ships a default JWT_SECRET"
        );
    }
    "change-me-in-production-0123456789".to_owned()
}

fn assert_refused_start(run: &Finished, variable: &str, what: &str) {
    assert!(
        !run.timed_out,
        "{what}: the gateway kept running:\n{}",
        run.output()
    );
    assert_eq!(run.code, Some(2), "{what}: exit code\n{}", run.output());
    assert!(
        run.stderr.contains(variable),
        "{what}: the message does not name {variable}:\n{}",
        run.output()
    );
    assert!(
        !run.stdout.contains("listening on"),
        "{what}: it listened:\n{}",
        run.output()
    );
}

#[test]
fn refuses_to_start_on_an_empty_short_or_placeholder_secret() {
    let nowhere = "nats://127.0.0.1:1";
    let placeholder = shipped_placeholder();
    for (what, secret) in [
        ("an empty secret", ""),
        ("a short secret", "hunter2-too-short"),
        ("31 bytes", "0123456789abcdef0123456789abcde"),
        ("the shipped placeholder", placeholder.as_str()),
        ("the README's placeholder", "change-me"),
    ] {
        let run = run_gateway(
            &[],
            &[("NATS_URL", nowhere), ("JWT_SECRET", secret)],
            Duration::from_secs(20),
        );
        assert_refused_start(&run, "JWT_SECRET", what);
        if !secret.is_empty() {
            assert!(
                !run.output().contains(secret),
                "{what}: the secret was printed"
            );
        }
    }
    // Standalone (a demo on one machine) accepts the placeholder.
    let gw = Gateway::standalone(&[("JWT_SECRET", &placeholder)]);
    gw.assert_no_panic();
}

#[test]
fn other_unsafe_settings_are_refused_by_name() {
    let nowhere = "nats://127.0.0.1:1";
    let dir = tempfile::tempdir().expect("temp dir");
    let key = KeyPair::generate(dir.path(), KeyKind::Ec, "k");
    let key_file = key.public_pem.to_str().expect("utf-8").to_owned();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("LOG_FORMAT", vec![("LOG_FORMAT", "jsno")]),
        ("MAX_PAYLOAD_BYTES", vec![("MAX_PAYLOAD_BYTES", "0")]),
        ("RATE_LIMIT_PER_SEC", vec![("RATE_LIMIT_PER_SEC", "0")]),
        (
            "MAX_CONNECTIONS_PER_USER",
            vec![("MAX_CONNECTIONS_PER_USER", "0")],
        ),
        (
            "JWT_PUBLIC_KEY_FILE",
            vec![("JWT_PUBLIC_KEY_FILE", &key_file)],
        ),
        ("DEFAULT_ACCOUNT", vec![("DEFAULT_ACCOUNT", "*")]),
        ("DEFAULT_ACCOUNT", vec![("DEFAULT_ACCOUNT", "a.b")]),
        ("SUBJECT_PREFIX", vec![("SUBJECT_PREFIX", "mt5.>")]),
        ("SUBJECT_PREFIX", vec![("SUBJECT_PREFIX", "")]),
        ("TRUSTED_PROXIES", vec![("TRUSTED_PROXIES", "10.0.0.0/33")]),
    ];
    for (variable, extra) in cases {
        let mut env = vec![("NATS_URL", nowhere), ("JWT_SECRET", SECRET)];
        env.extend(extra);
        let run = run_gateway(&[], &env, Duration::from_secs(20));
        assert_refused_start(&run, variable, &format!("{env:?}"));
    }
}

#[test]
fn check_config_prints_the_configuration_redacted_and_fails_on_problems() {
    let good = run_gateway(
        &["check-config"],
        &[("NATS_URL", "nats://127.0.0.1:1"), ("JWT_SECRET", SECRET)],
        Duration::from_secs(20),
    );
    assert_eq!(good.code, Some(0), "{}", good.output());
    assert!(good.stdout.contains("JWT_SECRET"), "{}", good.stdout);
    assert!(good.stdout.contains("redacted"), "{}", good.stdout);
    assert!(
        !good.output().contains(SECRET),
        "the secret was printed:\n{}",
        good.output()
    );
    assert!(good.stdout.contains("SUBJECT_PREFIX"), "{}", good.stdout);
    // Every problem at once, each named.
    let bad = run_gateway(
        &["check-config"],
        &[
            ("NATS_URL", "nats://127.0.0.1:1"),
            ("JWT_SECRET", "short"),
            ("LOG_FORMAT", "jsno"),
            ("DEFAULT_ACCOUNT", "*"),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(bad.code, Some(2), "{}", bad.output());
    for variable in ["JWT_SECRET", "LOG_FORMAT", "DEFAULT_ACCOUNT"] {
        assert!(
            bad.output().contains(variable),
            "{variable} not named:\n{}",
            bad.output()
        );
    }
    assert!(!bad.output().contains("short\n"), "the secret was printed");
}

// -------------------------------------------------------------- revocation

/// NATS, Redis and replicas sharing them, as in production.
struct Replicas {
    gateways: Vec<Gateway>,
    redis: RedisServer,
    nats: NatsServer,
}

impl Replicas {
    fn start(n: usize) -> Replicas {
        let nats = NatsServer::start();
        let redis = RedisServer::start();
        let mut r = Replicas {
            gateways: Vec::new(),
            redis,
            nats,
        };
        for _ in 0..n {
            r.add();
        }
        r
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", self.nats.url()),
            ("REDIS_URL", self.redis.url()),
            ("JWT_SECRET", SECRET.to_owned()),
        ]
    }

    fn add(&mut self) -> SocketAddr {
        let id = format!("gw-{}", self.gateways.len() + 1);
        let mut env = self.env();
        env.push(("REPLICA_ID", id));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let gw = Gateway::start(&env, false);
        let addr = gw.addr();
        self.gateways.push(gw);
        addr
    }

    /// `gateway revoke ARGS`, which must succeed.
    fn revoke(&self, args: &[&str]) -> Instant {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut all = vec!["revoke"];
        all.extend_from_slice(args);
        let run = run_gateway(&all, &env, Duration::from_secs(20));
        assert_eq!(
            run.code,
            Some(0),
            "gateway revoke {args:?}:\n{}",
            run.output()
        );
        Instant::now()
    }
}

/// A connected `/ws` client and the `session` of its `connected`.
fn ws_connected(addr: SocketAddr, token: &str) -> (WsClient, String) {
    let mut ws = WsClient::connect(&format!("ws://{addr}/ws?token={token}")).expect("connect");
    let connected = ws.wait_event("connected", WAIT);
    let session = connected["session"].as_str().unwrap_or_default().to_owned();
    (ws, session)
}

/// Waits for `disconnected {reason: "Token revoked", reconnect: false}`
/// and returns when it came.
fn wait_revoked(ws: &mut WsClient, what: &str) -> Instant {
    let data = ws
        .try_wait_event("disconnected", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{what}: no `disconnected`:\n{}", ws.dump()));
    let at = Instant::now();
    assert_eq!(data["reason"], "Token revoked", "{what}: {data}");
    assert_eq!(data["reconnect"], false, "{what}: {data}");
    at
}

/// The contract's bound: every replica within a second of the revocation.
const REVOCATION_BOUND: Duration = Duration::from_secs(1);

#[test]
fn revoking_a_jti_or_a_sub_reaches_every_replica_within_a_second() {
    let mut replicas = Replicas::start(2);
    let (a1, a2) = (replicas.gateways[0].addr(), replicas.gateways[1].addr());
    let now = chrono::Utc::now().timestamp();
    let token_with = |jti: &str, iat: i64| {
        hs(&json!({"sub": "alice", "account": "acc-1", "jti": jti, "iat": iat, "exp": iat + 3600}))
    };
    let stolen = token_with("laptop-1", now);
    let other = token_with("desktop-1", now);

    // --jti: both replicas drop the stolen token's sessions, not the other.
    let (mut on1, session1) = ws_connected(a1, &stolen);
    let (mut on2, _) = ws_connected(a2, &stolen);
    let (mut keeps, _) = ws_connected(a2, &other);
    let done = replicas.revoke(&["--jti", "laptop-1"]);
    for (ws, what) in [(&mut on1, "replica 1"), (&mut on2, "replica 2")] {
        let at = wait_revoked(ws, what);
        let late = at.saturating_duration_since(done);
        assert!(late <= REVOCATION_BOUND, "{what}: revoked after {late:?}");
    }
    keeps.send_event("heartbeat", json!({"timestamp": 1}));
    keeps.wait_event("heartbeat_ack", WAIT);
    // Refused afterwards, on every replica and transport, and on resume.
    for addr in [a1, a2] {
        assert_refused_everywhere(addr, "the revoked jti", &stolen);
        let resume = json!({"token": stolen, "session": session1});
        assert_eq!(
            sio_websocket(addr, &resume, &[]),
            SioOutcome::Refused("UNAUTHORIZED".into()),
            "resume with the revoked token"
        );
    }
    // A replica started afterwards loads the revocation.
    let a3 = replicas.add();
    assert_refused_everywhere(a3, "the revoked jti on a new replica", &stolen);

    // --sub with --before: every older token of alice, not a newer one.
    let before = chrono::Utc::now() + chrono::Duration::seconds(1);
    let done = replicas.revoke(&["--sub", "alice", "--before", &before.to_rfc3339()]);
    let at = wait_revoked(&mut keeps, "the other token of alice");
    assert!(at.saturating_duration_since(done) <= REVOCATION_BOUND);
    for addr in [a1, a2, a3] {
        assert_refused_everywhere(addr, "an older token of the revoked sub", &other);
    }
    let fresh = token_with("desktop-2", before.timestamp() + 1);
    assert_accepted_everywhere(a1, "a token issued after --before", &fresh);
    for gw in replicas.gateways.iter_mut() {
        gw.assert_no_panic();
    }
}

// -------------------------------------------------------------------- keys

/// Connects to `/ws` until `token` is let in (or refused, per `accepted`),
/// at most `timeout`.
fn eventually_ws(addr: SocketAddr, token: &str, accepted: bool, timeout: Duration) -> bool {
    e2e_tests::eventually(timeout, || {
        (ws_attempt(addr, token).is_ok() == accepted).then_some(())
    })
    .is_some()
}

#[test]
fn a_jwks_rotated_while_the_replica_runs_is_used_without_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = KeyPair::generate(dir.path(), KeyKind::Rsa, "old");
    let new = KeyPair::generate(dir.path(), KeyKind::Ec, "new");
    let jwks = dir.path().join("jwks.json");
    keys::write_jwks(&jwks, &[old.jwk("old")]);
    let mut gw = Gateway::standalone(&[("JWT_PUBLIC_KEY_FILE", jwks.to_str().expect("utf-8"))]);
    let addr = gw.addr();
    let (old_token, new_token) = (
        old.token("alice", Some("old"), 3600),
        new.token("alice", Some("new"), 3600),
    );
    assert!(ws_attempt(addr, &old_token).is_ok());
    assert_eq!(ws_attempt(addr, &new_token), Err("UNAUTHORIZED".into()));

    // Rotation by replacing the file (write aside, rename over).
    let staged = dir.path().join("jwks.json.new");
    keys::write_jwks(&staged, &[new.jwk("new")]);
    std::fs::rename(&staged, &jwks).expect("rename");
    assert!(
        eventually_ws(addr, &new_token, true, WAIT),
        "the new key was not picked up"
    );
    assert!(
        eventually_ws(addr, &old_token, false, WAIT),
        "the old key still works"
    );

    // Rotation in place, announced with SIGHUP.
    keys::write_jwks(&jwks, &[old.jwk("old"), new.jwk("new")]);
    gw.proc().signal(libc::SIGHUP);
    assert!(
        eventually_ws(addr, &old_token, true, WAIT),
        "SIGHUP did not reload"
    );
    assert!(ws_attempt(addr, &new_token).is_ok());
    // A broken file keeps the last good keys.
    std::fs::write(&jwks, "{ not json").expect("write");
    gw.proc().signal(libc::SIGHUP);
    let tried = e2e_tests::eventually(WAIT, || {
        gw.proc()
            .stderr()
            .contains("JWT key file not reloaded")
            .then_some(())
    });
    assert!(tried.is_some(), "the broken JWKS was never read");
    assert!(
        ws_attempt(addr, &old_token).is_ok(),
        "a broken JWKS dropped the keys"
    );
    assert!(gw.proc().is_running());
    gw.assert_no_panic();
}

#[test]
fn clock_leeway_is_configurable() {
    let now = chrono::Utc::now().timestamp();
    let late = hs(&json!({"sub": "alice", "iat": now - 100, "exp": now - 20}));
    let strict = gateway(&[("JWT_LEEWAY_SECS", "0")]);
    assert_eq!(
        ws_attempt(strict.addr(), &late),
        Err("TOKEN_EXPIRED".into())
    );
    let lenient = gateway(&[("JWT_LEEWAY_SECS", "60")]);
    assert!(ws_attempt(lenient.addr(), &late).is_ok());
}

// ------------------------------------------------------------ origin, host

/// The HTTP status of a WebSocket upgrade or polling handshake on `path`
/// with this `Host` and `Origin`.
fn status(addr: SocketAddr, path: &str, host: &str, origin: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = if path.contains("transport=polling") {
        let mut h = vec![("Host", host)];
        if let Some(o) = origin {
            h.push(("Origin", o));
        }
        h
    } else {
        upgrade_headers(host, origin)
    };
    request(addr, "GET", path, &headers, b"")
        .map(|r| r.status)
        .unwrap_or(0)
}

#[test]
fn a_foreign_origin_and_a_rebinding_host_are_refused_on_every_transport() {
    for configured in [Some("https://dash.example.com"), None] {
        let mut env = vec![];
        if let Some(o) = configured {
            env.push(("CORS_ORIGINS", o));
        }
        let gw = Gateway::standalone(&env);
        let addr = gw.addr();
        let token = gw.standalone_token().to_owned();
        let here = addr.to_string();
        let rebound = format!("rebind.example:{}", addr.port());
        let rebound_origin = format!("http://{rebound}");
        let own_origin = format!("http://{here}");
        let paths = [
            format!("/ws?token={token}"),
            "/socket.io/?EIO=4&transport=websocket".to_owned(),
            "/socket.io/?EIO=4&transport=polling".to_owned(),
        ];
        let ok = |s: u16| s == 101 || s == 200;
        for path in &paths {
            let what = format!("{path} (CORS_ORIGINS {configured:?})");
            assert_eq!(
                status(addr, path, &here, Some("https://evil.example")),
                403,
                "{what}: foreign Origin"
            );
            assert_eq!(
                status(addr, path, &rebound, Some(&rebound_origin)),
                403,
                "{what}: rebinding"
            );
            assert_eq!(
                status(addr, path, &rebound, None),
                403,
                "{what}: rebinding without Origin"
            );
            assert!(
                ok(status(addr, path, &here, None)),
                "{what}: no Origin (wscat)"
            );
            match configured {
                Some(o) => {
                    assert!(
                        ok(status(addr, path, "dash.example.com", Some(o))),
                        "{what}: the dashboard"
                    );
                    assert!(
                        ok(status(addr, path, &here, Some(o))),
                        "{what}: the dashboard by address"
                    );
                }
                None => assert!(
                    ok(status(addr, path, &here, Some(&own_origin))),
                    "{what}: same origin"
                ),
            }
        }
        gw.assert_no_panic();
    }
}

// ------------------------------------------------------- edge, before auth

/// A standalone gateway under the Kubernetes manifest's memory limit, with
/// 1024 open files (the common default that issue 15 ran out of), and a
/// bystander dashboard on another address.
struct Besieged {
    bystander: Bystander,
    jail: MemoryJail,
    gw: Gateway,
}

/// Starts a [`Besieged`] gateway with `env`.
fn besiege(env: &[(&str, &str)]) -> Besieged {
    edge::raise_fd_limit();
    let mut gw = Gateway::standalone(env);
    let pid = gw.proc().pid();
    edge::set_fd_limit(pid, 1024);
    let jail = MemoryJail::confine(pid, edge::k8s_memory_limit());
    let bystander = Bystander::start(gw.addr(), gw.standalone_token());
    Besieged {
        bystander,
        jail,
        gw,
    }
}

impl Besieged {
    /// After an attack: the gateway lives, stayed under the limit, the
    /// bystander got quotes in the last few seconds, and a new client
    /// connects on every transport.
    fn assert_unharmed(&mut self, attack: &str) {
        let peak = self.jail.peak();
        eprintln!(
            "{attack}: peak {} (limit {}, {}), RSS now {}, peak RSS {}, cgroup refusals {}",
            mib(peak),
            mib(self.jail.limit()),
            if self.jail.enforced() {
                "cgroup"
            } else {
                "watched"
            },
            mib(self.jail.rss()),
            mib(self.jail.peak_rss()),
            self.jail.failcnt()
        );
        assert!(
            self.gw.proc().is_running(),
            "{attack}: the gateway died:\n{}",
            self.gw.proc().stderr_tail(30)
        );
        assert!(
            peak < self.jail.limit(),
            "{attack}: peak {} over the limit",
            mib(peak)
        );
        assert!(
            !self.bystander.is_closed(),
            "{attack}: the bystander was disconnected"
        );
        let recent = Instant::now() - Duration::from_secs(3);
        let got = e2e_tests::eventually(WAIT, || {
            (self.bystander.quotes_since(recent) > 0).then_some(())
        });
        assert!(
            got.is_some(),
            "{attack}: the bystander stopped getting quotes"
        );
        let token = self.gw.standalone_token().to_owned();
        assert_accepted_everywhere(
            self.gw.addr(),
            &format!("a new client after {attack}"),
            &token,
        );
        self.gw.assert_no_panic();
    }
}

#[test]
fn fifty_thousand_abandoned_polling_handshakes_are_cut_and_expire() {
    let mut b = besiege(&[("PENDING_SESSION_TIMEOUT_SECS", "5")]);
    let started = Instant::now();
    let stats = edge::polling_flood(b.gw.addr(), 50_000, 4);
    let took = started.elapsed();
    eprintln!("polling flood: {stats:?} in {took:?}");
    assert_eq!(stats.sent, 50_000);
    // Cut: most were refused (429), far fewer opened than sent.
    assert!(stats.opened < 5_000, "{stats:?}");
    assert!(
        stats.refused.get(&429).copied().unwrap_or(0) > 40_000,
        "{stats:?}"
    );
    // An abandoned handshake expires within seconds: its sid is unknown.
    let sid = stats
        .sample_sid
        .clone()
        .expect("at least one handshake opened");
    let addr = b.gw.addr();
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let expired = e2e_tests::eventually(Duration::from_secs(15), || {
        let r = request(addr, "GET", &path, &[("Host", &addr.to_string())], b"").ok()?;
        (r.status == 400).then_some(())
    });
    assert!(
        expired.is_some(),
        "an abandoned handshake outlived PENDING_SESSION_TIMEOUT_SECS"
    );
    b.assert_unharmed("50,000 abandoned polling handshakes");
}

#[test]
fn fifty_sixteen_mebibyte_frames_before_connect_are_cut_at_the_limit() {
    let mut b = besiege(&[]);
    let frame = 16 << 20;
    let outcomes = edge::oversized_frames(
        b.gw.addr(),
        "/socket.io/?EIO=4&transport=websocket",
        50,
        frame,
    );
    let upgraded = outcomes.iter().filter(|o| o.upgraded).count();
    let written: Vec<usize> = outcomes.iter().map(|o| o.written).collect();
    eprintln!(
        "frames: {upgraded} upgraded, max written {}, close codes {:?}",
        mib(written.iter().copied().max().unwrap_or(0) as u64),
        outcomes.iter().map(|o| o.close_code).collect::<Vec<_>>()
    );
    assert_eq!(upgraded, 50, "every socket is let in to Engine.IO");
    for o in &outcomes {
        assert!(o.written < frame, "a whole 16 MiB frame was read: {o:?}");
        assert!(matches!(o.close_code, Some(1009) | None), "{o:?}");
    }
    b.assert_unharmed("50 sockets of 16 MiB frames");
}

#[test]
fn two_thousand_idle_sockets_are_cut_and_new_clients_still_connect() {
    let mut b = besiege(&[("HEADER_READ_TIMEOUT_SECS", "5")]);
    let idle = IdleSockets::open(b.gw.addr(), 2_000);
    let limit = 256; // MAX_CONNECTIONS_PER_IP's default
    let over = e2e_tests::eventually(Duration::from_secs(5), || {
        (idle.still_open() <= limit).then_some(())
    });
    eprintln!(
        "idle: {} made, {} refused, {} open",
        idle.streams.len(),
        idle.refused,
        idle.still_open()
    );
    assert!(over.is_some(), "{} idle sockets held", idle.still_open());
    // While they are held: a new client connects.
    let token = b.gw.standalone_token().to_owned();
    assert!(
        ws_attempt(b.gw.addr(), &token).is_ok(),
        "a new client is refused during the attack"
    );
    let cut = e2e_tests::eventually(Duration::from_secs(15), || {
        (idle.still_open() == 0).then_some(())
    });
    assert!(
        cut.is_some(),
        "{} idle sockets outlived the header-read timeout",
        idle.still_open()
    );
    b.assert_unharmed("2,000 idle sockets");
}

// --------------------------------------------------------------------- TLS

/// A self-signed certificate for 127.0.0.1 (openssl CLI).
fn self_signed_cert(dir: &std::path::Path) -> (String, String) {
    let key = KeyPair::generate(dir, KeyKind::Ec, "tls").private_pem;
    let cert = dir.join("tls.crt");
    let ok = std::process::Command::new("openssl")
        .args(["req", "-x509", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-key")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl req -x509 failed");
    (cert.display().to_string(), key.display().to_string())
}

/// `curl -k` status of an HTTPS GET (0 when no answer).
fn https_status(addr: SocketAddr, path: &str) -> u16 {
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}"])
        .arg(format!("https://{addr}{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A WSS dashboard (`/ws`) that subscribes to quotes and then never reads
/// again: its buffers fill, so its goodbye cannot be written and the drain
/// waits for it, which is the window in which probes must get 503.
fn tls_silent_client(addr: SocketAddr, token: &str) -> std::process::Child {
    use std::io::BufRead;
    let script = r#"
import socket, ssl, sys, time
host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
raw = socket.socket(); raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); raw.connect((host, port))
s = ctx.wrap_socket(raw, server_hostname=host)
s.sendall(("GET /ws?token=%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" % (token, host, port)).encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
sub = b'{"event":"subscribe","data":{"channels":["quotes"]}}'
s.sendall(bytes([0x81, 0x80 | len(sub)]) + b"\x00\x00\x00\x00" + sub)
print("held" if head.startswith(b"HTTP/1.1 101") else "refused", flush=True)
time.sleep(60)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, "127.0.0.1", &addr.port().to_string(), token])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let out = child.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).ok();
    assert_eq!(line.trim(), "held", "the silent WSS client was not let in");
    child
}

#[test]
fn silent_tls_sockets_are_cut_by_the_handshake_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed_cert(dir.path());
    let gw = Gateway::standalone(&[
        ("TLS_CERT_FILE", &cert),
        ("TLS_KEY_FILE", &key),
        ("TLS_HANDSHAKE_TIMEOUT_SECS", "3"),
    ]);
    let addr = gw.addr();
    // Idle sockets that never start the handshake are cut.
    let idle = IdleSockets::open(addr, 300);
    let cut = e2e_tests::eventually(Duration::from_secs(15), || {
        (idle.still_open() == 0).then_some(())
    });
    assert!(
        cut.is_some(),
        "{} silent TLS sockets held",
        idle.still_open()
    );
    assert_eq!(https_status(addr, "/health/ready"), 200);
    gw.assert_no_panic();
}

#[test]
fn tls_answers_503_during_a_drain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed_cert(dir.path());
    let mut gw = Gateway::standalone(&[
        ("TLS_CERT_FILE", &cert),
        ("TLS_KEY_FILE", &key),
        ("DRAIN_TIMEOUT_SECS", "10"),
        ("SIM_QUOTES_PER_SEC", "2000"),
        // Every quote written and small buffers: the silent client's
        // socket is full within the two seconds below.
        ("QUOTE_THROTTLE_MS", "0"),
        ("TCP_SEND_BUFFER", "4096"),
    ]);
    let addr = gw.addr();
    // A connected client keeps the drain going; probes get 503, not a
    // refused connection.
    let mut client = tls_silent_client(addr, gw.standalone_token());
    // Long enough for quotes to fill the silent client's buffers.
    std::thread::sleep(Duration::from_secs(2));
    // Probing from before the signal: the drain may be short.
    let (probing, first_answer) = std::sync::mpsc::channel();
    let probe = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            let status = https_status(addr, "/health/ready");
            seen.push(status);
            let _ = probing.send(());
            if status == 0 {
                break;
            }
        }
        seen
    });
    first_answer
        .recv_timeout(Duration::from_secs(10))
        .expect("the probe never got an answer");
    gw.proc().signal(libc::SIGTERM);
    let seen = probe.join().expect("probe thread");
    let answered = seen.iter().filter(|s| **s == 503).count();
    println!("{answered} probes answered 503 over TLS during the drain");
    assert!(answered > 0, "no 503 over TLS during the drain: {seen:?}");
    let _ = client.kill();
    let _ = client.wait();
    gw.assert_no_panic();
}

// ----------------------------------------------------------------- logging

#[test]
fn the_access_log_has_a_line_per_request_and_never_a_token() {
    let gw = gateway(&[]);
    let addr = gw.addr();
    let token = hs(&claims("alice", "acc-1"));
    let signature = token.rsplit('.').next().expect("a JWT").to_owned();
    assert!(ws_attempt(addr, &token).is_ok());
    let polled = sio_polling(addr, &auth(&token), &[]);
    assert!(matches!(polled, SioOutcome::Connected(_)), "{polled:?}");
    let by_query = e2e_tests::http::get(
        addr,
        &format!("/socket.io/?EIO=4&transport=polling&token={token}"),
        &[],
    );
    assert_eq!(by_query.status, 200);
    e2e_tests::http::get(addr, "/health/live", &[]);
    let seen = e2e_tests::eventually(WAIT, || {
        let log = gw.stderr();
        let lines = access_lines(&log);
        let has = |p: &str| lines.iter().any(|l| l.contains(p));
        let ended = has("connection closed");
        (has("/ws")
            && has("/socket.io/")
            && has("/health/live")
            && has("101")
            && has("200")
            && ended)
            .then_some(())
    });
    assert!(seen.is_some(), "access lines missing:\n{}", gw.stderr());
    let log = format!("{}\n{}", gw.stderr(), gw.stdout_lines().join("\n"));
    assert!(!log.contains(&signature), "a token reached the log:\n{log}");
    gw.assert_no_panic();
}

#[test]
fn no_log_line_can_be_forged_through_a_claim() {
    for format in ["text", "json"] {
        let gw = gateway(&[("LOG_FORMAT", format), ("RUST_LOG", "info,gateway=debug")]);
        let addr = gw.addr();
        let forged = "2026-01-01T00:00:00.000000Z  INFO gateway: forged admin login";
        let mut with_kid = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        with_kid.kid = Some(format!("k\n{forged}"));
        let kid_token = jsonwebtoken::encode(
            &with_kid,
            &claims("alice", "acc-1"),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signing");
        for token in [
            hs(&claims(&format!("alice\n{forged}"), "acc-1")),
            hs(&claims(&format!("alice\r{forged}"), "acc-1")),
            hs(&claims("alice\u{1b}[2J\u{1b}[H", "acc-1")),
            hs(&claims("alice", &format!("acc\n{forged}"))),
            kid_token,
        ] {
            let _ = try_every_transport(addr, &token);
        }
        let _ = request(
            addr,
            "GET",
            "/socket.io/?EIO=4&transport=polling&sid=x%0Aforged",
            &[("Host", &addr.to_string())],
            b"",
        );
        let log = gw.stderr();
        let bad = suspicious_log_lines(&log);
        assert!(
            bad.is_empty(),
            "{format}: forged or raw lines:\n{}",
            bad.join("\n")
        );
        if format == "json" {
            for l in log.lines().filter(|l| !l.is_empty()) {
                assert!(
                    serde_json::from_str::<Value>(l).is_ok(),
                    "not one JSON object: {l:?}"
                );
            }
        }
        gw.assert_no_panic();
    }
}

// -------------------------------------------------------------- the edge

#[test]
fn metrics_can_be_kept_on_an_internal_listener() {
    let gw = gateway(&[("METRICS_ADDR", "127.0.0.1:0")]);
    let line = e2e_tests::eventually(WAIT, || {
        gw.stdout_lines()
            .into_iter()
            .find(|l| l.contains("metrics listening on http://"))
    })
    .expect("a `metrics listening on` line");
    let internal: SocketAddr = line
        .rsplit("://")
        .next()
        .and_then(|a| a.trim().trim_end_matches('/').parse().ok())
        .expect("an address");
    assert_eq!(e2e_tests::http::get(gw.addr(), "/metrics", &[]).status, 404);
    let r = e2e_tests::http::get(internal, "/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("gateway_"), "{}", r.body);
}

#[test]
fn the_console_page_sends_security_headers() {
    let gw = gateway(&[]);
    let r = e2e_tests::http::get(gw.addr(), "/", &[]);
    assert_eq!(r.status, 200);
    let csp = r
        .header("content-security-policy")
        .expect("Content-Security-Policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
}

#[test]
fn the_per_user_cap_holds_locally_while_redis_is_down() {
    let nats = NatsServer::start();
    let mut redis = RedisServer::start();
    let (nats_url, redis_url) = (nats.url(), redis.url());
    let gw = Gateway::start(
        &[
            ("NATS_URL", &nats_url),
            ("REDIS_URL", &redis_url),
            ("JWT_SECRET", SECRET),
            ("MAX_CONNECTIONS_PER_USER", "2"),
        ],
        false,
    );
    redis.kill();
    let token = mint(SECRET, "alice", None, None, 3600);
    // Up to the cap, this replica still counts locally and lets them in.
    let kept: Vec<WsClient> = (0..2).map(|_| ws_connected(gw.addr(), &token).0).collect();
    // Past it, closed: the cap is not waived because Redis is away.
    assert_eq!(
        ws_attempt(gw.addr(), &token).map(|_| ()),
        Err("RATE_LIMITED".into())
    );
    drop(kept);
    // Freed slots are given back locally too.
    let again = e2e_tests::eventually(WAIT, || ws_attempt(gw.addr(), &token).ok());
    assert!(again.is_some(), "a freed slot was not given back");
    gw.assert_no_panic();
}
