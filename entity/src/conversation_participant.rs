//! The participant index: one row per (normalized address, conversation), so that
//! "conversations with this person" is an index lookup rather than a scan.

use sea_orm::entity::prelude::*;

/// A row of `conversation_participants`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversation_participants")]
pub struct Model {
    /// A normalized address.
    #[sea_orm(primary_key, auto_increment = false)]
    pub address: String,
    /// A conversation that address takes part in.
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: i64,
}

/// Relations of a participant row.
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
