//! The email threading headers of a message.

use sea_orm::entity::prelude::*;

/// A row of `message_headers`: present only for messages recorded with headers.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "message_headers")]
pub struct Model {
    /// The message.
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_id: i64,
    /// Its conversation (a copy, for the conversation's subject); NULL while unassigned.
    pub conversation_id: Option<i64>,
    /// The message's `sent_at` (a copy, to find the conversation's first subject).
    pub sent_at: DateTimeUtc,
    /// `Subject`.
    pub subject: Option<String>,
    /// `Message-ID`, angle brackets included.
    pub rfc_message_id: Option<String>,
    /// `In-Reply-To`, angle brackets included.
    pub in_reply_to: Option<String>,
    /// `References`: a JSON array of message ids, oldest first.
    pub references: Json,
}

/// Relations of a header row.
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
