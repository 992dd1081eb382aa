//! Limits applied before any token is checked: connections in all and per
//! client address, session-opening requests per address, unauthenticated
//! Engine.IO sessions, header-read and TLS handshake timeouts, and who may
//! say where a client really is (`TRUSTED_PROXIES`). Also where `/metrics`
//! is served and whether requests are logged.

use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Edge (before authentication)")]
pub struct EdgeConfig {
    /// Connections this replica holds at once, in all (also kept below the
    /// process's open-file limit).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Connections one client address may hold at once.
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Requests that open a session (Engine.IO handshakes, WebSocket
    /// upgrades) one client address may make per second (burst: twice).
    #[arg(long, env = "HANDSHAKES_PER_SEC_PER_IP", default_value_t = 100)]
    pub handshakes_per_sec_per_ip: u32,

    /// Engine.IO sessions one address may open per
    /// PENDING_SESSION_TIMEOUT_SECS before it authenticates them.
    #[arg(long, env = "MAX_PENDING_SESSIONS_PER_IP", default_value_t = 256)]
    pub max_pending_sessions_per_ip: u32,

    /// Seconds an Engine.IO session may stay without a Socket.IO CONNECT.
    #[arg(long, env = "PENDING_SESSION_TIMEOUT_SECS", default_value_t = 10)]
    pub pending_session_timeout_secs: u64,

    /// Seconds a request head may take to arrive (also the longest a
    /// keep-alive connection may sit idle between requests).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Seconds a TLS handshake may take.
    #[arg(long, env = "TLS_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub tls_handshake_timeout_secs: u64,

    /// TLS handshakes in flight at once; more connections wait their turn
    /// in the kernel's backlog.
    #[arg(long, env = "MAX_TLS_HANDSHAKES", default_value_t = 256)]
    pub max_tls_handshakes: usize,

    /// Comma-separated addresses or CIDRs of proxies whose
    /// `X-Forwarded-For` names the client (none: the peer is the client).
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<Cidr>,

    /// Serve `/metrics` on this address only (none: on the main listener).
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// One log line (target `access`) per HTTP request.
    #[arg(long, env = "ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,
}

impl EdgeConfig {
    pub fn pending_session_timeout(&self) -> Duration {
        Duration::from_secs(self.pending_session_timeout_secs)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_timeout_secs)
    }

    /// True if `peer` is one of `TRUSTED_PROXIES`.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(peer))
    }
}

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    addr: IpAddr,
    /// Leading bits that must match.
    bits: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let s = s.trim();
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not an address or CIDR (10.0.0.0/8, fd00::/8)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) => b
            .parse::<u8>()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
    };
    Ok(Cidr { addr, bits })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match() {
        let c = parse_cidr("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let one = parse_cidr("192.168.1.7").unwrap();
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let v6 = parse_cidr("fd00::/12").unwrap();
        assert!(v6.contains("fd0f::1".parse().unwrap()));
        assert!(!v6.contains("fd10::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "::/129", "10.0.0.0/x", ""] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
