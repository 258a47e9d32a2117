//! The closed vocabularies, mirrored from `service::types`.

use async_graphql::Enum;

/// The transport a conversation lives on.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Email: participants are email addresses.
    Email,
    /// SMS and MMS: participants are E.164 phone numbers or short codes.
    Sms,
}

/// What kind of message it is.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A text message (channel SMS).
    Sms,
    /// A multimedia message (channel SMS).
    Mms,
    /// An email (channel EMAIL).
    Email,
}

/// Whether a message came in or went out.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from a contact, through a provider.
    Inbound,
    /// Sent by us.
    Outbound,
}

macro_rules! mirror {
    ($gql:ident, $svc:ty { $($v:ident),+ }) => {
        impl From<$gql> for $svc {
            fn from(v: $gql) -> Self {
                match v { $($gql::$v => <$svc>::$v),+ }
            }
        }
        impl From<$svc> for $gql {
            fn from(v: $svc) -> Self {
                match v { $(<$svc>::$v => $gql::$v),+ }
            }
        }
    };
}

mirror!(Channel, service::Channel { Email, Sms });
mirror!(MessageKind, service::Kind { Sms, Mms, Email });
mirror!(Direction, service::Direction { Inbound, Outbound });
