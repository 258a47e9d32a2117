//! The current delivery status of an outbound message, keyed by the provider's id for it.

use std::fmt;

use sea_orm::entity::prelude::*;

use crate::types::Channel;

/// Where an outbound message stands with its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum DeliveryStatus {
    /// Accepted by the provider, not yet sent.
    #[sea_orm(string_value = "QUEUED")]
    Queued,
    /// Handed to the carrier or the receiving mail server.
    #[sea_orm(string_value = "SENT")]
    Sent,
    /// Delivered to the handset or mailbox.
    #[sea_orm(string_value = "DELIVERED")]
    Delivered,
    /// Read by the recipient (where the channel reports it).
    #[sea_orm(string_value = "READ")]
    Read,
    /// The provider could not send it (final).
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// The carrier could not deliver it (final).
    #[sea_orm(string_value = "UNDELIVERED")]
    Undelivered,
}

impl DeliveryStatus {
    /// Every status, in rank order.
    pub const ALL: [DeliveryStatus; 6] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Failed,
        DeliveryStatus::Undelivered,
    ];

    /// The stored (and wire) spelling: upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "QUEUED",
            DeliveryStatus::Sent => "SENT",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Read => "READ",
            DeliveryStatus::Failed => "FAILED",
            DeliveryStatus::Undelivered => "UNDELIVERED",
        }
    }

    /// The order statuses move in: an event replaces the status only with a higher rank.
    /// FAILED and UNDELIVERED share the top rank, so they override every other status and
    /// nothing replaces them.
    pub fn rank(self) -> i32 {
        match self {
            DeliveryStatus::Queued => 1,
            DeliveryStatus::Sent => 2,
            DeliveryStatus::Delivered => 3,
            DeliveryStatus::Read => 4,
            DeliveryStatus::Failed | DeliveryStatus::Undelivered => 10,
        }
    }

    /// Whether nothing moves the status any more.
    pub fn is_final(self) -> bool {
        self.rank() == 10
    }

    /// Parses a status as providers spell it, in any letter case (`delivered`,
    /// `DELIVERED`); `None` for anything else.
    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        let text = text.trim();
        DeliveryStatus::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row of `delivery_statuses`: the status that the events of one provider message id
/// add up to. It exists as soon as the first event does, whether or not the message is
/// stored yet.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "delivery_statuses")]
pub struct Model {
    /// The channel of the provider.
    #[sea_orm(primary_key, auto_increment = false)]
    pub channel: Channel,
    /// The provider's id for the message (`messages.provider_message_id`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub provider_message_id: String,
    /// The current status.
    pub status: DeliveryStatus,
    /// `status`'s rank ([`DeliveryStatus::rank`]).
    pub rank: i32,
    /// When the provider says the current status was reached.
    pub status_at: DateTimeUtc,
    /// The provider's error code of the current status, if any.
    pub error_code: Option<String>,
    /// The provider's error message of the current status, if any.
    pub error_message: Option<String>,
    /// When an event last arrived.
    pub updated_at: DateTimeUtc,
}

/// Relations of a status row (none: it may precede its message).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::ActiveEnum;

    #[test]
    fn statuses_parse_in_any_case_and_rank_failures_last() {
        for s in DeliveryStatus::ALL {
            assert_eq!(s.to_value(), s.as_str());
            assert_eq!(DeliveryStatus::parse(&s.as_str().to_lowercase()), Some(s));
        }
        assert_eq!(
            DeliveryStatus::parse(" Delivered "),
            Some(DeliveryStatus::Delivered)
        );
        assert_eq!(DeliveryStatus::parse("bounced"), None);
        assert!(DeliveryStatus::Read.rank() > DeliveryStatus::Delivered.rank());
        assert!(DeliveryStatus::Failed.rank() > DeliveryStatus::Read.rank());
        assert!(DeliveryStatus::Undelivered.is_final() && !DeliveryStatus::Read.is_final());
    }
}
