//! The `--peer` run: parley against PostGraphile 4 (a Node.js GraphQL server over the same
//! PostgreSQL tables), both started by the runner on one seeded database, the three read
//! shapes of the performance issue saturated with the same clients, one server at a time.
//! Reported side by side: throughput and each server process's CPU time per request, and
//! the whole machine's CPU per request by part (PostgreSQL, the generator), with the bound
//! that puts on any server's throughput here ([`crate::machine`]).
//!
//! PostGraphile is pinned in `bench/peer/package.json` and `package-lock.json`; without
//! Node.js the run is skipped with a note (not an error), and when PostGraphile is not
//! installed yet the runner installs it with `npm ci` (from the lock file).
//!
//! With `--peer-bin`, the peer is another binary that serves parley's schema (started as
//! parley is and sent parley's documents) instead: `parley-floor`, the stack's floor.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::cli::{Args, Engine};
use crate::db::SeedSpec;
use crate::load::{self, Mode};
use crate::machine;
use crate::report::{PeerRow, PeerSide, Report};
use crate::run::{log_tail, prepare, start_server};
use crate::server::{Server, ServerSpec};
use crate::workload::{Mix, ReadShape, Workload};

/// Runs the comparison (or records why it was skipped).
pub async fn run(args: &Args, client: &reqwest::Client, report: &mut Report) -> anyhow::Result<()> {
    if args.database_url.is_none() {
        bail!("--peer needs --database-url (PostGraphile serves PostgreSQL only)");
    }
    if let Some(bin) = &args.peer_bin {
        return run_bin(args, bin, client, report).await;
    }
    let node_version = Command::new(&args.node_bin)
        .arg("--version")
        .output()
        .await
        .ok()
        .filter(|o| o.status.success());
    let Some(node_version) = node_version else {
        let note = format!(
            "the PostGraphile comparison was skipped: Node.js (`{}`) was not found",
            args.node_bin.display()
        );
        eprintln!("{note}");
        report.notes.push(note);
        return Ok(());
    };
    let node_version = String::from_utf8_lossy(&node_version.stdout)
        .trim()
        .to_owned();
    if let Err(e) = install(&args.peer_dir).await {
        let note = format!("the PostGraphile comparison was skipped: {e:#}");
        eprintln!("{note}");
        report.notes.push(note);
        return Ok(());
    }
    report.notes.push(format!(
        "PostGraphile {} on Node.js {node_version} (`NODE_ENV=production`, one process, pool of {} connections, `--dynamic-json`); parley {} with its default settings{}.",
        postgraphile_version(&args.peer_dir).unwrap_or_else(|| "?".into()),
        pool_size(args),
        args.parley_bin().display(),
        args.pool_size
            .map_or(String::new(), |n| format!(" and a pool of {n}")),
    ));

    let sides = Sides {
        peer_name: "PostGraphile",
        peer_mix: Mix::Peer,
    };
    against(
        args,
        client,
        report,
        sides,
        async |url: &str, logs: &Path| {
            Server::start_postgraphile(
                &args.node_bin,
                &args.peer_dir,
                url,
                pool_size(args),
                logs.join("postgraphile.log"),
                client,
            )
            .await
        },
    )
    .await
}

/// The `--peer-bin` run: parley against another binary started as parley is, both sent
/// parley's documents.
async fn run_bin(
    args: &Args,
    bin: &Path,
    client: &reqwest::Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let name = args.peer_name.clone().unwrap_or_else(|| {
        bin.file_name()
            .map_or_else(|| bin.display().to_string(), |n| n.to_string_lossy().into())
    });
    report.notes.push(format!(
        "{name} is {} started as parley is{}, sent parley's documents; parley {} with its default settings{}.",
        bin.display(),
        if args.peer_env.is_empty() {
            String::new()
        } else {
            format!(" with {}", args.peer_env.join(" "))
        },
        args.parley_bin().display(),
        args.pool_size
            .map_or(String::new(), |n| format!(" and a pool of {n}")),
    ));
    report.peer_name = Some(name.clone());
    let env: Vec<String> = args
        .server_env
        .iter()
        .chain(&args.peer_env)
        .cloned()
        .collect();
    let sides = Sides {
        peer_name: &name,
        peer_mix: ReadShape::parley_mix,
    };
    against(
        args,
        client,
        report,
        sides,
        async |url: &str, logs: &Path| {
            Server::start(
                ServerSpec {
                    bin,
                    database_url: url,
                    pool_size: args.pool_size,
                    env: &env,
                    log: logs.join("peer.log"),
                },
                client,
            )
            .await
        },
    )
    .await
}

/// Seeds a PostgreSQL database, starts parley and the peer (`start_peer`, given the
/// database's URL and the directory for logs), measures both, stops both (printing the
/// tails of their logs after a failure or errors) and drops the database.
async fn against(
    args: &Args,
    client: &reqwest::Client,
    report: &mut Report,
    sides: Sides<'_>,
    start_peer: impl AsyncFnOnce(&str, &Path) -> anyhow::Result<Server>,
) -> anyhow::Result<()> {
    let spec = SeedSpec {
        conversations: args.scale,
        messages: args.messages,
    };
    let db = prepare(args, Engine::Postgres, spec, "p", report).await?;
    let outcome = async {
        let logs = tempfile::Builder::new()
            .prefix("parley-bench-logs-")
            .tempdir()?;
        let parley = start_server(args, client, &db, &logs, "server").await?;
        let peer = match start_peer(&db.url, logs.path()).await {
            Ok(peer) => peer,
            Err(e) => {
                parley.stop().await?;
                return Err(e);
            }
        };
        let measured = measure(args, client, &parley, &peer, sides, report).await;
        if measured.is_err() || report.errors() > 0 {
            eprintln!("last lines of parley's log:\n{}", log_tail(&parley.log, 20));
            eprintln!(
                "last lines of {}'s log:\n{}",
                sides.peer_name,
                log_tail(&peer.log, 20)
            );
        }
        parley.stop().await?;
        peer.stop().await?;
        measured
    }
    .await;
    db.drop(args.keep_db).await?;
    outcome
}

/// Who the peer is: its name, and the mix it is sent for each shape.
#[derive(Clone, Copy)]
struct Sides<'a> {
    peer_name: &'a str,
    peer_mix: fn(ReadShape) -> Mix,
}

/// The pool each server gets: `--pool-size`, or parley's default (16).
fn pool_size(args: &Args) -> u32 {
    args.pool_size.unwrap_or(16)
}

/// Installs the pinned PostGraphile into `dir` with `npm ci` unless it is there.
async fn install(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node_modules/postgraphile/cli.js").exists() {
        return Ok(());
    }
    eprintln!("installing PostGraphile into {} (npm ci)...", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .status()
        .await
        .context("running npm (Node.js's package manager) to install PostGraphile")?;
    if !status.success() {
        bail!("`npm ci --prefix {}` failed ({status})", dir.display());
    }
    Ok(())
}

fn postgraphile_version(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("node_modules/postgraphile/package.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["version"].as_str().map(str::to_owned)
}

/// Checks that both servers answer each shape with the same number of rows, then measures
/// each shape on each server, `--peer-rounds` times.
async fn measure(
    args: &Args,
    client: &reqwest::Client,
    parley: &Server,
    peer: &Server,
    sides: Sides<'_>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Sides {
        peer_name,
        peer_mix,
    } = sides;
    for shape in ReadShape::ALL {
        let want = match shape {
            ReadShape::Thread => args.messages.min(50),
            _ => args.scale.min(50),
        } as usize;
        for (name, server, mix) in [
            ("parley", parley, shape.parley_mix()),
            (peer_name, peer, peer_mix(shape)),
        ] {
            let rows = rows_in_answer(client, server, mix, args.scale).await?;
            if rows != want {
                bail!(
                    "{name} answered {} with {rows} rows, expected {want}: the two queries do not ask for the same thing",
                    shape.name()
                );
            }
        }
    }
    let duration = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64(args.warmup);
    let mode = Mode::Saturate(args.concurrency);
    for round in 1..=args.peer_rounds.max(1) {
        for shape in ReadShape::ALL {
            let mut sides = Vec::new();
            // Alternate which server goes first, round by round.
            let mut order = [
                ("parley", parley, shape.parley_mix()),
                (peer_name, peer, peer_mix(shape)),
            ];
            if round % 2 == 0 {
                order.reverse();
            }
            for (name, server, mix) in order {
                let url = server.graphql_url();
                if !warmup.is_zero() {
                    let mut w = Workload::new(mix, args.scale, "peerw", 7);
                    load::run(client, &url, &mut w, mode, warmup).await;
                }
                let cpu_before = server.cpu_seconds();
                let kernel_before = server.kernel_cpu_seconds();
                let machine_before = machine::snapshot();
                let mut w = Workload::new(mix, args.scale, "peer", 11);
                let stats = load::run(client, &url, &mut w, mode, duration).await;
                // Seconds before and after, as µs per request answered.
                let per_request = |before: Option<f64>, after: Option<f64>| {
                    before
                        .zip(after)
                        .filter(|_| stats.requests > 0)
                        .map(|(a, b)| (b - a) * 1e6 / stats.requests as f64)
                };
                let server_cpu_us = per_request(cpu_before, server.cpu_seconds());
                let server_kernel_cpu_us = per_request(kernel_before, server.kernel_cpu_seconds());
                let machine = machine_before
                    .zip(machine::snapshot())
                    .and_then(|(a, b)| a.share_until(&b, stats.requests));
                eprintln!(
                    "peer round {round} {} {name}: {:.0} req/s, p50 {:.2} ms, p95 {:.2} ms, {} errors, server CPU {} µs/request",
                    shape.name(),
                    stats.throughput,
                    stats.p50_ms,
                    stats.p95_ms,
                    stats.errors,
                    server_cpu_us.map_or("?".into(), |c| format!("{c:.0}")),
                );
                if let Some(e) = &stats.first_error {
                    eprintln!("  first error: {e}");
                }
                sides.push((
                    name,
                    PeerSide {
                        stats,
                        server_cpu_us,
                        server_kernel_cpu_us,
                        machine,
                    },
                ));
            }
            let take = |who: &str| {
                sides
                    .iter()
                    .find(|(n, _)| *n == who)
                    .map(|(_, s)| s.clone())
                    .expect("both servers were measured")
            };
            report.peer.push(PeerRow {
                shape,
                round,
                parley: take("parley"),
                peer: take(peer_name),
            });
        }
    }
    Ok(())
}

/// How many rows one answer of `mix` holds (sent to conversation 1 for a thread).
async fn rows_in_answer(
    client: &reqwest::Client,
    server: &Server,
    mix: Mix,
    conversations: u64,
) -> anyhow::Result<usize> {
    let request = Workload::new(mix, conversations, "check", 1).next_request();
    let body = client
        .post(server.graphql_url())
        .header("content-type", "application/json")
        .body(request.body)
        .send()
        .await?
        .text()
        .await?;
    let json: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("answer: {body:.300}"))?;
    if json.get("errors").is_some() {
        bail!("{}: {body:.500}", server.graphql_url());
    }
    // Every shape's rows carry exactly one timestamp field each.
    fn count(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Object(m) => {
                usize::from(m.contains_key("lastMessageAt") || m.contains_key("sentAt"))
                    + m.values().map(count).sum::<usize>()
            }
            serde_json::Value::Array(a) => a.iter().map(count).sum(),
            _ => 0,
        }
    }
    Ok(count(&json["data"]))
}
