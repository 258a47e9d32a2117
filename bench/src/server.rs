//! The real `parley serve` process: started on a free loopback port, waited for on
//! `/readyz`, measured through `/proc`, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// A running server.
pub struct Server {
    child: Child,
    pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

/// How to start the server.
pub struct ServerSpec<'a> {
    /// The binary.
    pub bin: &'a Path,
    /// DATABASE_URL.
    pub database_url: &'a str,
    /// PARLEY_DB_MAX_CONNECTIONS, when set.
    pub pool_size: Option<u32>,
    /// Extra `KEY=VALUE` environment.
    pub env: &'a [String],
    /// The log file.
    pub log: PathBuf,
}

impl Server {
    /// Starts `parley serve` and waits until `/readyz` answers 200 (at most 60 s).
    pub async fn start(spec: ServerSpec<'_>, client: &reqwest::Client) -> anyhow::Result<Server> {
        let port = free_port()?;
        let bind = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(&spec.log)
            .with_context(|| format!("creating {}", spec.log.display()))?;
        let mut cmd = Command::new(spec.bin);
        cmd.arg("serve")
            .env("DATABASE_URL", spec.database_url)
            .env("PARLEY_BIND", &bind)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(n) = spec.pool_size {
            cmd.env("PARLEY_DB_MAX_CONNECTIONS", n.to_string());
        }
        for kv in spec.env {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--server-env {kv}: expected KEY=VALUE"))?;
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "starting {} (build it first: cargo build --release -p parley-api)",
                spec.bin.display()
            )
        })?;
        let pid = child.id().context("the server exited at once")?;
        let base = format!("http://{bind}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the server exited ({status}) before it was ready; see {}",
                    spec.log.display()
                );
            }
            let ready = client
                .get(format!("{base}/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the server was not ready within 60 s; see {}",
                    spec.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Server {
            child,
            pid,
            base,
            log: spec.log,
        })
    }

    /// Starts PostGraphile 4 (the `--peer` run) from `peer_dir` (where `npm ci` installed it)
    /// on `database_url` with a pool of `pool_size` connections, and waits until its
    /// `/graphql` answers `{ __typename }` (at most 120 s: it introspects the database
    /// first). `NODE_ENV=production`, no GraphiQL, no query log.
    pub async fn start_postgraphile(
        node: &Path,
        peer_dir: &Path,
        database_url: &str,
        pool_size: u32,
        log: PathBuf,
        client: &reqwest::Client,
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(node)
            .arg(peer_dir.join("node_modules/postgraphile/cli.js"))
            .args(["--connection", database_url, "--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--max-pool-size", &pool_size.to_string()])
            .args([
                "--disable-graphiql",
                "--disable-query-log",
                "--dynamic-json",
            ])
            .env("NODE_ENV", "production")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", node.display()))?;
        let pid = child.id().context("PostGraphile exited at once")?;
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "PostGraphile exited ({status}) before it was ready; see {}",
                    log.display()
                );
            }
            let ready = client
                .post(format!("{base}/graphql"))
                .header("content-type", "application/json")
                .body(r#"{"query":"{ __typename }"}"#)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "PostGraphile was not ready within 120 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Server {
            child,
            pid,
            base,
            log,
        })
    }

    /// The GraphQL endpoint.
    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.base)
    }

    /// Resets the peak resident set (`VmHWM`) so the next reading covers what follows.
    pub fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5");
    }

    /// The peak resident set in KiB since the last reset (or since start).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The current resident set in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// CPU time the server process has used so far (user + system, all threads), in
    /// seconds, from `/proc/PID/stat` (fields 14 and 15, in clock ticks of 1/100 s: Linux's
    /// `USER_HZ` is 100 on every architecture it reports to user space).
    pub fn cpu_seconds(&self) -> Option<f64> {
        crate::machine::process_seconds(&self.pid.to_string())
    }

    /// The kernel's part of [`Server::cpu_seconds`] (system time: its syscalls, the
    /// network stack's work on its sockets).
    pub fn kernel_cpu_seconds(&self) -> Option<f64> {
        crate::machine::process_times(&self.pid.to_string()).map(|(_, system)| system)
    }

    /// The server's own count and total seconds of GraphQL requests so far, from its
    /// `/metrics` (`parley_graphql_request_duration_seconds`: parse to answer, inside the
    /// handler), to split a run's latency into the server's part and the rest (HTTP, the
    /// network stack, the generator).
    pub async fn handler_seconds(&self, client: &reqwest::Client) -> Option<(f64, f64)> {
        let text = client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        Some((
            value("parley_graphql_request_duration_seconds_count")?,
            value("parley_graphql_request_duration_seconds_sum")?,
        ))
    }

    /// Stops the server: SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                self.child.start_kill()?;
                self.child.wait().await?;
            }
        }
        Ok(())
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
