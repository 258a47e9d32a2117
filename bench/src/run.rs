//! The story of one invocation: per engine, a fresh database, seeded; the server started;
//! each scenario warmed up and measured (fixed rate, then saturation) and, on PostgreSQL,
//! its pgbench ceiling; the server stopped and the database dropped. Then the report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::cli::{Args, Engine, Scenario};
use crate::db::{self, BenchDb, SeedSpec};
use crate::load::{self, Mode};
use crate::pgbench::{self, Job, Script};
use crate::report::{self, Report, Row, ScalingRow, SeedRow};
use crate::server::{Server, ServerSpec};
use crate::workload::{Mix, Workload};

/// One measured case: a scenario's mix, how it is driven, and its pgbench ceiling.
struct Case {
    label: String,
    mix: Mix,
    modes: Vec<Mode>,
    job: Job,
}

/// Runs everything `args` asks for.
pub async fn main(mut args: Args) -> anyhow::Result<()> {
    if let Some(json) = &args.render {
        let report = Report::read_json(json)?;
        print!("{}", report.markdown());
        if let Some(path) = &args.write_markdown {
            report.write_markdown(path)?;
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    if args.smoke {
        args.smoke_settings();
    }
    let json_out = args.json_out.clone().unwrap_or_else(|| {
        if args.smoke {
            std::env::temp_dir().join("parley-bench-smoke.json")
        } else {
            PathBuf::from("bench/results/latest.json")
        }
    });
    let parley_bin = args.parley_bin.clone().unwrap_or_else(|| {
        PathBuf::from(if args.smoke {
            "target/debug/parley"
        } else {
            "target/release/parley"
        })
    });
    args.parley_bin = Some(parley_bin);
    let engines = args.engine_list()?;
    if let Some(writers) = args.burst {
        return crate::burst::run(&args, &engines, writers).await;
    }
    if args.search {
        return crate::search::run(&args, &engines).await;
    }
    if let Some(subscribers) = args.subscribe {
        return crate::subscribe::run(&args, &engines, subscribers).await;
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &args.bearer_token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut report = Report {
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: report::machine(),
        load_average: vec![report::load_average()],
        command: command_line(),
        settings: serde_json::json!({
            "scale": args.scale,
            "messages_per_conversation": args.messages,
            "rate": args.rate,
            "concurrency": args.concurrency,
            "hot_concurrency": args.hot_concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "pool_size": args.pool_size,
            "server_env": args.server_env,
            "smoke": args.smoke,
        }),
        ..Report::default()
    };

    if args.peer {
        crate::peer::run(&args, &client, &mut report).await?;
        report.load_average.push(report::load_average());
        print!("{}", report.markdown());
        report.write_json(&json_out)?;
        eprintln!("wrote {}", json_out.display());
        if let Some(path) = &args.write_markdown {
            report.write_markdown(path)?;
            eprintln!("wrote {}", path.display());
        }
        let errors = report.errors();
        if errors > 0 {
            bail!("{errors} request(s) failed");
        }
        return Ok(());
    }

    for engine in engines {
        let outcome = if args.scaling {
            scaling(&args, &client, engine, &mut report).await
        } else {
            scenarios(&args, &client, engine, &mut report).await
        };
        if let Err(e) = outcome {
            // Keep what was measured so far.
            print!("{}", report.markdown());
            return Err(e.context(format!("{} run", engine.name())));
        }
    }

    report.load_average.push(report::load_average());
    let markdown = report.markdown();
    print!("{markdown}");
    report.write_json(&json_out)?;
    eprintln!("wrote {}", json_out.display());
    if let Some(path) = &args.write_markdown {
        report.write_markdown(path)?;
        eprintln!("wrote {}", path.display());
    }
    let errors = report.errors();
    if errors > 0 {
        let first = report
            .rows
            .iter()
            .find_map(|r| r.stats.first_error.clone())
            .or_else(|| {
                report
                    .scaling
                    .iter()
                    .find_map(|s| s.list.first_error.clone().or(s.thread.first_error.clone()))
            })
            .unwrap_or_default();
        eprintln!("{errors} request(s) failed; first: {first}");
        if args.smoke {
            bail!("smoke run: {errors} request(s) failed");
        }
    }
    Ok(())
}

impl Args {
    /// Tiny scale and short runs: every scenario in a few seconds per engine.
    fn smoke_settings(&mut self) {
        self.scale = 200;
        self.messages = 3;
        self.duration = 1.0;
        self.warmup = 0.3;
        self.rate = 50.0;
        self.concurrency = 4;
        self.hot_concurrency = 8;
        self.scales = vec![200, 400];
        self.scaling_messages = 2;
    }

    pub(crate) fn parley_bin(&self) -> &std::path::Path {
        self.parley_bin
            .as_deref()
            .unwrap_or(std::path::Path::new("target/release/parley"))
    }

    fn engine_list(&self) -> anyhow::Result<Vec<Engine>> {
        if self.engines.is_empty() {
            let mut e = vec![Engine::Sqlite];
            if self.database_url.is_some() {
                e.push(Engine::Postgres);
            }
            return Ok(e);
        }
        if self.engines.contains(&Engine::Postgres) && self.database_url.is_none() {
            bail!("--engines postgres needs --database-url");
        }
        Ok(self.engines.clone())
    }

    fn scenario_list(&self) -> Vec<Scenario> {
        if self.scenario.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenario.clone()
        }
    }
}

/// The command line, with a bearer token given on it redacted.
fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    for i in 0..args.len() {
        if args[i].starts_with("--bearer-token=") {
            args[i] = "--bearer-token=***".into();
        } else if i > 0 && args[i - 1] == "--bearer-token" {
            args[i] = "***".into();
        }
    }
    format!("parley-bench {}", args.join(" "))
}

fn cases(args: &Args, scenario: Scenario) -> Vec<Case> {
    let rate = Mode::Rate(args.rate);
    let sat = Mode::Saturate(args.concurrency);
    let record_vars =
        |hot: u64, new_pct: u64| vec![("nconv", args.scale), ("new_pct", new_pct), ("hot", hot)];
    match scenario {
        Scenario::Record => vec![Case {
            label: "record".into(),
            mix: Mix::Record {
                new_percent: 20,
                hot: None,
            },
            modes: vec![rate, sat],
            job: Job {
                scripts: vec![(Script::Record, 1)],
                vars: record_vars(0, 20),
            },
        }],
        Scenario::Hot => [1, 10]
            .into_iter()
            .map(|k| Case {
                label: format!("hot-{k}"),
                mix: Mix::Record {
                    new_percent: 0,
                    hot: Some(k),
                },
                modes: vec![Mode::Saturate(args.hot_concurrency)],
                job: Job {
                    scripts: vec![(Script::Record, 1)],
                    vars: record_vars(k, 0),
                },
            })
            .collect(),
        Scenario::List => vec![Case {
            label: "list".into(),
            mix: Mix::List,
            modes: vec![rate, sat],
            job: Job {
                scripts: vec![(Script::List, 1)],
                vars: vec![],
            },
        }],
        Scenario::Thread => vec![Case {
            label: "thread".into(),
            mix: Mix::Thread,
            modes: vec![rate, sat],
            job: Job {
                scripts: vec![(Script::Thread, 1)],
                vars: vec![("nconv", args.scale)],
            },
        }],
        Scenario::Mixed => vec![Case {
            label: "mixed".into(),
            mix: Mix::Mixed { write_percent: 10 },
            modes: vec![rate, sat],
            job: Job {
                scripts: vec![
                    (Script::Record, 10),
                    (Script::List, 45),
                    (Script::Thread, 45),
                ],
                vars: record_vars(0, 20),
            },
        }],
    }
}

/// A fresh, migrated, seeded database; the caller drops it.
pub(crate) async fn prepare(
    args: &Args,
    engine: Engine,
    spec: SeedSpec,
    tag: &str,
    report: &mut Report,
) -> anyhow::Result<BenchDb> {
    let db = BenchDb::create(engine, args.database_url.as_deref(), tag).await?;
    let seeded = async {
        db::migrate(args.parley_bin(), &db.url).await?;
        eprintln!(
            "{}: seeding {} conversations x {} messages...",
            engine.name(),
            spec.conversations,
            spec.messages
        );
        let took = db::seed(&db, spec).await?;
        let (c, m) = db::counts(&db.url).await?;
        anyhow::ensure!(
            c as u64 == spec.conversations && m as u64 == spec.conversations * spec.messages,
            "seeded {c} conversations and {m} messages, expected {} and {}",
            spec.conversations,
            spec.conversations * spec.messages
        );
        eprintln!("{}: seeded in {:.1} s", engine.name(), took.as_secs_f64());
        report.seeds.push(SeedRow {
            engine,
            conversations: spec.conversations,
            messages: spec.conversations * spec.messages,
            seconds: took.as_secs_f64(),
        });
        anyhow::Ok(())
    }
    .await;
    match seeded {
        Ok(()) => Ok(db),
        Err(e) => {
            let _ = db.drop(args.keep_db).await;
            Err(e)
        }
    }
}

pub(crate) async fn start_server(
    args: &Args,
    client: &reqwest::Client,
    db: &BenchDb,
    logs: &tempfile::TempDir,
    name: &str,
) -> anyhow::Result<Server> {
    let log: PathBuf = db
        .scratch_dir()
        .unwrap_or(logs.path())
        .join(format!("{name}.log"));
    Server::start(
        ServerSpec {
            bin: args.parley_bin(),
            database_url: &db.url,
            pool_size: args.pool_size,
            env: &args.server_env,
            log,
        },
        client,
    )
    .await
}

async fn scenarios(
    args: &Args,
    client: &reqwest::Client,
    engine: Engine,
    report: &mut Report,
) -> anyhow::Result<()> {
    let spec = SeedSpec {
        conversations: args.scale,
        messages: args.messages,
    };
    let db = prepare(args, engine, spec, "s", report).await?;
    let outcome = async {
        let logs = tempfile::Builder::new()
            .prefix("parley-bench-logs-")
            .tempdir()?;
        let server = start_server(args, client, &db, &logs, "server").await?;
        let before = report.errors();
        let measured = measure_all(args, client, engine, &db, &server, report).await;
        if measured.is_err() || report.errors() > before {
            eprintln!(
                "last lines of the server log:\n{}",
                log_tail(&server.log, 30)
            );
        }
        server.stop().await?;
        measured
    }
    .await;
    db.drop(args.keep_db).await?;
    outcome
}

async fn measure_all(
    args: &Args,
    client: &reqwest::Client,
    engine: Engine,
    db: &BenchDb,
    server: &Server,
    report: &mut Report,
) -> anyhow::Result<()> {
    let url = server.graphql_url();
    let duration = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64(args.warmup);
    for scenario in args.scenario_list() {
        for case in cases(args, scenario) {
            for (i, mode) in case.modes.iter().enumerate() {
                let tag = format!("{}{i}", case.label);
                if !warmup.is_zero() {
                    let mut w = Workload::new(case.mix, args.scale, &format!("{tag}w"), 7);
                    load::run(client, &url, &mut w, *mode, warmup).await;
                }
                server.reset_peak_rss();
                let cpu_before = server.cpu_seconds();
                let handler_before = server.handler_seconds(client).await;
                let mut w = Workload::new(case.mix, args.scale, &tag, 11);
                let stats = load::run(client, &url, &mut w, *mode, duration).await;
                let peak_rss_mib = server.peak_rss_kib().map(|k| k as f64 / 1024.0);
                let server_cpu_us = cpu_before
                    .zip(server.cpu_seconds())
                    .filter(|_| stats.requests > 0)
                    .map(|(a, b)| (b - a) * 1e6 / stats.requests as f64);
                let server_mean_ms = handler_before
                    .zip(server.handler_seconds(client).await)
                    .filter(|((n0, _), (n1, _))| n1 > n0)
                    .map(|((n0, s0), (n1, s1))| (s1 - s0) * 1e3 / (n1 - n0));
                eprintln!(
                    "{} {} {}: {:.0} req/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, {} errors, server CPU {} µs/request, mean {:.2} ms of which {} ms in the handler",
                    engine.name(),
                    case.label,
                    mode.label(),
                    stats.throughput,
                    stats.p50_ms,
                    stats.p95_ms,
                    stats.p99_ms,
                    stats.errors,
                    server_cpu_us.map_or("?".into(), |c| format!("{c:.0}")),
                    stats.mean_ms,
                    server_mean_ms.map_or("?".into(), |c| format!("{c:.2}"))
                );
                if let Some(e) = &stats.first_error {
                    eprintln!("  first error: {e}");
                }
                let ceiling = if engine == Engine::Postgres && !args.no_pgbench {
                    let (clients, rate) = match *mode {
                        Mode::Saturate(c) => (c, None),
                        Mode::Rate(r) => (args.concurrency, Some(r)),
                    };
                    let ceiling = pgbench::run(
                        &args.pgbench_bin,
                        &db.url,
                        &case.job,
                        clients,
                        rate,
                        duration,
                    )
                    .await
                    .with_context(|| format!("pgbench for {}", case.label))?;
                    match ceiling.latency {
                        Some(l) => eprintln!(
                            "  pgbench at {}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
                            mode.label(),
                            l.p50_ms,
                            l.p95_ms,
                            l.p99_ms
                        ),
                        None => eprintln!("  pgbench: {:.0} tps", ceiling.tps),
                    }
                    Some(ceiling)
                } else {
                    None
                };
                let ratio = ceiling
                    .as_ref()
                    .filter(|c| c.tps > 0.0 && c.latency.is_none())
                    .map(|c| stats.throughput / c.tps);
                report.rows.push(Row {
                    engine,
                    scenario: case.label.clone(),
                    mode: mode.label(),
                    stats,
                    peak_rss_mib,
                    server_cpu_us,
                    server_mean_ms,
                    ceiling,
                    ratio,
                });
            }
        }
    }
    Ok(())
}

async fn scaling(
    args: &Args,
    client: &reqwest::Client,
    engine: Engine,
    report: &mut Report,
) -> anyhow::Result<()> {
    for &n in &args.scales {
        let spec = SeedSpec {
            conversations: n,
            messages: args.scaling_messages,
        };
        let db = prepare(args, engine, spec, &format!("x{n}"), report).await?;
        let seed_s = report.seeds.last().map_or(0.0, |s| s.seconds);
        let outcome = async {
            let logs = tempfile::Builder::new()
                .prefix("parley-bench-logs-")
                .tempdir()?;
            let server = start_server(args, client, &db, &logs, &format!("scaling-{n}")).await?;
            let url = server.graphql_url();
            let duration = Duration::from_secs_f64(args.duration);
            let warmup = Duration::from_secs_f64(args.warmup);
            let mode = Mode::Rate(args.rate);
            let measure = async |mix: Mix, tag: &str| {
                if !warmup.is_zero() {
                    let mut w = Workload::new(mix, n, &format!("{tag}w"), 7);
                    load::run(client, &url, &mut w, mode, warmup).await;
                }
                let mut w = Workload::new(mix, n, tag, 11);
                load::run(client, &url, &mut w, mode, duration).await
            };
            server.reset_peak_rss();
            let list = measure(Mix::List, "list").await;
            let thread = measure(Mix::Thread, "thread").await;
            eprintln!(
                "{} scaling {n}: list p95 {:.2} ms, thread p95 {:.2} ms",
                engine.name(),
                list.p95_ms,
                thread.p95_ms
            );
            report.scaling.push(ScalingRow {
                engine,
                conversations: n,
                messages: n * args.scaling_messages,
                seed_s,
                list,
                thread,
                peak_rss_mib: server.peak_rss_kib().map(|k| k as f64 / 1024.0),
            });
            server.stop().await
        }
        .await;
        db.drop(args.keep_db).await?;
        outcome?;
    }
    Ok(())
}

/// The last `n` lines of a log file.
pub(crate) fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
