//! No single point of failure, on free ports and without containers: a
//! 3-node NATS cluster with JetStream (the users and permissions of
//! `deploy/nats/auth.conf`), and Redis as a primary, a replica and three
//! Sentinels watching them. Nodes are SIGKILLed and started again by the
//! tests in `tests/tests/cluster_ha.rs`.

use crate::procs::{free_port, Proc, START_TIMEOUT};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The password of the cluster's `ingestor` NATS user
/// (`deploy/nats/auth.conf`). It begins like a number on purpose: it must
/// reach nats-server quoted, as the deployment files hand it (see `spawn`).
pub const INGESTOR_PASSWORD: &str = "5e7b-e2e-ingestor-pw";
/// The password of the cluster's `gateway` NATS user.
pub const GATEWAY_PASSWORD: &str = "e2e-gateway-pw";

/// The Sentinel name of the monitored Redis primary.
pub const MASTER_NAME: &str = "mt5";

/// Waits until `port` on 127.0.0.1 accepts connections, failing early (with
/// its stderr) if `proc` exits.
fn wait_for_port(proc: &mut Proc, what: &str, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = proc.try_status() {
            return Err(format!(
                "{what} exited ({status}) before listening on {port}; stderr:\n{}",
                proc.stderr_tail(40)
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} did not listen on {port} within {START_TIMEOUT:?}; stderr:\n{}",
                proc.stderr_tail(40)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 50 ms until it is `Some` or `timeout` passes.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    crate::eventually(timeout, || {
        let v = f();
        if v.is_none() {
            std::thread::sleep(Duration::from_millis(30));
        }
        v
    })
}

/// One NATS node: its ports and, while it runs, its process.
pub struct NatsNode {
    /// `n1`, `n2`, `n3` (the JetStream server name).
    pub name: String,
    /// Client port.
    pub port: u16,
    /// Cluster route port.
    pub route_port: u16,
    /// Monitoring port (`/healthz`, `/jsz`).
    pub monitor_port: u16,
    proc: Option<Proc>,
}

/// Three `nats-server -js` nodes routed into one cluster, with the users of
/// `deploy/nats/auth.conf`.
pub struct NatsCluster {
    // Declared before `dir`: the processes die before their directory goes.
    pub nodes: Vec<NatsNode>,
    dir: TempDir,
}

impl NatsCluster {
    /// Starts three nodes and waits until JetStream is ready on each.
    pub fn start() -> NatsCluster {
        require("nats-server");
        let dir = tempfile::Builder::new()
            .prefix("e2e-nats-cluster-")
            .tempdir()
            .expect("temp dir");
        std::fs::copy(
            crate::workspace_root().join("deploy/nats/auth.conf"),
            dir.path().join("auth.conf"),
        )
        .expect("copying deploy/nats/auth.conf");
        let nodes: Vec<NatsNode> = (1..=3)
            .map(|i| NatsNode {
                name: format!("n{i}"),
                port: free_port(),
                route_port: free_port(),
                monitor_port: free_port(),
                proc: None,
            })
            .collect();
        let routes: Vec<String> = nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.route_port))
            .collect();
        for n in &nodes {
            let conf = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{mon}\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{ name: e2e, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n\
                 include ./auth.conf\n",
                name = n.name,
                port = n.port,
                mon = n.monitor_port,
                store = dir.path().join(&n.name).display(),
                route = n.route_port,
                routes = routes.join(", "),
            );
            std::fs::write(dir.path().join(format!("{}.conf", n.name)), conf).expect("writing");
        }
        let mut cluster = NatsCluster { nodes, dir };
        for i in 0..3 {
            cluster.spawn(i).unwrap_or_else(|e| panic!("{e}"));
        }
        for i in 0..3 {
            cluster.wait_healthy(i, START_TIMEOUT);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let mut cmd = Command::new("nats-server");
        cmd.arg("-c")
            .arg(self.dir.path().join(format!("{}.conf", node.name)))
            // Quoted as deploy/nats/auth.conf asks: unquoted, nats-server
            // would read 5e7b... as a number and refuse the config.
            .env("NATS_INGESTOR_PASSWORD", format!("\"{INGESTOR_PASSWORD}\""))
            .env("NATS_GATEWAY_PASSWORD", format!("\"{GATEWAY_PASSWORD}\""));
        let log = self.dir.path().join(format!("{}.log", node.name));
        let mut proc = Proc::spawn(&format!("nats-server {}", node.name), cmd, &log);
        let result = wait_for_port(&mut proc, &node.name, node.port);
        self.nodes[i].proc = Some(proc);
        result
    }

    /// Waits until node `i` answers `/healthz` with 200 (JetStream current).
    pub fn wait_healthy(&self, i: usize, timeout: Duration) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.nodes[i].monitor_port));
        poll(timeout, || {
            let r = crate::http::try_get(addr, "/healthz", &[]).ok()?;
            (r.status == 200).then_some(())
        })
        .unwrap_or_else(|| panic!("NATS node {} not healthy within {timeout:?}", i + 1));
    }

    /// Every node's client URL, comma-separated, with `user:password@`.
    pub fn urls(&self, user: &str, password: &str) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://{user}:{password}@127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `NATS_URL` for the ingestor.
    pub fn ingestor_urls(&self) -> String {
        self.urls("ingestor", INGESTOR_PASSWORD)
    }

    /// `NATS_URL` for a gateway.
    pub fn gateway_urls(&self) -> String {
        self.urls("gateway", GATEWAY_PASSWORD)
    }

    /// The node index currently leading `stream` (from `/jsz`), if known.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        for n in &self.nodes {
            let addr = SocketAddr::from(([127, 0, 0, 1], n.monitor_port));
            let Ok(r) = crate::http::try_get(addr, "/jsz?accounts=true&streams=true", &[]) else {
                continue;
            };
            let jsz = r.json();
            for acc in jsz["account_details"].as_array().into_iter().flatten() {
                for s in acc["stream_detail"].as_array().into_iter().flatten() {
                    if s["name"] == stream {
                        if let Some(leader) = s["cluster"]["leader"].as_str() {
                            return self.nodes.iter().position(|n| n.name == leader);
                        }
                    }
                }
            }
        }
        None
    }

    /// The live nodes holding a client connection named `client` (from
    /// `/connz`), in node order.
    pub fn nodes_with_client(&self, client: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                let addr = SocketAddr::from(([127, 0, 0, 1], self.nodes[i].monitor_port));
                crate::http::try_get(addr, "/connz?limit=1024", &[])
                    .ok()
                    .is_some_and(|r| {
                        r.json()["connections"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["name"] == client)
                    })
            })
            .collect()
    }

    /// `(replicas, messages, last_seq)` of `stream` as a live node reports it.
    pub fn stream_state(&self, stream: &str) -> Option<(usize, u64, u64)> {
        for n in &self.nodes {
            let addr = SocketAddr::from(([127, 0, 0, 1], n.monitor_port));
            let Ok(r) =
                crate::http::try_get(addr, "/jsz?accounts=true&streams=true&config=true", &[])
            else {
                continue;
            };
            let jsz = r.json();
            for acc in jsz["account_details"].as_array().into_iter().flatten() {
                for s in acc["stream_detail"].as_array().into_iter().flatten() {
                    if s["name"] == stream {
                        let replicas = s["config"]["num_replicas"].as_u64()? as usize;
                        return Some((
                            replicas,
                            s["state"]["messages"].as_u64()?,
                            s["state"]["last_seq"].as_u64()?,
                        ));
                    }
                }
            }
        }
        None
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].proc.as_mut() {
            p.kill();
        }
    }

    /// Starts node `i` again (same ports, same store) and waits until it is
    /// healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(i) {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => panic!("cannot restart node {i}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        self.wait_healthy(i, START_TIMEOUT);
    }

    pub fn proc(&mut self, i: usize) -> Option<&mut Proc> {
        self.nodes[i].proc.as_mut()
    }
}

/// A Redis server (primary or replica) of a [`SentinelRedis`].
pub struct RedisNode {
    pub port: u16,
    proc: Option<Proc>,
}

/// Redis with automatic failover: a primary, one replica and three
/// `redis-sentinel`s (quorum 2) that promote the replica when the primary
/// has not answered for a second.
pub struct SentinelRedis {
    // Declared before `dir`: the processes die before their directory goes.
    /// `[primary, replica]` as started (Sentinel may swap the roles).
    pub servers: Vec<RedisNode>,
    pub sentinels: Vec<RedisNode>,
    dir: TempDir,
}

impl SentinelRedis {
    pub fn start() -> SentinelRedis {
        require("redis-server");
        require("redis-sentinel");
        let dir = tempfile::Builder::new()
            .prefix("e2e-redis-sentinel-")
            .tempdir()
            .expect("temp dir");
        let mut set = SentinelRedis {
            servers: (0..2)
                .map(|_| RedisNode {
                    port: free_port(),
                    proc: None,
                })
                .collect(),
            sentinels: (0..3)
                .map(|_| RedisNode {
                    port: free_port(),
                    proc: None,
                })
                .collect(),
            dir,
        };
        let primary = set.servers[0].port;
        set.spawn_server(0, None).unwrap_or_else(|e| panic!("{e}"));
        set.spawn_server(1, Some(primary))
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..3 {
            let conf = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 4000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                port = set.sentinels[i].port,
                dir = set.dir.path().display(),
            );
            let path = set.dir.path().join(format!("sentinel{i}.conf"));
            std::fs::write(&path, conf).expect("writing sentinel.conf");
            let mut cmd = Command::new("redis-sentinel");
            cmd.arg(&path);
            let log = set.dir.path().join(format!("sentinel{i}.log"));
            let mut proc = Proc::spawn(&format!("redis-sentinel {i}"), cmd, &log);
            wait_for_port(&mut proc, "redis-sentinel", set.sentinels[i].port)
                .unwrap_or_else(|e| panic!("{e}"));
            set.sentinels[i].proc = Some(proc);
        }
        // Every sentinel knows the replica, and the replica is in sync.
        poll(START_TIMEOUT, || {
            let synced =
                command(set.servers[1].port, "INFO replication")?.contains("master_link_status:up");
            let known = set.sentinels.iter().all(|s| {
                command(s.port, &format!("SENTINEL REPLICAS {MASTER_NAME}"))
                    .is_some_and(|r| r.contains(&set.servers[1].port.to_string()))
            });
            (synced && known).then_some(())
        })
        .expect("the Redis replica did not sync, or the sentinels did not see it");
        set
    }

    fn spawn_server(&mut self, i: usize, replica_of: Option<u16>) -> Result<(), String> {
        let port = self.servers[i].port;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path());
        if let Some(primary) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        let log = self.dir.path().join(format!("redis{i}.log"));
        let mut proc = Proc::spawn(&format!("redis-server {i}"), cmd, &log);
        let result = wait_for_port(&mut proc, "redis-server", port);
        self.servers[i].proc = Some(proc);
        result
    }

    /// `REDIS_SENTINELS`: every sentinel's `host:port`, comma-separated.
    pub fn sentinel_list(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the primary as the first answering sentinel says.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let reply = command(
                s.port,
                &format!("SENTINEL get-master-addr-by-name {MASTER_NAME}"),
            )?;
            reply.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// The index in `servers` of the current primary.
    pub fn primary(&self) -> Option<usize> {
        let port = self.primary_port()?;
        self.servers.iter().position(|s| s.port == port)
    }

    /// SIGKILL server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = self.servers[i].proc.as_mut() {
            p.kill();
        }
    }

    /// Waits until the sentinels name a primary other than `old`, and that
    /// server says it is a master.
    pub fn wait_failover(&self, old: usize, timeout: Duration) -> usize {
        poll(timeout, || {
            let new = self.primary()?;
            let role = command(self.servers[new].port, "ROLE")?;
            (new != old && role.starts_with("master")).then_some(new)
        })
        .unwrap_or_else(|| panic!("Sentinel did not fail over within {timeout:?}"))
    }

    /// Starts server `i` again as a replica of the current primary.
    pub fn restart_as_replica(&mut self, i: usize) {
        let primary = self.primary_port();
        self.spawn_server(i, primary)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A session record stored under `mt5:session:ID` on the current primary.
    pub fn stored_session(&self, id: &str) -> Option<serde_json::Value> {
        let port = self.primary_port()?;
        serde_json::from_str(&command(port, &format!("GET mt5:session:{id}"))?).ok()
    }

    pub fn server_proc(&mut self, i: usize) -> Option<&mut Proc> {
        self.servers[i].proc.as_mut()
    }
}

/// Sends one inline command and returns the reply as text: a simple or bulk
/// string, or an array's elements one per line (`None` for nil, errors, or
/// no answer).
pub fn command(port: u16, command: &str) -> Option<String> {
    use std::io::{BufReader, Write};
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader)
}

fn read_reply(reader: &mut impl std::io::BufRead) -> Option<String> {
    let mut head = String::new();
    reader.read_line(&mut head).ok()?;
    let head = head.trim_end();
    match head.as_bytes().first()? {
        b'+' | b':' => Some(head[1..].to_owned()),
        b'$' => {
            let len = usize::try_from(head[1..].parse::<i64>().ok()?).ok()?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).ok()?;
            body.truncate(len);
            String::from_utf8(body).ok()
        }
        b'*' => {
            let n = usize::try_from(head[1..].parse::<i64>().ok()?).ok()?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_reply(reader).unwrap_or_default());
            }
            Some(items.join("\n"))
        }
        _ => None,
    }
}

fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| Path::new(&p).join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not on PATH: run scripts/test.sh (it installs it) or apt-get install it"
    );
}
