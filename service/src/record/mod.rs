//! The write path: one message and its conversation, stored atomically.

use chrono::{DateTime, Duration, DurationRound, Timelike, Utc};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
};

use crate::error::{Error, Result};
use crate::headers::{self, EmailHeaders};
use crate::normalize::{self, Participants};
use crate::settings::{Limits, Settings};
use crate::snippet::message_snippet;
use crate::statements::{self, json_strings};
use crate::types::{Channel, Direction, Kind};
use crate::{conversation, db, message, query, state};

mod group;

pub use group::MAX_GROUP;

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
    record_message_with(db, settings, input, EmailHeaders::default()).await
}

/// [`record_message`] with the email threading headers of the message, validated
/// ([`headers::validate`]) and stored in the same transaction. Headers never choose the
/// conversation.
pub async fn record_message_with(
    db: &DatabaseConnection,
    settings: &Settings,
    input: NewMessage,
    email: EmailHeaders,
) -> Result<Recorded> {
    let started = std::time::Instant::now();
    let kind = validate(&input, &settings.limits)?;
    headers::validate(input.channel, &email)?;
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
    // What answering a replay needs once `input` has moved to the commit group.
    let (channel, provider_message_id) = (input.channel, input.provider_message_id.clone());

    let stored = match assignment {
        Ok(participants) => {
            let snippet = message_snippet(input.channel, &input.body, settings.snippet_length);
            let key = normalize::participants_key(&participants.sorted);
            // The drain of the conversation's writers stores it, alone or with the others
            // queued meanwhile, and publishes it (see `group`).
            let pending = group::Pending {
                input,
                kind,
                sent_at,
                recorded_at: now,
                participants,
                key,
                snippet,
                headers: email,
            };
            group::submit(db, settings.record_group_max, pending).await?
        }
        Err(reason) => {
            let row = MessageRow {
                input: &input,
                kind,
                sent_at,
                recorded_at: now,
                assignment: Err(&reason),
                headers: &email,
            };
            let txn = db::begin_write(db).await?;
            let subject = row.headers.subject.as_deref();
            match statements::insert_message(&*txn, row.active_model(None), subject).await? {
                Some(message) => Stored::New(Recorded {
                    message: {
                        row.store_headers(&txn, &message, None).await?;
                        message
                    },
                    conversation: None,
                    conversation_created: false,
                    duplicate: false,
                }),
                None => Stored::Duplicate,
            }
            .finish(txn)
            .await?
        }
    };

    let recorded = match stored {
        Stored::New(recorded) => recorded,
        // The provider id was stored before (or by a concurrent call): answer with the original.
        Stored::Duplicate => {
            let pid = provider_message_id.as_deref().unwrap_or_default();
            let original = find_by_provider_id(db, channel, pid)
                .await?
                .ok_or_else(|| Error::Internal("duplicate vanished".into()))?;
            return duplicate(db, original).await;
        }
    };

    observe(&recorded, started);
    Ok(recorded)
}

/// What the write transaction of [`record_message`] did.
// Lives on the stack for one call and is unwrapped at once: boxing `Recorded` would add
// an allocation to every recorded message for nothing.
#[allow(clippy::large_enum_variant)]
enum Stored {
    /// The message was stored (and its conversation updated).
    New(Recorded),
    /// A message with the same (channel, provider id) was already stored: nothing was
    /// written, and the caller answers with the original.
    Duplicate,
}

impl Stored {
    /// Ends the transaction: commits what was stored, rolls back on a duplicate.
    async fn finish(self, txn: db::WriteTxn) -> Result<Self> {
        match self {
            Stored::New(_) => txn.commit().await?,
            Stored::Duplicate => txn.rollback().await?,
        }
        Ok(self)
    }
}

/// The validated, derived fields of the message row to insert.
struct MessageRow<'a> {
    input: &'a NewMessage,
    kind: Kind,
    sent_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    assignment: std::result::Result<&'a Participants, &'a String>,
    headers: &'a EmailHeaders,
}

impl MessageRow<'_> {
    /// Stores the message's email headers, when it has any, in the record transaction.
    async fn store_headers(
        &self,
        txn: &DatabaseTransaction,
        message: &message::Model,
        conversation_id: Option<i64>,
    ) -> Result<()> {
        if !self.headers.is_empty() {
            headers::insert_headers(
                txn,
                message.id,
                conversation_id,
                message.sent_at,
                self.headers,
            )
            .await?;
        }
        Ok(())
    }

    /// The row to insert, attached to `conversation_id` (or unassigned).
    fn active_model(&self, conversation_id: Option<i64>) -> message::ActiveModel {
        let mut model = new_message(self.input, self.kind, self.sent_at, self.recorded_at);
        model.conversation_id = Set(conversation_id);
        match self.assignment {
            Ok(p) => {
                model.from_address = Set(Some(p.from.clone()));
                model.to_addresses = Set(Some(json_strings(&p.to)));
            }
            Err(reason) => model.assignment_error = Set(Some(reason.clone())),
        }
        model
    }
}

/// The message row for `input` as given: unassigned, addresses not normalized.
pub(crate) fn new_message(
    input: &NewMessage,
    kind: Kind,
    sent_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
) -> message::ActiveModel {
    message::ActiveModel {
        id: NotSet,
        conversation_id: Set(None),
        channel: Set(input.channel),
        kind: Set(kind),
        direction: Set(input.direction),
        from_raw: Set(input.from.clone()),
        to_raw: Set(json_strings(&input.to)),
        from_address: Set(None),
        to_addresses: Set(None),
        body: Set(input.body.clone()),
        attachments: Set(json_strings(&input.attachments)),
        provider_message_id: Set(input.provider_message_id.clone()),
        sent_at: Set(sent_at),
        recorded_at: Set(recorded_at),
        assignment_error: Set(None),
        sequence: Set(None),
    }
}

/// The conversation upsert, message insert and conversation update, in `txn`; `key` is
/// the participants' key ([`normalize::participants_key`]); `locked`: the conversation as
/// an earlier message of the same transaction left it (its row locked).
async fn store_assigned(
    txn: &DatabaseTransaction,
    row: &MessageRow<'_>,
    participants: &Participants,
    key: &str,
    snippet: &str,
    locked: Option<&conversation::Model>,
) -> Result<Stored> {
    let (conversation_id, last_sequence, created) = match locked {
        // The conversation as the message before in this transaction left it: its row is
        // locked already, and the upsert would only set `updated_at`, which the update
        // below sets too. One statement fewer per message of a commit group.
        Some(c) => (c.id, c.last_sequence, false),
        None => {
            let conversation = statements::new_conversation(
                row.input.channel,
                key,
                &participants.sorted,
                row.sent_at,
                row.sent_at,
                row.recorded_at,
            );
            // The upsert locks the conversation row until commit, so the count update
            // below cannot interleave with another writer's.
            let upserted = statements::upsert_conversations(txn, &[conversation]).await?;
            let Some(upserted) = upserted.first() else {
                return Err(Error::Internal(
                    "conversation upsert returned no row".into(),
                ));
            };
            // Counts are exact and a conversation is only ever created with its first
            // message, so a count of 0 under our row lock means this transaction created it.
            (
                upserted.id,
                upserted.last_sequence,
                upserted.message_count == 0,
            )
        }
    };

    if created {
        let rows = participants
            .sorted
            .iter()
            .map(|a| (conversation_id, a.as_str()));
        statements::insert_participants(txn, rows).await?;
    }

    // The next number of the conversation's sequence: the row stays locked until commit,
    // so no other writer can take it, and numbers follow the order writers got the lock.
    let mut model = row.active_model(Some(conversation_id));
    model.sequence = Set(Some(last_sequence + 1));
    // PostgreSQL: one statement also writes the search text and the state and sends the
    // NOTIFY. SQLite runs them one by one, in process, where a statement costs no round trip.
    let postgres = db::backend(txn) == DbBackend::Postgres;
    let subject = row.headers.subject.as_deref();
    let stored = if postgres {
        statements::insert_and_fold(txn, model, subject, conversation_id, snippet).await?
    } else {
        match statements::insert_message(txn, model, subject).await? {
            Some(message) => {
                let conversation =
                    statements::fold_message(txn, conversation_id, &message, snippet).await?;
                Some((message, conversation))
            }
            None => None,
        }
    };
    let Some((message, conversation)) = stored else {
        return Ok(Stored::Duplicate);
    };
    row.store_headers(txn, &message, Some(conversation_id))
        .await?;
    if !postgres {
        state::fold_message(txn, conversation_id, &message).await?;
    }
    Ok(Stored::New(Recorded {
        message,
        conversation: Some(conversation),
        conversation_created: created,
        duplicate: false,
    }))
}

async fn find_by_provider_id(
    db: &DatabaseConnection,
    channel: Channel,
    provider_message_id: &str,
) -> Result<Option<message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::Channel.eq(channel))
        .filter(message::Column::ProviderMessageId.eq(provider_message_id))
        .one(db)
        .await?)
}

async fn duplicate(db: &DatabaseConnection, message: message::Model) -> Result<Recorded> {
    metrics::counter!("parley_messages_duplicate_total").increment(1);
    let conversation = match message.conversation_id {
        Some(id) => query::find_conversation(db, &crate::Viewer::Everyone, id).await?,
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

/// Checks one text field: at most `max_bytes`, no NUL (which PostgreSQL refuses and
/// SQLite stores), and not blank unless `empty_ok`; `InvalidInput` naming `field`.
pub(crate) fn check_text(field: &str, value: &str, max_bytes: usize, empty_ok: bool) -> Result<()> {
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
///
/// A leap second (`23:59:60.5Z`, which RFC 3339 allows and chrono parses) becomes the last
/// representable instant of the second before it, `23:59:59.999999`: PostgreSQL would store
/// it as the next second (`00:00:00.5`) and SQLite as written (`:60`), so the two engines
/// would disagree on the value and on its order. The normalized value keeps the message in
/// its minute, after every message of second 59 that was sent before it.
pub fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    // chrono keeps a leap second as second 59 with 1_000_000_000 or more nanoseconds.
    let t = if t.nanosecond() >= 1_000_000_000 {
        t.with_nanosecond(999_999_999).unwrap_or(t)
    } else {
        t
    };
    t.duration_trunc(Duration::microseconds(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::to_micros;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_leap_second_becomes_the_last_instant_of_second_59() {
        assert_eq!(
            to_micros(at("2016-12-31T23:59:60.5Z")),
            at("2016-12-31T23:59:59.999999Z")
        );
        assert_eq!(
            to_micros(at("2016-12-31T23:59:60Z")),
            at("2016-12-31T23:59:59.999999Z")
        );
        // Ordinary instants are only truncated to microseconds.
        assert_eq!(
            to_micros(at("2016-12-31T23:59:59.1234567Z")),
            at("2016-12-31T23:59:59.123456Z")
        );
        assert_eq!(to_micros(at("1970-01-01T00:00:00Z")), DateTime::UNIX_EPOCH);
    }
}
