//! Message statements: the insert (one row, or a batch), the fold of a new message into
//! its conversation, PostgreSQL's insert-and-fold in one `WITH`, and the backfill's
//! set-based attach.

use sea_orm::sea_query::{InsertStatement, OnConflict};
use sea_orm::{
    ActiveValue, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, IdenStatic, Iterable,
    JsonValue, ModelTrait, Set,
};

use super::{LATEST, insert_rows, update_from_values};
use crate::error::{Error, Result};
use crate::sql::Sql;
use crate::types::Direction;
use crate::{conversation, db, live, message, message_text, search, state};

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
/// `subject` (an email's, when it has one) is indexed for search with the body.
pub(crate) async fn insert_message(
    conn: &impl ConnectionTrait,
    model: message::ActiveModel,
    subject: Option<&str>,
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
    if let Some(m) = &found {
        insert_texts(conn, [(m, subject)]).await?;
    }
    Ok(found)
}

/// Inserts the searchable text ([`search::indexed_text`]) of each message (with its email
/// subject, when it has one), with the keys a
/// search page reads beside it (conversation, channel, direction, `sent_at`), in the
/// transaction that inserts the messages.
pub(crate) async fn insert_texts<'a>(
    conn: &impl ConnectionTrait,
    messages: impl IntoIterator<Item = (&'a message::Model, Option<&'a str>)>,
) -> Result<()> {
    let backend = db::backend(conn);
    for insert in text_inserts(messages)? {
        conn.execute_raw(backend.build(&insert)).await?;
    }
    Ok(())
}

/// [`insert_texts`] for messages that may have gained their text meanwhile (the catch-up
/// of messages stored before search existed): those are skipped. Returns how many were
/// inserted.
pub(crate) async fn insert_missing_texts<'a>(
    conn: &impl ConnectionTrait,
    messages: impl IntoIterator<Item = (&'a message::Model, Option<&'a str>)>,
) -> Result<u64> {
    let backend = db::backend(conn);
    let mut inserted = 0;
    for mut insert in text_inserts(messages)? {
        insert.on_conflict(
            OnConflict::column(message_text::Column::MessageId)
                .do_nothing()
                .to_owned(),
        );
        inserted += conn
            .execute_raw(backend.build(&insert))
            .await?
            .rows_affected();
    }
    Ok(inserted)
}

fn text_inserts<'a>(
    messages: impl IntoIterator<Item = (&'a message::Model, Option<&'a str>)>,
) -> Result<Vec<InsertStatement>> {
    let rows: Vec<message_text::ActiveModel> = messages
        .into_iter()
        .map(|(m, subject)| message_text::ActiveModel {
            message_id: Set(m.id),
            text: Set(search::indexed_text(m.channel, subject, &m.body)),
            conversation_id: Set(m.conversation_id),
            channel: Set(m.channel),
            direction: Set(m.direction),
            sent_at: Set(m.sent_at),
        })
        .collect();
    insert_rows(&rows)
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
        insert.returning_all();
        let rows = message::Entity::find()
            .from_raw_sql(backend.build(&insert))
            .all(conn)
            .await?;
        insert_texts(conn, rows.iter().map(|m| (m, None))).await?;
        inserted += rows.len() as u64;
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

/// PostgreSQL: [`insert_message`], its search text, [`fold_message`], the state of
/// [`state::fold_message`] and the NOTIFY of [`live::push_announce_cte`] in one statement (a
/// data-modifying `WITH`), so four round trips fewer per recorded message. The `UPDATE .. FROM m` matches no
/// row when the insert stored nothing (a replayed provider id): `None`, as from
/// [`insert_message`]. SQLite has no data-modifying `WITH`; it runs the two statements, in
/// process, where a statement costs no round trip.
pub(crate) async fn insert_and_fold(
    conn: &impl ConnectionTrait,
    model: message::ActiveModel,
    subject: Option<&str>,
    conversation_id: i64,
    snippet: &str,
) -> Result<Option<(message::Model, conversation::Model)>> {
    let inbound = model.direction == ActiveValue::Set(Direction::Inbound);
    let text = match (&model.channel, &model.body) {
        (ActiveValue::Set(channel), ActiveValue::Set(body)) => {
            search::indexed_text(*channel, subject, body)
        }
        _ => {
            return Err(Error::Internal(
                "message row without channel or body".into(),
            ));
        }
    };
    let mut inserts = message_inserts(&[model])?;
    let Some(insert) = inserts.first_mut() else {
        return Ok(None);
    };
    insert.returning_all();
    let built = DbBackend::Postgres.build(&*insert);
    let mut sql = Sql::wrapping("WITH m AS (", built);
    // The searchable text rides in the same statement (no extra round trip), with the
    // message's keys that a search page reads beside it.
    sql.push(
        "), t AS (INSERT INTO message_texts \
         (message_id, text, conversation_id, channel, direction, sent_at) SELECT m.id, ",
    )
    .bind(text)
    .push(", m.conversation_id, m.channel, m.direction, m.sent_at FROM m)");
    // So do the sender's read horizon, the recipients' unarchiving and the NOTIFY to the
    // other processes' subscribers (sent at commit, and only if it commits).
    state::push_fold_ctes(&mut sql, inbound);
    live::push_announce_cte(&mut sql);
    sql.push(" ");
    push_fold(&mut sql, Folded::Inserted, snippet);
    sql.push(" FROM m, n WHERE conversations.id = ")
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
    use message::Column::{Id, RecordedAt, SentAt, Sequence};
    sql.push("UPDATE conversations SET message_count = message_count + 1, last_sequence = ");
    new.push(sql, Sequence);
    sql.push(", ")
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
    .await?;
    // The copies of the conversation kept beside the message follow it (whichever writer
    // attached it): the search text's, and the email headers' (threading and subjects
    // read the conversation from there).
    let ids: Vec<i64> = rows.iter().map(|(mid, ..)| *mid).collect();
    for table in ["message_texts", "message_headers"] {
        for chunk in ids.chunks(super::rows_per_statement(1)) {
            let mut sql = Sql::new(&format!(
                "UPDATE {table} SET conversation_id = (SELECT m.conversation_id \
                 FROM messages m WHERE m.id = {table}.message_id) WHERE "
            ));
            push_in_conversations(&mut sql, "message_id", chunk);
            conn.execute_raw(sql.build(db::backend(conn))).await?;
        }
    }
    Ok(())
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

/// `<column> IN ($..)` over `ids`.
fn push_in_conversations(sql: &mut Sql, column: &str, ids: &[i64]) {
    sql.push(&format!("{column} IN ("));
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(*id);
    }
    sql.push(")");
}

/// Gives every message of the conversations `ids` that has no sequence yet (just attached
/// by backfill) the next numbers of its conversation, after the highest one it has, in id
/// order. Call it with the conversation rows locked (the backfill's upsert), so no live
/// writer takes a number meanwhile.
///
/// On PostgreSQL the numbered messages join their conversations in this transaction, as
/// recorded ones do: `messages.txid` becomes this transaction (it was the legacy import's,
/// long committed, which a feed's resume horizon would see and skip) and each is announced
/// to the live feeds ([`live::push_announce_cte`]) when it commits. SQLite's feeds resume
/// by message id, which an attached message keeps: see [`crate::live`].
pub(crate) async fn number_new_messages(conn: &impl ConnectionTrait, ids: &[i64]) -> Result<()> {
    let backend = db::backend(conn);
    let postgres = backend == sea_orm::DbBackend::Postgres;
    for chunk in ids.chunks(super::rows_per_statement(1)) {
        let mut sql = Sql::new(if postgres {
            "WITH m AS (UPDATE messages SET sequence = numbered.n, txid = pg_current_xact_id() FROM ("
        } else {
            "UPDATE messages SET sequence = numbered.n FROM ("
        });
        sql.push(
            "SELECT m.id, COALESCE((SELECT MAX(s.sequence) FROM messages s \
             WHERE s.conversation_id = m.conversation_id), 0) \
             + ROW_NUMBER() OVER (PARTITION BY m.conversation_id ORDER BY m.id) AS n \
             FROM messages m WHERE m.sequence IS NULL AND ",
        );
        push_in_conversations(&mut sql, "m.conversation_id", chunk);
        sql.push(") AS numbered WHERE messages.id = numbered.id");
        if postgres {
            sql.push(" RETURNING messages.id, messages.conversation_id, messages.sequence)");
            live::push_announce_cte(&mut sql);
            sql.push(" SELECT COUNT(*) AS announced FROM n");
        }
        conn.execute_raw(sql.build(backend)).await?;
    }
    Ok(())
}

/// Renumbers the messages of the conversations `ids` 1..n, keeping the order of the numbers
/// they have (unnumbered ones last, in id order): `verify --repair` of a broken sequence.
/// The numbers are first negated, so that no row takes a number another still holds (the
/// unique index is checked row by row on both engines). Call it with the rows locked.
pub(crate) async fn renumber_messages(conn: &impl ConnectionTrait, ids: &[i64]) -> Result<()> {
    let backend = db::backend(conn);
    for chunk in ids.chunks(super::rows_per_statement(1)) {
        let mut negate =
            Sql::new("UPDATE messages SET sequence = -sequence WHERE sequence > 0 AND ");
        push_in_conversations(&mut negate, "conversation_id", chunk);
        conn.execute_raw(negate.build(backend)).await?;
        // Negated, the old order is descending.
        let mut sql = Sql::new(
            "UPDATE messages SET sequence = numbered.n FROM (\
             SELECT m.id, ROW_NUMBER() OVER (PARTITION BY m.conversation_id \
             ORDER BY m.sequence IS NULL, m.sequence DESC, m.id) AS n \
             FROM messages m WHERE ",
        );
        push_in_conversations(&mut sql, "m.conversation_id", chunk);
        sql.push(") AS numbered WHERE messages.id = numbered.id");
        conn.execute_raw(sql.build(backend)).await?;
    }
    Ok(())
}
