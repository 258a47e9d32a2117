//! The `parley` command line: `serve` (the default), `migrate`, `schema`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait};
use tokio::net::TcpListener;

use crate::config::{DbArgs, ServeArgs};
use crate::http::router;
use crate::state::AppState;
use crate::{graphql, observability};

/// parley: one durable, unified conversation model for Email and SMS/MMS, served as
/// GraphQL.
#[derive(Debug, Parser)]
#[command(name = "parley", version, about, long_about = None)]
pub struct Cli {
    /// Database connection.
    #[command(flatten)]
    pub db: DbArgs,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (GraphQL at /graphql, health at /healthz and /readyz, metrics at
    /// /metrics). Runs pending migrations first unless --no-migrate.
    Serve(Box<ServeArgs>),
    /// Apply or revert database migrations.
    Migrate {
        /// What to do.
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the GraphQL schema (SDL); `parley schema > schema.graphql` regenerates the
    /// committed file.
    Schema,
    /// Attach messages that have no conversation (legacy rows, and unassigned inbound
    /// messages whose addresses now normalize) to their conversations, in batches.
    Backfill(crate::ops::BackfillArgs),
    /// Recompute every conversation's count, activity, last message and snippet from its
    /// messages and report drift (exit code 1 when there is any); --repair fixes it.
    Verify(crate::ops::VerifyArgs),
    /// Bulk-load messages from a JSON Lines file in the recordMessage input shape.
    Import(crate::ops::ImportArgs),
    /// Mint an HS256 bearer token with the server's secret (development, tests, curl).
    Token(crate::auth::jwt::TokenArgs),
}

/// `parley migrate` actions.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum MigrateAction {
    /// Apply all pending migrations.
    Up,
    /// Revert the last migration (or --steps N).
    Down {
        /// How many migrations to revert.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// Show which migrations are applied.
    Status,
    /// Drop everything and re-apply all migrations (destroys data).
    Fresh,
}

/// Entry point of the binary: the exit status on success (1 when `verify` finds drift),
/// or the error that stopped it (status 1, with the error's chain on stderr).
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    observability::init_tracing(cli.db.log_format)?;
    match cli.command {
        None => serve(&cli.db, &ServeArgs::parse_defaults()).await?,
        Some(Command::Serve(args)) => serve(&cli.db, &args).await?,
        Some(Command::Migrate { action }) => migrate(&cli.db, action).await?,
        Some(Command::Schema) => print!("{}", graphql::schema::sdl()),
        Some(Command::Token(args)) => crate::auth::jwt::token(&args)?,
        Some(Command::Backfill(args)) => {
            let db = connect(&cli.db).await?;
            let done = crate::ops::backfill(&db, &args).await;
            close(db).await;
            done?
        }
        Some(Command::Verify(args)) => {
            let db = connect(&cli.db).await?;
            let outcome = crate::ops::verify(&db, &args).await;
            close(db).await;
            return Ok(outcome?.exit_code());
        }
        Some(Command::Import(args)) => {
            let db = connect(&cli.db).await?;
            let done = crate::ops::import(&db, &args).await;
            close(db).await;
            done?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Hands the pool's connections back to the database before the process exits (bounded,
/// so a wedged connection cannot hold the exit).
async fn close(db: service::DatabaseConnection) {
    match tokio::time::timeout(std::time::Duration::from_secs(5), db.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "closing the database pool failed"),
        Err(_) => tracing::warn!("closing the database pool timed out"),
    }
}

impl ServeArgs {
    /// `serve`'s arguments from the environment and defaults alone (for a bare `parley`).
    pub fn parse_defaults() -> ServeArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Only::parse_from(["parley"]).serve
    }
}

async fn connect(db: &DbArgs) -> anyhow::Result<service::DatabaseConnection> {
    service::db::connect(&db.database_url, &db.db_options())
        .await
        .with_context(|| {
            format!(
                "connecting to the database at {} (set DATABASE_URL or --database-url)",
                redact(&db.database_url)
            )
        })
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..s + 3 + colon], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

async fn serve(db_args: &DbArgs, args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.app_config();
    let security = crate::auth::Security::from_args(
        &args.security,
        args.bind,
        config.settings.default_region,
    )?;
    crate::auth::warn_if_development(&security, args.bind);
    crate::auth::spawn_upkeep(&security);
    let db = if args.no_migrate {
        connect(db_args).await?
    } else {
        crate::database::connect_migrated(&db_args.database_url, &db_args.db_options())
            .await
            .with_context(|| {
                format!(
                    "connecting to {} and running migrations (check DATABASE_URL; \
                     --no-migrate skips migrations)",
                    redact(&db_args.database_url)
                )
            })?
    };
    let mut state = AppState::secured(db.clone(), config, security);
    if let Some(path) = &args.trusted_documents {
        state = state.with_persisted(crate::http::persisted::PersistedDocuments::load(path)?);
    }
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            metrics.run_upkeep();
        }
    });
    if let Some(address) = args.security.metrics_bind {
        crate::auth::metrics::serve_metrics(address, state.clone()).await?;
    }
    let app = router(state);
    let listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {} (set PARLEY_BIND or --bind)", args.bind))?;
    tracing::info!(
        address = %args.bind,
        database = %redact(&db_args.database_url),
        "parley listening; GraphiQL at http://{}/graphql",
        args.bind
    );
    let grace = args.shutdown_grace();
    let drained = Arc::new(AtomicBool::new(false));
    // Under the connection limits (--header-read-timeout, --max-connections, ...). On the
    // signal the listener is dropped (new connections are refused), idle keep-alive
    // connections are closed, and `serve` returns once every in-flight request has been
    // answered.
    crate::http::serve::serve(
        listener,
        app,
        args.conn.limits(),
        shutdown_signal(grace, drained.clone()),
    )
    .await
    .context("serving HTTP")?;
    drained.store(true, Ordering::SeqCst);
    // Every request is answered: hand the connections back to the database cleanly
    // (bounded, so a wedged connection cannot hold the exit).
    if tokio::time::timeout(std::time::Duration::from_secs(5), db.close_by_ref())
        .await
        .is_err()
    {
        tracing::warn!("closing the database pool timed out");
    }
    tracing::info!("parley stopped: every in-flight request was answered");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT, which starts the drain. It also arms a watchdog: if
/// in-flight requests outlive `grace` (`--shutdown-grace`), the process exits with status 1
/// without waiting for them (they get no answer; a message whose transaction had not
/// committed is not stored, so clients may safely retry). A drain that finishes in time
/// ends `serve` normally, with status 0: the watchdog stands down once `drained` is set.
async fn shutdown_signal(grace: std::time::Duration, drained: Arc<AtomicBool>) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let signal = tokio::select! {
        _ = ctrl_c => "SIGINT",
        _ = term => "SIGTERM",
    };
    tracing::info!(
        signal,
        grace_seconds = grace.as_secs_f64(),
        "shutting down: no new connections; finishing in-flight requests"
    );
    // A plain thread, not a task: it must fire even if a stuck request starves the runtime.
    std::thread::spawn(move || {
        std::thread::sleep(grace);
        if !drained.load(Ordering::SeqCst) {
            tracing::warn!(
                grace_seconds = grace.as_secs_f64(),
                "shutdown grace period over; exiting with status 1 with requests still in flight"
            );
            std::process::exit(1);
        }
    });
}

async fn migrate(db_args: &DbArgs, action: MigrateAction) -> anyhow::Result<()> {
    // One connection: every schema change and the next statement see the same schema
    // (pooled SQLite connections that sat idle through a change have failed on it).
    let single = DbArgs {
        db_max_connections: 1,
        ..db_args.clone()
    };
    let db = connect(&single).await?;
    match action {
        MigrateAction::Up => {
            Migrator::up(&db, None).await?;
            crate::database::index_missing_texts(&db).await?;
        }
        MigrateAction::Down { steps } => Migrator::down(&db, Some(steps)).await?,
        MigrateAction::Status => Migrator::status(&db).await?,
        MigrateAction::Fresh => Migrator::fresh(&db).await?,
    }
    Ok(())
}
