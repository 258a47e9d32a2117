//! Email threading headers (SPEC section 14): `Subject`, `Message-ID`, `In-Reply-To` and
//! `References`, validated, stored beside the message and read back for it and for its
//! conversation's subject. They never choose the conversation: grouping stays channel +
//! participants (SPEC section 3).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::conversation;
use crate::error::{Error, Result};
use crate::query::MAX_IDS_PER_STATEMENT;
use crate::statements::json_strings;
use crate::types::Channel;

pub use entity::message_header;

/// The longest subject accepted, in bytes (RFC 5322's line limit).
pub const MAX_SUBJECT_BYTES: usize = 998;
/// The longest message id accepted, in bytes, angle brackets included.
pub const MAX_ID_BYTES: usize = 998;
/// The most ids `References` may list.
pub const MAX_REFERENCES: usize = 100;

/// The threading headers of an email, as the caller gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailHeaders {
    /// `Subject`.
    pub subject: Option<String>,
    /// `Message-ID`: `<id-left@id-right>`.
    pub message_id: Option<String>,
    /// `In-Reply-To`: the id of the message this one answers.
    pub in_reply_to: Option<String>,
    /// `References`: the ids of the thread, oldest first.
    pub references: Vec<String>,
}

impl EmailHeaders {
    /// Whether no header was given.
    pub fn is_empty(&self) -> bool {
        self.subject.is_none()
            && self.message_id.is_none()
            && self.in_reply_to.is_none()
            && self.references.is_empty()
    }
}

/// Checks the headers; field names are GraphQL's (`subject`, `messageId`, `inReplyTo`,
/// `references[i]`). Headers travel on email only; ids must be one angle-bracketed
/// `left@right` each (RFC 5322 `msg-id`), without spaces.
pub fn validate(channel: Channel, headers: &EmailHeaders) -> Result<()> {
    if headers.is_empty() {
        return Ok(());
    }
    if channel != Channel::Email {
        let field = if headers.subject.is_some() {
            "subject"
        } else if headers.message_id.is_some() {
            "messageId"
        } else if headers.in_reply_to.is_some() {
            "inReplyTo"
        } else {
            "references"
        };
        return Err(Error::invalid(
            field,
            "email headers travel on channel EMAIL only",
        ));
    }
    if let Some(subject) = &headers.subject {
        if subject.len() > MAX_SUBJECT_BYTES {
            return Err(Error::invalid(
                "subject",
                format!(
                    "{} bytes given; at most {MAX_SUBJECT_BYTES} are allowed",
                    subject.len()
                ),
            ));
        }
        // CR and LF would let a stored subject inject headers into a re-sent email.
        if subject.chars().any(|c| c.is_control() && c != '\t') {
            return Err(Error::invalid(
                "subject",
                "contains a control character (line breaks and NUL included); unfold the header first",
            ));
        }
    }
    if let Some(id) = &headers.message_id {
        check_id("messageId", id)?;
    }
    if let Some(id) = &headers.in_reply_to {
        check_id("inReplyTo", id)?;
    }
    if headers.references.len() > MAX_REFERENCES {
        return Err(Error::invalid(
            "references",
            format!(
                "{} ids given; at most {MAX_REFERENCES} are allowed",
                headers.references.len()
            ),
        ));
    }
    for (i, id) in headers.references.iter().enumerate() {
        check_id(&format!("references[{i}]"), id)?;
    }
    Ok(())
}

fn check_id(field: &str, id: &str) -> Result<()> {
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "{} bytes given; at most {MAX_ID_BYTES} are allowed",
                id.len()
            ),
        ));
    }
    let inner = id.strip_prefix('<').and_then(|s| s.strip_suffix('>'));
    let ok = inner.is_some_and(|inner| {
        let mut parts = inner.split('@');
        matches!(
            (parts.next(), parts.next(), parts.next()),
            (Some(l), Some(r), None) if !l.is_empty() && !r.is_empty()
        ) && inner
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '<' && c != '>')
    });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "a message id is one angle-bracketed <left@right> without spaces, e.g. <abc.123@mail.example.com>",
        ))
    }
}

/// The subject a conversation shows: `subject` without leading reply and forward markers
/// (`Re:`, `RE:`, `Fwd:`, `FW:`, `Re[2]:`, repeated), trimmed.
pub fn thread_subject(subject: &str) -> String {
    let mut rest = subject.trim();
    loop {
        let lower = rest.to_ascii_lowercase();
        let marker = ["re", "fwd", "fw"]
            .into_iter()
            .find(|m| lower.starts_with(m))
            .map(str::len);
        let Some(len) = marker else { break };
        let mut after = &rest[len..];
        if let Some(counted) = after.strip_prefix('[') {
            match counted.find(']') {
                Some(end) if counted[..end].chars().all(|c| c.is_ascii_digit()) => {
                    after = &counted[end + 1..];
                }
                _ => break,
            }
        }
        match after.trim_start().strip_prefix(':') {
            Some(tail) => rest = tail.trim_start(),
            None => break,
        }
    }
    rest.trim_end().to_owned()
}

/// Stores `headers` for a just-inserted message, in the record transaction.
pub(crate) async fn insert_headers(
    conn: &impl ConnectionTrait,
    message_id: i64,
    conversation_id: Option<i64>,
    sent_at: DateTime<Utc>,
    headers: &EmailHeaders,
) -> Result<()> {
    use sea_orm::ActiveValue::Set;
    let row = message_header::ActiveModel {
        message_id: Set(message_id),
        conversation_id: Set(conversation_id),
        sent_at: Set(sent_at),
        subject: Set(headers.subject.clone()),
        rfc_message_id: Set(headers.message_id.clone()),
        in_reply_to: Set(headers.in_reply_to.clone()),
        references: Set(json_strings(&headers.references)),
    };
    message_header::Entity::insert(row)
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// The headers of `message_ids` (absent: recorded without headers).
pub async fn headers_by_message_ids(
    db: &impl ConnectionTrait,
    message_ids: &[i64],
) -> Result<HashMap<i64, message_header::Model>> {
    let mut out = HashMap::with_capacity(message_ids.len());
    for chunk in message_ids.chunks(MAX_IDS_PER_STATEMENT) {
        let rows = message_header::Entity::find()
            .filter(message_header::Column::MessageId.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        out.extend(rows.into_iter().map(|h| (h.message_id, h)));
    }
    Ok(out)
}

/// Each conversation's subject: its first (by sent time, then id) email subject, reply and
/// forward markers stripped ([`thread_subject`]). Absent for conversations without one.
/// One statement: a correlated lookup per conversation on the headers' thread index.
pub async fn subjects(
    db: &impl ConnectionTrait,
    conversation_ids: &[i64],
) -> Result<HashMap<i64, String>> {
    use message_header::Column as H;
    let mut out = HashMap::with_capacity(conversation_ids.len());
    for chunk in conversation_ids.chunks(MAX_IDS_PER_STATEMENT) {
        let h = Alias::new("h");
        let first = Query::select()
            .column((h.clone(), H::Subject))
            .from_as(message_header::Entity, h.clone())
            .and_where(
                Expr::col((h.clone(), H::ConversationId))
                    .equals((conversation::Entity, conversation::Column::Id)),
            )
            .and_where(Expr::col((h.clone(), H::Subject)).is_not_null())
            .order_by((h.clone(), H::SentAt), Order::Asc)
            .order_by((h, H::MessageId), Order::Asc)
            .limit(1)
            .to_owned();
        let rows: Vec<(i64, Option<String>)> = conversation::Entity::find()
            .select_only()
            .column(conversation::Column::Id)
            .expr_as(first, "subject")
            .filter(conversation::Column::Id.is_in(chunk.iter().copied()))
            .filter(conversation::Column::Channel.eq(Channel::Email))
            .into_tuple()
            .all(db)
            .await?;
        out.extend(
            rows.into_iter()
                .filter_map(|(id, s)| s.map(|s| (id, thread_subject(&s)))),
        );
    }
    Ok(out)
}

/// For each `(conversation id, Message-ID)`, the id of the message of that conversation
/// that carries the Message-ID (the first one stored, should two claim it).
pub async fn messages_by_rfc_ids(
    db: &impl ConnectionTrait,
    keys: &[(i64, String)],
) -> Result<HashMap<(i64, String), i64>> {
    use message_header::Column as H;
    let mut out = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(MAX_IDS_PER_STATEMENT / 2) {
        let rows: Vec<(Option<i64>, Option<String>, i64)> = message_header::Entity::find()
            .select_only()
            .columns([H::ConversationId, H::RfcMessageId, H::MessageId])
            .filter(H::ConversationId.is_in(chunk.iter().map(|k| k.0)))
            .filter(H::RfcMessageId.is_in(chunk.iter().map(|k| k.1.clone())))
            .into_tuple()
            .all(db)
            .await?;
        for (c, rfc, m) in rows {
            if let (Some(c), Some(rfc)) = (c, rfc) {
                let key = (c, rfc);
                if chunk.contains(&key) {
                    let slot = out.entry(key).or_insert(m);
                    *slot = std::cmp::min(*slot, m);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_and_forward_markers_are_stripped() {
        assert_eq!(thread_subject("Re: RE: Fwd: Lunch?"), "Lunch?");
        assert_eq!(thread_subject("  FW:Re[3]: Invoice 12 "), "Invoice 12");
        assert_eq!(thread_subject("Report"), "Report");
        assert_eq!(thread_subject("Regarding: the plan"), "Regarding: the plan");
        assert_eq!(thread_subject("Re"), "Re");
    }

    #[test]
    fn message_ids_must_be_angle_bracketed_left_at_right() {
        let h = |id: &str| EmailHeaders {
            message_id: Some(id.into()),
            ..Default::default()
        };
        assert!(validate(Channel::Email, &h("<a.1@mail.example.com>")).is_ok());
        for bad in ["a@b", "<a b@c>", "<@c>", "<a@>", "<a@b@c>", "<<a@b>>", ""] {
            match validate(Channel::Email, &h(bad)) {
                Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "messageId"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(validate(Channel::Sms, &h("<a@b>")).is_err());
        let subject = EmailHeaders {
            subject: Some("a\r\nBcc: x@y".into()),
            ..Default::default()
        };
        assert!(validate(Channel::Email, &subject).is_err());
    }
}
