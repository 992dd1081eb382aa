//! Snapshot on subscribe (contract section 5): the last values live in
//! JetStream, so a replica started after the market went quiet serves right
//! after `subscribed` exactly what an old replica's clients saw last: the
//! latest quote of every symbol, the positions, the orders, the account.

use e2e_tests::{mint, Gateway, Ingestor, NatsServer, WsClient, SECRET};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const STATE: [&str; 4] = ["quotes", "positions", "orders", "account"];

/// Subscribes `ws` to the state channels and collects what comes until it
/// has a value for each of `expected` keys (`quote SYMBOL`, or the event
/// name for the others): the last quote per symbol and the last value of
/// each other channel.
fn last_values(ws: &mut WsClient, expected: usize) -> BTreeMap<String, Value> {
    ws.send_event("subscribe", json!({ "channels": STATE }));
    ws.wait_event("subscribed", Duration::from_secs(10));
    let mut last = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(15);
    while last.len() < expected {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            break;
        };
        let Some(msg) = ws.next(left) else { break };
        if let Some((event, data)) = msg.event() {
            let key = match event {
                "quotes" => format!("quote {}", data["symbol"].as_str().unwrap_or("?")),
                other => other.to_owned(),
            };
            last.insert(key, data.clone());
        }
    }
    last
}

#[test]
fn a_new_replica_serves_the_last_values_right_after_subscribed() {
    let nats = NatsServer::start();
    let url = nats.url();
    let env = [("NATS_URL", url.as_str()), ("JWT_SECRET", SECRET)];
    let old = Gateway::start(&env, false);
    let token = mint(SECRET, "trader", Some("snap"), None, 600);
    let connect = |gw: &Gateway| {
        let mut ws =
            WsClient::connect(&format!("{}/ws?token={token}", gw.ws_url())).expect("ws connect");
        ws.wait_event("connected", Duration::from_secs(10));
        ws
    };
    let mut watcher = connect(&old);
    watcher.send_event("subscribe", json!({ "channels": STATE }));
    watcher.wait_event("subscribed", Duration::from_secs(10));

    // A burst of market activity, then silence.
    let mut ingestor = Ingestor::sim(
        &url,
        "snap",
        &[
            "--quotes-per-sec",
            "200",
            "--positions-interval-ms",
            "100",
            "--orders-interval-ms",
            "100",
            "--account-interval-ms",
            "100",
            "--logs-per-sec",
            "0",
            "--signals-per-sec",
            "0",
            "--seed",
            "3",
        ],
    );
    for event in ["positions_update", "orders_update", "account_update"] {
        watcher.wait_event(event, Duration::from_secs(10));
    }
    let symbols = e2e_tests::eventually(Duration::from_secs(10), || {
        watcher.drain_for(Duration::from_millis(100));
        let seen: std::collections::BTreeSet<String> = watcher
            .events()
            .iter()
            .filter(|(_, e, _)| *e == "quotes")
            .filter_map(|(_, _, d)| d["symbol"].as_str().map(str::to_owned))
            .collect();
        (seen.len() >= 10).then_some(seen)
    })
    .expect("quotes of at least 10 symbols");
    assert!(ingestor.terminate(Duration::from_secs(10)).success());

    // With nothing moving any more, what the old replica serves a new
    // subscriber is the last value of everything.
    let expected = symbols.len() + 3;
    let seen_last = last_values(&mut connect(&old), expected);
    assert_eq!(
        seen_last.len(),
        expected,
        "the old replica served {seen_last:?}"
    );

    // A replica started now, after the silence, serves the same at once:
    // nothing is published any more, so all it sends is its snapshot.
    let fresh = Gateway::start(&env, false);
    let ready = e2e_tests::eventually(Duration::from_secs(20), || {
        (e2e_tests::http::get(fresh.addr(), "/health/ready", &[]).status == 200).then_some(())
    });
    assert!(ready.is_some(), "the new replica never became ready");
    let served = last_values(&mut connect(&fresh), expected);
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        seen_last.keys().collect::<Vec<_>>(),
        "a new replica serves other keys than an old one"
    );
    for (key, value) in &seen_last {
        assert_eq!(
            &served[key], value,
            "{key}: the new replica serves another value"
        );
    }
    old.assert_no_panic();
    fresh.assert_no_panic();
}
