//! Full-text search: the words a message is indexed by, the one query grammar, its
//! translations for PostgreSQL (`tsquery`) and SQLite (FTS5 `MATCH`), and highlights.
//!
//! **Words.** parley splits text into words itself, so that both engines index and search
//! exactly the same words: a word is a run of letters and digits after each character is
//! folded (compatibility decomposition, combining marks dropped, lowercased), so `Café`,
//! `CAFE` and `café` are one word, `ﬁle` is `file` and `²` is `2`. Everything else
//! (punctuation, symbols, emoji, spaces, control characters) separates words. HTML email
//! is reduced to its visible text first, as for snippets. The indexed text of a message
//! ([`search_text`]) is its words joined by single spaces, so each engine's own tokenizer
//! (PostgreSQL's `simple` configuration, FTS5's `unicode61`) finds the same words again.
//! Bounds keep every message indexable on both engines alike: a word keeps its first
//! [`MAX_WORD_BYTES`] bytes, and a message's first [`MAX_WORDS`] words (PostgreSQL counts
//! positions up to 16,383) and [`MAX_TEXT_BYTES`] bytes are indexed.
//!
//! **Queries** ([`parse_query`]), as typed into a search box:
//!
//! | syntax | matches messages |
//! |---|---|
//! | `refund order` | with every word |
//! | `"exact phrase"` | with these words next to each other, in this order |
//! | `-spam` | without the word (or `-"a phrase"`); at least one word must be searched for |
//! | `refund OR return` | with either (`OR` in capitals; binds the items beside it) |
//! | `refu*` | with a word starting with `refu` (at least [`MIN_PREFIX_CHARS`] characters) |
//!
//! An item that folds to several words (`555-0100`, `e-mail`, `O'Brien`) is a phrase of
//! them. Unbalanced quotes end at the end of the query; a lone `OR` or `-` is ignored.
//! Queries are limited to [`MAX_QUERY_CHARS`] characters and [`MAX_QUERY_WORDS`] words;
//! a query with no word to search for is refused. The query is never passed to a database
//! as written: only the folded words are, each quoted ([`SearchQuery::tsquery`],
//! [`SearchQuery::fts5`]).

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

use crate::{message, message_text};

use crate::error::{Error, Result};
use crate::snippet;
use crate::types::Channel;

/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 256;

/// The most words a query may hold (phrase words included).
pub const MAX_QUERY_WORDS: usize = 16;

/// The fewest characters before a prefix's `*`.
pub const MIN_PREFIX_CHARS: usize = 2;

/// The bytes of a word that are indexed and searched (longer words are cut, at a
/// character boundary, in the index and in queries alike).
pub const MAX_WORD_BYTES: usize = 64;

/// The most words of one message that are indexed (PostgreSQL's highest position).
pub const MAX_WORDS: usize = 16_383;

/// The most bytes of indexed text per message (keeps a `tsvector` under PostgreSQL's 1 MB).
pub const MAX_TEXT_BYTES: usize = 256 * 1024;

/// The most bytes of a body's visible text that are read (bodies are at most 1 MiB).
const MAX_VISIBLE_BYTES: usize = 1 << 20;

/// A word of a text: where it is and what it folds to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Byte offset of its first character in the text.
    pub start: usize,
    /// Byte offset just past its last character (marks included).
    pub end: usize,
    /// The folded word (at most [`MAX_WORD_BYTES`] bytes).
    pub folded: String,
}

/// Appends the folded form of `c` to `out`: compatibility decomposition, combining marks
/// dropped, lowercased, a few letters without a decomposition spelled out (`ß` as `ss`,
/// `æ` as `ae`, `ø` as `o`, ..), final sigma as sigma.
fn fold_char(c: char, out: &mut Vec<char>) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    decompose_compatible(c, |d| {
        if is_combining_mark(d) {
            return;
        }
        for l in d.to_lowercase() {
            // Letters that carry no decomposition but that readers type without their
            // stroke or ligature (as PostgreSQL's `unaccent` folds them).
            match l {
                'ß' => out.extend(['s', 's']),
                'æ' => out.extend(['a', 'e']),
                'œ' => out.extend(['o', 'e']),
                'þ' => out.extend(['t', 'h']),
                'ø' => out.push('o'),
                'đ' | 'ð' => out.push('d'),
                'ł' => out.push('l'),
                'ı' => out.push('i'),
                'ς' => out.push('σ'),
                l if !is_combining_mark(l) => out.push(l),
                _ => {}
            }
        }
    });
}

/// The words of `text`, at most `limit` of them.
pub fn words(text: &str, limit: usize) -> Vec<Word> {
    let mut out = Vec::new();
    let mut folded = Vec::new();
    let mut current: Option<Word> = None;
    for (i, c) in text.char_indices() {
        if out.len() >= limit {
            return out;
        }
        folded.clear();
        fold_char(c, &mut folded);
        if folded.is_empty() {
            // A combining mark: part of the word it follows.
            if let Some(w) = current.as_mut() {
                w.end = i + c.len_utf8();
            }
            continue;
        }
        for &f in &folded {
            if f.is_alphanumeric() {
                let w = current.get_or_insert_with(|| Word {
                    start: i,
                    end: i,
                    folded: String::new(),
                });
                if w.folded.len() + f.len_utf8() <= MAX_WORD_BYTES {
                    w.folded.push(f);
                }
                w.end = i + c.len_utf8();
            } else if let Some(w) = current.take() {
                out.push(w);
                if out.len() >= limit {
                    return out;
                }
            }
        }
    }
    out.extend(current);
    out.truncate(limit);
    out
}

/// The folded words of `text`, in order.
fn folded_words(text: &str) -> Vec<String> {
    words(text, usize::MAX)
        .into_iter()
        .map(|w| w.folded)
        .collect()
}

/// The text a message is indexed by: the words of its visible text (HTML email reduced to
/// text), folded, joined by single spaces, within [`MAX_WORDS`] and [`MAX_TEXT_BYTES`].
pub fn search_text(channel: Channel, body: &str) -> String {
    indexed_text(channel, None, body)
}

/// [`search_text`] of an email with its subject: the subject's words first, then the
/// body's, within the same limits. (A phrase can span the last word of the subject and the
/// first of the body.)
pub fn indexed_text(channel: Channel, subject: Option<&str>, body: &str) -> String {
    let visible = snippet::message_text(channel, body, MAX_VISIBLE_BYTES);
    let subject = subject.map(|s| words(s, MAX_WORDS)).unwrap_or_default();
    let mut out = String::new();
    for w in subject
        .iter()
        .chain(&words(&visible, MAX_WORDS))
        .take(MAX_WORDS)
    {
        if out.len() + 1 + w.folded.len() > MAX_TEXT_BYTES {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&w.folded);
    }
    out
}

/// One searched item: a word, a prefix, or a phrase (consecutive words, the last one
/// possibly a prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Atom {
    /// The folded words, at least one.
    pub words: Vec<String>,
    /// The last word is a prefix.
    pub prefix: bool,
}

/// A parsed query: every group must match (a group matches when one of its atoms does),
/// and no excluded atom may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// Alternatives, all required; never empty.
    pub groups: Vec<Vec<Atom>>,
    /// Atoms a match must not have.
    pub excluded: Vec<Atom>,
}

/// What the lexer reads.
enum Lexeme {
    Or,
    Item { negated: bool, atom: Option<Atom> },
}

fn is_space(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

fn bad(reason: impl Into<String>) -> Error {
    Error::invalid("query", reason)
}

/// Parses a search query (see the module doc). Every input either parses or is refused
/// with `BAD_USER_INPUT` naming `query`: too long, too many words, a prefix too short,
/// or nothing to search for.
pub fn parse_query(input: &str) -> Result<SearchQuery> {
    let length = input.chars().count();
    if length > MAX_QUERY_CHARS {
        return Err(bad(format!(
            "a search query has at most {MAX_QUERY_CHARS} characters (got {length})"
        )));
    }
    let lexemes = lex(input)?;
    let mut groups: Vec<Vec<Atom>> = Vec::new();
    let mut excluded = Vec::new();
    let mut or_pending = false;
    let mut after_positive = false;
    for lexeme in lexemes {
        match lexeme {
            Lexeme::Or => or_pending = after_positive,
            Lexeme::Item { atom: None, .. } => {}
            Lexeme::Item {
                negated: true,
                atom: Some(atom),
            } => {
                excluded.push(atom);
                or_pending = false;
                after_positive = false;
            }
            Lexeme::Item {
                negated: false,
                atom: Some(atom),
            } => {
                match groups.last_mut() {
                    Some(group) if or_pending => group.push(atom),
                    _ => groups.push(vec![atom]),
                }
                or_pending = false;
                after_positive = true;
            }
        }
    }
    let count: usize = groups
        .iter()
        .flatten()
        .chain(&excluded)
        .map(|a| a.words.len())
        .sum();
    if count > MAX_QUERY_WORDS {
        return Err(bad(format!(
            "a search query has at most {MAX_QUERY_WORDS} words (got {count})"
        )));
    }
    if groups.is_empty() {
        return Err(bad(
            "nothing to search for: give at least one word (letters or digits) that is not excluded",
        ));
    }
    Ok(SearchQuery { groups, excluded })
}

fn lex(input: &str) -> Result<Vec<Lexeme>> {
    let mut out = Vec::new();
    let mut rest = input;
    loop {
        rest = rest.trim_start_matches(is_space);
        let Some(first) = rest.chars().next() else {
            return Ok(out);
        };
        let mut negated = false;
        if first == '-' {
            let after = &rest[1..];
            if after.chars().next().is_some_and(|c| !is_space(c)) {
                negated = true;
                rest = after;
            }
        }
        if let Some(quoted) = rest.strip_prefix('"') {
            let (inside, after) = match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            };
            let (prefix, after) = match after.strip_prefix('*') {
                Some(after) => (true, after),
                None => (false, after),
            };
            out.push(Lexeme::Item {
                negated,
                atom: atom(inside, prefix)?,
            });
            rest = after;
            continue;
        }
        let end = rest
            .find(|c: char| is_space(c) || c == '"')
            .unwrap_or(rest.len());
        let item = &rest[..end];
        rest = &rest[end..];
        if item == "OR" && !negated {
            out.push(Lexeme::Or);
            continue;
        }
        let stem = item.trim_end_matches('*');
        out.push(Lexeme::Item {
            negated,
            atom: atom(stem, stem.len() < item.len())?,
        });
    }
}

/// The atom of one item's text: `None` when it holds no word.
fn atom(text: &str, prefix: bool) -> Result<Option<Atom>> {
    let words = folded_words(text);
    let Some(last) = words.last() else {
        return Ok(None);
    };
    if prefix && last.chars().count() < MIN_PREFIX_CHARS {
        return Err(bad(format!(
            "a prefix needs at least {MIN_PREFIX_CHARS} letters or digits before `*` (got `{}*`)",
            text.trim()
        )));
    }
    Ok(Some(Atom { words, prefix }))
}

impl SearchQuery {
    /// The query as PostgreSQL `tsquery` text, for `to_tsquery('simple', $1)`: every word a
    /// quoted lexeme, phrases with `<->`, prefixes with `:*`.
    pub fn tsquery(&self) -> String {
        fn lexeme(word: &str) -> String {
            format!("'{}'", word.replace('\\', "\\\\").replace('\'', "''"))
        }
        fn atom(a: &Atom) -> String {
            let mut parts: Vec<String> = a.words.iter().map(|w| lexeme(w)).collect();
            if a.prefix
                && let Some(last) = parts.last_mut()
            {
                last.push_str(":*");
            }
            if parts.len() == 1 {
                parts.remove(0)
            } else {
                format!("( {} )", parts.join(" <-> "))
            }
        }
        let mut clauses: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let alts: Vec<String> = g.iter().map(atom).collect();
                format!("( {} )", alts.join(" | "))
            })
            .collect();
        clauses.extend(self.excluded.iter().map(|a| format!("!{}", atom(a))));
        clauses.join(" & ")
    }

    /// The query as an FTS5 `MATCH` expression: every atom a double-quoted string (a
    /// phrase when it has several words), prefixes with `*`.
    pub fn fts5(&self) -> String {
        fn atom(a: &Atom) -> String {
            let star = if a.prefix { " *" } else { "" };
            format!("\"{}\"{star}", a.words.join(" ").replace('"', "\"\""))
        }
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let alts: Vec<String> = g.iter().map(atom).collect();
                format!("({})", alts.join(" OR "))
            })
            .collect();
        let mut out = format!("({})", groups.join(" AND "));
        for a in &self.excluded {
            out.push_str(" NOT ");
            out.push_str(&atom(a));
        }
        out
    }

    /// The words of `text` that the query's searched atoms match (whole phrases only).
    fn marks(&self, text: &[Word]) -> Vec<bool> {
        let mut marked = vec![false; text.len()];
        for a in self.groups.iter().flatten() {
            let n = a.words.len();
            if n > text.len() {
                continue;
            }
            for i in 0..=text.len() - n {
                let hit = a.words.iter().enumerate().all(|(k, w)| {
                    let t = &text[i + k].folded;
                    if a.prefix && k == n - 1 {
                        t.starts_with(w.as_str())
                    } else {
                        t == w
                    }
                });
                if hit {
                    marked[i..i + n].iter_mut().for_each(|m| *m = true);
                }
            }
        }
        marked
    }

    /// A fragment of the message's visible text around its first match, HTML-escaped,
    /// each matched word wrapped in `<mark>`..`</mark>`, with `…` where text was left out.
    pub fn highlight(&self, channel: Channel, body: &str) -> String {
        let text = snippet::message_text(channel, body, MAX_VISIBLE_BYTES);
        let words = words(&text, MAX_WORDS);
        let marks = self.marks(&words);
        let first = marks.iter().position(|m| *m).unwrap_or(0);
        let from = first.saturating_sub(HIGHLIGHT_WORDS_BEFORE);
        let begin = if from == 0 {
            0
        } else {
            words.get(from).map_or(0, |w| w.start)
        };
        let budget = begin + HIGHLIGHT_BYTES;
        let mut end = begin;
        let mut out = String::new();
        if begin > 0 {
            out.push('…');
        }
        for (i, w) in words.iter().enumerate().skip(from) {
            if i > first && w.end > budget {
                break;
            }
            escape_into(&mut out, &text[end..w.start]);
            if marks[i] {
                out.push_str("<mark>");
                escape_into(&mut out, &text[w.start..w.end]);
                out.push_str("</mark>");
            } else {
                escape_into(&mut out, &text[w.start..w.end]);
            }
            end = w.end;
        }
        if words.is_empty() {
            let cut = text.floor_char_boundary_at(HIGHLIGHT_BYTES);
            escape_into(&mut out, &text[..cut]);
            end = cut;
        }
        if end < text.len() {
            // Punctuation right after the last word is kept ("refund!").
            let tail = &text[end..];
            let keep = tail
                .find(|c: char| c.is_whitespace())
                .unwrap_or(tail.len())
                .min(8);
            let keep = tail.floor_char_boundary_at(keep);
            escape_into(&mut out, &tail[..keep]);
            if end + keep < text.len() {
                out.push('…');
            }
        }
        out
    }
}

/// Words of context shown before the first match of a highlight.
const HIGHLIGHT_WORDS_BEFORE: usize = 6;

/// About how many bytes of text a highlight shows (the first match is always whole).
const HIGHLIGHT_BYTES: usize = 200;

trait FloorBoundary {
    fn floor_char_boundary_at(&self, at: usize) -> usize;
}

impl FloorBoundary for str {
    fn floor_char_boundary_at(&self, at: usize) -> usize {
        (0..=at.min(self.len()))
            .rev()
            .find(|&i| self.is_char_boundary(i))
            .unwrap_or(0)
    }
}

/// Appends `text` to `out` with `&`, `<`, `>`, `"` and `'` escaped.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Indexes the messages that have no searchable text yet (those stored before search
/// existed), with their email subjects, `batch` at a time in id order, each batch in one transaction; returns how
/// many were indexed. The server runs it right after migrating; a second run finds
/// nothing, and runs racing each other (two processes starting) skip what the other wrote.
pub async fn index_missing_texts(db: &DatabaseConnection, batch: u64) -> Result<u64> {
    let mut after = 0i64;
    let mut indexed = 0;
    loop {
        let missing = Query::select()
            .expr(Expr::val(1))
            .from(message_text::Entity)
            .and_where(
                Expr::col((message_text::Entity, message_text::Column::MessageId))
                    .equals((message::Entity, message::Column::Id)),
            )
            .to_owned();
        let rows = message::Entity::find()
            .filter(message::Column::Id.gt(after))
            .filter(Expr::exists(missing).not())
            .order_by_asc(message::Column::Id)
            .limit(Ord::max(batch, 1))
            .all(db)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(indexed);
        };
        after = last.id;
        let txn = db.begin().await?;
        let ids: Vec<i64> = rows.iter().map(|m| m.id).collect();
        let headers = crate::headers::headers_by_message_ids(&txn, &ids).await?;
        let texts = rows.iter().map(|m| {
            let subject = headers.get(&m.id).and_then(|h| h.subject.as_deref());
            (m, subject)
        });
        indexed += crate::statements::insert_missing_texts(&txn, texts).await?;
        txn.commit().await?;
    }
}

/// The condition "this text row's keys differ from its message's" (`t` the text row, `m`
/// the message), in `backend`'s spelling of a null-safe comparison.
fn keys_differ(backend: DbBackend) -> String {
    let differs = match backend {
        DbBackend::Postgres => "IS DISTINCT FROM",
        _ => "IS NOT",
    };
    ["conversation_id", "channel", "direction", "sent_at"]
        .iter()
        .map(|c| format!("message_texts.{c} {differs} m.{c}"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// How many search text rows carry keys (conversation, channel, direction, `sent_at`) that
/// differ from their message's: `verify` reports them.
pub async fn search_key_drifts(db: &impl ConnectionTrait) -> Result<u64> {
    let backend = db.get_database_backend();
    let sql = format!(
        "SELECT count(*) AS n FROM message_texts JOIN messages m ON m.id = message_texts.message_id \
         WHERE {}",
        keys_differ(backend)
    );
    let n: i64 = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .map(|row| row.try_get("", "n"))
        .transpose()?
        .unwrap_or(0);
    Ok(n as u64)
}

/// Copies each drifted search text row's keys from its message (`verify --repair`);
/// returns how many rows changed.
pub async fn repair_search_keys(db: &impl ConnectionTrait) -> Result<u64> {
    let backend = db.get_database_backend();
    let sql = format!(
        "UPDATE message_texts SET conversation_id = m.conversation_id, channel = m.channel, \
         direction = m.direction, sent_at = m.sent_at FROM messages m \
         WHERE m.id = message_texts.message_id AND ({})",
        keys_differ(backend)
    );
    Ok(db
        .execute_raw(Statement::from_string(backend, sql))
        .await?
        .rows_affected())
}

/// Where a participant prefix is looked for in `conversation_participants`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressPrefix {
    /// Normalized addresses starting with this text.
    Address(String),
    /// Email addresses whose domain starts with this text.
    Domain(String),
}

/// The longest participant prefix, in characters.
pub const MAX_PREFIX_CHARS: usize = 320;

/// What a participant prefix, typed in any spelling, is looked for as. Text with a letter
/// or an `@` is an email prefix: `@exa` a domain prefix, `bob@ex` (plus-tag dropped, as
/// addresses are stored) an address prefix, `bob` or `example` either. Anything else is a
/// phone prefix by its digits (at least 2): `+1 555 01` as `+155501`; without a leading
/// `+`, also with `region`'s country code in front (`(804) 55` as `+180455`) and as a short
/// code. Refused with `BAD_USER_INPUT` naming `field` when it holds nothing to look for.
pub fn address_prefixes(
    raw: &str,
    region: crate::normalize::Region,
    field: &str,
) -> Result<Vec<AddressPrefix>> {
    let text: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .to_lowercase();
    let length = text.chars().count();
    if length > MAX_PREFIX_CHARS {
        return Err(Error::invalid(
            field,
            format!(
                "a participant prefix has at most {MAX_PREFIX_CHARS} characters (got {length})"
            ),
        ));
    }
    if text.contains('@') || text.chars().any(char::is_alphabetic) {
        if let Some(domain) = text.strip_prefix('@') {
            if domain.is_empty() {
                return Err(Error::invalid(field, "give part of a domain after `@`"));
            }
            return Ok(vec![AddressPrefix::Domain(domain.to_owned())]);
        }
        if let Some((local, domain)) = text.split_once('@') {
            let local = local.split('+').next().unwrap_or(local);
            return Ok(vec![AddressPrefix::Address(format!("{local}@{domain}"))]);
        }
        return Ok(vec![
            AddressPrefix::Address(text.clone()),
            AddressPrefix::Domain(text),
        ]);
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 2 {
        return Err(Error::invalid(
            field,
            "give at least 2 digits of a phone number, or part of an email address",
        ));
    }
    let mut out = vec![
        AddressPrefix::Address(format!("+{digits}")),
        AddressPrefix::Address(digits.clone()),
    ];
    if !text.starts_with('+')
        && let Some(meta) = phonenumber::metadata::DATABASE.by_id(region.0.as_ref())
    {
        let code = meta.country_code().to_string();
        out.push(AddressPrefix::Address(format!("+{code}{digits}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> SearchQuery {
        parse_query(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn atom(words: &[&str], prefix: bool) -> Atom {
        Atom {
            words: words.iter().map(|w| w.to_string()).collect(),
            prefix,
        }
    }

    #[test]
    fn words_fold_accents_case_and_compatibility_forms() {
        let w: Vec<String> = words(
            "Café CAFE cafe\u{301} ﬁle x² Ωmega ΣΟΦΟΣ Straße Ærø Łódź",
            100,
        )
        .into_iter()
        .map(|w| w.folded)
        .collect();
        assert_eq!(
            w,
            [
                "cafe",
                "cafe",
                "cafe",
                "file",
                "x2",
                "ωmega",
                "σοφοσ",
                "strasse",
                "aero",
                "lodz"
            ]
        );
    }

    #[test]
    fn punctuation_emoji_and_controls_separate_words() {
        let w: Vec<String> = words("refund🎉now,+1 (804) 555-1234\0nul\u{202e}x", 100)
            .into_iter()
            .map(|w| w.folded)
            .collect();
        assert_eq!(w, ["refund", "now", "1", "804", "555", "1234", "nul", "x"]);
    }

    #[test]
    fn search_text_reduces_html_and_bounds_words() {
        let body = "<html><body><p>Your <b>R&eacute;fund</b></p><script>x()</script></body></html>";
        assert_eq!(search_text(Channel::Email, body), "your refund");
        // SMS bodies are never HTML.
        assert_eq!(search_text(Channel::Sms, "<p>hi</p>"), "p hi p");
        let long = "a".repeat(100);
        assert_eq!(search_text(Channel::Sms, &long), "a".repeat(MAX_WORD_BYTES));
        let many = "w ".repeat(MAX_WORDS + 10);
        assert_eq!(
            search_text(Channel::Sms, &many).split(' ').count(),
            MAX_WORDS
        );
    }

    #[test]
    fn the_grammar() {
        assert_eq!(
            q("refund order"),
            SearchQuery {
                groups: vec![
                    vec![atom(&["refund"], false)],
                    vec![atom(&["order"], false)]
                ],
                excluded: vec![],
            }
        );
        assert_eq!(
            q("\"Exact  Phrase\" -spam refu* a OR b -\"x y\""),
            SearchQuery {
                groups: vec![
                    vec![atom(&["exact", "phrase"], false)],
                    vec![atom(&["refu"], true)],
                    vec![atom(&["a"], false), atom(&["b"], false)],
                ],
                excluded: vec![atom(&["spam"], false), atom(&["x", "y"], false)],
            }
        );
        // Items of several words are phrases; unbalanced quotes run to the end; lone
        // operators are ignored.
        assert_eq!(
            q("555-1234 \"open end"),
            SearchQuery {
                groups: vec![
                    vec![atom(&["555", "1234"], false)],
                    vec![atom(&["open", "end"], false)],
                ],
                excluded: vec![],
            }
        );
        assert_eq!(q("OR a OR - OR"), q("a"));
        assert_eq!(q("a or b").groups.len(), 3);
    }

    #[test]
    fn translations_quote_every_word() {
        let query = q("\"o'neil x\" -spam refu* a OR b");
        assert_eq!(
            query.tsquery(),
            "( ( 'o' <-> 'neil' <-> 'x' ) ) & ( 'refu':* ) & ( 'a' | 'b' ) & !'spam'"
        );
        assert_eq!(
            query.fts5(),
            "((\"o neil x\") AND (\"refu\" *) AND (\"a\" OR \"b\")) NOT \"spam\""
        );
    }

    #[test]
    fn refusals_name_the_query() {
        for bad_query in [
            "",
            "   ",
            "!!! ???",
            "-only",
            "a*",
            &"x".repeat(MAX_QUERY_CHARS + 1),
            &"w ".repeat(MAX_QUERY_WORDS + 1),
            &"\0".repeat(10),
        ] {
            match parse_query(bad_query) {
                Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "query"),
                other => panic!("{bad_query:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn highlights_are_escaped_and_marked() {
        let query = q("refund");
        assert_eq!(
            query.highlight(Channel::Sms, "<b>Your</b> refund & \"more\""),
            "&lt;b&gt;Your&lt;/b&gt; <mark>refund</mark> &amp; &quot;more&quot;"
        );
        assert_eq!(
            q("\"order 12\" café").highlight(Channel::Sms, "Cafe order 12, order 13"),
            "<mark>Cafe</mark> <mark>order</mark> <mark>12</mark>, order 13"
        );
        let long = format!("{} refund {}", "lead ".repeat(100), "tail ".repeat(100));
        let h = query.highlight(Channel::Sms, &long);
        assert!(h.starts_with("…lead lead"), "{h}");
        assert!(h.contains("<mark>refund</mark>"), "{h}");
        assert!(h.ends_with('…'), "{h}");
        assert!(h.len() < 300, "{h}");
    }

    proptest! {
        #[test]
        fn any_input_parses_or_is_refused_by_field(input in "\\PC{0,300}") {
            match parse_query(&input) {
                Ok(query) => {
                    prop_assert!(!query.groups.is_empty());
                    let _ = (query.tsquery(), query.fts5());
                }
                Err(Error::InvalidInput { field, .. }) => prop_assert_eq!(field, "query"),
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }

        #[test]
        fn folding_is_idempotent(text in "\\PC{0,64}") {
            let once: Vec<String> = folded_words(&text);
            let twice: Vec<String> = folded_words(&once.join(" "));
            prop_assert_eq!(once, twice);
        }
    }
}
