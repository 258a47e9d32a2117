//! The one mapping from `service::Error` to what clients see: a GraphQL error with a stable
//! `extensions.code` (and `field`), or an HTTP status for REST. Database error text is
//! logged with the request id and never sent.

use async_graphql::ErrorExtensions;
use service::Error;

/// Stable error codes, the `extensions.code` values clients switch on.
pub mod code {
    /// The input is invalid; `extensions.field` names the field.
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    /// A cursor this server did not issue for this list.
    pub const INVALID_CURSOR: &str = "INVALID_CURSOR";
    /// No such record.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The query is too deep, too complex, too nested, or has too many directives or
    /// batched operations.
    pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
    /// The database is unreachable right now; safe to retry.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// Every database connection stayed busy for the whole acquire timeout: the server has
    /// more work than it can take right now, while the database is healthy. Safe to retry
    /// after the `Retry-After` seconds.
    pub const OVERLOADED: &str = "OVERLOADED";
    /// A bug or an unexpected failure; the message carries a request id to report.
    pub const INTERNAL: &str = "INTERNAL";
    /// The query text does not parse.
    pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    /// The query does not validate against the schema.
    pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    /// A mutation sent over GET, or another method the endpoint does not take.
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    /// The request body is over the configured limit.
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// The request is not JSON (REST, and a GraphQL POST: answered 415 before the body is
    /// read).
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    /// No valid bearer token (or webhook signature): HTTP 401.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// Too many requests; retry after the `Retry-After` header's seconds: HTTP 429.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The HTTP request is not a well-formed GraphQL request: the body is not JSON, or
    /// `query` is missing, or a parameter has the wrong type (400).
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// The client's `Accept` allows neither `application/graphql-response+json` nor
    /// `application/json` (406).
    pub const NOT_ACCEPTABLE: &str = "NOT_ACCEPTABLE";
    /// The request names a persisted document (by hash) the server does not have: send
    /// the text with the hash (automatic persisted queries), or use a listed document.
    pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
    /// `extensions.persistedQuery` has a version other than 1.
    pub const PERSISTED_QUERY_NOT_SUPPORTED: &str = "PERSISTED_QUERY_NOT_SUPPORTED";
    /// Not allowed here (403): the principal lacks a scope or the inbox (`extensions.field`
    /// names what), or with `--trusted-documents`, a document that is not listed.
    pub const FORBIDDEN: &str = "FORBIDDEN";
}

/// Seconds an `OVERLOADED` answer asks the client to wait (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// A client-facing rendering of a service error: code, message, field, HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// The `extensions.code`.
    pub code: &'static str,
    /// A message safe to show.
    pub message: String,
    /// The offending input field, for `BAD_USER_INPUT`.
    pub field: Option<String>,
    /// The HTTP status for REST.
    pub status: u16,
}

impl ClientError {
    /// Maps a service error; internal errors are logged with `request_id` and replaced by a
    /// generic message that carries it.
    pub fn from_service(err: &Error, request_id: Option<&str>) -> Self {
        let (code, message, field, status) = match err {
            Error::InvalidInput { field, reason } => (
                code::BAD_USER_INPUT,
                format!("{field}: {reason}"),
                Some(field.clone()),
                400,
            ),
            Error::Forbidden { field, reason } => (
                code::FORBIDDEN,
                format!("{field}: {reason}"),
                Some(field.clone()),
                403,
            ),
            Error::TooComplex { field, reason } => (
                code::QUERY_TOO_COMPLEX,
                format!("{field}: {reason}"),
                Some(field.clone()),
                400,
            ),
            Error::InvalidCursor(why) => (code::INVALID_CURSOR, why.clone(), None, 400),
            Error::NotFound { .. } => (code::NOT_FOUND, err.to_string(), None, 404),
            Error::Overloaded(detail) => {
                metrics::counter!("parley_overloaded_total").increment(1);
                tracing::warn!(
                    request_id,
                    detail,
                    "overloaded: no free database connection"
                );
                (
                    code::OVERLOADED,
                    format!(
                        "the server is busy (every database connection is in use); retry in {RETRY_AFTER_SECONDS} s"
                    ),
                    None,
                    503,
                )
            }
            Error::Unavailable(detail) | Error::PoolTimeout(detail) => {
                tracing::warn!(request_id, detail, "database unavailable");
                (
                    code::UNAVAILABLE,
                    "the database is unavailable right now; retry shortly".to_owned(),
                    None,
                    503,
                )
            }
            Error::Internal(_) | Error::Db(_) => {
                tracing::error!(request_id, error = %err, "internal error");
                (
                    code::INTERNAL,
                    format!(
                        "internal error; report request id {}",
                        request_id.unwrap_or("(none)")
                    ),
                    None,
                    500,
                )
            }
        };
        ClientError {
            code,
            message,
            field,
            status,
        }
    }

    /// As a GraphQL error with `extensions.code` (and `extensions.field`).
    pub fn into_graphql(self) -> async_graphql::Error {
        async_graphql::Error::new(self.message).extend_with(|_, ext| {
            ext.set("code", self.code);
            if let Some(field) = &self.field {
                ext.set("field", field.as_str());
            }
        })
    }
}

/// A `BAD_USER_INPUT` GraphQL error naming `field`.
pub fn bad_input(field: &str, message: impl Into<String>) -> async_graphql::Error {
    ClientError::from_service(&Error::invalid(field, message), None).into_graphql()
}

#[cfg(test)]
mod tests {
    use super::{ClientError, code};
    use service::Error;

    #[test]
    fn a_broken_invariant_is_internal_with_the_request_id() {
        let err = Error::Internal("conversation upsert returned no row".into());
        assert_eq!(
            ClientError::from_service(&err, Some("req-7")),
            ClientError {
                code: code::INTERNAL,
                message: "internal error; report request id req-7".into(),
                field: None,
                status: 500,
            }
        );
    }

    #[test]
    fn a_pool_timeout_is_unavailable_until_told_apart() {
        let err = Error::PoolTimeout("pool timed out".into());
        assert_eq!(
            ClientError::from_service(&err, None).code,
            code::UNAVAILABLE
        );
        let err = Error::Overloaded("pool timed out".into());
        assert_eq!(
            ClientError::from_service(&err, None),
            ClientError {
                code: code::OVERLOADED,
                message: "the server is busy (every database connection is in use); retry in 1 s"
                    .into(),
                field: None,
                status: 503,
            }
        );
    }

    #[test]
    fn an_outage_is_unavailable() {
        let err = Error::Unavailable("pool timed out".into());
        assert_eq!(
            ClientError::from_service(&err, Some("req-8")),
            ClientError {
                code: code::UNAVAILABLE,
                message: "the database is unavailable right now; retry shortly".into(),
                field: None,
                status: 503,
            }
        );
    }
}
