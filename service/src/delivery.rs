//! Delivery status of outbound messages (SPEC section 14): provider callbacks and admin
//! reports folded into one status per provider message id, plus the history of every
//! event in arrival order.
//!
//! The status is keyed by (channel, provider message id), not by the message row: a
//! callback that arrives before its message (providers do that) is stored the same way as
//! any other, and the message has that status from the instant it commits. There is no
//! separate "apply the pending events" step that could race with the record transaction.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::error::{Error, Result};
use crate::query::MAX_IDS_PER_STATEMENT;
use crate::record::{check_text, now, to_micros};
use crate::sql::Sql;
use crate::types::Channel;
use crate::{db, message};

pub use entity::delivery_event;
pub use entity::delivery_status::{self, DeliveryStatus};

/// A status event for one provider message id, as a provider or an admin reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEvent {
    /// The channel whose provider sent it.
    pub channel: Channel,
    /// The provider's id for the message.
    pub provider_message_id: String,
    /// The status reported.
    pub status: DeliveryStatus,
    /// When it happened, per the provider; the time of receipt when omitted. With the
    /// status it identifies the event: a redelivery with the same pair is stored once.
    pub at: Option<DateTime<Utc>>,
    /// The provider's error code.
    pub error_code: Option<String>,
    /// The provider's error message.
    pub error_message: Option<String>,
}

/// What [`record_delivery_status`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecorded {
    /// The status of the provider message id after the event.
    pub status: delivery_status::Model,
    /// The message with that provider id, when it is stored already.
    pub message: Option<message::Model>,
    /// Whether the same event (status and time) had been recorded before: nothing changed.
    pub duplicate: bool,
}

/// Parses a status as providers spell it (any letter case); `InvalidInput` naming `field`
/// for anything else.
pub fn parse_status(field: &str, text: &str) -> Result<DeliveryStatus> {
    DeliveryStatus::parse(text).ok_or_else(|| {
        let known: Vec<_> = DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect();
        Error::invalid(
            field,
            format!(
                "unknown delivery status {text:?}; use one of {} (any letter case)",
                known.join(", ")
            ),
        )
    })
}

/// Checks an event's fields; nothing is stored when one fails. Field names are GraphQL's
/// (`providerMessageId`, `at`, `errorCode`, `errorMessage`).
pub fn validate(event: &StatusEvent) -> Result<()> {
    check_text("providerMessageId", &event.provider_message_id, 255, false)?;
    if let Some(code) = &event.error_code {
        check_text("errorCode", code, 255, true)?;
    }
    if let Some(text) = &event.error_message {
        check_text("errorMessage", text, 4096, true)?;
    }
    if let Some(at) = event.at {
        let latest = Utc::now() + Duration::days(1);
        if at < DateTime::<Utc>::UNIX_EPOCH || at > latest {
            return Err(Error::invalid(
                "at",
                "the time must lie between 1970-01-01 and one day from now",
            ));
        }
    }
    Ok(())
}

/// Records one status event: stores it in the history (once: a redelivered event with the
/// same status and time is a duplicate) and folds it into the provider message id's status
/// in the same transaction. The status only moves up by rank (QUEUED < SENT < DELIVERED <
/// READ); FAILED and UNDELIVERED override all of those and are final; a late lower-rank
/// event stays in the history without regressing the status. Works whether or not the
/// message is stored yet.
pub async fn record_delivery_status(
    conn: &sea_orm::DatabaseConnection,
    event: StatusEvent,
) -> Result<StatusRecorded> {
    validate(&event)?;
    let received = now();
    let at = event.at.map(to_micros).unwrap_or(received);
    let txn = db::begin_write(conn).await?;
    let backend = db::backend(&*txn);
    let mut insert = Sql::new(
        "INSERT INTO delivery_events (channel, provider_message_id, status, occurred_at, \
         error_code, error_message, received_at) VALUES (",
    );
    insert
        .bind_all([
            event.channel.as_str().into(),
            event.provider_message_id.as_str().into(),
            event.status.as_str().into(),
            at.into(),
            event.error_code.clone().into(),
            event.error_message.clone().into(),
            received.into(),
        ])
        .push(
            ") ON CONFLICT (channel, provider_message_id, status, occurred_at) DO NOTHING \
             RETURNING id",
        );
    let inserted = txn.query_one_raw(insert.build(backend)).await?;
    let duplicate = inserted.is_none();
    if !duplicate {
        // One statement, atomic under the row's lock: concurrent events for one id fold in
        // some order, and the rank rule gives the same status for every order (up to ties
        // between equal ranks, where the first to arrive stays).
        let mut upsert = Sql::new(
            "INSERT INTO delivery_statuses (channel, provider_message_id, status, rank, \
             status_at, error_code, error_message, updated_at) VALUES (",
        );
        upsert
            .bind_all([
                event.channel.as_str().into(),
                event.provider_message_id.as_str().into(),
                event.status.as_str().into(),
                event.status.rank().into(),
                at.into(),
                event.error_code.clone().into(),
                event.error_message.clone().into(),
                received.into(),
            ])
            .push(") ON CONFLICT (channel, provider_message_id) DO UPDATE SET ");
        let wins = "excluded.rank > delivery_statuses.rank";
        for column in ["status", "status_at", "error_code", "error_message", "rank"] {
            upsert.push(&format!(
                "{column} = CASE WHEN {wins} THEN excluded.{column} ELSE delivery_statuses.{column} END, "
            ));
        }
        upsert.push("updated_at = excluded.updated_at");
        txn.execute_raw(upsert.build(backend)).await?;
    }
    let status =
        delivery_status::Entity::find_by_id((event.channel, event.provider_message_id.clone()))
            .one(&*txn)
            .await?
            .ok_or_else(|| Error::Internal("delivery status vanished".into()))?;
    txn.commit().await?;
    let message = message::Entity::find()
        .filter(message::Column::Channel.eq(event.channel))
        .filter(message::Column::ProviderMessageId.eq(event.provider_message_id.as_str()))
        .one(conn)
        .await?;
    Ok(StatusRecorded {
        status,
        message,
        duplicate,
    })
}

/// A provider message id on its channel: the key of statuses and histories.
pub type ProviderKey = (Channel, String);

/// The statuses of `keys` (absent: no event yet). One statement per channel and chunk.
pub async fn statuses(
    db: &impl ConnectionTrait,
    keys: &[ProviderKey],
) -> Result<HashMap<ProviderKey, delivery_status::Model>> {
    let mut out = HashMap::with_capacity(keys.len());
    for (channel, ids) in by_channel(keys) {
        for chunk in ids.chunks(MAX_IDS_PER_STATEMENT) {
            let rows = delivery_status::Entity::find()
                .filter(delivery_status::Column::Channel.eq(channel))
                .filter(delivery_status::Column::ProviderMessageId.is_in(chunk.iter().cloned()))
                .all(db)
                .await?;
            out.extend(
                rows.into_iter()
                    .map(|r| ((r.channel, r.provider_message_id.clone()), r)),
            );
        }
    }
    Ok(out)
}

/// The event histories of `keys`, each in arrival order (absent: no event yet).
pub async fn histories(
    db: &impl ConnectionTrait,
    keys: &[ProviderKey],
) -> Result<HashMap<ProviderKey, Vec<delivery_event::Model>>> {
    let mut out: HashMap<ProviderKey, Vec<delivery_event::Model>> = HashMap::new();
    for (channel, ids) in by_channel(keys) {
        for chunk in ids.chunks(MAX_IDS_PER_STATEMENT) {
            let rows = delivery_event::Entity::find()
                .filter(delivery_event::Column::Channel.eq(channel))
                .filter(delivery_event::Column::ProviderMessageId.is_in(chunk.iter().cloned()))
                .order_by_asc(delivery_event::Column::Id)
                .all(db)
                .await?;
            for r in rows {
                out.entry((r.channel, r.provider_message_id.clone()))
                    .or_default()
                    .push(r);
            }
        }
    }
    Ok(out)
}

fn by_channel(keys: &[ProviderKey]) -> HashMap<Channel, Vec<String>> {
    let mut groups: HashMap<Channel, Vec<String>> = HashMap::new();
    for (channel, id) in keys {
        groups.entry(*channel).or_default().push(id.clone());
    }
    groups
}
