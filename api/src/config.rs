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
    /// Maximum database connections in the pool (at least 1).
    #[arg(
        long,
        env = "PARLEY_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub db_max_connections: u32,
    /// Seconds a request waits for a database connection before failing: OVERLOADED when
    /// every pooled connection stayed busy, UNAVAILABLE when none could be opened (0.001 to
    /// 86400).
    #[arg(
        long,
        env = "PARLEY_DB_ACQUIRE_TIMEOUT",
        default_value = "2",
        value_parser = seconds,
        global = true
    )]
    pub db_acquire_timeout: Duration,
    /// Seconds one SQL statement may run on PostgreSQL before it is cancelled (0.001 to
    /// 86400).
    #[arg(
        long,
        env = "PARLEY_DB_STATEMENT_TIMEOUT",
        default_value = "5",
        value_parser = seconds,
        global = true
    )]
    pub db_statement_timeout: Duration,
    /// Log format: human-readable `pretty` or one JSON object a line.
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
}

impl DbArgs {
    /// The pool options these arguments describe.
    pub fn db_options(&self) -> service::db::DbOptions {
        service::db::DbOptions {
            max_connections: self.db_max_connections,
            acquire_timeout: self.db_acquire_timeout,
            statement_timeout: self.db_statement_timeout,
            ..Default::default()
        }
    }
}

/// The shortest and longest duration a flag in seconds accepts: a millisecond and a day.
const SECONDS: std::ops::RangeInclusive<f64> = 0.001..=86_400.0;

/// Parses a flag given in seconds, refusing values outside [`SECONDS`] (zero, negative,
/// not a number) rather than rounding them to something else.
fn seconds(s: &str) -> Result<Duration, String> {
    let out_of_range = || {
        format!(
            "must be between {} and {} seconds (got {s})",
            SECONDS.start(),
            SECONDS.end()
        )
    };
    let n: f64 = s.trim().parse().map_err(|_| out_of_range())?;
    if !SECONDS.contains(&n) {
        return Err(out_of_range());
    }
    Duration::try_from_secs_f64(n).map_err(|_| out_of_range())
}

/// The page size of a connection given neither `first` nor `last` (the service's default,
/// `Limits::default_page_size`); the largest page size may not be smaller.
const DEFAULT_PAGE_SIZE: u64 = 20;

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
    /// Snippet length in user-perceived characters (1..=4096); a snippet also takes at most
    /// 32 bytes per character.
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
    /// The most messages of one conversation committed in one transaction (1..=256): the
    /// writers to a conversation that queue while its transaction runs are stored together
    /// in the next one (group commit); 1 gives each message a transaction of its own.
    #[arg(long, env = "PARLEY_RECORD_GROUP_MAX", default_value_t = service::record::MAX_GROUP as u16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub record_group_max: u16,
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
            record_group_max: usize::from(self.record_group_max),
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
    /// Largest page size of a connection (`first`/`last`), from 20 (the page a connection
    /// returns when given neither) to 2147483647 (the largest GraphQL `Int`).
    #[arg(long, env = "PARLEY_MAX_PAGE_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(DEFAULT_PAGE_SIZE..=i32::MAX as u64))]
    pub max_page_size: u64,
    /// Deepest selection nesting of a query.
    #[arg(long, env = "PARLEY_MAX_DEPTH", default_value_t = 10)]
    pub max_depth: usize,
    /// The cost budget of one operation: how many values its response can hold (each field,
    /// alias and `__typename` counts 1, each object 1 more, lists of objects their page size
    /// times their elements, fragments as if inline). 4000 admits no query that can return
    /// more than 2000 objects.
    #[arg(long, env = "PARLEY_MAX_COMPLEXITY", default_value_t = 4000)]
    pub max_complexity: usize,
    /// The most matching rows a `totalCount` counts when no counter holds its filter (1 to
    /// 2147483647): when more match, `totalCount` is this many and `totalCountIsExact`
    /// false. Each such count adds this divided by 10 (rounded up) to the operation's price.
    #[arg(long, env = "PARLEY_MAX_COUNT_ROWS",
          default_value_t = service::settings::DEFAULT_MAX_COUNT_ROWS,
          value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    pub max_count_rows: u64,
    /// Deepest nesting of brackets and braces in the query text, checked before parsing.
    #[arg(long, env = "PARLEY_MAX_NESTING", default_value_t = 32)]
    pub max_nesting: usize,
    /// Largest query text in bytes, checked before parsing (distinct from
    /// --max-request-bytes, which variables need).
    #[arg(long, env = "PARLEY_MAX_QUERY_BYTES", default_value_t = 64 * 1024)]
    pub max_query_bytes: usize,
    /// Most lexical tokens in the query text, checked before parsing.
    #[arg(long, env = "PARLEY_MAX_QUERY_TOKENS", default_value_t = 5000)]
    pub max_query_tokens: usize,
    /// Most directives on one field (@skip and @include are the only executable ones, so
    /// a field never needs more than 2).
    #[arg(long, env = "PARLEY_MAX_DIRECTIVES", default_value_t = 2)]
    pub max_directives: usize,
    /// Most operations in one JSON batch (at least 1; 1 turns batching off).
    #[arg(long, env = "PARLEY_MAX_BATCH", default_value_t = 10,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=usize::MAX as u64))]
    pub max_batch: usize,
    /// Turn schema introspection off (production).
    #[arg(long, env = "PARLEY_NO_INTROSPECTION")]
    pub no_introspection: bool,
    /// Turn "did you mean" field suggestions off (production).
    #[arg(long, env = "PARLEY_NO_SUGGESTIONS")]
    pub no_suggestions: bool,
    /// Run only the GraphQL documents listed in FILE: a JSON object of SHA-256 (hex) ->
    /// document, as graphql-codegen's client preset or Relay's persisted queries write it.
    /// Other documents answer PERSISTED_QUERY_NOT_FOUND or FORBIDDEN before parsing.
    #[arg(long, env = "PARLEY_TRUSTED_DOCUMENTS", value_name = "FILE")]
    pub trusted_documents: Option<std::path::PathBuf>,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT (0.001 to 86400).
    #[arg(long, env = "PARLEY_SHUTDOWN_GRACE", default_value = "30", value_parser = seconds)]
    pub shutdown_grace: Duration,
    /// Authentication, CORS and rate limits.
    #[command(flatten)]
    pub security: crate::auth::SecurityArgs,
    /// Connection-level timeouts and limits.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Subscriptions over WebSocket.
    #[command(flatten)]
    pub live: LiveArgs,
}

impl ServeArgs {
    /// The application configuration these arguments describe.
    pub fn app_config(&self) -> AppConfig {
        let mut settings = self.record.settings(self.max_page_size);
        settings.limits.max_count_rows = self.max_count_rows;
        AppConfig {
            settings,
            max_request_bytes: self.max_request_bytes,
            auth_required: self.security.auth_on(),
            graphql: GraphqlLimits {
                max_depth: self.max_depth,
                max_complexity: self.max_complexity,
                max_nesting: self.max_nesting,
                max_query_bytes: self.max_query_bytes,
                max_query_tokens: self.max_query_tokens,
                max_directives: self.max_directives,
                max_batch: self.max_batch,
                introspection: !self.no_introspection
                    && (self.security.introspection || !self.security.auth_on()),
                suggestions: !self.no_suggestions,
            },
            live: self.live.limits(),
        }
    }

    /// How long shutdown waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }
}

/// Limits on GraphQL requests. A value at the limit passes; one over is rejected with
/// `QUERY_TOO_COMPLEX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphqlLimits {
    /// Selection depth.
    pub max_depth: usize,
    /// The cost budget: values the response can hold (see `api::graphql::cost`).
    pub max_complexity: usize,
    /// Bracket/brace nesting of the query text, checked before parsing.
    pub max_nesting: usize,
    /// Size of the query text in bytes, checked before parsing.
    pub max_query_bytes: usize,
    /// Lexical tokens in the query text, checked before parsing.
    pub max_query_tokens: usize,
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
            max_complexity: 4000,
            max_nesting: 32,
            max_query_bytes: 64 * 1024,
            max_query_tokens: 5000,
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
    /// Whether every request must carry a principal (authentication on). When off, a
    /// request without one acts as the development principal (admin).
    pub auth_required: bool,
    /// Subscription limits.
    pub live: LiveLimits,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            settings: Settings::default(),
            graphql: GraphqlLimits::default(),
            max_request_bytes: 2 * 1024 * 1024,
            auth_required: false,
            live: LiveLimits::default(),
        }
    }
}

/// Limits of subscriptions (WebSocket connections at `/graphql/ws`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveLimits {
    /// Subscriptions one connection may run at once.
    pub max_subscriptions: usize,
    /// Time a new connection has to send `connection_init`.
    pub init_timeout: Duration,
    /// Interval of the server's keep-alive pings; a connection that answers nothing for
    /// two intervals is closed.
    pub keepalive: Duration,
    /// Changes a subscriber may fall behind before it is ended with `SUBSCRIPTION_LAGGED`.
    pub buffer: usize,
}

impl Default for LiveLimits {
    fn default() -> Self {
        LiveLimits {
            max_subscriptions: 20,
            init_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            buffer: 1024,
        }
    }
}

impl LiveLimits {
    /// The service's live-update options these limits describe.
    pub fn options(&self) -> service::live::LiveOptions {
        service::live::LiveOptions {
            buffer: self.buffer,
            ..Default::default()
        }
    }
}

/// Subscription flags of `parley serve`.
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// Most subscriptions one WebSocket connection may run at once (at least 1); one more is
    /// refused with TOO_MANY_SUBSCRIPTIONS.
    #[arg(long, env = "PARLEY_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub max_subscriptions_per_connection: usize,
    /// Seconds a WebSocket connection has to send `connection_init`; then it is closed with
    /// 4408 (0.001 to 86400).
    #[arg(long, env = "PARLEY_WS_INIT_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub ws_init_timeout: Duration,
    /// Seconds between the server's keep-alive pings on a WebSocket connection; one that
    /// answers nothing for two of them is closed (0.001 to 86400).
    #[arg(long, env = "PARLEY_WS_KEEPALIVE", default_value = "15", value_parser = seconds)]
    pub ws_keepalive: Duration,
    /// Changes a subscriber may fall behind before it is ended with SUBSCRIPTION_LAGGED,
    /// telling it the sequence to resume after (1 to 1000000).
    #[arg(long, env = "PARLEY_LIVE_BUFFER", default_value_t = 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub live_buffer: usize,
}

impl LiveArgs {
    /// The limits these arguments describe.
    pub fn limits(&self) -> LiveLimits {
        LiveLimits {
            max_subscriptions: self.max_subscriptions_per_connection,
            init_timeout: self.ws_init_timeout,
            keepalive: self.ws_keepalive,
            buffer: self.live_buffer,
        }
    }
}

/// Connection-level timeouts and limits of `parley serve`: what a client may hold (a
/// connection, an unfinished request, a place in the queue) and for how long.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Seconds a client has to send a request's headers, counted from when the connection
    /// is ready for a request (opened, or its previous response sent); then it is closed
    /// (0.001 to 86400). Also bounds how long a keep-alive connection may stay idle.
    #[arg(long, env = "PARLEY_HEADER_READ_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub header_read_timeout: Duration,
    /// Seconds a request body may take to arrive, plus one second per --body-min-rate bytes
    /// received; a slower body is cut with 408 REQUEST_TIMEOUT and the connection closed
    /// (0.001 to 86400).
    #[arg(long, env = "PARLEY_BODY_READ_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub body_read_timeout: Duration,
    /// Bytes per second of request body that earn one more second beyond
    /// --body-read-timeout (at least 1): a body that keeps this rate is never cut.
    #[arg(long, env = "PARLEY_BODY_MIN_RATE", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_min_rate: u64,
    /// Seconds a connection may stay open with nothing sent either way and no request
    /// being handled; then it is closed (0.001 to 86400).
    #[arg(long, env = "PARLEY_IDLE_TIMEOUT", default_value = "5", value_parser = seconds)]
    pub idle_timeout: Duration,
    /// Most open client connections; one more is answered 503 OVERLOADED and closed (at
    /// least 1; keep the open-files limit, `ulimit -n`, above it).
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,
    /// Most open connections from one client IP address (at least 1; behind a reverse
    /// proxy every client has the proxy's address: raise it to --max-connections).
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS_PER_IP", default_value_t = 512,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections_per_ip: usize,
    /// Most requests handled at once (at least 1). Request bodies are read only by
    /// requests being handled, so the memory unfinished bodies hold follows this times
    /// --max-request-bytes, not the number of clients.
    #[arg(long, env = "PARLEY_MAX_IN_FLIGHT", default_value_t = 16,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_in_flight: usize,
    /// Most requests waiting for a turn when --max-in-flight are being handled; one more is
    /// answered 503 OVERLOADED with Retry-After (0 sheds at once).
    #[arg(long, env = "PARLEY_MAX_QUEUED", default_value_t = 512,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1_000_000))]
    pub max_queued: usize,
    /// Seconds a request may wait for its turn before it is answered 503 OVERLOADED
    /// (0.001 to 86400).
    #[arg(long, env = "PARLEY_QUEUE_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub queue_timeout: Duration,
    /// Largest JSON response (a GraphQL result or a REST page), in bytes (at least 1024); a
    /// larger one is replaced by a RESPONSE_TOO_LARGE error.
    #[arg(long, env = "PARLEY_MAX_RESPONSE_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=usize::MAX as u64))]
    pub max_response_bytes: usize,
}

impl ConnArgs {
    /// The limits these arguments describe.
    pub fn limits(&self) -> crate::http::limits::ConnLimits {
        crate::http::limits::ConnLimits {
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            body_min_rate: self.body_min_rate,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_in_flight: self.max_in_flight,
            max_queued: self.max_queued,
            queue_timeout: self.queue_timeout,
            max_response_bytes: self.max_response_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("parley").chain(args.iter().copied()))
    }

    /// The message `parley ARGS` stops with at start-up.
    fn refusal(args: &[&str]) -> String {
        match parse(args) {
            Ok(cli) => panic!("`parley {}` was accepted: {cli:?}", args.join(" ")),
            Err(e) => {
                assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
                e.to_string()
            }
        }
    }

    #[test]
    fn out_of_range_settings_are_refused_naming_the_flag_and_the_range() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--db-max-connections", "0"],
                "for '--db-max-connections <DB_MAX_CONNECTIONS>': 0 is not in 1..=4294967295",
            ),
            (
                &["--db-acquire-timeout", "0"],
                "for '--db-acquire-timeout <DB_ACQUIRE_TIMEOUT>': must be between 0.001 and 86400 seconds (got 0)",
            ),
            (
                &["--db-statement-timeout=-1"],
                "for '--db-statement-timeout <DB_STATEMENT_TIMEOUT>': must be between 0.001 and 86400 seconds (got -1)",
            ),
            (
                &["serve", "--shutdown-grace", "NaN"],
                "for '--shutdown-grace <SHUTDOWN_GRACE>': must be between 0.001 and 86400 seconds (got NaN)",
            ),
            (
                &["serve", "--max-batch", "0"],
                "for '--max-batch <MAX_BATCH>': 0 is not in 1..=18446744073709551615",
            ),
            (
                &["serve", "--max-page-size", "10"],
                "for '--max-page-size <MAX_PAGE_SIZE>': 10 is not in 20..=2147483647",
            ),
            (
                &["serve", "--max-page-size", "2147483648"],
                "for '--max-page-size <MAX_PAGE_SIZE>': 2147483648 is not in 20..=2147483647",
            ),
            (
                &["serve", "--max-count-rows", "0"],
                "for '--max-count-rows <MAX_COUNT_ROWS>': 0 is not in 1..=2147483647",
            ),
            (
                &["serve", "--max-count-rows", "2147483648"],
                "for '--max-count-rows <MAX_COUNT_ROWS>': 2147483648 is not in 1..=2147483647",
            ),
            (
                &["serve", "--snippet-length", "0"],
                "for '--snippet-length <SNIPPET_LENGTH>': 0 is not in 1..=4096",
            ),
            (
                &["serve", "--record-group-max", "0"],
                "for '--record-group-max <RECORD_GROUP_MAX>': 0 is not in 1..=256",
            ),
            (
                &["serve", "--record-group-max", "257"],
                "for '--record-group-max <RECORD_GROUP_MAX>': 257 is not in 1..=256",
            ),
            (
                &["backfill", "--batch-size", "5001"],
                "for '--batch-size <BATCH_SIZE>': 5001 is not in 1..=5000",
            ),
            (
                &["verify", "--batch-size", "0"],
                "for '--batch-size <BATCH_SIZE>': 0 is not in 1..=5000",
            ),
            (
                &["import", "messages.jsonl", "--batch-size", "2001"],
                "for '--batch-size <BATCH_SIZE>': 2001 is not in 1..=2000",
            ),
        ];
        for (args, expected) in cases {
            let message = refusal(args);
            assert!(
                message.contains(expected),
                "`parley {}`: {message}",
                args.join(" ")
            );
        }
    }

    #[test]
    fn settings_at_the_ends_of_their_ranges_are_kept_as_given() {
        let cli = parse(&[
            "--db-max-connections",
            "1",
            "--db-acquire-timeout",
            "0.001",
            "--db-statement-timeout",
            "86400",
            "serve",
            "--max-batch",
            "1",
            "--max-page-size",
            "20",
            "--shutdown-grace",
            "0.5",
            "--record-group-max",
            "1",
            "--max-count-rows",
            "1",
        ])
        .unwrap();
        let options = cli.db.db_options();
        assert_eq!(options.max_connections, 1);
        assert_eq!(options.acquire_timeout.as_secs_f64(), 0.001);
        assert_eq!(options.statement_timeout.as_secs_f64(), 86400.0);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("not serve")
        };
        let config = serve.app_config();
        assert_eq!(config.graphql.max_batch, 1);
        assert_eq!(config.settings.limits.max_page_size, 20);
        assert_eq!(config.settings.record_group_max, 1);
        assert_eq!(config.settings.limits.max_count_rows, 1);
        assert_eq!(serve.shutdown_grace().as_secs_f64(), 0.5);
        for (args, batch) in [
            (&["backfill", "--batch-size", "5000"][..], 5000),
            (&["verify", "--batch-size", "1"], 1),
            (&["import", "-", "--batch-size", "2000"], 2000),
        ] {
            let batch_size = match parse(args).unwrap().command {
                Some(Command::Backfill(a)) => a.batch_size,
                Some(Command::Verify(a)) => a.batch_size,
                Some(Command::Import(a)) => a.batch_size,
                other => panic!("{other:?}"),
            };
            assert_eq!(batch_size, batch, "{args:?}");
        }
    }

    #[test]
    fn the_smallest_max_page_size_is_the_default_page_size() {
        assert_eq!(
            super::DEFAULT_PAGE_SIZE,
            service::Limits::default().default_page_size
        );
    }
}
