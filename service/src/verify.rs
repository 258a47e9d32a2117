//! `verify`: recompute every conversation's derived fields from its messages, report the
//! drift, and optionally repair it; the same for the conversation counters. Also home of [`refresh_conversations`], the one
//! recompute that backfill and repair share.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult,
    JoinType, QueryFilter, QueryOrder, QuerySelect,
};

use crate::counts::{self, CountDrift};
use crate::error::Result;
use crate::settings::Settings;
use crate::snippet::message_snippet;
use crate::statements;
use crate::types::Channel;
use crate::{conversation, db, message, query};

/// One derived field of one conversation that does not match its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The conversation.
    pub conversation_id: i64,
    /// The column: `message_count`, `first_message_at`, `last_message_at`,
    /// `last_message_id`, `snippet`, `last_sequence`, or `sequence` (the messages'
    /// numbers are not exactly 1..n); of an inbox's state, `read_up_to` (beyond the last
    /// sequence) or `sent_after` (not the count of its own messages after the horizon).
    pub field: &'static str,
    /// What the row says.
    pub stored: String,
    /// What its messages say.
    pub actual: String,
}

/// What `verify` found (and fixed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Conversations checked.
    pub conversations: u64,
    /// Every drift found.
    pub drifts: Vec<Drift>,
    /// Conversations repaired (0 unless repairing).
    pub repaired: u64,
    /// Messages attached to no conversation.
    pub unassigned: u64,
    /// Conversation counters (`totalCount`'s source) that differ from the rows.
    pub count_drifts: Vec<CountDrift>,
    /// The counters were rebuilt (only when repairing and they drifted).
    pub counts_rebuilt: bool,
    /// Search text rows whose copies of their message's keys (conversation, channel,
    /// direction, `sent_at`) differ from it; repaired (copied again) when repairing.
    pub search_key_drifts: u64,
}

#[derive(Debug, FromQueryResult)]
struct Observed {
    id: i64,
    channel: Channel,
    message_count: i64,
    first_message_at: DateTime<Utc>,
    last_message_at: DateTime<Utc>,
    last_message_id: Option<i64>,
    snippet: String,
    last_sequence: i64,
    actual_count: i64,
    actual_last_id: Option<i64>,
}

#[derive(Debug, Clone, Copy, FromQueryResult)]
struct Bounds {
    id: i64,
    first_at: Option<DateTime<Utc>>,
    last_at: Option<DateTime<Utc>>,
    /// Messages that have a sequence number, and the lowest and highest number.
    numbered: i64,
    min_sequence: Option<i64>,
    max_sequence: Option<i64>,
}

impl Bounds {
    /// How the messages are numbered: `1..n` when exactly so (the numbers are unique per
    /// conversation, so n numbers from 1 to n are each of 1..n once).
    fn numbering(&self) -> String {
        match (self.min_sequence, self.max_sequence) {
            (Some(1), Some(max)) if max == self.numbered => format!("1..{max}"),
            (Some(min), Some(max)) => format!("{} numbered within {min}..{max}", self.numbered),
            _ => "none numbered".to_owned(),
        }
    }
}

/// Checks every conversation, `batch_size` at a time; with `repair`, fixes each batch's
/// drifted conversations in one transaction.
pub async fn verify_conversations(
    db: &DatabaseConnection,
    settings: &Settings,
    repair: bool,
    batch_size: usize,
    mut on_batch: impl FnMut(&VerifyReport),
) -> Result<VerifyReport> {
    let batch_size = batch_size.clamp(1, 5000);
    let mut report = VerifyReport::default();
    let mut after = 0i64;
    loop {
        use conversation::Column;
        let observed = conversation::Entity::find()
            .column_as(
                Expr::from(statements::messages_aggregate(Func::count, None)),
                "actual_count",
            )
            .column_as(
                Expr::from(statements::latest_message_id()),
                "actual_last_id",
            );
        let rows = statements::batch_after(observed, Column::Id, after, batch_size)
            .into_model::<Observed>()
            .all(db)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let bounds = bounds(db, &ids).await?;
        let last_ids: Vec<i64> = rows.iter().filter_map(|r| r.actual_last_id).collect();
        let last_messages = query::messages_by_ids(db, &crate::Viewer::Everyone, &last_ids).await?;

        let mut drifted = Vec::new();
        let mut misnumbered = Vec::new();
        for r in &rows {
            let before = report.drifts.len();
            let mut check = |field: &'static str, stored: String, actual: String| {
                if stored != actual {
                    report.drifts.push(Drift {
                        conversation_id: r.id,
                        field,
                        stored,
                        actual,
                    });
                }
            };
            check(
                "message_count",
                r.message_count.to_string(),
                r.actual_count.to_string(),
            );
            let b = bounds.get(&r.id).copied();
            let (first, last) = b.map_or((None, None), |b| (b.first_at, b.last_at));
            check(
                "first_message_at",
                r.first_message_at.to_rfc3339(),
                first.map_or("(no messages)".into(), |t| t.to_rfc3339()),
            );
            check(
                "last_message_at",
                r.last_message_at.to_rfc3339(),
                last.map_or("(no messages)".into(), |t| t.to_rfc3339()),
            );
            check(
                "last_message_id",
                format!("{:?}", r.last_message_id),
                format!("{:?}", r.actual_last_id),
            );
            let expected = r
                .actual_last_id
                .and_then(|id| last_messages.get(&id))
                .map(|m| message_snippet(r.channel, &m.body, settings.snippet_length))
                .unwrap_or_default();
            check("snippet", r.snippet.clone(), expected);
            let numbering = b.map_or("none numbered".to_owned(), |b| b.numbering());
            let expected = if r.actual_count == 0 {
                "none numbered".to_owned()
            } else {
                format!("1..{}", r.actual_count)
            };
            if numbering != expected {
                misnumbered.push(r.id);
            }
            check("sequence", numbering, expected);
            check(
                "last_sequence",
                r.last_sequence.to_string(),
                r.actual_count.to_string(),
            );
            if report.drifts.len() > before {
                drifted.push(r.id);
            }
        }
        // The messaging state (horizons within the sequence, `sent_after` exact) of the
        // conversations whose own fields are right: a drifted one's state is judged after
        // its repair, which recounts it (`refresh_conversations`).
        let last_sequences: HashMap<i64, i64> = rows
            .iter()
            .filter(|r| !drifted.contains(&r.id))
            .map(|r| (r.id, r.actual_count))
            .collect();
        for d in crate::state::verify_states(db, &last_sequences).await? {
            if !drifted.contains(&d.conversation_id) {
                drifted.push(d.conversation_id);
            }
            report.drifts.push(d);
        }
        report.conversations += rows.len() as u64;
        if repair && !drifted.is_empty() {
            let txn = db::begin_write(db).await?;
            lock_conversations(&*txn, &drifted).await?;
            statements::renumber_messages(&*txn, &misnumbered).await?;
            refresh_conversations(&*txn, &drifted, settings).await?;
            txn.commit().await?;
            report.repaired += drifted.len() as u64;
        }
        on_batch(&report);
    }
    report.unassigned = query::count_unassigned(db).await?;
    report.count_drifts = counts::count_drifts(db).await?;
    if repair && !report.count_drifts.is_empty() {
        let txn = db::begin_write(db).await?;
        counts::rebuild_counts(&*txn).await?;
        txn.commit().await?;
        report.counts_rebuilt = true;
    }
    report.search_key_drifts = crate::search::search_key_drifts(db).await?;
    if repair && report.search_key_drifts > 0 {
        let txn = db::begin_write(db).await?;
        crate::search::repair_search_keys(&*txn).await?;
        txn.commit().await?;
    }
    Ok(report)
}

async fn bounds(db: &impl ConnectionTrait, ids: &[i64]) -> Result<HashMap<i64, Bounds>> {
    use message::Column;
    let rows = message::Entity::find()
        .select_only()
        .column_as(Column::ConversationId, "id")
        .column_as(Column::SentAt.min(), "first_at")
        .column_as(Column::SentAt.max(), "last_at")
        .column_as(Column::Sequence.count(), "numbered")
        .column_as(Column::Sequence.min(), "min_sequence")
        .column_as(Column::Sequence.max(), "max_sequence")
        .filter(Column::ConversationId.is_in(ids.iter().copied()))
        .group_by(Column::ConversationId)
        .into_model::<Bounds>()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|b| (b.id, b)).collect())
}

/// PostgreSQL: locks the conversation rows `ids` in id order until the transaction ends, so
/// no live `record_message` adds a message to them meanwhile (it locks its conversation
/// row first too). SQLite's write transaction already excludes every other writer.
async fn lock_conversations(txn: &impl ConnectionTrait, ids: &[i64]) -> Result<()> {
    if ids.is_empty() || db::backend(txn) != DbBackend::Postgres {
        return Ok(());
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    conversation::Entity::find()
        .select_only()
        .column(conversation::Column::Id)
        .filter(conversation::Column::Id.is_in(sorted))
        .order_by_asc(conversation::Column::Id)
        .lock_exclusive()
        .into_tuple::<i64>()
        .all(txn)
        .await?;
    Ok(())
}

/// Recomputes the derived fields of `ids` (count, first/last activity, last message,
/// snippet, last sequence, and the inboxes' `sent_after`) from their message rows, after
/// numbering their messages that have no sequence yet (just attached by backfill). Call it inside a write transaction: on
/// PostgreSQL it first locks the rows in id order, so no live `record_message` can add a
/// message between the recount and the commit (they lock the conversation row first too),
/// and the recount runs on a snapshot taken after the lock.
pub async fn refresh_conversations(
    txn: &impl ConnectionTrait,
    ids: &[i64],
    settings: &Settings,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    lock_conversations(txn, &sorted).await?;
    statements::number_new_messages(txn, &sorted).await?;
    statements::recompute_conversations(txn, &sorted, crate::record::now()).await?;
    // Horizons within the (re)computed sequence, and each inbox's own messages after its
    // horizon recounted: backfill may have attached some.
    crate::state::repair_states(txn, &sorted).await?;

    #[derive(FromQueryResult)]
    struct Last {
        id: i64,
        channel: Channel,
        body: Option<String>,
    }
    let lasts = conversation::Entity::find()
        .select_only()
        .column(conversation::Column::Id)
        .column(conversation::Column::Channel)
        .column_as(Expr::col((message::Entity, message::Column::Body)), "body")
        .join(
            JoinType::LeftJoin,
            conversation::Entity::belongs_to(message::Entity)
                .from(conversation::Column::LastMessageId)
                .to(message::Column::Id)
                .into(),
        )
        .filter(conversation::Column::Id.is_in(sorted.iter().copied()))
        .into_model::<Last>()
        .all(txn)
        .await?;
    let snippets: Vec<(i64, String)> = lasts
        .iter()
        .map(|l| {
            let body = l.body.as_deref().unwrap_or_default();
            (
                l.id,
                message_snippet(l.channel, body, settings.snippet_length),
            )
        })
        .collect();
    statements::set_snippets(txn, &snippets).await
}
