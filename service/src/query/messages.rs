//! Message reads: by id, by ids, thread and unassigned pages (oldest first), the batched
//! thread page of several conversations, and counts.

use std::collections::HashMap;

use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, Query, SelectStatement, UnionType};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select,
};

use super::{
    Count, ListOrder, MAX_ARMS_PER_STATEMENT, MAX_IDS_PER_STATEMENT, Page, Reader, Window,
    count_probe, keyset_page, run,
};
use crate::access::Viewer;
use crate::error::{Error, Result};
use crate::message;
use crate::types::{Direction, Kind};

use message::Column;

/// Which messages of a thread are listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MessageFilter {
    /// Only this direction.
    pub direction: Option<Direction>,
    /// Only this kind.
    pub kind: Option<Kind>,
}

impl MessageFilter {
    /// Whether the filter lets every message through.
    pub fn is_empty(&self) -> bool {
        self.direction.is_none() && self.kind.is_none()
    }

    /// The predicate of this filter (always true when it is empty).
    fn condition(&self) -> Condition {
        let mut cond = Condition::all();
        if let Some(d) = self.direction {
            cond = cond.add(Column::Direction.eq(d));
        }
        if let Some(k) = self.kind {
            cond = cond.add(Column::Kind.eq(k));
        }
        cond
    }
}

/// Whose messages a message list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageScope {
    /// One conversation's thread.
    Conversation(i64),
    /// Messages not attached to any conversation.
    Unassigned,
}

impl MessageScope {
    fn condition(self) -> Expr {
        match self {
            MessageScope::Conversation(id) => Column::ConversationId.eq(id),
            MessageScope::Unassigned => Column::ConversationId.is_null(),
        }
    }
}

/// A message by id; `None` when there is none or `viewer` may not see it (the same answer,
/// so an id's existence does not leak).
pub async fn find_message(
    db: &impl Reader,
    viewer: &Viewer,
    id: i64,
) -> Result<Option<message::Model>> {
    Ok(run::one(
        db,
        visible(message::Entity::find_by_id(id), viewer).into_query(),
    )
    .await?)
}

/// `select` restricted to the messages `viewer` sees (those of the conversations it sees).
fn visible(select: Select<message::Entity>, viewer: &Viewer) -> Select<message::Entity> {
    match viewer.visible(Column::ConversationId) {
        Some(rule) => select.filter(rule),
        None => select,
    }
}

/// Messages by ids (for batching loaders); missing ids, and those `viewer` may not see, are
/// absent. One statement per [`MAX_IDS_PER_STATEMENT`] ids.
pub async fn messages_by_ids(
    db: &impl Reader,
    viewer: &Viewer,
    ids: &[i64],
) -> Result<HashMap<i64, message::Model>> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_IDS_PER_STATEMENT) {
        let rows = visible(message::Entity::find(), viewer)
            .filter(Column::Id.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        found.extend(rows.into_iter().map(|m| (m.id, m)));
    }
    Ok(found)
}

/// The statement of [`messages_after_sequence`]: one range scan of the
/// `messages_conversation_id_sequence` index.
pub fn messages_after_sequence_page(
    viewer: &Viewer,
    conversation_id: i64,
    after: i64,
    limit: u64,
) -> Select<message::Entity> {
    visible(message::Entity::find(), viewer)
        .filter(Column::ConversationId.eq(conversation_id))
        .filter(Column::Sequence.gt(after))
        .order_by_asc(Column::Sequence)
        .limit(limit)
}

/// Up to `limit` messages of conversation `conversation_id` numbered after `after` (its
/// `sequence`), in sequence order, restricted to what `viewer` sees: what a live
/// subscriber resuming after `after` missed.
pub async fn messages_after_sequence(
    db: &impl Reader,
    viewer: &Viewer,
    conversation_id: i64,
    after: i64,
    limit: u64,
) -> Result<Vec<message::Model>> {
    let select = messages_after_sequence_page(viewer, conversation_id, after, limit);
    Ok(run::all(db, select.into_query()).await?)
}

/// The statement of a page of messages in `scope`: `filter`, the window's cursor bounds as
/// row-value comparisons on `(sent_at, id)`, ordered along the
/// `messages_conversation_id_sent_at_id` index and limited to one row past the page (the
/// has-more probe), restricted to what `viewer` sees. [`list_messages`] runs exactly this,
/// and [`message_batch_pages`] one per conversation (with [`Viewer::Everyone`]: it is given
/// conversations already found visible).
pub fn message_page(
    viewer: &Viewer,
    scope: MessageScope,
    filter: &MessageFilter,
    window: &Window,
) -> Select<message::Entity> {
    let mut select = visible(find_messages(), viewer).filter(scope.condition());
    if !filter.is_empty() {
        select = select.filter(filter.condition());
    }
    if scope == MessageScope::Unassigned {
        // PostgreSQL does not take `conversation_id IS NULL` as pinning the index's leading
        // column, so it would sort the unassigned rows by (sent_at, id); ordering by the
        // index's whole key (a constant first column here) lets the index scan deliver it.
        select = select.order_by(
            Column::ConversationId,
            ListOrder::Ascending.sql_order(window),
        );
    }
    keyset_page(
        select,
        (Column::SentAt, Column::Id),
        ListOrder::Ascending,
        window,
    )
}

/// `message::Entity::find()`, built once and cloned (SeaORM builds it column by column),
/// its column list held as one piece of text ([`run::columns_prebuilt`]).
fn find_messages() -> Select<message::Entity> {
    static SELECT: std::sync::LazyLock<Select<message::Entity>> =
        std::sync::LazyLock::new(|| run::columns_prebuilt(message::Entity::find()));
    SELECT.clone()
}

/// A page of the messages `viewer` sees, oldest first (ties: lower id first). Unassigned
/// messages belong to no conversation, so only a viewer who sees everything may list them
/// (`FORBIDDEN` naming `unassignedMessages` otherwise).
pub async fn list_messages(
    db: &impl Reader,
    viewer: &Viewer,
    scope: MessageScope,
    filter: &MessageFilter,
    window: &Window,
) -> Result<Page<message::Model>> {
    if scope == MessageScope::Unassigned {
        viewer.require_everyone("unassignedMessages")?;
    }
    let rows = run::all(db, message_page(viewer, scope, filter, window).into_query()).await?;
    Ok(Page::from_probe(rows, window))
}

/// The statements of the same page of several conversations' threads: each a `UNION ALL`
/// of one [`message_page`] per conversation (one index range scan each; portable, where
/// PostgreSQL's LATERAL is not in SQLite), at most [`MAX_ARMS_PER_STATEMENT`] arms each, so
/// one statement unless there are more conversations than that. [`list_messages_batch`]
/// runs exactly these.
pub fn message_batch_pages(
    conversation_ids: &[i64],
    filter: &MessageFilter,
    window: &Window,
) -> Vec<SelectStatement> {
    conversation_ids
        .chunks(MAX_ARMS_PER_STATEMENT)
        .filter_map(|chunk| {
            // Each arm keeps its own ORDER BY and LIMIT inside a derived table.
            let mut arms = chunk.iter().enumerate().map(|(i, id)| {
                let page = message_page(
                    &Viewer::Everyone,
                    MessageScope::Conversation(*id),
                    filter,
                    window,
                );
                Query::select()
                    .column(Asterisk)
                    .from_subquery(page.into_query(), Alias::new(format!("page{i}")))
                    .to_owned()
            });
            let mut statement = arms.next()?;
            statement.unions(arms.map(|arm| (UnionType::All, arm)));
            Some(statement)
        })
        .collect()
}

/// The same page of several conversations' threads, in one statement per
/// [`MAX_ARMS_PER_STATEMENT`] conversations (see [`message_batch_pages`]). The ids must be
/// of conversations the caller already found visible (a page, a lookup).
pub async fn list_messages_batch(
    db: &impl Reader,
    conversation_ids: &[i64],
    filter: &MessageFilter,
    window: &Window,
) -> Result<HashMap<i64, Page<message::Model>>> {
    let mut grouped: HashMap<i64, Vec<message::Model>> = conversation_ids
        .iter()
        .map(|id| (*id, Vec::new()))
        .collect();
    for statement in message_batch_pages(conversation_ids, filter, window) {
        let rows: Vec<message::Model> = run::all(db, statement).await?;
        for row in rows {
            if let Some(id) = row.conversation_id {
                grouped.entry(id).or_default().push(row);
            }
        }
    }
    // UNION ALL does not promise to keep each branch's order.
    Ok(grouped
        .into_iter()
        .map(|(id, rows)| (id, thread_page(rows, window)))
        .collect())
}

/// The page of `window` made of one thread's `rows` (its page statement's rows, in any
/// order): put back in the statement's order (along `(sent_at, id)`, backwards for a
/// backward window), then cut at the page's size ([`Page::from_probe`]).
pub(crate) fn thread_page(mut rows: Vec<message::Model>, window: &Window) -> Page<message::Model> {
    rows.sort_by_key(|m| (m.sent_at, m.id));
    if !window.forward {
        rows.reverse();
    }
    Page::from_probe(rows, window)
}

/// How many messages of each conversation match `filter`, each counted up to `limit`
/// ([`Count`]), in one statement per [`MAX_ARMS_PER_STATEMENT`] conversations: a `UNION ALL`
/// of one bounded count per conversation (`SELECT count(*) FROM (SELECT 1 .. LIMIT limit +
/// 1)`, a range of the thread's index each), so no thread is read past `limit` matches.
/// The ids must be of conversations the caller already found visible.
pub async fn count_messages_batch(
    db: &impl Reader,
    conversation_ids: &[i64],
    filter: &MessageFilter,
    limit: u64,
) -> Result<HashMap<i64, Count>> {
    let mut counts: HashMap<i64, Count> = conversation_ids
        .iter()
        .map(|id| (*id, Count::exact(0)))
        .collect();
    for chunk in conversation_ids.chunks(MAX_ARMS_PER_STATEMENT) {
        let mut arms = chunk.iter().enumerate().map(|(i, id)| {
            // A bare select of `1`, not `Entity::find().select_only()`, which builds every
            // column's expression before dropping them: once per arm, up to 100 a statement.
            let rows = Query::select()
                .expr(Expr::cust("1"))
                .from(message::Entity)
                .cond_where(
                    Condition::all()
                        .add(Column::ConversationId.eq(*id))
                        .add(filter.condition()),
                )
                .limit(count_probe(limit))
                .to_owned();
            Query::select()
                .expr_as(Expr::val(*id), Alias::new("conversation_id"))
                .expr_as(Expr::col(Asterisk).count(), Alias::new("n"))
                .from_subquery(rows, Alias::new(format!("thread{i}")))
                .to_owned()
        });
        let Some(mut statement) = arms.next() else {
            continue;
        };
        statement.unions(arms.map(|arm| (UnionType::All, arm)));
        let rows = db
            .query_all_raw(run::page_statement(db.get_database_backend(), &statement))
            .await?;
        for row in rows {
            let id: i64 = row.try_get_by_index(0)?;
            let found: i64 = row.try_get_by_index(1)?;
            counts.insert(id, Count::up_to(u64::try_from(found).unwrap_or(0), limit));
        }
    }
    Ok(counts)
}

/// How many messages are unassigned (for operators and admins: see [`list_messages`]).
pub async fn count_unassigned(db: &impl Reader) -> Result<u64> {
    let select = message::Entity::find()
        .select_only()
        .column_as(Expr::col(Asterisk).count(), "n")
        .filter(MessageScope::Unassigned.condition());
    let n = run::count(db, select.into_query()).await?;
    let n = n.ok_or_else(|| Error::Internal("COUNT returned no row".into()))?;
    Ok(n as u64)
}

/// How many messages are unassigned, counted up to `limit` ([`Count`]): what
/// `unassignedMessages.totalCount` reads (an operator's exact figure is [`count_unassigned`]).
pub async fn count_unassigned_up_to(db: &impl Reader, limit: u64) -> Result<Count> {
    let select = message::Entity::find()
        .select_only()
        .expr(Expr::cust("1"))
        .filter(MessageScope::Unassigned.condition());
    Ok(run::count_up_to(db, select.into_query(), limit).await?)
}

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, EntityTrait, QueryTrait};

    use super::*;

    /// The cloned template builds exactly the statement a fresh `Entity::find()` builds.
    #[test]
    fn the_cached_select_is_the_fresh_one() {
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            for _ in 0..2 {
                assert_eq!(
                    find_messages().build(backend).to_string(),
                    message::Entity::find().build(backend).to_string()
                );
            }
        }
    }
}
