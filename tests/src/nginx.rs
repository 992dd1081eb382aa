//! The real `nginx` in front of gateway replicas, configured by the
//! deployment's own `deploy/nginx/gateway.conf` rendered with free ports.
//!
//! nginx runs in a temporary prefix (`nginx -p DIR -e DIR/error.log -c
//! DIR/nginx.conf -g 'daemon off; pid …;'`) with its logs and temp files
//! inside it, so it needs nothing under /etc or /var, even as root. It is
//! stopped on drop (SIGTERM to the master, which stops its workers; SIGKILL
//! if that does not work).

use crate::procs::{free_port, Proc};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The deployment's nginx template.
pub fn template_path() -> PathBuf {
    crate::workspace_root().join("deploy/nginx/gateway.conf")
}

/// `gateway.conf` with its placeholders filled: nginx listens on `listen`
/// and balances over `replicas`.
pub fn render(listen: &str, replicas: &[SocketAddr]) -> String {
    let template = std::fs::read_to_string(template_path())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", template_path().display()));
    let servers: Vec<String> = replicas
        .iter()
        .map(|a| format!("server {a} max_fails=0;"))
        .collect();
    let rendered = template
        .replace("${GATEWAY_LISTEN}", listen)
        .replace("${GATEWAY_UPSTREAMS}", &servers.join("\n    "));
    assert!(
        !rendered.contains("${"),
        "placeholders left in gateway.conf:\n{rendered}"
    );
    rendered
}

/// The `nginx` program: on PATH, or where Debian puts it.
fn program() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nginx"))
            .find(|p| p.is_file())
    });
    let program = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    assert!(
        program.is_file(),
        "nginx is not installed: run scripts/test.sh (it installs it) or `apt-get install nginx-light`"
    );
    program
}

pub struct Nginx {
    // Declared before `dir`: the process dies before its directory goes.
    proc: Proc,
    port: u16,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx on a free port in front of `replicas`.
    pub fn start(replicas: &[SocketAddr]) -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("e2e-nginx-")
            .tempdir()
            .expect("temp dir");
        // Workers run as `nobody` when the master is root: let them in.
        set_mode(dir.path(), 0o755);
        for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            let path = dir.path().join("temp").join(sub);
            std::fs::create_dir_all(&path).expect("nginx temp dir");
            set_mode(&dir.path().join("temp"), 0o755);
            set_mode(&path, 0o777);
        }
        let mut last_error = String::new();
        // Another test may take the free port first: try a few.
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(
                dir.path().join("gateway.conf"),
                render(&format!("127.0.0.1:{port}"), replicas),
            )
            .expect("writing gateway.conf");
            std::fs::write(dir.path().join("nginx.conf"), main_conf(dir.path()))
                .expect("writing nginx.conf");
            let mut proc =
                Proc::spawn("nginx", command(dir.path()), &dir.path().join("stderr.log"));
            match wait_for_port(&mut proc, port) {
                Ok(()) => return Nginx { proc, port, dir },
                Err(e) => {
                    proc.kill();
                    last_error = format!("{e}\nerror.log:\n{}", error_log(dir.path()));
                }
            }
        }
        panic!("cannot start nginx: {last_error}");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr())
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        error_log(self.dir.path())
    }

    /// nginx's access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- nginx error.log, last lines -----\n{}\n----- end of nginx error.log -----",
                crate::procs::tail(&self.error_log(), 60)
            );
            // The requests that did not simply succeed on their first replica.
            let log = self.access_log();
            let unusual: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(", ") || !(l.contains("\" 200 ") || l.contains("\" 101 ")))
                .take(40)
                .collect();
            eprintln!(
                "----- nginx access.log, requests retried or refused -----\n{}\n----- end -----",
                unusual.join("\n")
            );
        }
        // SIGTERM: the master stops its workers (a SIGKILLed master would
        // leave them running).
        self.proc.signal(libc::SIGTERM);
        if self.proc.wait_exit(Duration::from_secs(5)).is_none() {
            self.proc.kill();
        }
    }
}

fn main_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$msec $request_time \"$request\" $status upstream $upstream_addr $upstream_status';
    access_log {d}/access.log upstreams;
    client_body_temp_path {d}/temp/client_body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    include gateway.conf;
}}
"
    )
}

fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(program());
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-g")
        .arg(format!(
            "daemon off; pid {};",
            dir.join("nginx.pid").display()
        ));
    cmd
}

fn error_log(dir: &Path) -> String {
    let mut text = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(dir.join("error.log")).unwrap_or_default());
    text
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn wait_for_port(proc: &mut Proc, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + crate::procs::START_TIMEOUT;
    loop {
        if let Some(status) = proc.try_status() {
            return Err(format!("nginx exited ({status}) on port {port}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("nginx did not listen on {port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
