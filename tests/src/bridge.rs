//! The MQL5 bridge's fixtures: an `ingestor bridge` process
//! ([`BridgeIngestor`]) and fake terminals ([`FakeTerminal`]) speaking
//! `ingestor/mql5/PROTOCOL.md` exactly, over plain TCP, with blocking
//! sockets whose every read and write has a deadline.

use crate::procs::{binary, Proc, START_TIMEOUT};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tempfile::TempDir;

/// Variables the ingestor reads, cleared from its environment unless set.
const INGESTOR_VARS: &[&str] = &[
    "NATS_URL",
    "SUBJECT_PREFIX",
    "MT5_ACCOUNT",
    "INGESTOR_HTTP_ADDR",
    "BRIDGE_ADDR",
    "BRIDGE_KEY",
    "BRIDGE_KEYS_FILE",
    "BRIDGE_TLS_CERT_FILE",
    "BRIDGE_TLS_KEY_FILE",
    "BRIDGE_MAX_LINE_BYTES",
    "BRIDGE_EVENT_QUEUE",
    "BRIDGE_STATE_INTERVAL_MS",
    "BRIDGE_RAW_DIR",
    "RUST_LOG",
];

/// `ingestor bridge` on free ports, with `/metrics` and `/health`.
pub struct BridgeIngestor {
    // Dropped first: the process dies before its directory goes.
    proc: Proc,
    /// Where terminals connect.
    pub addr: SocketAddr,
    /// `INGESTOR_HTTP_ADDR`.
    pub http: SocketAddr,
    /// Its working directory (keys files may live here).
    pub dir: TempDir,
}

/// The command line of `ingestor bridge` with a clean environment plus
/// `env`, run in `dir`.
pub fn bridge_command(dir: &std::path::Path, env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(binary("ingestor"));
    cmd.current_dir(dir).arg("bridge");
    for var in INGESTOR_VARS {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
    cmd.env("BRIDGE_ADDR", "127.0.0.1:0");
    cmd.env("INGESTOR_HTTP_ADDR", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl BridgeIngestor {
    /// Starts it publishing to `nats_url` with `env` (keys, …) and waits
    /// for its start lines.
    pub fn start(nats_url: &str, env: &[(&str, &str)]) -> BridgeIngestor {
        let dir = tempfile::Builder::new()
            .prefix("e2e-bridge-")
            .tempdir()
            .expect("temp dir");
        let mut all = vec![("NATS_URL", nats_url)];
        all.extend_from_slice(env);
        let cmd = bridge_command(dir.path(), &all);
        let log = dir.path().join("ingestor.stderr.log");
        let mut proc = Proc::spawn("ingestor bridge", cmd, &log);
        if proc
            .wait_stdout(START_TIMEOUT, |l| l.contains("publishing to"))
            .is_none()
        {
            let status = proc.try_status();
            proc.kill();
            panic!(
                "ingestor bridge did not start (exit {status:?}); stdout {:?}\nstderr:\n{}",
                proc.stdout_lines(),
                proc.stderr_tail(40)
            );
        }
        let addr_after = |prefix: &str| -> SocketAddr {
            let line = proc
                .stdout_lines()
                .into_iter()
                .find(|l| l.contains(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` line in {:?}", proc.stdout_lines()));
            line.rsplit("://")
                .next()
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or_else(|| panic!("cannot parse the address in {line:?}"))
        };
        let addr = addr_after("bridge listening on");
        let http = addr_after("ingestor http on");
        BridgeIngestor {
            proc,
            addr,
            http,
            dir,
        }
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> String {
        crate::http::get(self.http, "/metrics", &[]).body
    }

    /// One sample of `/metrics` (`name` with its labels, as written).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in /metrics:\n{text}"))
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    pub fn assert_no_panic(&self) {
        self.proc.assert_no_panic();
    }
}

/// A terminal: the EA's side of the protocol, driven by the test.
pub struct FakeTerminal {
    /// Writes.
    stream: TcpStream,
    /// Reads the ingestor's answers.
    reader: BufReader<TcpStream>,
    /// Trade server time minus UTC, seconds (changes with [`FakeTerminal::dst`]).
    pub offset_s: i64,
}

/// What `connect` got back.
pub type Answer = Value;

impl FakeTerminal {
    /// Connects and sends `hello` (protocol 2) with `key`, `account` label
    /// (may be empty), the trade server's offset and heartbeat period.
    pub fn connect(
        addr: SocketAddr,
        key: Option<&str>,
        account: &str,
        offset_s: i64,
        heartbeat_ms: u64,
    ) -> (FakeTerminal, Answer) {
        let mut hello = json!({
            "type": "hello", "protocol": 2, "account": account, "login": 5_012_345,
            "server": "Broker-Live", "company": "Broker Ltd.", "version": "2.0",
            "gmt_offset_s": offset_s, "heartbeat_ms": heartbeat_ms,
        });
        if let Some(k) = key {
            hello["key"] = json!(k);
        }
        let mut t = FakeTerminal::raw(addr, offset_s);
        let answer = t
            .send(&format!("{hello}\n"))
            .ok()
            .and_then(|()| t.answer(Duration::from_secs(10)))
            .unwrap_or(Value::Null);
        (t, answer)
    }

    /// A connection that has sent nothing yet.
    pub fn raw(addr: SocketAddr, offset_s: i64) -> FakeTerminal {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("connect to the bridge");
        stream.set_nodelay(true).ok();
        stream.set_write_timeout(Some(Duration::from_secs(3))).ok();
        let reader = BufReader::new(stream.try_clone().expect("clone socket"));
        FakeTerminal {
            stream,
            reader,
            offset_s,
        }
    }

    /// Writes lines as they are (a write that cannot go on for 3 s fails:
    /// the ingestor stopped reading).
    pub fn send(&mut self, text: &str) -> std::io::Result<()> {
        self.stream.write_all(text.as_bytes())
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next answer line, if one comes within `timeout`.
    pub fn answer(&mut self, timeout: Duration) -> Option<Value> {
        self.reader.get_ref().set_read_timeout(Some(timeout)).ok();
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).ok(),
            _ => None,
        }
    }

    /// True when the ingestor closes the connection within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.reader.get_ref().set_read_timeout(Some(left)).ok();
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if crate::http::timed_out(&e) => return false,
                Err(_) => return true,
            }
        }
    }

    /// A trade-server time (epoch ms on the server's clock) for a UTC one.
    pub fn server_ms(&self, utc_ms: i64) -> i64 {
        utc_ms + self.offset_s * 1000
    }

    /// The server moved its clock: a heartbeat with the new offset.
    pub fn dst(&mut self, offset_s: i64) -> std::io::Result<()> {
        self.offset_s = offset_s;
        self.send(&format!(
            "{}\n",
            json!({"type": "heartbeat", "gmt_offset_s": offset_s})
        ))
    }

    pub fn heartbeat(&mut self) -> std::io::Result<()> {
        self.send(&format!(
            "{}\n",
            json!({"type": "heartbeat", "gmt_offset_s": self.offset_s})
        ))
    }

    /// A `quote` line stamped `utc_ms` (sent as trade-server time).
    pub fn quote(&self, symbol: &str, bid: f64, ask: f64, utc_ms: i64) -> String {
        format!(
            "{}\n",
            json!({"type": "quote", "symbol": symbol, "bid": bid, "ask": ask,
                   "point": 0.00001, "digits": 5, "time": self.server_ms(utc_ms)})
        )
    }

    /// A `positions` line: `(ticket, symbol, opened at UTC ms, profit)`.
    pub fn positions(&self, items: &[(u64, &str, i64, f64)]) -> String {
        let items: Vec<Value> = items
            .iter()
            .map(|(ticket, symbol, opened, profit)| {
                json!({"ticket": ticket, "symbol": symbol, "type": "POSITION_TYPE_BUY",
                       "volume": 0.10, "price_open": 1.085, "price_current": 1.0855,
                       "sl": 1.082, "tp": 1.09, "profit": profit, "swap": -0.5,
                       "commission": -0.7, "time": self.server_ms(*opened), "comment": "RSI_Strategy"})
            })
            .collect();
        format!("{}\n", json!({"type": "positions", "items": items}))
    }

    /// An `orders` line with one buy limit set up at UTC `setup_ms`.
    pub fn orders(&self, ticket: u64, setup_ms: i64) -> String {
        format!(
            "{}\n",
            json!({"type": "orders", "items": [{"ticket": ticket, "symbol": "GBPUSD",
                   "type": "ORDER_TYPE_BUY_LIMIT", "volume": 0.05, "price_open": 1.27,
                   "sl": 1.265, "tp": 1.28, "time_setup": self.server_ms(setup_ms),
                   "state": "ORDER_STATE_PLACED", "comment": "Manual order"}]})
        )
    }

    /// Sets a small send buffer so that "the socket keeps draining" is
    /// measured against the ingestor's reading, not kernel buffers.
    pub fn small_send_buffer(&self, bytes: i32) {
        use std::os::fd::AsRawFd;
        // SAFETY: setsockopt on a socket we own, with a valid int option.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &bytes as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }
}

/// `t` (UTC epoch ms) as the spec writes it.
pub fn rfc3339_ms(t: i64) -> String {
    chrono::DateTime::from_timestamp_millis(t)
        .expect("a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
