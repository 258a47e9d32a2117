//! The conversation snippet: a short, single-line preview of a message body (SPEC §4).
//!
//! Runs on every recorded message and bodies reach 1 MiB, so everything here is linear in the
//! input and stops reading as soon as it has enough text.

use std::collections::HashSet;

use unicode_segmentation::UnicodeSegmentation;

use crate::types::Channel;

/// Snippet length used when the caller names none (the `snippet_length` setting's default).
pub const DEFAULT_SNIPPET_LENGTH: usize = 64;

/// The longest snippet that can be asked for, in user-perceived characters.
pub const MAX_SNIPPET_LENGTH: usize = 4096;

/// Bytes a snippet may take per user-perceived character asked for (`…` included). One
/// cluster can be arbitrarily long (a letter with 400,000 combining accents is one), so the
/// character limit alone does not bound a snippet's size; this does: a snippet of length `n`
/// is at most `32 n` bytes (2 KiB at the default length). 32 is room for what real text
/// puts in one character (a family emoji is 25 bytes, a Hangul syllable of jamo 9, a
/// letter with a few accents under 10), so only stacked-mark abuse is cut by bytes.
pub const MAX_SNIPPET_BYTES_PER_CHARACTER: usize = 32;

/// Elements whose content is never shown to a reader.
const HIDDEN_ELEMENTS: &[&str] = &["script", "style", "title", "template"];

/// Elements that separate text visually; each becomes a space.
const BLOCK_ELEMENTS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "br",
    "caption",
    "center",
    "dd",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "html",
    "li",
    "main",
    "nav",
    "ol",
    "option",
    "p",
    "pre",
    "section",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "ul",
];

/// Tags that on their own mark a body as HTML.
const HTML_MARKER_TAGS: &[&str] = &[
    "html", "head", "body", "p", "div", "br", "span", "a", "table", "img", "meta",
];

/// Longest entity reference looked up (the longest named one has 32 characters); longer runs
/// are plain text, which bounds the work per `&`.
const MAX_ENTITY_LEN: usize = 34;

/// Snippet of a message body: if `html` is true, HTML reduced to text (script/style/head
/// contents dropped, entities decoded, block tags become spaces); then whitespace (all Unicode
/// whitespace incl. NBSP) collapsed to single spaces and trimmed; then cut to at most
/// `max_graphemes` user-perceived characters (extended grapheme clusters), never inside a
/// cluster, with '…' appended when cut (the '…' counts inside the limit: result has at most
/// max_graphemes clusters). max_graphemes is clamped to 1..=MAX_SNIPPET_LENGTH.
///
/// The result is also at most [`MAX_SNIPPET_BYTES_PER_CHARACTER`] × `max_graphemes` bytes,
/// `…` included: when the clusters kept would be longer, as many whole clusters as fit are
/// kept, and when not even the first one fits it is cut at a Unicode scalar boundary.
pub fn snippet(body: &str, html: bool, max_graphemes: usize) -> String {
    let mut text = Collector::new(max_graphemes.clamp(1, MAX_SNIPPET_LENGTH));
    if html {
        html_to_text(body, &mut text);
    } else {
        text.push_str(body);
    }
    text.finish()
}

/// The snippet of a message on `channel`: an email body that looks like HTML is reduced
/// to text first; any other body is taken as plain text. The one rule that recording,
/// recomputing, verifying and the API's `Message.snippet` share.
pub fn message_snippet(channel: Channel, body: &str, max_graphemes: usize) -> String {
    let html = channel == Channel::Email && looks_like_html(body);
    snippet(body, html, max_graphemes)
}

/// The visible text of a message on `channel`, by the rule of [`message_snippet`] (HTML
/// email reduced to text, whitespace collapsed) but not cut to a snippet: at most
/// `max_bytes` bytes, cut at a character boundary without `…`. Search indexes and
/// highlights this text.
pub fn message_text(channel: Channel, body: &str, max_bytes: usize) -> String {
    let max_bytes = max_bytes.max(1);
    let mut text = Collector::new(max_bytes);
    if channel == Channel::Email && looks_like_html(body) {
        html_to_text(body, &mut text);
    } else {
        text.push_str(body);
    }
    let mut out = text.out;
    out.truncate(floor_char_boundary(&out, max_bytes));
    out
}

/// Whether an email body looks like HTML (has a tag like <html, <body, <p, <div, <br, <span,
/// <a , <table, or any `<tag ...>` with a matching close); plain text with "a < b" must be
/// false.
pub fn looks_like_html(body: &str) -> bool {
    let bytes = body.as_bytes();
    // Names of tags opened so far; a later `</name>` proves markup. One pass, so a body of many
    // unclosed `<x>` stays linear.
    let mut opened: HashSet<String> = HashSet::new();
    let mut no_tag_end = false;
    let mut from = 0;
    while let Some(offset) = body[from..].find('<') {
        let lt = from + offset;
        from = lt + 1;
        let rest = &bytes[lt + 1..];
        if starts_with_ignore_case(rest, b"!doctype html") {
            return true;
        }
        let (closing, name_start) = match rest.first() {
            Some(b'/') => (true, 1),
            _ => (false, 0),
        };
        let name_len = tag_name_len(&rest[name_start..]);
        if name_len == 0 || name_len > 32 {
            continue;
        }
        let name = &body[lt + 1 + name_start..lt + 1 + name_start + name_len];
        let after = rest.get(name_start + name_len).copied();
        if closing {
            if after == Some(b'>') && opened.contains(&name.to_ascii_lowercase()) {
                return true;
            }
            continue;
        }
        let delimited = matches!(
            after,
            Some(b'>' | b'/' | b' ' | b'\t' | b'\r' | b'\n' | b'\x0c')
        );
        if !delimited {
            continue;
        }
        let name = name.to_ascii_lowercase();
        // `a` needs an attribute ("<a href"): a bare "<a>" occurs in prose.
        if HTML_MARKER_TAGS.contains(&name.as_str()) && !(name == "a" && after == Some(b'>')) {
            return true;
        }
        if no_tag_end {
            continue;
        }
        match tag_end(body, lt + 1 + name_len) {
            Some(end) => {
                opened.insert(name);
                from = end + 1;
            }
            // Nothing after this point ends a tag; searching again from each later '<' would
            // be quadratic.
            None => no_tag_end = true,
        }
    }
    false
}

/// Collects text with whitespace collapsed and knows when it has enough for the snippet.
struct Collector {
    out: String,
    /// Whitespace (or a block boundary) seen since the last character written.
    pending_space: bool,
    max: usize,
    /// The byte limit of the result (`max` × [`MAX_SNIPPET_BYTES_PER_CHARACTER`]).
    max_bytes: usize,
    /// Byte length of `out` at which to count graphemes next.
    next_check: usize,
    /// `out` holds at least `max + 2` clusters: the first `max` are final whatever follows
    /// (appending can only extend the last cluster), and there is more than `max`.
    full: bool,
}

impl Collector {
    fn new(max: usize) -> Self {
        Collector {
            out: String::new(),
            pending_space: false,
            max,
            max_bytes: max * MAX_SNIPPET_BYTES_PER_CHARACTER,
            next_check: max + 2,
            full: false,
        }
    }

    fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            if self.full {
                return;
            }
            self.push_char(c);
        }
    }

    fn push_char(&mut self, c: char) {
        if c.is_whitespace() {
            self.pending_space = true;
            return;
        }
        if self.pending_space && !self.out.is_empty() {
            self.out.push(' ');
        }
        self.pending_space = false;
        self.out.push(c);
        // Past the byte limit (and one more character, which decides whether a cluster
        // ends at the limit) the result is byte-cut, and nothing that follows changes it.
        if self.out.len() > self.max_bytes + 4 {
            self.full = true;
            return;
        }
        if self.out.len() >= self.next_check {
            // Counting at doubling sizes keeps the total counting work linear.
            if self.out.graphemes(true).take(self.max + 2).count() >= self.max + 2 {
                self.full = true;
            } else {
                self.next_check = self.out.len() * 2;
            }
        }
    }

    /// A block boundary: acts like whitespace.
    fn boundary(&mut self) {
        self.pending_space = true;
    }

    fn finish(self) -> String {
        let Collector {
            mut out,
            max,
            max_bytes,
            ..
        } = self;
        let mut starts = out.grapheme_indices(true).map(|(i, _)| i).skip(max - 1);
        // Keep max - 1 clusters (room for the '…') if there are more than max.
        let mut keep = match (starts.next(), starts.next()) {
            (Some(keep), Some(_)) => keep,
            _ if out.len() <= max_bytes => return out,
            _ => out.len(),
        };
        let budget = max_bytes - '…'.len_utf8();
        if keep > budget {
            // Whole clusters up to the byte budget; inside the first one when it alone is
            // longer, at a scalar boundary.
            keep = out
                .grapheme_indices(true)
                .map(|(i, _)| i)
                .take_while(|&i| i <= budget)
                .last()
                .filter(|&i| i > 0)
                // With a limit of 1 the '…' alone is the one character.
                .unwrap_or_else(|| match max {
                    1 => 0,
                    _ => floor_char_boundary(&out, budget),
                });
        }
        out.truncate(keep);
        // A cut right after a space would show "word …"; only a lone space is dropped, so no
        // cluster is split.
        if out.graphemes(true).next_back() == Some(" ") {
            out.pop();
        }
        out.push('…');
        out
    }
}

/// The largest index at most `at` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    (0..=at.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// Feeds the visible text of an HTML document to `text`, in one forward pass: every search
/// either consumes what it scanned or ends the pass, so the work is linear even on hostile
/// markup (the `nanohtml2text` converter rescans the rest of the document for every
/// unterminated tag, which is quadratic: 40 KB of `<a` took a second).
fn html_to_text(html: &str, text: &mut Collector) {
    let bytes = html.as_bytes();
    let mut i = 0;
    // Set once a search for the end of `<head>` failed; it would fail again from further on.
    let mut head_never_ends = false;
    while i < bytes.len() && !text.full {
        let Some(offset) = html[i..].find(['<', '&']) else {
            text.push_str(&html[i..]);
            break;
        };
        let at = i + offset;
        text.push_str(&html[i..at]);
        if bytes[at] == b'&' {
            i = push_entity(html, at, text);
            continue;
        }
        let rest = &bytes[at + 1..];
        if rest.starts_with(b"!--") {
            i = find_from(html, at + 4, "-->").map_or(bytes.len(), |p| p + 3);
            continue;
        }
        let (closing, name_start) = match rest.first() {
            Some(b'/') => (true, at + 2),
            Some(b'!' | b'?') => {
                // <!DOCTYPE ...>, <![CDATA[...]]>, <?xml ...?>: not text.
                i = find_from(html, at + 1, ">").map_or(bytes.len(), |p| p + 1);
                continue;
            }
            _ => (false, at + 1),
        };
        let name_len = tag_name_len(&bytes[name_start..]);
        if name_len == 0 {
            // "a < b", "<3": a literal '<'.
            text.push_char('<');
            i = at + 1;
            continue;
        }
        let Some(end) = tag_end(html, name_start + name_len) else {
            // A tag left open at the end of the document is dropped, as browsers do.
            break;
        };
        let name = &html[name_start..name_start + name_len];
        let self_closing = bytes[end - 1] == b'/';
        i = end + 1;
        if closing {
            if is_one_of(name, BLOCK_ELEMENTS) {
                text.boundary();
            }
        } else if is_one_of(name, HIDDEN_ELEMENTS) && !self_closing {
            i = skip_past_closing_tag(html, i, name);
        } else if name.eq_ignore_ascii_case("head") && !self_closing && !head_never_ends {
            match find_head_end(html, i) {
                Some(p) => i = p,
                None => head_never_ends = true,
            }
        } else if is_one_of(name, BLOCK_ELEMENTS) {
            text.boundary();
        }
    }
}

/// Decodes the character reference at `at` (which holds '&') into `text` and returns the index
/// after it. Decoding is delegated to `nanohtml2text`, which knows every named entity.
fn push_entity(html: &str, at: usize, text: &mut Collector) -> usize {
    let rest = &html.as_bytes()[at + 1..];
    let len = match rest.first() {
        Some(b'#') => {
            let (skip, hex) = match rest.get(1) {
                Some(b'x' | b'X') => (2, true),
                _ => (1, false),
            };
            skip + rest[skip..]
                .iter()
                .take(MAX_ENTITY_LEN)
                .take_while(|b| {
                    if hex {
                        b.is_ascii_hexdigit()
                    } else {
                        b.is_ascii_digit()
                    }
                })
                .count()
        }
        _ => rest
            .iter()
            .take(MAX_ENTITY_LEN + 1)
            .take_while(|b| b.is_ascii_alphanumeric())
            .count(),
    };
    if len == 0 || len > MAX_ENTITY_LEN {
        text.push_char('&');
        return at + 1;
    }
    let mut end = at + 1 + len;
    if rest.get(len) == Some(&b';') {
        end += 1;
    }
    let decoded = nanohtml2text::html2text(&html[at..end]);
    if decoded.is_empty() {
        // The converter trims whitespace, so an entity that decodes to nothing was whitespace
        // (&#32;, &Tab;, &NewLine;).
        text.push_char(' ');
    } else {
        text.push_str(&decoded);
    }
    end
}

/// Length of the tag name at the start of `bytes`: an ASCII letter, then letters, digits, '-',
/// ':' or '_'.
fn tag_name_len(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(b) if b.is_ascii_alphabetic() => bytes
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'_'))
            .count(),
        _ => 0,
    }
}

/// Index of the '>' that ends the tag whose attributes start at `from`, skipping a '>' inside a
/// quoted attribute value.
fn tag_end(html: &str, from: usize) -> Option<usize> {
    let mut quote = None;
    let mut after_eq = false;
    for (i, &b) in html.as_bytes()[from..].iter().enumerate() {
        match quote {
            Some(q) if b == q => {
                quote = None;
                after_eq = false;
            }
            Some(_) => {}
            None => match b {
                b'>' => return Some(from + i),
                b'"' | b'\'' if after_eq => quote = Some(b),
                b'=' => after_eq = true,
                b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' => {}
                _ => after_eq = false,
            },
        }
    }
    None
}

/// The index after `</name ...>` at or after `from`, or the end of the document when the
/// element is never closed (its content is hidden, so dropping the rest is right).
fn skip_past_closing_tag(html: &str, from: usize, name: &str) -> usize {
    let bytes = html.as_bytes();
    let mut i = from;
    while let Some(p) = find_from(html, i, "</") {
        let name_at = p + 2;
        let after = name_at + name.len();
        if bytes
            .get(name_at..after)
            .is_some_and(|candidate| candidate.eq_ignore_ascii_case(name.as_bytes()))
            && bytes
                .get(after)
                .is_none_or(|b| b.is_ascii_whitespace() || matches!(b, b'>' | b'/'))
        {
            return find_from(html, after, ">").map_or(bytes.len(), |q| q + 1);
        }
        i = name_at;
    }
    bytes.len()
}

/// Where the document head ends: the first `</head` or `<body` at or after `from`.
fn find_head_end(html: &str, from: usize) -> Option<usize> {
    let bytes = html.as_bytes();
    let mut i = from;
    while let Some(p) = find_from(html, i, "<") {
        let rest = &bytes[p..];
        if starts_with_ignore_case(rest, b"</head") || starts_with_ignore_case(rest, b"<body") {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

fn find_from(haystack: &str, from: usize, needle: &str) -> Option<usize> {
    haystack
        .get(from..)
        .and_then(|rest| rest.find(needle))
        .map(|p| from + p)
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn is_one_of(name: &str, names: &[&str]) -> bool {
    names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    const MIB: usize = 1024 * 1024;

    fn clusters(s: &str) -> usize {
        s.graphemes(true).count()
    }

    /// The specification, written the slow and obvious way.
    fn reference(text: &str, max: usize) -> String {
        let max = max.clamp(1, MAX_SNIPPET_LENGTH);
        let bytes = max * MAX_SNIPPET_BYTES_PER_CHARACTER;
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let all: Vec<&str> = collapsed.graphemes(true).collect();
        if all.len() <= max && collapsed.len() <= bytes {
            return collapsed;
        }
        let mut kept: Vec<&str> = all[..(max - 1).min(all.len())].to_vec();
        // The byte limit: drop whole clusters until the rest and the '…' fit.
        while !kept.is_empty() && kept.concat().len() + 3 > bytes {
            kept.pop();
        }
        let mut kept = kept.concat();
        if kept.is_empty() && max > 1 {
            // Not even the first cluster fits: its longest scalar prefix that does.
            for c in all[0].chars() {
                if kept.len() + c.len_utf8() + 3 > bytes {
                    break;
                }
                kept.push(c);
            }
        }
        if kept.graphemes(true).next_back() == Some(" ") {
            kept.pop();
        }
        kept + "…"
    }

    /// The CPU time this thread has used, user and system (`/proc/thread-self/stat`, in
    /// ticks of 10 ms); `None` where there is no such file.
    fn thread_cpu() -> Option<Duration> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        // After the command name in parentheses: field 3 (state) onwards; utime and stime
        // are fields 14 and 15, in USER_HZ (100 a second on Linux).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    fn assert_fast(what: &str, f: impl FnOnce() -> String) -> String {
        let start = Instant::now();
        let cpu = thread_cpu();
        let out = f();
        // The work done, not the wall clock: on a machine busy with other builds and tests,
        // this thread can wait longer for a core than it runs (the wall clock measured
        // 1.05 s where the work takes a fraction of that). The wall clock where /proc is
        // missing.
        let took = match (cpu, thread_cpu()) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => start.elapsed(),
        };
        // Debug build; typically a few milliseconds. Generous, yet tight enough to catch
        // quadratic behaviour (which takes minutes here).
        assert!(took < Duration::from_secs(1), "{what} took {took:?} of CPU");
        out
    }

    #[test]
    fn whitespace_of_every_kind_collapses_to_single_spaces() {
        let body = "  Hello,\r\n\tworld\u{a0}\u{a0}again\u{2003}\u{3000}and\u{2028}more \r\n";
        assert_eq!(snippet(body, false, 64), "Hello, world again and more");
        assert_eq!(snippet(" \r\n\t\u{a0} ", false, 64), "");
        assert_eq!(snippet("", true, 64), "");
    }

    #[test]
    fn cuts_count_the_ellipsis_inside_the_limit() {
        assert_eq!(snippet("abcdef", false, 6), "abcdef");
        assert_eq!(snippet("abcdef", false, 5), "abcd…");
        assert_eq!(snippet("abcdef", false, 2), "a…");
        assert_eq!(snippet("hello world", false, 7), "hello…");
        assert_eq!(snippet("hello world", false, 8), "hello w…");
        assert_eq!(snippet("hello  world", false, 11), "hello world");
    }

    #[test]
    fn length_one_and_the_maximum_are_the_edges() {
        assert_eq!(snippet("a", false, 1), "a");
        assert_eq!(snippet("ab", false, 1), "…");
        assert_eq!(snippet("ab", false, 0), "…", "0 is clamped to 1");
        let long = "x".repeat(5000);
        let at_max = snippet(&long, false, MAX_SNIPPET_LENGTH);
        assert_eq!(at_max, format!("{}…", "x".repeat(4095)));
        assert_eq!(clusters(&at_max), 4096);
        assert_eq!(
            snippet(&long, false, MAX_SNIPPET_LENGTH + 1),
            at_max,
            "clamped to 4096"
        );
        let exact = "y".repeat(4096);
        assert_eq!(snippet(&exact, false, MAX_SNIPPET_LENGTH), exact);
        assert_eq!(snippet(&long, false, usize::MAX), at_max);
        assert_eq!(DEFAULT_SNIPPET_LENGTH, 64);
    }

    #[test]
    fn emoji_zwj_sequences_are_never_split() {
        let family = "👩\u{200d}👩\u{200d}👧\u{200d}👦";
        let body = family.repeat(3);
        assert_eq!(snippet(&body, false, 3), body);
        assert_eq!(snippet(&body, false, 2), format!("{family}…"));
        assert_eq!(snippet(&body, false, 1), "…");
        let skin = "👍🏽👍🏽👍🏽";
        assert_eq!(snippet(skin, false, 2), "👍🏽…");
    }

    #[test]
    fn flags_are_never_split() {
        assert_eq!(snippet("🇺🇸🇫🇷🇩🇪", false, 3), "🇺🇸🇫🇷🇩🇪");
        assert_eq!(snippet("🇺🇸🇫🇷🇩🇪", false, 2), "🇺🇸…");
        assert_eq!(snippet("🇺🇸🇫🇷🇩🇪", false, 1), "…");
    }

    #[test]
    fn snippets_are_capped_in_bytes_too() {
        // One user-perceived character of 800,001 bytes: `a` and 400,000 accents.
        let body = format!("a{}", "\u{301}".repeat(400_000));
        for max in [1, 2, 64, MAX_SNIPPET_LENGTH] {
            let out = assert_fast("a long cluster", || snippet(&body, false, max));
            assert!(
                out.len() <= max * MAX_SNIPPET_BYTES_PER_CHARACTER,
                "{max}: {}",
                out.len()
            );
            assert!(clusters(&out) <= max, "{max}: {out:?}");
            assert!(out.ends_with('…'), "{max}");
            // Cut at a scalar boundary: the accents kept are whole.
            let kept = out.strip_suffix('…').unwrap();
            assert!(body.starts_with(kept));
            // As many accents (2 bytes each) as fit beside the '…' (3 bytes).
            if max > 1 {
                let bytes = max * MAX_SNIPPET_BYTES_PER_CHARACTER;
                assert!(
                    kept.len() + 3 <= bytes && kept.len() + 3 + 2 > bytes,
                    "{max}"
                );
            }
        }
        assert_eq!(snippet(&body, false, 1), "…");
        assert_eq!(
            snippet(&body, false, 2),
            format!("a{}…", "\u{301}".repeat(30))
        );
        // Whole clusters are kept while they fit: "x" then the long one.
        let two = format!("x{body}");
        assert_eq!(snippet(&two, false, 3), "x…");
        // Ordinary text is untouched by the byte limit.
        assert_eq!(snippet("héllo wörld", false, 64), "héllo wörld");
        assert_eq!(snippet("👍🏽👍🏽", false, 2), "👍🏽👍🏽");
        assert_eq!(snippet("👍🏽👍🏽👍🏽", false, 2), "👍🏽…");
        assert_eq!(
            snippet("👩\u{200d}👩\u{200d}👧\u{200d}👦 family", false, 64),
            "👩\u{200d}👩\u{200d}👧\u{200d}👦 family"
        );
    }

    #[test]
    fn combining_marks_stay_with_their_base() {
        let e = "e\u{301}";
        let body = format!("{e}{e}{e}{e}");
        assert_eq!(snippet(&body, false, 4), body);
        assert_eq!(snippet(&body, false, 3), format!("{e}{e}…"));
        let stacked = "a\u{301}\u{302}\u{303}\u{304}b";
        assert_eq!(snippet(stacked, false, 2), stacked);
        assert_eq!(
            snippet(&format!("{stacked}c"), false, 2),
            "a\u{301}\u{302}\u{303}\u{304}…"
        );
    }

    #[test]
    fn hangul_jamo_syllables_are_one_character() {
        let gak = "\u{1100}\u{1161}\u{11a8}";
        let body = gak.repeat(5);
        assert_eq!(snippet(&body, false, 5), body);
        assert_eq!(snippet(&body, false, 3), format!("{gak}{gak}…"));
        assert_eq!(snippet("한국어 텍스트", false, 4), "한국어…");
    }

    #[test]
    fn right_to_left_text_is_cut_in_logical_order() {
        assert_eq!(snippet("مرحبا بالعالم", false, 7), "مرحبا…");
        assert_eq!(snippet("مرحبا بالعالم", false, 64), "مرحبا بالعالم");
        assert_eq!(snippet("שלום עולם", false, 6), "שלום…");
        let shalom = "\u{5e9}\u{5c1}\u{5b8}\u{5dc}\u{5d5}\u{5b9}\u{5dd}";
        assert_eq!(clusters(shalom), 4);
        assert_eq!(snippet(shalom, false, 3), "\u{5e9}\u{5c1}\u{5b8}\u{5dc}…");
    }

    #[test]
    fn html_drops_hidden_content_and_decodes_entities() {
        let html = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Subject</title>\
                    <style>p { color: red }</style></head><body>\
                    <p>Hello&nbsp;<b>world</b> &amp; friends</p>\
                    <script type=\"text/javascript\">alert('<p>no</p>');</script>\
                    <div>next<br/>line</div><!-- a comment --><table><tr><td>cell</td><td>two</td></tr></table>\
                    </body></html>";
        assert_eq!(
            snippet(html, true, 64),
            "Hello world & friends next line cell two"
        );
    }

    #[test]
    fn html_entities_of_every_form_decode() {
        assert_eq!(
            snippet(
                "<p>5 &lt; 6 &amp;&amp; 7 &gt; 2 &quot;q&quot; &#39;s&#x27;</p>",
                true,
                64
            ),
            "5 < 6 && 7 > 2 \"q\" 's'"
        );
        assert_eq!(
            snippet("&#x1F600;&#128512;&hellip;&eacute;", true, 64),
            "😀😀…é"
        );
        assert_eq!(
            snippet("a&#32;b&Tab;c&NewLine;d&nbsp;e", true, 64),
            "a b c d e"
        );
        assert_eq!(
            snippet("&bogus; & &#; &#xZZ; AT&T", true, 64),
            "&bogus; & &#; &#xZZ; AT&T"
        );
        assert_eq!(
            snippet("&lt;b&gt;not a tag&lt;/b&gt;", true, 64),
            "<b>not a tag</b>"
        );
    }

    #[test]
    fn html_inline_tags_join_and_block_tags_separate() {
        assert_eq!(snippet("<b>Bold</b>face", true, 64), "Boldface");
        assert_eq!(snippet("<p>one</p><p>two</p>", true, 64), "one two");
        assert_eq!(
            snippet(
                "<div><div><span><a href=\"x\">deep</a></span></div></div>tail",
                true,
                64
            ),
            "deep tail"
        );
        assert_eq!(snippet("<ul><li>a<li>b</ul>", true, 64), "a b");
        assert_eq!(
            snippet("line<br>break<BR/>again", true, 64),
            "line break again"
        );
    }

    #[test]
    fn malformed_html_degrades_to_text() {
        assert_eq!(snippet("a < b and c > d", true, 64), "a < b and c > d");
        assert_eq!(snippet("I <3 you", true, 64), "I <3 you");
        assert_eq!(snippet("text <span foo", true, 64), "text");
        assert_eq!(
            snippet("<a title=\"x>y\" href='z'>link</a>", true, 64),
            "link"
        );
        assert_eq!(snippet("<SCRIPT>x</SCRIPT >ok", true, 64), "ok");
        assert_eq!(snippet("ok<script>never closed <p>hidden", true, 64), "ok");
        assert_eq!(snippet("kept<!-- never closed", true, 64), "kept");
        assert_eq!(
            snippet("<head><meta charset=utf-8><p>Hi</p>", true, 64),
            "Hi"
        );
        assert_eq!(
            snippet("<head><title>t</title></head>body", true, 64),
            "body"
        );
        assert_eq!(snippet("<head>hidden<body>shown", true, 64), "shown");
        assert_eq!(
            snippet("<![CDATA[x]]>y<?xml version=\"1.0\"?>z", true, 64),
            "yz"
        );
    }

    #[test]
    fn html_is_cut_like_text() {
        let html = "<p>The quick <b>brown</b> fox</p><p>jumps over the lazy dog</p>";
        assert_eq!(snippet(html, true, 16), "The quick brown…");
        assert_eq!(snippet("<p>🇺🇸🇫🇷</p><p>🇩🇪</p>", true, 3), "🇺🇸🇫🇷…");
    }

    #[test]
    fn plain_text_is_not_parsed_as_html() {
        assert_eq!(
            snippet("<p>kept &amp; literal</p>", false, 64),
            "<p>kept &amp; literal</p>"
        );
    }

    #[test]
    fn one_mebibyte_plain_bodies_are_fast() {
        let words = "word ".repeat(MIB / 5);
        let out = assert_fast("1 MiB of words", || snippet(&words, false, 64));
        assert_eq!(out, reference(&words, 64));
        let spaces = " \u{a0}\r\n".repeat(MIB / 5);
        assert_eq!(
            assert_fast("1 MiB of whitespace", || snippet(&spaces, false, 64)),
            ""
        );
        // One 1 MiB cluster: cut by bytes (at a scalar boundary), the rest never read.
        let zalgo = format!("e{}", "\u{301}".repeat(MIB / 2));
        let budget = 64 * MAX_SNIPPET_BYTES_PER_CHARACTER - 3;
        assert_eq!(
            assert_fast("one 1 MiB cluster", || snippet(&zalgo, false, 64)),
            format!("{}…", &zalgo[..budget])
        );
        let flags = "🇺🇸".repeat(MIB / 8);
        let out = assert_fast("1 MiB of flags", || snippet(&flags, false, 4096));
        assert_eq!(out, format!("{}…", "🇺🇸".repeat(4095)));
        let long = "ab ".repeat(MIB / 3);
        let out = assert_fast("1 MiB at the maximum length", || {
            snippet(&long, false, MAX_SNIPPET_LENGTH)
        });
        assert_eq!(out, reference(&long, MAX_SNIPPET_LENGTH));
    }

    #[test]
    fn one_mebibyte_html_bodies_are_fast() {
        let style = format!(
            "<html><head><style>{}</style></head><body><p>Hi &amp; welcome</p></body></html>",
            "p{color:red}\n".repeat(MIB / 14)
        );
        let out = assert_fast("1 MiB of style", || snippet(&style, true, 64));
        assert_eq!(out, "Hi & welcome");
        let paragraphs = "<p>Hello <b>world</b> &amp; more</p>\n".repeat(MIB / 36);
        let out = assert_fast("1 MiB of paragraphs", || snippet(&paragraphs, true, 4096));
        assert_eq!(clusters(&out), 4096);
        assert!(out.starts_with("Hello world & more Hello world & more"));
        let hostile = [
            ("unterminated tags", "<a".repeat(MIB / 2)),
            ("unterminated quotes", "<a x=\"".repeat(MIB / 6)),
            ("tags only", "<span>".repeat(MIB / 6)),
            ("unclosed heads", "<head>".repeat(MIB / 6)),
            ("entities", "&amp;".repeat(MIB / 5)),
            ("long entity names", format!("&{}", "a".repeat(MIB))),
            ("lone ampersands", "& ".repeat(MIB / 2)),
            ("lone brackets", "< ".repeat(MIB / 2)),
            ("closing tags", "</p>".repeat(MIB / 4)),
            ("unterminated comments", "<!--".repeat(MIB / 4)),
            ("scripts", "<script>x</script>".repeat(MIB / 18)),
        ];
        for (what, body) in hostile {
            let out = assert_fast(what, || snippet(&body, true, 4096));
            assert!(clusters(&out) <= 4096, "{what}");
            assert_fast(what, || looks_like_html(&body).to_string());
        }
        let text = "plain < text ".repeat(MIB / 13);
        assert_eq!(
            assert_fast("plain text", || looks_like_html(&text).to_string()),
            "false"
        );
    }

    #[test]
    fn looks_like_html_recognizes_markup_and_not_prose() {
        for html in [
            "<html><body>x</body></html>",
            "<!DOCTYPE html><p>x",
            "<p>Hello</p>",
            "Hi<br>there",
            "Hi<br/>there",
            "<div class=\"x\">y</div>",
            "see <a href=\"https://example.com\">this</a>",
            "<span>x",
            "<TABLE border=1>",
            "<custom-tag attr=1>x</custom-tag>",
            "<b>bold</b>",
        ] {
            assert!(looks_like_html(html), "{html:?}");
        }
        for text in [
            "",
            "a < b",
            "a < b and c > d",
            "I <3 you",
            "x<y>z",
            "if a<b then",
            "use the <a> element",
            "<unclosed> thought",
            "2 << 3 >> 1",
            "Reply above this line </end>",
            "email me at <jane@example.com>",
        ] {
            assert!(!looks_like_html(text), "{text:?}");
        }
    }

    fn cluster_soup() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "a",
            "Z",
            "é",
            "e\u{301}",
            "\u{301}",
            "👩\u{200d}👩\u{200d}👧\u{200d}👦",
            "\u{200d}",
            "🇺",
            "🇸",
            "🇺🇸",
            "각",
            "\u{1100}",
            "\u{1161}",
            "\u{11a8}",
            "ש",
            "م",
            "👍🏽",
            "\u{600}",
            "…",
            "<",
            "&",
            "中",
            "\u{fe0f}",
            "a\u{308}",
        ]);
        prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
    }

    fn spaced_soup() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "a",
            "é",
            "e\u{301}",
            "\u{301}",
            "🇺",
            "🇸",
            "👩\u{200d}👧",
            "\u{200d}",
            "각",
            "م",
            " ",
            "  ",
            "\t",
            "\r\n",
            "\u{a0}",
            "\u{3000}",
            "\u{600}",
            "\u{85}",
        ]);
        prop::collection::vec(pieces, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn output_is_a_cluster_prefix_within_the_limit(body in cluster_soup(), max in 1usize..12) {
            let out = snippet(&body, false, max);
            let bytes = max * MAX_SNIPPET_BYTES_PER_CHARACTER;
            prop_assert!(clusters(&out) <= max, "{out:?}");
            prop_assert!(out.len() <= bytes, "{out:?}");
            let input: Vec<&str> = body.graphemes(true).collect();
            if input.len() <= max && body.len() <= bytes {
                prop_assert_eq!(out, body);
            } else if input.len() > max && input[..max - 1].concat().len() + 3 <= bytes {
                let prefix = out.strip_suffix('…').expect("cut output ends with '…'");
                prop_assert_eq!(prefix, input[..max - 1].concat());
            } else {
                // Cut by bytes: a prefix of the input, at a scalar boundary.
                let prefix = out.strip_suffix('…').expect("cut output ends with '…'");
                prop_assert!(body.starts_with(prefix));
                prop_assert_eq!(out, reference(&body, max));
            }
        }

        #[test]
        fn long_clusters_are_cut_by_bytes_like_the_reference(
            body in prop::collection::vec(
                prop::sample::select(vec!["a", "\u{301}", "\u{301}\u{301}\u{301}\u{301}", " ", "👩\u{200d}👧", "\u{200d}", "é"]),
                0..80,
            ).prop_map(|v| v.concat()),
            max in 1usize..12,
        ) {
            let out = snippet(&body, false, max);
            prop_assert!(out.len() <= max * MAX_SNIPPET_BYTES_PER_CHARACTER);
            prop_assert!(clusters(&out) <= max);
            prop_assert_eq!(out, reference(&body, max));
        }

        #[test]
        fn plain_snippet_matches_the_reference(body in spaced_soup(), max in 1usize..16) {
            prop_assert_eq!(snippet(&body, false, max), reference(&body, max));
        }

        #[test]
        fn html_without_markup_matches_the_reference(body in spaced_soup(), max in 1usize..16) {
            prop_assert_eq!(snippet(&body, true, max), reference(&body, max));
        }

        #[test]
        fn arbitrary_input_never_panics_and_respects_the_limit(
            body in any::<String>(),
            max in 0usize..70,
            html in any::<bool>(),
        ) {
            let out = snippet(&body, html, max);
            prop_assert!(clusters(&out) <= max.max(1));
            prop_assert!(!out.starts_with(' ') && !out.ends_with(' '));
            let _ = looks_like_html(&body);
        }

        #[test]
        fn markup_like_input_never_panics(
            body in "[<>/a-z \"'=&;#x0-9!-]{0,80}",
            max in 1usize..20,
        ) {
            let out = snippet(&body, true, max);
            prop_assert!(clusters(&out) <= max);
            let _ = looks_like_html(&body);
        }
    }
}
