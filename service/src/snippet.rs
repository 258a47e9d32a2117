//! The conversation snippet: a short, single-line preview of a message body (SPEC §4).
//!
//! Runs on every recorded message and bodies reach 1 MiB, so everything here is linear in the
//! input and stops reading as soon as it has enough text.

use std::collections::HashSet;

use unicode_segmentation::UnicodeSegmentation;

/// Snippet length used when the caller names none (the `snippet_length` setting's default).
pub const DEFAULT_SNIPPET_LENGTH: usize = 64;

/// The longest snippet that can be asked for, in user-perceived characters.
pub const MAX_SNIPPET_LENGTH: usize = 4096;

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
pub fn snippet(body: &str, html: bool, max_graphemes: usize) -> String {
    let mut text = Collector::new(max_graphemes.clamp(1, MAX_SNIPPET_LENGTH));
    if html {
        html_to_text(body, &mut text);
    } else {
        text.push_str(body);
    }
    text.finish()
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
        let name = body[lt + 1 + name_start..lt + 1 + name_start + name_len].to_ascii_lowercase();
        let after = rest.get(name_start + name_len).copied();
        if closing {
            if after == Some(b'>') && opened.contains(&name) {
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
        let Collector { mut out, max, .. } = self;
        let mut starts = out.grapheme_indices(true).map(|(i, _)| i).skip(max - 1);
        // Keep max - 1 clusters (room for the '…') if there are more than max.
        let (Some(keep), Some(_)) = (starts.next(), starts.next()) else {
            return out;
        };
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
