//! One delivery status event, as a provider (or an admin) reported it.

use sea_orm::entity::prelude::*;

use crate::delivery_status::DeliveryStatus;
use crate::types::Channel;

/// A row of `delivery_events`, in arrival (id) order per provider message id. A redelivered
/// event (same status and time) is stored once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "delivery_events")]
pub struct Model {
    /// Primary key: the arrival order.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The channel of the provider.
    pub channel: Channel,
    /// The provider's id for the message.
    pub provider_message_id: String,
    /// The status reported.
    pub status: DeliveryStatus,
    /// When the provider says it happened.
    pub occurred_at: DateTimeUtc,
    /// The provider's error code, if any.
    pub error_code: Option<String>,
    /// The provider's error message, if any.
    pub error_message: Option<String>,
    /// When parley received it.
    pub received_at: DateTimeUtc,
}

/// Relations of an event (none: it may precede its message).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
