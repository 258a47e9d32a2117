//! `--search`: full-text search at scale (issue 16). Per engine, a fresh database migrated
//! by the real `parley migrate up` and seeded in bulk with the search corpus:
//! `--search-conversations` email conversations (the agent and one customer each) of
//! `--search-messages` messages, one a second, bodies of lowercase words (so a body is its
//! own search text) with "order" in every fifth message (the common term, 200,000 at 1M)
//! and "zephyr" in one of a thousand (the selective term, 1,000 at 1M). The search text and
//! its index are built after the messages and timed (PostgreSQL: the `message_texts` rows,
//! then `CREATE INDEX .. USING GIN` once; SQLite: the rows through the FTS5 triggers), and
//! the index's size is read. The counts of both terms are checked against the corpus.
//!
//! Then `parley serve` with authentication on (an HS256 secret in a temporary file, the
//! per-principal rate limit off) is driven at `--rate` requests per second (open loop) for
//! `--duration`: `searchMessages(query: term, first: 20)` for each term, as an admin and as
//! one-inbox principals (64 customers, a token each, one picked at random per request).
//! Every answer is checked against the corpus: exactly the page's number of results.
//!
//! With `--search-record`, recordMessage at `--rate` (20% new conversations) with the
//! search index and without it, in the order with, without, without, with (one drop and one
//! rebuild; the two halves cancel a drift that is linear in time). "Without" drops the GIN
//! index (PostgreSQL) or the FTS5 insert trigger (SQLite): the text rows are still written,
//! as the record statement writes them; the index is not.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::cli::{Args, Engine};
use crate::db::{self, AGENT, BenchDb};
use crate::load::{self, Mode, Stats};
use crate::report;
use crate::server::{Server, ServerSpec};
use crate::workload::{Mix, Workload};

/// The selective term: in message `i` when `i % 1000 == 7`.
pub const SELECTIVE: &str = "zephyr";
/// The common term: in message `i` when `i % 5 == 0`.
pub const COMMON: &str = "order";

/// How many of the messages of conversations `conversations` hold `term` (conversation
/// `c` holds messages `(c-1)*per+1 ..= c*per`, with the `per` of the corpus seeded; see
/// [`set_per`]).
pub fn matches(term: &str, conversations: RangeInclusive<u64>) -> u64 {
    let per = PER.load(std::sync::atomic::Ordering::Relaxed);
    let first = (conversations.start() - 1) * per + 1;
    let last = conversations.end() * per;
    // Multiples of `m` shifted by `r` in first..=last.
    let count = |m: u64, r: u64| {
        let upto = |n: u64| {
            if n < r {
                0
            } else {
                (n - r) / m + u64::from(r > 0)
            }
        };
        upto(last) - upto(first - 1)
    };
    match term {
        SELECTIVE => count(1000, 7),
        COMMON => count(5, 0),
        _ => 0,
    }
}

static PER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(100);

/// Sets the messages per conversation [`matches`] counts with.
pub fn set_per(per: u64) {
    PER.store(per, std::sync::atomic::Ordering::Relaxed);
}

/// The body of message `i` in SQL (both engines: `||`, `%` and `CASE` alike): "message i",
/// twelve words of a 5,003-word vocabulary, then the terms.
fn body_sql(i: &str) -> String {
    let mut s = format!("'message ' || {i}");
    for k in 1..=12u64 {
        s.push_str(&format!(
            " || ' w' || (({i} * 7919 + {}) % 5003)",
            k * 104_729
        ));
    }
    s.push_str(&format!(
        " || CASE WHEN {i} % 5 = 0 THEN ' {COMMON}' ELSE '' END \
         || CASE WHEN {i} % 1000 = 7 THEN ' {SELECTIVE}' ELSE '' END"
    ));
    s
}

/// What one engine's run measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EngineRun {
    /// The engine.
    pub engine: Engine,
    /// Conversations and messages seeded.
    pub conversations: u64,
    /// Messages seeded.
    pub messages: u64,
    /// Seconds to seed conversations, participants and messages.
    pub seed_s: f64,
    /// Seconds to write the search text rows (PostgreSQL: without the GIN index, its
    /// generated `tsvector` included; SQLite: with the FTS5 index through the triggers).
    pub text_rows_s: f64,
    /// PostgreSQL: seconds to build the GIN index once over every row.
    pub index_build_s: Option<f64>,
    /// The full-text index's size, MiB (PostgreSQL: the GIN index; SQLite: what the text
    /// rows and the FTS5 table added to the file).
    pub index_mib: f64,
    /// PostgreSQL: `message_texts` with its TOAST, MiB.
    pub text_table_mib: Option<f64>,
    /// Matches of the selective and the common term (checked against the corpus).
    pub selective_matches: u64,
    /// Matches of the common term.
    pub common_matches: u64,
    /// The search runs.
    pub searches: Vec<SearchRow>,
    /// The record runs (`--search-record`).
    pub record: Vec<RecordRow>,
}

/// One search run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SearchRow {
    /// The word.
    pub term: String,
    /// `admin` or `one-inbox`.
    pub viewer: String,
    /// Its matches in the whole corpus.
    pub matches: u64,
    /// What the run measured.
    pub stats: Stats,
}

/// One record run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordRow {
    /// Whether the search index was there.
    pub with_index: bool,
    /// The settling run before the measured ones (not in the comparison).
    #[serde(default)]
    pub settling: bool,
    /// What the run measured.
    pub stats: Stats,
}

/// The JSON written by `--search`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SearchReport {
    /// When the run started (UTC).
    pub started_at: String,
    /// The machine.
    pub machine: String,
    /// Load averages at the start and the end.
    pub load_average: Vec<String>,
    /// The command line.
    pub command: String,
    /// Rate, duration, warmup.
    pub settings: serde_json::Value,
    /// Per engine.
    pub engines: Vec<EngineRun>,
}

/// Runs the search measurement on `engines`.
pub async fn run(args: &Args, engines: &[Engine]) -> anyhow::Result<()> {
    set_per(args.search_messages);
    let json_out = args
        .json_out
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench/results/search-latest.json"));
    let mut out = SearchReport {
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: report::machine(),
        load_average: vec![report::load_average()],
        command: format!(
            "parley-bench {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        ),
        settings: serde_json::json!({
            "conversations": args.search_conversations,
            "messages_per_conversation": args.search_messages,
            "rate": args.rate,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "record": args.search_record,
            "record_rounds": args.search_record_rounds,
            "pool_size": args.pool_size,
            "server_env": args.server_env,
        }),
        engines: Vec::new(),
    };
    let mut failed = None;
    for &engine in engines {
        let db = BenchDb::create(engine, args.database_url.as_deref(), "search").await?;
        let result = measure(args, &db).await;
        db.drop(args.keep_db).await?;
        match result {
            Ok(run) => out.engines.push(run),
            Err(e) => {
                failed = Some(e.context(format!("{} search run", engine.name())));
                break;
            }
        }
    }
    out.load_average.push(report::load_average());
    print!("{}", markdown(&out));
    if let Some(dir) = json_out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json_out, serde_json::to_string_pretty(&out)? + "\n")
        .with_context(|| format!("writing {}", json_out.display()))?;
    eprintln!("wrote {}", json_out.display());
    if let Some(e) = failed {
        return Err(e);
    }
    let errors: u64 = out
        .engines
        .iter()
        .flat_map(|e| {
            e.searches
                .iter()
                .map(|s| &s.stats)
                .chain(e.record.iter().map(|r| &r.stats))
        })
        .map(|s| s.errors)
        .sum();
    if errors > 0 {
        bail!("{errors} request(s) failed");
    }
    Ok(())
}

async fn measure(args: &Args, db: &BenchDb) -> anyhow::Result<EngineRun> {
    let engine = db.engine;
    let (n, per) = (args.search_conversations, args.search_messages.max(1));
    db::migrate(args.parley_bin(), &db.url).await?;
    let conn = db::connect(&db.url, 1).await?;
    eprintln!(
        "{}: seeding {n} conversations x {per} messages...",
        engine.name()
    );
    let started = Instant::now();
    seed(&conn, engine, n, per).await?;
    let seed_s = started.elapsed().as_secs_f64();
    eprintln!("{}: seeded in {seed_s:.1} s", engine.name());
    let mut run = build_index(&conn, engine).await?;
    run.conversations = n;
    run.messages = n * per;
    run.seed_s = seed_s;
    let want = (matches(SELECTIVE, 1..=n), matches(COMMON, 1..=n));
    anyhow::ensure!(
        (run.selective_matches, run.common_matches) == want,
        "the index finds {} and {} matches; the corpus has {} and {}",
        run.selective_matches,
        run.common_matches,
        want.0,
        want.1
    );
    eprintln!(
        "{}: text rows {:.1} s, index build {}, index {:.0} MiB; {} \"{SELECTIVE}\", {} \"{COMMON}\"",
        engine.name(),
        run.text_rows_s,
        run.index_build_s
            .map_or("(with the rows)".into(), |s| format!("{s:.1} s")),
        run.index_mib,
        run.selective_matches,
        run.common_matches
    );

    // The server, with authentication on.
    let scratch = tempfile::Builder::new()
        .prefix("parley-bench-search-")
        .tempdir()?;
    let secret = scratch.path().join("jwt-secret");
    std::fs::write(
        &secret,
        format!("parley-bench-search-secret-{:032x}\n", rand_u128()),
    )?;
    let mut env = args.server_env.clone();
    env.push(format!("PARLEY_JWT_SECRET_FILE={}", secret.display()));
    env.push("PARLEY_RATE_LIMIT=0".into());
    let admin = mint(
        args.parley_bin(),
        &secret,
        "bench-admin",
        &["admin"],
        &["*"],
    )
    .await?;
    let mut inboxes = Vec::new();
    let mut pick = 0x2545_F491_4F6C_DD1Du64;
    for k in 0..64u64 {
        pick ^= pick << 13;
        pick ^= pick >> 7;
        pick ^= pick << 17;
        let c = 1 + pick % n;
        let token = mint(
            args.parley_bin(),
            &secret,
            &format!("bench-inbox-{k}"),
            &["conversations:read"],
            &[db::customer(c).as_str()],
        )
        .await?;
        inboxes.push((c, token));
    }
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {admin}"))?;
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let log = db
        .scratch_dir()
        .unwrap_or(scratch.path())
        .join("search-server.log");
    let server = Server::start(
        ServerSpec {
            bin: args.parley_bin(),
            database_url: &db.url,
            pool_size: args.pool_size,
            env: &env,
            log: log.clone(),
        },
        &client,
    )
    .await?;
    let measured = async {
        let url = server.graphql_url();
        let mode = Mode::Rate(args.rate);
        let duration = Duration::from_secs_f64(args.duration);
        let warmup = Duration::from_secs_f64(args.warmup);
        for term in [SELECTIVE, COMMON] {
            for viewer in ["admin", "one-inbox"] {
                let workload = |tag: u64| {
                    let w = Workload::new(Mix::Search { term }, n, term, tag);
                    if viewer == "admin" {
                        w
                    } else {
                        w.with_inboxes(inboxes.clone())
                    }
                };
                if !warmup.is_zero() {
                    load::run(&client, &url, &mut workload(7), mode, warmup).await;
                }
                let stats = load::run(&client, &url, &mut workload(11), mode, duration).await;
                eprintln!(
                    "{} search \"{term}\" {viewer} at {}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, {} errors of {}",
                    engine.name(),
                    mode.label(),
                    stats.p50_ms,
                    stats.p95_ms,
                    stats.p99_ms,
                    stats.errors,
                    stats.requests
                );
                if let Some(e) = &stats.first_error {
                    eprintln!("  first error: {e}");
                }
                run.searches.push(SearchRow {
                    term: term.into(),
                    viewer: viewer.into(),
                    matches: matches(term, 1..=n),
                    stats,
                });
            }
        }
        if args.search_record {
            // A settling run first, with the index, not counted: the first writes after
            // the bulk build meet cold pages and the index's first merges (a transient of
            // seconds, which fell on the first "with" run alone and biased the comparison).
            // Then per round: with, without, without, with (one drop, one rebuild).
            let order = [true, false, false, true];
            let runs = std::iter::once((None, true)).chain(
                (0..args.search_record_rounds.max(1))
                    .flat_map(|_| order.into_iter().enumerate().map(|(k, w)| (Some(k), w))),
            );
            for (i, (k, with_index)) in runs.enumerate() {
                if k == Some(1) {
                    set_index(&conn, engine, false).await?;
                } else if k == Some(3) {
                    let t = Instant::now();
                    set_index(&conn, engine, true).await?;
                    eprintln!(
                        "{}: search index restored in {:.1} s",
                        engine.name(),
                        t.elapsed().as_secs_f64()
                    );
                }
                let mix = Mix::Record {
                    new_percent: 20,
                    hot: None,
                };
                if !warmup.is_zero() {
                    let mut w = Workload::new(mix, n, &format!("r{i}w"), 7);
                    load::run(&client, &url, &mut w, mode, warmup).await;
                }
                let mut w = Workload::new(mix, n, &format!("r{i}"), 11);
                let stats = load::run(&client, &url, &mut w, mode, duration).await;
                eprintln!(
                    "{} record {} the search index at {}{}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, {} errors",
                    engine.name(),
                    if with_index { "with" } else { "without" },
                    mode.label(),
                    if k.is_none() { " (settling, not counted)" } else { "" },
                    stats.p50_ms,
                    stats.p95_ms,
                    stats.p99_ms,
                    stats.errors
                );
                if let Some(e) = &stats.first_error {
                    eprintln!("  first error: {e}");
                }
                run.record.push(RecordRow {
                    with_index,
                    settling: k.is_none(),
                    stats,
                });
            }
        }
        anyhow::Ok(())
    }
    .await;
    let errors = run
        .searches
        .iter()
        .map(|s| s.stats.errors)
        .chain(run.record.iter().map(|r| r.stats.errors))
        .sum::<u64>();
    if measured.is_err() || errors > 0 {
        eprintln!(
            "last lines of the server log:\n{}",
            crate::run::log_tail(&log, 30)
        );
    }
    server.stop().await?;
    conn.close().await?;
    measured?;
    Ok(run)
}

/// A random-enough number for the secret (the bench's own; never a credential).
fn rand_u128() -> u128 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() ^ (u128::from(std::process::id()) << 64)
}

/// A bearer token from `parley token`.
async fn mint(
    bin: &Path,
    secret: &Path,
    sub: &str,
    scopes: &[&str],
    inboxes: &[&str],
) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("token")
        .arg("--jwt-secret-file")
        .arg(secret)
        .args(["--sub", sub, "--ttl", "1d"]);
    for s in scopes {
        cmd.args(["--scope", s]);
    }
    for i in inboxes {
        cmd.args(["--inbox", i]);
    }
    let out = cmd.output().await.context("running parley token")?;
    if !out.status.success() {
        bail!(
            "`parley token` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

async fn exec(conn: &DatabaseConnection, sql: &str) -> anyhow::Result<()> {
    conn.execute_unprepared(sql)
        .await
        .with_context(|| format!("running {}", &sql[..sql.len().min(100)]))?;
    Ok(())
}

async fn scalar(conn: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let backend = conn.get_database_backend();
    let row = conn
        .query_one_raw(Statement::from_string(backend, sql.to_owned()))
        .await
        .with_context(|| format!("running {sql}"))?
        .context("no row")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// Conversations, participants and messages, set-based (one statement each, one
/// transaction on SQLite).
async fn seed(conn: &DatabaseConnection, engine: Engine, n: u64, per: u64) -> anyhow::Result<()> {
    let customer = "'u' || c || '@bench.example'";
    let key = format!("'{AGENT}' || char(31) || {customer}");
    let msg_conv = format!("((i - 1) / {per} + 1)");
    let msg_customer = format!("'u' || {msg_conv} || '@bench.example'");
    match engine {
        Engine::Postgres => {
            let at = |secs: &str| {
                format!("timestamptz '2026-01-01 00:00:00+00' + ({secs}) * interval '1 second'")
            };
            let statements = [
                format!(
                    "INSERT INTO conversations (id, channel, participants_key, participants, \
                     message_count, first_message_at, last_message_at, last_message_id, snippet, \
                     created_at, updated_at, last_sequence) \
                     SELECT c, 'EMAIL', {}, jsonb_build_array('{AGENT}', {customer}), {per}, {}, {}, \
                     c * {per}, '', now(), now(), {per} FROM generate_series(1, {n}::bigint) c",
                    key.replace("char(31)", "chr(31)"),
                    at(&format!("(c - 1) * {per} + 1")),
                    at(&format!("c * {per}"))
                ),
                format!(
                    "INSERT INTO conversation_participants (address, conversation_id) \
                     SELECT a, c FROM generate_series(1, {n}::bigint) c, \
                     LATERAL (VALUES ('{AGENT}'), ({customer})) v(a)"
                ),
                format!(
                    "INSERT INTO messages (id, conversation_id, channel, kind, direction, from_raw, \
                     to_raw, from_address, to_addresses, body, attachments, provider_message_id, \
                     sent_at, recorded_at, sequence) \
                     SELECT i, {msg_conv}, 'EMAIL', 'EMAIL', \
                     CASE WHEN i % 2 = 0 THEN 'INBOUND' ELSE 'OUTBOUND' END, p.f, \
                     jsonb_build_array(p.t), p.f, jsonb_build_array(p.t), {}, '[]'::jsonb, NULL, \
                     {}, now(), (i - 1) % {per} + 1 \
                     FROM generate_series(1, {}::bigint) i, LATERAL (SELECT \
                     CASE WHEN i % 2 = 0 THEN {msg_customer} ELSE '{AGENT}' END AS f, \
                     CASE WHEN i % 2 = 0 THEN '{AGENT}' ELSE {msg_customer} END AS t) p",
                    body_sql("i"),
                    at("i"),
                    n * per
                ),
                format!("SELECT setval(pg_get_serial_sequence('conversations', 'id'), {n})"),
                format!(
                    "SELECT setval(pg_get_serial_sequence('messages', 'id'), {})",
                    n * per
                ),
            ];
            for s in &statements {
                exec(conn, s).await?;
            }
        }
        Engine::Sqlite => {
            // sqlx's encoding of a DateTime<Utc> in SQLite (RFC 3339, `+00:00`).
            let at = |secs: &str| {
                format!("strftime('%Y-%m-%dT%H:%M:%S+00:00', 1767225600 + ({secs}), 'unixepoch')")
            };
            let now = "strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now')";
            let series = |name: &str, upto: u64| {
                format!(
                    "WITH RECURSIVE s({name}) AS (SELECT 1 UNION ALL SELECT {name} + 1 FROM s \
                     WHERE {name} < {upto})"
                )
            };
            let statements = [
                "BEGIN".to_owned(),
                format!(
                    "{} INSERT INTO conversations (id, channel, participants_key, participants, \
                     message_count, first_message_at, last_message_at, last_message_id, snippet, \
                     created_at, updated_at, last_sequence) \
                     SELECT c, 'EMAIL', {key}, json_array('{AGENT}', {customer}), {per}, {}, {}, \
                     c * {per}, '', {now}, {now}, {per} FROM s",
                    series("c", n),
                    at(&format!("(c - 1) * {per} + 1")),
                    at(&format!("c * {per}"))
                ),
                format!(
                    "{} INSERT INTO conversation_participants (address, conversation_id) \
                     SELECT '{AGENT}', c FROM s UNION ALL SELECT {customer}, c FROM s",
                    series("c", n)
                ),
                format!(
                    "{} INSERT INTO messages (id, conversation_id, channel, kind, direction, \
                     from_raw, to_raw, from_address, to_addresses, body, attachments, \
                     provider_message_id, sent_at, recorded_at, sequence) \
                     SELECT i, {msg_conv}, 'EMAIL', 'EMAIL', \
                     CASE WHEN i % 2 = 0 THEN 'INBOUND' ELSE 'OUTBOUND' END, f, json_array(t), \
                     f, json_array(t), {}, '[]', NULL, {}, {now}, (i - 1) % {per} + 1 \
                     FROM (SELECT i, \
                     CASE WHEN i % 2 = 0 THEN {msg_customer} ELSE '{AGENT}' END AS f, \
                     CASE WHEN i % 2 = 0 THEN '{AGENT}' ELSE {msg_customer} END AS t FROM s)",
                    series("i", n * per),
                    body_sql("i"),
                    at("i")
                ),
                "COMMIT".to_owned(),
            ];
            for s in &statements {
                exec(conn, s).await?;
            }
        }
    }
    Ok(())
}

/// Writes every message's search text and builds the index; times and sizes.
async fn build_index(conn: &DatabaseConnection, engine: Engine) -> anyhow::Result<EngineRun> {
    const TEXTS: &str = "INSERT INTO message_texts (message_id, text, conversation_id, channel, \
                         direction, sent_at) SELECT id, body, conversation_id, channel, direction, \
                         sent_at FROM messages";
    let mib = |bytes: i64| bytes as f64 / (1024.0 * 1024.0);
    let mut run = EngineRun {
        engine,
        conversations: 0,
        messages: 0,
        seed_s: 0.0,
        text_rows_s: 0.0,
        index_build_s: None,
        index_mib: 0.0,
        text_table_mib: None,
        selective_matches: 0,
        common_matches: 0,
        searches: Vec::new(),
        record: Vec::new(),
    };
    match engine {
        Engine::Postgres => {
            exec(conn, "DROP INDEX message_texts_tsv").await?;
            let t = Instant::now();
            exec(conn, TEXTS).await?;
            run.text_rows_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            set_index(conn, engine, true).await?;
            run.index_build_s = Some(t.elapsed().as_secs_f64());
            exec(
                conn,
                "VACUUM ANALYZE conversations, conversation_participants, messages, message_texts",
            )
            .await?;
            run.index_mib =
                mib(scalar(conn, "SELECT pg_relation_size('message_texts_tsv')").await?);
            run.text_table_mib = Some(mib(
                scalar(conn, "SELECT pg_table_size('message_texts')").await?
            ));
            let count = |w: &str| {
                format!(
                    "SELECT count(*) FROM message_texts WHERE tsv @@ to_tsquery('simple', '{w}')"
                )
            };
            run.selective_matches = scalar(conn, &count(SELECTIVE)).await? as u64;
            run.common_matches = scalar(conn, &count(COMMON)).await? as u64;
        }
        Engine::Sqlite => {
            let size = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()";
            let before = scalar(conn, size).await?;
            let t = Instant::now();
            exec(conn, TEXTS).await?;
            run.text_rows_s = t.elapsed().as_secs_f64();
            exec(conn, "ANALYZE").await?;
            run.index_mib = mib(scalar(conn, size).await? - before);
            let count = |w: &str| {
                format!("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH '\"{w}\"'")
            };
            run.selective_matches = scalar(conn, &count(SELECTIVE)).await? as u64;
            run.common_matches = scalar(conn, &count(COMMON)).await? as u64;
        }
    }
    Ok(run)
}

/// Drops or (re)creates the search index: PostgreSQL's GIN index, SQLite's FTS5 insert
/// trigger (the migration's text).
async fn set_index(conn: &DatabaseConnection, engine: Engine, on: bool) -> anyhow::Result<()> {
    let sql = match (engine, on) {
        (Engine::Postgres, true) => {
            "CREATE INDEX message_texts_tsv ON message_texts USING GIN (tsv)"
        }
        (Engine::Postgres, false) => "DROP INDEX message_texts_tsv",
        (Engine::Sqlite, true) => {
            "CREATE TRIGGER message_texts_ai AFTER INSERT ON message_texts BEGIN
        INSERT INTO messages_fts (rowid, text) VALUES (new.message_id, new.text);
    END"
        }
        (Engine::Sqlite, false) => "DROP TRIGGER message_texts_ai",
    };
    exec(conn, sql).await
}

/// The report's tables.
pub fn markdown(r: &SearchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nsearch run {} on {} (load average {}), `{}`\n",
        r.started_at,
        r.machine,
        r.load_average.join(" -> "),
        r.command
    );
    let _ = writeln!(
        s,
        "| engine | messages | seed | text rows | index build | index size |\n|---|---|---|---|---|---|"
    );
    for e in &r.engines {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} s | {:.1} s | {} | {:.0} MiB{} |",
            e.engine.name(),
            e.messages,
            e.seed_s,
            e.text_rows_s,
            e.index_build_s
                .map_or("with the rows (FTS5 triggers)".into(), |b| format!(
                    "{b:.1} s"
                )),
            e.index_mib,
            e.text_table_mib
                .map_or(String::new(), |t| format!(" (`message_texts` {t:.0} MiB)"))
        );
    }
    let _ = writeln!(
        s,
        "\n| engine | search | viewer | matches | requests | errors | p50 | p95 | p99 | max |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for e in &r.engines {
        for x in &e.searches {
            let t = &x.stats;
            let _ = writeln!(
                s,
                "| {} | \"{}\" | {} | {} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
                e.engine.name(),
                x.term,
                x.viewer,
                x.matches,
                t.requests,
                t.errors,
                t.p50_ms,
                t.p95_ms,
                t.p99_ms,
                t.max_ms
            );
        }
    }
    if r.engines.iter().any(|e| !e.record.is_empty()) {
        let _ = writeln!(
            s,
            "\n| engine | record | requests | errors | p50 | p95 | p99 |\n|---|---|---|---|---|---|---|"
        );
        for e in &r.engines {
            for x in &e.record {
                let t = &x.stats;
                let _ = writeln!(
                    s,
                    "| {} | {} the index{} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
                    e.engine.name(),
                    if x.with_index { "with" } else { "without" },
                    if x.settling {
                        " (settling, not counted)"
                    } else {
                        ""
                    },
                    t.requests,
                    t.errors,
                    t.p50_ms,
                    t.p95_ms,
                    t.p99_ms
                );
            }
            let p95 = |with: bool| {
                let v: Vec<f64> = e
                    .record
                    .iter()
                    .filter(|x| x.with_index == with && !x.settling)
                    .map(|x| x.stats.p95_ms)
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            if let (Some(w), Some(wo)) = (p95(true), p95(false)) {
                let _ = writeln!(
                    s,
                    "| {} | p95 with / without (mean of the runs) | | | | {:+.1}% | |",
                    e.engine.name(),
                    (w / wo - 1.0) * 100.0
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_counts() {
        set_per(100);
        assert_eq!(matches(SELECTIVE, 1..=10_000), 1_000);
        assert_eq!(matches(COMMON, 1..=10_000), 200_000);
        // Conversation 1: messages 1..=100, "zephyr" in 7; conversation 2: 101..=200, none.
        assert_eq!(matches(SELECTIVE, 1..=1), 1);
        assert_eq!(matches(SELECTIVE, 2..=2), 0);
        assert_eq!(matches(SELECTIVE, 11..=11), 1);
        assert_eq!(matches(COMMON, 5..=5), 20);
        let brute = |t: &str, c: u64| {
            ((c - 1) * 100 + 1..=c * 100)
                .filter(|i| match t {
                    SELECTIVE => i % 1000 == 7,
                    _ => i % 5 == 0,
                })
                .count() as u64
        };
        for c in 1..=30 {
            assert_eq!(matches(SELECTIVE, c..=c), brute(SELECTIVE, c), "{c}");
            assert_eq!(matches(COMMON, c..=c), brute(COMMON, c), "{c}");
        }
    }
}
