//! Opaque keyset cursors. A cursor is a position, (timestamp, id), tagged with the list it
//! belongs to and encoded as URL-safe base64. Decoding validates everything, so a forged
//! or foreign cursor is an `InvalidCursor` error, never a panic or a full scan.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// Which list a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// `conversations`: position by (last_message_at, id).
    Conversation,
    /// A thread or the unassigned list: position by (sent_at, id).
    Message,
}

impl CursorKind {
    fn tag(self) -> &'static str {
        match self {
            CursorKind::Conversation => "c1",
            CursorKind::Message => "m1",
        }
    }
}

/// A position in a keyset-ordered list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The ordering timestamp of the row at this position.
    pub at: DateTime<Utc>,
    /// The row id, breaking ties.
    pub id: i64,
}

/// Encodes a cursor for `kind`.
pub fn encode_cursor(kind: CursorKind, cursor: Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}:{}:{}",
        kind.tag(),
        cursor.at.timestamp_micros(),
        cursor.id
    ))
}

/// Decodes a cursor issued for `kind`.
pub fn decode_cursor(kind: CursorKind, text: &str) -> Result<Cursor> {
    let bad = |why: &str| {
        Error::InvalidCursor(format!(
            "{why}; pass a cursor from this list's edges or pageInfo, or none to start over"
        ))
    };
    if text.len() > 128 {
        return Err(bad("cursor is too long"));
    }
    let raw = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad("cursor is not one this server issued"))?;
    let raw = String::from_utf8(raw).map_err(|_| bad("cursor is not one this server issued"))?;
    let mut parts = raw.split(':');
    let (Some(tag), Some(at), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("cursor is not one this server issued"));
    };
    if tag != kind.tag() {
        return Err(bad("cursor belongs to another list"));
    }
    let at: i64 = at.parse().map_err(|_| bad("cursor is malformed"))?;
    let id: i64 = id.parse().map_err(|_| bad("cursor is malformed"))?;
    let at = DateTime::<Utc>::from_timestamp_micros(at)
        .filter(|t| t.timestamp() >= 0 && t.timestamp() < 253_402_300_800)
        .ok_or_else(|| bad("cursor is out of range"))?;
    if id <= 0 {
        return Err(bad("cursor is out of range"));
    }
    Ok(Cursor { at, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            at: DateTime::from_timestamp_micros(1_730_469_600_123_456).unwrap(),
            id: 42,
        };
        let text = encode_cursor(CursorKind::Conversation, c);
        assert_eq!(decode_cursor(CursorKind::Conversation, &text).unwrap(), c);
    }

    #[test]
    fn cursor_of_another_list_is_rejected() {
        let c = Cursor {
            at: DateTime::from_timestamp_micros(1).unwrap(),
            id: 1,
        };
        let text = encode_cursor(CursorKind::Message, c);
        assert!(matches!(
            decode_cursor(CursorKind::Conversation, &text),
            Err(Error::InvalidCursor(_))
        ));
    }

    #[test]
    fn forged_cursors_are_rejected_not_panicking() {
        for text in [
            "",
            "!!!",
            "bm9wZQ",
            &URL_SAFE_NO_PAD.encode("c1:abc:1"),
            &URL_SAFE_NO_PAD.encode("c1:1:-5"),
            &URL_SAFE_NO_PAD.encode("c1:99999999999999999999:1"),
            &URL_SAFE_NO_PAD.encode("c1:1:1:1"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
            &"A".repeat(10_000),
        ] {
            assert!(
                matches!(
                    decode_cursor(CursorKind::Conversation, text),
                    Err(Error::InvalidCursor(_))
                ),
                "{text:?}"
            );
        }
    }
}
