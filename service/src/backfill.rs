//! `backfill`: attach messages that have no conversation (legacy rows written before
//! conversations existed, and unassigned inbound messages whose addresses now normalize)
//! to their conversations, in batches, each batch one transaction.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, JsonValue};

use crate::error::Result;
use crate::normalize::{self, Participants};
use crate::record::{json_strings, now};
use crate::settings::Settings;
use crate::sql::Sql;
use crate::types::Channel;
use crate::verify::refresh_conversations;
use crate::{db, query};

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
    let backend = db::backend(db);
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
        let mut sql = Sql::new(
            "SELECT id, channel, from_raw, to_raw, sent_at FROM messages \
             WHERE conversation_id IS NULL AND id > ",
        );
        sql.bind(after)
            .push(&format!(" ORDER BY id LIMIT {batch_size}"));
        let rows = Pending::find_by_statement(sql.build(backend))
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
            record_failures(&*txn, &failures).await?;
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
    #[derive(FromQueryResult)]
    struct Key {
        channel: Channel,
        participants_key: String,
    }
    let mut sql = Sql::new(
        "SELECT channel, participants_key FROM conversations WHERE (channel, participants_key) IN (VALUES ",
    );
    sql.push_rows(groups.keys(), |sql, (channel, key)| {
        sql.bind(channel.as_str()).push(", ").bind(key.as_str());
    })
    .push(")");
    let rows = Key::find_by_statement(sql.build(db::backend(db)))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|k| (k.channel, k.participants_key))
        .collect())
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
    let backend = db::backend(txn);
    let at = now();
    let mut sql = Sql::new(
        "INSERT INTO conversations (channel, participants_key, participants, message_count, \
         first_message_at, last_message_at, last_message_id, snippet, created_at, updated_at) VALUES ",
    );
    sql.push_rows(groups, |sql, ((channel, key), g)| {
        sql.bind(channel.as_str())
            .push(", ")
            .bind(key.as_str())
            .push(", ")
            .bind(json_strings(&g.sorted))
            .push(", 0, ")
            .bind(g.first)
            .push(", ")
            .bind(g.last)
            .push(", NULL, '', ")
            .bind(at)
            .push(", ")
            .bind(at);
    });
    sql.push(
        " ON CONFLICT (channel, participants_key) DO UPDATE SET updated_at = excluded.updated_at \
         RETURNING id, channel, participants_key, message_count",
    );
    #[derive(FromQueryResult)]
    struct Upserted {
        id: i64,
        channel: Channel,
        participants_key: String,
        message_count: i64,
    }
    let rows = Upserted::find_by_statement(sql.build(backend))
        .all(txn)
        .await?;
    let created = rows.iter().filter(|r| r.message_count == 0).count() as u64;
    let by_key: std::collections::HashMap<(Channel, String), i64> = rows
        .into_iter()
        .map(|r| ((r.channel, r.participants_key), r.id))
        .collect();
    let ids: Vec<i64> = groups
        .keys()
        .filter_map(|(c, k)| by_key.get(&(*c, k.clone())).copied())
        .collect();

    let mut index =
        Sql::new("INSERT INTO conversation_participants (address, conversation_id) VALUES ");
    let rows = groups
        .values()
        .zip(&ids)
        .flat_map(|(g, id)| g.sorted.iter().map(move |address| (address, *id)));
    index
        .push_rows(rows, |sql, (address, id)| {
            sql.bind(address.as_str()).push(", ").bind(id);
        })
        .push(" ON CONFLICT DO NOTHING");
    txn.execute_raw(index.build(backend)).await?;
    Ok((ids, created))
}

/// Attaches each group's messages to its conversation, in one statement.
async fn attach(
    txn: &impl ConnectionTrait,
    groups: &BTreeMap<(Channel, String), Group>,
    ids: &[i64],
) -> Result<()> {
    if groups.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(
        "UPDATE messages SET conversation_id = v.column2, from_address = v.column3, \
         to_addresses = v.column4, assignment_error = NULL FROM (VALUES ",
    );
    let rows = groups
        .values()
        .zip(ids)
        .flat_map(|(g, cid)| g.members.iter().map(move |(mid, p)| (*mid, *cid, p)));
    sql.push_rows(rows, |sql, (mid, cid, p)| {
        sql.bind(mid)
            .push(", ")
            .bind(cid)
            .push(", ")
            .bind(p.from.as_str())
            .push(", ")
            .bind(json_strings(&p.to));
    });
    // Only still-unassigned rows: a concurrent backfill may have attached some already.
    sql.push(") AS v WHERE messages.id = v.column1 AND messages.conversation_id IS NULL");
    txn.execute_raw(sql.build(db::backend(txn))).await?;
    Ok(())
}

/// Records why each message stays unassigned (only where the reason changed, so a second
/// run writes nothing).
async fn record_failures(txn: &impl ConnectionTrait, failures: &[(i64, String)]) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new("UPDATE messages SET assignment_error = v.column2 FROM (VALUES ");
    sql.push_rows(failures, |sql, (id, reason)| {
        sql.bind(*id).push(", ").bind(reason.as_str());
    });
    sql.push(
        ") AS v WHERE messages.id = v.column1 AND messages.conversation_id IS NULL \
         AND (messages.assignment_error IS NULL OR messages.assignment_error <> v.column2)",
    );
    txn.execute_raw(sql.build(db::backend(txn))).await?;
    Ok(())
}
