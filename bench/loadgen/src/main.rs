//! `loadgen`: the gateway benchmark's load generator.
//!
//! Modes (one JSON line on stdout per run, also appended to `--out`):
//! - `fanout`: N authenticated Socket.IO clients subscribe to quotes while
//!   this process publishes quotes to NATS; over the measured window it
//!   reports delivered msgs/s, the delivery ratio, publish-to-receipt
//!   latency (HDR: p50, p99, p999, max), per-symbol gaps and reorders, and
//!   the CPU and RSS of the server (`--server-pid`), of NATS and of itself.
//!   `--slow-clients K` adds K clients that stop reading after subscribing;
//!   `--transport polling` uses Engine.IO long-polling.
//! - `idle`: hold N subscribed connections, report server RSS per connection.
//! - `connect`: authenticated handshakes per second.
//! - `ceiling-server`: a trivial fan-out server to measure our own ceiling.
//! - `storm`: SIGKILL one of two replicas under N dashboards on logs and
//!   quotes and measure their return on the other (see `storm`).
//!
//! Modules: `eio` (packets), `client` (one connection), `publisher` (NATS),
//! `stats` (tallies and histograms), `procstat` (/proc), `ceiling`.

mod ceiling;
mod client;
mod eio;
mod procstat;
mod publisher;
mod report;
mod stats;
mod storm;

use clap::{Args, Parser, Subcommand, ValueEnum};
use client::{Ctx, Role, Transport, STOP};
use serde_json::{json, Value};
use stats::Shared;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for the MT5 gateway benchmark"
)]
struct Cli {
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Subscribed clients receiving quotes published to NATS.
    Fanout(FanoutArgs),
    /// Idle subscribed connections: server memory per connection.
    Idle(IdleArgs),
    /// Authenticated handshakes per second.
    Connect(Common),
    /// Kill one of two replicas under its dashboards; measure their resume.
    Storm(StormArgs),
    /// A trivial fan-out server (no auth, no conflation) for our own ceiling.
    CeilingServer(CeilingArgs),
    /// The Markdown report of a results file.
    Report(ReportArgs),
    /// Prints a TCP port of 127.0.0.1 that was free a moment ago.
    FreePort,
}

#[derive(Args)]
struct ReportArgs {
    /// Results file (JSON lines written by the other modes).
    #[arg(long)]
    results: PathBuf,
    /// Where to write the Markdown (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A line for the report's machine table (repeatable).
    #[arg(long)]
    note: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Websocket,
    Polling,
}

#[derive(Args)]
struct Common {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    url: String,
    /// Name of the server under test, for the report (ours, node, ...).
    #[arg(long, default_value = "server")]
    server: String,
    /// Name of the scenario, for the report.
    #[arg(long, default_value = "")]
    label: String,
    /// HS256 secret to mint client tokens with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// The `account` claim of the tokens (and the publisher's subjects).
    #[arg(long, default_value = "bench")]
    account: String,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// New connections per second during the ramp (0: as fast as allowed).
    #[arg(long, default_value_t = 1000.0)]
    connect_rate: f64,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 256)]
    max_inflight: usize,
    #[arg(long, value_enum, default_value = "websocket")]
    transport: TransportArg,
    /// Process to report CPU and RSS of (the server under test).
    #[arg(long)]
    server_pid: Option<u32>,
    /// NATS server process, to report its CPU too.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// Seconds the ramp may take before the run goes on with who is ready.
    #[arg(long, default_value_t = 60.0)]
    ramp_timeout: f64,
    /// Append the JSON line to this file too.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Send `subscribe` right after the namespace `40` ack, as code in a
    /// socket.io-client `on("connect")` handler does, instead of waiting for
    /// the `connected` event (WebSocket only).
    #[arg(long)]
    subscribe_early: bool,
    /// Path of the server's Prometheus metrics (ours: /metrics), to report
    /// how many bus messages it read and frames it queued during the run.
    #[arg(long)]
    metrics_path: Option<String>,
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, default_value = "mt5")]
    subject_prefix: String,
    /// Quotes per second published, all symbols together.
    #[arg(long, default_value_t = 100.0)]
    publish_rate: f64,
    #[arg(long, default_value_t = 20)]
    symbols: usize,
    /// Seconds of publishing before the measured window.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Clients (beyond --clients) that stop reading after subscribing.
    #[arg(long, default_value_t = 0)]
    slow_clients: usize,
    /// Seconds to wait after the window for in-flight quotes; later ones
    /// count as not delivered.
    #[arg(long, default_value_t = 10.0)]
    drain_max: f64,
    /// Fail (exit 3) unless every client got ready and at least this share
    /// of the quotes arrived (for smoke tests).
    #[arg(long)]
    require_delivery: Option<f64>,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds to let the server settle before reading its RSS.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
}

#[derive(Args)]
struct StormArgs {
    /// The replica that is killed (base URL, http://host:port).
    #[arg(long)]
    victim_url: String,
    /// Its process id: the benchmark sends it SIGKILL.
    #[arg(long)]
    victim_pid: u32,
    /// The replica that survives.
    #[arg(long)]
    survivor_url: String,
    /// Its process id, for its RSS.
    #[arg(long)]
    survivor_pid: Option<u32>,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, default_value = "mt5")]
    subject_prefix: String,
    /// HS256 secret to mint client tokens with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    secret: String,
    #[arg(long, default_value = "storm")]
    account: String,
    /// Dashboards on the victim (logs and quotes).
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Dashboards on the survivor whose quote latency is measured.
    #[arg(long, default_value_t = 50)]
    observers: usize,
    /// Logs per second, stored through JetStream.
    #[arg(long, default_value_t = 200.0)]
    log_rate: f64,
    /// Quotes per second, all symbols together.
    #[arg(long, default_value_t = 100.0)]
    quote_rate: f64,
    #[arg(long, default_value_t = 10)]
    symbols: usize,
    /// New connections per second while the victim fills up.
    #[arg(long, default_value_t = 500.0)]
    connect_rate: f64,
    /// Seconds between everyone subscribed and the kill.
    #[arg(long, default_value_t = 8.0)]
    before: f64,
    /// Seconds the storm may take before the run reports who is back.
    #[arg(long, default_value_t = 60.0)]
    after_max: f64,
    /// Seconds of traffic after everyone is live again.
    #[arg(long, default_value_t = 3.0)]
    tail: f64,
    #[arg(long, default_value = "storm-2000")]
    label: String,
    #[arg(long, default_value = "ours")]
    server: String,
    /// Append the JSON line to this file too.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct CeilingArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, default_value = "mt5")]
    subject_prefix: String,
}

fn main() {
    let cli = Cli::parse();
    match &cli.mode {
        Mode::Report(args) => return exit_on_error(write_report(args)),
        Mode::FreePort => {
            return exit_on_error(
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| println!("{}", a.port()))
                    .map_err(|e| e.to_string()),
            )
        }
        _ => {}
    }
    let nofile = procstat::raise_nofile_limit();
    let threads = cli
        .threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = rt.block_on(async move {
        match cli.mode {
            Mode::Fanout(args) => fanout(args, threads, nofile).await,
            Mode::Idle(args) => idle(args, threads, nofile).await,
            Mode::Connect(args) => connect(args, threads, nofile).await,
            Mode::Storm(args) => storm(args).await,
            Mode::CeilingServer(args) => {
                ceiling::serve(args.addr, &args.nats_url, &args.subject_prefix)
                    .await
                    .map(|()| Value::Null)
            }
            Mode::Report(_) | Mode::FreePort => Ok(Value::Null),
        }
    });
    // Dropping 10,000 sockets is quick; do not wait for stragglers.
    rt.shutdown_timeout(Duration::from_secs(2));
    exit_on_error(result.map(|_| ()));
}

fn exit_on_error(result: Result<(), String>) {
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

fn write_report(args: &ReportArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.results)
        .map_err(|e| format!("{}: {e}", args.results.display()))?;
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", args.results.display())))
        .collect::<Result<Vec<Value>, String>>()?;
    let markdown = report::render(&report::Input {
        results_path: args.results.display().to_string(),
        lines,
        notes: args.note.clone(),
    });
    match &args.out {
        Some(path) => {
            std::fs::write(path, markdown).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => {
            print!("{markdown}");
            Ok(())
        }
    }
}

/// What every run needs: the clients' shared context and the control channel.
struct Run {
    ctx: Arc<Ctx>,
    shared: Arc<Shared>,
    control: watch::Sender<u64>,
    tasks: JoinSet<()>,
    pids: Vec<String>,
    started_at: String,
    loadavg: Option<f64>,
}

impl Run {
    async fn new(common: &Common, symbols: usize) -> Result<Run, String> {
        let url = common.url.trim_end_matches('/');
        let host = url
            .strip_prefix("http://")
            .ok_or("--url must be http://host:port")?
            .to_owned();
        let addr = tokio::net::lookup_host(&host)
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or(format!("no IPv4 address for {host}"))?;
        let shared = Arc::new(Shared::default());
        let (control, rx) = watch::channel(0u64);
        let transport = match common.transport {
            TransportArg::Websocket => Transport::Websocket,
            TransportArg::Polling => Transport::Polling,
        };
        let mut pids = vec!["self".to_owned()];
        pids.extend(common.server_pid.map(|p| p.to_string()));
        pids.extend(common.nats_pid.map(|p| p.to_string()));
        Ok(Run {
            ctx: Arc::new(Ctx {
                addr,
                host,
                transport,
                shared: shared.clone(),
                symbols,
                control: rx,
                subscribe_early: common.subscribe_early,
            }),
            shared,
            control,
            tasks: JoinSet::new(),
            pids,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            loadavg: procstat::loadavg_1m(),
        })
    }

    /// Opens `roles.len()` clients at the configured rate and waits until
    /// each is ready or has failed (or the ramp times out). Returns seconds.
    async fn ramp(&mut self, common: &Common, roles: &[Role]) -> Result<f64, String> {
        let tokens = mint_tokens(common, roles.len())?;
        let gate = Arc::new(Semaphore::new(common.max_inflight.max(1)));
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(common.ramp_timeout);
        let pace = (common.connect_rate > 0.0).then(|| 1.0 / common.connect_rate);
        for (i, (token, role)) in tokens.into_iter().zip(roles).enumerate() {
            if let Some(pace) = pace {
                let due = started + Duration::from_secs_f64(pace * i as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let permit = tokio::select! {
                permit = gate.clone().acquire_owned() => permit.map_err(|e| e.to_string())?,
                _ = tokio::time::sleep_until(deadline.into()) => break,
            };
            self.tasks
                .spawn(client::run(self.ctx.clone(), i, token, *role, permit));
        }
        let c = &self.shared.counters;
        let total = roles.len() as u64;
        while Instant::now() < deadline {
            let settled = c.ready.load(Relaxed)
                + c.connect_failures.load(Relaxed)
                + c.auth_failures.load(Relaxed);
            if settled >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// The server's counters we report (sums over labels), if it has metrics.
    async fn scrape(&self, common: &Common) -> Option<[f64; 2]> {
        let path = common.metrics_path.as_deref()?;
        let text = client::http_get(self.ctx.addr, &self.ctx.host, path).await?;
        let sum = |name: &str| {
            text.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with([' ', '{']))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        Some([
            sum("gateway_bus_messages_total"),
            sum("gateway_frames_queued_total"),
        ])
    }

    /// Tells every client to flush its tally.
    fn flush(&self) {
        self.control
            .send_modify(|epoch| *epoch = (*epoch + 1) % STOP);
    }

    async fn stop(mut self) {
        let _ = self.control.send(STOP);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }

    fn base(&self, mode: &str, common: &Common, threads: usize, nofile: u64) -> Value {
        let c = &self.shared.counters;
        json!({
            "mode": mode,
            "label": common.label,
            "server": common.server,
            "transport": match common.transport {
                TransportArg::Websocket => "websocket",
                TransportArg::Polling => "polling",
            },
            "started_at": self.started_at,
            "loadavg_1m_at_start": self.loadavg,
            "loadgen_threads": threads,
            "nofile_limit": nofile,
            "clients": common.clients,
            "subscribe_early": common.subscribe_early,
            "ready": c.ready.load(Relaxed),
            "connect_failures": c.connect_failures.load(Relaxed),
            "auth_failures": c.auth_failures.load(Relaxed),
            "disconnects": c.disconnects.load(Relaxed),
            "told_to_leave": c.told_to_leave.load(Relaxed),
            "errors": c.errors.load(Relaxed),
            "handshake_us": stats::summary(&self.shared.handshakes.lock().unwrap_or_else(|p| p.into_inner())),
        })
    }
}

fn mint_tokens(common: &Common, n: usize) -> Result<Vec<String>, String> {
    let key = jsonwebtoken::EncodingKey::from_secret(common.secret.as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let now = chrono::Utc::now().timestamp();
    (0..n)
        .map(|i| {
            // A distinct `sub` per client keeps per-user connection caps out of the way.
            let claims = json!({
                "sub": format!("bench-{i}"),
                "account": common.account,
                "iat": now,
                "exp": now + 3600,
            });
            jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
        })
        .collect()
}

fn emit(common: &Common, line: &Value) -> Result<Value, String> {
    let text = line.to_string();
    println!("{text}");
    if let Some(path) = &common.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        writeln!(f, "{text}").map_err(|e| e.to_string())?;
    }
    Ok(line.clone())
}

fn pct(cpu: Option<f64>, wall: f64) -> Option<f64> {
    cpu.map(|c| round1(100.0 * c / wall.max(1e-9)))
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn server_rss(common: &Common) -> Option<u64> {
    common
        .server_pid
        .and_then(|p| procstat::rss_kib(&p.to_string()))
}

async fn fanout(args: FanoutArgs, threads: usize, nofile: u64) -> Result<Value, String> {
    let common = &args.common;
    let mut run = Run::new(common, args.symbols).await?;
    let mut roles = vec![Role::Measured; common.clients];
    roles.extend(std::iter::repeat_n(Role::Slow, args.slow_clients));
    let ramp_secs = run.ramp(common, &roles).await?;
    let measured_ready = run.shared.counters.ready_measured.load(Relaxed);

    // The window is a span of publish times, fixed before publishing starts.
    let warmup = Duration::from_secs_f64(args.warmup);
    let window = Duration::from_secs_f64(args.duration);
    let start_at = Instant::now() + warmup;
    let end_at = start_at + window;
    let counters_before = run.scrape(common).await;
    let start_us = stats::now_us() + warmup.as_micros() as u64;
    run.shared
        .set_window(start_us, start_us + window.as_micros() as u64);
    let publisher = publisher::start(
        publisher::Plan {
            nats_url: args.nats_url.clone(),
            prefix: args.subject_prefix.clone(),
            account: common.account.clone(),
            rate: args.publish_rate,
            symbols: args.symbols,
            until: end_at,
        },
        run.shared.clone(),
    )
    .await?;

    tokio::time::sleep_until(start_at.into()).await;
    let before = procstat::sample(&run.pids);
    tokio::time::sleep_until(end_at.into()).await;
    let after = procstat::sample(&run.pids);
    let usage = after.usage_since(&before);
    let rss_kib = server_rss(common);
    let published = tokio::task::spawn_blocking(move || publisher.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the publisher thread panicked".to_owned())?;
    let expected = published.in_window * measured_ready;

    // Wait for quotes still in flight: until all arrived, or nothing new
    // came for six seconds, or --drain-max.
    let drain_started = Instant::now();
    // Progress is any quote arriving: a server far behind may still be
    // delivering warm-up quotes long after the window ended. Six quiet
    // seconds end the wait (Node, 700 MB behind, pauses for seconds).
    let mut last = u64::MAX;
    let mut still = 0;
    loop {
        run.flush();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let c = &run.shared.counters;
        let got = c.received.load(Relaxed);
        let any = got + c.outside.load(Relaxed);
        still = if any == last { still + 1 } else { 0 };
        last = any;
        if got >= expected || still >= 24 || drain_started.elapsed().as_secs_f64() > args.drain_max
        {
            break;
        }
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let counters_after = run.scrape(common).await;
    let delta = |i: usize| Some(counters_after?[i] - counters_before?[i]);
    let c = &run.shared.counters;
    let received = c.received.load(Relaxed);
    let latencies = run.shared.latencies();
    let wall = usage.wall_secs;
    let [self_cpu, server_cpu, nats_cpu] = cpu_triplet(&usage, common);
    let mut line = run.base("fanout", common, threads, nofile);
    let extra = json!({
        "slow_clients": args.slow_clients,
        "measured_clients": measured_ready,
        "symbols": args.symbols,
        "publish_rate": args.publish_rate,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "ramp_s": round4(ramp_secs),
        "drain_s": round4(drain_secs),
        "published": published.in_window,
        "published_total": published.total,
        "publish_errors": published.errors,
        "expected": expected,
        "received": received,
        "delivery_ratio": if expected > 0 { round4(received as f64 / expected as f64 * 100.0) / 100.0 } else { 0.0 },
        "msgs_per_s": round1(received as f64 / args.duration),
        "latency_us": stats::summary(&latencies),
        "gaps": c.gaps.load(Relaxed),
        "reorders": c.reorders.load(Relaxed),
        "unreadable": c.unreadable.load(Relaxed),
        "outside_window": c.outside.load(Relaxed),
        "pongs": c.pongs.load(Relaxed),
        "window_wall_s": round4(wall),
        "server_cpu_pct": pct(server_cpu, wall),
        "server_cpu_us_per_msg": server_cpu.filter(|_| received > 0).map(|s| round4(s * 1e6 / received as f64)),
        "server_rss_kib": rss_kib,
        "server_bus_messages": delta(0),
        "server_frames_queued": delta(1),
        "nats_cpu_pct": pct(nats_cpu, wall),
        "loadgen_cpu_pct": pct(self_cpu, wall),
        "loadgen_rss_kib": procstat::rss_kib("self"),
        "machine_busy_pct": usage.machine_busy_pct.map(round1),
        "other_cpu_pct": other_cpu_pct(&usage, [self_cpu, server_cpu, nats_cpu]),
    });
    merge(&mut line, extra);
    run.stop().await;
    let line = emit(common, &line)?;
    if let Some(min) = args.require_delivery {
        let ratio = if expected > 0 {
            received as f64 / expected as f64
        } else {
            0.0
        };
        if measured_ready < common.clients as u64 || ratio < min {
            eprintln!(
                "loadgen: smoke check failed: {measured_ready}/{} clients ready, {:.4} delivered (need {min})",
                common.clients, ratio
            );
            std::process::exit(3);
        }
    }
    Ok(line)
}

/// CPU used by every other process on the machine during the window, in %
/// of one core: the machine's busy time minus ours, the server's and NATS's.
fn other_cpu_pct(usage: &procstat::Usage, known: [Option<f64>; 3]) -> Option<f64> {
    let cores = std::thread::available_parallelism().ok()?.get() as f64;
    let busy = usage.machine_busy_pct? / 100.0 * cores * usage.wall_secs;
    let ours: f64 = known.iter().flatten().sum();
    Some(round1(
        (100.0 * (busy - ours) / usage.wall_secs.max(1e-9)).max(0.0),
    ))
}

/// CPU seconds of (ourselves, the server, NATS) in the order `Run::new` listed them.
fn cpu_triplet(usage: &procstat::Usage, common: &Common) -> [Option<f64>; 3] {
    let mut it = usage.cpu_secs.iter().copied();
    let me = it.next().flatten();
    let server = if common.server_pid.is_some() {
        it.next().flatten()
    } else {
        None
    };
    let nats = if common.nats_pid.is_some() {
        it.next().flatten()
    } else {
        None
    };
    [me, server, nats]
}

async fn idle(args: IdleArgs, threads: usize, nofile: u64) -> Result<Value, String> {
    let common = &args.common;
    let mut run = Run::new(common, 1).await?;
    let rss_before = server_rss(common);
    let self_before = procstat::rss_kib("self");
    let sample_before = procstat::sample(&run.pids);
    let roles = vec![Role::Idle; common.clients];
    let ramp_secs = run.ramp(common, &roles).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_after = server_rss(common);
    let self_after = procstat::rss_kib("self");
    let usage = procstat::sample(&run.pids).usage_since(&sample_before);
    let ready = run.shared.counters.ready.load(Relaxed).max(1);
    let per_conn = |before: Option<u64>, after: Option<u64>| {
        Some(round1(after?.saturating_sub(before?) as f64 / ready as f64))
    };
    let [_, server_cpu, _] = cpu_triplet(&usage, common);
    let mut line = run.base("idle", common, threads, nofile);
    merge(
        &mut line,
        json!({
            "ramp_s": round4(ramp_secs),
            "settle_s": args.settle,
            "server_rss_before_kib": rss_before,
            "server_rss_after_kib": rss_after,
            "server_rss_per_conn_kib": per_conn(rss_before, rss_after),
            "server_cpu_s_during_ramp_and_settle": server_cpu.map(round4),
            "loadgen_rss_per_conn_kib": per_conn(self_before, self_after),
        }),
    );
    run.stop().await;
    emit(common, &line)
}

async fn connect(common: Common, threads: usize, nofile: u64) -> Result<Value, String> {
    let mut run = Run::new(&common, 1).await?;
    let before = procstat::sample(&run.pids);
    let roles = vec![Role::HandshakeOnly; common.clients];
    let ramp_secs = run.ramp(&common, &roles).await?;
    let usage = procstat::sample(&run.pids).usage_since(&before);
    let ready = run.shared.counters.ready.load(Relaxed);
    let [self_cpu, server_cpu, _] = cpu_triplet(&usage, &common);
    let mut line = run.base("connect", &common, threads, nofile);
    merge(
        &mut line,
        json!({
            "connect_rate_cap": common.connect_rate,
            "max_inflight": common.max_inflight,
            "ramp_s": round4(ramp_secs),
            "handshakes_per_s": round1(ready as f64 / ramp_secs.max(1e-9)),
            "server_cpu_pct": pct(server_cpu, usage.wall_secs),
            "server_cpu_us_per_handshake": server_cpu.filter(|_| ready > 0).map(|s| round1(s * 1e6 / ready as f64)),
            "loadgen_cpu_pct": pct(self_cpu, usage.wall_secs),
            "machine_busy_pct": usage.machine_busy_pct.map(round1),
        }),
    );
    run.stop().await;
    emit(&common, &line)
}

async fn storm(args: StormArgs) -> Result<Value, String> {
    let addr = |url: &str| -> Result<SocketAddr, String> {
        url.trim_end_matches('/')
            .strip_prefix("http://")
            .ok_or(format!("{url}: expected http://host:port"))?
            .parse()
            .map_err(|e| format!("{url}: {e}"))
    };
    let mint = |prefix: &str, n: usize| -> Result<Vec<String>, String> {
        let key = jsonwebtoken::EncodingKey::from_secret(args.secret.as_bytes());
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let now = chrono::Utc::now().timestamp();
        (0..n)
            .map(|i| {
                let claims = json!({"sub": format!("{prefix}-{i}"), "account": args.account, "iat": now, "exp": now + 3600});
                jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
            })
            .collect()
    };
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let loadavg = procstat::loadavg_1m();
    let result = storm::run(storm::Plan {
        victim: addr(&args.victim_url)?,
        survivor: addr(&args.survivor_url)?,
        victim_pid: args.victim_pid,
        survivor_pid: args.survivor_pid,
        nats_url: args.nats_url.clone(),
        prefix: args.subject_prefix.clone(),
        account: args.account.clone(),
        tokens: mint("storm", args.clients)?,
        observer_tokens: mint("observer", args.observers)?,
        log_rate: args.log_rate,
        quote_rate: args.quote_rate,
        symbols: args.symbols,
        connect_rate: args.connect_rate,
        before: Duration::from_secs_f64(args.before),
        after_max: Duration::from_secs_f64(args.after_max),
        tail: Duration::from_secs_f64(args.tail),
    })
    .await?;
    let mut line = json!({
        "mode": "storm",
        "label": args.label,
        "server": args.server,
        "transport": "websocket",
        "started_at": started_at,
        "loadavg_1m_at_start": loadavg,
        "clients": args.clients,
    });
    merge(&mut line, result);
    let text = line.to_string();
    println!("{text}");
    if let Some(path) = &args.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        writeln!(f, "{text}").map_err(|e| e.to_string())?;
    }
    Ok(line)
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}
