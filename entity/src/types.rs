//! The small closed vocabularies stored in text columns: channel, kind and direction.
//!
//! They are SeaORM active enums, so rows come back typed: a stored value that is none of
//! these fails the read with a type error instead of being guessed at (a guessed channel
//! would give a wrong conversation key).

use std::fmt;
use std::str::FromStr;

use sea_orm::entity::prelude::*;

/// The transport a conversation lives on. A conversation never mixes channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum Channel {
    /// Email: addresses are email addresses.
    #[sea_orm(string_value = "EMAIL")]
    Email,
    /// SMS and MMS: addresses are E.164 phone numbers or short codes.
    #[sea_orm(string_value = "SMS")]
    Sms,
}

/// What kind of message it is. SMS and MMS belong to the `Sms` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum Kind {
    /// A text message.
    #[sea_orm(string_value = "SMS")]
    Sms,
    /// A multimedia message (text plus attachments).
    #[sea_orm(string_value = "MMS")]
    Mms,
    /// An email.
    #[sea_orm(string_value = "EMAIL")]
    Email,
}

/// Whether the message came in from a contact or went out from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum Direction {
    /// Received from a provider (webhook).
    #[sea_orm(string_value = "INBOUND")]
    Inbound,
    /// Sent by us.
    #[sea_orm(string_value = "OUTBOUND")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ActiveEnum, Iterable};

    #[test]
    fn stored_spelling_is_the_display_spelling() {
        for c in Channel::iter() {
            assert_eq!(c.to_value(), c.as_str());
            assert_eq!(c.as_str().parse::<Channel>(), Ok(c));
        }
        for k in Kind::iter() {
            assert_eq!(k.to_value(), k.as_str());
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
        }
        for d in Direction::iter() {
            assert_eq!(d.to_value(), d.as_str());
            assert_eq!(d.as_str().parse::<Direction>(), Ok(d));
        }
    }

    #[test]
    fn unknown_stored_values_are_errors_not_guesses() {
        assert!(Channel::try_from_value(&"FAX".to_owned()).is_err());
        assert!(Kind::try_from_value(&"sms".to_owned()).is_err());
        assert!(Direction::try_from_value(&String::new()).is_err());
    }
}
