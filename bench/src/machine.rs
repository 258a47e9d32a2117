//! Where a saturated run's CPU went on the whole machine, from `/proc`: the machine's busy
//! time (`/proc/stat`), PostgreSQL's processes (every process named `postgres`: the
//! postmaster, its backends and workers; a backend that exits during a run takes its time
//! with it, so it is missing from the figure), and this generator itself.
//!
//! A server that shares the machine with its database and its load generator cannot answer
//! faster than the machine's cores allow for the rest: with `C` cores and `R` µs of other CPU
//! per request, no server exceeds `C / R` requests a second, however little CPU it uses
//! itself. The `--peer` run reports that bound beside each server's throughput.

/// CPU seconds used so far, by part of the machine.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    /// Every core's non-idle time (user, nice, system, irq, softirq, steal).
    machine: f64,
    /// PostgreSQL's processes alive now, by pid: what each has used so far.
    postgres: std::collections::HashMap<u32, f64>,
    /// This process.
    client: f64,
}

/// One run's CPU per request, µs, by part of the machine.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct MachineShare {
    /// The whole machine's busy time.
    pub machine_cpu_us: f64,
    /// PostgreSQL's processes.
    pub postgres_cpu_us: f64,
    /// The load generator.
    pub client_cpu_us: f64,
    /// Cores on the machine.
    pub cores: usize,
}

impl MachineShare {
    /// Requests a second the machine could answer if the server used no CPU at all: its
    /// cores divided by everything else's CPU per request (`server_cpu_us` is the server's).
    pub fn ceiling(&self, server_cpu_us: f64) -> Option<f64> {
        let rest = self.machine_cpu_us - server_cpu_us;
        (rest > 0.0).then(|| self.cores as f64 * 1e6 / rest)
    }
}

/// The clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 wherever Linux reports
/// them to user space).
const TICKS: f64 = 100.0;

/// The CPU seconds so far; `None` where `/proc` cannot be read (not Linux).
pub fn snapshot() -> Option<CpuSnapshot> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = cpu
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<u64>();
    let mut postgres = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres")
            && let Some(seconds) = process_seconds(&pid.to_string())
        {
            postgres.insert(pid, seconds);
        }
    }
    Some(CpuSnapshot {
        machine: busy as f64 / TICKS,
        postgres,
        client: process_seconds("self")?,
    })
}

/// User + system seconds of process `pid` (all its threads), from `/proc/PID/stat`.
pub fn process_seconds(pid: &str) -> Option<f64> {
    process_times(pid).map(|(user, system)| user + system)
}

/// User and system (kernel) seconds of process `pid` (all its threads), from
/// `/proc/PID/stat` (fields 14 and 15).
pub fn process_times(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it follow its `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime as f64 / TICKS, stime as f64 / TICKS))
}

impl CpuSnapshot {
    /// CPU per request from `self` to `later` over `requests` requests.
    pub fn share_until(&self, later: &CpuSnapshot, requests: u64) -> Option<MachineShare> {
        if requests == 0 {
            return None;
        }
        let per = |a: f64, b: f64| (b - a).max(0.0) * 1e6 / requests as f64;
        // Per process: one that started since counts whole; one that exited took its
        // time with it (backends of a closed pool), so it is left out, not subtracted.
        let postgres: f64 = later
            .postgres
            .iter()
            .map(|(pid, b)| b - self.postgres.get(pid).copied().unwrap_or(0.0))
            .filter(|d| *d > 0.0)
            .sum();
        Some(MachineShare {
            machine_cpu_us: per(self.machine, later.machine),
            postgres_cpu_us: postgres * 1e6 / requests as f64,
            client_cpu_us: per(self.client, later.client),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_read_and_the_ceiling_divides_the_cores_by_the_rest() {
        let a = snapshot().expect("/proc is readable on Linux");
        // Burn some CPU in this process, so the machine and the client both move.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(120);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let b = snapshot().unwrap();
        let share = a.share_until(&b, 1).unwrap();
        assert!(share.client_cpu_us >= 50_000.0, "{share:?}");
        assert!(
            share.machine_cpu_us >= share.client_cpu_us * 0.5,
            "{share:?}"
        );
        assert!(a.share_until(&b, 0).is_none());
        let s = MachineShare {
            machine_cpu_us: 300.0,
            postgres_cpu_us: 150.0,
            client_cpu_us: 50.0,
            cores: 2,
        };
        assert_eq!(s.ceiling(100.0), Some(10_000.0));
        assert_eq!(s.ceiling(300.0), None);
    }
}
