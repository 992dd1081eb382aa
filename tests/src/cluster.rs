//! The production shape on free ports: `nats-server -js`, `redis-server`,
//! N gateway replicas (`REPLICA_ID` `gw-1`…`gw-N`, HS256 with
//! [`crate::SECRET`]) and the real nginx in front of them.

use crate::nginx::Nginx;
use crate::procs::{Gateway, Ingestor, NatsServer, RedisServer};
use crate::SECRET;
use std::time::Duration;

pub struct Cluster {
    // Fields drop in order: the balancer first, the servers last.
    pub nginx: Nginx,
    pub gateways: Vec<Gateway>,
    pub redis: RedisServer,
    pub nats: NatsServer,
    /// The MT5 account the tokens of [`Cluster::token`] may see.
    pub account: String,
}

impl Cluster {
    /// Starts everything; `gateway_env` is added to every replica's
    /// environment.
    pub fn start(account: &str, replicas: usize, gateway_env: &[(&str, &str)]) -> Cluster {
        let nats = NatsServer::start();
        let redis = RedisServer::start();
        let (nats_url, redis_url) = (nats.url(), redis.url());
        let gateways: Vec<Gateway> = std::thread::scope(|scope| {
            let starting: Vec<_> = (1..=replicas)
                .map(|i| {
                    let (nats_url, redis_url) = (&nats_url, &redis_url);
                    scope.spawn(move || {
                        let id = format!("gw-{i}");
                        let mut env: Vec<(&str, &str)> = vec![
                            ("NATS_URL", nats_url),
                            ("REDIS_URL", redis_url),
                            ("JWT_SECRET", SECRET),
                            ("REPLICA_ID", &id),
                        ];
                        env.extend_from_slice(gateway_env);
                        Gateway::start(&env, false)
                    })
                })
                .collect();
            starting
                .into_iter()
                .map(|h| h.join().expect("a gateway failed to start"))
                .collect()
        });
        let addrs: Vec<_> = gateways.iter().map(Gateway::addr).collect();
        let nginx = Nginx::start(&addrs);
        Cluster {
            nginx,
            gateways,
            redis,
            nats,
            account: account.to_owned(),
        }
    }

    /// `ingestor --account ACCOUNT sim SIM_ARGS…` publishing to this NATS.
    pub fn ingest(&self, sim_args: &[&str]) -> Ingestor {
        Ingestor::sim(&self.nats.url(), &self.account, sim_args)
    }

    /// A token for `sub` on this cluster's account, valid for an hour.
    pub fn token(&self, sub: &str) -> String {
        crate::mint(SECRET, sub, Some(&self.account), None, 3600)
    }

    /// The replica whose `REPLICA_ID` is `id` (as in `connected.replica`).
    pub fn replica(&mut self, id: &str) -> &mut Gateway {
        let i = Self::index(id);
        &mut self.gateways[i]
    }

    /// The index in `gateways` of the replica named `id`.
    pub fn index(id: &str) -> usize {
        id.strip_prefix("gw-")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .unwrap_or_else(|| panic!("not a replica id: {id:?}"))
    }

    /// `GET /health/ready` of every replica still answering: (replica,
    /// status, body).
    pub fn readiness(&mut self) -> Vec<(String, u16, serde_json::Value)> {
        self.gateways
            .iter_mut()
            .enumerate()
            .filter_map(|(i, g)| {
                if !g.proc().is_running() {
                    return None;
                }
                let r = crate::http::try_get(g.addr(), "/health/ready", &[]).ok()?;
                Some((format!("gw-{}", i + 1), r.status, r.json()))
            })
            .collect()
    }

    /// Panics if any replica logged a panic or is no longer running
    /// (except those in `gone`).
    pub fn assert_replicas_alive(&mut self, gone: &[&str]) {
        for (i, g) in self.gateways.iter_mut().enumerate() {
            let id = format!("gw-{}", i + 1);
            g.assert_no_panic();
            if !gone.contains(&id.as_str()) {
                assert!(
                    g.proc().is_running(),
                    "replica {id} exited; stderr:\n{}",
                    g.proc().stderr_tail(40)
                );
            }
        }
    }
}

/// How long a resumed client may take to get back (reconnect delay, a
/// dead replica skipped, the replay read from JetStream) on a busy machine.
pub const RESUME_TIMEOUT: Duration = Duration::from_secs(20);

impl Cluster {
    /// The session record the replicas stored for session `id` in Redis,
    /// if any.
    pub fn stored_session(&self, id: &str) -> Option<serde_json::Value> {
        let reply = redis_command(self.redis.port(), &format!("GET mt5:session:{id}"))?;
        serde_json::from_str(&reply).ok()
    }
}

/// Sends one inline command to Redis and returns a bulk, simple string or
/// integer reply (`None` for nil, errors, or no answer).
pub fn redis_command(port: u16, command: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    reader.read_line(&mut head).ok()?;
    let head = head.trim_end();
    match head.as_bytes().first()? {
        b'+' | b':' => Some(head[1..].to_owned()),
        b'$' => {
            let len: i64 = head[1..].parse().ok()?;
            let len = usize::try_from(len).ok()?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).ok()?;
            body.truncate(len);
            String::from_utf8(body).ok()
        }
        _ => None,
    }
}

/// What a client received of the logs and signals sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqSummary {
    pub first: u64,
    pub last: u64,
    /// Distinct entries.
    pub distinct: usize,
    /// Entries received more than once (allowed: same `seq`).
    pub duplicates: usize,
}

/// Checks the contract's promise for event channels: `entries` are
/// `(event, seq)` in the order received (logs and signals of one account
/// that has nothing else on its NATS). Duplicates are dropped (the first
/// copy counts); then each channel's seqs must increase, and together they
/// must cover `first..=last` without a hole.
pub fn check_event_sequence(entries: &[(String, u64)]) -> Result<SeqSummary, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut last_per_channel: std::collections::HashMap<&str, u64> = Default::default();
    let mut duplicates = 0;
    for (event, seq) in entries {
        if !seen.insert(*seq) {
            duplicates += 1;
            continue;
        }
        if let Some(prev) = last_per_channel.insert(event, *seq) {
            if *seq < prev {
                return Err(format!("{event} seq {seq} came after {prev}"));
            }
        }
    }
    let (Some(&first), Some(&last)) = (seen.first(), seen.last()) else {
        return Err("no entries".into());
    };
    let missing: Vec<u64> = (first..=last).filter(|s| !seen.contains(s)).collect();
    if !missing.is_empty() {
        let shown: Vec<_> = missing.iter().take(20).collect();
        return Err(format!(
            "{} seqs missing between {first} and {last}: {shown:?}…",
            missing.len()
        ));
    }
    Ok(SeqSummary {
        first,
        last,
        distinct: seen.len(),
        duplicates,
    })
}

/// `(event, seq)` of every `logs_update` / `signals_update` in `lines`.
pub fn event_seqs(lines: &[crate::Line]) -> Vec<(String, u64)> {
    lines
        .iter()
        .filter(|l| l.event == "logs_update" || l.event == "signals_update")
        .filter_map(|l| Some((l.event.clone(), l.data["seq"].as_u64()?)))
        .collect()
}

/// The highest `seq` among the `events` (e.g. `logs_update`) in `lines`;
/// 0 when there is none.
pub fn max_seq(lines: &[crate::Line], events: &[&str]) -> u64 {
    lines
        .iter()
        .filter(|l| events.contains(&l.event.as_str()))
        .filter_map(|l| l.data["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

/// A process's resident set size in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The value of one Prometheus series (`name{labels}` as rendered, or a
/// bare name) in a `/metrics` body. The `replica` label every series of a
/// gateway carries is not part of the match, and label order does not
/// matter.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    let wanted = series_key(series);
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (series_key(name) == wanted).then(|| value.trim().parse().ok())?
    })
}

/// A series' name and its sorted labels, without `replica`.
fn series_key(series: &str) -> (String, Vec<String>) {
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}')),
        None => (series, ""),
    };
    let mut labels: Vec<String> = labels
        .split(',')
        .filter(|l| !l.is_empty() && !l.starts_with("replica="))
        .map(str::to_owned)
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

/// Percentile `p` (0..=100) of `values` (sorted in place).
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}
