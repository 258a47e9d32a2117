//! REST errors: the status and `{code, message, field?}` body of a [`ClientError`], and the
//! answers of the fallback routes.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use service::Error;

use crate::error::{ClientError, code};
use crate::request_id::request_id;

/// An error answer: the status and `{code, message, field?}` of a [`ClientError`].
#[derive(Debug)]
pub(super) struct RestError(pub(super) ClientError);

impl RestError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RestError(ClientError {
            code,
            message: message.into(),
            field: None,
            status: status.as_u16(),
        })
    }

    /// A `BAD_USER_INPUT` naming `field`, through the same mapping as service errors.
    pub(super) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        RestError(ClientError::from_service(
            &Error::invalid(field, reason),
            None,
        ))
    }

    pub(super) fn service(err: &Error, headers: &HeaderMap) -> Self {
        RestError(ClientError::from_service(err, Some(request_id(headers))))
    }

    /// A service error from a request on `db`: a pool timeout is told apart (overload or
    /// outage) by `db`'s pool.
    pub(super) fn service_on(
        err: Error,
        db: &service::DatabaseConnection,
        headers: &HeaderMap,
    ) -> Self {
        Self::service(&err.in_pool(db), headers)
    }
}

/// The wire shape of an error.
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.0.code,
            message: &self.0.message,
            field: self.0.field.as_deref(),
        };
        let mut response = (status, Json(body)).into_response();
        if self.0.code == code::OVERLOADED {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                crate::error::RETRY_AFTER_SECONDS.into(),
            );
        }
        response
    }
}

pub(super) async fn method_not_allowed() -> RestError {
    RestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method: messages are POSTed, pages are read with GET",
    )
}

pub(super) async fn not_found() -> RestError {
    RestError::new(
        StatusCode::NOT_FOUND,
        code::NOT_FOUND,
        "no such endpoint; see the README's REST ingress section",
    )
}

pub(super) fn too_large(limit: usize) -> RestError {
    RestError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code::PAYLOAD_TOO_LARGE,
        format!("the request body is over the limit of {limit} bytes"),
    )
}
