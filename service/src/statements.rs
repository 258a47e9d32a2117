//! The named write statements: the few that are tuned by hand (the conversation
//! upsert-and-lock, PostgreSQL's data-modifying `WITH`, the set-based backfill updates) and
//! the inserts that record, backfill and import share. Column lists come from the entities
//! (`Column::iter()`, `Column::as_str()`), never from strings. Also the keyset batch scan
//! that backfill and verify walk their tables with.
//!
//! Every multi-row statement is split so that one statement binds at most [`MAX_PARAMS`]
//! values: SQLite refuses more than 32,766 and PostgreSQL more than 65,535.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, Func, InsertStatement, OnConflict, Order, Query, ReturningClause,
    SelectStatement,
};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DbBackend, EntityName,
    EntityTrait, FromQueryResult, IdenStatic, Iterable, JsonValue, ModelTrait, QueryFilter,
    QueryOrder, QuerySelect, Select, Value,
};

use crate::error::{Error, Result};
use crate::sql::Sql;
use crate::types::Channel;
use crate::{conversation, conversation_participant, db, message};

/// The most values one statement binds, with room under SQLite's 32,766.
pub(crate) const MAX_PARAMS: usize = 30_000;

/// How many rows of `params_per_row` values fit in one statement.
pub(crate) fn rows_per_statement(params_per_row: usize) -> usize {
    (MAX_PARAMS / params_per_row.max(1)).max(1)
}

/// `INSERT INTO <table> (..) VALUES (..), ..` of `models`, one statement per chunk that
/// stays under [`MAX_PARAMS`]. The columns are the entity's columns set in the first model
/// (every model is built the same way).
fn insert_rows<A: ActiveModelTrait>(models: &[A]) -> Result<Vec<InsertStatement>> {
    let Some(first) = models.first() else {
        return Ok(Vec::new());
    };
    let columns: Vec<_> = <A::Entity as EntityTrait>::Column::iter()
        .filter(|c| !matches!(first.get(*c), ActiveValue::NotSet))
        .collect();
    let mut statements = Vec::new();
    for chunk in models.chunks(rows_per_statement(columns.len())) {
        let mut insert = Query::insert();
        insert
            .into_table(<A::Entity as Default>::default().table_ref())
            .columns(columns.iter().copied());
        for model in chunk {
            let values = columns.iter().map(|c| match model.get(*c) {
                ActiveValue::Set(v) | ActiveValue::Unchanged(v) => Expr::val(v),
                ActiveValue::NotSet => Expr::val(Value::String(None)),
            });
            insert
                .values(values)
                .map_err(|e| Error::Internal(format!("insert row: {e}")))?;
        }
        statements.push(insert);
    }
    Ok(statements)
}

/// A conversation row as first stored: no messages counted yet, no last message, an empty
/// snippet; the message (or backfill recompute) that follows fills them in.
pub(crate) fn new_conversation(
    channel: Channel,
    participants_key: &str,
    participants: &[String],
    first_message_at: DateTime<Utc>,
    last_message_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> conversation::ActiveModel {
    use sea_orm::ActiveValue::Set;
    conversation::ActiveModel {
        id: ActiveValue::NotSet,
        channel: Set(channel),
        participants_key: Set(participants_key.to_owned()),
        participants: Set(json_strings(participants)),
        message_count: Set(0),
        first_message_at: Set(first_message_at),
        last_message_at: Set(last_message_at),
        last_message_id: Set(None),
        snippet: Set(String::new()),
        created_at: Set(at),
        updated_at: Set(at),
    }
}

/// A row returned by [`upsert_conversations`].
#[derive(Debug, FromQueryResult)]
pub(crate) struct Upserted {
    /// The conversation id.
    pub id: i64,
    /// Its channel.
    pub channel: Channel,
    /// Its participants key.
    pub participants_key: String,
    /// 0 when this statement created it (a conversation is only created with its first
    /// message, and counts are exact).
    pub message_count: i64,
}

/// Upserts `rows` by (channel, participants key) and returns each row's id.
///
/// ON CONFLICT DO UPDATE (rather than DO NOTHING) so that the row comes back in both cases
/// and stays locked by this transaction until commit: concurrent writers to one
/// conversation queue on that row lock. Callers pass rows in key order so that two
/// transactions lock them in the same order.
pub(crate) async fn upsert_conversations(
    conn: &impl ConnectionTrait,
    rows: &[conversation::ActiveModel],
) -> Result<Vec<Upserted>> {
    use conversation::Column;
    let backend = db::backend(conn);
    let mut upserted = Vec::with_capacity(rows.len());
    for mut insert in insert_rows(rows)? {
        insert
            .on_conflict(
                OnConflict::columns([Column::Channel, Column::ParticipantsKey])
                    .update_column(Column::UpdatedAt)
                    .to_owned(),
            )
            .returning(ReturningClause::Columns(
                [
                    Column::Id,
                    Column::Channel,
                    Column::ParticipantsKey,
                    Column::MessageCount,
                ]
                .into_iter()
                .map(Into::into)
                .collect(),
            ));
        upserted.extend(
            Upserted::find_by_statement(backend.build(&insert))
                .all(conn)
                .await?,
        );
    }
    if upserted.len() != rows.len() {
        return Err(Error::Internal(format!(
            "conversation upsert returned {} rows for {}",
            upserted.len(),
            rows.len()
        )));
    }
    Ok(upserted)
}

/// Adds `(conversation id, address)` rows to the participant index; rows already there are
/// left alone.
pub(crate) async fn insert_participants<'a>(
    conn: &impl ConnectionTrait,
    rows: impl IntoIterator<Item = (i64, &'a str)>,
) -> Result<()> {
    use conversation_participant::Column;
    use sea_orm::ActiveValue::Set;
    let models: Vec<_> = rows
        .into_iter()
        .map(|(id, address)| conversation_participant::ActiveModel {
            address: Set(address.to_owned()),
            conversation_id: Set(id),
        })
        .collect();
    let backend = db::backend(conn);
    for mut insert in insert_rows(&models)? {
        insert.on_conflict(
            OnConflict::columns([Column::Address, Column::ConversationId])
                .do_nothing()
                .to_owned(),
        );
        conn.execute_raw(backend.build(&insert)).await?;
    }
    Ok(())
}

/// `INSERT INTO messages .. ON CONFLICT (channel, provider_message_id) DO NOTHING`, split
/// under the parameter limit: a replayed provider id inserts nothing.
fn message_inserts(models: &[message::ActiveModel]) -> Result<Vec<InsertStatement>> {
    let mut inserts = insert_rows(models)?;
    for insert in &mut inserts {
        insert.on_conflict(
            OnConflict::columns([message::Column::Channel, message::Column::ProviderMessageId])
                .do_nothing()
                .to_owned(),
        );
    }
    Ok(inserts)
}

/// Inserts one message; `None` when its (channel, provider id) is already stored.
pub(crate) async fn insert_message(
    conn: &impl ConnectionTrait,
    model: message::ActiveModel,
) -> Result<Option<message::Model>> {
    let backend = db::backend(conn);
    let mut found = None;
    for mut insert in message_inserts(&[model])? {
        insert.returning_all();
        found = message::Entity::find()
            .from_raw_sql(backend.build(&insert))
            .one(conn)
            .await?;
    }
    Ok(found)
}

/// Inserts `models`, skipping those whose provider id is already stored; returns how many
/// were inserted.
pub(crate) async fn insert_messages(
    conn: &impl ConnectionTrait,
    models: &[message::ActiveModel],
) -> Result<u64> {
    let backend = db::backend(conn);
    let mut inserted = 0;
    for mut insert in message_inserts(models)? {
        insert.returning_col(message::Column::Id);
        inserted += conn.query_all_raw(backend.build(&insert)).await?.len() as u64;
    }
    Ok(inserted)
}

/// Folds one newly inserted message into its (locked) conversation row and returns the row.
pub(crate) async fn fold_message(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    message: &message::Model,
    snippet: &str,
) -> Result<conversation::Model> {
    let mut sql = Sql::new("");
    push_fold(&mut sql, Folded::Bound(message), snippet);
    sql.push(" WHERE conversations.id = ")
        .bind(conversation_id)
        .push(" RETURNING *");
    conversation::Entity::find()
        .from_raw_sql(sql.build(db::backend(conn)))
        .one(conn)
        .await?
        .ok_or_else(|| Error::Internal("conversation vanished during update".into()))
}

/// PostgreSQL: [`insert_message`] and [`fold_message`] in one statement (a data-modifying
/// `WITH`), so one round trip fewer per recorded message. The `UPDATE .. FROM m` matches no
/// row when the insert stored nothing (a replayed provider id): `None`, as from
/// [`insert_message`]. SQLite has no data-modifying `WITH`; it runs the two statements, in
/// process, where a statement costs no round trip.
pub(crate) async fn insert_and_fold(
    conn: &impl ConnectionTrait,
    model: message::ActiveModel,
    conversation_id: i64,
    snippet: &str,
) -> Result<Option<(message::Model, conversation::Model)>> {
    let mut inserts = message_inserts(&[model])?;
    let Some(insert) = inserts.first_mut() else {
        return Ok(None);
    };
    insert.returning_all();
    let built = DbBackend::Postgres.build(&*insert);
    let mut sql = Sql::wrapping("WITH m AS (", built);
    sql.push(") ");
    push_fold(&mut sql, Folded::Inserted, snippet);
    sql.push(" FROM m WHERE conversations.id = ")
        .bind(conversation_id)
        .push(" RETURNING conversations.*");
    for column in message::Column::iter() {
        let name = column.as_str();
        sql.push(&format!(", m.{name} AS m_{name}"));
    }
    let Some(found) = conn.query_one_raw(sql.build(DbBackend::Postgres)).await? else {
        return Ok(None);
    };
    let message = message::Model::from_query_result(&found, "m_")?;
    let conversation = conversation::Model::from_query_result(&found, "")?;
    Ok(Some((message, conversation)))
}

/// Where the conversation update reads the new message from.
#[derive(Clone, Copy)]
enum Folded<'a> {
    /// Bound values: an earlier statement inserted the message.
    Bound(&'a message::Model),
    /// The columns of `m`, the row the same statement inserts (`WITH m AS (INSERT ..)`).
    Inserted,
}

impl Folded<'_> {
    fn push(self, sql: &mut Sql, column: message::Column) {
        match self {
            Folded::Bound(m) => sql.bind(m.get(column)),
            Folded::Inserted => sql.push(&format!("m.{}", column.as_str())),
        };
    }
}

/// `UPDATE conversations SET ..` for one new message, without its `WHERE`: count + 1,
/// first/last activity as min/max, and the last message and snippet only when the message
/// is the latest by [`LATEST`], so out-of-order arrivals do not regress them. The
/// conversation's columns are named bare: `messages` has none of these names.
fn push_fold(sql: &mut Sql, new: Folded<'_>, snippet: &str) {
    use message::Column::{Id, RecordedAt, SentAt};
    sql.push("UPDATE conversations SET message_count = message_count + 1, ")
        .push("first_message_at = CASE WHEN message_count = 0 OR ");
    new.push(sql, SentAt);
    sql.push(" < first_message_at THEN ");
    new.push(sql, SentAt);
    sql.push(" ELSE first_message_at END, last_message_at = CASE WHEN message_count = 0 OR ");
    new.push(sql, SentAt);
    sql.push(" > last_message_at THEN ");
    new.push(sql, SentAt);
    sql.push(" ELSE last_message_at END, ");
    // The new message is the latest when it sorts after the stored last one by LATEST
    // (sent_at, then id), spelled out rather than as a row value so each side can use
    // the conversation's own columns.
    let newer = |sql: &mut Sql| {
        let [by_time, by_id] = LATEST;
        sql.push("(last_message_id IS NULL OR ");
        new.push(sql, by_time);
        sql.push(" > last_message_at OR (");
        new.push(sql, by_time);
        sql.push(" = last_message_at AND ");
        new.push(sql, by_id);
        sql.push(" > last_message_id))");
    };
    sql.push("last_message_id = CASE WHEN ");
    newer(sql);
    sql.push(" THEN ");
    new.push(sql, Id);
    sql.push(" ELSE last_message_id END, snippet = CASE WHEN ");
    newer(sql);
    sql.push(" THEN ")
        .bind(snippet)
        .push(" ELSE snippet END, updated_at = ");
    new.push(sql, RecordedAt);
}

/// The order that makes a conversation's latest message its last one: `sent_at`, then `id`
/// to break ties.
pub(crate) const LATEST: [message::Column; 2] = [message::Column::SentAt, message::Column::Id];

/// The id of the latest message (by [`LATEST`]) of the conversation in the enclosing
/// statement's `conversations` row: a correlated subquery.
pub(crate) fn latest_message_id() -> SelectStatement {
    let m = Alias::new("m");
    let mut select = Query::select();
    select
        .column((m.clone(), message::Column::Id))
        .from_as(message::Entity, m.clone())
        .and_where(
            Expr::col((m.clone(), message::Column::ConversationId))
                .equals((conversation::Entity, conversation::Column::Id)),
        );
    for column in LATEST {
        select.order_by((m.clone(), column), Order::Desc);
    }
    select.limit(1).to_owned()
}

/// `fold(m.column)` over the messages of the conversation in the enclosing statement's
/// `conversations` row: a correlated subquery (`COUNT(*)` when `column` is `None`).
pub(crate) fn messages_aggregate(
    fold: fn(Expr) -> sea_orm::sea_query::FunctionCall,
    column: Option<message::Column>,
) -> SelectStatement {
    let m = Alias::new("m");
    let arg = match column {
        Some(c) => Expr::col((m.clone(), c)),
        None => Expr::cust("*"),
    };
    Query::select()
        .expr(fold(arg))
        .from_as(message::Entity, m.clone())
        .and_where(
            Expr::col((m, message::Column::ConversationId))
                .equals((conversation::Entity, conversation::Column::Id)),
        )
        .to_owned()
}

/// Recomputes the count, first/last activity and last message of `ids` from their rows;
/// an empty conversation keeps its activity times.
pub(crate) async fn recompute_conversations(
    conn: &impl ConnectionTrait,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<()> {
    use conversation::Column;
    let backend = db::backend(conn);
    for chunk in ids.chunks(rows_per_statement(1)) {
        let update = Query::update()
            .table(conversation::Entity)
            .value(
                Column::MessageCount,
                Expr::from(messages_aggregate(Func::count, None)),
            )
            .value(
                Column::FirstMessageAt,
                Func::coalesce([
                    Expr::from(messages_aggregate(Func::min, Some(message::Column::SentAt))),
                    Expr::col(Column::FirstMessageAt),
                ]),
            )
            .value(
                Column::LastMessageAt,
                Func::coalesce([
                    Expr::from(messages_aggregate(Func::max, Some(message::Column::SentAt))),
                    Expr::col(Column::LastMessageAt),
                ]),
            )
            .value(Column::LastMessageId, Expr::from(latest_message_id()))
            .value(Column::UpdatedAt, at)
            .and_where(Column::Id.is_in(chunk.iter().copied()))
            .to_owned();
        conn.execute_raw(backend.build(&update)).await?;
    }
    Ok(())
}

/// `UPDATE <table> SET .. FROM (VALUES ..) AS v WHERE <table>.id = v.column1 ..`: one
/// statement per chunk of `rows`, each row binding `width` values (`v.column1` ..
/// `v.column{width}`) through `bind`. `set` and `filter` are the text after `SET` and
/// after the id match.
async fn update_from_values<T>(
    conn: &impl ConnectionTrait,
    table: &str,
    set: &str,
    filter: &str,
    rows: &[T],
    width: usize,
    mut bind: impl FnMut(&mut Sql, &T),
) -> Result<()> {
    let backend = db::backend(conn);
    for chunk in rows.chunks(rows_per_statement(width)) {
        let mut sql = Sql::new(&format!("UPDATE {table} SET {set} FROM (VALUES "));
        sql.push_rows(chunk, |sql, row| bind(sql, row));
        sql.push(&format!(") AS v WHERE {table}.id = v.column1{filter}"));
        conn.execute_raw(sql.build(backend)).await?;
    }
    Ok(())
}

/// Attaches messages to conversations: `(message id, conversation id, normalized sender,
/// normalized recipients)`. Only still-unassigned rows change: a concurrent backfill may
/// have attached some already.
pub(crate) async fn attach_messages(
    conn: &impl ConnectionTrait,
    rows: &[(i64, i64, &str, JsonValue)],
) -> Result<()> {
    use message::Column;
    let set = format!(
        "{} = v.column2, {} = v.column3, {} = v.column4, {} = NULL",
        Column::ConversationId.as_str(),
        Column::FromAddress.as_str(),
        Column::ToAddresses.as_str(),
        Column::AssignmentError.as_str(),
    );
    let filter = " AND messages.conversation_id IS NULL";
    update_from_values(conn, "messages", &set, filter, rows, 4, |sql, row| {
        let (mid, cid, from, to) = row;
        sql.bind(*mid)
            .push(", ")
            .bind(*cid)
            .push(", ")
            .bind(*from)
            .push(", ")
            .bind(to.clone());
    })
    .await
}

/// Records why each unassigned message stays so (only where the reason changed, so a
/// second run writes nothing).
pub(crate) async fn record_assignment_errors(
    conn: &impl ConnectionTrait,
    rows: &[(i64, String)],
) -> Result<()> {
    let filter = " AND messages.conversation_id IS NULL \
         AND (messages.assignment_error IS NULL OR messages.assignment_error <> v.column2)";
    update_from_values(
        conn,
        "messages",
        "assignment_error = v.column2",
        filter,
        rows,
        2,
        |sql, (id, reason)| {
            sql.bind(*id).push(", ").bind(reason.as_str());
        },
    )
    .await
}

/// Sets each conversation's snippet: `(conversation id, snippet)`.
pub(crate) async fn set_snippets(
    conn: &impl ConnectionTrait,
    rows: &[(i64, String)],
) -> Result<()> {
    update_from_values(
        conn,
        "conversations",
        "snippet = v.column2",
        "",
        rows,
        2,
        |sql, (id, snippet)| {
            sql.bind(*id).push(", ").bind(snippet.as_str());
        },
    )
    .await
}

/// The next batch of `select`: up to `size` rows with `id` above `after`, in `id` order.
/// Backfill and verify walk their tables with it, one keyset batch at a time.
pub(crate) fn batch_after<E: EntityTrait>(
    select: Select<E>,
    id: E::Column,
    after: i64,
    size: usize,
) -> Select<E> {
    select
        .filter(id.gt(after))
        .order_by_asc(id)
        .limit(size as u64)
}

/// A JSON array of strings, as the JSON columns store address and URL lists.
pub(crate) fn json_strings(values: &[String]) -> JsonValue {
    JsonValue::Array(values.iter().cloned().map(JsonValue::String).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_statements_stay_under_the_parameter_limit() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let rows: Vec<_> = (0..10_000)
            .map(|i| {
                new_conversation(
                    Channel::Sms,
                    &format!("k{i}"),
                    &[format!("a{i}")],
                    at,
                    at,
                    at,
                )
            })
            .collect();
        let inserts = insert_rows(&rows).expect("built");
        assert_eq!(inserts.len(), 4);
        for insert in &inserts {
            let built = DbBackend::Postgres.build(insert);
            let values = built.values.map_or(0, |v| v.0.len());
            assert!(values <= MAX_PARAMS, "{values}");
        }
        assert_eq!(rows_per_statement(10), 3000);
        assert_eq!(rows_per_statement(0), MAX_PARAMS);
    }
}
