//! Stateless replicas behind the real nginx (`deploy/nginx/gateway.conf`):
//! each test runs its own nats-server, redis-server, three gateway replicas
//! and nginx, and moves clients between replicas by killing or draining the
//! one they are on. What must hold (contract section 5): a client that
//! comes back with `auth.session` within the resume window, to any replica,
//! misses no log or signal (duplicates with the same `seq` allowed).

use e2e_tests::cluster::{self, check_event_sequence, event_seqs, Cluster, RESUME_TIMEOUT};
use e2e_tests::{eventually, Plan, SioClient, WsClient, WsMsg};
use serde_json::{json, Value};
use std::time::Duration;

/// Until `client` has seen a `logs_update` with a seq above `seq`.
fn wait_for_log_after(client: &mut SioClient, seq: u64, timeout: Duration) -> u64 {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = client.wait_event("logs_update", left);
        let got = line.data["seq"].as_u64().unwrap_or(0);
        if got > seq {
            return got;
        }
    }
}

/// The lines of `client` about its connection, for failure messages.
fn connection_events(client: &mut SioClient) -> String {
    let names = [
        "connect",
        "connected",
        "connect_error",
        "disconnect",
        "disconnected",
    ];
    client
        .lines()
        .iter()
        .filter(|l| names.contains(&l.event.as_str()))
        .map(|l| l.raw.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The highest log/signal seq `client` has seen so far.
fn max_seq(client: &mut SioClient) -> u64 {
    cluster::max_seq(client.lines(), &["logs_update", "signals_update"])
}

/// A client on logs, signals and positions through nginx while the
/// ingestor publishes 200 logs/s; its replica is SIGKILLed; it reconnects
/// through nginx with `auth.session`, lands on another replica, is resumed,
/// and every seq from before the kill to well after the resume arrives, in
/// order per channel, none missing.
#[test]
fn killed_replica_client_resumes_elsewhere_without_a_gap() {
    let mut cluster = Cluster::start("70000001", 3, &[]);
    let _ingestor = cluster.ingest(&[
        "--logs-per-sec",
        "200",
        "--signals-per-sec",
        "5",
        "--quotes-per-sec",
        "20",
        "--positions-interval-ms",
        "500",
        "--seed",
        "11",
    ]);
    let plan = Plan::new(&cluster.nginx.http_url())
        .token(&cluster.token("alice"))
        .transports(&["websocket"])
        .resume()
        .connected()
        .subscribe(&["logs", "signals", "positions"])
        .wait_stdin();
    let mut client = SioClient::node(&plan);
    let hello = client.wait_event("connected", Duration::from_secs(20)).data;
    assert_eq!(hello["resumed"], false, "{hello}");
    let session = hello["session"].as_str().expect("session").to_owned();
    let first_replica = hello["replica"].as_str().expect("replica").to_owned();
    client.wait_event("subscribed", Duration::from_secs(10));
    let first = wait_for_log_after(&mut client, 0, Duration::from_secs(10));

    // The replica has checkpointed the session (channels and a seq) in Redis.
    eventually(Duration::from_secs(10), || {
        let record = cluster.stored_session(&session)?;
        let logs = record["channels"].as_array()?.iter().any(|c| c == "logs");
        (logs && record["logs_seq"].as_u64()? > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("session {session} never checkpointed in Redis"));
    let before_kill = wait_for_log_after(&mut client, first + 200, Duration::from_secs(10));

    cluster.replica(&first_replica).kill();
    let killed_at = max_seq(&mut client).max(before_kill);

    let again = client.wait_event("connected", RESUME_TIMEOUT).data;
    assert_eq!(again["session"], session.as_str(), "{again}");
    assert_eq!(again["resumed"], true, "{again}");
    assert_ne!(again["replica"], first_replica.as_str(), "{again}");
    let resubscribed = client.wait_event("subscribed", Duration::from_secs(5)).data;
    assert_eq!(resubscribed["resumed"], true, "{resubscribed}");
    client.wait_event("positions_update", Duration::from_secs(10));
    let resumed_at = max_seq(&mut client);
    wait_for_log_after(&mut client, resumed_at + 400, Duration::from_secs(20));

    client.release();
    let t = client.finish(Duration::from_secs(20));
    t.assert_completed();
    let summary =
        check_event_sequence(&event_seqs(&t.lines)).unwrap_or_else(|e| panic!("{e}\n{}", t.dump()));
    println!(
        "killed {first_replica} at seq {killed_at}, resumed on {} ; received seqs {}..={} ({} distinct, {} duplicates)",
        again["replica"], summary.first, summary.last, summary.distinct, summary.duplicates
    );
    assert!(summary.first < killed_at && summary.last > resumed_at + 400);
    assert!(t.count("disconnect") >= 1, "{}", t.dump());
    cluster.assert_replicas_alive(&[&first_replica]);
}

/// A plain WebSocket dashboard that resumes by hand: connects through
/// nginx, subscribes to logs and signals, and after `disconnected` comes
/// back with `?session=`.
struct WsDashboard {
    url: String,
    token: String,
    session: String,
    replicas: Vec<String>,
    /// Every message of every connection, in order.
    seen: Vec<WsMsg>,
    ws: WsClient,
}

impl WsDashboard {
    fn connect(base: &str, token: &str) -> WsDashboard {
        let url = format!("{base}/ws");
        let ws = WsClient::connect(&format!("{url}?token={token}")).expect("ws connect");
        let mut d = WsDashboard {
            url,
            token: token.to_owned(),
            session: String::new(),
            replicas: Vec::new(),
            seen: Vec::new(),
            ws,
        };
        d.greeted();
        d.ws.send_event("subscribe", json!({"channels": ["logs", "signals"]}));
        d.ws.wait_event("subscribed", Duration::from_secs(10));
        d
    }

    fn greeted(&mut self) -> Value {
        let hello = self.ws.wait_event("connected", RESUME_TIMEOUT);
        self.session = hello["session"].as_str().expect("session").to_owned();
        self.replicas
            .push(hello["replica"].as_str().expect("replica").to_owned());
        hello
    }

    /// Reads until the server says goodbye and closes; returns the goodbye.
    fn goodbye(&mut self) -> Value {
        let bye = self.ws.wait_event("disconnected", Duration::from_secs(20));
        let close = self.ws.wait_close(Duration::from_secs(10));
        assert!(
            close.is_some(),
            "not closed after the goodbye:\n{}",
            self.ws.dump()
        );
        bye
    }

    /// Comes back with the session id.
    fn resume(&mut self) -> Value {
        let url = format!("{}?token={}&session={}", self.url, self.token, self.session);
        let ws = WsClient::connect(&url).expect("ws reconnect");
        let old = std::mem::replace(&mut self.ws, ws);
        self.seen.extend(old.seen.into_iter().map(|(_, m)| m));
        self.greeted()
    }

    /// Reads until a log or signal with a seq above `seq` arrives.
    fn read_past(&mut self, seq: u64, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let Some(data) = self
                .ws
                .try_wait_event("logs_update", Duration::from_secs(1))
            else {
                continue;
            };
            if data["seq"].as_u64().unwrap_or(0) > seq {
                return;
            }
        }
        panic!("websocket: no log past seq {seq}:\n{}", self.ws.dump());
    }

    fn entries(mut self) -> Vec<(String, u64)> {
        self.seen.extend(
            std::mem::take(&mut self.ws.seen)
                .into_iter()
                .map(|(_, m)| m),
        );
        self.seen
            .iter()
            .filter_map(|m| {
                let (event, data) = m.event()?;
                let channel = event == "logs_update" || event == "signals_update";
                channel.then(|| Some((event.to_owned(), data["seq"].as_u64()?)))?
            })
            .collect()
    }
}

/// SIGTERM on the replica holding several clients (socket.io-client over
/// websocket and over polling, and a plain WebSocket): each is told
/// `disconnected {"reason": "Server shutdown", "reconnect": true}` before
/// its connection closes, resumes through nginx on another replica, and
/// misses no log or signal. The draining replica answers 503 on
/// `/health/ready` while it drains, then exits 0.
#[test]
fn drained_replica_clients_resume_elsewhere_without_a_gap() {
    let mut cluster = Cluster::start("70000002", 3, &[("DRAIN_TIMEOUT_SECS", "10")]);
    let _ingestor = cluster.ingest(&[
        "--logs-per-sec",
        "100",
        "--signals-per-sec",
        "5",
        "--quotes-per-sec",
        "20",
        "--seed",
        "12",
    ]);
    let sio_plan = |user: &str, transport: &str| {
        Plan::new(&cluster.nginx.http_url())
            .token(&cluster.token(user))
            .transports(&[transport])
            .resume()
            .connected()
            .subscribe(&["logs", "signals"])
            .wait_stdin()
    };
    let mut sio = vec![
        SioClient::node(&sio_plan("ws-user", "websocket")),
        SioClient::node(&sio_plan("polling-user", "polling")),
        SioClient::node(&sio_plan("ws-user-2", "websocket")),
    ];
    let mut sessions = Vec::new();
    let mut replicas = Vec::new();
    for c in &mut sio {
        let hello = c.wait_event("connected", Duration::from_secs(20)).data;
        sessions.push(hello["session"].as_str().expect("session").to_owned());
        replicas.push(hello["replica"].as_str().expect("replica").to_owned());
        c.wait_event("subscribed", Duration::from_secs(10));
    }
    let mut ws = WsDashboard::connect(&cluster.nginx.ws_url(), &cluster.token("ws-plain"));
    sessions.push(ws.session.clone());
    replicas.push(ws.replicas[0].clone());
    // nginx hashes the client address: every client is on one replica.
    let target = replicas[0].clone();
    assert!(
        replicas.iter().all(|r| *r == target),
        "clients from one address spread over {replicas:?}"
    );
    for session in &sessions {
        eventually(Duration::from_secs(10), || {
            let record = cluster.stored_session(session)?;
            (record["channels"].as_array()?.len() == 2).then_some(())
        })
        .unwrap_or_else(|| panic!("session {session} never checkpointed"));
    }
    let mut before = 0;
    for c in &mut sio {
        before = before.max(wait_for_log_after(c, 0, Duration::from_secs(10)));
    }
    ws.read_past(0, Duration::from_secs(10));

    // Probe the draining replica's readiness until it is gone.
    let addr = cluster.replica(&target).addr();
    // Probe the draining replica until it is gone: its readiness, and how
    // it answers a polling request for a session it does not hold (400
    // normally; 503 while draining, so that nginx passes it on).
    let probe = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let foreign = "/socket.io/?EIO=4&transport=polling&sid=NotAsessionOfOurs";
        // In this order: a drain that has begun by the first request has
        // begun by the second.
        while let Ok(session) = e2e_tests::http::try_get(addr, foreign, &[]) {
            let Ok(ready) = e2e_tests::http::try_get(addr, "/health/ready", &[]) else {
                break;
            };
            seen.push((ready.status, ready.body, session.status));
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    });
    std::thread::sleep(Duration::from_millis(50));
    cluster.replica(&target).proc().signal(libc::SIGTERM);

    let bye = json!({"reason": "Server shutdown", "reconnect": true});
    assert_eq!(ws.goodbye(), bye);
    // Through nginx, readiness moves on from the draining replica: 200.
    let through = e2e_tests::http::get(cluster.nginx.addr(), "/health/ready", &[]);
    assert_eq!(through.status, 200, "{through:?}");
    assert_ne!(through.json()["draining"], true, "{through:?}");
    let hello = ws.resume();
    assert_eq!(hello["resumed"], true, "{hello}");
    assert_ne!(hello["replica"], target.as_str(), "{hello}");
    let mut resumed_at = 0;
    for c in &mut sio {
        let Some(got) = c.try_wait_event("disconnected", Duration::from_secs(20)) else {
            panic!("no goodbye; connection events:\n{}", connection_events(c));
        };
        let got = got.data;
        assert_eq!(got, bye);
        c.wait_event("disconnect", Duration::from_secs(10));
        let hello = c.wait_event("connected", RESUME_TIMEOUT).data;
        assert_eq!(hello["resumed"], true, "{hello}");
        assert_ne!(hello["replica"], target.as_str(), "{hello}");
        resumed_at = resumed_at.max(max_seq(c));
    }
    let status = cluster
        .replica(&target)
        .proc()
        .wait_exit(Duration::from_secs(15))
        .expect("the drained replica exits");
    assert!(status.success(), "drained replica exit status {status}");
    let probes = probe.join().expect("probe thread");
    let draining: Vec<_> = probes
        .iter()
        .filter(|(s, body, _)| *s == 503 && body.contains("\"draining\":true"))
        .collect();
    assert!(
        !draining.is_empty(),
        "readiness never reported the drain: {probes:?}"
    );
    assert!(
        draining.iter().any(|(_, _, foreign)| *foreign == 503),
        "a foreign polling session was not passed on while draining: {probes:?}"
    );
    assert!(
        probes
            .iter()
            .all(|(s, _, foreign)| *s != 200 || *foreign == 400),
        "a foreign polling session was not refused as usual before the drain: {probes:?}"
    );

    ws.read_past(resumed_at + 200, Duration::from_secs(20));
    let mut problems = Vec::new();
    for mut c in sio {
        wait_for_log_after(&mut c, resumed_at + 200, Duration::from_secs(20));
        c.release();
        let t = c.finish(Duration::from_secs(20));
        t.assert_completed();
        // Connected once, told goodbye, closed: nothing broke before the drain.
        let names = t.names();
        let bye_at = names.iter().position(|n| *n == "disconnected");
        let closed_at = names.iter().position(|n| *n == "disconnect");
        assert!(bye_at < closed_at, "goodbye after the close:\n{}", t.dump());
        let connects_before = names[..closed_at.unwrap_or(0)]
            .iter()
            .filter(|n| **n == "connect")
            .count();
        assert_eq!(
            connects_before,
            1,
            "reconnected before the drain:\n{}",
            t.dump()
        );
        match check_event_sequence(&event_seqs(&t.lines)) {
            Ok(s) => println!(
                "{} over {}: seqs {}..={} ({} distinct, {} duplicates)",
                t.first("connected").data["session"],
                t.first("connect").data["transport"],
                s.first,
                s.last,
                s.distinct,
                s.duplicates
            ),
            Err(e) => problems.push(format!("{e}\n{}", t.dump())),
        }
    }
    match check_event_sequence(&ws.entries()) {
        Ok(s) => println!(
            "plain websocket: seqs {}..={} ({} distinct, {} duplicates)",
            s.first, s.last, s.distinct, s.duplicates
        ),
        Err(e) => problems.push(format!("plain websocket: {e}")),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    let _ = before;
    cluster.assert_replicas_alive(&[&target]);
}

/// A session id is not a bearer credential: a second user who presents the
/// first user's session id (socket.io-client through nginx, and a plain
/// WebSocket straight to another replica) gets a fresh session, `resumed:
/// false`, and none of the first user's channels or missed entries; the
/// owner can still resume it.
#[test]
fn another_user_cannot_resume_a_session() {
    let cluster = Cluster::start("70000003", 3, &[]);
    let _ingestor = cluster.ingest(&[
        "--logs-per-sec",
        "50",
        "--quotes-per-sec",
        "50",
        "--seed",
        "13",
    ]);
    let alice = Plan::new(&cluster.nginx.http_url())
        .token(&cluster.token("alice"))
        .transports(&["websocket"])
        .connected()
        .subscribe(&["logs", "signals"])
        .wait_for("logs_update", 10_000);
    let t = SioClient::node(&alice).finish(Duration::from_secs(30));
    t.assert_completed();
    let session = t.first("connected").data["session"]
        .as_str()
        .expect("session")
        .to_owned();
    eventually(Duration::from_secs(10), || {
        let record = cluster.stored_session(&session)?;
        (record["channels"].as_array()?.len() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("alice's session {session} was never stored"));

    // Bob presents alice's session id, then asks for quotes only.
    let bob = Plan::new(&cluster.nginx.http_url())
        .auth(json!({"token": cluster.token("bob"), "session": session}))
        .transports(&["websocket"])
        .connected()
        .subscribe(&["quotes"])
        .wait_for("quotes", 10_000);
    let t = SioClient::node(&bob).finish(Duration::from_secs(30));
    t.assert_completed();
    let hello = &t.first("connected").data;
    assert_eq!(hello["resumed"], false, "{hello}");
    assert_ne!(hello["session"], session.as_str(), "{hello}");
    let subscribed = t.all("subscribed");
    assert_eq!(subscribed.len(), 1, "{}", t.dump());
    assert_eq!(subscribed[0].data, json!({"channels": ["quotes"]}));
    for event in ["logs_update", "signals_update"] {
        assert_eq!(t.count(event), 0, "bob got alice's {event}:\n{}", t.dump());
    }

    // The same over a plain WebSocket, straight to another replica.
    let bob_on = Cluster::index(hello["replica"].as_str().expect("replica"));
    let other = &cluster.gateways[(bob_on + 1) % cluster.gateways.len()];
    let mut ws = WsClient::connect(&format!(
        "{}/ws?token={}&session={session}",
        other.ws_url(),
        cluster.token("bob")
    ))
    .expect("ws connect");
    let hello = ws.wait_event("connected", Duration::from_secs(10));
    assert_eq!(hello["resumed"], false, "{hello}");
    assert_ne!(hello["session"], session.as_str(), "{hello}");
    ws.send_event("subscribe", json!({"channels": ["quotes"]}));
    let subscribed = ws.wait_event("subscribed", Duration::from_secs(10));
    assert_eq!(subscribed, json!({"channels": ["quotes"]}));
    ws.wait_event("quotes", Duration::from_secs(10));
    assert!(
        ws.events()
            .iter()
            .all(|(_, e, _)| *e != "logs_update" && *e != "signals_update"),
        "bob got alice's entries:\n{}",
        ws.dump()
    );

    // Alice herself still can.
    let again = Plan::new(&cluster.nginx.http_url())
        .auth(json!({"token": cluster.token("alice"), "session": session}))
        .transports(&["websocket"])
        .connected()
        .wait_for("subscribed", 10_000)
        .wait_for("logs_update", 10_000);
    let t = SioClient::node(&again).finish(Duration::from_secs(30));
    t.assert_completed();
    assert_eq!(t.first("connected").data["resumed"], true, "{}", t.dump());
    assert_eq!(t.first("connected").data["session"], session.as_str());
}

/// `MAX_CONNECTIONS_PER_USER=2` holds across replicas: with one connection
/// on each of two replicas, a third (on the third replica, or through
/// nginx; Socket.IO or plain WebSocket) is refused with `RATE_LIMITED`,
/// while another user is let in; once one of the two closes, a new one is
/// accepted.
#[test]
fn connection_cap_holds_across_replicas() {
    let cluster = Cluster::start("70000004", 3, &[("MAX_CONNECTIONS_PER_USER", "2")]);
    let token = cluster.token("carol");
    let ws_on = |g: usize, token: &str| {
        WsClient::connect(&format!(
            "{}/ws?token={token}",
            cluster.gateways[g].ws_url()
        ))
        .expect("ws connect")
    };
    let mut first = ws_on(0, &token);
    first.wait_event("connected", Duration::from_secs(10));
    let mut second = ws_on(1, &token);
    second.wait_event("connected", Duration::from_secs(10));

    // A third plain WebSocket, on the third replica: error, then close.
    let mut third = ws_on(2, &token);
    let refusal = third.wait_event("error", Duration::from_secs(10));
    assert_eq!(refusal["code"], "RATE_LIMITED", "{refusal}");
    let close = third.wait_close(Duration::from_secs(10));
    assert_eq!(
        close,
        Some(Some((1008, "RATE_LIMITED".to_owned()))),
        "{}",
        third.dump()
    );
    assert!(third.events().iter().all(|(_, e, _)| *e != "connected"));

    // A third Socket.IO client, through nginx: connect_error.
    let refused = Plan::new(&cluster.nginx.http_url())
        .token(&token)
        .transports(&["websocket"])
        .wait_any(&["connect", "connect_error"], 10_000);
    let t = SioClient::node(&refused).finish(Duration::from_secs(30));
    t.assert_completed();
    assert_eq!(
        t.first("connect_error").data["message"],
        "RATE_LIMITED",
        "{}",
        t.dump()
    );
    assert_eq!(t.count("connected"), 0, "{}", t.dump());

    // The cap is per user: someone else gets in.
    let mut dave = WsClient::connect(&format!(
        "{}/ws?token={}",
        cluster.nginx.ws_url(),
        cluster.token("dave")
    ))
    .expect("ws connect");
    dave.wait_event("connected", Duration::from_secs(10));

    // One of carol's two leaves: a new connection is accepted (the slot is
    // freed as the replica notices the close).
    first.close();
    let accepted = eventually(Duration::from_secs(10), || {
        let mut ws = ws_on(2, &token);
        let hello = loop {
            match ws.next(Duration::from_secs(5))? {
                WsMsg::Event { event, data } if event == "connected" => break data,
                WsMsg::Event { event, .. } if event == "error" => return None,
                WsMsg::Close(_) => return None,
                _ => {}
            }
        };
        Some((ws, hello))
    });
    let (_ws, hello) = accepted.expect("a connection after one of two closed");
    assert_eq!(hello["replica"], "gw-3", "{hello}");
    second.send_event("heartbeat", json!({"timestamp": 1}));
    second.wait_event("heartbeat_ack", Duration::from_secs(10));
}

/// A dashboard away long enough to miss more entries than a client's queue
/// holds (`CLIENT_QUEUE_LIMIT=300`, 1,000+ missed) still resumes with all
/// of them, in order, and is not cut off as a slow consumer for it.
#[test]
fn a_long_absence_is_replayed_in_full() {
    let cluster = Cluster::start("70000005", 3, &[("CLIENT_QUEUE_LIMIT", "300")]);
    let _ingestor = cluster.ingest(&[
        "--logs-per-sec",
        "300",
        "--signals-per-sec",
        "5",
        "--seed",
        "14",
    ]);
    let plan = Plan::new(&cluster.nginx.http_url())
        .token(&cluster.token("away"))
        .transports(&["websocket"])
        .resume()
        .connected()
        .subscribe(&["logs", "signals"])
        .wait_stdin()
        .disconnect()
        .wait_stdin()
        .step(json!({"connect": true}))
        .wait_stdin();
    let mut away = SioClient::node(&plan);
    let session = away.wait_event("connected", Duration::from_secs(20)).data["session"]
        .as_str()
        .expect("session")
        .to_owned();
    wait_for_log_after(&mut away, 0, Duration::from_secs(10));
    eventually(Duration::from_secs(10), || {
        let record = cluster.stored_session(&session)?;
        (record["logs_seq"].as_u64()? > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("session {session} never checkpointed"));
    away.release();
    away.wait_event("disconnect", Duration::from_secs(10));
    let left_at = max_seq(&mut away);

    // Someone else watches the stream move on by more than 1,000 entries.
    let mut watcher = WsClient::connect(&format!(
        "{}/ws?token={}",
        cluster.nginx.ws_url(),
        cluster.token("watcher")
    ))
    .expect("ws connect");
    watcher.wait_event("connected", Duration::from_secs(10));
    watcher.send_event("subscribe", json!({"channels": ["logs"]}));
    let moved_on = loop {
        let log = watcher.wait_event("logs_update", Duration::from_secs(10));
        let seq = log["seq"].as_u64().unwrap_or(0);
        if seq > left_at + 1000 {
            break seq;
        }
    };

    away.release();
    let hello = away.wait_event("connected", RESUME_TIMEOUT).data;
    assert_eq!(hello["resumed"], true, "{hello}");
    wait_for_log_after(&mut away, moved_on + 100, Duration::from_secs(30));
    away.release();
    let t = away.finish(Duration::from_secs(20));
    t.assert_completed();
    assert_eq!(
        t.count("disconnected"),
        0,
        "cut off while catching up:\n{}",
        t.dump()
    );
    let summary =
        check_event_sequence(&event_seqs(&t.lines)).unwrap_or_else(|e| panic!("{e}\n{}", t.dump()));
    println!(
        "away from seq {left_at} to past {moved_on}: received {}..={} ({} distinct, {} duplicates)",
        summary.first, summary.last, summary.distinct, summary.duplicates
    );
}
