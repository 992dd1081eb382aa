//! Child processes: a generic [`Proc`] (stdout lines captured, stderr to a
//! file, killed on drop) and the servers built on it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a server may take to come up before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where cargo puts the binaries: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The path of a workspace binary (`gateway`, `ingestor`) in the debug
/// profile; `E2E_BIN_DIR` overrides the directory. A debug binary older
/// than any of its sources fails the test: the tests must run what this
/// checkout builds, never a stale `target/debug/gateway`.
pub fn binary(name: &str) -> PathBuf {
    let chosen = std::env::var_os("E2E_BIN_DIR").map(PathBuf::from);
    let checked = chosen.is_none();
    let dir = chosen.unwrap_or_else(|| target_dir().join("debug"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace --bins` first",
        path.display()
    );
    if checked {
        assert_fresh(&path);
    }
    path
}

/// The source folders each binary is built from, relative to the workspace
/// root (only sources: cargo relinks a binary when one of them changes).
fn sources(binary: &str) -> &'static [&'static str] {
    const LIBS: [&str; 3] = ["protocol/src", "bus/src", "sim/src"];
    match binary {
        "gateway" => &[LIBS[0], LIBS[1], LIBS[2], "gateway/src", "gateway/web"],
        "ingestor" => &[LIBS[0], LIBS[1], LIBS[2], "ingestor/src"],
        _ => &[],
    }
}

/// Panics when a source file changed after `binary` was built.
fn assert_fresh(binary: &Path) {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let root = workspace_root();
    let newest = sources(name)
        .iter()
        .filter_map(|p| newest_file(&root.join(p)))
        .max_by_key(|(t, _)| *t);
    let built = std::fs::metadata(binary).and_then(|m| m.modified());
    if let (Some((changed, source)), Ok(built)) = (newest, built) {
        assert!(
            built >= changed,
            "{} is older than {}: run `cargo build --workspace --bins` (the tests run \
             the binaries of this checkout, never stale ones)",
            binary.display(),
            source.display()
        );
    }
}

/// The most recently modified file under `path` (or `path` itself).
fn newest_file(path: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return Some((meta.modified().ok()?, path.to_path_buf()));
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| newest_file(&entry.path()))
        .max_by_key(|(t, _)| *t)
}

/// Runs `cmd` to its end: its stdout, or a panic naming the command with
/// its stderr (or why it could not start).
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// Lines a child printed on stdout, shared with the thread that reads them.
#[derive(Default)]
struct Captured {
    state: Mutex<(Vec<String>, bool)>,
    cond: Condvar,
}

/// A child process: stdout lines are captured (see [`Proc::wait_stdout`]),
/// stderr goes to a log file, and the process is killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    stdout: Arc<Captured>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed, stdout captured and stderr appended
    /// to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let stdout = Arc::new(Captured::default());
        let out = child.stdout.take().expect("stdout is piped");
        let shared = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut state = shared.state.lock().unwrap();
                state.0.push(line);
                shared.cond.notify_all();
            }
            shared.state.lock().unwrap().1 = true;
            shared.cond.notify_all();
        });
        Proc {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            stdout,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first stdout line (printed so far or within `timeout`) for which
    /// `pred` holds; `None` on timeout or when stdout closes first.
    pub fn wait_stdout(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.stdout.state.lock().unwrap();
        loop {
            if let Some(line) = state.0.iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if state.1 || now >= deadline {
                return None;
            }
            state = self
                .stdout
                .cond
                .wait_timeout(state, deadline - now)
                .unwrap()
                .0;
        }
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.state.lock().unwrap().0.clone()
    }

    /// Everything the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of stderr, for failure messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        tail(&self.stderr(), n)
    }

    /// Sends a signal (`libc::SIGTERM`, …) unless the process has exited.
    pub fn signal(&mut self, signal: i32) {
        if self.try_status().is_none() {
            // SAFETY: kill(2) on our own child's pid; it has not been reaped.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// The exit status if the process has exited (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit; panics (after a
    /// SIGKILL) if the process does not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match self.wait_exit(timeout) {
            Some(status) => status,
            None => {
                self.kill();
                panic!(
                    "{} did not exit within {timeout:?} of SIGTERM; stderr:\n{}",
                    self.name,
                    self.stderr_tail(60)
                );
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Panics if stderr mentions a panic.
    pub fn assert_no_panic(&self) {
        let err = self.stderr();
        assert!(
            !err.contains("panicked"),
            "{} panicked; stderr:\n{}",
            self.name,
            tail(&err, 80)
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- {} (pid {}) stderr, last lines -----\n{}\n----- end of {} stderr -----",
                self.name,
                self.child.id(),
                self.stderr_tail(40),
                self.name
            );
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `port` accepts TCP connections, failing early (with its
/// stderr) if `proc` exits.
fn wait_for_port(proc: &mut Proc, port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = proc.try_status() {
            return Err(format!(
                "{} exited ({status}) before accepting connections on {port}; stderr:\n{}",
                proc.name,
                proc.stderr_tail(40)
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not accept connections on {port} within {timeout:?}; stderr:\n{}",
                proc.name,
                proc.stderr_tail(40)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn require_on_path(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not on PATH: run scripts/test.sh (it installs it) or `apt-get install {program}`"
    );
}

/// A server that listens on one port and keeps its data in a directory:
/// the common part of NATS and Redis.
struct PortServer {
    name: &'static str,
    port: u16,
    // Declared before `dir`: the process dies before its directory goes.
    proc: Option<Proc>,
    dir: TempDir,
    command: fn(u16, &Path) -> Command,
}

impl PortServer {
    fn start(name: &'static str, command: fn(u16, &Path) -> Command) -> PortServer {
        require_on_path(name);
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("e2e-{name}-"))
            .tempdir()
            .expect("temp dir");
        let mut last_error = String::new();
        // Another test may grab the free port first: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut server = PortServer {
                name,
                port,
                dir,
                proc: None,
                command,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    dir = server.take_dir();
                }
            }
        }
        panic!("cannot start {name}: {last_error}");
    }

    fn take_dir(self) -> TempDir {
        let PortServer { dir, mut proc, .. } = self;
        if let Some(p) = proc.as_mut() {
            p.kill();
        }
        dir
    }

    fn spawn(&mut self) -> Result<(), String> {
        let cmd = (self.command)(self.port, self.dir.path());
        let log = self.dir.path().join(format!("{}.log", self.name));
        let mut proc = Proc::spawn(self.name, cmd, &log);
        let result = wait_for_port(&mut proc, self.port, START_TIMEOUT);
        self.proc = Some(proc);
        result
    }

    fn kill(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
    }

    fn restart(&mut self) {
        self.kill();
        // The old socket may linger for a moment; retry on the same port.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cannot restart {} on {}: {e}", self.name, self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// `nats-server -js` on a free port with its own store directory.
pub struct NatsServer {
    inner: PortServer,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer {
            inner: PortServer::start("nats-server", |port, dir| {
                let mut cmd = Command::new("nats-server");
                cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                    .arg(dir.join("store"));
                cmd
            }),
        }
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.inner.port)
    }

    /// SIGKILL: the server vanishes without a goodbye.
    pub fn kill(&mut self) {
        self.inner.kill();
    }

    /// Starts it again on the same port with the same store directory.
    pub fn restart(&mut self) {
        self.inner.restart();
    }

    pub fn proc(&mut self) -> Option<&mut Proc> {
        self.inner.proc.as_mut()
    }
}

/// `redis-server` on a free port, without persistence.
pub struct RedisServer {
    inner: PortServer,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer {
            inner: PortServer::start("redis-server", |port, dir| {
                let mut cmd = Command::new("redis-server");
                cmd.args([
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                ])
                .arg(dir);
                cmd
            }),
        }
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.inner.port)
    }

    pub fn kill(&mut self) {
        self.inner.kill();
    }

    pub fn restart(&mut self) {
        self.inner.restart();
    }

    pub fn proc(&mut self) -> Option<&mut Proc> {
        self.inner.proc.as_mut()
    }
}

/// Environment variables the gateway and the ingestor read; removed from
/// the children's environment unless a test sets them, so a developer's
/// shell cannot change what a test means.
const CONFIG_VARS: &[&str] = &[
    "GATEWAY_ADDR",
    "NATS_URL",
    "REDIS_URL",
    "REDIS_SENTINELS",
    "REDIS_MASTER_NAME",
    "REDIS_PASSWORD",
    "STREAM_REPLICAS",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY_FILE",
    "JWT_PRIVATE_KEY_FILE",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "DEFAULT_ACCOUNT",
    "SUBJECT_PREFIX",
    "CORS_ORIGINS",
    "QUOTE_THROTTLE_MS",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "REPLICA_ID",
    "MAX_PAYLOAD_BYTES",
    "RATE_LIMIT_PER_SEC",
    "RATE_LIMIT_BURST",
    "RATE_LIMIT_STRIKES",
    "CLIENT_QUEUE_LIMIT",
    "MAX_CONNECTIONS_PER_USER",
    "SOCKET_BUFFER",
    "SOCKETIO_FAST_PATH",
    "PING_INTERVAL_MS",
    "PING_TIMEOUT_MS",
    "CONNECT_TIMEOUT_MS",
    "STATE_BACKLOG",
    "TCP_SEND_BUFFER",
    "DELIVERY_SETTLE_SECS",
    "EVENTS_MAX_AGE_SECS",
    "EVENTS_MAX_MESSAGES",
    "RESUME_WINDOW_SECS",
    "DRAIN_TIMEOUT_SECS",
    "LOG_FORMAT",
    "TRUSTED_PROXIES",
    "METRICS_ADDR",
    "JWT_LEEWAY_SECS",
    "MAX_TOKEN_LIFETIME_SECS",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_IP",
    "HANDSHAKES_PER_SEC_PER_IP",
    "MAX_PENDING_SESSIONS_PER_IP",
    "PENDING_SESSION_TIMEOUT_SECS",
    "HEADER_READ_TIMEOUT_SECS",
    "IDLE_TIMEOUT_SECS",
    "TLS_HANDSHAKE_TIMEOUT_SECS",
    "MAX_TLS_HANDSHAKES",
    "ACCESS_LOG",
    "SIM_QUOTES_PER_SEC",
    "SIM_LOGS_PER_SEC",
    "SIM_SIGNALS_PER_SEC",
    "MT5_ACCOUNT",
    "BRIDGE_ADDR",
    "RUST_LOG",
];

/// A command for a workspace binary, run in `dir` (so no stray `.env` is
/// read) with a clean configuration environment plus `env`.
pub fn workspace_command(bin: &str, dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary(bin));
    cmd.current_dir(dir);
    for var in CONFIG_VARS {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A `gateway` process on a free port (`GATEWAY_ADDR=127.0.0.1:0`).
pub struct Gateway {
    // Fields drop in order: the process dies before its directory goes.
    proc: Proc,
    addr: SocketAddr,
    token: Option<String>,
    _dir: TempDir,
}

impl Gateway {
    /// Runs the gateway with `env` (plus `--standalone` when asked) and waits
    /// for its `gateway listening on http(s)://…` line.
    pub fn start(env: &[(&str, &str)], standalone: bool) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("e2e-gateway-")
            .tempdir()
            .expect("temp dir");
        let mut all = vec![("GATEWAY_ADDR", "127.0.0.1:0")];
        all.extend_from_slice(env);
        let mut cmd = workspace_command("gateway", dir.path(), &all);
        if standalone {
            cmd.arg("--standalone");
        }
        let log = dir.path().join("gateway.stderr.log");
        let mut proc = Proc::spawn("gateway", cmd, &log);
        let Some(line) = proc.wait_stdout(START_TIMEOUT, |l| l.contains("listening on http"))
        else {
            let status = proc.try_status();
            proc.kill();
            panic!(
                "gateway did not print `listening on` within {START_TIMEOUT:?} (exit: {status:?}); stdout: {:?}\nstderr:\n{}",
                proc.stdout_lines(),
                proc.stderr_tail(60)
            );
        };
        let addr: SocketAddr = line
            .rsplit("://")
            .next()
            .and_then(|a| a.trim().trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the address in {line:?}"));
        let prints_token = standalone
            && !env
                .iter()
                .any(|(k, _)| *k == "JWT_SECRET" || *k == "JWT_PUBLIC_KEY_FILE");
        let token = if prints_token {
            let line = proc
                .wait_stdout(Duration::from_secs(5), |l| l.starts_with("token: "))
                .unwrap_or_else(|| {
                    panic!(
                        "standalone gateway printed no `token:` line; stdout: {:?}",
                        proc.stdout_lines()
                    )
                });
            Some(line["token: ".len()..].trim().to_owned())
        } else {
            None
        };
        Gateway {
            proc,
            addr,
            token,
            _dir: dir,
        }
    }

    /// `gateway --standalone` with its printed demo token.
    pub fn standalone(env: &[(&str, &str)]) -> Gateway {
        Gateway::start(env, true)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The token a standalone gateway without `JWT_SECRET` printed.
    pub fn standalone_token(&self) -> &str {
        self.token
            .as_deref()
            .expect("only a standalone gateway without JWT_SECRET prints a token")
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.proc.stdout_lines()
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    pub fn stderr_contains(&self, needle: &str) -> bool {
        self.proc.stderr().contains(needle)
    }

    pub fn assert_no_panic(&self) {
        self.proc.assert_no_panic();
    }

    /// SIGTERM and wait (at most `timeout`) for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.terminate(timeout)
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// An `ingestor` process.
pub struct Ingestor {
    proc: Proc,
    _dir: TempDir,
}

impl Ingestor {
    /// Runs `ingestor ARGS` with `env` (which must give `NATS_URL`) and
    /// waits for its `ingestor … publishing to …` line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Ingestor {
        let dir = tempfile::Builder::new()
            .prefix("e2e-ingestor-")
            .tempdir()
            .expect("temp dir");
        let mut cmd = workspace_command("ingestor", dir.path(), env);
        cmd.args(args);
        let log = dir.path().join("ingestor.stderr.log");
        let mut proc = Proc::spawn("ingestor", cmd, &log);
        if proc
            .wait_stdout(START_TIMEOUT, |l| l.contains("publishing to"))
            .is_none()
        {
            let status = proc.try_status();
            proc.kill();
            panic!(
                "ingestor {args:?} did not start within {START_TIMEOUT:?} (exit: {status:?}); stdout: {:?}\nstderr:\n{}",
                proc.stdout_lines(),
                proc.stderr_tail(60)
            );
        }
        Ingestor { proc, _dir: dir }
    }

    /// `ingestor --account ACCOUNT sim EXTRA…` publishing to `nats_url`.
    pub fn sim(nats_url: &str, account: &str, extra: &[&str]) -> Ingestor {
        let mut args = vec!["--account", account, "sim"];
        args.extend_from_slice(extra);
        Ingestor::start(&args, &[("NATS_URL", nats_url)])
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    pub fn assert_no_panic(&self) {
        self.proc.assert_no_panic();
    }

    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.terminate(timeout)
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}
