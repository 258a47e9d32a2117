//! `--subscribe N`: live-update delivery (issue 14). Two server processes on one fresh
//! PostgreSQL database: N subscribers on process A, each following one of
//! `--subscribe-conversations` conversations (`messageRecorded(filter: {conversationId})`,
//! over graphql-transport-ws), and a writer recording into those conversations through
//! process B at `--rate` messages per second. Reports:
//!
//! - delivery latency, from the writer's acknowledgement (the recordMessage answer) to each
//!   subscriber's receipt, p50/p99/max (a receipt before the acknowledgement counts 0);
//! - memory per idle subscription: process A's resident set with N idle subscriptions
//!   minus without, divided by N;
//! - record latency p95 through B with the N subscribers on A, and with none, alternated
//!   over `--subscribe-rounds` rounds in one session; with each run the CPU time of B and
//!   of A per record.
//!
//! Every delivery is checked: each subscriber receives its conversation's messages in
//! sequence order, each once; any miss, duplicate or error fails the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::cli::{Args, Engine};
use crate::db::{self, BenchDb};
use crate::server::{Server, ServerSpec};

const RECORD: &str = "mutation($i: RecordMessageInput!) { recordMessage(input: $i) { message { sequence } conversation { id } } }";
const SUBSCRIBE: &str =
    "subscription($c: ID!) { messageRecorded(filter: {conversationId: $c}) { sequence } }";

/// When each (conversation, sequence) was acknowledged to the writer, and each receipt.
#[derive(Default)]
struct Log {
    acked: HashMap<(usize, i64), Instant>,
    received: Vec<(usize, i64, Instant)>,
    errors: Vec<String>,
}

/// Runs the subscribe measurement with `subscribers` subscribers.
pub async fn run(args: &Args, engines: &[Engine], subscribers: usize) -> anyhow::Result<()> {
    if !engines.contains(&Engine::Postgres) {
        bail!("--subscribe runs two server processes on PostgreSQL: give --database-url");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let db = BenchDb::create(Engine::Postgres, args.database_url.as_deref(), "subscribe").await?;
    let result = measure(args, &client, &db, subscribers).await;
    db.drop(args.keep_db).await?;
    result
}

async fn measure(
    args: &Args,
    client: &reqwest::Client,
    db: &BenchDb,
    subscribers: usize,
) -> anyhow::Result<()> {
    let bin = args
        .parley_bin
        .as_deref()
        .context("the parley binary is resolved before the run")?;
    db::migrate(bin, &db.url).await?;
    let logs = tempfile::Builder::new()
        .prefix("parley-subscribe-")
        .tempdir()?;
    let mut env = args.server_env.clone();
    // Room for the subscribers' connections on A.
    env.push(format!("PARLEY_MAX_CONNECTIONS={}", subscribers + 256));
    env.push(format!(
        "PARLEY_MAX_CONNECTIONS_PER_IP={}",
        subscribers + 256
    ));
    let start = |name: &str| ServerSpec {
        bin,
        database_url: &db.url,
        pool_size: args.pool_size,
        env: &env,
        log: logs.path().join(format!("{name}.log")),
    };
    let a = Server::start(start("a"), client).await?;
    let b = Server::start(start("b"), client).await?;
    let conversations = args.subscribe_conversations.max(1);

    // One conversation per contact, created through B.
    let mut ids = Vec::with_capacity(conversations);
    for k in 0..conversations {
        let (id, _) = record(client, &b, k, "first").await?;
        ids.push(id);
    }
    let rate = args.rate.max(1.0);
    let duration = Duration::from_secs_f64(args.duration.max(1.0));

    // Rounds of: record latency with no subscriber (A), then with the subscribers (B):
    // alternated in one session so that the machine's drift falls on both sides.
    let rounds = args.subscribe_rounds.max(1);
    let log = Arc::new(Mutex::new(Log::default()));
    let addr = a.base.trim_start_matches("http://").to_owned();
    let mut per_subscription = 0.0;
    let (mut before, mut after) = (0, 0);
    let mut runs: Vec<Run> = Vec::new();
    let mut pooled = [
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?,
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?,
    ];
    let mut acked = 0;
    let followers = |k: usize| (0..subscribers).filter(|s| s % conversations == k).count();
    for round in 0..rounds {
        // Let the previous round's subscriptions end on A.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu = (b.cpu_seconds(), a.cpu_seconds());
        let load = load_average();
        let (alone, n) = write(client, &b, conversations, rate, duration, None).await?;
        runs.push(Run::new(
            round,
            0,
            &alone,
            n,
            cpu,
            (b.cpu_seconds(), a.cpu_seconds()),
            load,
        ));
        pooled[0].add(&alone)?;

        // Memory: A's resident set before and after the idle subscriptions.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = a.rss_kib().context("reading A's resident set")?;
        let mut readers = Vec::with_capacity(subscribers);
        for s in 0..subscribers {
            let k = s % conversations;
            let mut ws = connect(&addr).await?;
            let subscribe = json!({ "id": "1", "type": "subscribe",
                "payload": { "query": SUBSCRIBE, "variables": { "c": ids[k] } } });
            ws.send(Message::Text(subscribe.to_string().into())).await?;
            readers.push((k, ws));
        }
        // Let every subscription reach the hub before measuring memory and writing.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if round == 0 {
            before = rss;
            after = a.rss_kib().context("reading A's resident set")?;
            per_subscription = (after.saturating_sub(before)) as f64 / subscribers as f64;
        }
        let tasks: Vec<_> = readers
            .into_iter()
            .map(|(k, ws)| tokio::spawn(read(k, ws, log.clone())))
            .collect();

        // Record latency and delivery with the subscribers.
        let cpu = (b.cpu_seconds(), a.cpu_seconds());
        let load = load_average();
        hook(args, "start")?;
        let (loaded, n) = write(client, &b, conversations, rate, duration, Some(&log)).await?;
        hook(args, "stop")?;
        runs.push(Run::new(
            round,
            subscribers,
            &loaded,
            n,
            cpu,
            (b.cpu_seconds(), a.cpu_seconds()),
            load,
        ));
        pooled[1].add(&loaded)?;
        acked += n;
        // Wait for the last deliveries: each acknowledged message once per subscriber of
        // its conversation.
        let expected: usize = log
            .lock()
            .map(|l| l.acked.keys().map(|(k, _)| followers(*k)).sum())
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while log.lock().map(|l| l.received.len()).unwrap_or(0) < expected
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for t in &tasks {
            t.abort();
        }
    }
    a.stop().await?;
    b.stop().await?;
    let expected: usize = log
        .lock()
        .map(|l| l.acked.keys().map(|(k, _)| followers(*k)).sum())
        .unwrap_or(0);

    let log = log.lock().map_err(|_| anyhow::anyhow!("log poisoned"))?;
    let mut delivery = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut missing = 0usize;
    for (k, seq, at) in &log.received {
        match log.acked.get(&(*k, *seq)) {
            Some(acked) => {
                let us = at.saturating_duration_since(*acked).as_micros() as u64;
                delivery.record(us.max(1))?;
            }
            None => missing += 1,
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "subscribe on PostgreSQL: {subscribers} subscribers on process A over {conversations} conversations, \
         writer on process B at {rate} msg/s for {:.0} s per run, {rounds} round(s) of none then {subscribers}: \
         {acked} messages acknowledged with subscribers, {} deliveries (expected {expected}), \
         {} errors, {missing} receipts of unacknowledged messages",
        duration.as_secs_f64(),
        log.received.len(),
        log.errors.len(),
    );
    println!(
        "delivery (writer's ack -> subscriber's receipt): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(&delivery, 0.5),
        ms(&delivery, 0.99),
        delivery.max() as f64 / 1000.0
    );
    println!(
        "memory per idle subscription: {per_subscription:.1} KiB (A's resident set {before} KiB -> {after} KiB)"
    );
    println!(
        "| round | subscribers | records | record p50 ms | p95 ms | p99 ms | B CPU µs/record | A CPU µs/record | load avg |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {:.2} |",
            r.round + 1,
            r.subscribers,
            r.records,
            r.p50,
            r.p95,
            r.p99,
            r.b_cpu_us.map_or("-".into(), |c| format!("{c:.0}")),
            r.a_cpu_us.map_or("-".into(), |c| format!("{c:.0}")),
            r.load
        );
    }
    println!(
        "record p95 through B, all rounds pooled: {:.2} ms with {subscribers} subscribers, {:.2} ms with none (p50 {:.2} / {:.2} ms)",
        ms(&pooled[1], 0.95),
        ms(&pooled[0], 0.95),
        ms(&pooled[1], 0.5),
        ms(&pooled[0], 0.5),
    );
    for e in log.errors.iter().take(5) {
        eprintln!("error: {e}");
    }
    if !log.errors.is_empty() || log.received.len() != expected || missing > 0 {
        bail!("deliveries were missing, duplicated or out of order");
    }
    Ok(())
}

/// One measured write run of the subscribe scenario.
struct Run {
    round: usize,
    subscribers: usize,
    records: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    /// Process B's (the writer's server) CPU time per record.
    b_cpu_us: Option<f64>,
    /// Process A's (the subscribers' server) CPU time per record.
    a_cpu_us: Option<f64>,
    /// The 1-minute load average at the start.
    load: f64,
}

impl Run {
    fn new(
        round: usize,
        subscribers: usize,
        h: &Histogram<u64>,
        records: usize,
        cpu_before: (Option<f64>, Option<f64>),
        cpu_after: (Option<f64>, Option<f64>),
        load: f64,
    ) -> Run {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let per = |a: Option<f64>, b: Option<f64>| Some((b? - a?) * 1e6 / records.max(1) as f64);
        Run {
            round,
            subscribers,
            records,
            p50: ms(0.5),
            p95: ms(0.95),
            p99: ms(0.99),
            b_cpu_us: per(cpu_before.0, cpu_after.0),
            a_cpu_us: per(cpu_before.1, cpu_after.1),
            load,
        }
    }
}

/// Runs `--subscribe-hook CMD` with `what` as its argument, if given.
fn hook(args: &Args, what: &str) -> anyhow::Result<()> {
    if let Some(cmd) = &args.subscribe_hook {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} {what}"))
            .status()?;
        if !status.success() {
            bail!("--subscribe-hook {what} failed: {status}");
        }
    }
    Ok(())
}

/// The 1-minute load average (0 when unreadable).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A graphql-transport-ws connection to `addr`, initialized.
async fn connect(addr: &str) -> anyhow::Result<Socket> {
    let mut request = format!("ws://{addr}/graphql/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    ws.send(Message::Text(
        json!({ "type": "connection_init" }).to_string().into(),
    ))
    .await?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("connection_ack") => Ok(ws),
        other => bail!("no connection_ack: {other:?}"),
    }
}

/// Reads one subscriber's deliveries into `log`, checking that its sequences follow each
/// other.
async fn read(k: usize, mut ws: Socket, log: Arc<Mutex<Log>>) {
    let mut last: Option<i64> = None;
    while let Some(message) = ws.next().await {
        let at = Instant::now();
        let Ok(Message::Text(text)) = message else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let seq = v["payload"]["data"]["messageRecorded"]["sequence"].as_i64();
        let Ok(mut log) = log.lock() else { return };
        match seq {
            Some(seq) if last.is_none_or(|l| seq == l + 1) => {
                last = Some(seq);
                log.received.push((k, seq, at));
            }
            _ => log
                .errors
                .push(format!("conversation {k} after {last:?}: {text}")),
        }
    }
}

/// Records one message to contact `k` through `server`: (conversation id, sequence).
async fn record(
    client: &reqwest::Client,
    server: &Server,
    k: usize,
    body: &str,
) -> anyhow::Result<(String, i64)> {
    let answer: Value = client
        .post(server.graphql_url())
        .json(&json!({ "query": RECORD, "variables": { "i": {
            "channel": "SMS", "direction": "OUTBOUND", "from": "+12016661234",
            "to": [format!("+1804555{:04}", k % 10_000)], "body": body } } }))
        .send()
        .await?
        .json()
        .await?;
    let r = &answer["data"]["recordMessage"];
    match (
        r["conversation"]["id"].as_str(),
        r["message"]["sequence"].as_i64(),
    ) {
        (Some(id), Some(seq)) => Ok((id.to_owned(), seq)),
        _ => bail!("recordMessage failed: {answer}"),
    }
}

/// Records at `rate` per second for `duration`, round-robin over the conversations (open
/// loop: each call starts on its tick); returns the latency histogram (µs) and how many
/// were acknowledged, logging each acknowledgement when `log` is given.
async fn write(
    client: &reqwest::Client,
    server: &Server,
    conversations: usize,
    rate: f64,
    duration: Duration,
    log: Option<&Arc<Mutex<Log>>>,
) -> anyhow::Result<(Histogram<u64>, usize)> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut calls = futures::stream::FuturesUnordered::new();
    let mut n = 0usize;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut acked = 0usize;
    let mut note = |r: anyhow::Result<(usize, i64, Duration, Instant)>| -> anyhow::Result<()> {
        let (k, seq, latency, at) = r?;
        histogram.record((latency.as_micros() as u64).max(1))?;
        acked += 1;
        if let Some(log) = log
            && let Ok(mut log) = log.lock()
        {
            log.acked.insert((k, seq), at);
        }
        Ok(())
    };
    while started.elapsed() < duration {
        tokio::select! {
            _ = tick.tick() => {
                let k = n % conversations;
                n += 1;
                calls.push(async move {
                    let sent = Instant::now();
                    let (_, seq) = record(client, server, k, "live").await?;
                    let at = Instant::now();
                    Ok::<_, anyhow::Error>((k, seq, at - sent, at))
                });
            }
            Some(r) = calls.next(), if !calls.is_empty() => note(r)?,
        }
    }
    while let Some(r) = calls.next().await {
        note(r)?;
    }
    Ok((histogram, acked))
}
