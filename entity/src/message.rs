//! One message, inbound or outbound, attached to exactly one conversation (or, while it
//! cannot be, unassigned with the reason).

use sea_orm::entity::prelude::*;

use crate::types::{Channel, Direction, Kind};

/// A row of `messages`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    /// Primary key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The conversation; NULL for legacy rows awaiting backfill and for inbound messages
    /// whose addresses could not be normalized (see `assignment_error`).
    pub conversation_id: Option<i64>,
    /// `EMAIL` or `SMS`.
    pub channel: Channel,
    /// `SMS`, `MMS` or `EMAIL`.
    pub kind: Kind,
    /// `INBOUND` or `OUTBOUND`.
    pub direction: Direction,
    /// The sender as given.
    pub from_raw: String,
    /// The recipients as given, a JSON array of strings.
    pub to_raw: Json,
    /// The sender normalized; NULL when it could not be.
    pub from_address: Option<String>,
    /// The recipients normalized, a JSON array; NULL when they could not be.
    pub to_addresses: Option<Json>,
    /// The message body as given.
    pub body: String,
    /// Attachment URLs, a JSON array of strings.
    pub attachments: Json,
    /// The provider's id for the message; unique per channel, the idempotency key.
    pub provider_message_id: Option<String>,
    /// The message's own timestamp (receipt time when the caller gave none).
    pub sent_at: DateTimeUtc,
    /// When parley stored it.
    pub recorded_at: DateTimeUtc,
    /// Why the message is unassigned, when it is.
    pub assignment_error: Option<String>,
    /// Its place in its conversation: 1, 2, 3, .. in the order messages were attached
    /// (under the conversation's row lock, so gap-free and in commit order); unique per
    /// conversation. NULL while unassigned.
    pub sequence: Option<i64>,
}

/// Relations of a message.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The conversation it belongs to.
    #[sea_orm(
        belongs_to = "super::conversation::Entity",
        from = "Column::ConversationId",
        to = "super::conversation::Column::Id"
    )]
    Conversation,
}

impl Related<super::conversation::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Conversation.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
