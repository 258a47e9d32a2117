//! Search pages: the messages a parsed query matches, newest first, restricted by the
//! viewer's visibility and a filter, in keyset pages on `(sent_at, id)`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, Query, SelectStatement, Values};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect, QueryTrait, RuntimeErr, Select, TransactionTrait,
};

use super::{ListOrder, Page, Window, keyset_page, run};
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
        (DbBackend::Sqlite, Viewer::Everyone) => Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(Alias::new("messages_fts"))
                .and_where(fts5_matches(query))
                .and_where(Expr::cust("rowid = \"messages\".\"id\""))
                .to_owned(),
        ),
        _ => Column::Id.in_subquery(matching(backend, query)),
    };
    let select = message::Entity::find().filter(matched);
    let keys = Keys {
        conversation_id: Column::ConversationId,
        channel: Column::Channel,
        direction: Column::Direction,
        sent_at: Column::SentAt,
    };
    let select = narrow(select, keys, viewer, region, filter)?;
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
    conn: &impl ConnectionTrait,
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
async fn count_matches(
    conn: &impl ConnectionTrait,
    backend: DbBackend,
    query: &SearchQuery,
) -> Result<u64> {
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
    conn: &impl ConnectionTrait,
    backend: DbBackend,
    viewer: &Viewer,
    region: Region,
    query: &SearchQuery,
    filter: &SearchFilter,
    window: &Window,
) -> Result<Vec<message::Model>> {
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
    } else {
        let select = search_page(backend, viewer, region, query, filter, window)?;
        run::all(conn, select.into_query())
            .await
            .map_err(too_complex)
    }
}

/// Runs `keys` ([`search_page_keys`]) and reads the messages it names, in its order.
async fn page_by_keys(
    conn: &impl ConnectionTrait,
    keys: Select<message_text::Entity>,
) -> Result<Vec<message::Model>> {
    let ids = run::ids(conn, keys.into_query())
        .await
        .map_err(too_complex)?;
    by_ids(conn, ids).await
}

/// The messages `ids`, in that order.
async fn by_ids(conn: &impl ConnectionTrait, ids: Vec<i64>) -> Result<Vec<message::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows: HashMap<i64, message::Model> = message::Entity::find()
        .filter(Column::Id.is_in(ids.iter().copied()))
        .all(conn)
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
