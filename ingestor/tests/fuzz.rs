//! Property tests of everything a terminal controls: the first-line check,
//! the line parser and conversion, and the clock. Short runs here (256
//! cases each, proptest's default); a long run is
//! `PROPTEST_CASES=200000 cargo test -p ingestor --release --test fuzz`.

use ingestor::bridge::clock::{checked_offset, Clocks, ServerClock};
use ingestor::bridge::message::Outbound;
use ingestor::bridge::session::{read_hello, LineFault, Session};
use proptest::prelude::*;
use serde_json::{json, Value};

const TYPES: [&str; 12] = [
    "hello",
    "heartbeat",
    "quote",
    "positions",
    "orders",
    "account",
    "log",
    "signal",
    "error",
    "outbox",
    "welcome",
    "",
];
const FIELDS: [&str; 24] = [
    "symbol",
    "bid",
    "ask",
    "point",
    "digits",
    "time",
    "items",
    "ticket",
    "type",
    "volume",
    "price_open",
    "price_current",
    "time_setup",
    "state",
    "balance",
    "equity",
    "margin",
    "free_margin",
    "level",
    "message",
    "side",
    "line",
    "gmt_offset_s",
    "validators",
];

fn session() -> Session {
    let hello =
        read_hello(br#"{"type":"hello","protocol":2,"key":"k","gmt_offset_s":7200}"#).unwrap();
    Session::start(&hello, "acc".into(), &Clocks::default(), 1_700_000_000_000)
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON number", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        prop::sample::select(TYPES.to_vec()).prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS.to_vec()), inner), 0..6).prop_map(
                |kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            ),
        ]
    })
}

/// Objects shaped like bridge messages: a known `type`, known field names
/// with values of any type (the shapes a buggy EA build sends).
fn message_like() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TYPES.to_vec()),
        prop::collection::vec((prop::sample::select(FIELDS.to_vec()), any_json()), 0..10),
    )
        .prop_map(|(t, fields)| {
            let mut obj = serde_json::Map::new();
            obj.insert("type".into(), json!(t));
            for (k, v) in fields {
                obj.insert(k.to_owned(), v);
            }
            if t == "outbox" {
                let inner = obj.get("line").cloned().unwrap_or(Value::Null).to_string();
                obj.insert("line".into(), json!(inner));
            }
            Value::Object(obj)
        })
}

fn check_output(out: &Outbound) {
    // Whatever is accepted must encode, with UTC times.
    let encoded = match out {
        Outbound::Quote(q) => {
            assert!(q.timestamp.ends_with('Z'));
            assert!(q.bid > 0.0 && q.ask > 0.0);
            serde_json::to_string(q)
        }
        Outbound::Positions(p) => serde_json::to_string(p),
        Outbound::Orders(o) => serde_json::to_string(o),
        Outbound::Account(a) => serde_json::to_string(a),
        Outbound::Log(l) | Outbound::Error(l) => {
            assert!(l.timestamp.ends_with('Z'));
            serde_json::to_string(l)
        }
        Outbound::Signal(s) => serde_json::to_string(s),
        Outbound::Hello(_) | Outbound::Heartbeat { .. } => Ok(String::new()),
    };
    assert!(encoded.is_ok());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_hello(&bytes);
        let mut s = session();
        if let Ok(Some(out)) = s.on_line(&bytes, 1_700_000_000_000) {
            check_output(&out);
        }
    }

    #[test]
    fn message_shaped_lines_are_converted_or_refused_cleanly(v in message_like()) {
        let line = v.to_string();
        let _ = read_hello(line.as_bytes());
        let mut s = session();
        match s.on_line(line.as_bytes(), 1_700_000_000_000) {
            Ok(Some(out)) => {
                prop_assert!(!matches!(out, Outbound::Hello(_)));
                check_output(&out);
            }
            Ok(None) => {}
            Err(LineFault::Refuse(r)) => prop_assert_eq!(r.code(), "SECOND_HELLO"),
            Err(LineFault::Skip(_)) => {}
        }
        // An outbox line can never become data or a hello.
        if v["type"] == "outbox" {
            if let Ok(Some(out)) = s.on_line(line.as_bytes(), 1_700_000_000_000) {
                prop_assert!(matches!(out, Outbound::Log(_) | Outbound::Signal(_) | Outbound::Error(_)));
            }
        }
    }

    #[test]
    fn quotes_reach_true_utc(
        quarters in -56i64..=56,
        utc_ms in 946_684_800_000i64..4_102_444_800_000,
        bid in 0.0001f64..1e6,
        spread in 0u32..5000,
        digits in 0u32..=8,
    ) {
        let offset = quarters * 900;
        let hello = format!(r#"{{"type":"hello","protocol":2,"key":"k","gmt_offset_s":{offset}}}"#);
        let h = read_hello(hello.as_bytes()).unwrap();
        let mut s = Session::start(&h, "a".into(), &Clocks::default(), utc_ms);
        let point = 10f64.powi(-(digits as i32));
        let ask = bid + spread as f64 * point;
        let line = json!({"type": "quote", "symbol": "X", "bid": bid, "ask": ask, "point": point,
                          "digits": digits, "time": utc_ms + offset * 1000}).to_string();
        let Ok(Some(Outbound::Quote(q))) = s.on_line(line.as_bytes(), utc_ms) else {
            // A bid that rounds to 0 at these digits is not a price.
            prop_assert!((bid * 10f64.powi(digits as i32)).round() == 0.0);
            return Ok(());
        };
        let expected = chrono::DateTime::from_timestamp_millis(utc_ms).unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        prop_assert_eq!(q.timestamp, expected);
        prop_assert!((q.spread - spread as i64).abs() <= 1, "{} vs {}", q.spread, spread);
    }

    #[test]
    fn the_clock_converts_recent_times_with_the_offset_in_force(
        changes in prop::collection::vec((-56i64..=56, 0i64..10_000_000_000), 0..40),
        probe in 0i64..1_000_000,
    ) {
        let mut clock = ServerClock::new(0);
        let mut now = 1_700_000_000_000i64;
        let mut last = 0;
        for (q, step) in changes {
            now += step;
            last = checked_offset(q * 900).unwrap();
            clock.set(last, now);
        }
        // A time at least 15 minutes after the last change is in force.
        let utc = now + 900_000 + probe;
        prop_assert_eq!(clock.to_utc(utc + last * 1000), utc);
        prop_assert_eq!(clock.offset_s(), last);
    }
}
