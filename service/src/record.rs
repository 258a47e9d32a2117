//! The write path: one message and its conversation, stored atomically.

use chrono::{DateTime, Duration, DurationRound, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    FromQueryResult, IdenStatic, Iterable, JsonValue,
};

use crate::error::{Error, Result};
use crate::normalize::{self, Participants};
use crate::settings::{Limits, Settings};
use crate::snippet::{looks_like_html, snippet};
use crate::sql::Sql;
use crate::types::{Channel, Direction, Kind};
use crate::{conversation, db, message, query};

/// A message to record, as the caller gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The channel; must match `kind` when both are given.
    pub channel: Channel,
    /// The kind; defaults to the channel's (`SMS` or `EMAIL`).
    pub kind: Option<Kind>,
    /// Inbound (from a provider) or outbound (sent by us).
    pub direction: Direction,
    /// The sender address, in any accepted spelling.
    pub from: String,
    /// The recipient addresses, in any accepted spelling; at least one.
    pub to: Vec<String>,
    /// The body: plain text, or HTML for email.
    pub body: String,
    /// Attachment URLs (http or https).
    pub attachments: Vec<String>,
    /// The provider's message id: the idempotency key, unique per channel.
    pub provider_message_id: Option<String>,
    /// When the message was sent; defaults to now.
    pub sent_at: Option<DateTime<Utc>>,
}

/// What [`record_message`] stored (or found already stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The stored message (the original one when `duplicate`).
    pub message: message::Model,
    /// Its conversation, as of the end of the transaction; `None` when unassigned.
    pub conversation: Option<conversation::Model>,
    /// Whether this call created the conversation.
    pub conversation_created: bool,
    /// Whether a message with the same (channel, provider id) was already stored, in which
    /// case nothing new was written.
    pub duplicate: bool,
}

/// Records one message: validates it, normalizes its addresses, and in one transaction
/// upserts its conversation, inserts the message and updates the conversation's count,
/// first/last activity, last message and snippet. Either all of it is stored or none.
///
/// An inbound message whose addresses do not normalize is stored unassigned, with the
/// reason in `assignment_error`; an outbound one is rejected with `InvalidInput`.
pub async fn record_message(
    db: &DatabaseConnection,
    settings: &Settings,
    input: NewMessage,
) -> Result<Recorded> {
    let started = std::time::Instant::now();
    let kind = validate(&input, &settings.limits)?;
    let assignment = match normalize::participants(
        input.channel,
        &input.from,
        &input.to,
        settings.default_region,
    ) {
        Ok(p) => Ok(p),
        Err(e) if input.direction == Direction::Outbound => {
            return Err(Error::invalid(e.field, e.reason.to_string()));
        }
        Err(e) => Err(e.to_string()),
    };

    // No read before the write to catch a replayed provider id: the insert's ON CONFLICT
    // catches it inside the transaction, which then rolls back, so the common case (a new
    // message) costs no extra round trip and replays stay exact under concurrency.
    let now = now();
    let sent_at = input.sent_at.map(to_micros).unwrap_or(now);
    let html = input.channel == Channel::Email && looks_like_html(&input.body);
    let row = MessageRow {
        input: &input,
        kind,
        sent_at,
        recorded_at: now,
        assignment: assignment.as_ref(),
    };

    let result = match &assignment {
        Ok(participants) => {
            let snippet = snippet(&input.body, html, settings.snippet_length);
            let txn = db::begin_write(db).await?;
            match store_assigned(&txn, &row, participants, &snippet).await {
                Ok(Some(stored)) => {
                    txn.commit().await?;
                    Ok(stored)
                }
                Ok(None) => {
                    txn.rollback().await?;
                    Err(None)
                }
                Err(e) => {
                    metrics::counter!("parley_conversation_upsert_failures_total").increment(1);
                    Err(Some(e))
                }
            }
        }
        Err(_) => {
            let txn = db::begin_write(db).await?;
            match insert_message(&txn, &row, None).await? {
                Some(message) => {
                    txn.commit().await?;
                    Ok(Recorded {
                        message,
                        conversation: None,
                        conversation_created: false,
                        duplicate: false,
                    })
                }
                None => {
                    txn.rollback().await?;
                    Err(None)
                }
            }
        }
    };

    let recorded = match result {
        Ok(recorded) => recorded,
        // The provider id was stored before (or by a concurrent call): answer with the original.
        Err(None) => {
            let pid = input.provider_message_id.as_deref().unwrap_or_default();
            let original = find_by_provider_id(db, input.channel, pid)
                .await?
                .ok_or_else(|| Error::Unavailable("duplicate vanished; retry".into()))?;
            return duplicate(db, original).await;
        }
        Err(Some(e)) => return Err(e),
    };

    observe(&recorded, started);
    Ok(recorded)
}

/// The validated, derived fields of the message row to insert.
struct MessageRow<'a> {
    input: &'a NewMessage,
    kind: Kind,
    sent_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    assignment: std::result::Result<&'a Participants, &'a String>,
}

/// The conversation upsert, message insert and conversation update. `Ok(None)` when the
/// provider id turned out to be a duplicate (the caller rolls back).
async fn store_assigned(
    txn: &DatabaseTransaction,
    row: &MessageRow<'_>,
    participants: &Participants,
    snippet: &str,
) -> Result<Option<Recorded>> {
    let backend = db::backend(txn);
    let key = normalize::participants_key(&participants.sorted);
    let channel = row.input.channel;

    // ON CONFLICT DO UPDATE (rather than DO NOTHING) so that the row comes back in both
    // cases and stays locked by this transaction until commit: concurrent writers to one
    // conversation queue on that row lock, and the count update below cannot interleave.
    let mut upsert = Sql::new(
        "INSERT INTO conversations (channel, participants_key, participants, message_count, \
         first_message_at, last_message_at, last_message_id, snippet, created_at, updated_at) VALUES (",
    );
    upsert
        .bind(channel.as_str())
        .push(", ")
        .bind(key.as_str())
        .push(", ")
        .bind(json_strings(&participants.sorted))
        .push(", 0, ")
        .bind(row.sent_at)
        .push(", ")
        .bind(row.sent_at)
        .push(", NULL, '', ")
        .bind(row.recorded_at)
        .push(", ")
        .bind(row.recorded_at)
        .push(
            ") ON CONFLICT (channel, participants_key) DO UPDATE SET updated_at = excluded.updated_at \
             RETURNING id, message_count",
        );
    let upserted = txn
        .query_one_raw(upsert.build(backend))
        .await?
        .ok_or_else(|| Error::Unavailable("conversation upsert returned no row".into()))?;
    let conversation_id: i64 = upserted.try_get("", "id")?;
    // Counts are exact and a conversation is only ever created with its first message, so
    // a count of 0 under our row lock means this transaction created it.
    let created = upserted.try_get::<i64>("", "message_count")? == 0;

    if created {
        let mut index =
            Sql::new("INSERT INTO conversation_participants (address, conversation_id) VALUES ");
        index
            .push_rows(&participants.sorted, |sql, address| {
                sql.bind(address.as_str()).push(", ").bind(conversation_id);
            })
            .push(" ON CONFLICT DO NOTHING");
        txn.execute_raw(index.build(backend)).await?;
    }

    let stored = if backend == DbBackend::Postgres {
        insert_and_apply(txn, row, conversation_id, snippet).await?
    } else {
        match insert_message(txn, row, Some(conversation_id)).await? {
            Some(message) => {
                let conversation = apply_message(txn, conversation_id, &message, snippet).await?;
                Some((message, conversation))
            }
            None => None,
        }
    };
    let Some((message, conversation)) = stored else {
        return Ok(None);
    };
    Ok(Some(Recorded {
        message,
        conversation: Some(conversation),
        conversation_created: created,
        duplicate: false,
    }))
}

/// Folds one newly inserted message into its (locked) conversation row.
pub(crate) async fn apply_message(
    txn: &impl ConnectionTrait,
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
        .from_raw_sql(sql.build(db::backend(txn)))
        .one(txn)
        .await?
        .ok_or_else(|| Error::Unavailable("conversation vanished during update".into()))
}

/// PostgreSQL: the message insert and [`apply_message`] in one statement (a data-modifying
/// `WITH`), so one round trip fewer per recorded message. The `UPDATE .. FROM m` matches no
/// row when the insert stored nothing (a replayed provider id): `None`, as from
/// [`insert_message`]. SQLite has no data-modifying `WITH`; it runs the two statements, in
/// process, where a statement costs no round trip.
async fn insert_and_apply(
    txn: &DatabaseTransaction,
    row: &MessageRow<'_>,
    conversation_id: i64,
    snippet: &str,
) -> Result<Option<(message::Model, conversation::Model)>> {
    let mut sql = Sql::new("WITH m AS (");
    push_message_insert(&mut sql, row, Some(conversation_id));
    sql.push(" RETURNING *) ");
    push_fold(&mut sql, Folded::Inserted, snippet);
    sql.push(" FROM m WHERE conversations.id = ")
        .bind(conversation_id)
        .push(" RETURNING conversations.*");
    for column in message::Column::iter() {
        let name = column.as_str();
        sql.push(&format!(", m.{name} AS m_{name}"));
    }
    let Some(found) = txn.query_one_raw(sql.build(DbBackend::Postgres)).await? else {
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
    fn sent_at(self, sql: &mut Sql) {
        match self {
            Folded::Bound(m) => sql.bind(m.sent_at),
            Folded::Inserted => sql.push("m.sent_at"),
        };
    }

    fn id(self, sql: &mut Sql) {
        match self {
            Folded::Bound(m) => sql.bind(m.id),
            Folded::Inserted => sql.push("m.id"),
        };
    }

    fn recorded_at(self, sql: &mut Sql) {
        match self {
            Folded::Bound(m) => sql.bind(m.recorded_at),
            Folded::Inserted => sql.push("m.recorded_at"),
        };
    }
}

/// `UPDATE conversations SET ..` for one new message, without its `WHERE`: count + 1,
/// first/last activity as min/max, and the last message and snippet only when the message
/// is the latest by (sent_at, id), so out-of-order arrivals do not regress them. The
/// conversation's columns are named bare: `messages` has none of these names.
fn push_fold(sql: &mut Sql, new: Folded<'_>, snippet: &str) {
    sql.push("UPDATE conversations SET message_count = message_count + 1, ")
        .push("first_message_at = CASE WHEN message_count = 0 OR ");
    new.sent_at(sql);
    sql.push(" < first_message_at THEN ");
    new.sent_at(sql);
    sql.push(" ELSE first_message_at END, last_message_at = CASE WHEN message_count = 0 OR ");
    new.sent_at(sql);
    sql.push(" > last_message_at THEN ");
    new.sent_at(sql);
    sql.push(" ELSE last_message_at END, ");
    let newer = |sql: &mut Sql| {
        sql.push("(last_message_id IS NULL OR ");
        new.sent_at(sql);
        sql.push(" > last_message_at OR (");
        new.sent_at(sql);
        sql.push(" = last_message_at AND ");
        new.id(sql);
        sql.push(" > last_message_id))");
    };
    sql.push("last_message_id = CASE WHEN ");
    newer(sql);
    sql.push(" THEN ");
    new.id(sql);
    sql.push(" ELSE last_message_id END, snippet = CASE WHEN ");
    newer(sql);
    sql.push(" THEN ")
        .bind(snippet)
        .push(" ELSE snippet END, updated_at = ");
    new.recorded_at(sql);
}

/// Inserts the message row; `None` when its (channel, provider id) is already stored.
async fn insert_message(
    txn: &DatabaseTransaction,
    row: &MessageRow<'_>,
    conversation_id: Option<i64>,
) -> Result<Option<message::Model>> {
    let mut sql = Sql::new("");
    push_message_insert(&mut sql, row, conversation_id);
    sql.push(" RETURNING *");
    Ok(message::Entity::find()
        .from_raw_sql(sql.build(db::backend(txn)))
        .one(txn)
        .await?)
}

/// `INSERT INTO messages .. ON CONFLICT (channel, provider_message_id) DO NOTHING`, without
/// its `RETURNING`.
fn push_message_insert(sql: &mut Sql, row: &MessageRow<'_>, conversation_id: Option<i64>) {
    let input = row.input;
    let (from_address, to_addresses, assignment_error) = match row.assignment {
        Ok(p) => (Some(p.from.clone()), Some(json_strings(&p.to)), None),
        Err(reason) => (None, None, Some(reason.clone())),
    };
    sql.push(
        "INSERT INTO messages (conversation_id, channel, kind, direction, from_raw, to_raw, \
         from_address, to_addresses, body, attachments, provider_message_id, sent_at, recorded_at, \
         assignment_error) VALUES (",
    );
    sql.bind(conversation_id)
        .push(", ")
        .bind(input.channel.as_str())
        .push(", ")
        .bind(row.kind.as_str())
        .push(", ")
        .bind(input.direction.as_str())
        .push(", ")
        .bind(input.from.as_str())
        .push(", ")
        .bind(json_strings(&input.to))
        .push(", ")
        .bind(from_address)
        .push(", ")
        .bind(to_addresses)
        .push(", ")
        .bind(input.body.as_str())
        .push(", ")
        .bind(json_strings(&input.attachments))
        .push(", ")
        .bind(input.provider_message_id.clone())
        .push(", ")
        .bind(row.sent_at)
        .push(", ")
        .bind(row.recorded_at)
        .push(", ")
        .bind(assignment_error)
        .push(") ON CONFLICT (channel, provider_message_id) DO NOTHING");
}

async fn find_by_provider_id(
    db: &DatabaseConnection,
    channel: Channel,
    provider_message_id: &str,
) -> Result<Option<message::Model>> {
    let mut sql = Sql::new("SELECT * FROM messages WHERE channel = ");
    sql.bind(channel.as_str())
        .push(" AND provider_message_id = ")
        .bind(provider_message_id);
    Ok(message::Entity::find()
        .from_raw_sql(sql.build(db::backend(db)))
        .one(db)
        .await?)
}

async fn duplicate(db: &DatabaseConnection, message: message::Model) -> Result<Recorded> {
    metrics::counter!("parley_messages_duplicate_total").increment(1);
    let conversation = match message.conversation_id {
        Some(id) => query::find_conversation(db, id).await?,
        None => None,
    };
    Ok(Recorded {
        message,
        conversation,
        conversation_created: false,
        duplicate: true,
    })
}

fn observe(recorded: &Recorded, started: std::time::Instant) {
    let m = &recorded.message;
    metrics::counter!("parley_messages_recorded_total", "channel" => m.channel.as_str(), "direction" => m.direction.as_str())
        .increment(1);
    metrics::histogram!("parley_record_message_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    match &recorded.conversation {
        Some(c) => {
            let created = recorded.conversation_created;
            if created {
                metrics::counter!("parley_conversations_created_total").increment(1);
            } else {
                metrics::counter!("parley_conversations_reused_total").increment(1);
            }
            tracing::info!(
                message_id = m.id,
                conversation_id = c.id,
                conversation = if created { "created" } else { "reused" },
                conversation_key = %normalize::conversation_key(c.channel, &c.participants_key),
                channel = %m.channel,
                direction = %m.direction,
                "message recorded"
            );
        }
        None => {
            metrics::counter!("parley_messages_unassigned_total").increment(1);
            tracing::warn!(
                message_id = m.id,
                channel = %m.channel,
                direction = %m.direction,
                reason = m.assignment_error.as_deref().unwrap_or_default(),
                "inbound message stored unassigned: its addresses do not normalize"
            );
        }
    }
}

/// Structural checks: nothing is stored when one fails. Returns the effective kind.
pub fn validate(input: &NewMessage, limits: &Limits) -> Result<Kind> {
    let kind = input.kind.unwrap_or(input.channel.default_kind());
    if kind.channel() != input.channel {
        return Err(Error::invalid(
            "kind",
            format!(
                "kind {kind} does not travel on channel {}; use {}",
                input.channel,
                input.channel.default_kind()
            ),
        ));
    }
    check_text("from", &input.from, limits.max_field_bytes, false)?;
    if input.to.is_empty() {
        return Err(Error::invalid("to", "at least one recipient is required"));
    }
    if input.to.len() > limits.max_recipients {
        return Err(Error::invalid(
            "to",
            format!(
                "{} recipients given; at most {} are allowed",
                input.to.len(),
                limits.max_recipients
            ),
        ));
    }
    for (i, to) in input.to.iter().enumerate() {
        check_text(&format!("to[{i}]"), to, limits.max_field_bytes, false)?;
    }
    check_text("body", &input.body, limits.max_body_bytes, true)?;
    if input.attachments.len() > limits.max_attachments {
        return Err(Error::invalid(
            "attachments",
            format!(
                "{} attachments given; at most {} are allowed",
                input.attachments.len(),
                limits.max_attachments
            ),
        ));
    }
    for (i, url) in input.attachments.iter().enumerate() {
        let field = format!("attachments[{i}]");
        check_text(&field, url, limits.max_field_bytes, false)?;
        let lower = url.trim().to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.chars().any(char::is_whitespace)) {
            return Err(Error::invalid(
                field,
                "an attachment must be an absolute http(s) URL without spaces",
            ));
        }
    }
    if let Some(pid) = &input.provider_message_id {
        check_text("providerMessageId", pid, 255, false)?;
    }
    if let Some(at) = input.sent_at {
        let earliest = DateTime::<Utc>::UNIX_EPOCH;
        let latest = Utc::now() + Duration::days(1);
        if at < earliest || at > latest {
            return Err(Error::invalid(
                "sentAt",
                "sentAt must lie between 1970-01-01 and one day from now",
            ));
        }
    }
    Ok(kind)
}

fn check_text(field: &str, value: &str, max_bytes: usize, empty_ok: bool) -> Result<()> {
    if value.len() > max_bytes {
        return Err(Error::invalid(
            field,
            format!(
                "{} bytes given; at most {max_bytes} are allowed",
                value.len()
            ),
        ));
    }
    // PostgreSQL refuses NUL in text while SQLite stores it: refuse it up front so both
    // engines answer the same.
    if value.contains('\0') {
        return Err(Error::invalid(field, "contains a NUL character (U+0000)"));
    }
    if !empty_ok && value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    Ok(())
}

/// The current time at the microsecond precision both engines store.
pub fn now() -> DateTime<Utc> {
    to_micros(Utc::now())
}

/// Truncates to microseconds, the precision both engines store, so that values read back
/// compare equal to values written.
pub fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::microseconds(1)).unwrap_or(t)
}

pub(crate) fn json_strings(values: &[String]) -> JsonValue {
    JsonValue::Array(values.iter().cloned().map(JsonValue::String).collect())
}
