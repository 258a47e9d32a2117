//! `import`: bulk-load messages from JSON Lines in the `recordMessage` input shape.

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use sea_orm::DatabaseConnection;
use serde::Deserialize;

use crate::db;
use crate::error::{Error, Result};
use crate::record::{NewMessage, new_message, now, record_message, to_micros, validate};
use crate::settings::Settings;
use crate::statements;
use crate::types::{Channel, Direction, Kind};

/// One line of an import file: the `RecordMessageInput` shape of the GraphQL API.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImportLine {
    channel: String,
    kind: Option<String>,
    direction: String,
    from: String,
    to: Vec<String>,
    body: String,
    attachments: Option<Vec<String>>,
    provider_message_id: Option<String>,
    sent_at: Option<DateTime<Utc>>,
}

/// Parses one JSON line into a message to record; the error says what is wrong.
pub fn parse_line(line: &str) -> std::result::Result<NewMessage, String> {
    let l: ImportLine = serde_json::from_str(line).map_err(|e| format!("not a message: {e}"))?;
    let channel: Channel = l.channel.parse().map_err(|e| format!("channel: {e}"))?;
    let kind: Option<Kind> = l
        .kind
        .map(|k| k.parse())
        .transpose()
        .map_err(|e| format!("kind: {e}"))?;
    let direction: Direction = l.direction.parse().map_err(|e| format!("direction: {e}"))?;
    Ok(NewMessage {
        channel,
        kind,
        direction,
        from: l.from,
        to: l.to,
        body: l.body,
        attachments: l.attachments.unwrap_or_default(),
        provider_message_id: l.provider_message_id,
        sent_at: l.sent_at,
    })
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Lines read (blank lines are not counted).
    pub lines: u64,
    /// Messages stored.
    pub imported: u64,
    /// Lines whose provider id was already stored: nothing written.
    pub duplicates: u64,
    /// Of the imported, inbound messages stored unassigned (addresses did not normalize).
    pub unassigned: u64,
    /// Lines refused, with their 1-based line number and the reason.
    pub rejected: Vec<(u64, String)>,
}

/// Imports `(line number, text)` lines. Normal mode sends each message through
/// [`record_message`] (several at a time), exactly as the API would. `legacy` mode stores
/// them unassigned instead, as a pre-conversation version would have, for `backfill` to
/// attach; each batch is one multi-row insert. Both are idempotent by provider id (lines
/// without one are stored again on a rerun). A bad line never stops the import.
pub async fn import_messages(
    db: &DatabaseConnection,
    settings: &Settings,
    lines: impl IntoIterator<Item = (u64, String)>,
    legacy: bool,
    batch_size: usize,
    mut on_batch: impl FnMut(&ImportReport),
) -> Result<ImportReport> {
    let batch_size = batch_size.clamp(1, 2000);
    let mut report = ImportReport::default();
    let mut batch: Vec<(u64, NewMessage)> = Vec::with_capacity(batch_size);
    let mut lines = lines.into_iter().peekable();
    while lines.peek().is_some() {
        batch.clear();
        for (n, text) in lines.by_ref() {
            if text.trim().is_empty() {
                continue;
            }
            report.lines += 1;
            match parse_line(&text) {
                Ok(m) => batch.push((n, m)),
                Err(reason) => report.rejected.push((n, reason)),
            }
            if batch.len() == batch_size {
                break;
            }
        }
        if legacy {
            import_legacy(db, settings, &batch, &mut report).await?;
        } else {
            let results: Vec<_> = stream::iter(batch.drain(..))
                .map(|(n, m)| async move { (n, record_message(db, settings, m).await) })
                .buffered(8)
                .collect()
                .await;
            for (n, r) in results {
                match r {
                    Ok(r) if r.duplicate => report.duplicates += 1,
                    Ok(r) => {
                        report.imported += 1;
                        report.unassigned += u64::from(r.conversation.is_none());
                    }
                    Err(Error::InvalidInput { field, reason }) => {
                        report.rejected.push((n, format!("{field}: {reason}")))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        on_batch(&report);
    }
    report.rejected.sort();
    Ok(report)
}

async fn import_legacy(
    db: &DatabaseConnection,
    settings: &Settings,
    batch: &[(u64, NewMessage)],
    report: &mut ImportReport,
) -> Result<()> {
    let mut valid = Vec::with_capacity(batch.len());
    for (n, m) in batch {
        match validate(m, &settings.limits) {
            Ok(kind) => valid.push((kind, m)),
            Err(Error::InvalidInput { field, reason }) => {
                report.rejected.push((*n, format!("{field}: {reason}")))
            }
            Err(e) => return Err(e),
        }
    }
    if valid.is_empty() {
        return Ok(());
    }
    let at = now();
    let rows: Vec<_> = valid
        .iter()
        .map(|(kind, m)| new_message(m, *kind, m.sent_at.map(to_micros).unwrap_or(at), at))
        .collect();
    let txn = db::begin_write(db).await?;
    let inserted = statements::insert_messages(&*txn, &rows).await?;
    txn.commit().await?;
    report.imported += inserted;
    report.duplicates += valid.len() as u64 - inserted;
    Ok(())
}
