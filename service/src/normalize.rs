//! Address normalization and the conversation key (SPEC §3).
//!
//! Every function here is pure: the same input gives the same output forever, because the
//! output is stored (participants, participants_key) and hashed (conversation key). A change to
//! any rule here needs a backfill of the stored keys.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;

use phonenumber::country::{Id, Source};
use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, PhoneNumber};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::types::Channel;

/// The separator between addresses in a participants key. It is a control character, and
/// control characters are rejected inside addresses, so the join is unambiguous.
const KEY_SEPARATOR: char = '\u{1f}';

/// Raw input longer than this (in bytes) is rejected before any other work, so that hostile
/// input cannot make normalization allocate or scan much.
const MAX_RAW_BYTES: usize = 1024;

/// Longest phone input (in characters) handed to the phone parser; libphonenumber ports have
/// had pathological behaviour on long odd inputs, and no real spelling of a number is longer.
const MAX_PHONE_CHARS: usize = 64;

/// E.164 allows 15 digits; an international dialing prefix adds at most a few more.
const MAX_PHONE_DIGITS: usize = 20;

/// RFC 5321 §4.5.3.1.1: a local part has at most 64 octets.
const MAX_LOCAL_BYTES: usize = 64;

/// RFC 5321 path limit (256) minus the angle brackets.
const MAX_EMAIL_BYTES: usize = 254;

/// RFC 1035: at most 63 octets per label and 253 for the whole name.
const MAX_LABEL_BYTES: usize = 63;
const MAX_DOMAIN_BYTES: usize = 253;

/// Default region for phone parsing, e.g. "US": national numbers (without `+`) are read as
/// numbers of this region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(pub phonenumber::country::Id);

impl FromStr for Region {
    type Err = String;

    /// Parses an ISO 3166-1 alpha-2 code (any case, e.g. `us`, `GB`) that libphonenumber has
    /// metadata for.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let code = s.trim().to_ascii_uppercase();
        let err = || {
            format!(
                "unknown region {s:?}: expected an ISO 3166-1 alpha-2 country code that \
                 libphonenumber knows, such as US, GB, DE or IN"
            )
        };
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(err());
        }
        let id = Id::from_str(&code).map_err(|_| err())?;
        // The parser unwraps the region's metadata, so a region without metadata would panic.
        if DATABASE.by_id(id.as_ref()).is_none() {
            return Err(err());
        }
        Ok(Region(id))
    }
}

impl Default for Region {
    /// `US`, the default of the `default_region` setting.
    fn default() -> Self {
        Region(Id::US)
    }
}

impl fmt::Display for Region {
    /// The upper-case alpha-2 code, e.g. `US`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

/// Why an address was rejected. The Display text is a reason meant for the person who sent the
/// address, and says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing but whitespace.
    #[error("address is empty")]
    Empty,
    /// The raw input exceeds the byte limit checked before anything else.
    #[error("address is too long (at most {max} bytes)")]
    TooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// A Unicode control character (category Cc), NUL included.
    #[error("contains a control character (U+{:04X})", u32::from(*.ch))]
    ControlCharacter {
        /// The offending character.
        ch: char,
    },
    /// A bidirectional embedding, override or isolate (U+202A..U+202E, U+2066..U+2069), which can
    /// make an address display as something it is not.
    #[error("contains a bidirectional override character (U+{:04X})", u32::from(*.ch))]
    BidiControl {
        /// The offending character.
        ch: char,
    },
    /// An email address given for an SMS conversation.
    #[error("looks like an email address, but SMS takes phone numbers and short codes only")]
    EmailOnSms,
    /// A phone number given for an email conversation.
    #[error("looks like a phone number, but EMAIL takes email addresses only")]
    PhoneOnEmail,

    /// A `Name <address>` form that is not well formed.
    #[error("malformed \"Name <address>\": {reason}")]
    DisplayName {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No `@`.
    #[error("not an email address: missing '@'")]
    MissingAt,
    /// More than one `@` (or a list of addresses).
    #[error("not an email address: more than one '@' (give one address per entry)")]
    MultipleAt,
    /// Nothing before the `@`.
    #[error("not an email address: nothing before '@'")]
    EmptyLocalPart,
    /// The local part is only a plus-tag, e.g. `+news@example.com`.
    #[error("the part before '@' is empty once the plus-tag is removed")]
    EmptyAfterPlusTag,
    /// Nothing after the `@`.
    #[error("not an email address: nothing after '@'")]
    MissingDomain,
    /// Whitespace inside the address.
    #[error("an email address cannot contain spaces")]
    SpaceInEmail,
    /// A quoted local part such as `"john doe"@example.com`.
    #[error("quoted local parts (\"...\"@) are not supported")]
    QuotedLocalPart,
    /// A character outside the dot-atom set (RFC 5322 atext, plus letters, digits and marks of
    /// any script per RFC 6531).
    #[error("character {ch:?} is not allowed before the '@' of an email address")]
    LocalPartCharacter {
        /// The offending character.
        ch: char,
    },
    /// A leading, trailing or doubled dot in the local part.
    #[error("the part before '@' cannot start or end with '.' or contain '..'")]
    LocalPartDots,
    /// Local part longer than 64 bytes.
    #[error("the part before '@' is longer than {MAX_LOCAL_BYTES} bytes")]
    LocalPartTooLong,
    /// Whole address longer than 254 bytes.
    #[error("email address is longer than {MAX_EMAIL_BYTES} bytes")]
    EmailTooLong,
    /// An IP-address literal such as `user@[192.0.2.1]`.
    #[error("IP-address domains ([...]) are not supported; use a domain name")]
    DomainLiteral,
    /// The domain is not a valid (internationalized) host name.
    #[error("invalid domain: {reason}")]
    InvalidDomain {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// More than 64 characters of phone input, or more than 20 digits.
    #[error(
        "phone number is too long (at most {MAX_PHONE_DIGITS} digits, {MAX_PHONE_CHARS} characters)"
    )]
    PhoneTooLong,
    /// Too few digits to be a number (short codes have 5 or 6).
    #[error("phone number has too few digits (short codes have 5 or 6 digits)")]
    PhoneTooShort,
    /// No digits at all.
    #[error("not a phone number: it has no digits")]
    PhoneNoDigits,
    /// An extension (`x123`, `ext. 12`, `;ext=1`); it is rejected rather than dropped, because
    /// the number without it may reach someone else.
    #[error("phone extensions are not supported; give the number without the extension")]
    PhoneExtension,
    /// Letters, e.g. a vanity number.
    #[error(
        "letters are not accepted in phone numbers; write vanity numbers like 1-800-FLOWERS as digits"
    )]
    PhoneLetters,
    /// A `+` that is not the first character, or more than one.
    #[error("'+' may only appear once, at the start of a phone number")]
    MisplacedPlus,
    /// A character that has no place in a phone number.
    #[error("character {ch:?} is not allowed in a phone number")]
    PhoneCharacter {
        /// The offending character.
        ch: char,
    },
    /// The country calling code after `+` (or after the international dialing prefix) is not
    /// assigned.
    #[error("phone number starts with an unknown country calling code")]
    UnknownCountryCode,
    /// The number parses but is not a valid number of its region.
    #[error("phone number is not valid for region {region}")]
    InvalidPhone {
        /// The region the number was checked against (the default region for national numbers,
        /// the number's own region for international ones, or `+CC` when it has none).
        region: String,
    },
    /// International input that the parser cannot read as a number.
    #[error("not a valid phone number")]
    NotAPhoneNumber,
    /// The phone parser failed internally on this input.
    #[error("phone number could not be parsed")]
    PhoneUnparsable,
}

/// Normalizes an email address: accepts `addr`, `Name <addr>` and `"Quoted, Name" <addr>`;
/// returns the lower-case address with any plus-tag removed from the local part and the domain
/// in ASCII (punycode) form, e.g. `Jane+news@Example.COM` -> `jane@example.com`.
///
/// Rules and their reasons: dots in the local part are kept (they are significant for most
/// providers); the local part must be a dot-atom (RFC 5322 atext, or letters, digits and marks
/// of any script per RFC 6531), so quoted local parts and `..` are rejected; the domain needs at
/// least one dot (`localhost` and other single-label names are not deliverable from the
/// internet); IP-address literals are rejected; one trailing dot (`example.com.`) is dropped.
pub fn normalize_email(raw: &str) -> Result<String, AddressError> {
    email_from_clean(&clean(raw)?)
}

/// Normalizes a phone number to E.164 (`+14155552671`), or returns an SMS short code (5 or 6
/// ASCII digits, optionally spaced with spaces or dashes, no `+`) as its digits (`12345`).
///
/// National numbers are read in `region`; `+CC...` and the region's international dialing
/// prefix (e.g. `011` in the US) select another country. The number must be valid for its
/// region, not merely parse. Extensions are rejected, never dropped. Letters are rejected:
/// vanity numbers (`1-800-FLOWERS`) map letters to digits ambiguously (extra letters are
/// commonly appended for readability), and providers always send digits. Fullwidth and
/// Arabic-Indic digits are read as digits; a `(0)` trunk prefix after `+CC` is dropped.
pub fn normalize_phone(raw: &str, region: Region) -> Result<String, AddressError> {
    phone_from_clean(&clean(raw)?, region)
}

/// Normalizes an address for a channel: `EMAIL` takes email addresses only, `SMS` phone
/// numbers and short codes only. An address of the other kind is rejected with a reason that
/// names the channel.
pub fn normalize_address(
    channel: Channel,
    raw: &str,
    region: Region,
) -> Result<String, AddressError> {
    let cleaned = clean(raw)?;
    match channel {
        Channel::Email => {
            if !cleaned.contains('@') && looks_like_phone(&cleaned) {
                return Err(AddressError::PhoneOnEmail);
            }
            email_from_clean(&cleaned)
        }
        Channel::Sms => {
            if cleaned.contains('@') {
                return Err(AddressError::EmailOnSms);
            }
            phone_from_clean(&cleaned, region)
        }
    }
}

/// The normalized, deduplicated, sorted participant list of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participants {
    /// The normalized sender.
    pub from: String,
    /// Each recipient normalized, in the order given and with the same length (duplicates kept,
    /// so that index `i` still names `to[i]`).
    pub to: Vec<String>,
    /// `{from} ∪ to`, deduplicated and sorted by bytes: the conversation's participants.
    pub sorted: Vec<String>,
}

/// An address of a message that could not be normalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParticipantError {
    /// `from`, or `to[i]` with `i` the 0-based index into the given `to` list.
    pub field: String,
    /// Why the address was rejected.
    pub reason: AddressError,
}

/// Normalizes the sender and recipients of one message for `channel` and returns them with the
/// sorted, deduplicated participant list. An empty `to` is accepted here (the caller checks
/// that a message has recipients).
pub fn participants(
    channel: Channel,
    from: &str,
    to: &[String],
    region: Region,
) -> Result<Participants, ParticipantError> {
    let from = normalize_address(channel, from, region).map_err(|reason| ParticipantError {
        field: "from".to_owned(),
        reason,
    })?;
    let to = to
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            normalize_address(channel, raw, region).map_err(|reason| ParticipantError {
                field: format!("to[{i}]"),
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut sorted = Vec::with_capacity(to.len() + 1);
    sorted.push(from.clone());
    sorted.extend(to.iter().cloned());
    sorted.sort();
    sorted.dedup();
    Ok(Participants { from, to, sorted })
}

/// The canonical text key of a participant list: the sorted list joined by U+001F (unit
/// separator), which is rejected inside addresses, so the join is unambiguous.
pub fn participants_key(sorted: &[String]) -> String {
    let mut sep = [0u8; 4];
    sorted.join(&*KEY_SEPARATOR.encode_utf8(&mut sep))
}

/// The inverse of [`participants_key`]: the addresses of a key (none for the empty key).
pub fn split_participants_key(key: &str) -> Vec<String> {
    if key.is_empty() {
        return Vec::new();
    }
    key.split(KEY_SEPARATOR).map(str::to_owned).collect()
}

/// Whether `address` (normalized) is one of the participants of `key` (a participants
/// key): [`split_participants_key`] without allocating.
pub fn participants_key_contains(key: &str, address: &str) -> bool {
    !key.is_empty() && key.split(KEY_SEPARATOR).any(|p| p == address)
}

/// A stable, log-safe hash of a conversation's channel and participants key: the lower-case hex
/// of SHA-256 over `CHANNEL + U+001F + participants_key` (e.g. `"EMAIL\u{1f}a@x.com\u{1f}b@y.com"`),
/// truncated to its first 32 hex digits (128 bits).
///
/// This value is stable forever: it is shown to users and support staff, logged and shared, so
/// the formula must never change (a new formula would be a new field).
pub fn conversation_key(channel: Channel, participants_key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(channel.as_str().as_bytes());
    hasher.update([KEY_SEPARATOR as u8]);
    hasher.update(participants_key.as_bytes());
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(32);
    for byte in &digest[..16] {
        hex.push(hex_digit(byte >> 4));
        hex.push(hex_digit(byte & 0x0f));
    }
    hex
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

/// Common first steps for every address (SPEC §3): bound the size, NFC, trim, then reject
/// control and bidi-override characters before any parsing.
fn clean(raw: &str) -> Result<String, AddressError> {
    if raw.len() > MAX_RAW_BYTES {
        return Err(AddressError::TooLong { max: MAX_RAW_BYTES });
    }
    let nfc: String = raw.nfc().collect();
    let trimmed = nfc.trim();
    for ch in trimmed.chars() {
        if ch.is_control() {
            return Err(AddressError::ControlCharacter { ch });
        }
        if matches!(ch, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
            return Err(AddressError::BidiControl { ch });
        }
    }
    if trimmed.is_empty() {
        return Err(AddressError::Empty);
    }
    Ok(trimmed.to_owned())
}

/// Whether an address without `@` is plainly a phone number (digits and phone punctuation), so
/// that EMAIL can say "wrong channel" instead of "missing '@'".
fn looks_like_phone(s: &str) -> bool {
    let mut digits = 0;
    for c in s.chars() {
        if phone_digit(c).is_some() {
            digits += 1;
        } else if !(is_plus(c) || is_phone_separator(c)) {
            return false;
        }
    }
    digits >= 3
}

fn email_from_clean(s: &str) -> Result<String, AddressError> {
    let addr = addr_spec(s)?;
    if addr.is_empty() {
        return Err(AddressError::Empty);
    }
    let mut parts = addr.split('@');
    let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
        (Some(_), None, _) => return Err(AddressError::MissingAt),
        (Some(local), Some(domain), None) => (local, domain),
        _ => return Err(AddressError::MultipleAt),
    };
    let local = normalize_local_part(local)?;
    let domain = normalize_domain(domain)?;
    let address = format!("{local}@{domain}");
    if address.len() > MAX_EMAIL_BYTES {
        return Err(AddressError::EmailTooLong);
    }
    Ok(address)
}

/// The address inside `Name <addr>` or `"Quoted, Name" <addr>`, or the whole input if it has no
/// angle brackets.
fn addr_spec(s: &str) -> Result<&str, AddressError> {
    let mut in_quote = false;
    let mut escaped = false;
    let mut open = None;
    for (i, c) in s.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
            continue;
        }
        match c {
            '"' => in_quote = true,
            '<' => {
                open = Some(i);
                break;
            }
            _ => {}
        }
    }
    let Some(open) = open else {
        if in_quote {
            return Err(AddressError::DisplayName {
                reason: "unterminated quote",
            });
        }
        return Ok(s);
    };
    let Some(inner) = s[open + 1..].strip_suffix('>') else {
        return Err(AddressError::DisplayName {
            reason: "it must end with '>'",
        });
    };
    if inner.contains(['<', '>']) {
        return Err(AddressError::DisplayName {
            reason: "more than one '<' or '>'",
        });
    }
    Ok(inner.trim())
}

fn normalize_local_part(local: &str) -> Result<String, AddressError> {
    if local.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    if local.starts_with('"') {
        return Err(AddressError::QuotedLocalPart);
    }
    for ch in local.chars() {
        if ch.is_whitespace() {
            return Err(AddressError::SpaceInEmail);
        }
        if !is_local_part_char(ch) {
            return Err(AddressError::LocalPartCharacter { ch });
        }
    }
    // Validate the whole local part first, so junk in a tag is not silently accepted.
    check_dots(local)?;
    let untagged = local.split('+').next().unwrap_or_default();
    if untagged.is_empty() {
        return Err(AddressError::EmptyAfterPlusTag);
    }
    check_dots(untagged)?;
    // Lower-casing can leave text that is not in NFC (it maps single characters), so compose
    // again to keep normalization idempotent.
    let lowered: String = untagged.to_lowercase().nfc().collect();
    if lowered.len() > MAX_LOCAL_BYTES {
        return Err(AddressError::LocalPartTooLong);
    }
    Ok(lowered)
}

fn check_dots(local: &str) -> Result<(), AddressError> {
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(AddressError::LocalPartDots);
    }
    Ok(())
}

/// RFC 5322 atext and `.`, and for non-ASCII (RFC 6531) letters, digits and combining marks;
/// symbols, punctuation and invisible format characters of other scripts are refused because
/// they make look-alike addresses.
fn is_local_part_char(ch: char) -> bool {
    if ch.is_ascii() {
        ch.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(ch)
    } else {
        ch.is_alphanumeric() || is_combining_mark(ch)
    }
}

fn normalize_domain(domain: &str) -> Result<String, AddressError> {
    if domain.is_empty() {
        return Err(AddressError::MissingDomain);
    }
    if domain.starts_with('[') {
        return Err(AddressError::DomainLiteral);
    }
    if domain.chars().any(char::is_whitespace) {
        return Err(AddressError::SpaceInEmail);
    }
    // A single trailing dot is the fully-qualified spelling of the same name.
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let ascii = idna::domain_to_ascii(domain).map_err(|_| AddressError::InvalidDomain {
        reason: "it is not a valid internationalized domain name",
    })?;
    let invalid = |reason| Err(AddressError::InvalidDomain { reason });
    if ascii.is_empty() {
        return Err(AddressError::MissingDomain);
    }
    if ascii.len() > MAX_DOMAIN_BYTES {
        return invalid("it is longer than 253 characters");
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return invalid("it has an empty label (a leading dot or two dots in a row)");
        }
        if label.len() > MAX_LABEL_BYTES {
            return invalid("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return invalid("it may only contain letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid("a label cannot start or end with '-'");
        }
    }
    if labels.len() < 2 {
        return invalid("it needs at least one dot, like example.com");
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return invalid("it looks like an IP address; use a domain name");
    }
    Ok(ascii)
}

fn is_plus(c: char) -> bool {
    matches!(c, '+' | '\u{FF0B}')
}

/// Visual separators people put in phone numbers: whitespace, ASCII `-./()`, Unicode dashes and
/// minus, and their fullwidth forms.
fn is_phone_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '-' | '.' | '(' | ')' | '/' | '\u{2010}'
                ..='\u{2015}' | '\u{2212}' | '\u{FF08}' | '\u{FF09}' | '\u{FF0D}' | '\u{FF0E}'
        )
}

/// The ASCII digit for ASCII, fullwidth and Arabic-Indic digits (the ones phones and keyboards
/// produce).
fn phone_digit(c: char) -> Option<char> {
    let zero = match c {
        '0'..='9' => '0',
        '\u{FF10}'..='\u{FF19}' => '\u{FF10}',
        '\u{0660}'..='\u{0669}' => '\u{0660}',
        '\u{06F0}'..='\u{06F9}' => '\u{06F0}',
        _ => return None,
    };
    let offset = u32::from(c) - u32::from(zero);
    char::from_digit(offset, 10)
}

fn phone_from_clean(s: &str, region: Region) -> Result<String, AddressError> {
    if s.chars().count() > MAX_PHONE_CHARS {
        return Err(AddressError::PhoneTooLong);
    }
    let s = strip_prefix_ignore_case(s, "tel:")
        .unwrap_or(s)
        .trim_start();
    let mut plus = false;
    let mut digits = String::with_capacity(s.len());
    let mut letters = false;
    let mut odd_char = None;
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if let Some(d) = phone_digit(c) {
            digits.push(d);
        } else if is_plus(c) {
            if plus || !digits.is_empty() {
                return Err(AddressError::MisplacedPlus);
            }
            plus = true;
        } else if plus && c == '(' && s[i..].starts_with("(0)") {
            // `+44 (0)20 ...`: the bracketed national trunk prefix is not dialled from abroad.
            chars.next();
            chars.next();
        } else if is_phone_separator(c) {
            // Formatting only; the digits carry the number.
        } else if c.is_alphabetic() {
            letters = true;
        } else {
            odd_char.get_or_insert(c);
        }
    }
    if letters || odd_char.is_some() {
        // Extension markers come in many spellings and languages; the parser knows them.
        // Only a valid number with an extension is reported as such ("*123#" is not one).
        let has_extension = guarded(|| {
            phonenumber::parse(Some(region.0), s)
                .is_ok_and(|n| n.extension().is_some() && phonenumber::is_valid(&n))
        });
        if has_extension == Ok(true) {
            return Err(AddressError::PhoneExtension);
        }
        return Err(match odd_char {
            Some(ch) if !letters => AddressError::PhoneCharacter { ch },
            _ => AddressError::PhoneLetters,
        });
    }
    if digits.is_empty() {
        return Err(AddressError::PhoneNoDigits);
    }
    if digits.len() > MAX_PHONE_DIGITS {
        return Err(AddressError::PhoneTooLong);
    }
    let short_code_spelling = s.chars().all(|c| matches!(c, '0'..='9' | ' ' | '-'));
    if !plus && short_code_spelling && (5..=6).contains(&digits.len()) {
        return Ok(digits);
    }
    if digits.len() < 3 {
        return Err(AddressError::PhoneTooShort);
    }
    guarded(|| parse_phone(&digits, plus, region)).unwrap_or(Err(AddressError::PhoneUnparsable))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Runs the phone library, turning a panic into an error: it unwraps and slices internally,
/// and a bad address must never take the process (or a request) down.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, AddressError> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| AddressError::PhoneUnparsable)
}

/// Parses the digits (with `plus` for international form) and returns the valid E.164 form.
fn parse_phone(digits: &str, plus: bool, region: Region) -> Result<String, AddressError> {
    // The region a failure is reported against: the default region for national numbers;
    // for international ones the number's own (found from its country code).
    let (number, checked_region) = if plus {
        // The parser applies the default region's national-prefix rule even to `+CC` numbers
        // (`+49 1512...` under US loses its `1`), so international input is parsed without one.
        let n = phonenumber::parse(None, format!("+{digits}")).map_err(|e| parse_error(e, None))?;
        (n, None)
    } else {
        let n =
            phonenumber::parse(Some(region.0), digits).map_err(|e| parse_error(e, Some(region)))?;
        if n.code().source() == Source::Idd {
            // Same bug after an international dialing prefix (`011 49 1512...` from the US):
            // cut the prefix and parse the rest as `+CC...`.
            let international =
                after_idd(region, digits, n.code().value()).ok_or_else(|| invalid_for(&n, None))?;
            let n = phonenumber::parse(None, international).map_err(|e| parse_error(e, None))?;
            (n, None)
        } else {
            (n, Some(region))
        }
    };
    if number.extension().is_some() {
        return Err(AddressError::PhoneExtension);
    }
    if !phonenumber::is_valid(&number) {
        return Err(invalid_for(&number, checked_region));
    }
    let e164 = number.format().mode(Mode::E164).to_string();
    // The stored form must read back as itself; the parser is not always consistent (leading
    // zeros, some ranges), and such a number is rejected rather than stored unstable.
    let again = phonenumber::parse(None, &e164)
        .ok()
        .filter(phonenumber::is_valid)
        .map(|n| n.format().mode(Mode::E164).to_string());
    if again.as_deref() != Some(e164.as_str()) {
        return Err(invalid_for(&number, checked_region));
    }
    Ok(e164)
}

/// `+` and the digits after the region's international dialing prefix, if the digits start
/// with that prefix followed by `code`.
fn after_idd(region: Region, digits: &str, code: u16) -> Option<String> {
    let idd = DATABASE.by_id(region.0.as_ref())?.international_prefix()?;
    let code = code.to_string();
    (1..digits.len().min(8)).find_map(|k| {
        let (prefix, rest) = digits.split_at(k);
        let m = idd.find(prefix)?;
        (m.start() == 0 && m.end() == k && rest.starts_with(&code)).then(|| format!("+{rest}"))
    })
}

fn invalid_for(number: &PhoneNumber, region: Option<Region>) -> AddressError {
    let code = number.code().value();
    let region = match region {
        Some(region) => region.to_string(),
        // An invalid number has no region of its own; name the main region of its code.
        None => DATABASE
            .region(&code)
            .and_then(|regions| regions.first().map(|r| (*r).to_owned()))
            .unwrap_or_else(|| format!("+{code}")),
    };
    AddressError::InvalidPhone { region }
}

fn parse_error(e: phonenumber::ParseError, region: Option<Region>) -> AddressError {
    use phonenumber::ParseError as E;
    match e {
        E::InvalidCountryCode => AddressError::UnknownCountryCode,
        E::TooShortAfterIdd | E::TooShortNsn => AddressError::PhoneTooShort,
        E::TooLong => AddressError::PhoneTooLong,
        _ => match region {
            Some(region) => AddressError::InvalidPhone {
                region: region.to_string(),
            },
            None => AddressError::NotAPhoneNumber,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn us() -> Region {
        Region::default()
    }

    fn key(channel: Channel, from: &str, to: &[&str]) -> String {
        let to: Vec<String> = to.iter().map(|s| (*s).to_owned()).collect();
        let p = participants(channel, from, &to, us()).expect("valid participants");
        conversation_key(channel, &participants_key(&p.sorted))
    }

    #[test]
    fn us_spellings_of_one_number_normalize_to_one_e164() {
        for raw in [
            "(415) 555-2671",
            "4155552671",
            "+1 415-555-2671",
            "1-415-555-2671",
            "+1.415.555.2671",
            "tel:+1-415-555-2671",
            "  415 555 2671 ",
            "+1 (415) 555\u{2011}2671",
            "\u{FF0B}\u{FF11} \u{FF14}\u{FF11}\u{FF15} \u{FF15}\u{FF15}\u{FF15} \u{FF12}\u{FF16}\u{FF17}\u{FF11}",
        ] {
            assert_eq!(
                normalize_phone(raw, us()).as_deref(),
                Ok("+14155552671"),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn us_spellings_of_one_number_give_one_conversation_key() {
        let keys: Vec<String> = [
            "(415) 555-2671",
            "4155552671",
            "+1 415-555-2671",
            "1-415-555-2671",
            "+1.415.555.2671",
        ]
        .iter()
        .map(|from| key(Channel::Sms, from, &["+44 20 7946 0958"]))
        .collect();
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
        assert_eq!(keys[0].len(), 32);
    }

    #[test]
    fn a_to_b_and_b_to_a_are_one_conversation() {
        assert_eq!(
            key(
                Channel::Email,
                "Alice <alice@example.com>",
                &["bob@example.org"]
            ),
            key(Channel::Email, "BOB@example.org", &["alice+x@Example.com"]),
        );
        assert_eq!(
            key(Channel::Sms, "+14155552671", &["12345"]),
            key(Channel::Sms, "12345", &["(415) 555-2671"]),
        );
    }

    #[test]
    fn participants_are_normalized_deduplicated_and_sorted() {
        let to = vec![
            "Bob <bob@example.org>".to_owned(),
            "alice+cc@example.com".to_owned(),
            "carol@example.net".to_owned(),
            "BOB@example.org".to_owned(),
        ];
        let p = participants(Channel::Email, "Alice@Example.com", &to, us()).unwrap();
        assert_eq!(
            p,
            Participants {
                from: "alice@example.com".to_owned(),
                to: vec![
                    "bob@example.org".to_owned(),
                    "alice@example.com".to_owned(),
                    "carol@example.net".to_owned(),
                    "bob@example.org".to_owned(),
                ],
                sorted: vec![
                    "alice@example.com".to_owned(),
                    "bob@example.org".to_owned(),
                    "carol@example.net".to_owned(),
                ],
            }
        );
        let key = participants_key(&p.sorted);
        assert_eq!(
            key,
            "alice@example.com\u{1f}bob@example.org\u{1f}carol@example.net"
        );
        assert_eq!(split_participants_key(&key), p.sorted);
    }

    #[test]
    fn participants_accepts_an_empty_to_list() {
        let p = participants(Channel::Sms, "12345", &[], us()).unwrap();
        assert_eq!(p.sorted, vec!["12345".to_owned()]);
        assert!(p.to.is_empty());
    }

    #[test]
    fn participant_errors_name_the_field() {
        let to = vec!["bob@example.org".to_owned(), "not an address".to_owned()];
        let err = participants(Channel::Email, "alice@example.com", &to, us()).unwrap_err();
        assert_eq!(
            err,
            ParticipantError {
                field: "to[1]".to_owned(),
                reason: AddressError::MissingAt,
            }
        );
        assert_eq!(err.to_string(), "to[1]: not an email address: missing '@'");
        let err = participants(Channel::Sms, "bob@example.org", &[], us()).unwrap_err();
        assert_eq!(err.field, "from");
        assert_eq!(err.reason, AddressError::EmailOnSms);
    }

    #[test]
    fn plus_tags_are_stripped_and_dots_kept() {
        assert_eq!(
            normalize_email("Jane+news@Example.COM").as_deref(),
            Ok("jane@example.com")
        );
        assert_eq!(
            normalize_email("J.a.n.e+a+b@example.com").as_deref(),
            Ok("j.a.n.e@example.com")
        );
        assert_ne!(
            normalize_email("jane.doe@example.com"),
            normalize_email("janedoe@example.com")
        );
    }

    #[test]
    fn participants_key_round_trips() {
        assert_eq!(participants_key(&[]), "");
        assert!(split_participants_key("").is_empty());
        let one = vec!["12345".to_owned()];
        assert_eq!(split_participants_key(&participants_key(&one)), one);
    }

    #[test]
    fn conversation_key_is_the_documented_hash() {
        // Computed independently (`printf 'SMS\x1f12345\x1f+14155552671' | sha256sum`); changing this
        // value breaks every stored and shared key.
        let key = conversation_key(Channel::Sms, "12345\u{1f}+14155552671");
        assert_eq!(key, "a81d3821d3516fd9186cf0a6679efaac");
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(
            key,
            conversation_key(Channel::Email, "12345\u{1f}+14155552671")
        );
        assert_eq!(
            conversation_key(Channel::Email, "a@example.com"),
            GOLDEN_EMAIL_KEY
        );
    }

    const GOLDEN_EMAIL_KEY: &str = "c2812464d8ff7b68e7795a8bde54b61b";

    #[test]
    fn region_parses_alpha2_codes_case_insensitively() {
        assert_eq!("us".parse::<Region>(), Ok(Region(Id::US)));
        assert_eq!(" GB ".parse::<Region>(), Ok(Region(Id::GB)));
        assert_eq!(Region(Id::DE).to_string(), "DE");
        assert_eq!(Region::default().to_string(), "US");
        for bad in ["", "U", "USA", "ZZ", "1A", "u s"] {
            let err = bad.parse::<Region>().unwrap_err();
            assert!(err.contains("ISO 3166-1 alpha-2"), "{bad:?}: {err}");
        }
    }

    /// Real-world spellings and their stored form.
    const ACCEPTED: &[(Channel, &str, &str)] = &[
        // Email
        (Channel::Email, "Jane+news@Example.COM", "jane@example.com"),
        (Channel::Email, "jane.doe@gmail.com", "jane.doe@gmail.com"),
        (
            Channel::Email,
            "J.Doe+tag+more@Sub.Example.co.uk",
            "j.doe@sub.example.co.uk",
        ),
        (
            Channel::Email,
            "Jane Doe <Jane.Doe@Example.com>",
            "jane.doe@example.com",
        ),
        (
            Channel::Email,
            "\"Doe, Jane\" <jane@example.com>",
            "jane@example.com",
        ),
        (
            Channel::Email,
            "\"Jane \\\"JD\\\" Doe\" <jd@example.com>",
            "jd@example.com",
        ),
        (Channel::Email, "<bob@example.org>", "bob@example.org"),
        (Channel::Email, "Bob < bob@example.org >", "bob@example.org"),
        (Channel::Email, "  alice@example.com\t", "alice@example.com"),
        (Channel::Email, "\tjane@example.com\r\n", "jane@example.com"),
        (Channel::Email, "user@bücher.de", "user@xn--bcher-kva.de"),
        (Channel::Email, "user@BÜCHER.de", "user@xn--bcher-kva.de"),
        (
            Channel::Email,
            "info@xn--bcher-kva.de",
            "info@xn--bcher-kva.de",
        ),
        (
            Channel::Email,
            "jose\u{301}@example.com",
            "jos\u{e9}@example.com",
        ),
        (Channel::Email, "ÜBER@Example.com", "über@example.com"),
        (Channel::Email, "Støre@Example.NO", "støre@example.no"),
        (
            Channel::Email,
            "用户@例子.广告",
            "用户@xn--fsqu00a.xn--4rr70v",
        ),
        (Channel::Email, "test@example.com.", "test@example.com"),
        (Channel::Email, "o'brien@example.ie", "o'brien@example.ie"),
        (
            Channel::Email,
            "user_name-1@my-domain.io",
            "user_name-1@my-domain.io",
        ),
        (
            Channel::Email,
            "first.last@mail.example.com.br",
            "first.last@mail.example.com.br",
        ),
        (
            Channel::Email,
            "Ivan <Иван@пример.рф>",
            "иван@xn--e1afmkfd.xn--p1ai",
        ),
        (Channel::Email, "x@x.io", "x@x.io"),
        // SMS, international form
        (Channel::Sms, "+44 20 7946 0958", "+442079460958"),
        (Channel::Sms, "+44 (0)20 7946 0958", "+442079460958"),
        (Channel::Sms, "+44 7911 123456", "+447911123456"),
        (Channel::Sms, "+49 30 901820", "+4930901820"),
        (Channel::Sms, "+49 1512 3456789", "+4915123456789"),
        (Channel::Sms, "+33 1 42 68 53 00", "+33142685300"),
        (Channel::Sms, "+33 6 12 34 56 78", "+33612345678"),
        (Channel::Sms, "+91 98765 43210", "+919876543210"),
        (Channel::Sms, "+91 22 2778 1234", "+912227781234"),
        (Channel::Sms, "+55 11 91234-5678", "+5511912345678"),
        (Channel::Sms, "+55 (21) 3000-1234", "+552130001234"),
        (Channel::Sms, "+81 3-1234-5678", "+81312345678"),
        (Channel::Sms, "+81 90-1234-5678", "+819012345678"),
        (Channel::Sms, "+61 2 9374 4000", "+61293744000"),
        (Channel::Sms, "+39 06 6982 1234", "+390669821234"),
        (Channel::Sms, "+٩٧١ ٥٠ ١٢٣ ٤٥٦٧", "+971501234567"),
        // SMS, national form under the US default
        (Channel::Sms, "(212) 736-5000", "+12127365000"),
        (Channel::Sms, "202.456.1111", "+12024561111"),
        (Channel::Sms, "1 (800) 356-9377", "+18003569377"),
        (Channel::Sms, "011 44 20 7946 0958", "+442079460958"),
        (Channel::Sms, "011 49 1512 3456789", "+4915123456789"),
        (Channel::Sms, "011 33 1 42 68 53 00", "+33142685300"),
        // Short codes
        (Channel::Sms, "12345", "12345"),
        (Channel::Sms, "123-456", "123456"),
        (Channel::Sms, " 98 765 ", "98765"),
    ];

    #[test]
    fn real_world_addresses_normalize_to_their_stored_form() {
        let mut failures = Vec::new();
        for &(channel, raw, expected) in ACCEPTED {
            let got = normalize_address(channel, raw, us());
            if got.as_deref() != Ok(expected) {
                failures.push(format!(
                    "{channel} {raw:?}: expected {expected:?}, got {got:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(ACCEPTED.len() >= 40);
    }

    #[test]
    fn national_numbers_follow_the_default_region() {
        let cases = [
            (Id::GB, "020 7946 0958", "+442079460958"),
            (Id::GB, "07911 123456", "+447911123456"),
            (Id::DE, "030 901820", "+4930901820"),
            (Id::DE, "0151 23456789", "+4915123456789"),
            (Id::DE, "00 44 20 7946 0958", "+442079460958"),
            (Id::FR, "01 42 68 53 00", "+33142685300"),
            (Id::IN, "098765 43210", "+919876543210"),
            (Id::BR, "(11) 91234-5678", "+5511912345678"),
            (Id::JP, "03-1234-5678", "+81312345678"),
            (Id::JP, "090-1234-5678", "+819012345678"),
        ];
        for (region, raw, expected) in cases {
            assert_eq!(
                normalize_phone(raw, Region(region)).as_deref(),
                Ok(expected),
                "{region:?} {raw:?}"
            );
        }
    }

    /// Each rejection, with the reason shown to the user.
    const REJECTED: &[(Channel, &str, &str)] = &[
        (Channel::Email, "", "address is empty"),
        (Channel::Sms, " \u{a0} ", "address is empty"),
        (
            Channel::Email,
            "a\0b@example.com",
            "contains a control character (U+0000)",
        ),
        (
            Channel::Email,
            "a\u{1f}b@example.com",
            "contains a control character (U+001F)",
        ),
        (
            Channel::Sms,
            "+1 415\n555 2671",
            "contains a control character (U+000A)",
        ),
        (
            Channel::Sms,
            "+1\u{85}4155552671",
            "contains a control character (U+0085)",
        ),
        (
            Channel::Email,
            "moc.elpmaxe@\u{202e}evil",
            "contains a bidirectional override character (U+202E)",
        ),
        (
            Channel::Sms,
            "\u{2066}+14155552671\u{2069}",
            "contains a bidirectional override character (U+2066)",
        ),
        (
            Channel::Sms,
            "jane@example.com",
            "looks like an email address, but SMS takes phone numbers and short codes only",
        ),
        (
            Channel::Email,
            "+1 415 555 2671",
            "looks like a phone number, but EMAIL takes email addresses only",
        ),
        (
            Channel::Email,
            "jane.example.com",
            "not an email address: missing '@'",
        ),
        (
            Channel::Email,
            "a@b@example.com",
            "not an email address: more than one '@' (give one address per entry)",
        ),
        (
            Channel::Email,
            "@example.com",
            "not an email address: nothing before '@'",
        ),
        (
            Channel::Email,
            "jane@",
            "not an email address: nothing after '@'",
        ),
        (
            Channel::Email,
            "+news@example.com",
            "the part before '@' is empty once the plus-tag is removed",
        ),
        (
            Channel::Email,
            "jane doe@example.com",
            "an email address cannot contain spaces",
        ),
        (
            Channel::Email,
            "jane@exa mple.com",
            "an email address cannot contain spaces",
        ),
        (
            Channel::Email,
            "\"jane doe\"@example.com",
            "quoted local parts (\"...\"@) are not supported",
        ),
        (
            Channel::Email,
            "jane(work)@example.com",
            "character '(' is not allowed before the '@' of an email address",
        ),
        (
            Channel::Email,
            "jane\u{200b}@example.com",
            "character '\\u{200b}' is not allowed before the '@' of an email address",
        ),
        (
            Channel::Email,
            ".jane@example.com",
            "the part before '@' cannot start or end with '.' or contain '..'",
        ),
        (
            Channel::Email,
            "jane..doe@example.com",
            "the part before '@' cannot start or end with '.' or contain '..'",
        ),
        (
            Channel::Email,
            "jane.+tag@example.com",
            "the part before '@' cannot start or end with '.' or contain '..'",
        ),
        (
            Channel::Email,
            "Jane <jane@example.com",
            "malformed \"Name <address>\": it must end with '>'",
        ),
        (
            Channel::Email,
            "\"Jane <jane@example.com>",
            "malformed \"Name <address>\": unterminated quote",
        ),
        (
            Channel::Email,
            "Jane <jane@example.com> <x@example.com>",
            "malformed \"Name <address>\": more than one '<' or '>'",
        ),
        (
            Channel::Email,
            "jane@[192.0.2.1]",
            "IP-address domains ([...]) are not supported; use a domain name",
        ),
        (
            Channel::Email,
            "jane@localhost",
            "invalid domain: it needs at least one dot, like example.com",
        ),
        (
            Channel::Email,
            "jane@192.0.2.1",
            "invalid domain: it looks like an IP address; use a domain name",
        ),
        (
            Channel::Email,
            "jane@-example.com",
            "invalid domain: a label cannot start or end with '-'",
        ),
        (
            Channel::Email,
            "jane@ex_ample.com",
            "invalid domain: it may only contain letters, digits, '-' and '.'",
        ),
        (
            Channel::Email,
            "jane@example..com",
            "invalid domain: it has an empty label (a leading dot or two dots in a row)",
        ),
        (
            Channel::Email,
            "jane@xn--zz.com",
            "invalid domain: it is not a valid internationalized domain name",
        ),
        (
            Channel::Sms,
            "1-800-FLOWERS",
            "letters are not accepted in phone numbers; write vanity numbers like 1-800-FLOWERS as digits",
        ),
        (
            Channel::Sms,
            "+1 415 555 2671 ext. 12",
            "phone extensions are not supported; give the number without the extension",
        ),
        (
            Channel::Sms,
            "415-555-2671 x12",
            "phone extensions are not supported; give the number without the extension",
        ),
        (
            Channel::Sms,
            "tel:+1-415-555-2671;ext=12",
            "phone extensions are not supported; give the number without the extension",
        ),
        (
            Channel::Sms,
            "1+4155552671",
            "'+' may only appear once, at the start of a phone number",
        ),
        (
            Channel::Sms,
            "*123#",
            "character '*' is not allowed in a phone number",
        ),
        (Channel::Sms, "(--)", "not a phone number: it has no digits"),
        (
            Channel::Sms,
            "12",
            "phone number has too few digits (short codes have 5 or 6 digits)",
        ),
        (
            Channel::Sms,
            "+999 123 4567",
            "phone number starts with an unknown country calling code",
        ),
        (
            Channel::Sms,
            "555-1234",
            "phone number is not valid for region US",
        ),
        (
            Channel::Sms,
            "+1 415 555 267",
            "phone number is not valid for region US",
        ),
        (
            Channel::Sms,
            "+44 20 7946 095",
            "phone number is not valid for region GB",
        ),
        (
            Channel::Sms,
            "+1 415 555 2671 555 2671 555 2671 555",
            "phone number is too long (at most 20 digits, 64 characters)",
        ),
    ];

    #[test]
    fn each_rejection_gives_its_reason() {
        let mut failures = Vec::new();
        for &(channel, raw, reason) in REJECTED {
            match normalize_address(channel, raw, us()) {
                Err(e) if e.to_string() == reason => {}
                other => failures.push(format!(
                    "{channel} {raw:?}: expected {reason:?}, got {other:?}"
                )),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn length_limits_pass_at_n_and_fail_at_n_plus_one() {
        let local = "a".repeat(64);
        assert_eq!(
            normalize_email(&format!("{local}@example.com")),
            Ok(format!("{local}@example.com"))
        );
        assert_eq!(
            normalize_email(&format!("{local}b@example.com")),
            Err(AddressError::LocalPartTooLong)
        );
        // 64 + 1 + 189 = 254 bytes.
        let domain = format!(
            "{}.{}.{}.com",
            "d".repeat(63),
            "e".repeat(63),
            "f".repeat(57)
        );
        let at_limit = format!("{local}@{domain}");
        assert_eq!(at_limit.len(), 254);
        assert_eq!(normalize_email(&at_limit), Ok(at_limit.clone()));
        let domain = format!(
            "{}.{}.{}.com",
            "d".repeat(63),
            "e".repeat(63),
            "f".repeat(58)
        );
        let over = format!("{local}@{domain}");
        assert_eq!(normalize_email(&over), Err(AddressError::EmailTooLong));
        let long_label = format!("jane@{}.com", "l".repeat(64));
        assert_eq!(
            normalize_email(&long_label),
            Err(AddressError::InvalidDomain {
                reason: "a label is longer than 63 characters"
            })
        );
        let raw = format!("{}{}", " ".repeat(MAX_RAW_BYTES - 12), "a@example.com");
        assert_eq!(
            normalize_email(&raw),
            Err(AddressError::TooLong { max: 1024 })
        );
        let raw = format!("{}{}", " ".repeat(MAX_RAW_BYTES - 13), "a@example.com");
        assert_eq!(normalize_email(&raw).as_deref(), Ok("a@example.com"));
        let phone = format!("+1{}4155552671", " ".repeat(64 - 12));
        assert_eq!(normalize_phone(&phone, us()).as_deref(), Ok("+14155552671"));
        let phone = format!("+1{}4155552671", " ".repeat(64 - 11));
        assert_eq!(
            normalize_phone(&phone, us()),
            Err(AddressError::PhoneTooLong)
        );
    }

    #[test]
    fn short_codes_are_five_or_six_plain_digits() {
        assert_eq!(normalize_phone("12345", us()).as_deref(), Ok("12345"));
        assert_eq!(normalize_phone("123456", us()).as_deref(), Ok("123456"));
        assert_eq!(normalize_phone("12 34-56", us()).as_deref(), Ok("123456"));
        assert!(normalize_phone("1234", us()).is_err());
        assert!(normalize_phone("1234567", us()).is_err());
        assert!(normalize_phone("+12345", us()).is_err());
        assert!(normalize_phone("(123) 45", us()).is_err());
    }

    #[test]
    fn odd_phone_inputs_do_not_panic() {
        for raw in [
            "+",
            "++",
            "+0",
            "00",
            "000",
            "0000000",
            "011",
            "+1",
            "+12",
            "+123",
            "+882",
            "+88212",
            "#",
            "x",
            "ext",
            "+1 ext 1",
            "tel:",
            "tel:;ext=1",
            ";phone-context=+1",
            "tel:+1;phone-context=+1",
            "(0)",
            "+(0)",
            "+0 (0) 0",
            "1".repeat(20).as_str(),
            "0".repeat(20).as_str(),
            "+٠٠٠",
            "9".repeat(64).as_str(),
        ] {
            let _ = normalize_phone(raw, us());
            let _ = normalize_phone(raw, Region(Id::GB));
        }
    }

    fn plausible_email() -> impl Strategy<Value = String> {
        let local = "[a-zA-Z0-9]{1,8}(\\.[a-zA-Z0-9_-]{1,8}){0,2}";
        let tag = proptest::option::of("\\+[a-zA-Z0-9]{0,3}(\\.[a-zA-Z0-9]{1,3})?");
        let domain = prop_oneof![
            "[a-zA-Z0-9]{1,10}(\\.[a-zA-Z0-9]{1,6}){0,2}\\.[a-zA-Z]{2,6}",
            Just("bücher.de".to_owned()),
            Just("Пример.РФ".to_owned()),
            Just("例子.广告".to_owned()),
        ];
        let local = prop_oneof![
            4 => local.prop_map(|s| s),
            1 => Just("José.Ünicode".to_owned()),
            1 => Just("jose\u{301}".to_owned()),
        ];
        let wrap = 0..4u8;
        (local, tag, domain, wrap, "[ \t]{0,2}").prop_map(|(local, tag, domain, wrap, pad)| {
            let addr = format!("{local}{}@{domain}", tag.unwrap_or_default());
            let spelled = match wrap {
                0 => addr,
                1 => format!("Some Name <{addr}>"),
                2 => format!("\"Last, First\" <{addr}>"),
                _ => format!("<{addr}>"),
            };
            format!("{pad}{spelled}{pad}")
        })
    }

    /// Valid numbers (E.164) and a way to spell each in international form.
    const NUMBERS: &[&str] = &[
        "+14155552671",
        "+12127365000",
        "+442079460958",
        "+447911123456",
        "+4930901820",
        "+4915123456789",
        "+33142685300",
        "+919876543210",
        "+5511912345678",
        "+81312345678",
        "+61293744000",
    ];

    fn spell(e164: &str, seps: &[u8]) -> String {
        let mut out = String::from("+");
        for (i, d) in e164[1..].chars().enumerate() {
            out.push(d);
            match seps.get(i).copied().unwrap_or(0) % 6 {
                0 | 1 => {}
                2 => out.push(' '),
                3 => out.push('-'),
                4 => out.push('.'),
                _ => out.push('\u{2011}'),
            }
        }
        out
    }

    fn spelled_number() -> impl Strategy<Value = (String, String)> {
        (
            0..NUMBERS.len(),
            proptest::collection::vec(any::<u8>(), 15),
            any::<bool>(),
        )
            .prop_map(|(i, seps, tel)| {
                let e164 = NUMBERS[i];
                let spelled = spell(e164, &seps);
                let spelled = if tel {
                    format!("tel:{spelled}")
                } else {
                    spelled
                };
                (e164.to_owned(), spelled)
            })
    }

    fn phoneish() -> impl Strategy<Value = String> {
        prop_oneof![
            "[+]?[0-9 ()./x#*+-]{0,24}",
            "(\\+|011 ?|00)?[0-9]{1,3}[ -]?(\\(0\\))?[0-9]{2,4}[ .-]?[0-9]{3,8}( ?(x|ext\\.?|#) ?[0-9]{1,4})?",
        ]
    }

    fn emailish() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 .+_@<>\"ü-]{0,30}"
    }

    proptest! {
        #[test]
        fn email_normalization_is_idempotent(raw in plausible_email()) {
            let once = normalize_email(&raw);
            prop_assert!(once.is_ok(), "{raw:?}: {once:?}");
            let once = once.unwrap();
            prop_assert_eq!(normalize_email(&once), Ok(once.clone()));
            prop_assert_eq!(normalize_email(&once.to_uppercase()).map(|s| s.len()), Ok(once.len()));
        }

        #[test]
        fn phone_normalization_is_idempotent_and_ignores_spelling((e164, spelled) in spelled_number()) {
            prop_assert_eq!(normalize_phone(&spelled, us()), Ok(e164.clone()));
            prop_assert_eq!(normalize_phone(&e164, us()), Ok(e164.clone()));
            prop_assert_eq!(normalize_phone(&e164, Region(Id::JP)), Ok(e164));
        }

        #[test]
        fn arbitrary_strings_never_panic_and_ok_is_idempotent(raw in any::<String>()) {
            for channel in [Channel::Email, Channel::Sms] {
                if let Ok(once) = normalize_address(channel, &raw, us()) {
                    prop_assert_eq!(normalize_address(channel, &once, us()), Ok(once));
                }
            }
        }

        #[test]
        fn address_like_strings_never_panic_and_ok_is_idempotent(
            phone in phoneish(),
            email in emailish(),
        ) {
            if let Ok(once) = normalize_phone(&phone, us()) {
                prop_assert_eq!(normalize_phone(&once, us()), Ok(once));
            }
            if let Ok(once) = normalize_email(&email) {
                prop_assert_eq!(normalize_email(&once), Ok(once));
            }
        }

        #[test]
        fn key_is_independent_of_order_case_and_spelling(
            picks in proptest::collection::vec((0..NUMBERS.len(), proptest::collection::vec(any::<u8>(), 15)), 1..5),
            rotate in 0..5usize,
        ) {
            let canonical: Vec<String> = picks.iter().map(|(i, _)| NUMBERS[*i].to_owned()).collect();
            let mut spelled: Vec<String> = picks.iter().map(|(i, seps)| spell(NUMBERS[*i], seps)).collect();
            let n = spelled.len();
            spelled.rotate_left(rotate % n);
            let from = spelled.remove(0);
            let a = participants(Channel::Sms, &canonical[0], &canonical[1..], us()).unwrap();
            let b = participants(Channel::Sms, &from, &spelled, us()).unwrap();
            prop_assert_eq!(&a.sorted, &b.sorted);
            prop_assert_eq!(
                conversation_key(Channel::Sms, &participants_key(&a.sorted)),
                conversation_key(Channel::Sms, &participants_key(&b.sorted))
            );
        }

        #[test]
        fn email_key_is_independent_of_order_and_case(
            emails in proptest::collection::vec(plausible_email(), 1..5),
            rotate in 0..5usize,
        ) {
            let upper: Vec<String> = emails.iter().map(|e| e.to_uppercase()).collect();
            let mut rotated = upper.clone();
            let n = rotated.len();
            rotated.rotate_left(rotate % n);
            let a = participants(Channel::Email, &emails[0], &emails[1..], us()).unwrap();
            let b = participants(Channel::Email, &rotated[0], &rotated[1..], us()).unwrap();
            prop_assert_eq!(&a.sorted, &b.sorted);
            let mut sorted = a.sorted.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&sorted, &a.sorted);
        }
    }
}
