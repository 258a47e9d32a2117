//! The read side's rows decoded by position.
//!
//! SeaORM's derived `FromQueryResult` looks every column up by name (a hash of the name
//! per column per row) and decodes through its own wrappers. A page's statement selects
//! the entity's columns in declaration order (`Entity::find()`), so the page's decoders read
//! them by position, straight from the sqlx row, with sqlx's own type check per column. The
//! column names are checked once per statement (its first row), so a statement that selects
//! anything else fails loudly instead of being misread.
//!
//! A conversation's `participants` (a JSON array of the sorted normalized addresses) is not
//! read (the read side's statements select every column but it, [`CONVERSATION_READ`]):
//! it is built from `participants_key`, the same addresses joined
//! by U+001F, which every write stores beside it from the same sorted list. Nothing
//! on the read side reads `participants` (the API splits `participants_key`), and
//! parsing the JSON cost about 2,000 instructions a row.

use chrono::{DateTime, Utc};
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::sqlite::SqliteRow;
use sea_orm::sqlx::{Column as _, Row};
use std::sync::LazyLock;

use sea_orm::{DbErr, FromQueryResult, Iden, Iterable, QueryResult};
use serde_json::Value as Json;

use crate::types::{Channel, Direction, Kind};
use crate::{conversation, message, normalize};

/// A value decoded from a row of a read-side statement by position.
pub(crate) trait FromRow: Sized {
    /// The names of the leading columns the decoder reads by position, in order.
    fn columns() -> &'static [String];

    /// Decodes one row.
    fn from_row(row: &QueryResult) -> Result<Self, DbErr>;
}

/// Checks that `row` (the first of a statement's rows) starts with `T`'s columns, in order.
pub(crate) fn check_columns<T: FromRow>(row: &QueryResult) -> Result<(), DbErr> {
    check_columns_at::<T>(row, 0)
}

/// Checks that `row` has `T`'s columns, in order, from column `at` on.
pub(crate) fn check_columns_at<T: FromRow>(row: &QueryResult, at: usize) -> Result<(), DbErr> {
    fn names<R: Row>(row: &R) -> Vec<&str> {
        row.columns().iter().map(|c| c.name()).collect()
    }
    let found = if let Some(r) = row.try_as_pg_row() {
        names(r)
    } else if let Some(r) = row.try_as_sqlite_row() {
        names(r)
    } else {
        return Ok(());
    };
    let wanted = T::columns();
    let read = found.get(at..).unwrap_or_default();
    if read.len() >= wanted.len() && read.iter().zip(wanted).all(|(f, w)| *f == w) {
        Ok(())
    } else {
        Err(DbErr::Type(format!(
            "a page's statement selects {found:?}, its decoder reads {wanted:?} from column {at}"
        )))
    }
}

/// Reading a timestamp column of a sqlx row by position.
trait Timestamps {
    fn time(&self, i: usize) -> Result<DateTime<Utc>, DbErr>;
}

/// Reading one column of a sqlx row by position, typed.
trait Columns: Timestamps {
    fn int(&self, i: usize) -> Result<i64, DbErr>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, DbErr>;
    fn boolean(&self, i: usize) -> Result<bool, DbErr>;
    fn text(&self, i: usize) -> Result<String, DbErr>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, DbErr>;
    /// The text of column `i`, borrowed and parsed by `parse` (the enums).
    fn parsed<T>(&self, i: usize, parse: fn(&str) -> Result<T, String>) -> Result<T, DbErr>;
    fn json(&self, i: usize) -> Result<Json, DbErr>;
    fn opt_json(&self, i: usize) -> Result<Option<Json>, DbErr>;
}

fn decode_err(i: usize, e: impl std::fmt::Display) -> DbErr {
    DbErr::Type(format!("column {i}: {e}"))
}

impl Columns for SqliteRow {
    fn int(&self, i: usize) -> Result<i64, DbErr> {
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, DbErr> {
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
    fn boolean(&self, i: usize) -> Result<bool, DbErr> {
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
    fn text(&self, i: usize) -> Result<String, DbErr> {
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, DbErr> {
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
    fn parsed<T>(&self, i: usize, parse: fn(&str) -> Result<T, String>) -> Result<T, DbErr> {
        let s: &str = self.try_get(i).map_err(|e| decode_err(i, e))?;
        parse(s).map_err(|e| decode_err(i, e))
    }
    fn json(&self, i: usize) -> Result<Json, DbErr> {
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
    fn opt_json(&self, i: usize) -> Result<Option<Json>, DbErr> {
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
}

/// PostgreSQL's fixed type oids (`pg_type.dat`) of the column types the read side decodes.
mod pg_oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const TEXT: u32 = 25;
    pub const VARCHAR: u32 = 1043;
    pub const TIMESTAMPTZ: u32 = 1184;
}

/// Column `i`'s bytes, when the value is not NULL, came in binary format and has one of the
/// types `oids`; `None` leaves the column to sqlx's checked decode, which reads a NULL and
/// explains a mismatch.
///
/// sqlx's `try_get` checks a column's type against every type the Rust type accepts, each
/// comparison a match over `PgType` (`&str` accepts five: about 250 instructions a text
/// column), and decodes through its error plumbing; a page of 50 conversations reads 550
/// columns, 50 messages 800. Comparing the oid is one match.
fn pg_bytes<'r>(row: &'r PgRow, i: usize, oids: &[u32]) -> Option<&'r [u8]> {
    use sea_orm::sqlx::ValueRef as _;
    use sea_orm::sqlx::postgres::PgValueFormat;
    let raw = row.try_get_raw(i).ok()?;
    if raw.is_null() || raw.format() != PgValueFormat::Binary {
        return None;
    }
    let oid = raw.type_info().oid()?.0;
    if !oids.contains(&oid) {
        return None;
    }
    raw.as_bytes().ok()
}

/// A `bigint` column's value, read from its 8 big-endian bytes.
fn pg_int(row: &PgRow, i: usize) -> Option<i64> {
    let bytes = pg_bytes(row, i, &[pg_oid::INT8])?;
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

/// A `text` or `varchar` column's value (binary format is the UTF-8 text itself).
fn pg_str(row: &PgRow, i: usize) -> Option<&str> {
    std::str::from_utf8(pg_bytes(row, i, &[pg_oid::TEXT, pg_oid::VARCHAR])?).ok()
}

impl Columns for PgRow {
    fn int(&self, i: usize) -> Result<i64, DbErr> {
        match pg_int(self, i) {
            Some(n) => Ok(n),
            None => self.try_get(i).map_err(|e| decode_err(i, e)),
        }
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, DbErr> {
        match pg_int(self, i) {
            Some(n) => Ok(Some(n)),
            None => self.try_get(i).map_err(|e| decode_err(i, e)),
        }
    }
    fn boolean(&self, i: usize) -> Result<bool, DbErr> {
        match pg_bytes(self, i, &[pg_oid::BOOL]) {
            Some([b]) => Ok(*b != 0),
            _ => self.try_get(i).map_err(|e| decode_err(i, e)),
        }
    }
    fn text(&self, i: usize) -> Result<String, DbErr> {
        match pg_str(self, i) {
            Some(s) => Ok(s.to_owned()),
            None => self.try_get(i).map_err(|e| decode_err(i, e)),
        }
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, DbErr> {
        match pg_str(self, i) {
            Some(s) => Ok(Some(s.to_owned())),
            None => self.try_get(i).map_err(|e| decode_err(i, e)),
        }
    }
    fn parsed<T>(&self, i: usize, parse: fn(&str) -> Result<T, String>) -> Result<T, DbErr> {
        let s = match pg_str(self, i) {
            Some(s) => s,
            None => self.try_get(i).map_err(|e| decode_err(i, e))?,
        };
        parse(s).map_err(|e| decode_err(i, e))
    }
    fn json(&self, i: usize) -> Result<Json, DbErr> {
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
    fn opt_json(&self, i: usize) -> Result<Option<Json>, DbErr> {
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
}

impl Timestamps for PgRow {
    /// A `timestamptz` in binary format is microseconds since 2000-01-01 UTC, big-endian;
    /// read directly (sqlx adds a `chrono::Duration` to a `NaiveDateTime`, about 400
    /// instructions). Any other value goes through sqlx.
    fn time(&self, i: usize) -> Result<DateTime<Utc>, DbErr> {
        const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
        if let Some(bytes) = pg_bytes(self, i, &[pg_oid::TIMESTAMPTZ])
            && let Ok(bytes) = <[u8; 8]>::try_from(bytes)
            && let Some(at) = i64::from_be_bytes(bytes)
                .checked_add(POSTGRES_EPOCH_MICROS)
                .and_then(DateTime::from_timestamp_micros)
        {
            return Ok(at);
        }
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
}

impl Timestamps for SqliteRow {
    /// SQLite stores a timestamp as RFC 3339 text in UTC
    /// (`2026-12-01T08:35:12.997805+00:00`, as sqlx encodes a `DateTime<Utc>`): that
    /// spelling is read by [`utc_rfc3339`], anything else by sqlx (which tries RFC 3339 with
    /// any offset, then a dozen other formats, one after the other).
    fn time(&self, i: usize) -> Result<DateTime<Utc>, DbErr> {
        if let Ok(text) = self.try_get::<&str, _>(i)
            && let Some(at) = utc_rfc3339(text)
        {
            return Ok(at);
        }
        self.try_get(i).map_err(|e| decode_err(i, e))
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f]+00:00` (or `Z` for the offset; 1 to 9 fraction digits) as a
/// UTC time; `None` for anything else (another offset, a leap second, a bad date).
fn utc_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let [b'.', tail @ ..] = rest {
        let digits = tail.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(20, 20 + digits)? * 10u32.pow(9 - digits as u32);
        rest = &tail[digits..];
    }
    if rest != b"+00:00" && rest != b"Z" {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    // `second` 60 (a leap second) is refused here and left to sqlx.
    if second > 59 {
        return None;
    }
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(date.and_time(time).and_utc())
}

/// Decodes `row` with `decode` on its sqlx row, or with SeaORM's by-name decoder of `T`
/// when it is neither a PostgreSQL nor an SQLite row.
fn by_position<T: FromQueryResult>(
    row: &QueryResult,
    pg: fn(&PgRow) -> Result<T, DbErr>,
    sqlite: fn(&SqliteRow) -> Result<T, DbErr>,
) -> Result<T, DbErr> {
    sql_row(row, pg, sqlite).unwrap_or_else(|| T::from_query_result(row, ""))
}

/// `row` read by `pg` or `sqlite`, whichever engine it came from; `None` when it came from
/// neither.
fn sql_row<T>(
    row: &QueryResult,
    pg: fn(&PgRow) -> Result<T, DbErr>,
    sqlite: fn(&SqliteRow) -> Result<T, DbErr>,
) -> Option<Result<T, DbErr>> {
    if let Some(r) = row.try_as_pg_row() {
        Some(pg(r))
    } else {
        row.try_as_sqlite_row().map(sqlite)
    }
}

/// `row` read by `pg` or `sqlite`; an error when it is not an SQL row.
fn sql_row_only<T>(
    row: &QueryResult,
    pg: fn(&PgRow) -> Result<T, DbErr>,
    sqlite: fn(&SqliteRow) -> Result<T, DbErr>,
) -> Result<T, DbErr> {
    sql_row(row, pg, sqlite).unwrap_or_else(|| Err(DbErr::Type("not an SQL row".into())))
}

fn column_names<C: Iden>(columns: impl IntoIterator<Item = C>) -> Vec<String> {
    columns.into_iter().map(|c| c.to_string()).collect()
}

/// The columns of `conversations` the read side selects, in this order: all but
/// `participants` (built from `participants_key`).
pub(crate) const CONVERSATION_READ: [conversation::Column; 11] = {
    use conversation::Column::*;
    [
        Id,
        Channel,
        ParticipantsKey,
        MessageCount,
        FirstMessageAt,
        LastMessageAt,
        LastMessageId,
        Snippet,
        CreatedAt,
        UpdatedAt,
        LastSequence,
    ]
};

/// The sorted normalized addresses of `key` as the `participants` JSON array.
fn participants(key: &str) -> Json {
    Json::Array(
        normalize::split_participants_key(key)
            .into_iter()
            .map(Json::String)
            .collect(),
    )
}

fn conversation_at(r: &impl Columns) -> Result<conversation::Model, DbErr> {
    let participants_key = r.text(2)?;
    Ok(conversation::Model {
        id: r.int(0)?,
        channel: r.parsed(1, str::parse::<Channel>)?,
        participants: participants(&participants_key),
        participants_key,
        message_count: r.int(3)?,
        first_message_at: r.time(4)?,
        last_message_at: r.time(5)?,
        last_message_id: r.opt_int(6)?,
        snippet: r.text(7)?,
        created_at: r.time(8)?,
        updated_at: r.time(9)?,
        last_sequence: r.int(10)?,
    })
}

impl FromRow for conversation::Model {
    fn columns() -> &'static [String] {
        static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| column_names(CONVERSATION_READ));
        &NAMES
    }

    fn from_row(row: &QueryResult) -> Result<Self, DbErr> {
        by_position(row, conversation_at, conversation_at)
    }
}

/// How many columns a conversation row has: what follows them in a joined row starts here.
pub(crate) const CONVERSATION_COLUMNS: usize = CONVERSATION_READ.len();

/// A conversation row followed by the state columns of [`super::conversation_page_with_state`]
/// (`read_up_to`, `sent_after`, `archived`; all NULL when the inbox has no state row).
pub(crate) fn state_at(
    row: &QueryResult,
) -> Result<Option<super::conversations::InboxState>, DbErr> {
    fn read(r: &impl Columns) -> Result<Option<super::conversations::InboxState>, DbErr> {
        let at = CONVERSATION_COLUMNS;
        Ok(match r.opt_int(at)? {
            None => None,
            Some(read_up_to) => Some(super::conversations::InboxState {
                read_up_to,
                sent_after: r.int(at + 1)?,
                archived: r.boolean(at + 2)?,
            }),
        })
    }
    sql_row_only(row, read, read)
}

fn message_at(r: &impl Columns) -> Result<message::Model, DbErr> {
    message_from(r, 0)
}

/// A message row's columns, starting at column `at`.
fn message_from(r: &impl Columns, at: usize) -> Result<message::Model, DbErr> {
    Ok(message::Model {
        id: r.int(at)?,
        conversation_id: r.opt_int(at + 1)?,
        channel: r.parsed(at + 2, str::parse::<Channel>)?,
        kind: r.parsed(at + 3, str::parse::<Kind>)?,
        direction: r.parsed(at + 4, str::parse::<Direction>)?,
        from_raw: r.text(at + 5)?,
        to_raw: r.json(at + 6)?,
        from_address: r.opt_text(at + 7)?,
        to_addresses: r.opt_json(at + 8)?,
        body: r.text(at + 9)?,
        attachments: r.json(at + 10)?,
        provider_message_id: r.opt_text(at + 11)?,
        sent_at: r.time(at + 12)?,
        recorded_at: r.time(at + 13)?,
        assignment_error: r.opt_text(at + 14)?,
        sequence: r.opt_int(at + 15)?,
    })
}

/// The message that follows a conversation's columns in a row of
/// [`super::find_conversation_with_thread`]; `None` when they are NULL (the thread's page is
/// empty, and the conversation came alone).
pub(crate) fn message_after_conversation(
    row: &QueryResult,
) -> Result<Option<message::Model>, DbErr> {
    fn read(r: &impl Columns) -> Result<Option<message::Model>, DbErr> {
        match r.opt_int(CONVERSATION_COLUMNS)? {
            None => Ok(None),
            Some(_) => message_from(r, CONVERSATION_COLUMNS).map(Some),
        }
    }
    sql_row_only(row, read, read)
}

impl FromRow for message::Model {
    fn columns() -> &'static [String] {
        static NAMES: LazyLock<Vec<String>> =
            LazyLock::new(|| column_names(message::Column::iter()));
        &NAMES
    }

    fn from_row(row: &QueryResult) -> Result<Self, DbErr> {
        by_position(row, message_at, message_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Iterable;

    #[test]
    fn the_sqlite_timestamp_reader_agrees_with_sqlx_spelling() {
        use chrono::{SecondsFormat, TimeZone};
        for at in [
            Utc.with_ymd_and_hms(2026, 12, 1, 8, 35, 12).unwrap(),
            Utc.timestamp_opt(1_796_124_100, 997_805_000).unwrap(),
            Utc.timestamp_opt(1_796_124_100, 1).unwrap(),
            Utc.timestamp_opt(1_796_124_100, 120_000_000).unwrap(),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap(),
        ] {
            // What sqlx writes for a `DateTime<Utc>` on SQLite.
            let text = at.to_rfc3339_opts(SecondsFormat::AutoSi, false);
            assert_eq!(utc_rfc3339(&text), Some(at), "{text}");
            let z = at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
            assert_eq!(utc_rfc3339(&z), Some(at), "{z}");
        }
        for other in [
            "2026-12-01T08:35:12+01:00",
            "2026-12-01 08:35:12",
            "2026-02-30T08:35:12+00:00",
            "2026-12-01T08:35:60+00:00",
            "2026-12-01T08:35:12.+00:00",
            "2026-12-01T08:35:12.1234567890+00:00",
            "2026-12-01T08:35:12+00:00x",
            "2026-12-0lT08:35:12+00:00",
            "",
        ] {
            assert_eq!(utc_rfc3339(other), None, "{other}");
        }
    }

    #[test]
    fn a_conversation_row_has_the_columns_its_decoder_reads() {
        let all: Vec<String> = conversation::Column::iter()
            .map(|c| c.to_string())
            .filter(|c| c != "participants")
            .collect();
        assert_eq!(&all, conversation::Model::columns());
        assert_eq!(message::Model::columns().len(), 16);
    }

    #[test]
    fn participants_are_the_keys_addresses() {
        let key = normalize::participants_key(&["+14155550100".into(), "a@x.com".into()]);
        assert_eq!(
            participants(&key),
            serde_json::json!(["+14155550100", "a@x.com"])
        );
        assert_eq!(participants(""), serde_json::json!([]));
    }
}
