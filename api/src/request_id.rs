//! Request ids: made for every HTTP request (or taken from the client's `x-request-id`),
//! echoed in the response, carried in each log line's span and in internal errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, HeaderValue};
use tower_http::request_id::{MakeRequestId, RequestId as HttpRequestId};

/// The per-request id (from `x-request-id`), put in the GraphQL request data by the HTTP
/// layer.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Request ids: a per-process random-ish prefix plus a counter; cheap and unique enough to
/// find one request in the logs.
#[derive(Clone, Default)]
pub(crate) struct NextRequestId(Arc<AtomicU64>);

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<HttpRequestId> {
        static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let prefix = PREFIX.get_or_init(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.subsec_nanos() ^ std::process::id().rotate_left(16)
        });
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{prefix:08x}-{n:x}"))
            .ok()
            .map(HttpRequestId::new)
    }
}

/// The request id the request-id layer put on the request (`-` when there is none).
pub(crate) fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}
