//! The small closed vocabularies of the domain: channel, kind and direction.

use std::fmt;
use std::str::FromStr;

/// The transport a conversation lives on. A conversation never mixes channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Email: addresses are email addresses.
    Email,
    /// SMS and MMS: addresses are E.164 phone numbers or short codes.
    Sms,
}

/// What kind of message it is. SMS and MMS belong to the `Sms` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A text message.
    Sms,
    /// A multimedia message (text plus attachments).
    Mms,
    /// An email.
    Email,
}

/// Whether the message came in from a contact or went out from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from a provider (webhook).
    Inbound,
    /// Sent by us.
    Outbound,
}

macro_rules! text_enum {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored (and wire) spelling: upper case.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {}: {other:?}", stringify!($ty).to_lowercase())),
                }
            }
        }
    };
}

text_enum!(Channel { Email => "EMAIL", Sms => "SMS" });
text_enum!(Kind { Sms => "SMS", Mms => "MMS", Email => "EMAIL" });
text_enum!(Direction { Inbound => "INBOUND", Outbound => "OUTBOUND" });

impl Kind {
    /// The channel this kind of message travels on.
    pub fn channel(self) -> Channel {
        match self {
            Kind::Sms | Kind::Mms => Channel::Sms,
            Kind::Email => Channel::Email,
        }
    }
}

impl Channel {
    /// The kind a message gets on this channel when the caller names none.
    pub fn default_kind(self) -> Kind {
        match self {
            Channel::Sms => Kind::Sms,
            Channel::Email => Kind::Email,
        }
    }
}
