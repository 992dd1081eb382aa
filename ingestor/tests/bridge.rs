//! The bridge end to end on a memory bus: TCP clients speaking
//! `mql5/PROTOCOL.md`, every refusal closing only its own connection and
//! publishing nothing, malformed lines skipped, true UTC, a silent terminal
//! declared down, and TLS.

use bus::{Bus, BusMessage, MemoryBus, Subscription};
use futures::StreamExt;
use ingestor::bridge::keys::Keys;
use ingestor::bridge::{self, BridgeConfig};
use ingestor::{Metrics, Publisher};
use protocol::payload::{LogEntry, Order, Position, Quote};
use protocol::SubjectScheme;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const KEY: &str = "test-key-0123456789abcdef";
const T0: i64 = 1_704_110_400_000; // 2024-01-01T12:00:00Z
const H: i64 = 3_600_000;

async fn next(sub: &mut Subscription) -> BusMessage {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message within 5 s")
        .expect("bus open")
}

/// Nothing more on the bus for a while (used after a refusal).
async fn nothing(sub: &mut Subscription, what: &str) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!("{what}: published {} {:?}", m.subject, m.payload);
    }
}

struct Bridge {
    sub: Subscription,
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start_with(cfg: impl FnOnce(&mut BridgeConfig)) -> Bridge {
    let mem = MemoryBus::new();
    let sub = mem.subscribe("mt5.>");
    let publisher = Publisher::new(Bus::Memory(mem), SubjectScheme::default(), demo());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = BridgeConfig::new(addr, Keys::load(Some(KEY), None).unwrap());
    config.outlet.state_interval = Duration::ZERO;
    cfg(&mut config);
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (stop, metrics) = (stop.clone(), metrics.clone());
        async move {
            bridge::serve(publisher, listener, config, metrics, stop)
                .await
                .unwrap()
        }
    });
    Bridge {
        sub,
        addr,
        metrics,
        stop,
        task,
    }
}

async fn start() -> Bridge {
    start_with(|_| {}).await
}

impl Bridge {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("bridge stops")
            .unwrap();
    }
}

fn hello(key: &str, account: &str, offset: i64) -> String {
    format!(
        "{{\"type\":\"hello\",\"protocol\":2,\"key\":\"{key}\",\"account\":\"{account}\",\"login\":5012345,\"server\":\"Broker-Live\",\"version\":\"2.0\",\"gmt_offset_s\":{offset},\"heartbeat_ms\":60000}}\n"
    )
}

/// Reads the terminal's answers until `type` comes, or the socket closes.
async fn answer<S: AsyncRead + Unpin>(reader: &mut BufReader<S>) -> Option<serde_json::Value> {
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => serde_json::from_str(&line).ok(),
        _ => None,
    }
}

/// The connection ends (EOF or reset) within 5 s.
async fn closed<S: AsyncRead + Unpin>(reader: &mut BufReader<S>) {
    let mut buf = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => buf.clear(),
            Err(_) => panic!("connection still open"),
        }
    }
}

/// Connects, sends `first` and returns the answer line.
async fn connect(
    addr: std::net::SocketAddr,
    first: &str,
) -> (BufReader<TcpStream>, serde_json::Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(first.as_bytes()).await.unwrap();
    let mut r = BufReader::new(s);
    let a = answer(&mut r).await.expect("an answer");
    (r, a)
}

/// The account the tests publish under.
fn demo() -> protocol::Account {
    protocol::Account::new("demo").expect("a valid label")
}

#[tokio::test]
async fn ea_lines_become_spec_payloads_in_true_utc() {
    let mut b = start().await;
    // A UTC+2 trade server: every terminal time is two hours ahead of UTC.
    let (mut ea, welcome) = connect(b.addr, &hello(KEY, "", 7200)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["account"], "demo");

    let quote = format!(
        "{{\"type\":\"quote\",\"symbol\":\"EURUSD\",\"bid\":1.085,\"ask\":1.0852,\"point\":0.00001,\"digits\":5,\"time\":{}}}\n",
        T0 + 2 * H
    );
    ea.get_mut().write_all(quote.as_bytes()).await.unwrap();
    let m = next(&mut b.sub).await;
    assert_eq!(m.subject, "mt5.demo.quotes.EURUSD");
    let q: Quote = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(
        (q.spread, q.timestamp.as_str()),
        (20, "2024-01-01T12:00:00.000Z")
    );
    assert!(m.headers.msg_id.is_some() && m.headers.traceparent.is_some());

    // Garbage, an unknown type, a bad field: skipped, connection kept.
    ea.get_mut()
        .write_all(b"this is not json\n{\"type\":\"launch_rockets\"}\n{\"type\":\"quote\",\"symbol\":\"X\",\"bid\":-1,\"ask\":1,\"digits\":2}\n\r\n")
        .await
        .unwrap();
    let lines = format!(
        "{{\"type\":\"positions\",\"items\":[{{\"ticket\":7,\"symbol\":\"GBPUSD\",\"type\":1,\"volume\":0.1,\"price_open\":1.27,\"price_current\":1.269,\"sl\":1.275,\"tp\":1.26,\"profit\":10,\"swap\":-0.2,\"commission\":-0.7,\"time\":{},\"comment\":\"MACD_Cross\"}}]}}\n\
         {{\"type\":\"orders\",\"items\":[{{\"ticket\":8,\"symbol\":\"EURUSD\",\"type\":3,\"volume\":0.05,\"price_open\":1.09,\"sl\":1.095,\"tp\":1.08,\"time_setup\":{},\"state\":1,\"comment\":\"Manual order\"}}]}}\n\
         {{\"type\":\"account\",\"balance\":10000,\"equity\":10010,\"margin\":270,\"free_margin\":9740,\"margin_level\":3707.4,\"profit\":10,\"currency\":\"USD\"}}\n\
         {{\"type\":\"error\",\"error\":\"Failed to place order\",\"details\":\"Insufficient margin\",\"code\":\"INSUFFICIENT_MARGIN\"}}\n",
        T0, T0 + H
    );
    ea.get_mut().write_all(lines.as_bytes()).await.unwrap();
    let mut got = std::collections::HashMap::new();
    for _ in 0..4 {
        let m = next(&mut b.sub).await;
        got.insert(m.subject.clone(), m);
    }
    let p: Vec<Position> = serde_json::from_slice(&got["mt5.demo.positions"].payload).unwrap();
    assert_eq!(
        (p[0].kind.as_str(), p[0].time.as_str()),
        ("sell", "2024-01-01T10:00:00.000Z")
    );
    let o: Vec<Order> = serde_json::from_slice(&got["mt5.demo.orders"].payload).unwrap();
    assert_eq!(
        (o[0].kind.as_str(), o[0].time_setup.as_str()),
        ("sell_limit", "2024-01-01T11:00:00.000Z")
    );
    assert!(got.contains_key("mt5.demo.account"));
    let l: LogEntry = serde_json::from_slice(&got["mt5.demo.logs"].payload).unwrap();
    assert_eq!(
        (l.level.as_str(), l.extra["code"].as_str()),
        ("ERROR", Some("INSUFFICIENT_MARGIN"))
    );
    assert_eq!(l.extra["event"], "error");
    assert_eq!(
        b.metrics
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );

    // A terminal that names its account publishes under it.
    let (mut ea2, welcome) = connect(b.addr, &hello(KEY, "live-7", 10_800)).await;
    assert_eq!(welcome["account"], "live-7");
    ea2.get_mut()
        .write_all(b"{\"type\":\"heartbeat\",\"gmt_offset_s\":10800}\n{\"type\":\"log\",\"level\":\"INFO\",\"message\":\"hi\",\"module\":\"ea\"}\n")
        .await
        .unwrap();
    let m = next(&mut b.sub).await;
    assert_eq!(m.subject, "mt5.live-7.logs");
    drop((ea, ea2));
    b.stop().await;
}

#[tokio::test]
async fn every_refusal_closes_only_its_connection_and_publishes_nothing() {
    let mut b = start().await;
    // A good terminal streams throughout.
    let (mut good, _) = connect(b.addr, &hello(KEY, "good", 0)).await;
    let quote =
        "{\"type\":\"quote\",\"symbol\":\"EURUSD\",\"bid\":1.1,\"ask\":1.1002,\"digits\":5}\n";
    let data = "{\"type\":\"positions\",\"items\":[]}\n";
    let cases: Vec<(String, &str)> = vec![
        (hello("wrong-key-0123456789abc", "", 0) + data, "BAD_KEY"),
        (
            "{\"type\":\"hello\",\"protocol\":2,\"gmt_offset_s\":0}\n".to_owned() + data,
            "NO_KEY",
        ),
        (quote.to_owned() + &hello(KEY, "", 0), "NOT_HELLO"),
        (
            hello(KEY, "x", 0) + &hello(KEY, "y", 0) + data,
            "SECOND_HELLO",
        ),
        (
            hello(KEY, "x", 0).replace("\"protocol\":2", "\"protocol\":1") + data,
            "UNSUPPORTED_PROTOCOL",
        ),
        (hello(KEY, "x", 99_999) + data, "INVALID_HELLO"),
    ];
    for (input, code) in cases {
        let mut s = TcpStream::connect(b.addr).await.unwrap();
        s.write_all(input.as_bytes()).await.unwrap();
        let mut r = BufReader::new(s);
        let mut last = answer(&mut r).await.expect("an answer");
        if last["type"] == "welcome" {
            last = answer(&mut r).await.expect("a refusal");
        }
        assert_eq!(
            (last["type"].as_str(), last["code"].as_str()),
            (Some("refused"), Some(code)),
            "{last}"
        );
        closed(&mut r).await;
        nothing(&mut b.sub, code).await;
        assert_eq!(b.metrics.refused_count(code), 1, "{code}");
    }

    // A 20 MB line: closed long before the end of it.
    let mut s = TcpStream::connect(b.addr).await.unwrap();
    s.write_all(hello(KEY, "big", 0).as_bytes()).await.unwrap();
    let big = vec![b'x'; 20 * 1024 * 1024];
    let (rd, mut wr) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        // The write fails once the bridge closes: that is the point.
        let _ = wr.write_all(&big).await;
        let _ = wr.write_all(data.as_bytes()).await;
    });
    let mut r = BufReader::new(rd);
    assert_eq!(answer(&mut r).await.unwrap()["type"], "welcome");
    assert_eq!(answer(&mut r).await.unwrap()["code"], "LINE_TOO_LONG");
    closed(&mut r).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    nothing(&mut b.sub, "20 MB line").await;

    // The good terminal never noticed.
    good.get_mut().write_all(quote.as_bytes()).await.unwrap();
    let m = next(&mut b.sub).await;
    assert_eq!(m.subject, "mt5.good.quotes.EURUSD");
    drop(good);
    b.stop().await;
}

#[tokio::test]
async fn pinned_keys_cannot_publish_for_another_account() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(
        &file,
        "acc-A key-of-terminal-A-000000\nacc-B key-of-terminal-B-000000\n",
    )
    .unwrap();
    let mut b = start_with(|c| c.keys = Keys::load(None, Some(&file)).unwrap()).await;
    let (_r, a) = connect(b.addr, &hello("key-of-terminal-A-000000", "acc-B", 0)).await;
    assert_eq!(a["code"], "ACCOUNT_NOT_ALLOWED");
    nothing(&mut b.sub, "A as B").await;
    let (mut r, a) = connect(b.addr, &hello("key-of-terminal-A-000000", "", 0)).await;
    assert_eq!(a["account"], "acc-A");
    r.get_mut()
        .write_all(b"{\"type\":\"positions\",\"items\":[]}\n")
        .await
        .unwrap();
    assert_eq!(next(&mut b.sub).await.subject, "mt5.acc-A.positions");
    drop(r);
    b.stop().await;
}

#[tokio::test]
async fn a_silent_terminal_is_declared_down() {
    let mut b = start().await;
    // heartbeat_ms 200: down after 600 ms without a line.
    let first = hello(KEY, "quiet", 0).replace("60000", "200");
    let (mut r, _) = connect(b.addr, &first).await;
    let started = std::time::Instant::now();
    let m = next(&mut b.sub).await;
    assert_eq!(m.subject, "mt5.quiet.logs");
    let l: LogEntry = serde_json::from_slice(&m.payload).unwrap();
    assert!(l.message.contains("terminal down"), "{}", l.message);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(answer(&mut r).await.unwrap()["code"], "SILENT");
    closed(&mut r).await;
    assert_eq!(
        b.metrics
            .terminals_down
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    b.stop().await;
}

#[tokio::test]
async fn shutdown_closes_open_connections() {
    let b = start().await;
    let _silent = TcpStream::connect(b.addr).await.unwrap();
    let (_ea, _) = connect(b.addr, &hello(KEY, "", 0)).await;
    b.stop().await;
}

#[tokio::test]
async fn run_reports_a_taken_port() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let publisher = Publisher::new(
        Bus::Memory(MemoryBus::new()),
        SubjectScheme::default(),
        demo(),
    );
    let cfg = BridgeConfig::new(addr, Keys::load(Some(KEY), None).unwrap());
    let err = bridge::run(publisher, cfg, Metrics::new(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// A private CA and a certificate it signed for localhost/127.0.0.1, made
/// with the openssl CLI: `(ca.pem, cert.pem, key.pem)`.
fn private_ca(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |n: &str| dir.join(n);
    let run = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl {args:?} failed");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "1",
            "-subj",
            "/CN=Test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ],
    ]
    .concat());
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

/// A terminal speaking TLS, as the EA with `InpTls` does: a certificate
/// made by openssl, trusted by the client.
#[tokio::test]
async fn tls_terminals() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let acceptor = bridge::tls::acceptor(&cert, &key).unwrap();
    let mut b = start_with(|c| c.tls = Some(acceptor)).await;

    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(b.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(hello(KEY, "tls-acc", 0).as_bytes())
        .await
        .unwrap();
    tls.write_all(b"{\"type\":\"positions\",\"items\":[]}\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut r = BufReader::new(tls);
    assert_eq!(answer(&mut r).await.unwrap()["type"], "welcome");
    assert_eq!(next(&mut b.sub).await.subject, "mt5.tls-acc.positions");

    // Plain TCP on a TLS port gets nowhere and publishes nothing.
    let mut plain = TcpStream::connect(b.addr).await.unwrap();
    plain
        .write_all(hello(KEY, "plain", 0).as_bytes())
        .await
        .unwrap();
    plain
        .write_all(b"{\"type\":\"positions\",\"items\":[]}\n")
        .await
        .unwrap();
    let mut pr = BufReader::new(plain);
    closed(&mut pr).await;
    nothing(&mut b.sub, "plain TCP on the TLS port").await;
    drop(r);
    b.stop().await;
}
