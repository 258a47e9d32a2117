//! Per-(conversation, inbox) messaging state: the read horizon and the archive flag.

use sea_orm::entity::prelude::*;

/// A row of `conversation_states`. An inbox without a row has read nothing, sent nothing
/// and archived nothing.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversation_states")]
pub struct Model {
    /// The conversation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: i64,
    /// A normalized participant address of the conversation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub inbox: String,
    /// The read horizon: every message with a sequence up to this one counts as read.
    pub read_up_to: i64,
    /// How many messages sent by this inbox have a sequence above `read_up_to` (they are
    /// never unread for it): the unread count is `last_sequence - read_up_to - sent_after`.
    pub sent_after: i64,
    /// Archived for this inbox (a new inbound message to it clears the flag).
    pub archived: bool,
    /// When the row last changed.
    pub updated_at: DateTimeUtc,
}

/// Relations of a state row.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The conversation.
    #[sea_orm(
        belongs_to = "super::conversation::Entity",
        from = "Column::ConversationId",
        to = "super::conversation::Column::Id"
    )]
    Conversation,
}

impl ActiveModelBehavior for ActiveModel {}
