//! Operator subcommands: `backfill`, `verify`, `import`. Progress is a bar on a terminal
//! and plain log lines otherwise; summaries go to standard output.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use service::DatabaseConnection;

use crate::config::RecordArgs;

/// `parley backfill`.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// Messages per batch (each batch is one transaction), 1 to 5000.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=5000))]
    pub batch_size: usize,
    /// Report what would be done without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Record path settings (default region, snippet length).
    #[command(flatten)]
    pub record: RecordArgs,
}

/// `parley verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Fix the drift found (each batch in one transaction).
    #[arg(long)]
    pub repair: bool,
    /// Conversations per batch, 1 to 5000.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=5000))]
    pub batch_size: usize,
    /// Record path settings (snippet length decides the expected snippets).
    #[command(flatten)]
    pub record: RecordArgs,
}

/// `parley import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The JSON Lines file, one `RecordMessageInput` object a line (`-` for standard input).
    pub file: String,
    /// Store the messages unassigned, as rows written before conversations existed, for
    /// `parley backfill` to attach.
    #[arg(long)]
    pub legacy: bool,
    /// Lines per batch, 1 to 2000.
    #[arg(long, default_value_t = 500,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=2000))]
    pub batch_size: usize,
    /// Record path settings.
    #[command(flatten)]
    pub record: RecordArgs,
}

fn progress(total: u64, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(bar)
}

/// Runs `parley backfill`.
pub async fn backfill(db: &DatabaseConnection, args: &BackfillArgs) -> anyhow::Result<()> {
    let settings = args.record.settings(100);
    let pending = service::query::count_unassigned(db).await?;
    let bar = progress(pending, "messages");
    let started = std::time::Instant::now();
    let report = service::backfill::backfill_conversations(
        db,
        &settings,
        args.batch_size,
        args.dry_run,
        |r| match &bar {
            Some(bar) => bar.set_position(r.scanned),
            None => tracing::info!(
                batch = r.batches,
                scanned = r.scanned,
                attached = r.attached,
                "backfill progress"
            ),
        },
    )
    .await
    .context("backfill stopped; rerun it to resume where it stopped")?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !args.dry_run {
        // Legacy rows written around parley (not through the record path) have no
        // searchable text yet.
        crate::database::index_missing_texts(db).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let verb = if report.dry_run {
        "would attach"
    } else {
        "attached"
    };
    println!(
        "backfill{}: {verb} {} of {} unassigned messages to {} conversations ({} new); \
         {} still unassigned (addresses do not normalize); {} batches in {secs:.2} s ({:.0} messages/s)",
        if report.dry_run { " (dry run)" } else { "" },
        report.attached,
        report.pending_at_start,
        report.conversations_touched,
        report.conversations_created,
        report.still_unassigned,
        report.batches,
        report.scanned as f64 / secs.max(1e-9),
    );
    Ok(())
}

/// What `parley verify` found, which decides its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Every conversation matches its messages.
    Consistent,
    /// Drift was found and repaired (`--repair`).
    Repaired,
    /// Drift was found and left as it is.
    Drift,
}

impl VerifyOutcome {
    /// The process exit status: 1 for drift left unrepaired, 0 otherwise.
    pub fn exit_code(self) -> ExitCode {
        match self {
            VerifyOutcome::Consistent | VerifyOutcome::Repaired => ExitCode::SUCCESS,
            VerifyOutcome::Drift => ExitCode::from(1),
        }
    }
}

/// Runs `parley verify`; the outcome says whether drift was found, and left unrepaired.
pub async fn verify(db: &DatabaseConnection, args: &VerifyArgs) -> anyhow::Result<VerifyOutcome> {
    let settings = args.record.settings(100);
    let report =
        service::verify::verify_conversations(db, &settings, args.repair, args.batch_size, |r| {
            tracing::debug!(
                checked = r.conversations,
                drift = r.drifts.len(),
                "verify progress"
            )
        })
        .await?;
    for d in &report.drifts {
        println!(
            "drift: conversation {} {}: stored {:?}, messages say {:?}",
            d.conversation_id, d.field, d.stored, d.actual
        );
    }
    println!(
        "verify: {} conversations checked, {} drifted fields, {} conversations repaired, {} messages unassigned",
        report.conversations,
        report.drifts.len(),
        report.repaired,
        report.unassigned
    );
    for d in &report.count_drifts {
        println!(
            "drift: conversation counter {}: stored {}, rows say {}",
            d.scope, d.stored, d.actual
        );
    }
    if !report.count_drifts.is_empty() {
        println!(
            "verify: {} conversation counters drifted{}",
            report.count_drifts.len(),
            if report.counts_rebuilt {
                ", rebuilt"
            } else {
                ""
            }
        );
    }
    if report.search_key_drifts > 0 {
        println!(
            "verify: {} search text rows with keys that differ from their message's{}",
            report.search_key_drifts,
            if args.repair { ", copied again" } else { "" }
        );
    }
    if report.drifts.is_empty() && report.count_drifts.is_empty() && report.search_key_drifts == 0 {
        Ok(VerifyOutcome::Consistent)
    } else if args.repair {
        Ok(VerifyOutcome::Repaired)
    } else {
        println!("run `parley verify --repair` to fix the drift");
        Ok(VerifyOutcome::Drift)
    }
}

/// Runs `parley import`.
pub async fn import(db: &DatabaseConnection, args: &ImportArgs) -> anyhow::Result<()> {
    let settings = args.record.settings(100);
    let open = || -> anyhow::Result<Box<dyn BufRead>> {
        if args.file == "-" {
            return Ok(Box::new(std::io::stdin().lock()));
        }
        let file =
            std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file))?;
        Ok(Box::new(std::io::BufReader::new(file)))
    };
    // A first pass counts the lines for the progress bar (not possible on stdin).
    let total = if args.file == "-" {
        0
    } else {
        open()?.lines().count() as u64
    };
    let bar = progress(total, "lines");
    let mut read_error = None;
    let lines = open()?.lines().enumerate().map_while(|(i, l)| match l {
        Ok(l) => Some((i as u64 + 1, l)),
        Err(e) => {
            read_error = Some(e);
            None
        }
    });
    let report =
        service::import::import_messages(db, &settings, lines, args.legacy, args.batch_size, |r| {
            match &bar {
                Some(bar) => bar.set_position(r.lines),
                None => tracing::info!(lines = r.lines, imported = r.imported, "import progress"),
            }
        })
        .await
        .context("import stopped; rerun it: lines with a provider id are not stored twice")?;
    if let Some(e) = read_error {
        return Err(e)
            .with_context(|| format!("reading {} (the lines before were imported)", args.file));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for (line, reason) in &report.rejected {
        println!("rejected line {line}: {reason}");
    }
    println!(
        "import{}: {} lines, {} imported ({} unassigned), {} duplicates, {} rejected",
        if args.legacy {
            " (legacy, unassigned)"
        } else {
            ""
        },
        report.lines,
        report.imported,
        report.unassigned,
        report.duplicates,
        report.rejected.len()
    );
    Ok(())
}
