//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// parley's benchmark runner: seeds a fresh database, starts the real `parley serve`,
/// drives it over HTTP (fixed arrival rate and saturation) and compares with pgbench.
#[derive(Debug, Clone, Parser)]
#[command(name = "parley-bench", version, about, long_about = None)]
pub struct Args {
    /// A PostgreSQL URL whose server hosts the bench databases (a fresh
    /// `parley_bench_*` database is created and dropped on it). Without it only SQLite runs.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Which engines to run; default SQLite, and PostgreSQL when --database-url is given.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub engines: Vec<Engine>,
    /// Conversations seeded.
    #[arg(long, default_value_t = 10_000)]
    pub scale: u64,
    /// Messages seeded per conversation.
    #[arg(long, default_value_t = 5)]
    pub messages: u64,
    /// Scenarios to run (comma-separated); all when omitted.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Fixed arrival rate of the open-loop runs, requests per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Concurrent closed-loop clients of the saturation runs (and pgbench's -c).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Concurrent writers of the `hot` scenario.
    #[arg(long, default_value_t = 64)]
    pub hot_concurrency: usize,
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of unmeasured load before each run.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// The parley binary to start [default: target/release/parley; with --smoke
    /// target/debug/parley].
    #[arg(long)]
    pub parley_bin: Option<PathBuf>,
    /// The pgbench binary.
    #[arg(long, default_value = "pgbench")]
    pub pgbench_bin: PathBuf,
    /// Skip the pgbench ceiling.
    #[arg(long)]
    pub no_pgbench: bool,
    /// Server pool size (PARLEY_DB_MAX_CONNECTIONS); the server's default when omitted.
    #[arg(long)]
    pub pool_size: Option<u32>,
    /// Extra `KEY=VALUE` environment for the server (repeatable), e.g. `RUST_LOG=warn`.
    #[arg(long = "server-env", value_name = "KEY=VALUE")]
    pub server_env: Vec<String>,
    /// Send `Authorization: Bearer TOKEN` with every request (a server with authentication
    /// on: pass its key with --server-env PARLEY_JWT_SECRET_FILE=..., and mint the token
    /// with `parley token`). Never written to the report.
    #[arg(long, env = "PARLEY_BENCH_TOKEN", hide_env_values = true)]
    pub bearer_token: Option<String>,
    /// Tiny scale, short runs, every scenario; exits non-zero on any request error (for CI).
    #[arg(long)]
    pub smoke: bool,
    /// Scaling run: list and thread p95 at each of --scales conversations.
    #[arg(long)]
    pub scaling: bool,
    /// Conversation counts of the scaling run.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub scales: Vec<u64>,
    /// Messages per conversation of the scaling run.
    #[arg(long, default_value_t = 2)]
    pub scaling_messages: u64,
    /// Where the JSON results go [default: bench/results/latest.json; with --smoke
    /// parley-bench-smoke.json in the temporary directory].
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Also write the table into this Markdown file, between the runner's markers.
    #[arg(long, num_args = 0..=1, default_missing_value = "BENCHMARKS.md")]
    pub write_markdown: Option<PathBuf>,
    /// Measure nothing: print (and with --write-markdown, write) the tables of this JSON
    /// results file.
    #[arg(long, value_name = "JSON")]
    pub render: Option<PathBuf>,
    /// Keep the bench databases (and print where they are) instead of dropping them.
    #[arg(long)]
    pub keep_db: bool,
    /// Measure only one burst: N concurrent recordMessage calls into one conversation,
    /// all sent at once, spread over --burst-servers server processes on one database;
    /// exits non-zero on any error or a count that does not match.
    #[arg(long, value_name = "N")]
    pub burst: Option<usize>,
    /// Server processes of the --burst run.
    #[arg(long, default_value_t = 2)]
    pub burst_servers: usize,
    /// Measure only live updates: N subscribers on one server process, a writer at --rate
    /// messages per second for --duration through a second one (PostgreSQL); delivery
    /// latency, memory per idle subscription, and record latency with and without them.
    #[arg(long, value_name = "N")]
    pub subscribe: Option<usize>,
    /// Conversations the --subscribe subscribers follow (each follows one; the writer goes
    /// round-robin over them).
    #[arg(long, default_value_t = 100)]
    pub subscribe_conversations: usize,
    /// Rounds of the --subscribe record comparison: each records for --duration with no
    /// subscriber, then with the N subscribers (so several rounds alternate the two in one
    /// session); every run is reported, and the p95s of all rounds pooled.
    #[arg(long, default_value_t = 1)]
    pub subscribe_rounds: usize,
    /// A shell command run with `start` as its argument right before each --subscribe run
    /// with subscribers and with `stop` right after it (e.g. to switch callgrind's
    /// instrumentation of process A on and off).
    #[arg(long, value_name = "CMD")]
    pub subscribe_hook: Option<String>,
    /// Measure only search (issue 16): per engine, a fresh database seeded with the search
    /// corpus (--search-conversations x --search-messages; "order" in every fifth message,
    /// "zephyr" in one of a thousand), the search index built (time and size), then
    /// searchMessages' first page for each word at --rate for --duration, as an admin and
    /// as one-inbox principals (authentication on). Writes bench/results/search-latest.json
    /// unless --json-out says otherwise.
    #[arg(long)]
    pub search: bool,
    /// Conversations of the --search corpus.
    #[arg(long, default_value_t = 10_000)]
    pub search_conversations: u64,
    /// Messages per conversation of the --search corpus.
    #[arg(long, default_value_t = 100)]
    pub search_messages: u64,
    /// With --search: also recordMessage at --rate with the search index and without it
    /// (with, without, without, with), for the index's cost on the record path.
    #[arg(long)]
    pub search_record: bool,
    /// Rounds of the --search-record comparison, each with, without, without, with (after
    /// one settling run with the index, not counted).
    #[arg(long, default_value_t = 1)]
    pub search_record_rounds: u32,
    /// Measure only parley against PostGraphile 4 (the peer) on one seeded PostgreSQL
    /// database: list, edges and thread saturated with --concurrency clients, req/s and
    /// server CPU per request side by side, with the whole machine's CPU per request by part
    /// (the server's kernel time, PostgreSQL, the generator) and the throughput bound that
    /// leaves any server on these cores. Needs Node.js (skipped with a note without it)
    /// and PostGraphile installed in --peer-dir (`npm ci --prefix bench/peer`; the runner
    /// tries that itself when it is missing).
    #[arg(long)]
    pub peer: bool,
    /// Where bench/peer/package.json (PostGraphile, pinned) is.
    #[arg(long, default_value = "bench/peer")]
    pub peer_dir: PathBuf,
    /// The Node.js binary of the --peer run.
    #[arg(long, default_value = "node")]
    pub node_bin: PathBuf,
    /// How many times the --peer run measures each shape on each server (alternating).
    #[arg(long, default_value_t = 1)]
    pub peer_rounds: usize,
    /// The --peer run's peer: this binary instead of PostGraphile, started as parley is
    /// (`BIN serve` with parley's environment and --server-env, plus --peer-env) and sent
    /// parley's own three documents (e.g. `target/release/parley-floor`, the stack's floor).
    #[arg(long, value_name = "BIN")]
    pub peer_bin: Option<PathBuf>,
    /// Extra `KEY=VALUE` environment for --peer-bin (repeatable), e.g.
    /// `PARLEY_FLOOR_MODE=json`.
    #[arg(long = "peer-env", value_name = "KEY=VALUE")]
    pub peer_env: Vec<String>,
    /// The peer's name in the report [default: PostGraphile, or --peer-bin's file name].
    #[arg(long)]
    pub peer_name: Option<String>,
}

/// A storage engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the --database-url server.
    Postgres,
}

impl Engine {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
        }
    }
}

/// What one run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// recordMessage: 80% into existing conversations, 20% starting new ones.
    Record,
    /// recordMessage from many concurrent writers into 1 and into 10 conversations.
    Hot,
    /// conversations(first: 50) with participants, messageCount, snippet, lastMessageAt.
    List,
    /// One random conversation's messages(last: 50).
    Thread,
    /// 90% reads (list and thread, half each), 10% record.
    Mixed,
}

impl Scenario {
    /// All of them, in report order.
    pub const ALL: [Scenario; 5] = [
        Scenario::Record,
        Scenario::Hot,
        Scenario::List,
        Scenario::Thread,
        Scenario::Mixed,
    ];
}
