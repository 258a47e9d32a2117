//! The raw ceiling: pgbench running the committed scripts of `bench/pgbench/`, which issue
//! the statements parley issues for each scenario, at the same concurrency and duration.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// One committed script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// `record.sql`: recordMessage's full transaction and its idempotency look-up.
    Record,
    /// `list.sql`: conversations(first: 50).
    List,
    /// `thread.sql`: one conversation and its last 50 messages.
    Thread,
}

impl Script {
    fn file(self) -> (&'static str, &'static str) {
        match self {
            Script::Record => ("record.sql", include_str!("../pgbench/record.sql")),
            Script::List => ("list.sql", include_str!("../pgbench/list.sql")),
            Script::Thread => ("thread.sql", include_str!("../pgbench/thread.sql")),
        }
    }
}

/// What to run: weighted scripts and their `-D` variables.
#[derive(Debug, Clone)]
pub struct Job {
    /// Scripts and their weights (`-f FILE@W`).
    pub scripts: Vec<(Script, u32)>,
    /// `-D NAME=VALUE`.
    pub vars: Vec<(&'static str, u64)>,
}

/// What pgbench measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ceiling {
    /// Transactions (script runs) per second, without connection time.
    pub tps: f64,
    /// Average latency, milliseconds.
    pub latency_avg_ms: Option<f64>,
    /// Failed transactions.
    pub failed: u64,
    /// Fixed-rate runs (`-R`): latency percentiles from pgbench's per-transaction log,
    /// measured from each transaction's scheduled start (latency plus schedule lag), ms.
    pub latency: Option<Percentiles>,
    /// The command line (without the database URL).
    pub command: String,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Runs pgbench against `url` with `clients` connections for `duration` (whole seconds,
/// at least 1); `-M prepared` like the server's cached prepared statements, `-j 1` like the
/// generator's one thread. With `rate`, throttled to that many transactions a second
/// (`-R`) and logged per transaction for latency percentiles.
pub async fn run(
    bin: &Path,
    url: &str,
    job: &Job,
    clients: usize,
    rate: Option<f64>,
    duration: Duration,
) -> anyhow::Result<Ceiling> {
    let dir = tempfile::Builder::new()
        .prefix("parley-pgbench-")
        .tempdir()?;
    let mut args: Vec<String> = vec![
        "-n".into(),
        "-M".into(),
        "prepared".into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        "1".into(),
        "-T".into(),
        (duration.as_secs_f64().ceil() as u64).max(1).to_string(),
    ];
    let log_prefix = dir.path().join("txn");
    if let Some(rate) = rate {
        args.push("-R".into());
        args.push(format!("{rate}"));
        args.push("-l".into());
        args.push(format!("--log-prefix={}", log_prefix.display()));
    }
    for (name, value) in &job.vars {
        args.push("-D".into());
        args.push(format!("{name}={value}"));
    }
    for (script, weight) in &job.scripts {
        let (name, text) = script.file();
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        args.push("-f".into());
        args.push(format!("{}@{weight}", path.display()));
    }
    let command = format!(
        "pgbench {}",
        args.iter()
            .map(|a| a.replace(&dir.path().display().to_string(), "bench/pgbench"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = tokio::process::Command::new(bin)
        .args(&args)
        .arg(url)
        .output()
        .await
        .with_context(|| format!("running {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{command} failed ({}):\n{stdout}\n{stderr}", out.status);
    }
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let tps = field("tps = ").with_context(|| format!("no tps in pgbench output:\n{stdout}"))?;
    let latency = match rate {
        Some(_) => Some(log_percentiles(dir.path())?),
        None => None,
    };
    Ok(Ceiling {
        tps,
        latency_avg_ms: field("latency average = "),
        failed: field("number of failed transactions: ").unwrap_or(0.0) as u64,
        latency,
        command: command.replace(&log_prefix.display().to_string(), "txn"),
    })
}

/// Percentiles of `time + schedule_lag` (columns 3 and 7, microseconds) over pgbench's
/// per-transaction logs (`txn.*`) in `dir`.
fn log_percentiles(dir: &Path) -> anyhow::Result<Percentiles> {
    let mut micros: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("txn"));
        if !is_log {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| cols.get(i).and_then(|c| c.parse::<u64>().ok());
            if let Some(time) = num(2) {
                micros.push(time + num(6).unwrap_or(0));
            }
        }
    }
    anyhow::ensure!(!micros.is_empty(), "pgbench logged no transaction");
    micros.sort_unstable();
    let at = |q: f64| {
        let i = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
        micros[i] as f64 / 1000.0
    };
    Ok(Percentiles {
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    })
}
