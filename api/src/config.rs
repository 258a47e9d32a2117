//! Configuration: typed clap arguments (each flag with an environment fallback) and the
//! plain [`AppConfig`] the schema and router are built from.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use service::normalize::Region;
use service::snippet::MAX_SNIPPET_LENGTH;
use service::{Limits, Settings};

/// The default database: a SQLite file in the working directory, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://parley.sqlite?mode=rwc";

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Database URL: `sqlite://FILE?mode=rwc` (the default, no setup), `sqlite::memory:` for
    /// a throwaway run, or `postgres://user@host/db` for production.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,
    /// Maximum database connections in the pool.
    #[arg(
        long,
        env = "PARLEY_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,
    /// Seconds a request waits for a database connection before failing with UNAVAILABLE.
    #[arg(
        long,
        env = "PARLEY_DB_ACQUIRE_TIMEOUT",
        default_value_t = 2.0,
        global = true
    )]
    pub db_acquire_timeout: f64,
    /// Seconds one SQL statement may run on PostgreSQL before it is cancelled.
    #[arg(
        long,
        env = "PARLEY_DB_STATEMENT_TIMEOUT",
        default_value_t = 5.0,
        global = true
    )]
    pub db_statement_timeout: f64,
    /// Log format: human-readable `pretty` or one JSON object a line.
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
}

impl DbArgs {
    /// The pool options these arguments describe.
    pub fn db_options(&self) -> service::db::DbOptions {
        service::db::DbOptions {
            max_connections: self.db_max_connections.max(1),
            acquire_timeout: secs(self.db_acquire_timeout),
            statement_timeout: secs(self.db_statement_timeout),
            ..Default::default()
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.001)).unwrap_or(Duration::from_secs(5))
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured on a terminal.
    Pretty,
    /// One JSON object a line, for log shippers.
    Json,
}

/// Settings of the record path, shared by `serve` and `import`.
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Snippet length in user-perceived characters (1..=4096).
    #[arg(long, env = "PARLEY_SNIPPET_LENGTH", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=MAX_SNIPPET_LENGTH as i64))]
    pub snippet_length: u16,
    /// Region for phone numbers written without a country code (ISO 3166 alpha-2).
    #[arg(long, env = "PARLEY_DEFAULT_REGION", default_value = "US")]
    pub default_region: Region,
    /// Largest message body, in bytes.
    #[arg(long, env = "PARLEY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most recipients on one message.
    #[arg(long, env = "PARLEY_MAX_RECIPIENTS", default_value_t = 50)]
    pub max_recipients: usize,
    /// Most attachments on one message.
    #[arg(long, env = "PARLEY_MAX_ATTACHMENTS", default_value_t = 10)]
    pub max_attachments: usize,
}

impl RecordArgs {
    /// The service settings these arguments describe.
    pub fn settings(&self, max_page_size: u64) -> Settings {
        Settings {
            snippet_length: usize::from(self.snippet_length),
            default_region: self.default_region,
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                max_recipients: self.max_recipients,
                max_attachments: self.max_attachments,
                max_page_size,
                ..Limits::default()
            },
        }
    }
}

/// `parley serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PARLEY_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Do not run pending migrations on start.
    #[arg(long, env = "PARLEY_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Record path settings.
    #[command(flatten)]
    pub record: RecordArgs,
    /// Largest request body, in bytes (checked before parsing).
    #[arg(long, env = "PARLEY_MAX_REQUEST_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Largest page size of a connection (`first`/`last`).
    #[arg(long, env = "PARLEY_MAX_PAGE_SIZE", default_value_t = 100)]
    pub max_page_size: u64,
    /// Deepest selection nesting of a query.
    #[arg(long, env = "PARLEY_MAX_DEPTH", default_value_t = 10)]
    pub max_depth: usize,
    /// Highest query complexity (each field, alias included, counts; connections count
    /// their page size).
    #[arg(long, env = "PARLEY_MAX_COMPLEXITY", default_value_t = 1000)]
    pub max_complexity: usize,
    /// Deepest nesting of brackets and braces in the query text, checked before parsing.
    #[arg(long, env = "PARLEY_MAX_NESTING", default_value_t = 32)]
    pub max_nesting: usize,
    /// Most directives on one field (@skip and @include are the only executable ones, so
    /// a field never needs more than 2).
    #[arg(long, env = "PARLEY_MAX_DIRECTIVES", default_value_t = 2)]
    pub max_directives: usize,
    /// Most operations in one JSON batch (1 turns batching off).
    #[arg(long, env = "PARLEY_MAX_BATCH", default_value_t = 10)]
    pub max_batch: usize,
    /// Turn schema introspection off (production).
    #[arg(long, env = "PARLEY_NO_INTROSPECTION")]
    pub no_introspection: bool,
    /// Turn "did you mean" field suggestions off (production).
    #[arg(long, env = "PARLEY_NO_SUGGESTIONS")]
    pub no_suggestions: bool,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, env = "PARLEY_SHUTDOWN_GRACE", default_value_t = 30.0)]
    pub shutdown_grace: f64,
}

impl ServeArgs {
    /// The application configuration these arguments describe.
    pub fn app_config(&self) -> AppConfig {
        AppConfig {
            settings: self.record.settings(self.max_page_size),
            max_request_bytes: self.max_request_bytes,
            graphql: GraphqlLimits {
                max_depth: self.max_depth,
                max_complexity: self.max_complexity,
                max_nesting: self.max_nesting,
                max_directives: self.max_directives,
                max_batch: self.max_batch.max(1),
                introspection: !self.no_introspection,
                suggestions: !self.no_suggestions,
            },
        }
    }

    /// How long shutdown waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        secs(self.shutdown_grace)
    }
}

/// Limits on GraphQL requests. A value at the limit passes; one over is rejected with
/// `QUERY_TOO_COMPLEX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphqlLimits {
    /// Selection depth.
    pub max_depth: usize,
    /// Complexity (fields and aliases; connections weighted by page size).
    pub max_complexity: usize,
    /// Bracket/brace nesting of the query text, checked before parsing.
    pub max_nesting: usize,
    /// Directives on one field.
    pub max_directives: usize,
    /// Operations in one batch.
    pub max_batch: usize,
    /// Whether introspection is allowed.
    pub introspection: bool,
    /// Whether field suggestions are given.
    pub suggestions: bool,
}

impl Default for GraphqlLimits {
    fn default() -> Self {
        GraphqlLimits {
            max_depth: 10,
            max_complexity: 1000,
            max_nesting: 32,
            max_directives: 2,
            max_batch: 10,
            introspection: true,
            suggestions: true,
        }
    }
}

/// Everything the schema and the router are built from: plain data, no environment reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppConfig {
    /// The record path's settings and input limits.
    pub settings: Settings,
    /// GraphQL request limits.
    pub graphql: GraphqlLimits,
    /// Largest request body in bytes.
    pub max_request_bytes: usize,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            settings: Settings::default(),
            graphql: GraphqlLimits::default(),
            max_request_bytes: 2 * 1024 * 1024,
        }
    }
}
