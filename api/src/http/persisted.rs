//! Persisted documents: a request names its document by SHA-256 instead of sending the text.
//!
//! - **Automatic persisted queries** (Apollo's protocol, over POST and GET):
//!   `extensions.persistedQuery = { version: 1, sha256Hash }`. Without `query`, the text comes
//!   from a bounded in-memory cache ([`APQ_CACHE_ENTRIES`] documents, least recently used
//!   evicted) or the request answers `PERSISTED_QUERY_NOT_FOUND`, and the client retries
//!   with the text, which is checked against the hash and cached. A GET with only the hash
//!   is a small, cacheable URL.
//! - **Trusted documents** (`--trusted-documents FILE`, the `{ "<sha256>": "<document>" }` map
//!   graphql-codegen's client preset and Relay's persisted-queries output write): only listed
//!   documents run. A request names one by `extensions.persistedQuery.sha256Hash` or
//!   `documentId` (`sha256:` prefix optional), or sends a text whose hash is listed; an
//!   unknown hash answers `PERSISTED_QUERY_NOT_FOUND` and any other text `FORBIDDEN` (403),
//!   before anything parses it. Automatic registration is off in this mode.
//!
//! async-graphql's `ApolloPersistedQueries` extension implements the first protocol inside
//! the schema, after parsing and on the parsed document only; parley resolves the text in
//! the HTTP layer instead, so the size, token and nesting checks, the GET-mutation refusal,
//! the cost probe and the trusted list all see the document's text. The cache is the same
//! `lru` crate async-graphql uses.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_graphql::{Request, Value};
use axum::http::StatusCode;
use sha2::{Digest, Sha256};

use crate::error::code;

/// How many documents the automatic-persisted-queries cache holds. Each is at most
/// `--max-query-bytes` (64 KiB by default), so the cache stays under 32 MiB.
pub const APQ_CACHE_ENTRIES: usize = 512;

/// The persisted documents a server knows: its APQ cache, and the trusted list when set.
#[derive(Clone)]
pub struct PersistedDocuments {
    cache: Arc<Mutex<lru::LruCache<String, Arc<str>>>>,
    trusted: Option<Arc<HashMap<String, Arc<str>>>>,
}

impl Default for PersistedDocuments {
    fn default() -> Self {
        PersistedDocuments {
            cache: Arc::new(Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(APQ_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            ))),
            trusted: None,
        }
    }
}

/// Why a persisted request cannot run.
#[derive(Debug)]
pub struct Refusal {
    /// `extensions.code`.
    pub code: &'static str,
    /// What to do.
    pub message: String,
    /// A status that overrides the media type's rule for request errors (403 for
    /// `FORBIDDEN`).
    pub status: Option<StatusCode>,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        status: (code == self::code::FORBIDDEN).then_some(StatusCode::FORBIDDEN),
    }
}

/// The lowercase hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl PersistedDocuments {
    /// Only the documents of `trusted` (hash -> text) run.
    pub fn trusted(trusted: HashMap<String, String>) -> Self {
        PersistedDocuments {
            trusted: Some(Arc::new(
                trusted
                    .into_iter()
                    .map(|(k, v)| (bare_hash(&k), Arc::from(v)))
                    .collect(),
            )),
            ..Default::default()
        }
    }

    /// Reads a trusted-documents file: a JSON object of SHA-256 (hex, `sha256:` prefix
    /// optional) -> document text.
    /// Each key must be the hash of its text, so a typo cannot let another document in.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the trusted documents {}", path.display()))?;
        let map: HashMap<String, String> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} must be a JSON object of \"<sha256 hex>\": \"<document>\"",
                path.display()
            )
        })?;
        for (hash, document) in &map {
            let actual = sha256_hex(document);
            if actual != bare_hash(hash) {
                anyhow::bail!(
                    "{}: the document listed as {hash} hashes to {actual}; regenerate the file",
                    path.display()
                );
            }
        }
        Ok(Self::trusted(map))
    }

    /// Whether only trusted documents run.
    pub fn is_trusted_only(&self) -> bool {
        self.trusted.is_some()
    }

    /// Fills in `request.query` from the document its hash names, or refuses it; a request
    /// that names no persisted document is left as it is (and refused in trusted mode unless
    /// its text is listed). Returns the hash to cache the text under once it has passed the
    /// text checks ([`Self::remember`]), for an APQ registration.
    pub fn resolve(&self, request: &mut Request) -> Result<Option<String>, Refusal> {
        let hash = requested_hash(request)?;
        if let Some(trusted) = &self.trusted {
            let hash = match hash {
                Some(h) => h,
                None if request.query.is_empty() => {
                    return Err(refuse(
                        code::BAD_REQUEST,
                        "the request has no `query` and names no persisted document",
                    ));
                }
                None => sha256_hex(&request.query),
            };
            return match trusted.get(&hash) {
                Some(document) => {
                    request.query = document.to_string();
                    Ok(None)
                }
                None if request.query.is_empty() => Err(refuse(
                    code::PERSISTED_QUERY_NOT_FOUND,
                    format!(
                        "no trusted document has the hash {hash}; this server only runs its listed documents"
                    ),
                )),
                None => Err(refuse(
                    code::FORBIDDEN,
                    "this server only runs trusted documents; send the hash of a listed one",
                )),
            };
        }
        let Some(hash) = hash else { return Ok(None) };
        if !request.query.is_empty() {
            if sha256_hex(&request.query) != hash {
                return Err(refuse(
                    code::BAD_REQUEST,
                    "provided sha does not match query: `persistedQuery.sha256Hash` must be the SHA-256 of `query`",
                ));
            }
            return Ok(Some(hash));
        }
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned();
        match cached {
            Some(text) => {
                request.query = text.to_string();
                Ok(None)
            }
            None => Err(refuse(
                code::PERSISTED_QUERY_NOT_FOUND,
                "PersistedQueryNotFound",
            )),
        }
    }

    /// Caches an APQ registration's text under its (checked) hash.
    pub fn remember(&self, hash: String, text: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(hash, Arc::from(text));
    }
}

/// A hash as stored: lowercase hex, without the `sha256:` prefix that graphql-codegen's
/// `persisted-documents.json` and `documentId` may carry.
fn bare_hash(key: &str) -> String {
    key.strip_prefix("sha256:")
        .unwrap_or(key)
        .to_ascii_lowercase()
}

/// The hash a request names: `extensions.persistedQuery` (version 1) or `documentId`
/// (moved into `extensions` by the request reader).
fn requested_hash(request: &mut Request) -> Result<Option<String>, Refusal> {
    if let Some(Value::String(id)) = request.extensions.remove("documentId") {
        return Ok(Some(bare_hash(&id)));
    }
    let Some(pq) = request.extensions.remove("persistedQuery") else {
        return Ok(None);
    };
    let Value::Object(pq) = pq else {
        return Err(refuse(
            code::BAD_REQUEST,
            "`extensions.persistedQuery` must be { \"version\": 1, \"sha256Hash\": \"...\" }",
        ));
    };
    match pq.get("version") {
        Some(Value::Number(n)) if n.as_i64() == Some(1) => {}
        _ => {
            return Err(refuse(
                code::PERSISTED_QUERY_NOT_SUPPORTED,
                "only `persistedQuery` version 1 is supported",
            ));
        }
    }
    match pq.get("sha256Hash") {
        Some(Value::String(h)) => Ok(Some(h.to_ascii_lowercase())),
        _ => Err(refuse(
            code::BAD_REQUEST,
            "`extensions.persistedQuery.sha256Hash` must be the SHA-256 (hex) of the document",
        )),
    }
}
