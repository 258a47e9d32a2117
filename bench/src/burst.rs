//! `--burst N`: N concurrent `recordMessage` calls into one conversation, spread over
//! `--burst-servers` server processes on one fresh database, all sent at once. Counts the
//! answers by outcome (ok, or the error's `extensions.code` / HTTP status), checks that the
//! conversation holds exactly the messages acknowledged, and exits non-zero otherwise
//! (issue 11: 1,000 such writers on PostgreSQL across two processes drained the pool and
//! 26-39% were answered UNAVAILABLE).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::cli::{Args, Engine};
use crate::db::{self, BenchDb};
use crate::server::{Server, ServerSpec};

const RECORD: &str = "mutation($input: RecordMessageInput!) { recordMessage(input: $input) { conversation { id messageCount } } }";

/// Runs the burst on each engine of `args`.
pub async fn run(args: &Args, engines: &[Engine], writers: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(writers)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut failed = false;
    for &engine in engines {
        let db = BenchDb::create(engine, args.database_url.as_deref(), "burst").await?;
        let result = burst(args, &client, &db, writers).await;
        db.drop(args.keep_db).await?;
        failed |= !result?;
    }
    if failed {
        bail!("a burst had errors or a wrong count");
    }
    Ok(())
}

/// One burst on `db`; whether every writer succeeded and the count is exact.
async fn burst(
    args: &Args,
    client: &reqwest::Client,
    db: &BenchDb,
    writers: usize,
) -> anyhow::Result<bool> {
    let bin = args
        .parley_bin
        .as_deref()
        .context("the parley binary is resolved before the burst")?;
    db::migrate(bin, &db.url).await?;
    let logs = tempfile::Builder::new().prefix("parley-burst-").tempdir()?;
    let mut servers = Vec::new();
    for i in 0..args.burst_servers.max(1) {
        let spec = ServerSpec {
            bin,
            database_url: &db.url,
            pool_size: args.pool_size,
            env: &args.server_env,
            log: logs.path().join(format!("server-{i}.log")),
        };
        servers.push(Server::start(spec, client).await?);
    }
    let urls: Vec<String> = servers.iter().map(Server::graphql_url).collect();

    let started = Instant::now();
    let calls = (0..writers).map(|i| {
        let url = urls[i % urls.len()].clone();
        let body = json!({ "query": RECORD, "variables": { "input": {
            "channel": "SMS", "direction": "INBOUND", "from": "+12015550100",
            "to": ["+18045550199"], "body": format!("burst {i}"),
            "providerMessageId": format!("burst-{i}"),
        }}});
        async move {
            let sent = Instant::now();
            let outcome = match client.post(&url).json(&body).send().await {
                Ok(response) => {
                    let status = response.status();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    match body["errors"][0]["extensions"]["code"].as_str() {
                        Some(code) => code.to_owned(),
                        None if status.is_success() && body["data"].is_object() => "ok".into(),
                        None => format!("HTTP {status}"),
                    }
                }
                Err(e) => format!("transport: {e}"),
            };
            (outcome, sent.elapsed())
        }
    });
    let answers = futures::future::join_all(calls).await;
    let wall = started.elapsed();

    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies: Vec<Duration> = Vec::with_capacity(answers.len());
    for (outcome, latency) in answers {
        *outcomes.entry(outcome).or_default() += 1;
        latencies.push(latency);
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let ok = outcomes.get("ok").copied().unwrap_or(0);
    let (conversations, messages) = db::counts(&db.url).await?;
    for server in servers {
        server.stop().await?;
    }

    println!(
        "burst on {}: {writers} concurrent recordMessage into one conversation over {} server processes (pool {}): \
         {ok} ok, {} errors {:?}; wall {:.2} s, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; stored: {conversations} conversation(s), {messages} messages",
        db.engine.name(),
        args.burst_servers.max(1),
        args.pool_size
            .map_or("default".to_owned(), |n| n.to_string()),
        writers - ok,
        outcomes,
        wall.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    // Every acknowledged message is stored, and nothing else: a failed writer stored nothing.
    let exact = conversations == 1 && messages == ok as i64;
    if !exact {
        eprintln!("count mismatch: {ok} acknowledged, {messages} stored");
    }
    Ok(exact && ok == writers)
}
