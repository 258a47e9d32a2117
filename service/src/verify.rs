//! `verify`: recompute every conversation's derived fields from its messages, report the
//! drift, and optionally repair it. Also home of [`refresh_conversations`], the one
//! recompute that backfill and repair share.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult};

use crate::error::Result;
use crate::settings::Settings;
use crate::snippet::{looks_like_html, snippet};
use crate::sql::Sql;
use crate::types::Channel;
use crate::{db, query};

/// One derived field of one conversation that does not match its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The conversation.
    pub conversation_id: i64,
    /// The column: `message_count`, `first_message_at`, `last_message_at`,
    /// `last_message_id` or `snippet`.
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
    actual_count: i64,
    actual_last_id: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct Bounds {
    id: i64,
    first_at: Option<DateTime<Utc>>,
    last_at: Option<DateTime<Utc>>,
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
    let backend = db::backend(db);
    let mut report = VerifyReport::default();
    let mut after = 0i64;
    loop {
        let mut sql = Sql::new(
            "SELECT c.id, c.channel, c.message_count, c.first_message_at, c.last_message_at, \
             c.last_message_id, c.snippet, \
             (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS actual_count, \
             (SELECT m.id FROM messages m WHERE m.conversation_id = c.id \
               ORDER BY m.sent_at DESC, m.id DESC LIMIT 1) AS actual_last_id \
             FROM conversations c WHERE c.id > ",
        );
        sql.bind(after)
            .push(&format!(" ORDER BY c.id LIMIT {batch_size}"));
        let rows = Observed::find_by_statement(sql.build(backend))
            .all(db)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let bounds = bounds(db, &ids).await?;
        let last_ids: Vec<i64> = rows.iter().filter_map(|r| r.actual_last_id).collect();
        let last_messages = query::messages_by_ids(db, &last_ids).await?;

        let mut drifted = Vec::new();
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
            let (first, last) = bounds.get(&r.id).copied().unwrap_or((None, None));
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
                .map(|m| {
                    let html = r.channel == Channel::Email && looks_like_html(&m.body);
                    snippet(&m.body, html, settings.snippet_length)
                })
                .unwrap_or_default();
            check("snippet", r.snippet.clone(), expected);
            if report.drifts.len() > before {
                drifted.push(r.id);
            }
        }
        report.conversations += rows.len() as u64;
        if repair && !drifted.is_empty() {
            let txn = db::begin_write(db).await?;
            refresh_conversations(&*txn, &drifted, settings).await?;
            txn.commit().await?;
            report.repaired += drifted.len() as u64;
        }
        on_batch(&report);
    }
    report.unassigned = query::count_unassigned(db).await?;
    Ok(report)
}

async fn bounds(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> Result<HashMap<i64, (Option<DateTime<Utc>>, Option<DateTime<Utc>>)>> {
    let mut sql = Sql::new(
        "SELECT conversation_id AS id, MIN(sent_at) AS first_at, MAX(sent_at) AS last_at \
         FROM messages WHERE conversation_id IN (",
    );
    sql.bind_list(ids.iter().copied())
        .push(") GROUP BY conversation_id");
    let rows = Bounds::find_by_statement(sql.build(db::backend(db)))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|b| (b.id, (b.first_at, b.last_at)))
        .collect())
}

/// Recomputes the derived fields of `ids` (count, first/last activity, last message,
/// snippet) from their message rows. Call it inside a write transaction: on PostgreSQL it
/// first locks the rows in id order, so no live `record_message` can add a message between
/// the recount and the commit (they lock the conversation row first too), and the recount
/// runs on a snapshot taken after the lock.
pub async fn refresh_conversations(
    txn: &impl ConnectionTrait,
    ids: &[i64],
    settings: &Settings,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let backend = db::backend(txn);
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if backend == DbBackend::Postgres {
        let mut lock = Sql::new("SELECT id FROM conversations WHERE id IN (");
        lock.bind_list(sorted.iter().copied())
            .push(") ORDER BY id FOR UPDATE");
        txn.query_all_raw(lock.build(backend)).await?;
    }
    let of = "FROM messages m WHERE m.conversation_id = conversations.id";
    let mut sql = Sql::new(&format!(
        "UPDATE conversations SET message_count = (SELECT COUNT(*) {of}), \
         first_message_at = COALESCE((SELECT MIN(m.sent_at) {of}), first_message_at), \
         last_message_at = COALESCE((SELECT MAX(m.sent_at) {of}), last_message_at), \
         last_message_id = (SELECT m.id {of} ORDER BY m.sent_at DESC, m.id DESC LIMIT 1), \
         updated_at = "
    ));
    sql.bind(crate::record::now())
        .push(" WHERE id IN (")
        .bind_list(sorted.iter().copied())
        .push(")");
    txn.execute_raw(sql.build(backend)).await?;

    #[derive(FromQueryResult)]
    struct Last {
        id: i64,
        channel: Channel,
        body: Option<String>,
    }
    let mut sql = Sql::new(
        "SELECT c.id, c.channel, m.body FROM conversations c \
         LEFT JOIN messages m ON m.id = c.last_message_id WHERE c.id IN (",
    );
    sql.bind_list(sorted.iter().copied()).push(")");
    let lasts = Last::find_by_statement(sql.build(backend)).all(txn).await?;
    let mut update = Sql::new("UPDATE conversations SET snippet = v.column2 FROM (VALUES ");
    update.push_rows(&lasts, |sql, l| {
        let body = l.body.as_deref().unwrap_or_default();
        let html = l.channel == Channel::Email && looks_like_html(body);
        sql.bind(l.id)
            .push(", ")
            .bind(snippet(body, html, settings.snippet_length));
    });
    update.push(") AS v WHERE conversations.id = v.column1");
    if !lasts.is_empty() {
        txn.execute_raw(update.build(backend)).await?;
    }
    Ok(())
}
