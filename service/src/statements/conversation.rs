//! Conversation statements: the upsert-and-lock, the participant index, the latest-message
//! rule, and the recompute from message rows.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, Func, OnConflict, Order, Query, ReturningClause, SelectStatement,
};
use sea_orm::{ActiveValue, ColumnTrait, ConnectionTrait, FromQueryResult};

use super::{insert_rows, json_strings, rows_per_statement, update_from_values};
use crate::error::{Error, Result};
use crate::types::Channel;
use crate::{conversation, conversation_participant, db, message};

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
        last_sequence: Set(0),
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
    /// The highest message sequence handed out so far (0 for a new conversation); read
    /// under the row lock this statement takes, so `last_sequence + 1` is this
    /// transaction's to give.
    pub last_sequence: i64,
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
                    Column::LastSequence,
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

/// Recomputes the count, first/last activity, last message and last sequence of `ids` from
/// their rows; an empty conversation keeps its activity times.
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
            .value(
                Column::LastSequence,
                Func::coalesce([
                    Expr::from(messages_aggregate(
                        Func::max,
                        Some(message::Column::Sequence),
                    )),
                    Expr::val(0i64),
                ]),
            )
            .value(Column::UpdatedAt, at)
            .and_where(Column::Id.is_in(chunk.iter().copied()))
            .to_owned();
        conn.execute_raw(backend.build(&update)).await?;
    }
    Ok(())
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
