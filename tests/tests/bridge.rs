//! The real-terminal path end to end: fake terminals speaking
//! `ingestor/mql5/PROTOCOL.md` → `ingestor bridge` → `nats-server -js` →
//! `gateway` → `socket.io-client` dashboards.
//!
//! Shows that several terminals on different accounts and trade-server
//! time zones (UTC+2, UTC+3, a DST change mid-session) reach dashboards in
//! true UTC; that every refusal closes only its own connection and
//! publishes nothing; that a pinned key cannot publish for another account;
//! that with NATS paused the bridge keeps draining the terminal's socket
//! and dashboards get the latest state afterwards; and that a silent
//! terminal is declared down within three heartbeats.

use e2e_tests::bridge::{bridge_command, rfc3339_ms, BridgeIngestor, FakeTerminal};
use e2e_tests::{mint, now_ms, Gateway, NatsServer, Plan, Proc, SioClient, SECRET};
use serde_json::Value;
use std::time::{Duration, Instant};

const KEY: &str = "e2e-bridge-shared-key-0123456789";
const KEY_A: &str = "e2e-key-of-terminal-A-000000";
const KEY_B: &str = "e2e-key-of-terminal-B-000000";
const WAIT: Duration = Duration::from_secs(20);
const H: i64 = 3_600_000;

/// NATS, a gateway and `ingestor bridge` with `env`.
fn stack(env: &[(&str, &str)]) -> (NatsServer, Gateway, BridgeIngestor) {
    let nats = NatsServer::start();
    let url = nats.url();
    let gateway = Gateway::start(&[("NATS_URL", &url), ("JWT_SECRET", SECRET)], false);
    let ingestor = BridgeIngestor::start(&url, env);
    (nats, gateway, ingestor)
}

/// A dashboard of `account`, subscribed to `channels`, holding on.
fn dashboard(gateway: &Gateway, account: &str, channels: &[&str]) -> SioClient {
    let token = mint(SECRET, "trader", Some(account), None, 3600);
    let plan = Plan::new(&gateway.http_url())
        .token(&token)
        .connected()
        .subscribe(channels)
        .wait_stdin();
    let mut client = SioClient::node(&plan);
    client.wait_event("subscribed", WAIT);
    client
}

/// The first `event` seen so far, or within [`WAIT`], whose data
/// satisfies `pred` (events of other kinds may come in between, in any
/// order); panics with what was seen.
fn wait_for(
    client: &mut SioClient,
    event: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(l) = client
            .lines()
            .iter()
            .find(|l| l.event == event && pred(&l.data))
        {
            return l.data.clone();
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = client
                .lines()
                .iter()
                .rev()
                .take(15)
                .map(|l| l.raw.clone())
                .collect();
            panic!(
                "no `{event}` with {what} within {WAIT:?}; last lines:\n{}",
                seen.join("\n")
            );
        }
        // Pumps the client's output for a moment.
        client.try_wait_event("(none)", Duration::from_millis(50));
    }
}

#[test]
fn terminals_on_utc2_and_utc3_reach_dashboards_in_true_utc_across_dst() {
    let (_nats, gateway, ingestor) = stack(&[("BRIDGE_KEY", KEY)]);
    let channels = ["quotes", "positions", "orders", "logs"];
    let mut dash2 = dashboard(&gateway, "acct-utc2", &channels);
    let mut dash3 = dashboard(&gateway, "acct-utc3", &channels);

    let (mut t2, w2) = FakeTerminal::connect(ingestor.addr, Some(KEY), "acct-utc2", 7200, 60_000);
    let (mut t3, w3) = FakeTerminal::connect(ingestor.addr, Some(KEY), "acct-utc3", 10_800, 60_000);
    assert_eq!(
        (w2["type"].as_str(), w2["account"].as_str()),
        (Some("welcome"), Some("acct-utc2")),
        "{w2}"
    );
    assert_eq!(w3["account"], "acct-utc3", "{w3}");

    // Exact milliseconds: the ingestor must subtract exactly the offset.
    let now = now_ms();
    let opened = now - H;
    let setup = now - H / 2;
    for (t, symbol, ticket) in [(&mut t2, "EURUSD", 1u64), (&mut t3, "GBPUSD", 2)] {
        let lines = t.quote(symbol, 1.08512, 1.08524, now)
            + &t.positions(&[(ticket, symbol, opened, 5.0)])
            + &t.orders(ticket + 100, setup);
        t.send(&lines).unwrap();
    }
    for (dash, symbol) in [(&mut dash2, "EURUSD"), (&mut dash3, "GBPUSD")] {
        let q = wait_for(dash, "quotes", symbol, |q| q["symbol"] == symbol);
        assert_eq!(q["timestamp"], rfc3339_ms(now), "{q}");
        let p = wait_for(dash, "positions_update", "a position", |p| {
            p[0]["symbol"] == symbol
        });
        assert_eq!(p[0]["time"], rfc3339_ms(opened), "{p}");
        let o = wait_for(dash, "orders_update", "an order", |o| {
            o[0]["symbol"] == "GBPUSD"
        });
        assert_eq!(o[0]["time_setup"], rfc3339_ms(setup), "{o}");
    }

    // DST mid-session: the UTC+2 server moves to UTC+3. New ticks use the
    // new offset; the position opened before the change keeps its time.
    // The server stamped that position when it ran at UTC+2.
    let stamped_before = t2.positions(&[(1, "EURUSD", opened, 6.0)]);
    t2.dst(10_800).unwrap();
    let later = now_ms();
    let lines = t2.quote("EURUSD", 1.0860, 1.0861, later) + &stamped_before;
    t2.send(&lines).unwrap();
    let q = wait_for(&mut dash2, "quotes", "bid 1.086", |q| q["bid"] == 1.086);
    assert_eq!(q["timestamp"], rfc3339_ms(later), "{q}");
    let p = wait_for(&mut dash2, "positions_update", "profit 6", |p| {
        p[0]["profit"] == 6.0
    });
    assert_eq!(p[0]["time"], rfc3339_ms(opened), "{p}");

    // A terminal error reaches the account's dashboards (as a log entry
    // carrying the spec's error fields).
    t3.send("{\"type\":\"error\",\"error\":\"Failed to place order\",\"details\":\"GBPUSD BUY 1.00: No money\",\"code\":\"INSUFFICIENT_MARGIN\"}\n")
        .unwrap();
    let l = wait_for(&mut dash3, "logs_update", "the terminal error", |l| {
        l["extra"]["event"] == "error"
    });
    assert_eq!(
        (l["level"].as_str(), l["extra"]["code"].as_str()),
        (Some("ERROR"), Some("INSUFFICIENT_MARGIN")),
        "{l}"
    );

    // Each dashboard saw its own account only.
    let leaked = |dash: &mut SioClient, other: &str| {
        dash.lines()
            .iter()
            .any(|l| l.event == "quotes" && l.data["symbol"] == other)
    };
    assert!(!leaked(&mut dash2, "GBPUSD") && !leaked(&mut dash3, "EURUSD"));
    assert_eq!(ingestor.metric("ingestor_bridge_terminals"), 2.0);
    let health = e2e_tests::http::get(ingestor.http, "/health", &[]).json();
    assert_eq!(health["nats"], "up", "{health}");
    let offsets: Vec<i64> = health["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["gmt_offset_s"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [10_800, 10_800], "{health}");
    ingestor.assert_no_panic();
}

#[test]
fn every_refusal_closes_only_its_connection_and_publishes_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("bridge-keys");
    std::fs::write(
        &file,
        format!("# one key per terminal\nacct-A {KEY_A}\nacct-B {KEY_B}\n"),
    )
    .unwrap();
    let (_nats, gateway, ingestor) = stack(&[("BRIDGE_KEYS_FILE", file.to_str().unwrap())]);
    let mut dash_a = dashboard(&gateway, "acct-A", &["quotes", "positions"]);
    let mut dash_b = dashboard(&gateway, "acct-B", &["quotes", "positions"]);

    let (mut good, w) = FakeTerminal::connect(ingestor.addr, Some(KEY_A), "", 0, 60_000);
    assert_eq!(w["account"], "acct-A", "{w}");
    good.send(&good.quote("EURUSD", 1.1, 1.1002, now_ms()))
        .unwrap();
    wait_for(&mut dash_a, "quotes", "bid 1.1", |q| q["bid"] == 1.1);
    let published = ingestor.metric("ingestor_published_total");

    let evil = |t: &FakeTerminal| {
        t.quote("EVIL", 9.0, 9.1, now_ms()) + &t.positions(&[(666, "EVIL", now_ms(), 1.0)])
    };
    let refused = |t: &mut FakeTerminal, answer: Value, code: &str| {
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_str()),
            (Some("refused"), Some(code)),
            "{answer}"
        );
        assert!(
            t.closed_within(Duration::from_secs(5)),
            "{code}: connection left open"
        );
    };

    // A wrong key, no key, a key pinned to A asking for B.
    for (key, label, code) in [
        (Some("e2e-wrong-key-0000000000000"), "acct-A", "BAD_KEY"),
        (None, "acct-A", "NO_KEY"),
        (Some(KEY_A), "acct-B", "ACCOUNT_NOT_ALLOWED"),
    ] {
        let (mut t, answer) = FakeTerminal::connect(ingestor.addr, key, label, 0, 60_000);
        let _ = t.send(&evil(&t));
        refused(&mut t, answer, code);
    }
    // Data before hello.
    let mut t = FakeTerminal::raw(ingestor.addr, 0);
    t.send(&(evil(&t) + "{\"type\":\"hello\"}\n")).unwrap();
    let answer = t.answer(WAIT).unwrap_or_default();
    refused(&mut t, answer, "NOT_HELLO");
    // A second hello (trying to move the stream to A).
    let (mut t, w) = FakeTerminal::connect(ingestor.addr, Some(KEY_B), "", 0, 60_000);
    assert_eq!(w["account"], "acct-B");
    let second =
        format!("{{\"type\":\"hello\",\"protocol\":2,\"key\":\"{KEY_A}\",\"gmt_offset_s\":0}}\n");
    t.send(&(second + &evil(&t))).unwrap();
    let answer = t.answer(WAIT).unwrap_or_default();
    refused(&mut t, answer, "SECOND_HELLO");
    // A 20 MB line: closed once the limit (1 MiB) is passed; the write
    // fails when the bridge closes, and the answer may be lost to the reset.
    let (mut t, w) = FakeTerminal::connect(ingestor.addr, Some(KEY_B), "", 0, 60_000);
    assert_eq!(w["type"], "welcome");
    let mut big = vec![b'x'; 20 * 1024 * 1024];
    big.push(b'\n');
    assert!(t.send_bytes(&big).is_err(), "20 MB went through");
    if let Some(answer) = t.answer(Duration::from_secs(2)) {
        assert_eq!(answer["code"], "LINE_TOO_LONG", "{answer}");
    }
    assert!(t.closed_within(Duration::from_secs(5)));

    // The good terminal never noticed, and nothing else was published.
    good.send(&good.quote("EURUSD", 1.2, 1.2002, now_ms()))
        .unwrap();
    wait_for(&mut dash_a, "quotes", "bid 1.2", |q| q["bid"] == 1.2);
    assert_eq!(ingestor.metric("ingestor_published_total"), published + 1.0);
    for code in [
        "BAD_KEY",
        "NO_KEY",
        "ACCOUNT_NOT_ALLOWED",
        "NOT_HELLO",
        "SECOND_HELLO",
        "LINE_TOO_LONG",
    ] {
        let n = ingestor.metric(&format!(
            "ingestor_bridge_refused_total{{reason=\"{code}\"}}"
        ));
        assert_eq!(n, 1.0, "{code}");
    }
    let saw_evil = |d: &mut SioClient| d.lines().iter().any(|l| l.raw.contains("EVIL"));
    assert!(!saw_evil(&mut dash_a) && !saw_evil(&mut dash_b));
    assert!(
        ingestor.stderr().contains("code=\"BAD_KEY\"") || ingestor.stderr().contains("BAD_KEY")
    );
    assert!(!ingestor.stderr().contains(KEY_A), "a key reached the log");
    ingestor.assert_no_panic();
}

#[test]
fn with_nats_paused_the_socket_keeps_draining_and_dashboards_get_the_latest_state() {
    let (mut nats, gateway, ingestor) = stack(&[("BRIDGE_KEY", KEY)]);
    let mut dash = dashboard(&gateway, "acct-P", &["quotes", "positions"]);
    let (mut t, w) = FakeTerminal::connect(ingestor.addr, Some(KEY), "acct-P", 7200, 60_000);
    assert_eq!(w["type"], "welcome", "{w}");
    t.small_send_buffer(16 * 1024);
    t.send(&t.quote("EURUSD", 1.0, 1.0001, now_ms())).unwrap();
    wait_for(&mut dash, "quotes", "the first quote", |q| q["bid"] == 1.0);
    let lines_before = ingestor.metric("ingestor_bridge_lines_total");

    let pid = nats.proc().expect("nats runs").pid();
    nats.proc().unwrap().signal(libc::SIGSTOP);
    let paused = Instant::now();
    let (mut sent_lines, mut sent_bytes, mut i) = (0u64, 0usize, 0u64);
    let positions: Vec<(u64, &str, i64, f64)> = (0..20)
        .map(|k| (1000 + k, "EURUSD", now_ms() - H, 0.0))
        .collect();
    // Stream for 4 s; every write has a 3 s deadline.
    while paused.elapsed() < Duration::from_secs(4) {
        i += 1;
        let mut batch = String::new();
        for s in ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"] {
            batch += &t.quote(s, 1.0 + i as f64 * 1e-5, 1.0002 + i as f64 * 1e-5, now_ms());
        }
        let ps: Vec<_> = positions
            .iter()
            .map(|p| (p.0, p.1, p.2, i as f64))
            .collect();
        batch += &t.positions(&ps);
        t.send(&batch).unwrap_or_else(|e| {
            panic!("the bridge stopped reading while NATS was paused: {e} after {sent_bytes} bytes")
        });
        sent_lines += 5;
        sent_bytes += batch.len();
    }
    // Still paused: every line sent has been read.
    let read_all = e2e_tests::eventually(Duration::from_secs(3), || {
        (ingestor.metric("ingestor_bridge_lines_total") >= lines_before + sent_lines as f64)
            .then_some(())
    });
    assert!(
        read_all.is_some(),
        "the bridge did not read all {sent_lines} lines while NATS was paused"
    );
    eprintln!(
        "NATS paused: {sent_lines} lines, {sent_bytes} bytes sent and read in {:?}",
        paused.elapsed()
    );
    while paused.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on the nats-server child we started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGCONT);
    }

    // The latest state after NATS returns, then no older value.
    let final_bid = 2.5;
    let ps: Vec<_> = positions
        .iter()
        .map(|p| (p.0, p.1, p.2, 99_999.0))
        .collect();
    t.send(&(t.quote("EURUSD", final_bid, final_bid + 0.0002, now_ms()) + &t.positions(&ps)))
        .unwrap();
    wait_for(&mut dash, "quotes", "the final bid", |q| {
        q["symbol"] == "EURUSD" && q["bid"] == final_bid
    });
    wait_for(&mut dash, "positions_update", "the final positions", |p| {
        p[0]["profit"] == 99_999.0
    });
    // A dashboard arriving now gets the final values as its snapshot.
    let mut late = dashboard(&gateway, "acct-P", &["quotes", "positions"]);
    let q = wait_for(&mut late, "quotes", "EURUSD", |q| q["symbol"] == "EURUSD");
    assert_eq!(q["bid"], final_bid, "stale quote in the snapshot: {q}");
    let p = late.wait_event("positions_update", WAIT);
    assert_eq!(
        p.data[0]["profit"], 99_999.0,
        "stale positions in the snapshot"
    );
    assert!(ingestor.metric("ingestor_bridge_state_superseded_total") > 0.0);
    ingestor.assert_no_panic();
}

#[test]
fn a_silent_terminal_is_declared_down_within_three_heartbeats() {
    let (_nats, gateway, ingestor) = stack(&[("BRIDGE_KEY", KEY)]);
    let mut dash = dashboard(&gateway, "acct-S", &["logs"]);
    let (mut t, _) = FakeTerminal::connect(ingestor.addr, Some(KEY), "acct-S", 0, 300);
    t.heartbeat().unwrap();
    let silent_from = Instant::now();
    let l = wait_for(&mut dash, "logs_update", "terminal down", |l| {
        l["message"]
            .as_str()
            .unwrap_or_default()
            .contains("terminal down")
    });
    assert_eq!(l["level"], "ERROR", "{l}");
    // Three heartbeats (900 ms) and the delivery: well under 5 s.
    assert!(
        silent_from.elapsed() < Duration::from_secs(5),
        "{:?}",
        silent_from.elapsed()
    );
    assert_eq!(t.answer(WAIT).unwrap_or_default()["code"], "SILENT");
    assert!(t.closed_within(WAIT));
    assert_eq!(ingestor.metric("ingestor_bridge_terminals_down_total"), 1.0);
    assert_eq!(ingestor.metric("ingestor_bridge_terminals"), 0.0);
}

#[test]
fn the_bridge_refuses_to_start_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = bridge_command(dir.path(), &[("NATS_URL", "nats://127.0.0.1:1")]);
    let mut proc = Proc::spawn("ingestor bridge", cmd, &dir.path().join("stderr.log"));
    let status = proc.wait_exit(Duration::from_secs(20)).expect("it exits");
    assert!(!status.success());
    let err = proc.stderr();
    assert!(
        err.contains("BRIDGE_KEY") && err.contains("BRIDGE_KEYS_FILE"),
        "{err}"
    );
    assert!(proc.stdout_lines().iter().all(|l| !l.contains("listening")));
}
