//! The JetStream read API against a real `nats-server -js` (on a free port,
//! stopped by PID): paged reads of one subject end at its last entry
//! without waiting, hold one page at a time, and report what retention
//! dropped.

use bus::{NatsBus, NatsOptions, StreamLimits};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Nats {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats() -> Nats {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let dir = tempfile::tempdir().expect("temp dir");
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH (apt-get install nats-server; PATH=$PATH:/usr/sbin)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Nats {
        child,
        port,
        _dir: dir,
    }
}

async fn bus(n: &Nats, limits: &StreamLimits) -> NatsBus {
    let bus = NatsBus::connect(&NatsOptions {
        url: format!("nats://127.0.0.1:{}", n.port),
        name: "bus-test".into(),
    })
    .await
    .expect("connect");
    bus.ensure_streams("t", limits).await.expect("streams");
    bus
}

async fn publish(bus: &NatsBus, subject: &str, n: usize) {
    for i in 0..n {
        bus.publish_stored(
            subject.into(),
            format!("{{\"i\":{i}}}").into(),
            Default::default(),
        )
        .await
        .expect("stored");
    }
}

#[tokio::test]
async fn pages_end_at_the_subjects_last_entry_without_waiting() {
    let n = nats();
    let bus = bus(&n, &StreamLimits::default()).await;
    assert_eq!(bus.subject_last_seq("t", "t.a.logs").await.unwrap(), 0);
    assert_eq!(bus.events_position("t").await.unwrap().last, 0);
    // Two accounts and two channels interleaved: a's logs are 1, 3, 5, ...
    for _ in 0..25 {
        publish(&bus, "t.a.logs", 1).await;
        publish(&bus, "t.b.signals", 1).await;
    }
    let last = bus.subject_last_seq("t", "t.a.logs").await.unwrap();
    assert_eq!(last, 49);
    assert_eq!(bus.events_position("t").await.unwrap().last, 50);

    let started = Instant::now();
    let mut pages = bus.read_events("t", "t.a.logs", 10, last).await.unwrap();
    let mut seqs = Vec::new();
    loop {
        let page = pages.next_page(4).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4, "a page holds at most what was asked");
        seqs.extend(page.iter().map(|m| m.seq.unwrap()));
    }
    assert_eq!(seqs, (11..=49).step_by(2).collect::<Vec<_>>());
    assert!(pages.is_done() && pages.next_seq() == 50);
    // A quiet channel ends on its last entry, not on a timeout.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // An empty range opens nothing and is done at once.
    let mut none = bus.read_events("t", "t.a.logs", 49, 49).await.unwrap();
    assert!(none.next_page(10).await.unwrap().is_empty());
    // Entries published after `until` are not part of the read.
    publish(&bus, "t.a.logs", 3).await;
    let mut upto = bus.read_events("t", "t.a.logs", 40, 49).await.unwrap();
    let got: Vec<u64> = upto
        .next_page(100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq.unwrap())
        .collect();
    assert_eq!(got, [41, 43, 45, 47, 49]);
}

#[tokio::test]
async fn retention_shows_as_a_lost_range() {
    let n = nats();
    let limits = StreamLimits {
        events_max_messages: 10,
        ..StreamLimits::default()
    };
    let bus = bus(&n, &limits).await;
    publish(&bus, "t.a.logs", 30).await;
    let pos = bus.events_position("t").await.unwrap();
    assert_eq!((pos.first, pos.last), (21, 30));
    let last = bus.subject_last_seq("t", "t.a.logs").await.unwrap();
    assert_eq!(pos.lost_after(5, last), Some((6, 20)));
    assert_eq!(pos.lost_after(25, last), None);
    // What is still there reads from the first stored entry on.
    let mut pages = bus.read_events("t", "t.a.logs", 5, last).await.unwrap();
    let first = pages.next_page(100).await.unwrap();
    assert_eq!(first.first().and_then(|m| m.seq), Some(21));
    assert_eq!(first.len(), 10);
}

#[tokio::test]
async fn a_stopped_server_fails_the_page_instead_of_hanging() {
    let mut n = nats();
    let bus = bus(&n, &StreamLimits::default()).await;
    publish(&bus, "t.a.logs", 5).await;
    let mut pages = bus.read_events("t", "t.a.logs", 0, 5).await.unwrap();
    let _ = n.child.kill();
    let _ = n.child.wait();
    let started = Instant::now();
    let mut outcome = Ok(());
    for _ in 0..10 {
        match pages.next_page(1).await {
            Ok(p) if p.is_empty() => break,
            Ok(_) => {}
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    // Either the consumer had the five already, or the read fails in time.
    assert!(started.elapsed() < Duration::from_secs(10));
    if outcome.is_ok() {
        assert!(pages.is_done());
    }
}
