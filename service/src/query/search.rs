//! Search pages: the messages a parsed query matches, newest first, restricted by the
//! viewer's visibility and a filter, in keyset pages on `(sent_at, id)`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, Query, SelectStatement, Values};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, ExprTrait,
    QueryFilter, QuerySelect, QueryTrait, RuntimeErr, Select, TransactionTrait,
};

use super::{ListOrder, Page, Reader, Window, keyset_page, run};
use crate::access::Viewer;
use crate::error::{Error, Result};
use crate::normalize::{self, Region};
use crate::search::SearchQuery;
use crate::types::{Channel, Direction};
use crate::{conversation_participant, message, message_text};

use message::Column;

/// Which messages a search looks through (every field optional; all given must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFilter {
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only this conversation.
    pub conversation_id: Option<i64>,
    /// Only conversations with this participant (any accepted spelling).
    pub participant: Option<String>,
    /// Only this direction.
    pub direction: Option<Direction>,
    /// Only messages sent at or after this time.
    pub sent_after: Option<DateTime<Utc>>,
    /// Only messages sent before this time.
    pub sent_before: Option<DateTime<Utc>>,
}

/// The statement of a page of search results that walks `messages` newest first: messages
/// of conversations `viewer` sees (unassigned messages are never results) whose indexed
/// text matches `query` (PostgreSQL: the `tsv` GIN index of `message_texts`; SQLite: the
/// `messages_fts` FTS5 table), under `filter`, by `(sent_at, id)` with the window's cursor
/// bounds, one row past the page. [`search_messages`] runs it for a query that matches many
/// messages (a page's matches are found within a few hundred of the newest messages);
/// see [`search_page_keys`] for the others.
pub fn search_page(
    backend: DbBackend,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
) -> Result<Select<message::Entity>> {
    let matched = match (backend, viewer) {
        // SQLite, for a viewer who sees every match: each message walked is looked up in
        // the FTS5 index by its rowid, so the walk stops at the page (13 ms for a word in
        // 200,000 of 1,000,000 messages, against 520 ms reading every match's message
        // first). A principal's walk could read most of the table for one inbox's few
        // matches (73 s measured): there the matches drive, as on PostgreSQL.
        (DbBackend::Sqlite, Viewer::Everyone) => fts5_has_message(query),
        _ => Column::Id.in_subquery(matching(backend, query)),
    };
    let select = message::Entity::find().filter(matched);
    let select = narrow(select, message_keys(), viewer, region, filter)?;
    Ok(keyset_page(
        select,
        (Column::SentAt, Column::Id),
        ListOrder::Descending,
        window,
    ))
}

/// The statement of the same page as [`search_page`], answered from `message_texts` alone:
/// the ids of the page's messages (one row past the page), in the page's order. The text
/// rows keep their message's conversation, channel, direction and `sent_at`, so the rows
/// the full-text index finds are checked and sorted where they are (a top-N sort), and no
/// message is read but the page's own. [`search_messages`] runs it for a query that
/// matches fewer than [`FEW_MATCHES`] messages: reading all of them costs less than
/// walking the newest messages until a page of them turns up.
pub fn search_page_keys(
    backend: DbBackend,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
) -> Result<Select<message_text::Entity>> {
    keys_page(backend, viewer, region, Some(query), filter, window)
}

/// The messages a principal sees, for [`search_page_visible_first`].
#[derive(Debug, Clone, Copy)]
pub struct OwnMessages<'a> {
    /// Their ids ([`visible_ids`]).
    pub ids: &'a [i64],
    /// SQLite: the span of `ids` to read the FTS5 index's matches over
    /// ([`few_span_matches`]); `None` looks each message up.
    pub span: Option<(i64, i64)>,
}

/// A principal's page from the messages of the principal's conversations: the
/// conversations of its inboxes (the primary key of `conversation_participants`), their
/// messages (`messages_conversation_id_sent_at_id`), each checked against the query
/// (SQLite: the FTS5 index's matches in the span of `ids`, from [`few_span_matches`],
/// or else each message looked up in it by rowid; PostgreSQL: its `message_texts` row by
/// primary key, the `tsvector` tested), then a top-N sort. `ids` are the principal's
/// messages under the filter ([`visible_ids`]). Its cost is bounded by the messages the
/// principal sees, whatever the query matches:
/// [`search_messages`] runs it when the principal sees fewer than [`VISIBLE_FEW`]
/// messages (on SQLite for a query matching many messages: one inbox's 100 messages among
/// 1,000,000, where the matches-first walk read every match's message, 0.3-1.3 s; on
/// PostgreSQL for any query, where the planner joined all 200,000 matches of a common
/// word). The visibility rule applies as everywhere; the inboxes' conversations only drive
/// the statement.
pub fn search_page_visible_first(
    backend: DbBackend,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
    own: OwnMessages<'_>,
) -> Result<Select<message::Entity>> {
    let OwnMessages {
        ids,
        span: span_matches,
    } = own;
    let has_match = match backend {
        DbBackend::Postgres => Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(message_text::Entity)
                .and_where(
                    Expr::col((message_text::Entity, message_text::Column::MessageId))
                        .equals((message::Entity, Column::Id)),
                )
                .and_where(tsv_matches(query))
                .to_owned(),
        ),
        // One range read of the FTS5 index over the ids' span (SQLite 3.50 in the server:
        // about 200 us an FTS5 lookup by rowid, 20 ms for an inbox of 100 messages).
        _ if span_matches.is_some() => {
            let (lo, hi) = span_matches.unwrap_or_default();
            Column::Id.in_subquery(
                Query::select()
                    .expr(Expr::cust("rowid"))
                    .from(Alias::new("messages_fts"))
                    .and_where(fts5_matches(query))
                    .and_where(Expr::cust("rowid").between(lo, hi))
                    .to_owned(),
            )
        }
        _ => fts5_has_message(query),
    };
    // The ids as values, not as the subquery that found them.
    let select = message::Entity::find()
        .filter(Column::Id.is_in(ids.iter().copied()))
        .filter(has_match);
    let select = narrow(select, message_keys(), viewer, region, filter)?;
    Ok(keyset_page(
        select,
        (Column::SentAt, Column::Id),
        ListOrder::Descending,
        window,
    ))
}

/// SQLite, the newest-first walk of [`search_page`] done in sets: of the `span` messages
/// next to the window's edge in `messages_sent_at_id` order (under the filter, whoever may
/// see them; their ids lie in `ids`, from [`walk_span`]), those among the FTS5 index's
/// matches with a rowid in `ids` (one range read of the index, not a lookup per message),
/// visible to the viewer, in page order. A page whose probe row came back (one row past
/// the page) is exact: every message of the span precedes every message after it. So is
/// any page when the span held every message past the edge. Otherwise the caller walks a
/// larger span, or falls back to the matches-first walk. [`search_messages`] runs it on
/// SQLite for a query matching many messages, for an admin and for a principal who sees
/// many messages: where a word is in one message of five, 500 messages hold a page's 21
/// matches, and one FTS5 range read replaces a lookup per message walked (about 50 us
/// each).
pub fn search_page_span(
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
    span: u64,
    ids: (i64, i64),
) -> Result<Select<message::Entity>> {
    let newest = newest_ids(region, filter, window, span)?;
    let matching = Query::select()
        .expr(Expr::cust("rowid"))
        .from(Alias::new("messages_fts"))
        .and_where(fts5_matches(query))
        .and_where(Expr::cust("rowid").between(ids.0, ids.1))
        .to_owned();
    let select = message::Entity::find()
        .filter(Column::Id.in_subquery(newest.into_query()))
        .filter(Column::Id.in_subquery(matching));
    let select = narrow(select, message_keys(), viewer, region, filter)?;
    Ok(keyset_page(
        select,
        (Column::SentAt, Column::Id),
        ListOrder::Descending,
        window,
    ))
}

/// The ids of the `span` messages next to the window's edge in page order, under `filter`
/// (an index-only read of `messages_sent_at_id`).
fn newest_ids(
    region: Region,
    filter: &SearchFilter,
    window: &Window,
    span: u64,
) -> Result<Select<message::Entity>> {
    let select = narrow(
        message::Entity::find().select_only().column(Column::Id),
        message_keys(),
        &Viewer::Everyone,
        region,
        filter,
    )?;
    Ok(keyset_page(
        select,
        (Column::SentAt, Column::Id),
        ListOrder::Descending,
        &Window {
            size: Ord::max(span, 1) - 1,
            ..*window
        },
    ))
}

/// The span [`search_page_span`] walks: the smallest and largest id of the `span` messages
/// next to the window's edge, and how many there are (fewer than `span`: every message
/// past the edge). `None` when there are none.
pub async fn walk_span(
    conn: &impl Reader,
    region: Region,
    filter: &SearchFilter,
    window: &Window,
    span: u64,
) -> Result<Option<((i64, i64), u64)>> {
    let newest = newest_ids(region, filter, window, span)?.into_query();
    let stats = Query::select()
        .expr(Expr::cust("min(\"newest\".\"id\")"))
        .expr(Expr::cust("max(\"newest\".\"id\")"))
        .expr(Expr::cust("count(*)"))
        .from_subquery(newest, Alias::new("newest"))
        .to_owned();
    let Some(row) = conn.query_one_raw(DbBackend::Sqlite.build(&stats)).await? else {
        return Ok(None);
    };
    let lo: Option<i64> = row.try_get_by_index(0)?;
    let hi: Option<i64> = row.try_get_by_index(1)?;
    let n: i64 = row.try_get_by_index(2)?;
    Ok(lo.zip(hi).map(|ids| (ids, n as u64)))
}

/// The spans [`search_page_span`] tries, each ten times the last, before the walk falls
/// back to the matches-first walk of [`search_page`].
pub const WALK_SPANS: [u64; 3] = [500, 5_000, 50_000];

/// A principal who sees fewer messages than this has its pages answered from its own
/// messages ([`search_page_visible_first`]): on PostgreSQL a primary-key read each, on
/// SQLite (for a common word) one range read of the FTS5 index or, when that range holds
/// [`FEW_MATCHES`] matches or more, an FTS5 lookup each (about 200 us in the server).
pub const VISIBLE_FEW: u64 = 500;

/// SQLite: `EXISTS (.. messages_fts MATCH .. AND rowid = messages.id)`, the FTS5 index
/// asked about one message.
fn fts5_has_message(query: &SearchQuery) -> Expr {
    Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(Alias::new("messages_fts"))
            .and_where(fts5_matches(query))
            .and_where(Expr::cust("rowid = \"messages\".\"id\""))
            .to_owned(),
    )
}

/// The filter columns of `messages`.
fn message_keys() -> Keys<Column> {
    Keys {
        conversation_id: Column::ConversationId,
        channel: Column::Channel,
        direction: Column::Direction,
        sent_at: Column::SentAt,
    }
}

/// [`search_page_keys`]; without `query`, over every row of `message_texts` (the few
/// matches, when a `WITH` of that name holds them: [`few_matches_page`]).
fn keys_page(
    backend: DbBackend,
    viewer: &Viewer,
    region: Region,
    query: Option<&SearchQuery>,
    filter: &SearchFilter,
    window: &Window,
) -> Result<Select<message_text::Entity>> {
    use message_text::Column as T;
    let select = message_text::Entity::find()
        .select_only()
        .column(T::MessageId);
    let select = match (backend, query) {
        (_, None) => select,
        (DbBackend::Postgres, Some(query)) => select.filter(tsv_matches(query)),
        (_, Some(query)) => select.filter(T::MessageId.in_subquery(matching(backend, query))),
    };
    let keys = Keys {
        conversation_id: T::ConversationId,
        channel: T::Channel,
        direction: T::Direction,
        sent_at: T::SentAt,
    };
    let select = narrow(select, keys, viewer, region, filter)?;
    Ok(keyset_page(
        select,
        (T::SentAt, T::MessageId),
        ListOrder::Descending,
        window,
    ))
}

/// PostgreSQL: [`search_page_keys`] and the count of matches in one statement, so that
/// the matching rows are read once. A `WITH` named `message_texts` holds up to
/// [`FEW_MATCHES`] of the matching rows (their keys; inside it the name is still the
/// table), and the page statement without the text predicate runs over it, each row with
/// the number of rows the `WITH` holds. Returns the page's ids and that number, unless the
/// page is empty (then the caller counts: it cannot tell a rare word found nowhere the
/// viewer looks from a common word whose first matches were all filtered out).
async fn few_matches_page(
    conn: &impl Reader,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
) -> Result<Option<(Vec<i64>, u64)>> {
    let page = keys_page(DbBackend::Postgres, viewer, region, None, filter, window)?.expr_as(
        Expr::cust("(SELECT count(*) FROM \"message_texts\")"),
        "matches",
    );
    let mut statement = run::page_statement(DbBackend::Postgres, page.as_query());
    let mut values = statement.values.take().unwrap_or(Values(Vec::new()));
    values.0.push(query.tsquery().into());
    statement.sql = format!(
        "WITH \"message_texts\" AS MATERIALIZED (SELECT message_id, conversation_id, channel, \
         direction, sent_at FROM message_texts WHERE tsv @@ to_tsquery('simple', ${}) \
         LIMIT {FEW_MATCHES}) {}",
        values.0.len(),
        statement.sql
    );
    statement.values = Some(values);
    let rows: Vec<(i64, i64)> = conn
        .query_all_raw(statement)
        .await
        .map_err(too_complex)?
        .iter()
        .map(|row| Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?)))
        .collect::<std::result::Result<_, DbErr>>()?;
    let Some(&(_, matches)) = rows.first() else {
        return Ok(None);
    };
    Ok(Some((
        rows.into_iter().map(|(id, _)| id).collect(),
        matches as u64,
    )))
}

/// A query matching fewer than this many messages is answered by
/// [`search_page_keys`], one matching more by [`search_page`]. Reading every match costs
/// about one page read each; walking the newest messages costs about three reads per
/// message walked, and a page of 20 is found within `20 x total / matches` of them: the two
/// meet near 8,000 matches in 1,000,000 messages. Counting the matches, up to this many,
/// is itself a read per match, which is why the count stops here.
pub const FEW_MATCHES: u64 = 2_000;

/// `tsv @@ to_tsquery('simple', ..)` on `message_texts` (PostgreSQL).
fn tsv_matches(query: &SearchQuery) -> Expr {
    Expr::cust_with_values("tsv @@ to_tsquery('simple', $1)", [query.tsquery()])
}

/// `messages_fts MATCH ..` (SQLite).
fn fts5_matches(query: &SearchQuery) -> Expr {
    Expr::cust_with_values("messages_fts MATCH ?", [query.fts5()])
}

/// The ids of the messages whose indexed text matches `query`.
fn matching(backend: DbBackend, query: &SearchQuery) -> SelectStatement {
    match backend {
        DbBackend::Postgres => Query::select()
            .column(message_text::Column::MessageId)
            .from(message_text::Entity)
            .and_where(tsv_matches(query))
            .to_owned(),
        _ => Query::select()
            .expr(Expr::cust("rowid"))
            .from(Alias::new("messages_fts"))
            .and_where(fts5_matches(query))
            .to_owned(),
    }
}

/// How many messages match `query`, counted up to [`FEW_MATCHES`] (one read of the index
/// per match; on SQLite the FTS5 doclist alone).
async fn count_matches(conn: &impl Reader, backend: DbBackend, query: &SearchQuery) -> Result<u64> {
    let mut probe = Query::select();
    probe.expr(Expr::val(1)).limit(FEW_MATCHES);
    match backend {
        DbBackend::Postgres => probe
            .from(message_text::Entity)
            .and_where(tsv_matches(query)),
        _ => probe
            .from(Alias::new("messages_fts"))
            .and_where(fts5_matches(query)),
    };
    let count = Query::select()
        .expr(Expr::cust("count(*)"))
        .from_subquery(probe, Alias::new("matches"))
        .to_owned();
    let matches = run::count(conn, count)
        .await
        .map_err(too_complex)?
        .unwrap_or(0);
    Ok(matches as u64)
}

/// The columns a search filters on, in `messages` or in `message_texts` (the same names).
struct Keys<C> {
    conversation_id: C,
    channel: C,
    direction: C,
    sent_at: C,
}

/// `select` restricted to assigned messages of conversations `viewer` sees, under `filter`.
fn narrow<E: EntityTrait>(
    select: Select<E>,
    keys: Keys<E::Column>,
    viewer: &Viewer,
    region: Region,
    filter: &SearchFilter,
) -> Result<Select<E>> {
    let mut select = select.filter(keys.conversation_id.is_not_null());
    if let Some(rule) = viewer.visible(keys.conversation_id) {
        select = select.filter(rule);
    }
    if let Some(channel) = filter.channel {
        select = select.filter(keys.channel.eq(channel));
    }
    if let Some(id) = filter.conversation_id {
        select = select.filter(keys.conversation_id.eq(id));
    }
    if let Some(raw) = &filter.participant {
        let channel = filter.channel.unwrap_or(if raw.contains('@') {
            Channel::Email
        } else {
            Channel::Sms
        });
        let address = normalize::normalize_address(channel, raw, region)
            .map_err(|e| Error::invalid("filter.participant", e.to_string()))?;
        let with_participant = Query::select()
            .column(conversation_participant::Column::ConversationId)
            .from(conversation_participant::Entity)
            .and_where(conversation_participant::Column::Address.eq(address))
            .to_owned();
        select = select.filter(keys.conversation_id.in_subquery(with_participant));
    }
    if let Some(direction) = filter.direction {
        select = select.filter(keys.direction.eq(direction));
    }
    if let Some(after) = filter.sent_after {
        select = select.filter(keys.sent_at.gte(after));
    }
    if let Some(before) = filter.sent_before {
        select = select.filter(keys.sent_at.lt(before));
    }
    Ok(select)
}

/// A page of the messages `viewer` sees that match `query` under `filter`, newest first
/// (ties: higher id first). On PostgreSQL the statements run with `timeout` as their
/// `statement_timeout`; a search it cuts off is [`Error::TooComplex`] naming `query`.
pub async fn search_messages(
    db: &DatabaseConnection,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
    timeout: Duration,
) -> Result<Page<message::Model>> {
    let backend = db.get_database_backend();
    let rows = if backend == DbBackend::Postgres {
        // SET LOCAL bounds these statements only, and ends with the transaction.
        let txn = db.begin().await?;
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
        txn.execute_unprepared(&format!("SET LOCAL statement_timeout = {ms}"))
            .await?;
        let rows = page_rows(&txn, backend, viewer, region, query, filter, window).await?;
        txn.commit().await?;
        rows
    } else {
        page_rows(db, backend, viewer, region, query, filter, window).await?
    };
    Ok(Page::from_probe(rows, window))
}

/// The page's rows (one past the page), by [`search_page_keys`] when the query matches
/// fewer than [`FEW_MATCHES`] messages, else by [`search_page`]. The matches are counted
/// first (on PostgreSQL in the same statement as the few matches' page,
/// [`few_matches_page`]) because the planners cannot tell: PostgreSQL's priced the walk of
/// `messages_sent_at_id` too cheaply for a rare word (40,000 rows, 180 ms, at 1,000
/// matches in 1,000,000 messages).
async fn page_rows(
    conn: &impl Reader,
    backend: DbBackend,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
) -> Result<Vec<message::Model>> {
    if backend == DbBackend::Postgres
        && let Viewer::Inboxes(inboxes) = viewer
        && let Some(ids) = visible_ids(conn, backend, inboxes, region, filter).await?
    {
        let own = OwnMessages {
            ids: &ids,
            span: None,
        };
        let page = search_page_visible_first(backend, viewer, region, query, filter, window, own)?;
        return run::all(conn, page.into_query()).await.map_err(too_complex);
    }
    let matches = match backend {
        DbBackend::Postgres => {
            match few_matches_page(conn, viewer, region, query, filter, window).await? {
                Some((ids, matches)) if matches < FEW_MATCHES => return by_ids(conn, ids).await,
                Some((_, matches)) => matches,
                None => count_matches(conn, backend, query).await?,
            }
        }
        _ => count_matches(conn, backend, query).await?,
    };
    if matches < FEW_MATCHES {
        let keys = search_page_keys(backend, viewer, region, query, filter, window)?;
        page_by_keys(conn, keys).await
    } else if backend == DbBackend::Sqlite {
        match viewer {
            Viewer::Inboxes(_) => {
                sqlite_principal_page(conn, viewer, region, query, filter, window).await
            }
            Viewer::Everyone => sqlite_walk(conn, viewer, region, query, filter, window).await,
        }
    } else {
        let select = search_page(backend, viewer, region, query, filter, window)?;
        run::all(conn, select.into_query())
            .await
            .map_err(too_complex)
    }
}

/// SQLite, a principal's page of a query matching many messages. SQLite cannot start
/// from the principal's conversations and filter inside FTS5 at once, so the statement is
/// chosen by how many messages the principal sees (counted up to [`VISIBLE_FEW`]): few,
/// its own messages each looked up in FTS5 ([`search_page_visible_first`]); many, the
/// walk in sets of [`sqlite_walk`], as for an admin.
async fn sqlite_principal_page(
    conn: &impl Reader,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
) -> Result<Vec<message::Model>> {
    let Viewer::Inboxes(inboxes) = viewer else {
        return Err(Error::Internal(
            "sqlite_principal_page is for a principal's inboxes".into(),
        ));
    };
    if let Some(ids) = visible_ids(conn, DbBackend::Sqlite, inboxes, region, filter).await? {
        let span = few_span_matches(conn, query, &ids).await?;
        let own = OwnMessages { ids: &ids, span };
        let page = search_page_visible_first(
            DbBackend::Sqlite,
            viewer,
            region,
            query,
            filter,
            window,
            own,
        )?;
        return Ok(run::all(conn, page.into_query()).await?);
    }
    sqlite_walk(conn, viewer, region, query, filter, window).await
}

/// SQLite: the span of `ids` (smallest, largest) when fewer than [`FEW_MATCHES`] messages
/// in it match `query` (then one range read of the FTS5 index checks them all; otherwise
/// each message is looked up).
pub async fn few_span_matches(
    conn: &impl Reader,
    query: &SearchQuery,
    ids: &[i64],
) -> Result<Option<(i64, i64)>> {
    let (Some(&lo), Some(&hi)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(None);
    };
    let mut probe = Query::select();
    probe
        .expr(Expr::val(1))
        .from(Alias::new("messages_fts"))
        .and_where(fts5_matches(query))
        .and_where(Expr::cust("rowid").between(lo, hi))
        .limit(FEW_MATCHES);
    let count = Query::select()
        .expr(Expr::cust("count(*)"))
        .from_subquery(probe, Alias::new("matches"))
        .to_owned();
    let n: i64 = conn
        .query_one_raw(DbBackend::Sqlite.build(&count))
        .await?
        .map(|row| row.try_get_by_index(0))
        .transpose()?
        .unwrap_or(0);
    Ok(((n as u64) < FEW_MATCHES).then_some((lo, hi)))
}

/// The ids of the messages of the conversations of `inboxes` under `filter`, when there
/// are fewer than [`VISIBLE_FEW`] (`messages_conversation_id_sent_at_id`, in no order).
pub async fn visible_ids(
    conn: &impl Reader,
    backend: DbBackend,
    inboxes: &[String],
    region: Region,
    filter: &SearchFilter,
) -> Result<Option<Vec<i64>>> {
    let theirs = Query::select()
        .column(conversation_participant::Column::ConversationId)
        .from(conversation_participant::Entity)
        .and_where(conversation_participant::Column::Address.is_in(inboxes.iter().cloned()))
        .to_owned();
    let select = message::Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::ConversationId.in_subquery(theirs));
    let select = narrow(select, message_keys(), &Viewer::Everyone, region, filter)?;
    let statement = run::page_statement(backend, select.limit(VISIBLE_FEW).as_query());
    let ids: Vec<i64> = conn
        .query_all_raw(statement)
        .await
        .map_err(too_complex)?
        .iter()
        .map(|row| row.try_get_by_index(0))
        .collect::<std::result::Result<_, DbErr>>()?;
    Ok(((ids.len() as u64) < VISIBLE_FEW).then_some(ids))
}

/// SQLite, a page of a query matching many messages by the walk in sets
/// ([`search_page_span`]) over growing spans ([`WALK_SPANS`]), then, should none hold the
/// page, by the matches-first walk of [`search_page`].
async fn sqlite_walk(
    conn: &impl Reader,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
) -> Result<Vec<message::Model>> {
    for span in WALK_SPANS {
        let Some((ids, n)) = walk_span(conn, region, filter, window, span).await? else {
            return Ok(Vec::new());
        };
        let page = search_page_span(viewer, region, query, filter, window, span, ids)?;
        let page: Vec<message::Model> = run::all(conn, page.into_query()).await?;
        if n < span || page.len() as u64 > window.size {
            return Ok(page);
        }
    }
    let page = search_page(DbBackend::Sqlite, viewer, region, query, filter, window)?;
    Ok(run::all(conn, page.into_query()).await?)
}

/// Runs `keys` ([`search_page_keys`]) and reads the messages it names, in its order.
async fn page_by_keys(
    conn: &impl Reader,
    keys: Select<message_text::Entity>,
) -> Result<Vec<message::Model>> {
    let ids = run::ids(conn, keys.into_query())
        .await
        .map_err(too_complex)?;
    by_ids(conn, ids).await
}

/// The messages `ids`, in that order.
async fn by_ids(conn: &impl Reader, ids: Vec<i64>) -> Result<Vec<message::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let select = message::Entity::find().filter(Column::Id.is_in(ids.iter().copied()));
    let mut rows: HashMap<i64, message::Model> =
        run::all::<message::Model>(conn, select.into_query())
            .await
            .map_err(too_complex)?
            .into_iter()
            .map(|m| (m.id, m))
            .collect();
    Ok(ids.iter().filter_map(|id| rows.remove(id)).collect())
}

/// A statement cut off by `statement_timeout` (SQLSTATE 57014) as [`Error::TooComplex`];
/// any other error as usual.
fn too_complex(err: DbErr) -> Error {
    let cancelled = match &err {
        DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sea_orm::sqlx::Error::Database(d) => d.code().is_some_and(|c| c == "57014"),
                _ => false,
            }
        }
        _ => false,
    };
    if cancelled {
        Error::TooComplex {
            field: "query".into(),
            reason: "the search took too long; use rarer or more words, or fewer prefixes".into(),
        }
    } else {
        err.into()
    }
}
