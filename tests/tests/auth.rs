//! Who may connect and what they may see (contract sections 2 and 8), over
//! the production path `ingestor sim` → `nats-server -js` → `gateway`.
//!
//! - Refused tokens (none, garbage, wrong signature, tampered, expired,
//!   not yet valid, `alg: none`, missing claims, algorithm confusion,
//!   unknown `kid`): socket.io-client and python-socketio get a
//!   `connect_error` whose `message` is the code (`UNAUTHORIZED` or
//!   `TOKEN_EXPIRED`) and no data; a plain WebSocket gets one `error` frame
//!   with the code, then a close frame (1008) whose reason is the code.
//! - RS256 and ES256 tokens are accepted with `JWT_PUBLIC_KEY_FILE` as a
//!   PEM file or as a JWKS file (key picked by `kid`).
//! - `JWT_ISSUER` / `JWT_AUDIENCE` are enforced when set.
//! - A token for account A never receives account B's data, and a token's
//!   channel allow-list turns the other channels into `FORBIDDEN_CHANNEL`.

use e2e_tests::checks::{assert_error, assert_event};
use e2e_tests::keys::{self, KeyKind, KeyPair};
use e2e_tests::sio::WAIT_MS;
use e2e_tests::{
    mint, Gateway, Ingestor, NatsServer, Plan, SimStack, SioClient, Transcript, WsClient, WsMsg,
    BUSY_SIM, CHANNELS, DATA_EVENTS, SECRET,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// What a connection attempt should come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `connected`, then data after `subscribe`.
    Accepted,
    /// Refused with this code.
    Refused(&'static str),
}

/// One token to try. `None`: no token at all.
struct Case {
    name: String,
    token: Option<String>,
    expect: Expect,
}

fn case(name: &str, token: Option<String>, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        token,
        expect,
    }
}

/// A Socket.IO plan that connects with the case's token (handshake `auth`)
/// and, if let in, subscribes to quotes and waits for one.
fn sio_plan(gw: &Gateway, case: &Case, transport: &str) -> Plan {
    let mut plan = Plan::new(&gw.http_url()).transports(&[transport]);
    if let Some(token) = &case.token {
        plan = plan.token(token);
    }
    match case.expect {
        Expect::Refused(_) => plan.wait_any(&["connect", "connect_error"], WAIT_MS),
        Expect::Accepted => plan
            .connected()
            .subscribe(&["quotes"])
            .wait_for("quotes", WAIT_MS),
    }
}

/// Checks what a Socket.IO client saw against the case.
fn check_sio(case: &Case, t: &Transcript) -> Result<(), String> {
    let what = format!("{:?} client, token {}", t.lang, case.name);
    match case.expect {
        Expect::Accepted => {
            if t.code != Some(0) || t.find("connect_error").is_some() {
                return Err(format!("{what}: expected to be let in:\n{}", t.dump()));
            }
            assert_event("connected", &t.first("connected").data);
            Ok(())
        }
        Expect::Refused(code) => {
            let Some(refusal) = t.find("connect_error") else {
                return Err(format!("{what}: expected connect_error:\n{}", t.dump()));
            };
            if refusal.data["message"] != code {
                return Err(format!(
                    "{what}: connect_error message should be {code:?}:\n{}",
                    t.dump()
                ));
            }
            let leaked: Vec<&str> = t
                .names()
                .into_iter()
                .filter(|n| *n == "connect" || *n == "connected" || DATA_EVENTS.contains(n))
                .collect();
            if !leaked.is_empty() {
                return Err(format!("{what}: refused but saw {leaked:?}:\n{}", t.dump()));
            }
            Ok(())
        }
    }
}

/// Tries the case on the plain WebSocket endpoint at `/ws`.
fn check_ws(gw: &Gateway, case: &Case) -> Result<(), String> {
    let what = format!("plain WebSocket, token {}", case.name);
    let url = match &case.token {
        Some(token) => format!("{}/ws?token={token}", gw.ws_url()),
        None => format!("{}/ws", gw.ws_url()),
    };
    let mut ws = WsClient::connect(&url).map_err(|e| format!("{what}: {e}"))?;
    match case.expect {
        Expect::Accepted => {
            ws.try_wait_event("connected", WAIT)
                .ok_or_else(|| format!("{what}: no `connected`:\n{}", ws.dump()))?;
            ws.send_event("subscribe", json!({"channels": ["quotes"]}));
            ws.try_wait_event("quotes", WAIT)
                .ok_or_else(|| format!("{what}: no quotes:\n{}", ws.dump()))?;
            ws.close();
            Ok(())
        }
        Expect::Refused(code) => {
            let error = ws
                .try_wait_event("error", WAIT)
                .ok_or_else(|| format!("{what}: no `error` frame:\n{}", ws.dump()))?;
            if error["code"] != code {
                return Err(format!("{what}: error code should be {code}: {error}"));
            }
            match ws.wait_close(WAIT) {
                Some(Some((1008, reason))) if reason == code => {}
                other => {
                    return Err(format!(
                        "{what}: expected a close frame (1008, {code:?}), got {other:?}:\n{}",
                        ws.dump()
                    ))
                }
            }
            let events: Vec<&str> = ws.events().iter().map(|(_, e, _)| *e).collect();
            if events != ["error"] {
                return Err(format!("{what}: refused but saw {events:?}"));
            }
            Ok(())
        }
    }
}

/// Runs every case with socket.io-client over websocket (all at once),
/// with socket.io-client over polling and python-socketio for the cases
/// `also` selects, and with a plain WebSocket; panics with every problem.
fn run_cases(gw: &Gateway, cases: &[Case], also: impl Fn(&Case) -> bool) {
    let mut running = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        running.push((i, SioClient::node(&sio_plan(gw, c, "websocket"))));
        if also(c) {
            running.push((i, SioClient::node(&sio_plan(gw, c, "polling"))));
            running.push((i, SioClient::python(&sio_plan(gw, c, "websocket"))));
        }
    }
    let mut problems = Vec::new();
    for c in cases {
        if let Err(e) = check_ws(gw, c) {
            problems.push(e);
        }
    }
    for (i, client) in running {
        if let Err(e) = check_sio(&cases[i], &client.finish(WAIT)) {
            problems.push(e);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    gw.assert_no_panic();
}

/// Claims for `sub`, valid for an hour.
fn claims(sub: &str) -> Value {
    keys::claims(sub, 3600)
}

/// `token` with its payload replaced by `claims`, the signature kept.
fn tampered(token: &str, claims: &Value) -> String {
    use base64::Engine;
    let mut parts = token.split('.');
    let header = parts.next().unwrap_or_default();
    parts.next();
    let signature = parts.next().unwrap_or_default();
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.{signature}")
}

/// HS256 (`JWT_SECRET`): the good token in the handshake `auth` or in the
/// query string is let in; every kind of bad token is refused with the
/// contract's code, on every client, and sees no data.
#[test]
fn hs256_tokens_accepted_and_refused() {
    let stack = SimStack::busy("demo");
    let now = chrono::Utc::now().timestamp();
    let good = mint(SECRET, "alice", None, None, 3600);
    let mut other_account = claims("alice");
    other_account["account"] = json!("someone-else");
    let cases = vec![
        case("valid", Some(good.clone()), Expect::Accepted),
        case("none", None, Expect::Refused("UNAUTHORIZED")),
        case(
            "empty",
            Some(String::new()),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "garbage",
            Some("not-a-jwt".into()),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "wrong signature",
            Some(mint(
                "another-secret-0123456789abcdef",
                "alice",
                None,
                None,
                3600,
            )),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "tampered claims",
            Some(tampered(&good, &other_account)),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "expired",
            Some(mint(SECRET, "alice", None, None, -120)),
            Expect::Refused("TOKEN_EXPIRED"),
        ),
        case(
            "not yet valid (nbf)",
            Some(keys::hs256_token(
                SECRET.as_bytes(),
                &json!({"sub": "alice", "exp": now + 3600, "nbf": now + 1800}),
            )),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "alg none",
            Some(keys::alg_none_token(&claims("alice"))),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "no exp",
            Some(keys::hs256_token(
                SECRET.as_bytes(),
                &json!({"sub": "alice"}),
            )),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "no sub",
            Some(keys::hs256_token(
                SECRET.as_bytes(),
                &json!({"exp": now + 3600}),
            )),
            Expect::Refused("UNAUTHORIZED"),
        ),
    ];
    // `?token=` in the query string works as well as `auth.token`.
    let plan = Plan::new(&stack.gateway.http_url())
        .query("token", &good)
        .transports(&["websocket"])
        .connected()
        .subscribe(&["quotes"])
        .wait_for("quotes", WAIT_MS);
    let by_query = SioClient::node(&plan);
    run_cases(&stack.gateway, &cases, |c| {
        matches!(c.name.as_str(), "valid" | "none" | "expired")
    });
    by_query.finish(WAIT).assert_completed();
}

/// A NATS server, a simulating ingestor and a gateway that verifies tokens
/// with the public key(s) in `key_file` (no `JWT_SECRET` at all).
struct KeyStack {
    gateway: Gateway,
    _ingestor: Ingestor,
    _nats: NatsServer,
}

fn key_stack(key_file: &std::path::Path, extra_env: &[(&str, &str)]) -> KeyStack {
    let nats = NatsServer::start();
    let url = nats.url();
    let key_file = key_file.to_str().expect("utf-8 path");
    let mut env = vec![
        ("NATS_URL", url.as_str()),
        ("JWT_PUBLIC_KEY_FILE", key_file),
    ];
    env.extend_from_slice(extra_env);
    let gateway = Gateway::start(&env, false);
    let ingestor = Ingestor::sim(&url, "demo", e2e_tests::BUSY_SIM);
    KeyStack {
        gateway,
        _ingestor: ingestor,
        _nats: nats,
    }
}

fn key_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("e2e-keys-")
        .tempdir()
        .expect("temp dir")
}

/// `JWT_PUBLIC_KEY_FILE` as a PEM file of `kind` (RS256 with an RSA key,
/// ES256 with an EC P-256 key). A token signed by another key of the same
/// kind, a token of the other algorithm, an HS256 token "signed" with the
/// public key's PEM text (algorithm confusion) and `alg: none` are refused.
fn pem_public_key(kind: KeyKind) {
    let dir = key_dir();
    let key = KeyPair::generate(dir.path(), kind, "good");
    let stranger = KeyPair::generate(dir.path(), kind, "stranger");
    let other_kind = match kind {
        KeyKind::Rsa => KeyKind::Ec,
        KeyKind::Ec => KeyKind::Rsa,
    };
    let other = KeyPair::generate(dir.path(), other_kind, "other");
    let public_pem = std::fs::read(&key.public_pem).expect("public key");
    let stack = key_stack(&key.public_pem, &[]);
    let cases = vec![
        case(
            &format!("{kind:?} valid"),
            Some(key.token("alice", None, 3600)),
            Expect::Accepted,
        ),
        case(
            &format!("{kind:?} signed by another key"),
            Some(stranger.token("alice", None, 3600)),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            &format!("{other_kind:?} token on a {kind:?} gateway"),
            Some(other.token("alice", None, 3600)),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            &format!("{kind:?} expired"),
            Some(key.token("alice", None, -120)),
            Expect::Refused("TOKEN_EXPIRED"),
        ),
        case(
            "HS256 signed with the public key (algorithm confusion)",
            Some(keys::hs256_token(&public_pem, &claims("alice"))),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "HS256 with the e2e secret",
            Some(mint(SECRET, "alice", None, None, 3600)),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "alg none",
            Some(keys::alg_none_token(&claims("alice"))),
            Expect::Refused("UNAUTHORIZED"),
        ),
    ];
    run_cases(&stack.gateway, &cases, |c| c.expect == Expect::Accepted);
}

#[test]
fn rs256_with_a_pem_public_key() {
    pem_public_key(KeyKind::Rsa);
}

#[test]
fn es256_with_a_pem_public_key() {
    pem_public_key(KeyKind::Ec);
}

/// `JWT_PUBLIC_KEY_FILE` as a JWKS file holding an RSA and an EC key: each
/// token is verified with the key its `kid` names. No `kid`, an unknown
/// `kid`, or a `kid` naming the other key are refused.
#[test]
fn rs256_and_es256_with_a_jwks_file() {
    let dir = key_dir();
    let rsa = KeyPair::generate(dir.path(), KeyKind::Rsa, "rsa");
    let ec = KeyPair::generate(dir.path(), KeyKind::Ec, "ec");
    let jwks = keys::write_jwks(
        &dir.path().join("jwks.json"),
        &[rsa.jwk("rsa-1"), ec.jwk("ec-1")],
    );
    let stack = key_stack(&jwks, &[]);
    let cases = vec![
        case(
            "RS256 kid rsa-1",
            Some(rsa.token("alice", Some("rsa-1"), 3600)),
            Expect::Accepted,
        ),
        case(
            "ES256 kid ec-1",
            Some(ec.token("alice", Some("ec-1"), 3600)),
            Expect::Accepted,
        ),
        case(
            "RS256 without kid",
            Some(rsa.token("alice", None, 3600)),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "RS256 unknown kid",
            Some(rsa.token("alice", Some("nope"), 3600)),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "RS256 with the EC key's kid",
            Some(rsa.token("alice", Some("ec-1"), 3600)),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "ES256 with the RSA key's kid",
            Some(ec.token("alice", Some("rsa-1"), 3600)),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "ES256 expired",
            Some(ec.token("alice", Some("ec-1"), -120)),
            Expect::Refused("TOKEN_EXPIRED"),
        ),
    ];
    run_cases(&stack.gateway, &cases, |c| c.expect == Expect::Accepted);
}

/// With `JWT_ISSUER` and `JWT_AUDIENCE` set, a token needs both, with the
/// configured values.
#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let stack = SimStack::start(
        "demo",
        e2e_tests::BUSY_SIM,
        &[
            ("JWT_ISSUER", "auth.example"),
            ("JWT_AUDIENCE", "dashboards"),
        ],
    );
    let token = |iss: Option<&str>, aud: Option<&str>| {
        let mut c = claims("alice");
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            c["aud"] = json!(aud);
        }
        Some(keys::hs256_token(SECRET.as_bytes(), &c))
    };
    let cases = vec![
        case(
            "right iss and aud",
            token(Some("auth.example"), Some("dashboards")),
            Expect::Accepted,
        ),
        case(
            "no iss",
            token(None, Some("dashboards")),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "no aud",
            token(Some("auth.example"), None),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "wrong iss",
            token(Some("evil.example"), Some("dashboards")),
            Expect::Refused("UNAUTHORIZED"),
        ),
        case(
            "wrong aud",
            token(Some("auth.example"), Some("admin")),
            Expect::Refused("UNAUTHORIZED"),
        ),
    ];
    run_cases(&stack.gateway, &cases, |_| false);
}

/// Account A's ingestor quotes only the first three built-in symbols;
/// account B's quotes all twelve. Both publish into the same NATS.
const A_SYMBOLS: [&str; 3] = ["EURUSD", "GBPUSD", "USDJPY"];

/// [`BUSY_SIM`]'s rates, with a seed and a symbol count of our own.
fn busy_sim(seed: &str, symbols: &str) -> Vec<String> {
    let mut args: Vec<String> = BUSY_SIM.iter().map(|a| a.to_string()).collect();
    let at = args
        .iter()
        .position(|a| a == "--seed")
        .expect("BUSY_SIM sets a seed");
    args[at + 1] = seed.to_owned();
    args.extend(["--symbols".to_owned(), symbols.to_owned()]);
    args
}

/// Every symbol, ticket and `seq` a client's data events carry.
#[derive(Default, Debug)]
struct Seen {
    symbols: BTreeSet<String>,
    tickets: BTreeSet<u64>,
    seqs: BTreeSet<u64>,
}

impl Seen {
    fn add(&mut self, event: &str, data: &Value) {
        let mut symbol = |v: &Value| {
            if let Some(s) = v.as_str() {
                self.symbols.insert(s.to_owned());
            }
        };
        match event {
            "quotes" | "signals_update" => symbol(&data["symbol"]),
            "logs_update" => symbol(&data["extra"]["symbol"]),
            "positions_update" | "orders_update" => {
                for item in data.as_array().into_iter().flatten() {
                    symbol(&item["symbol"]);
                    if let Some(t) = item["ticket"].as_u64() {
                        self.tickets.insert(t);
                    }
                }
            }
            _ => {}
        }
        if let Some(seq) = data["seq"].as_u64() {
            self.seqs.insert(seq);
        }
    }
}

/// How many of each data event every client waits for.
const PER_EVENT: usize = 4;

/// Two ingestors (accounts `alpha` and `bravo`) publish into one NATS; one
/// gateway relays both. A socket.io-client with an `alpha` token (and a
/// plain WebSocket with a token without `account`, which means the
/// gateway's `DEFAULT_ACCOUNT=alpha`) subscribed to all six channels gets
/// only alpha's data: only alpha's symbols, no ticket and no log/signal
/// `seq` that a `bravo` client got, not one mention of a bravo-only symbol
/// or of the account name in any byte it received.
#[test]
fn a_token_for_one_account_never_sees_another_accounts_data() {
    let nats = NatsServer::start();
    let url = nats.url();
    let gateway = Gateway::start(
        &[
            ("NATS_URL", &url),
            ("JWT_SECRET", SECRET),
            ("DEFAULT_ACCOUNT", "alpha"),
        ],
        false,
    );
    let a_args = busy_sim("11", "3");
    let b_args = busy_sim("22", "12");
    let a_ingestor = Ingestor::sim(
        &url,
        "alpha",
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let b_ingestor = Ingestor::sim(
        &url,
        "bravo",
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    let token_a = mint(SECRET, "alice", Some("alpha"), None, 3600);
    let token_b = mint(SECRET, "bob", Some("bravo"), None, 3600);
    let token_default = mint(SECRET, "dora", None, None, 3600);
    let plan = Plan::new(&gateway.http_url())
        .token(&token_a)
        .transports(&["websocket"])
        .connected()
        .subscribe(&CHANNELS)
        .wait_stdin();
    let mut a = SioClient::node(&plan);
    let ws_url = |token: &str| format!("{}/ws?token={token}", gateway.ws_url());
    let mut b = WsClient::connect(&ws_url(&token_b)).expect("bravo websocket");
    let mut d = WsClient::connect(&ws_url(&token_default)).expect("default websocket");
    for ws in [&mut b, &mut d] {
        ws.wait_event("connected", WAIT);
        ws.send_event("subscribe", json!({ "channels": CHANNELS }));
        ws.wait_event("subscribed", WAIT);
    }
    for event in DATA_EVENTS {
        for _ in 0..PER_EVENT {
            a.wait_event(event, WAIT);
            b.wait_event(event, WAIT);
            d.wait_event(event, WAIT);
        }
    }
    a.release();
    let t = a.finish(WAIT);
    t.assert_completed();

    let mut seen_a = Seen::default();
    for line in &t.lines {
        seen_a.add(&line.event, &line.data);
    }
    let mut seen_b = Seen::default();
    for (_, event, data) in b.events() {
        seen_b.add(event, data);
    }
    let mut seen_d = Seen::default();
    for (_, event, data) in d.events() {
        seen_d.add(event, data);
    }

    // The test means something only if bravo's data was flowing.
    let a_symbols: BTreeSet<String> = A_SYMBOLS.map(str::to_owned).into();
    let b_only: Vec<&String> = seen_b.symbols.difference(&a_symbols).collect();
    assert!(
        !b_only.is_empty(),
        "the bravo client saw no bravo-only symbol: {seen_b:?}"
    );
    assert!(!seen_b.tickets.is_empty() && !seen_b.seqs.is_empty());

    let all_b_only: Vec<&str> = SIM_SYMBOLS
        .into_iter()
        .filter(|s| !A_SYMBOLS.contains(s))
        .collect();
    for (who, seen, raw) in [
        ("alpha token (socket.io)", &seen_a, t.raw()),
        ("default-account token (ws)", &seen_d, ws_text(&d)),
    ] {
        assert!(
            seen.symbols.is_subset(&a_symbols),
            "{who} saw symbols outside alpha's {A_SYMBOLS:?}: {:?}",
            seen.symbols
        );
        assert!(
            !seen.tickets.is_empty() && !seen.seqs.is_empty(),
            "{seen:?}"
        );
        let shared: Vec<_> = seen.tickets.intersection(&seen_b.tickets).collect();
        assert!(shared.is_empty(), "{who} saw bravo's tickets {shared:?}");
        let shared: Vec<_> = seen.seqs.intersection(&seen_b.seqs).collect();
        assert!(
            shared.is_empty(),
            "{who} saw bravo's log/signal seqs {shared:?}"
        );
        for needle in all_b_only.iter().copied().chain(["bravo"]) {
            assert!(
                !raw.contains(needle),
                "{who} received bytes mentioning {needle:?}"
            );
        }
    }
    for ingestor in [&a_ingestor, &b_ingestor] {
        ingestor.assert_no_panic();
    }
    gateway.assert_no_panic();
}

/// Every symbol name the simulator knows (`ingestor/src/sim/market.rs`).
const SIM_SYMBOLS: [&str; 15] = [
    "EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "AUDUSD", "USDCHF", "USDCAD", "NZDUSD", "EURJPY",
    "GBPJPY", "US30", "BTCUSD", "GER40", "EURGBP", "XAGUSD",
];

/// Everything a plain WebSocket client received, as JSON text.
fn ws_text(ws: &WsClient) -> String {
    ws.seen
        .iter()
        .map(|(_, m)| match m {
            WsMsg::Event { event, data } => format!("{event} {data}\n"),
            other => format!("{other:?}\n"),
        })
        .collect()
}

/// A token whose `channels` claim allows only quotes and account: asking
/// for all six joins those two, answers `FORBIDDEN_CHANNEL` once for each
/// of the other four (the ack carries the same `subscribed` payload), and
/// no event of a forbidden channel ever arrives. The plain WebSocket gets
/// the same answer.
#[test]
fn channel_allow_list_forbids_the_other_channels() {
    let stack = SimStack::busy("demo");
    let allowed = ["quotes", "account"];
    let token = mint(SECRET, "carol", None, Some(&allowed), 3600);
    let plan = Plan::new(&stack.gateway.http_url())
        .token(&token)
        .transports(&["websocket"])
        .connected()
        .subscribe(&CHANNELS)
        .wait_for("ack:subscribe", WAIT_MS)
        .wait_stdin();
    let mut client = SioClient::node(&plan);
    client.wait_event("subscribed", WAIT);
    // Positions, orders and logs come several times a second: over this
    // many account updates, a leak would show.
    for _ in 0..6 {
        client.wait_event("account_update", WAIT);
        client.wait_event("quotes", WAIT);
    }
    client.release();
    let t = client.finish(WAIT);
    t.assert_completed();
    let subscribed = &t.first("subscribed").data;
    assert_eq!(*subscribed, json!({ "channels": allowed }), "{}", t.dump());
    assert_eq!(t.first("ack:subscribe").data, *subscribed);
    let errors = t.all("error");
    assert_eq!(errors.len(), 4, "{}", t.dump());
    for e in errors {
        assert_error(&e.data, "FORBIDDEN_CHANNEL");
    }
    for event in [
        "positions_update",
        "orders_update",
        "logs_update",
        "signals_update",
    ] {
        assert_eq!(
            t.count(event),
            0,
            "forbidden `{event}` arrived:\n{}",
            t.dump()
        );
    }

    let mut ws = WsClient::connect(&format!("{}/ws?token={token}", stack.gateway.ws_url()))
        .expect("websocket");
    ws.wait_event("connected", WAIT);
    ws.send_event("subscribe", json!({"channels": ["logs", "account"]}));
    assert_error(&ws.wait_event("error", WAIT), "FORBIDDEN_CHANNEL");
    assert_eq!(
        ws.wait_event("subscribed", WAIT),
        json!({"channels": ["account"]})
    );
    ws.wait_event("account_update", WAIT);
    stack.gateway.assert_no_panic();
}
