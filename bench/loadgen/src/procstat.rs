//! CPU time and memory of processes, from `/proc`.
//!
//! A process's CPU time is `utime + stime` (fields 14 and 15 of
//! `/proc/<pid>/stat`, all threads, in clock ticks); its memory is `VmRSS`
//! of `/proc/<pid>/status`. The machine's busy share comes from the `cpu`
//! line of `/proc/stat`, so a report can say whether the box was saturated.

use std::time::Instant;

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// CPU seconds (user + system) used so far by `pid` ("self" for us).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' come field 3 (state) onwards; utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_sec())
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// (busy, total) jiffies of all CPUs together.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The load average over the last minute.
pub fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A point in time for the processes we watch, to diff against later.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    cpu: Vec<Option<f64>>,
    machine: Option<(u64, u64)>,
}

/// CPU use between two samples.
#[derive(Debug, Clone)]
pub struct Usage {
    pub wall_secs: f64,
    /// CPU seconds per watched process (None if it could not be read).
    pub cpu_secs: Vec<Option<f64>>,
    /// Share of all cores busy on the machine, 0..=100.
    pub machine_busy_pct: Option<f64>,
}

pub fn sample(pids: &[String]) -> Sample {
    Sample {
        at: Instant::now(),
        cpu: pids.iter().map(|p| cpu_secs(p)).collect(),
        machine: machine_jiffies(),
    }
}

impl Sample {
    pub fn usage_since(&self, earlier: &Sample) -> Usage {
        let cpu_secs = self
            .cpu
            .iter()
            .zip(&earlier.cpu)
            .map(|(now, then)| Some(((*now)? - (*then)?).max(0.0)))
            .collect();
        let machine_busy_pct = match (self.machine, earlier.machine) {
            (Some((b1, t1)), Some((b0, t0))) if t1 > t0 => {
                Some(100.0 * (b1.saturating_sub(b0)) as f64 / (t1 - t0) as f64)
            }
            _ => None,
        };
        Usage {
            wall_secs: self.at.duration_since(earlier.at).as_secs_f64(),
            cpu_secs,
            machine_busy_pct,
        }
    }
}

/// Raises our open-file limit to the hard limit (10,000 sockets need it).
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        assert!(cpu_secs("self").is_some());
        assert!(rss_kib("self").unwrap() > 0);
        let a = sample(&["self".to_owned()]);
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let u = sample(&["self".to_owned()]).usage_since(&a);
        assert!(u.cpu_secs[0].is_some());
        assert!(u.wall_secs >= 0.0);
    }
}
