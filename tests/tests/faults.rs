//! Faults under three gateway replicas behind the real nginx: NATS and
//! Redis killed and restarted mid-stream, and a client that stops reading.
//! Each test runs its own nats-server, redis-server, replicas and nginx.

use e2e_tests::cluster::{self, metric, percentile, rss_kib, Cluster};
use e2e_tests::{eventually, Plan, SioClient, WsClient, WsMsg};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Consumes every `event` line `client` has seen so far.
fn skip_seen(client: &mut SioClient, event: &str) {
    while client.try_wait_event(event, Duration::ZERO).is_some() {}
}

/// Consumes `event` lines until one for which `pred` holds.
fn wait_until(
    client: &mut SioClient,
    event: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = client.wait_event(event, left);
        if pred(&line.data) {
            return line.data;
        }
    }
}

/// A dashboard that does not reconnect by itself, so any disconnect shows.
fn steady_plan(cluster: &Cluster, user: &str, transport: &str) -> Plan {
    Plan::new(&cluster.nginx.http_url())
        .token(&cluster.token(user))
        .transports(&[transport])
        .connected()
        .subscribe(&["quotes", "logs"])
        .wait_stdin()
}

fn assert_never_disconnected(clients: Vec<SioClient>) {
    for c in clients {
        let t = c.finish(Duration::from_secs(20));
        t.assert_completed();
        for event in ["disconnected", "connect_error"] {
            assert_eq!(t.count(event), 0, "a client saw `{event}`:\n{}", t.dump());
        }
        // The only disconnect is the client's own, at the end of its plan.
        let dropped = t
            .all("disconnect")
            .iter()
            .any(|l| l.data["reason"] != "io client disconnect");
        assert!(!dropped, "a client was disconnected:\n{}", t.dump());
        assert_eq!(t.count("connected"), 1, "{}", t.dump());
    }
}

/// One steady client over websocket and one over polling, each seen
/// receiving logs and quotes.
fn steady_clients(cluster: &Cluster, tag: &str) -> Vec<SioClient> {
    let mut clients: Vec<SioClient> = ["websocket", "polling"]
        .iter()
        .map(|t| SioClient::node(&steady_plan(cluster, &format!("{tag}-{t}"), t)))
        .collect();
    for c in &mut clients {
        c.wait_event("subscribed", Duration::from_secs(20));
        c.wait_event("logs_update", Duration::from_secs(10));
        c.wait_event("quotes", Duration::from_secs(10));
    }
    clients
}

fn max_log_seq(client: &mut SioClient) -> u64 {
    cluster::max_seq(client.lines(), &["logs_update"])
}

/// NATS is SIGKILLed and started again (same port, same store) while
/// clients over websocket and polling receive quotes and logs: no replica
/// exits, no client is disconnected, every replica's `/health/ready` is 503
/// with `"bus": "down"` while NATS is away, and new logs and quotes reach
/// every client within seconds of the restart.
#[test]
fn nats_restart_is_a_pause() {
    let mut cluster = Cluster::start("70000011", 3, &[]);
    let _ingestor = cluster.ingest(&[
        "--logs-per-sec",
        "50",
        "--quotes-per-sec",
        "50",
        "--seed",
        "21",
    ]);
    let mut clients = steady_clients(&cluster, "nats");

    cluster.nats.kill();
    let down = eventually(Duration::from_secs(15), || {
        let all = cluster.readiness();
        let down = all.len() == 3
            && all
                .iter()
                .all(|(_, status, body)| *status == 503 && body["bus"] == "down");
        down.then_some(all)
    });
    assert!(
        down.is_some(),
        "readiness did not report NATS down: {:?}",
        cluster.readiness()
    );
    // Through nginx: 503, since no replica is ready.
    let through = e2e_tests::http::get(cluster.nginx.addr(), "/health/ready", &[]);
    assert_eq!(through.status, 503, "{through:?}");
    let before: Vec<u64> = clients.iter_mut().map(max_log_seq).collect();
    for c in &mut clients {
        skip_seen(c, "quotes");
    }

    cluster.nats.restart();
    let restarted = Instant::now();
    eventually(Duration::from_secs(20), || {
        let all = cluster.readiness();
        (all.len() == 3 && all.iter().all(|(_, status, _)| *status == 200)).then_some(())
    })
    .unwrap_or_else(|| panic!("replicas not ready again: {:?}", cluster.readiness()));
    let through = e2e_tests::http::get(cluster.nginx.addr(), "/health/ready", &[]);
    assert_eq!(through.status, 200, "{through:?}");
    for (c, before) in clients.iter_mut().zip(before) {
        wait_until(c, "logs_update", Duration::from_secs(20), |d| {
            d["seq"].as_u64().unwrap_or(0) > before
        });
        c.wait_event("quotes", Duration::from_secs(10));
    }
    println!(
        "NATS restarted: replicas ready and new logs and quotes at every client {:?} after the restart",
        restarted.elapsed()
    );
    for c in &mut clients {
        c.release();
    }
    assert_never_disconnected(clients);
    cluster.assert_replicas_alive(&[]);
}

/// Redis is SIGKILLed and started again while clients receive data: no
/// replica exits, no client is disconnected, data keeps flowing, readiness
/// stays 200 but reports `"redis": "down"` while Redis is away, a new
/// client is still accepted through nginx meanwhile, and once Redis is back
/// sessions are stored there again.
#[test]
fn redis_restart_is_survived() {
    let mut cluster = Cluster::start("70000012", 3, &[]);
    let _ingestor = cluster.ingest(&[
        "--logs-per-sec",
        "50",
        "--quotes-per-sec",
        "50",
        "--seed",
        "22",
    ]);
    let mut clients = steady_clients(&cluster, "redis");

    cluster.redis.kill();
    eventually(Duration::from_secs(15), || {
        let all = cluster.readiness();
        let reported = all.len() == 3
            && all
                .iter()
                .all(|(_, status, body)| *status == 200 && body["redis"] == "down");
        reported.then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "readiness did not report Redis down: {:?}",
            cluster.readiness()
        )
    });
    for c in &mut clients {
        let before = max_log_seq(c);
        wait_until(c, "logs_update", Duration::from_secs(10), |d| {
            d["seq"].as_u64().unwrap_or(0) > before
        });
    }
    // A new dashboard is let in without Redis (no resume possible meanwhile).
    let patience = Duration::from_secs(10);
    let base = cluster.nginx.ws_url();
    let mut ws = WsClient::dashboard(&base, &cluster.token("redis-newcomer"), None, patience);
    let hello = ws.first_event("connected").expect("connected");
    assert_eq!(hello["resumed"], false, "{hello}");
    ws.wait_event("logs_update", patience);
    // One that asks to resume meanwhile gets a new session, and is told
    // why rather than left to guess (the notice comes before `subscribed`,
    // which the dashboard has waited for).
    let asked = "0123456789abcdef0123456789abcdef";
    let resumer = WsClient::dashboard(
        &base,
        &cluster.token("redis-resumer"),
        Some(asked),
        patience,
    );
    let hello = resumer.first_event("connected").expect("connected");
    assert_eq!(hello["resumed"], false, "{hello}");
    assert_ne!(hello["session"], asked);
    let notice = resumer.first_event("error").expect("a notice");
    assert_eq!(notice["code"], "UPSTREAM_UNAVAILABLE", "{notice}");

    cluster.redis.restart();
    let restarted = Instant::now();
    eventually(Duration::from_secs(20), || {
        let all = cluster.readiness();
        (all.len() == 3 && all.iter().all(|(_, _, body)| body["redis"] == "up")).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "readiness did not report Redis up: {:?}",
            cluster.readiness()
        )
    });
    // Checkpoints reach the new Redis: live sessions become resumable again.
    let session = hello["session"].as_str().expect("session").to_owned();
    eventually(Duration::from_secs(20), || cluster.stored_session(&session))
        .unwrap_or_else(|| panic!("session {session} not stored after Redis came back"));
    println!(
        "Redis restarted: reported up and sessions stored again {:?} after the restart",
        restarted.elapsed()
    );
    for c in &mut clients {
        let before = max_log_seq(c);
        wait_until(c, "logs_update", Duration::from_secs(10), |d| {
            d["seq"].as_u64().unwrap_or(0) > before
        });
        c.release();
    }
    assert!(!ws.is_closed(), "{}", ws.dump());
    assert_never_disconnected(clients);
    cluster.assert_replicas_alive(&[]);
}

/// Milliseconds from a payload's `timestamp` to `received_at` (epoch ms).
fn delay_ms(data: &Value, received_at: f64) -> Option<f64> {
    let ts = chrono::DateTime::parse_from_rfc3339(data["timestamp"].as_str()?).ok()?;
    Some(received_at - ts.timestamp_millis() as f64)
}

/// (p50, p99, max) of payload-to-receipt delays, and the longest gap
/// between two receipts, all in ms.
fn delays(received: &[(f64, &Value)]) -> (f64, f64, f64, f64) {
    let mut d: Vec<f64> = received
        .iter()
        .filter_map(|(at, data)| delay_ms(data, *at))
        .collect();
    let gap = received
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(0.0, f64::max);
    let max = d.iter().copied().fold(0.0, f64::max);
    (percentile(&mut d, 50.0), percentile(&mut d, 99.0), max, gap)
}

/// While ~1,000 quotes/s and 200 logs/s flow, a plain WebSocket client
/// connects through nginx, subscribes to
/// everything and stops reading. Its replica stays within a bounded
/// memory, cuts it off as a slow consumer (counted at /metrics), and when
/// it reads again it finds what was already written, then
/// `disconnected {reconnect: true}`, then the close. Meanwhile clients on
/// the same replica (socket.io-client and a plain WebSocket, through
/// nginx) keep receiving quotes and signals with low delay. They are not
/// on logs: on a machine loaded enough to hold them 5 s behind they would
/// rightly be cut off too, and the cut-off count would not be the slow
/// client's alone.
#[test]
fn a_client_that_stops_reading_is_cut_off_and_nobody_else_waits() {
    let mut cluster = Cluster::start("70000013", 3, &[("CLIENT_QUEUE_LIMIT", "1000")]);
    let _ingestor = cluster.ingest(&[
        "--quotes-per-sec",
        "1000",
        "--logs-per-sec",
        "200",
        "--signals-per-sec",
        "20",
        "--seed",
        "23",
    ]);
    let plan = Plan::new(&cluster.nginx.http_url())
        .token(&cluster.token("fast-sio"))
        .transports(&["websocket"])
        .connected()
        .subscribe(&["quotes", "signals"])
        .wait_stdin();
    let mut fast = SioClient::node(&plan);
    let replica = fast.wait_event("connected", Duration::from_secs(20)).data["replica"]
        .as_str()
        .expect("replica")
        .to_owned();
    fast.wait_event("quotes", Duration::from_secs(10));

    // A plain WebSocket reader through nginx, reading all the time.
    let url = format!(
        "{}/ws?token={}",
        cluster.nginx.ws_url(),
        cluster.token("fast-ws")
    );
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut ws = WsClient::connect(&url).expect("ws connect");
        ws.wait_event("connected", Duration::from_secs(10));
        ws.send_event("subscribe", json!({"channels": ["quotes", "signals"]}));
        ws.wait_event("subscribed", Duration::from_secs(10));
        let mut received = Vec::new();
        while stopped.try_recv().is_err() {
            if let Some(WsMsg::Event { event, data }) = ws.next(Duration::from_millis(100)) {
                received.push((e2e_tests::now_ms() as f64, event, data));
            }
        }
        (ws, received)
    });

    let gateway = cluster.replica(&replica);
    let (pid, addr) = (gateway.proc().pid(), gateway.addr());
    let series = r#"gateway_clients_cut_off_total{reason="slow_consumer"}"#;
    let cut_offs = || metric(&e2e_tests::http::get(addr, "/metrics", &[]).body, series);
    let baseline = rss_kib(pid).expect("replica RSS");
    let mut slow = WsClient::connect(&format!(
        "{}/ws?token={}",
        cluster.nginx.ws_url(),
        cluster.token("slow")
    ))
    .expect("slow ws connect");
    let slow_replica = slow.wait_event("connected", Duration::from_secs(10))["replica"].clone();
    assert_eq!(
        slow_replica,
        replica.as_str(),
        "nginx put the slow client elsewhere"
    );
    slow.send_event(
        "subscribe",
        json!({"channels": ["quotes", "positions", "orders", "logs", "signals", "account"]}),
    );
    // From here on the slow client reads nothing until it is cut off.
    let stopped_reading = Instant::now();
    let mut peak = baseline;
    eventually(Duration::from_secs(60), || {
        peak = peak.max(rss_kib(pid).unwrap_or(0));
        cut_offs().filter(|n| *n >= 1.0)
    })
    .unwrap_or_else(|| {
        panic!(
            "the slow client was never cut off; /metrics {series} = {:?}",
            cut_offs()
        )
    });
    let cut_after = stopped_reading.elapsed();

    let bye = slow.wait_event("disconnected", Duration::from_secs(20));
    assert_eq!(bye["reconnect"], true, "{bye}");
    let close = slow.wait_close(Duration::from_secs(10));
    assert!(
        close.is_some(),
        "not closed after the goodbye:\n{}",
        slow.dump()
    );
    let slow_events = slow.events().len();

    // The others kept going: let them run on a little after the cut-off.
    skip_seen(&mut fast, "quotes");
    for _ in 0..150 {
        fast.wait_event("quotes", Duration::from_secs(5));
    }
    let after = rss_kib(pid).unwrap_or(0);
    let _ = stop.send(());
    let (ws, ws_received) = reader.join().expect("reader thread");
    assert!(
        !ws.is_closed(),
        "the fast websocket was closed:\n{}",
        ws.dump()
    );
    fast.release();
    let t = fast.finish(Duration::from_secs(20));
    t.assert_completed();

    let sio_all: Vec<(f64, &Value)> = t
        .lines
        .iter()
        .filter(|l| l.event == "quotes" || l.event == "signals_update")
        .filter_map(|l| Some((l.at()?, &l.data)))
        .collect();
    let ws_all: Vec<(f64, &Value)> = ws_received.iter().map(|(at, _, d)| (*at, d)).collect();
    let sio_quotes: Vec<(f64, &Value)> = t
        .all("quotes")
        .iter()
        .filter_map(|l| Some((l.at()?, &l.data)))
        .collect();
    let ws_quotes: Vec<(f64, &Value)> = ws_received
        .iter()
        .filter(|(_, e, _)| e == "quotes")
        .map(|(at, _, d)| (*at, d))
        .collect();
    let ws_signals: Vec<(f64, &Value)> = ws_received
        .iter()
        .filter(|(_, e, _)| e == "signals_update")
        .map(|(at, _, d)| (*at, d))
        .collect();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "replica {replica} RSS: {:.1} MiB before the slow client, peak {:.1} MiB while it was stuck, {:.1} MiB after; \
         cut off {cut_after:?} after it stopped reading; it then read {slow_events} events before the goodbye",
        mib(baseline),
        mib(peak),
        mib(after)
    );
    for (name, received) in [
        ("socket.io quotes", &sio_quotes),
        ("websocket quotes", &ws_quotes),
        ("websocket signals", &ws_signals),
    ] {
        let (p50, p99, max, gap) = delays(received);
        println!(
            "{name}: {} received, delay p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms; longest gap {gap:.0} ms",
            received.len()
        );
        assert!(
            received.len() > 50,
            "{name}: only {} received",
            received.len()
        );
        assert!(p99 < 2000.0, "{name}: p99 delay {p99:.0} ms");
    }
    // Quotes and signals together: the client never waited 2 s for data.
    for (name, received) in [("socket.io", &sio_all), ("websocket", &ws_all)] {
        let gap = delays(received).3;
        println!("{name} client: longest gap between two events {gap:.0} ms");
        assert!(gap < 2000.0, "{name} client: a {gap:.0} ms gap");
    }
    assert!(
        peak < baseline + 100 * 1024 && peak < 400 * 1024,
        "replica RSS grew from {baseline} KiB to {peak} KiB"
    );
    for event in ["disconnected", "disconnect"] {
        let dropped = t
            .all(event)
            .iter()
            .any(|l| l.data["reason"] != "io client disconnect");
        assert!(
            !dropped,
            "the fast socket.io client was disconnected:\n{}",
            t.dump()
        );
    }
    cluster.assert_replicas_alive(&[]);
}
