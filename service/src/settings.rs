//! The service's settings: snippet length, default phone region and input limits.

use crate::normalize::Region;
use crate::snippet::DEFAULT_SNIPPET_LENGTH;

/// Limits on one message's input. A value at the limit passes; one over it is rejected
/// with `InvalidInput` naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum body size in bytes (UTF-8). Default 1 MiB.
    pub max_body_bytes: usize,
    /// Maximum number of recipients (`to`). Default 50.
    pub max_recipients: usize,
    /// Maximum number of attachments. Default 10.
    pub max_attachments: usize,
    /// Maximum length of one address, attachment URL or provider id, in bytes. Default 2048.
    pub max_field_bytes: usize,
    /// Largest page a connection returns (`first`/`last`). Default 100.
    pub max_page_size: u64,
    /// Page size when the caller gives neither `first` nor `last`. Default 20.
    pub default_page_size: u64,
    /// The most matching rows a `totalCount` counts when it counts rows (a filter no
    /// counter holds): past it, the count is reported as this many, a lower bound
    /// ([`crate::query::Count`]). Default [`DEFAULT_MAX_COUNT_ROWS`].
    pub max_count_rows: u64,
}

/// The default [`Limits::max_count_rows`].
pub const DEFAULT_MAX_COUNT_ROWS: u64 = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_recipients: 50,
            max_attachments: 10,
            max_field_bytes: 2048,
            max_page_size: 100,
            default_page_size: 20,
            max_count_rows: DEFAULT_MAX_COUNT_ROWS,
        }
    }
}

/// Everything the record path needs to know besides the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Snippet length in user-perceived characters, 1..=4096. Default 64.
    pub snippet_length: usize,
    /// Region used to read phone numbers written without a country code. Default US.
    pub default_region: Region,
    /// Input limits.
    pub limits: Limits,
    /// The most messages of one conversation stored in one transaction (group commit,
    /// [`crate::record::MAX_GROUP`] by default); 1 stores each message in its own.
    pub record_group_max: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            snippet_length: DEFAULT_SNIPPET_LENGTH,
            default_region: Region::default(),
            limits: Limits::default(),
            record_group_max: crate::record::MAX_GROUP,
        }
    }
}
