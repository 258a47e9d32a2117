//! One conversation: a channel plus the normalized, ordered participant set.

use sea_orm::entity::prelude::*;

use crate::types::Channel;

/// A row of `conversations`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    /// Primary key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `EMAIL` or `SMS`.
    pub channel: Channel,
    /// The sorted normalized addresses joined by U+001F; unique together with `channel`.
    pub participants_key: String,
    /// The normalized addresses, sorted, as a JSON array of strings.
    pub participants: Json,
    /// Exactly the number of message rows attached to this conversation.
    pub message_count: i64,
    /// The earliest `sent_at` of its messages.
    pub first_message_at: DateTimeUtc,
    /// The latest `sent_at` of its messages.
    pub last_message_at: DateTimeUtc,
    /// The latest message by (`sent_at`, `id`).
    pub last_message_id: Option<i64>,
    /// The snippet of the latest message, cut to the configured snippet length.
    pub snippet: String,
    /// When the conversation row was created.
    pub created_at: DateTimeUtc,
    /// When the conversation row last changed.
    pub updated_at: DateTimeUtc,
    /// The highest message `sequence` handed out in this conversation (0 before the
    /// first): the next message gets `last_sequence + 1`.
    pub last_sequence: i64,
}

/// Relations of a conversation (queries are written in the service crate, which joins
/// explicitly).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
