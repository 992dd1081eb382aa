//! `storm`: a replica dies under its dashboards and they all come back at
//! once on the survivor.
//!
//! Two replicas share NATS (JetStream) and Redis. `--clients` Socket.IO
//! clients ("members") connect to the victim and subscribe to logs and
//! quotes; `--observers` clients on the survivor subscribe to quotes only
//! and have their quote latency measured. Logs are published through
//! JetStream at `--log-rate` (each publish acknowledged, so the benchmark
//! knows every entry's `seq` and when it was stored) and quotes at
//! `--quote-rate`. After `--before` seconds the victim is SIGKILLed; every
//! member reconnects to the survivor at once with `auth.session` and
//! `auth.last_seq` (the last log entry it holds).
//!
//! Reported: seconds until every member is live again (it has received an
//! entry newer than everything stored when its resumed `connected`
//! arrived), entries lost (after the `live_after.logs` of the member's
//! `subscribed` and never received: must be 0), duplicates (also as
//! seconds of log traffic per member), stale entries (at or before
//! `live_after.logs` and still sent to it: must be 0), explicit
//! `RESUME_GAP`s, the survivor's RSS before the kill and its peak during
//! the storm, and the observers' quote latency before and during the storm.

use crate::eio::{self, Packet, Sio};
use crate::publisher;
use crate::stats::{self, now_us, Shared};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// An entry stored this long before a member sent `subscribe` and still
/// sent to it is stale. The slack covers the relay's lag between
/// JetStream's acknowledgement and the fan-out on a busy machine.
pub const STALE_SLACK: Duration = Duration::from_secs(1);
/// How long one member waits for a connection or a reply before retrying.
const PATIENCE: Duration = Duration::from_secs(30);

/// What the storm run is told.
pub struct Plan {
    pub victim: SocketAddr,
    pub survivor: SocketAddr,
    pub victim_pid: u32,
    pub survivor_pid: Option<u32>,
    pub nats_url: String,
    pub prefix: String,
    pub account: String,
    /// One token per member (distinct `sub`s).
    pub tokens: Vec<String>,
    /// One token per observer.
    pub observer_tokens: Vec<String>,
    pub log_rate: f64,
    pub quote_rate: f64,
    pub symbols: usize,
    pub connect_rate: f64,
    pub before: Duration,
    pub after_max: Duration,
    pub tail: Duration,
}

/// One log entry as the publisher stored it.
#[derive(Debug, Clone, Copy)]
struct Stored {
    seq: u64,
    at_us: u64,
}

/// What one member saw.
#[derive(Debug, Default)]
struct Member {
    ready: bool,
    session: Option<String>,
    subscribe_sent_us: u64,
    subscribed_us: u64,
    /// The last stored seq when the resumed `connected` arrived.
    resume_frontier: Option<u64>,
    resumed: bool,
    live_us: Option<u64>,
    logs: Vec<u64>,
    gaps: usize,
    reconnects: usize,
    /// The `last_seq` it reported when it resumed (the newest entry held).
    reported: Option<u64>,
    /// When its resumed `connected` arrived.
    resumed_us: u64,
    /// The `live_after.logs` of its `subscribed`: every entry after it is
    /// owed to the member, none at or before it.
    live_after: Option<u64>,
}

/// State the tasks share.
struct Storm {
    plan: Plan,
    stored: Mutex<Vec<Stored>>,
    frontier: AtomicU64,
    killed: AtomicBool,
    stop: AtomicBool,
    ready: AtomicUsize,
    live: AtomicUsize,
    observers_ready: AtomicUsize,
    /// (receipt µs, latency µs) of every observer quote.
    quote_latency: Mutex<Vec<(u64, u64)>>,
}

pub async fn run(plan: Plan) -> Result<Value, String> {
    let members = plan.tokens.len();
    let storm = Arc::new(Storm {
        plan,
        stored: Mutex::new(Vec::new()),
        frontier: AtomicU64::new(0),
        killed: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        ready: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
        observers_ready: AtomicUsize::new(0),
        quote_latency: Mutex::new(Vec::new()),
    });
    let p = &storm.plan;
    let logs = start_logs(storm.clone()).await?;
    let horizon = p.before + p.after_max + p.tail + Duration::from_secs(120);
    let _quotes = publisher::start(
        publisher::Plan {
            nats_url: p.nats_url.clone(),
            prefix: p.prefix.clone(),
            account: p.account.clone(),
            rate: p.quote_rate,
            symbols: p.symbols,
            until: Instant::now() + horizon,
        },
        Arc::new(Shared::default()),
    )
    .await?;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..p.observer_tokens.len() {
        tasks.spawn(observer(storm.clone(), i));
    }
    // A few seconds of history before anyone subscribes: none of it may
    // reach a member.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ramp_started = Instant::now();
    let pace = Duration::from_secs_f64(1.0 / p.connect_rate.max(1.0));
    let results: Vec<Arc<Mutex<Member>>> = (0..members)
        .map(|_| Arc::new(Mutex::new(Member::default())))
        .collect();
    for (i, slot) in results.iter().enumerate() {
        tokio::time::sleep_until((ramp_started + pace * i as u32).into()).await;
        tasks.spawn(member(storm.clone(), i, slot.clone()));
    }
    let ramp_deadline = Instant::now() + Duration::from_secs(90);
    while storm.ready.load(Relaxed) < members
        || storm.observers_ready.load(Relaxed) < p.observer_tokens.len()
    {
        if Instant::now() > ramp_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    let ready = storm.ready.load(Relaxed);

    tokio::time::sleep(p.before).await;
    let rss_before = p
        .survivor_pid
        .and_then(|pid| crate::procstat::rss_kib(&pid.to_string()));
    let kill_us = now_us();
    storm.killed.store(true, Relaxed);
    // SAFETY: kill(2) on the pid we were given for the victim.
    let killed = unsafe { libc::kill(p.victim_pid as libc::pid_t, libc::SIGKILL) } == 0;
    if !killed {
        storm.stop.store(true, Relaxed);
        return Err(format!("cannot SIGKILL the victim (pid {})", p.victim_pid));
    }
    let mut rss_peak = rss_before;
    let storm_deadline = Instant::now() + p.after_max;
    while storm.live.load(Relaxed) < ready && Instant::now() < storm_deadline {
        if let Some(rss) = p
            .survivor_pid
            .and_then(|pid| crate::procstat::rss_kib(&pid.to_string()))
        {
            rss_peak = Some(rss_peak.unwrap_or(0).max(rss));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_live_us = now_us();
    tokio::time::sleep(p.tail).await;
    storm.stop.store(true, Relaxed);
    let published = logs.await.map_err(|e| e.to_string())?;
    // Entries still in flight.
    tokio::time::sleep(Duration::from_secs(3)).await;
    tasks.abort_all();

    let stored = storm
        .stored
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut out = Totals::default();
    let mut live_s = Vec::new();
    for (i, slot) in results.iter().enumerate() {
        let m = slot.lock().unwrap_or_else(|p| p.into_inner());
        if !m.ready {
            continue;
        }
        out.add(i, &m, &stored, kill_us);
        if let Some(live) = m.live_us {
            live_s.push(live.saturating_sub(kill_us) as f64 / 1e6);
        }
    }
    live_s.sort_by(|a, b| a.total_cmp(b));
    let lat = storm
        .quote_latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (mut base, mut during) = (stats::new_histogram(), stats::new_histogram());
    for (at, l) in lat {
        if at < kill_us {
            let _ = base.record(l);
        } else if at <= all_live_us {
            let _ = during.record(l);
        }
    }
    Ok(json!({
        "members": members,
        "members_ready": ready,
        "observers": p.observer_tokens.len(),
        "log_rate": p.log_rate,
        "quote_rate": p.quote_rate,
        "ramp_s": round3(ramp_s),
        "logs_published": published,
        "resumed": out.resumed,
        "live_again": live_s.len(),
        "all_live_s": live_s.last().copied().map(round3),
        "live_p50_s": live_s.get(live_s.len() / 2).copied().map(round3),
        "lost": out.lost,
        "lost_before_kill": out.lost_before_kill,
        "lost_sample": out.lost_sample,
        "duplicates": out.duplicates,
        "duplicates_max_per_member": out.dup_max,
        "duplicates_max_s_of_traffic": round3(out.dup_max as f64 / p.log_rate.max(1e-9)),
        "stale": out.stale,
        "resume_gaps": out.gaps,
        "reconnects": out.reconnects,
        "survivor_rss_before_kib": rss_before,
        "survivor_rss_peak_kib": rss_peak,
        "observer_quote_latency_before_us": stats::summary(&base),
        "observer_quote_latency_storm_us": stats::summary(&during),
    }))
}

#[derive(Default)]
struct Totals {
    resumed: usize,
    lost: u64,
    /// Lost entries older than what the member said it held when it
    /// resumed: skipped while it was live on the victim, not by the resume.
    lost_before_kill: u64,
    /// A few lost entries, to tell where they went: member, seq, ms
    /// from the kill to its storage, ms from the kill to the member's
    /// resumed `connected`, the `last_seq` it reported.
    lost_sample: Vec<Value>,
    duplicates: u64,
    /// The most duplicates one member got.
    dup_max: u64,
    stale: u64,
    gaps: usize,
    reconnects: usize,
}

impl Totals {
    fn add(&mut self, i: usize, m: &Member, stored: &[Stored], kill_us: u64) {
        self.resumed += usize::from(m.resumed);
        self.gaps += m.gaps;
        self.reconnects += m.reconnects;
        let got: std::collections::HashSet<u64> = m.logs.iter().copied().collect();
        let duplicates = (m.logs.len() - got.len()) as u64;
        self.duplicates += duplicates;
        self.dup_max = self.dup_max.max(duplicates);
        let stale_before = m
            .subscribe_sent_us
            .saturating_sub(STALE_SLACK.as_micros() as u64);
        for s in stored {
            // Where the subscription started, when the gateway said; else
            // when the member learnt it had.
            let (owed, before_start) = match m.live_after {
                Some(after) => (s.seq > after, s.seq <= after),
                None => (s.at_us > m.subscribed_us, s.at_us < stale_before),
            };
            if owed && !got.contains(&s.seq) {
                self.lost += 1;
                if m.reported.is_some_and(|r| s.seq < r) {
                    self.lost_before_kill += 1;
                }
                if self.lost_sample.len() < 30 {
                    let ms = |us: u64| (us as i64 - kill_us as i64) / 1000;
                    self.lost_sample.push(json!([
                        i,
                        s.seq,
                        ms(s.at_us),
                        ms(m.resumed_us),
                        m.reported
                    ]));
                }
            }
            if before_start && got.contains(&s.seq) {
                self.stale += 1;
            }
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Publishes logs through JetStream at the plan's rate until `stop`,
/// recording each entry's stream sequence; returns how many were stored.
async fn start_logs(storm: Arc<Storm>) -> Result<tokio::task::JoinHandle<u64>, String> {
    let client = async_nats::connect(&storm.plan.nats_url)
        .await
        .map_err(|e| format!("cannot connect to NATS: {e}"))?;
    let js = async_nats::jetstream::new(client);
    let subject = format!("{}.{}.logs", storm.plan.prefix, storm.plan.account);
    let every = Duration::from_secs_f64(1.0 / storm.plan.log_rate.max(0.1));
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut n = 0u64;
        while !storm.stop.load(Relaxed) {
            tick.tick().await;
            let payload = format!(
                r#"{{"timestamp":"{}","level":"INFO","message":"storm {n}","module":"bench","extra":{{}}}}"#,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            let Ok(ack) = js.publish(subject.clone(), payload.into()).await else {
                continue;
            };
            let Ok(ack) = ack.await else { continue };
            let at_us = now_us();
            storm
                .stored
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Stored {
                    seq: ack.sequence,
                    at_us,
                });
            storm.frontier.fetch_max(ack.sequence, Relaxed);
            n += 1;
        }
        n
    }))
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn open(addr: SocketAddr, auth: Value) -> Result<Ws, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| e.to_string())?;
    // Engine.IO open, then join the namespace with the auth object.
    loop {
        let msg = ws
            .next()
            .await
            .ok_or("closed")?
            .map_err(|e| e.to_string())?;
        if let Message::Text(t) = msg {
            if matches!(eio::parse(t.as_str()), Packet::Open(_)) {
                break;
            }
        }
    }
    ws.send(Message::text(format!("40{auth}")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The `seq` of a `logs_update` payload (the gateway appends it last).
fn seq_of(data: &str) -> Option<u64> {
    let at = data.rfind("\"seq\":")? + 6;
    let digits: String = data[at..]
        .chars()
        .skip_while(|c| *c == ' ')
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A dashboard on the victim that resumes on the survivor.
async fn member(storm: Arc<Storm>, i: usize, slot: Arc<Mutex<Member>>) {
    let token = storm.plan.tokens[i].clone();
    let mut addr = storm.plan.victim;
    let mut first = true;
    while !storm.stop.load(Relaxed) {
        let (session, last_log) = {
            let m = slot.lock().unwrap_or_else(|p| p.into_inner());
            (m.session.clone(), m.logs.iter().max().copied())
        };
        // A dashboard resumes from the last entry it holds (`last_seq`):
        // what a killed replica had written but the kernel never handed
        // over (a reset discards it) is replayed too.
        let auth = match (&session, last_log) {
            (Some(s), Some(seq)) => {
                slot.lock().unwrap_or_else(|p| p.into_inner()).reported = Some(seq);
                json!({"token": token, "session": s, "last_seq": {"logs": seq}})
            }
            (Some(s), None) => json!({"token": token, "session": s}),
            (None, _) => json!({"token": token}),
        };
        let connected = tokio::time::timeout(PATIENCE, open(addr, auth)).await;
        if let Ok(Ok(mut ws)) = connected {
            serve(&storm, &slot, &mut ws, first).await;
        }
        if !first || storm.killed.load(Relaxed) {
            // Gone: the victim was killed (or the survivor dropped us).
            slot.lock().unwrap_or_else(|p| p.into_inner()).reconnects += 1;
        }
        first = false;
        if storm.killed.load(Relaxed) {
            addr = storm.plan.survivor;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Reads one connection until it ends.
async fn serve(storm: &Storm, slot: &Mutex<Member>, ws: &mut Ws, first: bool) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let text = text.as_str();
        if let Some(rest) = text.strip_prefix("42[\"logs_update\",") {
            let Some(seq) = seq_of(rest) else { continue };
            let mut m = slot.lock().unwrap_or_else(|p| p.into_inner());
            m.logs.push(seq);
            if m.live_us.is_none() && m.resume_frontier.is_some_and(|f| seq > f) {
                m.live_us = Some(now_us());
                storm.live.fetch_add(1, Relaxed);
            }
            continue;
        }
        if text.starts_with("42[\"quotes\",") {
            continue;
        }
        match eio::parse(text) {
            // A failed send shows as the next read failing.
            Packet::Ping => {
                let _ = ws.send(Message::text(eio::PONG)).await;
            }
            Packet::Close | Packet::Message(Sio::Disconnect) => return,
            Packet::Message(Sio::ConnectError(_)) => return,
            Packet::Message(Sio::Event { name, data }) => {
                let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                match name {
                    "connected" => {
                        if first {
                            {
                                let mut m = slot.lock().unwrap_or_else(|p| p.into_inner());
                                m.session = data["session"].as_str().map(str::to_owned);
                                m.subscribe_sent_us = now_us();
                            }
                            let sub = r#"42["subscribe",{"channels":["logs","quotes"]}]"#;
                            if ws.send(Message::text(sub)).await.is_err() {
                                return;
                            }
                        } else if storm.killed.load(Relaxed) {
                            let mut m = slot.lock().unwrap_or_else(|p| p.into_inner());
                            m.resumed |= data["resumed"] == true;
                            if m.resumed_us == 0 {
                                m.resumed_us = now_us();
                            }
                            if m.resume_frontier.is_none() {
                                m.resume_frontier = Some(storm.frontier.load(Relaxed));
                            }
                        }
                    }
                    "subscribed" if first => {
                        let mut m = slot.lock().unwrap_or_else(|p| p.into_inner());
                        if !m.ready {
                            m.ready = true;
                            m.subscribed_us = now_us();
                            m.live_after = data["live_after"]["logs"].as_u64();
                            storm.ready.fetch_add(1, Relaxed);
                        }
                    }
                    "error" if data["code"] == "RESUME_GAP" => {
                        slot.lock().unwrap_or_else(|p| p.into_inner()).gaps += 1;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// A dashboard that was on the survivor all along, measuring quotes.
async fn observer(storm: Arc<Storm>, i: usize) {
    let token = storm.plan.observer_tokens[i].clone();
    let Ok(Ok(mut ws)) = tokio::time::timeout(
        PATIENCE,
        open(storm.plan.survivor, json!({ "token": token })),
    )
    .await
    else {
        return;
    };
    let mut local = Vec::new();
    let mut ready = false;
    while !storm.stop.load(Relaxed) {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await
        else {
            continue;
        };
        let Message::Text(text) = msg else { continue };
        let text = text.as_str();
        if let Some(rest) = text.strip_prefix("42[\"quotes\",") {
            let data = rest.strip_suffix(']').unwrap_or(rest);
            if let Some(stamp) = eio::read_stamp(data) {
                let now = now_us();
                local.push((now, now.saturating_sub(stamp.sent_us)));
            }
            continue;
        }
        match eio::parse(text) {
            Packet::Ping => {
                let _ = ws.send(Message::text(eio::PONG)).await;
            }
            Packet::Message(Sio::Event {
                name: "connected", ..
            }) => {
                let _ = ws.send(Message::text(eio::SUBSCRIBE_QUOTES)).await;
            }
            Packet::Message(Sio::Event {
                name: "subscribed", ..
            }) if !ready => {
                ready = true;
                storm.observers_ready.fetch_add(1, Relaxed);
            }
            Packet::Close | Packet::Message(Sio::Disconnect) => break,
            _ => {}
        }
        if local.len() >= 1024 {
            storm
                .quote_latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut local);
        }
    }
    storm
        .quote_latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .append(&mut local);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seq_the_gateway_appends() {
        assert_eq!(seq_of(r#"{"message":"a \"seq\":1","seq":42}]"#), Some(42));
        assert_eq!(seq_of(r#"{"message":"x"}"#), None);
    }

    #[test]
    fn loss_and_staleness_are_counted_against_the_subscription() {
        let stored: Vec<Stored> = (1..=10)
            .map(|seq| Stored {
                seq,
                at_us: seq * 1_000_000,
            })
            .collect();
        let m = Member {
            ready: true,
            // Asked at 5 s, subscribed at 5.5 s: 1..=3 are stale, 6..=10 owed.
            subscribe_sent_us: 5_000_000,
            subscribed_us: 5_500_000,
            logs: vec![2, 6, 7, 7, 9, 10],
            ..Member::default()
        };
        let mut t = Totals::default();
        t.add(0, &m, &stored, 0);
        assert_eq!((t.lost, t.stale, t.duplicates), (1, 1, 1));
    }
}
