//! Reading a REST request: a JSON object body (content type, size, syntax, in that order)
//! and the page parameters of a query string.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};
use service::query::PageRequest;

use super::error::{RestError, too_large};
use crate::error::code;
use crate::state::AppState;

/// A request body that is one JSON object, checked in the order a client fixes it: the
/// content type (415), the size (413), then the syntax (400).
pub(super) struct JsonObject(pub(super) Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = RestError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, RestError> {
        if !is_json(req.headers()) {
            return Err(RestError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON, with content-type: application/json",
            ));
        }
        let limit = state.config.max_request_bytes;
        // The router's body-limit layer ends the stream at the limit; axum reports that
        // as a 413 rejection, anything else as a body that could not be read.
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(limit)
            } else {
                RestError::new(
                    StatusCode::BAD_REQUEST,
                    code::BAD_USER_INPUT,
                    "the request body could not be read",
                )
            }
        })?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(RestError::new(
                StatusCode::BAD_REQUEST,
                code::BAD_USER_INPUT,
                "the body must be a JSON object",
            )),
            Err(e) => Err(RestError::new(
                StatusCode::BAD_REQUEST,
                code::BAD_USER_INPUT,
                format!("the body is not valid JSON: {e}"),
            )),
        }
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed.
pub(super) fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// `?first=&after=&last=&before=`; empty values count as absent, other parameters are
/// ignored.
pub(super) fn page_request(
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<PageRequest, RestError> {
    let Query(params) =
        params.map_err(|_| RestError::invalid("query", "the query string does not parse"))?;
    let text = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    let number = |name: &str| {
        text(name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| RestError::invalid(name, format!("{name} must be a whole number")))
            })
            .transpose()
    };
    Ok(PageRequest {
        first: number("first")?,
        after: text("after"),
        last: number("last")?,
        before: text("before"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognized() {
        let headers = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            h
        };
        assert!(is_json(&headers("application/json")));
        assert!(is_json(&headers("Application/JSON; charset=utf-8")));
        assert!(is_json(&headers("application/vnd.provider+json")));
        assert!(!is_json(&headers("text/plain")));
        assert!(!is_json(&headers("application/x-www-form-urlencoded")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
