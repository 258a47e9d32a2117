//! The bench database: created fresh (a PostgreSQL database on the given server, or a
//! SQLite file in a temporary directory), migrated by the real `parley migrate up`, and
//! seeded in bulk with data that matches what `recordMessage` would have written.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
    TransactionTrait, Value,
};

use crate::cli::Engine;

/// The other participant of every seeded conversation.
pub const AGENT: &str = "agent@parley.example";

/// The address of seeded conversation `i`'s customer; conversation `i` is between
/// [`AGENT`] and this address.
pub fn customer(i: u64) -> String {
    format!("u{i}@bench.example")
}

/// The body (and so the snippet) of seeded message `j` (1-based) of conversation `i`.
fn seed_body(i: u64, j: u64) -> String {
    format!("Bench message {j} of conversation {i}")
}

/// A fresh database for one engine, dropped by [`BenchDb::drop`].
pub struct BenchDb {
    /// The engine.
    pub engine: Engine,
    /// The URL the server is started with.
    pub url: String,
    admin_url: Option<String>,
    name: Option<String>,
    dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    /// Creates an empty database: `CREATE DATABASE parley_bench_*` on the server of
    /// `admin_url` (PostgreSQL), or a file in a new temporary directory (SQLite).
    pub async fn create(
        engine: Engine,
        admin_url: Option<&str>,
        tag: &str,
    ) -> anyhow::Result<Self> {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::Builder::new().prefix("parley-bench-").tempdir()?;
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("bench.sqlite").display()
                );
                Ok(BenchDb {
                    engine,
                    url,
                    admin_url: None,
                    name: None,
                    dir: Some(dir),
                })
            }
            Engine::Postgres => {
                let admin_url = admin_url.context("PostgreSQL needs --database-url")?;
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let name = format!("parley_bench_{tag}_{}_{stamp}", std::process::id());
                let url = with_database(admin_url, &name)?;
                admin_exec(admin_url, &format!("CREATE DATABASE {name}")).await?;
                Ok(BenchDb {
                    engine,
                    url,
                    admin_url: Some(admin_url.to_owned()),
                    name: Some(name),
                    dir: None,
                })
            }
        }
    }

    /// A directory that lives as long as this database (SQLite), for server logs.
    pub fn scratch_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// Drops the database (or deletes the SQLite directory); with `keep`, leaves it and
    /// says where it is.
    pub async fn drop(self, keep: bool) -> anyhow::Result<()> {
        if keep {
            eprintln!("keeping the bench database: {}", self.url);
            if let Some(dir) = self.dir {
                let _ = dir.keep();
            }
            return Ok(());
        }
        if let (Some(admin_url), Some(name)) = (&self.admin_url, &self.name) {
            admin_exec(
                admin_url,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await?;
        }
        Ok(())
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let mut parsed = reqwest::Url::parse(url).with_context(|| format!("parsing {url}"))?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

/// A small pool for seeding and administration.
pub async fn connect(url: &str, max: u32) -> anyhow::Result<DatabaseConnection> {
    let mut opt = ConnectOptions::new(url.to_owned());
    opt.max_connections(max)
        .min_connections(0)
        .sqlx_logging(false);
    Database::connect(opt)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Runs the real migrations: `parley migrate up`.
pub async fn migrate(parley_bin: &Path, url: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(parley_bin)
        .args(["migrate", "up"])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .with_context(|| format!("running {} migrate up", parley_bin.display()))?;
    if !out.status.success() {
        bail!(
            "`parley migrate up` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// What to seed: `conversations` conversations of `messages` messages each.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SeedSpec {
    /// Conversations.
    pub conversations: u64,
    /// Messages per conversation (at least 1).
    pub messages: u64,
}

/// Seeds conversation `i` (1..=N, id `i`) between [`AGENT`] and [`customer`]`(i)` with M
/// messages (ids `(i-1)*M + j`), alternating inbound and outbound, message `j` sent at
/// `base + i s + j ms`; the conversation's count, first/last times, last message id and
/// snippet are those the record path would have left. Returns the time taken.
pub async fn seed(db: &BenchDb, spec: SeedSpec) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        spec.messages >= 1,
        "seed at least one message per conversation"
    );
    let started = Instant::now();
    let conn = connect(&db.url, 1).await?;
    let base = (Utc::now() - TimeDelta::seconds(spec.conversations as i64 + 60))
        .duration_trunc(TimeDelta::microseconds(1))?;
    match db.engine {
        Engine::Postgres => seed_postgres(&conn, spec, base).await?,
        Engine::Sqlite => seed_sqlite(&conn, spec, base).await?,
    }
    conn.close().await?;
    Ok(started.elapsed())
}

/// Set-based: three `INSERT .. SELECT FROM generate_series` in one transaction, then
/// `VACUUM ANALYZE` so that the planner sees the table sizes (autovacuum would, later).
async fn seed_postgres(
    conn: &DatabaseConnection,
    spec: SeedSpec,
    base: DateTime<Utc>,
) -> anyhow::Result<()> {
    let (n, m) = (spec.conversations, spec.messages);
    let base = format!("'{}'::timestamptz", base.format("%Y-%m-%d %H:%M:%S%.6f+00"));
    let conv_at = format!("{base} + c.i * interval '1 second'");
    let sql = [
        format!(
            "INSERT INTO conversations (id, channel, participants_key, participants, message_count, \
             first_message_at, last_message_at, last_message_id, snippet, created_at, updated_at) \
             SELECT c.i, 'EMAIL', '{AGENT}' || chr(31) || 'u' || c.i || '@bench.example', \
             jsonb_build_array('{AGENT}', 'u' || c.i || '@bench.example'), {m}, \
             {conv_at} + interval '1 millisecond', {conv_at} + {m} * interval '1 millisecond', \
             c.i * {m}, 'Bench message {m} of conversation ' || c.i, \
             {conv_at} + interval '1 millisecond', {conv_at} + {m} * interval '1 millisecond' \
             FROM generate_series(1, {n}::bigint) AS c(i)"
        ),
        format!(
            "INSERT INTO conversation_participants (address, conversation_id) \
             SELECT '{AGENT}', c.i FROM generate_series(1, {n}::bigint) AS c(i) \
             UNION ALL SELECT 'u' || c.i || '@bench.example', c.i \
             FROM generate_series(1, {n}::bigint) AS c(i)"
        ),
        format!(
            "INSERT INTO messages (id, conversation_id, channel, kind, direction, from_raw, to_raw, \
             from_address, to_addresses, body, attachments, provider_message_id, sent_at, \
             recorded_at, assignment_error) \
             SELECT (c.i - 1) * {m} + j, c.i, 'EMAIL', 'EMAIL', \
             CASE WHEN j % 2 = 1 THEN 'INBOUND' ELSE 'OUTBOUND' END, p.sender, \
             jsonb_build_array(p.recipient), p.sender, jsonb_build_array(p.recipient), \
             'Bench message ' || j || ' of conversation ' || c.i, '[]'::jsonb, \
             'seed-' || ((c.i - 1) * {m} + j), {conv_at} + j * interval '1 millisecond', \
             {conv_at} + j * interval '1 millisecond', NULL \
             FROM generate_series(1, {n}::bigint) AS c(i) \
             CROSS JOIN generate_series(1, {m}::bigint) AS j \
             CROSS JOIN LATERAL (SELECT \
               CASE WHEN j % 2 = 1 THEN 'u' || c.i || '@bench.example' ELSE '{AGENT}' END AS sender, \
               CASE WHEN j % 2 = 1 THEN '{AGENT}' ELSE 'u' || c.i || '@bench.example' END AS recipient) AS p"
        ),
        format!("SELECT setval(pg_get_serial_sequence('conversations', 'id'), {n})"),
        format!(
            "SELECT setval(pg_get_serial_sequence('messages', 'id'), {})",
            n * m
        ),
    ];
    let txn = conn.begin().await?;
    for s in &sql {
        txn.execute_unprepared(s)
            .await
            .with_context(|| format!("seeding: {}", &s[..s.len().min(80)]))?;
    }
    txn.commit().await?;
    conn.execute_unprepared("VACUUM ANALYZE conversations, messages, conversation_participants")
        .await?;
    Ok(())
}

/// Multi-row INSERTs of bound values in one transaction, so that timestamps and JSON are
/// encoded exactly as the server's own writes encode them.
async fn seed_sqlite(
    conn: &DatabaseConnection,
    spec: SeedSpec,
    base: DateTime<Utc>,
) -> anyhow::Result<()> {
    let (n, m) = (spec.conversations, spec.messages);
    let at =
        |i: u64, j: u64| base + TimeDelta::seconds(i as i64) + TimeDelta::milliseconds(j as i64);
    let txn = conn.begin().await?;
    let mut batch = Batch::new(
        "INSERT INTO conversations (id, channel, participants_key, participants, message_count, \
         first_message_at, last_message_at, last_message_id, snippet, created_at, updated_at) VALUES ",
        11,
    );
    for i in 1..=n {
        let user = customer(i);
        batch.row(vec![
            (i as i64).into(),
            "EMAIL".into(),
            format!("{AGENT}\u{1f}{user}").into(),
            serde_json::json!([AGENT, user]).into(),
            (m as i64).into(),
            at(i, 1).into(),
            at(i, m).into(),
            ((i * m) as i64).into(),
            seed_body(i, m).into(),
            at(i, 1).into(),
            at(i, m).into(),
        ]);
        batch.flush_if_full(&txn).await?;
    }
    batch.flush(&txn).await?;

    let mut batch = Batch::new(
        "INSERT INTO conversation_participants (address, conversation_id) VALUES ",
        2,
    );
    for i in 1..=n {
        batch.row(vec![AGENT.into(), (i as i64).into()]);
        batch.row(vec![customer(i).into(), (i as i64).into()]);
        batch.flush_if_full(&txn).await?;
    }
    batch.flush(&txn).await?;

    let mut batch = Batch::new(
        "INSERT INTO messages (id, conversation_id, channel, kind, direction, from_raw, to_raw, \
         from_address, to_addresses, body, attachments, provider_message_id, sent_at, \
         recorded_at, assignment_error) VALUES ",
        15,
    );
    for i in 1..=n {
        let user = customer(i);
        for j in 1..=m {
            let inbound = j % 2 == 1;
            let (from, to) = if inbound {
                (user.as_str(), AGENT)
            } else {
                (AGENT, user.as_str())
            };
            let id = ((i - 1) * m + j) as i64;
            batch.row(vec![
                id.into(),
                (i as i64).into(),
                "EMAIL".into(),
                "EMAIL".into(),
                if inbound { "INBOUND" } else { "OUTBOUND" }.into(),
                from.into(),
                serde_json::json!([to]).into(),
                from.into(),
                serde_json::json!([to]).into(),
                seed_body(i, j).into(),
                serde_json::json!([]).into(),
                format!("seed-{id}").into(),
                at(i, j).into(),
                at(i, j).into(),
                Option::<String>::None.into(),
            ]);
            batch.flush_if_full(&txn).await?;
        }
    }
    batch.flush(&txn).await?;
    txn.commit().await?;
    Ok(())
}

/// Rows of one multi-row INSERT, flushed when the statement nears SQLite's parameter limit.
struct Batch {
    head: &'static str,
    columns: usize,
    rows: usize,
    values: Vec<Value>,
}

impl Batch {
    const MAX_PARAMS: usize = 30_000;

    fn new(head: &'static str, columns: usize) -> Self {
        Batch {
            head,
            columns,
            rows: 0,
            values: Vec::new(),
        }
    }

    fn row(&mut self, values: Vec<Value>) {
        debug_assert_eq!(values.len(), self.columns);
        self.values.extend(values);
        self.rows += 1;
    }

    async fn flush_if_full(&mut self, txn: &impl ConnectionTrait) -> anyhow::Result<()> {
        if self.values.len() + 2 * self.columns > Self::MAX_PARAMS {
            self.flush(txn).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, txn: &impl ConnectionTrait) -> anyhow::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let one = format!("({})", vec!["?"; self.columns].join(", "));
        let mut sql = String::from(self.head);
        sql.push_str(&vec![one.as_str(); self.rows].join(", "));
        let values = std::mem::take(&mut self.values);
        self.rows = 0;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            values,
        ))
        .await
        .context("seeding SQLite")?;
        Ok(())
    }
}

/// Row counts, to check a seed (and report the data size).
pub async fn counts(url: &str) -> anyhow::Result<(i64, i64)> {
    let conn = connect(url, 1).await?;
    let backend = conn.get_database_backend();
    let row = conn
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT (SELECT COUNT(*) FROM conversations) AS c, (SELECT COUNT(*) FROM messages) AS m",
        ))
        .await?
        .context("count returned no row")?;
    let out = (row.try_get::<i64>("", "c")?, row.try_get::<i64>("", "m")?);
    conn.close().await?;
    Ok(out)
}

/// Runs one statement on the admin database of `admin_url` (CREATE or DROP DATABASE).
async fn admin_exec(admin_url: &str, statement: &str) -> anyhow::Result<()> {
    let admin = connect(admin_url, 1).await?;
    admin
        .execute_unprepared(statement)
        .await
        .with_context(|| format!("running `{statement}`"))?;
    admin.close().await?;
    Ok(())
}
