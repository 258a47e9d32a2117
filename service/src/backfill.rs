//! `backfill`: attach messages that have no conversation (legacy rows written before
//! conversations existed, and unassigned inbound messages whose addresses now normalize)
//! to their conversations, in batches, each batch one transaction.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, JsonValue,
    QueryFilter, QuerySelect,
};

use crate::error::Result;
use crate::normalize::{self, Participants};
use crate::record::now;
use crate::settings::Settings;
use crate::statements::{self, json_strings};
use crate::types::Channel;
use crate::verify::refresh_conversations;
use crate::{conversation, db, message, query};

/// What a backfill run did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Unassigned messages when the run started.
    pub pending_at_start: u64,
    /// Unassigned messages looked at.
    pub scanned: u64,
    /// Messages attached to a conversation (dry run: that would be).
    pub attached: u64,
    /// Messages whose addresses still do not normalize; they stay unassigned with the
    /// reason in `assignment_error`.
    pub still_unassigned: u64,
    /// Conversations created (dry run: that would be).
    pub conversations_created: u64,
    /// Conversations whose counts and activity were recomputed (dry run: that would be).
    pub conversations_touched: u64,
    /// Batches (transactions) run.
    pub batches: u64,
}

#[derive(Debug, FromQueryResult)]
struct Pending {
    id: i64,
    channel: Channel,
    from_raw: String,
    to_raw: JsonValue,
    sent_at: DateTime<Utc>,
}

/// Attaches every unassigned message whose addresses normalize, `batch_size` messages per
/// transaction, calling `on_batch` after each. Idempotent (a second run attaches nothing
/// and changes no conversation) and resumable (each batch commits whole, and conversations
/// are recomputed from their rows, so a run killed anywhere and rerun ends where one clean
/// run would). Safe beside live traffic: conversation rows are locked in key order, and a
/// live write locks only one.
pub async fn backfill_conversations(
    db: &DatabaseConnection,
    settings: &Settings,
    batch_size: usize,
    dry_run: bool,
    mut on_batch: impl FnMut(&BackfillReport),
) -> Result<BackfillReport> {
    let batch_size = batch_size.clamp(1, 5000);
    let mut report = BackfillReport {
        dry_run,
        pending_at_start: query::count_unassigned(db).await?,
        ..Default::default()
    };
    let mut seen_new_keys: HashSet<(Channel, String)> = HashSet::new();
    // Distinct across batches: one conversation's messages can span several batches.
    let mut touched_keys: HashSet<(Channel, String)> = HashSet::new();
    let mut touched_ids: HashSet<i64> = HashSet::new();
    let mut after = 0i64;
    loop {
        use message::Column;
        let pending = message::Entity::find()
            .select_only()
            .columns([
                Column::Id,
                Column::Channel,
                Column::FromRaw,
                Column::ToRaw,
                Column::SentAt,
            ])
            .filter(Column::ConversationId.is_null());
        let rows = statements::batch_after(pending, Column::Id, after, batch_size)
            .into_model::<Pending>()
            .all(db)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        report.scanned += rows.len() as u64;

        // Normalize in memory (pure), grouped by conversation key in key order.
        let mut groups: BTreeMap<(Channel, String), Group> = BTreeMap::new();
        let mut failures: Vec<(i64, String)> = Vec::new();
        for row in &rows {
            match assign(row, settings) {
                Ok((channel, p)) => {
                    let key = normalize::participants_key(&p.sorted);
                    let g = groups.entry((channel, key)).or_insert_with(|| Group {
                        sorted: p.sorted.clone(),
                        first: row.sent_at,
                        last: row.sent_at,
                        members: Vec::new(),
                    });
                    g.first = g.first.min(row.sent_at);
                    g.last = g.last.max(row.sent_at);
                    g.members.push((row.id, p));
                }
                Err(reason) => failures.push((row.id, reason)),
            }
        }
        report.still_unassigned += failures.len() as u64;
        let attached: u64 = groups.values().map(|g| g.members.len() as u64).sum();

        if dry_run {
            let existing = existing_keys(db, &groups).await?;
            for key in groups.keys() {
                if !existing.contains(key) && seen_new_keys.insert(key.clone()) {
                    report.conversations_created += 1;
                }
            }
            report.attached += attached;
            touched_keys.extend(groups.keys().cloned());
            report.conversations_touched = touched_keys.len() as u64;
        } else {
            // One transaction per batch: the upsert locks each conversation row (in key
            // order), the messages are attached, and the counts are recomputed from rows.
            let txn = db::begin_write(db).await?;
            let (ids, created) = upsert_groups(&*txn, &groups).await?;
            attach(&*txn, &groups, &ids).await?;
            statements::record_assignment_errors(&*txn, &failures).await?;
            refresh_conversations(&*txn, &ids, settings).await?;
            txn.commit().await?;
            report.attached += attached;
            report.conversations_created += created;
            touched_ids.extend(&ids);
            report.conversations_touched = touched_ids.len() as u64;
        }
        report.batches += 1;
        on_batch(&report);
    }
    Ok(report)
}

struct Group {
    sorted: Vec<String>,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    members: Vec<(i64, Participants)>,
}

fn assign(
    row: &Pending,
    settings: &Settings,
) -> std::result::Result<(Channel, Participants), String> {
    let channel = row.channel;
    let to: Vec<String> = match &row.to_raw {
        JsonValue::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or("to: not a list of strings")
            })
            .collect::<std::result::Result<_, _>>()?,
        JsonValue::String(s) => vec![s.clone()],
        _ => return Err("to: not a list of strings".into()),
    };
    if to.is_empty() {
        return Err("to: no recipients".into());
    }
    normalize::participants(channel, &row.from_raw, &to, settings.default_region)
        .map(|p| (channel, p))
        .map_err(|e| e.to_string())
}

async fn existing_keys(
    db: &impl ConnectionTrait,
    groups: &BTreeMap<(Channel, String), Group>,
) -> Result<HashSet<(Channel, String)>> {
    if groups.is_empty() {
        return Ok(HashSet::new());
    }
    use conversation::Column;
    use sea_orm::sea_query::ExprTrait;
    let keys = groups
        .keys()
        .map(|(channel, key)| (channel.as_str().to_owned(), key.clone()));
    let rows: Vec<(Channel, String)> = conversation::Entity::find()
        .select_only()
        .columns([Column::Channel, Column::ParticipantsKey])
        .filter(
            Expr::tuple([
                Expr::col(Column::Channel),
                Expr::col(Column::ParticipantsKey),
            ])
            .in_tuples(keys),
        )
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Upserts one conversation per group (in key order) and its participant index rows.
/// Returns the conversation ids in group order and how many were created.
async fn upsert_groups(
    txn: &impl ConnectionTrait,
    groups: &BTreeMap<(Channel, String), Group>,
) -> Result<(Vec<i64>, u64)> {
    if groups.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let at = now();
    let rows: Vec<_> = groups
        .iter()
        .map(|((channel, key), g)| {
            statements::new_conversation(*channel, key, &g.sorted, g.first, g.last, at)
        })
        .collect();
    let upserted = statements::upsert_conversations(txn, &rows).await?;
    let created = upserted.iter().filter(|r| r.message_count == 0).count() as u64;
    let by_key: HashMap<(Channel, String), i64> = upserted
        .into_iter()
        .map(|r| ((r.channel, r.participants_key), r.id))
        .collect();
    let ids: Vec<i64> = groups
        .keys()
        .filter_map(|(c, k)| by_key.get(&(*c, k.clone())).copied())
        .collect();

    let rows = groups
        .values()
        .zip(&ids)
        .flat_map(|(g, id)| g.sorted.iter().map(move |address| (*id, address.as_str())));
    statements::insert_participants(txn, rows).await?;
    Ok((ids, created))
}

/// Attaches each group's messages to its conversation.
async fn attach(
    txn: &impl ConnectionTrait,
    groups: &BTreeMap<(Channel, String), Group>,
    ids: &[i64],
) -> Result<()> {
    let rows: Vec<_> = groups
        .values()
        .zip(ids)
        .flat_map(|(g, cid)| {
            g.members
                .iter()
                .map(move |(mid, p)| (*mid, *cid, p.from.as_str(), json_strings(&p.to)))
        })
        .collect();
    statements::attach_messages(txn, &rows).await
}
