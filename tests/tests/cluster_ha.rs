//! No single point of failure, without containers: the node-kill checks of
//! the compose test (`scripts/compose-test.sh`) on local processes.
//!
//! - a 3-node NATS cluster (JetStream, streams at 3 replicas, the users and
//!   permissions of `deploy/nats/auth.conf`): the node leading the events
//!   stream is SIGKILLed while logs flow; no log is lost and no client is
//!   disconnected;
//! - Redis as a primary, a replica and three Sentinels: the primary is
//!   SIGKILLed; Sentinel promotes the replica, the replicas follow it
//!   (`REDIS_SENTINELS`), and a session resumes on another replica.

use e2e_tests::cluster::check_event_sequence;
use e2e_tests::ha::{NatsCluster, SentinelRedis, MASTER_NAME};
use e2e_tests::{eventually, mint, Gateway, Ingestor, NatsServer, WsClient, SECRET};
use std::time::{Duration, Instant};

/// A plain WebSocket dashboard on `gateway` reading logs, signals and quotes.
fn dashboard(gateway: &Gateway, user: &str, account: &str, session: Option<&str>) -> WsClient {
    let token = mint(SECRET, user, Some(account), None, 3600);
    WsClient::dashboard(&gateway.ws_url(), &token, session, Duration::from_secs(10))
}

/// `(event, seq)` of every log and signal `ws` received, in order.
fn event_seqs(ws: &WsClient) -> Vec<(String, u64)> {
    ws.events()
        .into_iter()
        .filter(|(_, e, _)| *e == "logs_update" || *e == "signals_update")
        .filter_map(|(_, e, d)| Some((e.to_owned(), d["seq"].as_u64()?)))
        .collect()
}

fn last_seq(ws: &WsClient) -> u64 {
    event_seqs(ws).iter().map(|(_, s)| *s).max().unwrap_or(0)
}

/// Reads until a log or signal with a seq of at least `target` arrived.
fn read_until_seq(ws: &mut WsClient, target: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while last_seq(ws) < target {
        assert!(
            Instant::now() < deadline && !ws.is_closed(),
            "no seq {target} within {timeout:?} (last {}); seen:\n{}",
            last_seq(ws),
            ws.dump()
        );
        ws.next(Duration::from_millis(200));
    }
}

/// Reads everything `ws` has received so far (and what arrives within a
/// few milliseconds).
fn drain(ws: &mut WsClient) {
    while ws.next(Duration::from_millis(5)).is_some() {}
}

/// The longest pause between two logs at `ws` after `after_ms` (ms since
/// it connected).
fn longest_log_gap(ws: &WsClient, after_ms: f64) -> f64 {
    let times: Vec<f64> = ws
        .events()
        .into_iter()
        .filter(|(t, e, _)| *e == "logs_update" && *t >= after_ms)
        .map(|(t, _, _)| t)
        .collect();
    times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

fn ms_since(ws_started: Instant) -> f64 {
    ws_started.elapsed().as_secs_f64() * 1000.0
}

/// Which NATS node a test kills.
#[derive(Debug, Clone, Copy)]
enum Victim {
    /// The node leading the events stream.
    StreamLeader,
    /// A node a gateway is connected to (one that does not lead the events
    /// stream when there is one): the gateway moves to another node and
    /// must read its events there.
    GatewayNode,
}

/// The node leading the events stream is SIGKILLed while the ingestor
/// publishes 50 logs a second: every client keeps its connection and gets
/// every log, in order, without a hole; the ingestor never had to publish a
/// log without storing it; the stream keeps all of them at 3 replicas.
#[test]
fn a_nats_node_dies_and_no_log_is_lost() {
    node_dies_and_no_log_is_lost("70000041", Victim::StreamLeader);
}

/// The node a gateway is connected to is SIGKILLed: the gateway reconnects
/// to another node, and its existing clients go on getting every log, in
/// order, without a hole.
#[test]
fn the_gateways_nats_node_dies_and_its_clients_keep_their_logs() {
    node_dies_and_no_log_is_lost("70000045", Victim::GatewayNode);
}

fn node_dies_and_no_log_is_lost(account: &str, victim: Victim) {
    let mut nats = NatsCluster::start();
    let ingestor_url = nats.ingestor_urls();
    let mut ingestor = Ingestor::start(
        &[
            "--account",
            account,
            "sim",
            "--logs-per-sec",
            "50",
            "--quotes-per-sec",
            "50",
            "--signals-per-sec",
            "5",
            "--seed",
            "41",
        ],
        &[("NATS_URL", &ingestor_url), ("STREAM_REPLICAS", "3")],
    );
    let replicas = eventually(Duration::from_secs(20), || {
        nats.stream_state("MT5_EVENTS").filter(|s| s.0 == 3)
    });
    assert!(
        replicas.is_some(),
        "MT5_EVENTS not at 3 replicas: {:?}",
        nats.stream_state("MT5_EVENTS")
    );
    let leader = eventually(Duration::from_secs(10), || nats.stream_leader("MT5_EVENTS"))
        .expect("the events stream has a leader");
    let gateway_url = nats.gateway_urls();
    let gateways: Vec<Gateway> = (1..=2)
        .map(|i| {
            Gateway::start(
                &[
                    ("NATS_URL", &gateway_url),
                    ("JWT_SECRET", SECRET),
                    ("REPLICA_ID", &format!("gw-{i}")),
                    ("STREAM_REPLICAS", "3"),
                ],
                false,
            )
        })
        .collect();
    let started = Instant::now();
    let mut clients: Vec<WsClient> = gateways
        .iter()
        .enumerate()
        .map(|(i, g)| dashboard(g, &format!("nats-ha-{i}"), account, None))
        .collect();
    for c in &mut clients {
        let now = last_seq(c);
        read_until_seq(c, now + 20, Duration::from_secs(20));
    }
    for c in &mut clients {
        drain(c);
    }

    assert_eq!(nats.stream_leader("MT5_EVENTS"), Some(leader));
    let killed = match victim {
        Victim::StreamLeader => leader,
        Victim::GatewayNode => {
            let held = nats.nodes_with_client("mt5-gateway");
            *held
                .iter()
                .find(|&&n| n != leader)
                .or(held.first())
                .expect("a node holds a gateway's connection")
        }
    };
    let killed_at = ms_since(started);
    nats.kill(killed);
    println!(
        "killed NATS node n{} ({victim:?}; n{} leads MT5_EVENTS)",
        killed + 1,
        leader + 1
    );

    // A new leader is elected and publishing goes on: wait for 200 logs and
    // signals stored after the kill, then for every client to have them.
    let (_, _, at_kill) = eventually(Duration::from_secs(20), || nats.stream_state("MT5_EVENTS"))
        .expect("a live node reports the stream");
    let target = at_kill + 200;
    // Every client is read all along: one left unread for seconds would be
    // cut off as a slow consumer, which is not what this test is about.
    let deadline = Instant::now() + Duration::from_secs(40);
    while clients.iter().any(|c| last_seq(c) < target) {
        assert!(
            Instant::now() < deadline,
            "not every client reached seq {target} within 40 s of the kill: {:?}; stream {:?}; ingestor:\n{}",
            clients.iter().map(last_seq).collect::<Vec<_>>(),
            nats.stream_state("MT5_EVENTS"),
            e2e_tests::procs::tail(&ingestor.stderr(), 20)
        );
        for c in &mut clients {
            drain(c);
        }
    }
    let (replicas, messages, last) = nats
        .stream_state("MT5_EVENTS")
        .expect("a live node reports the stream");

    for (i, c) in clients.iter().enumerate() {
        let entries = event_seqs(c);
        let summary = check_event_sequence(&entries)
            .unwrap_or_else(|e| panic!("client {i}: {e}\n{}", c.dump()));
        assert!(summary.last >= target, "{summary:?}");
        assert!(!c.is_closed(), "client {i} was disconnected:\n{}", c.dump());
        assert!(!c.was_sent_away(), "client {i}:\n{}", c.dump());
        println!(
            "client {i}: seqs {}..={} without a hole; longest pause between logs after the kill {:.0} ms",
            summary.first,
            summary.last,
            longest_log_gap(c, killed_at - 1000.0)
        );
    }
    assert_eq!(replicas, 3);
    assert_eq!(
        messages, last,
        "the stream lost entries (messages < last seq)"
    );
    assert!(
        !ingestor.stderr().contains("published plainly"),
        "the ingestor published logs without storing them:\n{}",
        e2e_tests::procs::tail(&ingestor.stderr(), 40)
    );
    ingestor.assert_no_panic();
    for g in &gateways {
        g.assert_no_panic();
    }
    ingestor.terminate(Duration::from_secs(10));

    // The node comes back and rejoins.
    nats.restart(killed);
}

/// A consumer removed before it delivered anything (as when the node
/// holding it dies) is recreated by async-nats from the stream's first
/// message: the events feed must not hand out that old history as new, but
/// end, so that its reader reopens it right after what it has read.
#[test]
fn an_events_feed_never_goes_back_in_the_stream() {
    use bus::{NatsBus, NatsOptions, Start, StreamKind, StreamLimits};
    use futures::StreamExt;
    let nats = NatsServer::start();
    let url = nats.url();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let bus = NatsBus::connect(&NatsOptions {
            url,
            name: "feed-test".into(),
        })
        .await
        .expect("connect");
        bus.ensure_streams("mt5", &StreamLimits::default())
            .await
            .expect("streams");
        let log = |i: u64| format!(r#"{{"message":"log {i}"}}"#).into_bytes().into();
        for i in 1..=5 {
            bus.publish_stored("mt5.1.logs".into(), log(i), Default::default())
                .await
                .expect("stored");
        }
        let mut feed = bus
            .consume("mt5", StreamKind::Events, None, Start::New)
            .await
            .expect("a feed");
        let stream = async_nats::jetstream::new(bus.client().clone())
            .get_stream("MT5_EVENTS")
            .await
            .expect("the stream");
        let names: Vec<String> = stream
            .consumer_names()
            .filter_map(|n| async move { n.ok() })
            .collect()
            .await;
        for name in &names {
            stream.delete_consumer(name).await.expect("deleted");
        }
        // Published before async-nats notices: the recreated consumer will
        // not have delivered anything, which is when it starts over from
        // the stream's first message.
        for i in 6..=7 {
            bus.publish_stored("mt5.1.logs".into(), log(i), Default::default())
                .await
                .expect("stored");
        }
        // async-nats recreates the lost consumer from the stream's first
        // message after it missed two heartbeat windows (the bus's pulls
        // expire after 30 s; a window is twice the 15 s heartbeat: about a
        // minute). Either the feed ended then (its reader reopens it), or
        // it goes on from seq 6. (The gateway's relay does not wait that
        // long: its stall watch reopens the feed; see the next test.)
        match tokio::time::timeout(Duration::from_secs(80), feed.next()).await {
            Ok(Some(msg)) => assert_eq!(msg.seq, Some(6)),
            Ok(None) => {}
            Err(_) => panic!("the feed neither ended nor delivered seq 6 within 80 s"),
        }
    });
}

/// The gateway's events consumer is removed before it delivered anything
/// (as when the cluster node holding it dies): once logs are stored again
/// and the relay reads none, its stall watch reopens the feed (quotes alone
/// going on would hide that logs stopped), and a client gets the logs
/// published after, in order, without the older ones.
#[test]
fn the_relay_reopens_its_feed_when_the_events_consumer_goes_back() {
    use bus::{NatsBus, NatsOptions, StreamLimits};
    use futures::StreamExt;
    let nats = NatsServer::start();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let bus = runtime.block_on(async {
        let bus = NatsBus::connect(&NatsOptions {
            url: nats.url(),
            name: "relay-test".into(),
        })
        .await
        .expect("connect");
        bus.ensure_streams("mt5", &StreamLimits::default())
            .await
            .expect("streams");
        bus
    });
    let account = "70000046";
    let subject = format!("mt5.{account}.logs");
    let publish = |from: u64, to: u64| {
        runtime.block_on(async {
            for i in from..=to {
                let log = format!(
                    r#"{{"time":"2026-01-01T00:00:00Z","level":"INFO","message":"log {i}"}}"#
                );
                bus.publish_stored(subject.clone(), log.into_bytes().into(), Default::default())
                    .await
                    .expect("stored");
            }
        })
    };
    publish(1, 5);
    let gateway = Gateway::start(&[("NATS_URL", &nats.url()), ("JWT_SECRET", SECRET)], false);
    let mut ws = dashboard(&gateway, "relay", account, None);
    runtime.block_on(async {
        let stream = async_nats::jetstream::new(bus.client().clone())
            .get_stream("MT5_EVENTS")
            .await
            .expect("the stream");
        let deadline = Instant::now() + Duration::from_secs(20);
        let names = loop {
            let names: Vec<String> = stream
                .consumer_names()
                .filter_map(|n| async move { n.ok() })
                .collect()
                .await;
            if !names.is_empty() {
                break names;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway does not read the events stream"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for name in &names {
            stream.delete_consumer(name).await.expect("deleted");
        }
    });
    publish(6, 10);
    read_until_seq(&mut ws, 10, Duration::from_secs(20));
    let seqs: Vec<u64> = event_seqs(&ws).into_iter().map(|(_, s)| s).collect();
    assert_eq!(seqs, [6, 7, 8, 9, 10], "{}", ws.dump());
    gateway.assert_no_panic();
}

/// The users of `deploy/nats/auth.conf` do what they need and no more: the
/// gateway reads the ingestor's data with its read-only user, and a
/// publisher holding the gateway's credentials is refused by the server.
#[test]
fn nats_permissions_keep_the_gateway_from_publishing() {
    let nats = NatsCluster::start();
    let account = "70000043";
    // The ingestor publishes as itself: data flows to the gateway.
    let _ingestor = Ingestor::start(
        &["--account", account, "sim", "--seed", "43"],
        &[("NATS_URL", &nats.ingestor_urls())],
    );
    let gateway = Gateway::start(
        &[("NATS_URL", &nats.gateway_urls()), ("JWT_SECRET", SECRET)],
        false,
    );
    let mut ws = dashboard(&gateway, "perm", account, None);
    ws.wait_event("quotes", Duration::from_secs(20));
    // An ingestor given the gateway's credentials is refused.
    let mut impostor = Ingestor::start(
        &["--account", "70000044", "sim", "--seed", "44"],
        &[("NATS_URL", &nats.gateway_urls())],
    );
    let refused = eventually(Duration::from_secs(20), || {
        impostor
            .stderr()
            .to_lowercase()
            .contains("permissions violation")
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "publishing as `gateway` was not refused:\n{}",
        e2e_tests::procs::tail(&impostor.stderr(), 30)
    );
    impostor.kill();
}

/// A token revoked with the users of `deploy/nats/auth.conf`: `gateway
/// revoke`, run with the gateway's NATS credentials (the only ones a
/// deployment hands the gateway image), announces it, and a replica on the
/// cluster, subscribed to the announcements with the same user, cuts the
/// client off within the contract's second, not at its next Redis
/// re-read; the server refused neither of them that subject.
#[test]
fn a_revocation_is_announced_and_heard_with_the_gateways_nats_user() {
    use e2e_tests::admin::run_gateway;
    let nats = NatsCluster::start();
    let redis = e2e_tests::RedisServer::start();
    let env = [
        ("NATS_URL", nats.gateway_urls()),
        ("REDIS_URL", redis.url()),
        ("JWT_SECRET", SECRET.to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = Gateway::start(&env, false);
    let token = mint(SECRET, "revoked", Some("70000047"), None, 3600);
    let mut ws = WsClient::connect(&format!("{}/ws?token={token}", gateway.ws_url()))
        .expect("websocket connect");
    ws.wait_event("connected", Duration::from_secs(10));
    let run = run_gateway(
        &["revoke", "--sub", "revoked"],
        &env,
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(0), "gateway revoke:\n{}", run.output());
    let done = Instant::now();
    let data = ws
        .try_wait_event("disconnected", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no `disconnected`:\n{}", ws.dump()));
    let late = done.elapsed();
    assert_eq!(data["reason"], "Token revoked", "{data}");
    assert!(
        late <= Duration::from_secs(1),
        "revoked {late:?} after `gateway revoke`: the announcement was not heard"
    );
    // (Without an ingestor the gateway may try to create the streams, which
    // its user may not: only a refusal on the revocations' subject counts.)
    for (who, log) in [
        ("gateway", gateway.stderr()),
        ("gateway revoke", run.output()),
    ] {
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| l.to_lowercase().contains("permissions violation") && l.contains("revoke"))
            .collect();
        assert!(
            refused.is_empty(),
            "{who} was refused by NATS:\n{refused:#?}"
        );
    }
}

/// The Redis primary is SIGKILLed: the sentinels promote the replica, both
/// gateway replicas follow it (readiness reports Redis up again), session
/// checkpoints reach the new primary, and a dashboard that leaves one
/// replica resumes its session on the other without missing a log.
#[test]
fn the_redis_primary_dies_and_sessions_resume_after_the_failover() {
    let account = "70000042";
    let nats = NatsServer::start();
    let mut redis = SentinelRedis::start();
    let _ingestor = Ingestor::sim(
        &nats.url(),
        account,
        &[
            "--logs-per-sec",
            "50",
            "--signals-per-sec",
            "5",
            "--seed",
            "42",
        ],
    );
    let sentinels = redis.sentinel_list();
    let gateways: Vec<Gateway> = (1..=2)
        .map(|i| {
            Gateway::start(
                &[
                    ("NATS_URL", &nats.url()),
                    ("REDIS_SENTINELS", &sentinels),
                    ("REDIS_MASTER_NAME", MASTER_NAME),
                    ("JWT_SECRET", SECRET),
                    ("REPLICA_ID", &format!("gw-{i}")),
                ],
                false,
            )
        })
        .collect();
    let redis_up = |g: &Gateway| {
        e2e_tests::http::try_get(g.addr(), "/health/ready", &[])
            .ok()
            .is_some_and(|r| r.json()["redis"] == "up")
    };
    eventually(Duration::from_secs(20), || {
        gateways.iter().all(redis_up).then_some(())
    })
    .expect("the gateways did not find the Redis primary through Sentinel");

    let started = Instant::now();
    let mut ws = dashboard(&gateways[0], "sentinel", account, None);
    let hello = ws.first_event("connected").expect("connected");
    let session = hello["session"].as_str().expect("a session id").to_owned();
    let now = last_seq(&ws);
    read_until_seq(&mut ws, now + 50, Duration::from_secs(20));
    eventually(Duration::from_secs(20), || redis.stored_session(&session))
        .expect("the session was never checkpointed to the primary");

    let old = redis.primary().expect("a primary");
    let killed = Instant::now();
    let killed_at = ms_since(started);
    redis.kill(old);
    // The dashboard is read all along, so the pause measured is the
    // gateway's, not this test's.
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis.primary().is_none_or(|p| p == old) {
        assert!(
            Instant::now() < deadline,
            "Sentinel did not fail over within 30 s"
        );
        drain(&mut ws);
    }
    let new = redis.wait_failover(old, Duration::from_secs(10));
    let failed_over = killed.elapsed();
    // Both replicas follow the new primary and checkpoint there.
    let seq_then = last_seq(&ws);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        drain(&mut ws);
        let stored = redis
            .stored_session(&session)
            .filter(|r| r["logs_seq"].as_u64().unwrap_or(0) > seq_then.saturating_sub(200));
        if let (Some(r), true) = (stored, gateways.iter().all(redis_up)) {
            if r["logs_seq"].as_u64().unwrap_or(0) > 0 {
                break r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint on the new primary (server {new}) within 30 s; readiness: {:?}",
            gateways
                .iter()
                .map(|g| e2e_tests::http::try_get(g.addr(), "/health/ready", &[]).map(|r| r.body))
                .collect::<Vec<_>>()
        );
    };
    let followed = killed.elapsed();
    assert_eq!(stored["user"], "sentinel", "{stored}");
    let gap = longest_log_gap(&ws, killed_at - 1000.0);

    // The dashboard moves to the other replica and resumes there.
    let left_at = last_seq(&ws);
    let before = event_seqs(&ws);
    ws.close();
    let mut again = dashboard(&gateways[1], "sentinel", account, Some(&session));
    let hello2 = again.first_event("connected").expect("connected");
    assert_eq!(hello2["resumed"], true, "{hello2}");
    read_until_seq(&mut again, left_at + 100, Duration::from_secs(20));
    let mut all = before;
    all.extend(event_seqs(&again));
    let summary = check_event_sequence(&all).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "Redis primary killed: Sentinel promoted server {new} after {failed_over:?}; both replicas \
         on it and the session checkpointed there {followed:?} after the kill; longest pause \
         between logs {gap:.0} ms; resumed on gw-2 with seqs {}..={} without a hole",
        summary.first, summary.last
    );
    for g in &gateways {
        g.assert_no_panic();
    }
    // The old primary comes back as a replica of the new one.
    redis.restart_as_replica(old);
}
