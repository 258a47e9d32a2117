//! Who is asking, and what they may see and write.
//!
//! A [`Principal`] is the verified caller: a subject, scopes and the inboxes (normalized
//! addresses) it acts for. Reads take its [`Viewer`], the one visibility rule: a
//! conversation, and every message in it, is visible iff one of its participants is one of
//! the viewer's inboxes. [`Viewer::visible`] is the only place that rule is written; it is a
//! correlated `EXISTS` on the `conversation_participants` primary key
//! `(address, conversation_id)`, so a filtered page or count stays one statement. Writes go through
//! [`Principal::authorize_write`].

use std::sync::Arc;

use sea_orm::ColumnTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};

use crate::conversation_participant;
use crate::error::{Error, Result};
use crate::normalize::{self, Region};
use crate::record::NewMessage;
use crate::types::{Channel, Direction};

/// What a principal may do, from the token's space-separated `scope` claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes {
    /// `conversations:read`: read the conversations and messages of its inboxes.
    pub read: bool,
    /// `messages:write`: record messages sent from (outbound) or to (inbound) its inboxes.
    pub write: bool,
    /// `admin`: read and write everything, including unassigned messages and metrics.
    pub admin: bool,
}

/// The scope names, as tokens carry them.
pub mod scope {
    /// Read conversations and messages.
    pub const READ: &str = "conversations:read";
    /// Record messages.
    pub const WRITE: &str = "messages:write";
    /// Everything.
    pub const ADMIN: &str = "admin";
}

impl Scopes {
    /// Every scope (development mode).
    pub const ALL: Scopes = Scopes {
        read: true,
        write: true,
        admin: true,
    };

    /// Parses a space-separated scope list. Unknown scopes are refused, naming them, so a
    /// typo in a minted token is found at once rather than as a puzzling 403 later.
    pub fn parse(list: &str) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for s in list.split_whitespace() {
            match s {
                scope::READ => scopes.read = true,
                scope::WRITE => scopes.write = true,
                scope::ADMIN => scopes.admin = true,
                other => {
                    return Err(format!(
                        "unknown scope `{other}`; scopes are `{}`, `{}` and `{}`",
                        scope::READ,
                        scope::WRITE,
                        scope::ADMIN
                    ));
                }
            }
        }
        Ok(scopes)
    }
}

/// The addresses a principal acts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Inboxes {
    /// Every address (`"*"` in the token).
    All,
    /// These normalized addresses, sorted and deduplicated.
    Only(Arc<[String]>),
}

impl Inboxes {
    /// Normalizes the token's `inboxes` claim with the messages' own normalizer: an address
    /// with `@` as an email, any other as a phone number (or short code). `"*"` alone means
    /// every address. An address that does not normalize is refused, naming it.
    pub fn parse(raw: &[String], region: Region) -> Result<Inboxes, String> {
        if raw.iter().any(|a| a == "*") {
            if raw.len() > 1 {
                return Err("`*` stands alone in inboxes: it already means every address".into());
            }
            return Ok(Inboxes::All);
        }
        let mut out = Vec::with_capacity(raw.len());
        for (i, a) in raw.iter().enumerate() {
            let channel = if a.contains('@') {
                Channel::Email
            } else {
                Channel::Sms
            };
            let n = normalize::normalize_address(channel, a, region)
                .map_err(|e| format!("inboxes[{i}] does not normalize: {e}"))?;
            out.push(n);
        }
        out.sort();
        out.dedup();
        Ok(Inboxes::Only(out.into()))
    }

    /// Whether `address` (normalized) is one of these inboxes.
    pub fn acts_for(&self, address: &str) -> bool {
        self.contains(address)
    }

    fn contains(&self, address: &str) -> bool {
        match self {
            Inboxes::All => true,
            Inboxes::Only(list) => list.binary_search_by(|a| a.as_str().cmp(address)).is_ok(),
        }
    }
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who: the token's `sub` (logged with each write, the key of its rate limit).
    pub sub: Arc<str>,
    /// What it may do.
    pub scopes: Scopes,
    /// Whom it acts for.
    pub inboxes: Inboxes,
}

impl Principal {
    /// The principal of development mode (no authentication configured, loopback only):
    /// every scope, every inbox.
    pub fn development() -> Principal {
        Principal {
            sub: "development".into(),
            scopes: Scopes::ALL,
            inboxes: Inboxes::All,
        }
    }

    /// A provider whose webhook delivery was authenticated by its signature: it writes
    /// inbound messages for any address, and reads nothing.
    pub fn provider(sub: &str) -> Principal {
        Principal {
            sub: sub.into(),
            scopes: Scopes {
                write: true,
                ..Scopes::default()
            },
            inboxes: Inboxes::All,
        }
    }

    /// What this principal may read: everything for `admin`, its inboxes with
    /// `conversations:read`, nothing otherwise.
    pub fn viewer(&self) -> Viewer {
        if self.scopes.admin {
            return Viewer::Everyone;
        }
        if !self.scopes.read {
            return Viewer::Inboxes(Arc::from([]));
        }
        match &self.inboxes {
            Inboxes::All => Viewer::Everyone,
            Inboxes::Only(list) => Viewer::Inboxes(list.clone()),
        }
    }

    /// `Ok` when the principal may read (`conversations:read` or `admin`); `FORBIDDEN`
    /// naming `scope` otherwise.
    pub fn require_read(&self) -> Result<()> {
        if self.scopes.read || self.scopes.admin {
            Ok(())
        } else {
            Err(Error::forbidden(
                "scope",
                format!("reading needs the `{}` scope", scope::READ),
            ))
        }
    }

    /// `Ok` for an `admin` principal; `FORBIDDEN` naming `field` otherwise.
    pub fn require_admin(&self, field: &str) -> Result<()> {
        if self.scopes.admin {
            Ok(())
        } else {
            Err(Error::forbidden(
                field,
                format!("{field} needs the `{}` scope", scope::ADMIN),
            ))
        }
    }

    /// Whether this principal may record `message`: `admin` may write anything; otherwise
    /// it needs `messages:write`, and an OUTBOUND message must be sent from one of its
    /// inboxes (`from`), an INBOUND one must be addressed to at least one of them (`to`).
    /// Addresses are compared normalized. An outbound `from` that does not normalize is
    /// left to the record path, which refuses it as BAD_USER_INPUT.
    pub fn authorize_write(&self, message: &NewMessage, region: Region) -> Result<()> {
        if self.scopes.admin {
            return Ok(());
        }
        if !self.scopes.write {
            return Err(Error::forbidden(
                "input",
                format!("recording a message needs the `{}` scope", scope::WRITE),
            ));
        }
        let norm = |a: &str| normalize::normalize_address(message.channel, a, region);
        match message.direction {
            Direction::Outbound => match norm(&message.from) {
                Ok(from) if !self.inboxes.contains(&from) => Err(Error::forbidden(
                    "from",
                    "an outbound message must be sent from one of your inboxes",
                )),
                _ => Ok(()),
            },
            Direction::Inbound => {
                if message
                    .to
                    .iter()
                    .filter_map(|a| norm(a).ok())
                    .any(|to| self.inboxes.contains(&to))
                {
                    Ok(())
                } else {
                    Err(Error::forbidden(
                        "to",
                        "an inbound message must be addressed to one of your inboxes",
                    ))
                }
            }
        }
    }
}

/// Whose conversations a read sees: the visibility rule, passed into every read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Viewer {
    /// Every conversation and every message (admin, `inboxes: ["*"]`, development mode,
    /// the operator commands).
    Everyone,
    /// The conversations one of whose participants is one of these normalized addresses
    /// (none when the list is empty), and their messages. Unassigned messages are not
    /// among them.
    Inboxes(Arc<[String]>),
}

impl Viewer {
    /// The visibility predicate on a conversation id column (`conversations.id`, or
    /// `messages.conversation_id`): `None` when everything is visible, otherwise
    /// `EXISTS (SELECT 1 FROM conversation_participants p WHERE p.conversation_id = column
    /// AND p.address IN (..inboxes))`: per candidate row, one point lookup per inbox in that
    /// table's primary key `(address, conversation_id)`. (An `IN (SELECT ..)` of every
    /// conversation of the inboxes made SQLite build that whole set for each statement,
    /// ten times the work of the page itself for an inbox in 2,000 conversations.) A NULL
    /// `conversation_id` (an unassigned message) never matches.
    pub fn visible(&self, conversation_id: impl ColumnTrait) -> Option<Expr> {
        match self {
            Viewer::Everyone => None,
            Viewer::Inboxes(list) if list.is_empty() => Some(Expr::val(1).eq(0)),
            Viewer::Inboxes(list) => {
                let p = Alias::new("visible_participant");
                let participating = Query::select()
                    .expr(Expr::val(1))
                    .from_as(conversation_participant::Entity, p.clone())
                    .and_where(
                        Expr::col((p.clone(), conversation_participant::Column::ConversationId))
                            .equals(conversation_id.as_column_ref()),
                    )
                    .and_where(
                        Expr::col((p, conversation_participant::Column::Address))
                            .is_in(list.iter().cloned()),
                    )
                    .to_owned();
                Some(Expr::exists(participating))
            }
        }
    }

    /// The same rule as [`Viewer::visible`], for a conversation already loaded (live
    /// updates filter what they are sent in memory): whether one of its participants, by
    /// its `participants_key`, is one of the viewer's inboxes.
    pub fn sees(&self, participants_key: &str) -> bool {
        match self {
            Viewer::Everyone => true,
            Viewer::Inboxes(list) => normalize::split_participants_key(participants_key)
                .iter()
                .any(|p| list.contains(p)),
        }
    }

    /// `Ok` when this viewer sees everything; `FORBIDDEN` naming `field` otherwise (for
    /// lists that belong to no conversation, such as unassigned messages).
    pub fn require_everyone(&self, field: &str) -> Result<()> {
        match self {
            Viewer::Everyone => Ok(()),
            Viewer::Inboxes(_) => Err(Error::forbidden(
                field,
                format!("{field} needs the `{}` scope", scope::ADMIN),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Region {
        Region::default()
    }

    fn inboxes(raw: &[&str]) -> Result<Inboxes, String> {
        let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
        Inboxes::parse(&raw, region())
    }

    #[test]
    fn inboxes_are_normalized_like_messages() {
        assert_eq!(
            inboxes(&["(415) 555-2671", "Support@Example.COM", "+14155552671"]),
            Ok(Inboxes::Only(
                vec!["+14155552671".to_owned(), "support@example.com".to_owned()].into()
            ))
        );
        assert_eq!(inboxes(&["*"]), Ok(Inboxes::All));
        assert!(inboxes(&["*", "+14155552671"]).is_err());
        assert!(
            inboxes(&["not an address"])
                .unwrap_err()
                .contains("inboxes[0]")
        );
    }

    #[test]
    fn unknown_scopes_are_refused_by_name() {
        assert_eq!(
            Scopes::parse("conversations:read  messages:write"),
            Ok(Scopes {
                read: true,
                write: true,
                admin: false
            })
        );
        assert!(
            Scopes::parse("conversations:wrote")
                .unwrap_err()
                .contains("conversations:wrote")
        );
    }

    fn message(direction: Direction, from: &str, to: &[&str]) -> NewMessage {
        NewMessage {
            channel: Channel::Sms,
            kind: None,
            direction,
            from: from.into(),
            to: to.iter().map(|s| s.to_string()).collect(),
            body: String::new(),
            attachments: vec![],
            provider_message_id: None,
            sent_at: None,
        }
    }

    fn forbidden_field(r: Result<()>) -> Option<String> {
        match r {
            Err(Error::Forbidden { field, .. }) => Some(field),
            Ok(()) => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn writes_need_the_scope_and_one_of_the_inboxes() {
        let p = Principal {
            sub: "alice".into(),
            scopes: Scopes {
                write: true,
                ..Default::default()
            },
            inboxes: inboxes(&["+14155552671"]).unwrap(),
        };
        let out = |from, to: &[&str]| {
            forbidden_field(p.authorize_write(&message(Direction::Outbound, from, to), region()))
        };
        let inb = |from, to: &[&str]| {
            forbidden_field(p.authorize_write(&message(Direction::Inbound, from, to), region()))
        };
        assert_eq!(out("4155552671", &["+12025550100"]), None);
        assert_eq!(out("+12025550100", &["+14155552671"]), Some("from".into()));
        assert_eq!(inb("+12025550100", &["(415) 555-2671"]), None);
        assert_eq!(inb("+14155552671", &["+12025550100"]), Some("to".into()));
        assert_eq!(inb("+12025550100", &["garbage"]), Some("to".into()));
        let reader = Principal {
            scopes: Scopes {
                read: true,
                ..Default::default()
            },
            ..p.clone()
        };
        assert_eq!(
            forbidden_field(reader.authorize_write(
                &message(Direction::Outbound, "+14155552671", &["+12025550100"]),
                region()
            )),
            Some("input".into())
        );
        assert_eq!(
            forbidden_field(
                Principal::development()
                    .authorize_write(&message(Direction::Inbound, "x", &["y"]), region())
            ),
            None
        );
    }

    #[test]
    fn the_viewer_follows_scopes_and_inboxes() {
        let p = |read, admin, inboxes| Principal {
            sub: "p".into(),
            scopes: Scopes {
                read,
                write: false,
                admin,
            },
            inboxes,
        };
        let some = inboxes(&["+14155552671"]).unwrap();
        assert_eq!(p(true, false, Inboxes::All).viewer(), Viewer::Everyone);
        assert_eq!(p(false, true, some.clone()).viewer(), Viewer::Everyone);
        assert_eq!(
            p(true, false, some.clone()).viewer(),
            Viewer::Inboxes(vec!["+14155552671".to_owned()].into())
        );
        assert_eq!(
            p(false, false, Inboxes::All).viewer(),
            Viewer::Inboxes(Arc::from([]))
        );
    }
}
