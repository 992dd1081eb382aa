//! The gateway as an operator runs it once: a command that must exit
//! (`gateway check-config`, `gateway revoke …`, or a server start that must
//! be refused), with its exit code and output; and checks on what the
//! gateway wrote to its log.

use crate::procs::{workspace_command, Proc};
use std::time::Duration;

/// How a one-shot `gateway` run ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit code (`None`: killed by a signal, or still running at the
    /// deadline and killed then).
    pub code: Option<i32>,
    /// Whether it was still running at the deadline.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// stdout and stderr together, for messages and searches.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `gateway ARGS` with a clean configuration environment plus `env`
/// in an empty directory (no stray `.env`), waits at most `timeout` for it
/// to exit, and kills it if it does not.
pub fn run_gateway(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Finished {
    let dir = tempfile::Builder::new()
        .prefix("e2e-gateway-run-")
        .tempdir()
        .expect("temp dir");
    let mut all = vec![("GATEWAY_ADDR", "127.0.0.1:0")];
    all.extend_from_slice(env);
    let mut cmd = workspace_command("gateway", dir.path(), &all);
    cmd.args(args);
    let log = dir.path().join("gateway.stderr.log");
    let mut proc = Proc::spawn("gateway", cmd, &log);
    let status = proc.wait_exit(timeout);
    let timed_out = status.is_none();
    if timed_out {
        proc.kill();
    }
    // Let the stdout reader catch up with a process that has exited.
    let _ = proc.wait_stdout(Duration::from_millis(200), |_| false);
    Finished {
        code: status.and_then(|s| s.code()),
        timed_out,
        stdout: proc.stdout_lines().join("\n"),
        stderr: proc.stderr(),
    }
}

/// The lines of `log` that could have been forged: a line that does not
/// start the way every line of this log format starts (a timestamp for
/// `text`, `{` for `json`) or that carries a raw control character.
pub fn suspicious_log_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.is_empty())
        .filter(|l| {
            let starts_right = l.starts_with('{')
                || l.get(..4)
                    .is_some_and(|y| y.bytes().all(|b| b.is_ascii_digit()))
                || l.trim_start().starts_with("at ")
                || l.starts_with("  ");
            let control = l.chars().any(|c| c.is_control() && c != '\t');
            !starts_right || control
        })
        .map(str::to_owned)
        .collect()
}

/// The access-log lines of a gateway's stderr (target `access`).
pub fn access_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("access")).collect()
}
