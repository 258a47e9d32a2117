//! The searchable text of a message: its body reduced to words (HTML to text, accents
//! folded), which both engines' full-text indexes are built from.

use sea_orm::entity::prelude::*;

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
