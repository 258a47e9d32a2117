//! The searchable text of a message: its body reduced to words (HTML to text, accents
//! folded), which both engines' full-text indexes are built from.

use sea_orm::entity::prelude::*;

use crate::types::{Channel, Direction};

/// A row of `message_texts` (PostgreSQL also has a generated `tsv` column, not mapped:
/// it is only read by the search predicate).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "message_texts")]
pub struct Model {
    /// The message.
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_id: i64,
    /// Its words, folded, separated by single spaces.
    pub text: String,
    /// The message's conversation (a copy of `messages.conversation_id`, following it when
    /// backfill attaches the message): search pages filter and check visibility here.
    pub conversation_id: Option<i64>,
    /// The message's channel (a copy; never changes).
    pub channel: Channel,
    /// The message's direction (a copy; never changes).
    pub direction: Direction,
    /// The message's `sent_at` (a copy; never changes): search pages are ordered by
    /// `(sent_at, message_id)`.
    pub sent_at: DateTimeUtc,
}

/// Relations of a message text.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The message.
    #[sea_orm(
        belongs_to = "super::message::Entity",
        from = "Column::MessageId",
        to = "super::message::Column::Id"
    )]
    Message,
}

impl ActiveModelBehavior for ActiveModel {}
