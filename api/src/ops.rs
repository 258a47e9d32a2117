//! Operator subcommands: `backfill`, `verify`, `import`.

use clap::Args;
use service::DatabaseConnection;

/// `parley backfill`.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// Messages per batch (each batch is one transaction).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Report what would be done without writing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// `parley verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Fix the drift found.
    #[arg(long)]
    pub repair: bool,
}

/// `parley import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The JSON Lines file (`-` for standard input).
    pub file: String,
}

/// Runs `parley backfill`.
pub async fn backfill(_db: &DatabaseConnection, _args: &BackfillArgs) -> anyhow::Result<()> {
    anyhow::bail!("backfill is not implemented yet")
}

/// Runs `parley verify`.
pub async fn verify(_db: &DatabaseConnection, _args: &VerifyArgs) -> anyhow::Result<()> {
    anyhow::bail!("verify is not implemented yet")
}

/// Runs `parley import`.
pub async fn import(_db: &DatabaseConnection, _args: &ImportArgs) -> anyhow::Result<()> {
    anyhow::bail!("import is not implemented yet")
}
