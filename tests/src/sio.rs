//! The scriptable Socket.IO clients: `tests/clients/node/sio-client.mjs`
//! (socket.io-client) and `tests/clients/python/sio_client.py`
//! (python-socketio), driven by the same JSON [`Plan`]. Each prints one JSON
//! line per thing that happened; [`SioClient`] collects them as [`Line`]s.

use crate::procs::{tail, workspace_root};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Which client library runs the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// socket.io-client v4 under Node.
    Node,
    /// python-socketio's `socketio.Client`.
    Python,
}

/// One thing the client saw: `t` is milliseconds since the client started.
#[derive(Debug, Clone)]
pub struct Line {
    pub t: f64,
    pub event: String,
    pub data: Value,
    /// The line as printed.
    pub raw: String,
}

impl Line {
    /// When the client saw it, in epoch milliseconds (the `at` field the
    /// clients print), if known.
    pub fn at(&self) -> Option<f64> {
        serde_json::from_str::<Value>(&self.raw).ok()?["at"].as_f64()
    }
}

/// A client's script: connection options and steps (see the header of
/// `sio-client.mjs` for the format).
#[derive(Debug, Clone)]
pub struct Plan {
    value: Value,
}

/// The default time a `wait_for` step waits.
pub const WAIT_MS: u64 = 10_000;

impl Plan {
    /// A plan for the server at `url` (`http://127.0.0.1:PORT`), with no
    /// automatic reconnection.
    pub fn new(url: &str) -> Plan {
        Plan {
            value: json!({"url": url, "reconnection": false, "steps": []}),
        }
    }

    /// Handshake `auth: {"token": …}`.
    pub fn token(self, token: &str) -> Plan {
        self.auth(json!({ "token": token }))
    }

    /// Any handshake `auth` object.
    pub fn auth(mut self, auth: Value) -> Plan {
        self.value["auth"] = auth;
        self
    }

    /// A query-string parameter of the handshake.
    pub fn query(mut self, key: &str, value: &str) -> Plan {
        if !self.value["query"].is_object() {
            self.value["query"] = json!({});
        }
        self.value["query"][key] = json!(value);
        self
    }

    /// Automatic reconnection after a transport failure (socket.io-client's
    /// `reconnection` option).
    pub fn reconnection(mut self, on: bool) -> Plan {
        self.value["reconnection"] = json!(on);
        self
    }

    /// Behaves like a dashboard that keeps its session: reconnects by
    /// itself (after a transport failure, or when the server says
    /// `disconnected {reconnect: true}`) with `auth.session` from its last
    /// `connected`. Node client only.
    pub fn resume(mut self) -> Plan {
        self.value["resume"] = json!(true);
        self.reconnection(true)
    }

    pub fn transports(mut self, transports: &[&str]) -> Plan {
        self.value["transports"] = json!(transports);
        self
    }

    pub fn step(mut self, step: Value) -> Plan {
        self.value["steps"]
            .as_array_mut()
            .expect("steps is an array")
            .push(step);
        self
    }

    /// Emits `event` with `data`.
    pub fn emit(self, event: &str, data: Value) -> Plan {
        self.step(json!({"emit": event, "data": data}))
    }

    /// Emits `event` with `data` and an acknowledgement callback (its reply
    /// shows up as the event `ack:<event>`).
    pub fn emit_ack(self, event: &str, data: Value) -> Plan {
        self.step(json!({"emit": event, "data": data, "ack": true}))
    }

    /// Emits `event` without any argument.
    pub fn emit_bare(self, event: &str, ack: bool) -> Plan {
        self.step(json!({"emit": event, "ack": ack}))
    }

    /// Emits `event` `n` times back to back.
    pub fn emit_repeat(self, event: &str, data: Value, n: usize) -> Plan {
        self.step(json!({"emit": event, "data": data, "repeat": n}))
    }

    /// Waits for an unconsumed occurrence of `event` (the plan stops, and
    /// the client exits 2, if it does not come within `timeout_ms`).
    pub fn wait_for(self, event: &str, timeout_ms: u64) -> Plan {
        self.step(json!({"wait_for": event, "timeout_ms": timeout_ms}))
    }

    /// Waits for whichever of `events` comes first.
    pub fn wait_any(self, events: &[&str], timeout_ms: u64) -> Plan {
        self.step(json!({"wait_for": events, "timeout_ms": timeout_ms}))
    }

    pub fn wait_ms(self, ms: u64) -> Plan {
        self.step(json!({"wait_ms": ms}))
    }

    /// Waits until the test calls [`SioClient::release`] (or drops stdin).
    pub fn wait_stdin(self) -> Plan {
        self.step(json!({"wait_stdin": true}))
    }

    pub fn disconnect(self) -> Plan {
        self.step(json!({"disconnect": true}))
    }

    /// Waits for the Socket.IO connection and the server's `connected`
    /// greeting: what a dashboard does before it subscribes.
    pub fn connected(self) -> Plan {
        self.wait_for("connect", WAIT_MS)
            .wait_for("connected", WAIT_MS)
    }

    /// Subscribes (with an ack) and waits for `subscribed`.
    pub fn subscribe(self, channels: &[&str]) -> Plan {
        self.emit_ack("subscribe", json!({ "channels": channels }))
            .wait_for("subscribed", WAIT_MS)
    }

    pub fn to_json(&self) -> String {
        self.value.to_string()
    }
}

/// A running client. Lines are collected as they come; the test can wait
/// for one ([`SioClient::wait_event`]) and then carry on with the plan.
pub struct SioClient {
    lang: Lang,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Line>,
    lines: Vec<Line>,
    cursor: usize,
    /// The client's stdout has closed (it exited).
    closed: bool,
    dir: TempDir,
}

impl SioClient {
    pub fn node(plan: &Plan) -> SioClient {
        SioClient::spawn(Lang::Node, plan)
    }

    pub fn python(plan: &Plan) -> SioClient {
        SioClient::spawn(Lang::Python, plan)
    }

    pub fn spawn(lang: Lang, plan: &Plan) -> SioClient {
        let clients = workspace_root().join("tests/clients");
        let mut cmd = match lang {
            Lang::Node => {
                let dir = clients.join("node");
                assert!(
                    dir.join("node_modules/socket.io-client").is_dir(),
                    "socket.io-client is not installed: run `npm ci` in {} (scripts/test.sh does)",
                    dir.display()
                );
                let mut cmd = Command::new("node");
                cmd.arg(dir.join("sio-client.mjs"));
                cmd
            }
            Lang::Python => {
                let mut cmd = Command::new("python3");
                cmd.arg(clients.join("python/sio_client.py"));
                cmd
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("e2e-client-")
            .tempdir()
            .expect("temp dir");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log");
        cmd.arg(plan.to_json())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {lang:?} client: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for raw in BufReader::new(stdout).lines() {
                let Ok(raw) = raw else { break };
                let line = match serde_json::from_str::<Value>(&raw) {
                    Ok(v) => Line {
                        t: v["t"].as_f64().unwrap_or(-1.0),
                        event: v["event"].as_str().unwrap_or("?").to_owned(),
                        data: v["data"].clone(),
                        raw,
                    },
                    Err(_) => Line {
                        t: -1.0,
                        event: "unparsed".to_owned(),
                        data: Value::String(raw.clone()),
                        raw,
                    },
                };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        SioClient {
            lang,
            child,
            stdin,
            rx,
            lines: Vec::new(),
            cursor: 0,
            closed: false,
            dir,
        }
    }

    /// Moves lines from the reader thread; false when none came within
    /// `timeout` or stdout is closed.
    fn pump(&mut self, timeout: Duration) -> bool {
        match self.rx.recv_timeout(timeout) {
            Ok(line) => {
                self.lines.push(line);
                while let Ok(line) = self.rx.try_recv() {
                    self.lines.push(line);
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                false
            }
        }
    }

    /// The next line named `event` after the last one this returned;
    /// panics (with everything seen) if none comes within `timeout`.
    pub fn wait_event(&mut self, event: &str, timeout: Duration) -> Line {
        match self.try_wait_event(event, timeout) {
            Some(line) => line,
            None => panic!(
                "{:?} client: no `{event}` within {timeout:?}; seen:\n{}\nstderr:\n{}",
                self.lang,
                dump(&self.lines),
                self.stderr()
            ),
        }
    }

    /// Like [`SioClient::wait_event`], `None` on timeout.
    pub fn try_wait_event(&mut self, event: &str, timeout: Duration) -> Option<Line> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.lines[self.cursor..]
                .iter()
                .position(|l| l.event == event)
            {
                let i = self.cursor + i;
                self.cursor = i + 1;
                return Some(self.lines[i].clone());
            }
            let now = Instant::now();
            if now >= deadline || self.closed {
                return None;
            }
            self.pump(deadline - now);
        }
    }

    /// Lets a `wait_stdin` step go on.
    pub fn release(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
            let _ = stdin.flush();
        }
    }

    /// The lines seen so far.
    pub fn lines(&mut self) -> &[Line] {
        while let Ok(line) = self.rx.try_recv() {
            self.lines.push(line);
        }
        &self.lines
    }

    pub fn stderr(&self) -> String {
        tail(
            &std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
            30,
        )
    }

    /// Waits (at most `timeout`) for the plan to end and returns all it saw.
    pub fn finish(mut self, timeout: Duration) -> Transcript {
        let deadline = Instant::now() + timeout;
        let mut code = None;
        // Closing stdin releases any wait_stdin step.
        self.stdin.take();
        loop {
            while self.pump(Duration::from_millis(20)) {}
            if let Some(status) = self.child.try_wait().ok().flatten() {
                code = status.code();
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
        }
        // Whatever was still in the pipe.
        while self.pump(Duration::from_millis(100)) {}
        let timed_out = code.is_none();
        let transcript = Transcript {
            lang: self.lang,
            lines: std::mem::take(&mut self.lines),
            code,
            stderr: self.stderr(),
        };
        assert!(
            !timed_out,
            "{:?} client did not finish its plan within {timeout:?}; seen:\n{}\nstderr:\n{}",
            self.lang,
            transcript.dump(),
            transcript.stderr
        );
        transcript
    }
}

impl Drop for SioClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client saw, after its plan ended.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub lang: Lang,
    pub lines: Vec<Line>,
    /// The exit code: 0 when every step ran, 2 when a `wait_for` timed out.
    pub code: Option<i32>,
    pub stderr: String,
}

impl Transcript {
    /// Every line named `event`.
    pub fn all(&self, event: &str) -> Vec<&Line> {
        self.lines.iter().filter(|l| l.event == event).collect()
    }

    pub fn count(&self, event: &str) -> usize {
        self.lines.iter().filter(|l| l.event == event).count()
    }

    pub fn find(&self, event: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.event == event)
    }

    /// The first line named `event`; panics with the transcript if none.
    pub fn first(&self, event: &str) -> &Line {
        self.find(event).unwrap_or_else(|| {
            panic!(
                "{:?} client never saw `{event}`; transcript:\n{}\nstderr:\n{}",
                self.lang,
                self.dump(),
                self.stderr
            )
        })
    }

    /// The event names in order.
    pub fn names(&self) -> Vec<&str> {
        self.lines.iter().map(|l| l.event.as_str()).collect()
    }

    /// Panics unless every step of the plan ran (no `wait_for` timed out).
    pub fn assert_completed(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "{:?} client did not complete its plan; transcript:\n{}\nstderr:\n{}",
            self.lang,
            self.dump(),
            self.stderr
        );
    }

    /// The transcript as text, long lines cut, for failure messages.
    pub fn dump(&self) -> String {
        dump(&self.lines)
    }

    /// Everything the client printed, verbatim.
    pub fn raw(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(&l.raw);
            s.push('\n');
        }
        s
    }
}

fn dump(lines: &[Line]) -> String {
    let shown: Vec<String> = lines
        .iter()
        .skip(lines.len().saturating_sub(120))
        .map(|l| {
            let mut s = l.raw.clone();
            if s.len() > 400 {
                let mut end = 400;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push('…');
            }
            s
        })
        .collect();
    let skipped = lines.len().saturating_sub(120);
    let head = if skipped > 0 {
        format!("({skipped} earlier lines not shown)\n")
    } else {
        String::new()
    };
    head + &shown.join("\n")
}
