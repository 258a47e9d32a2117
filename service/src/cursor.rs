//! Opaque keyset cursors. A cursor is a position, (timestamp, id), tagged with the list it
//! belongs to and encoded as URL-safe base64. Decoding validates everything, so a forged
//! or foreign cursor is an `InvalidCursor` error, never a panic or a full scan.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Timelike, Utc};

use crate::error::{Error, Result};

/// Which list a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// `conversations`: position by (last_message_at, id).
    Conversation,
    /// A thread or the unassigned list: position by (sent_at, id).
    Message,
    /// Search results (`searchMessages`): position by (sent_at, id), newest first.
    SearchResult,
}

impl CursorKind {
    fn tag(self) -> &'static str {
        match self {
            CursorKind::Conversation => "c1",
            CursorKind::Message => "m1",
            CursorKind::SearchResult => "s1",
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

/// Encodes a cursor for `kind`. Every value decodes back to itself ([`decode_cursor`]),
/// including a leap second (`23:59:60.5`), which new writes normalize away
/// (`record::to_micros`) but which SQLite rows written before that may still hold.
pub fn encode_cursor(kind: CursorKind, cursor: Cursor) -> String {
    // chrono counts a leap second's time from second 59, so its microsecond timestamp is
    // the next second's: the `:leap` suffix says which of the two it is.
    let leap = if cursor.at.nanosecond() >= 1_000_000_000 {
        LEAP
    } else {
        ""
    };
    encode_numbers(kind.tag(), &[cursor.at.timestamp_micros(), cursor.id], leap)
}

/// URL-safe base64 (no padding) of `prefix`, each of `numbers` after a `:`, then
/// `suffix`: `encode_numbers("c1", &[5, 7], "")` encodes `c1:5:7`. Written into a stack
/// buffer rather than through `format!`, since a page encodes a cursor and an id per row.
/// At most 4 numbers and 32 bytes of prefix and suffix together.
pub fn encode_numbers(prefix: &str, numbers: &[i64], suffix: &str) -> String {
    // 32 bytes of prefix and suffix, and 4 x (':' + 20 digits of an i64).
    let mut raw = [0u8; 32 + 4 * 21];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        raw[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    assert!(numbers.len() <= 4 && prefix.len() + suffix.len() <= 32);
    put(prefix.as_bytes());
    let mut digits = itoa::Buffer::new();
    for n in numbers {
        put(b":");
        put(digits.format(*n).as_bytes());
    }
    put(suffix.as_bytes());
    URL_SAFE_NO_PAD.encode(&raw[..len])
}

/// The suffix of a cursor positioned on a leap second (never the end of an id).
const LEAP: &str = ":leap";

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
    let (raw, leap) = match raw.strip_suffix(LEAP) {
        Some(rest) => (rest, true),
        None => (raw.as_str(), false),
    };
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
    let at = if leap {
        // Second 59 plus one second and a fraction (chrono refuses it anywhere but at :59).
        let (secs, micros) = (at.div_euclid(1_000_000), at.rem_euclid(1_000_000));
        secs.checked_sub(1)
            .and_then(|s| DateTime::<Utc>::from_timestamp(s, (1_000_000 + micros as u32) * 1_000))
    } else {
        DateTime::<Utc>::from_timestamp_micros(at)
    }
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
    fn any_id_round_trips() {
        let at = DateTime::from_timestamp_micros(1_483_228_800_000_000).unwrap();
        for id in [1, 6, 60, 600, 160, i64::MAX] {
            let c = Cursor { at, id };
            let text = encode_cursor(CursorKind::Message, c);
            assert_eq!(decode_cursor(CursorKind::Message, &text).unwrap(), c);
        }
    }

    #[test]
    fn numbers_encode_as_their_text_would() {
        for (prefix, numbers, suffix) in [
            ("c1", vec![1_730_469_600_123_456, 42], ""),
            ("m1", vec![-62_135_596_800_000_000, i64::MAX], LEAP),
            ("Conversation", vec![i64::MIN], ""),
            (
                "x",
                vec![0, -1, 10, i64::MAX],
                "0123456789012345678901234567890",
            ),
            ("", vec![], ""),
        ] {
            let text: String = std::iter::once(prefix.to_owned())
                .chain(numbers.iter().map(|n| format!(":{n}")))
                .chain(std::iter::once(suffix.to_owned()))
                .collect();
            assert_eq!(
                encode_numbers(prefix, &numbers, suffix),
                URL_SAFE_NO_PAD.encode(text)
            );
        }
    }

    #[test]
    fn a_leap_second_round_trips() {
        // 2016-12-31T23:59:60.5Z, as SQLite rows written before normalization hold it.
        let at = "2016-12-31T23:59:60.500001Z"
            .parse::<DateTime<Utc>>()
            .unwrap();
        assert_eq!(at.nanosecond(), 1_500_001_000);
        for kind in [CursorKind::Conversation, CursorKind::Message] {
            let c = Cursor { at, id: 7 };
            let text = encode_cursor(kind, c);
            assert_eq!(decode_cursor(kind, &text).unwrap(), c);
            // The next second's cursor is a different position.
            let next = Cursor {
                at: DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap(),
                id: 7,
            };
            assert_ne!(next, c);
            assert_eq!(
                decode_cursor(kind, &encode_cursor(kind, next)).unwrap(),
                next
            );
        }
        // A leap suffix on a second that is not :59 is forged.
        let forged = URL_SAFE_NO_PAD.encode("m1:1500000:1:leap");
        assert!(matches!(
            decode_cursor(CursorKind::Message, &forged),
            Err(Error::InvalidCursor(_))
        ));
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
