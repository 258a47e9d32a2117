//! Request-level limits of the served router: how many requests are handled at once (the
//! rest wait in a bounded queue or are shed with 503 `OVERLOADED`), how slowly a request
//! body may arrive (408 `REQUEST_TIMEOUT`), and how large a JSON response may be
//! (`RESPONSE_TOO_LARGE`). The connection-level limits (header and idle timeouts,
//! connection caps) live in [`super::serve`]; [`ConnLimits`] holds both.
//!
//! Errors are GraphQL-shaped (`{"errors": [{"message", "extensions": {"code"}}]}`), or the
//! REST shape (`{"code", "message"}`) on `/api/` paths.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_graphql::{ErrorExtensionValues, ServerError};
use async_graphql_axum::GraphQLResponse;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::{Service, ServiceExt as _};

use crate::error::code::PAYLOAD_TOO_LARGE;
use crate::middleware::{Answer, Finish, Finisher, Finishing};

/// `extensions.code` of a request shed because the server is at its limits (503, with
/// `Retry-After`); safe to retry after that many seconds. The same code as a saturated
/// database pool.
pub use crate::error::code::OVERLOADED;
/// `extensions.code` of a request whose body arrived too slowly (408; the connection is
/// closed).
pub const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
/// `extensions.code` of a result over `--max-response-bytes`: ask for less (a smaller
/// page, fewer fields, fewer operations in a batch).
pub const RESPONSE_TOO_LARGE: &str = "RESPONSE_TOO_LARGE";

/// Seconds a shed client is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Connection- and request-level limits of `parley serve` (see `ConnArgs` in
/// [`crate::config`] for what each means; the defaults are the flags' defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time to send a request's headers, from when the connection is ready for one.
    pub header_read_timeout: Duration,
    /// Time a request body may take before the rate allowance.
    pub body_read_timeout: Duration,
    /// Body bytes per second that earn one more second.
    pub body_min_rate: u64,
    /// Time a connection may stay silent with no request being handled.
    pub idle_timeout: Duration,
    /// Open connections.
    pub max_connections: usize,
    /// Open connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Requests handled at once.
    pub max_in_flight: usize,
    /// Requests waiting for a turn.
    pub max_queued: usize,
    /// Time a request may wait for a turn.
    pub queue_timeout: Duration,
    /// Largest JSON response in bytes.
    pub max_response_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            body_min_rate: 65_536,
            idle_timeout: Duration::from_secs(5),
            max_connections: 1024,
            max_connections_per_ip: 512,
            max_in_flight: 16,
            max_queued: 512,
            queue_timeout: Duration::from_secs(10),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `S` behind the request-level limits, outermost first: the response cap, admission,
/// the body deadline.
pub type Bounded<S> = CapResponse<Admit<CutSlowBodies<S>>>;

/// `app` behind the request-level limits (see [`Bounded`]).
pub fn layer<S>(app: S, limits: &ConnLimits) -> Bounded<S> {
    let gate = Arc::new(Gate {
        permits: Arc::new(Semaphore::new(limits.max_in_flight)),
        queued: AtomicUsize::new(0),
        max_queued: limits.max_queued,
        queue_timeout: limits.queue_timeout,
    });
    let settings = BodyDeadline {
        timeout: limits.body_read_timeout,
        min_rate: limits.body_min_rate,
    };
    CapResponse {
        inner: Admit {
            inner: CutSlowBodies {
                inner: app,
                settings,
            },
            gate,
        },
        max: limits.max_response_bytes,
    }
}

/// Counts a request or connection refused by one of these limits in
/// `parley_http_limited_total{reason}`.
pub(crate) fn count(reason: &'static str) {
    metrics::counter!("parley_http_limited_total", "reason" => reason).increment(1);
}

/// Whether `path` is a REST path (REST error shape) rather than GraphQL.
fn is_rest(path: &str) -> bool {
    path.starts_with("/api/")
}

/// Which error shape a request's answer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Graphql,
    Rest,
}

impl Endpoint {
    fn of(path: &str) -> Endpoint {
        if is_rest(path) {
            Endpoint::Rest
        } else {
            Endpoint::Graphql
        }
    }
}

/// An error in the shape of the endpoint at `path`.
pub(crate) fn error_response(
    path: &str,
    status: StatusCode,
    code: &'static str,
    message: String,
) -> Response {
    endpoint_error(Endpoint::of(path), status, code, message)
}

/// An error in the shape of `endpoint`.
fn endpoint_error(
    endpoint: Endpoint,
    status: StatusCode,
    code: &'static str,
    message: String,
) -> Response {
    if endpoint == Endpoint::Rest {
        let body = serde_json::json!({ "code": code, "message": message });
        (status, axum::Json(body)).into_response()
    } else {
        let mut err = ServerError::new(message, None);
        let mut ext = ErrorExtensionValues::default();
        ext.set("code", code);
        err.extensions = Some(ext);
        let response = async_graphql::Response::from_errors(vec![err]);
        (status, GraphQLResponse::from(response)).into_response()
    }
}

/// The 503 `OVERLOADED` answer, with `Retry-After`.
pub(crate) fn overloaded(path: &str, why: &str) -> Response {
    let mut response = error_response(
        path,
        StatusCode::SERVICE_UNAVAILABLE,
        OVERLOADED,
        format!("the server is overloaded ({why}); retry after {RETRY_AFTER_SECONDS} s"),
    );
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    // The body (if any) is not read: close rather than drain it.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The health and metrics endpoints: cheap, and needed most when the server is loaded,
/// so they are never queued or shed.
fn is_exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The in-flight cap and its queue.
struct Gate {
    permits: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
}

/// A place in the queue, given back however the wait ends (a turn, a timeout, or the
/// client going away).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Admission: a request is handled when fewer than `max_in_flight` are; otherwise it waits
/// in the queue (up to `queue_timeout`) when fewer than `max_queued` wait, and is shed with
/// 503 `OVERLOADED` and `Retry-After` when not. The turn is held until the handler has
/// answered, so it covers reading the request body.
#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> Service<Request> for Admit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<Finishing<S::Future, Turn>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let turn = if is_exempt(request.uri().path()) {
            Turn { _permit: None }
        } else {
            match self.gate.permits.clone().try_acquire_owned() {
                Ok(permit) => Turn {
                    _permit: Some(permit),
                },
                Err(_) => {
                    let gate = self.gate.clone();
                    let inner = self.inner.clone();
                    return Answer::boxed(async move {
                        let permit = match wait_for_turn(&gate).await {
                            Ok(permit) => permit,
                            Err(why) => return overloaded(request.uri().path(), why),
                        };
                        let Ok(response) = inner.oneshot(request).await;
                        drop(permit);
                        response
                    });
                }
            }
        };
        Answer::Inner {
            future: Finishing::new(self.inner.call(request), turn),
        }
    }
}

/// A turn under the in-flight cap (none for the exempt paths), given back once the inner
/// service has answered (or its answer is dropped).
pub struct Turn {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Finish for Turn {
    fn finish(self, response: Response) -> Response {
        drop(self);
        response
    }
}

/// A turn after waiting in the queue, or why the request is shed.
async fn wait_for_turn(gate: &Gate) -> Result<OwnedSemaphorePermit, &'static str> {
    if gate.queued.fetch_add(1, Ordering::SeqCst) >= gate.max_queued {
        gate.queued.fetch_sub(1, Ordering::SeqCst);
        count("queue_full");
        return Err("too many requests waiting");
    }
    let _place = Queued(&gate.queued);
    match tokio::time::timeout(gate.queue_timeout, gate.permits.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            count("queue_timeout");
            Err("the request waited too long")
        }
    }
}

/// The body deadline's settings.
#[derive(Debug, Clone, Copy)]
struct BodyDeadline {
    timeout: Duration,
    min_rate: u64,
}

/// Wraps the request body in a [`DeadlineBody`]; when it expired, the handler's answer
/// (whatever reading the cut body made it say) is replaced by 408 `REQUEST_TIMEOUT` and
/// the connection is closed.
#[derive(Clone)]
pub struct CutSlowBodies<S> {
    inner: S,
    settings: BodyDeadline,
}

impl<S> Service<Request> for CutSlowBodies<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Finishing<S::Future, Expiry>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let expiry = Expiry {
            expired: Arc::new(AtomicBool::new(false)),
            settings: self.settings,
            endpoint: Endpoint::of(request.uri().path()),
        };
        let request = request.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                settings: self.settings,
                started: None,
                received: 0,
                sleep: None,
                expired: expiry.expired.clone(),
            })
        });
        Finishing::new(self.inner.call(request), expiry)
    }
}

/// Whether a request's body was cut, and the 408 that then replaces its answer.
pub struct Expiry {
    expired: Arc<AtomicBool>,
    settings: BodyDeadline,
    endpoint: Endpoint,
}

impl Finish for Expiry {
    fn finish(self, response: Response) -> Response {
        if !self.expired.load(Ordering::SeqCst) {
            return response;
        }
        count("body_timeout");
        let mut timeout = endpoint_error(
            self.endpoint,
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
            format!(
                "the request body arrived too slowly (it may take {} s plus one second per {} \
                 bytes received); send it faster or in one piece",
                self.settings.timeout.as_secs_f64(),
                self.settings.min_rate
            ),
        );
        keep_request_id(response.headers(), timeout.headers_mut());
        timeout
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        timeout
    }
}

/// Copies the `x-request-id` of the answer being replaced.
fn keep_request_id(from: &HeaderMap, to: &mut HeaderMap) {
    if let Some(id) = from.get("x-request-id") {
        to.insert("x-request-id", id.clone());
    }
}

/// A request body that fails once it has taken longer than `timeout` plus one second per
/// `min_rate` bytes received, counted from when the handler first reads it (the rule of
/// Apache's `mod_reqtimeout`, `body=T,MinRate=R`). A body that keeps up `min_rate` is never
/// cut; one that trickles in is cut at about `timeout`, whatever it declared.
struct DeadlineBody {
    inner: Body,
    settings: BodyDeadline,
    started: Option<Instant>,
    received: u64,
    sleep: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn deadline(&self, started: Instant) -> Instant {
        let earned =
            Duration::try_from_secs_f64(self.received as f64 / self.settings.min_rate as f64)
                .unwrap_or(Duration::MAX);
        self.settings
            .timeout
            .checked_add(earned)
            .and_then(|d| started.checked_add(d))
            // Far beyond any request; Instant cannot represent "never".
            .unwrap_or_else(|| started + Duration::from_secs(365 * 86_400))
    }

    fn expire(&mut self) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.expired.store(true, Ordering::SeqCst);
        Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the request body arrived too slowly",
        )))))
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.expired.load(Ordering::SeqCst) {
            return this.expire();
        }
        let started = *this.started.get_or_insert_with(Instant::now);
        if this.sleep.is_none() {
            this.sleep = Some(Box::pin(tokio::time::sleep_until(this.deadline(started))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let deadline = this.deadline(started);
                    if Instant::now() > deadline {
                        return this.expire();
                    }
                    if let Some(sleep) = this.sleep.as_mut() {
                        sleep.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let due = this
                    .sleep
                    .as_mut()
                    .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                if due { this.expire() } else { Poll::Pending }
            }
            done => done,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a response is JSON (`application/json`, `application/graphql-response+json`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        })
}

/// Replaces a JSON response over `max` bytes by a `RESPONSE_TOO_LARGE` error (HTTP 200
/// with `data: null` on GraphQL, as for any execution error; 400 on REST), so a client
/// never receives a truncated body. Static assets, the GraphiQL page and metrics are not
/// results and pass as they are.
#[derive(Clone)]
pub struct CapResponse<S> {
    inner: S,
    max: usize,
}

impl<S> Service<Request> for CapResponse<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Capping<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        Capping {
            endpoint: Endpoint::of(request.uri().path()),
            inner: self.inner.call(request),
            max: self.max,
            buffering: None,
        }
    }
}

pin_project! {
    /// The answer of [`CapResponse`]'s inner service, checked against the cap (and
    /// buffered first when its length is unknown).
    pub struct Capping<F> {
        #[pin]
        inner: F,
        max: usize,
        endpoint: Endpoint,
        buffering: Option<BoxFuture<'static, Response>>,
    }
}

impl<F> Future for Capping<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(buffering) = this.buffering.as_mut() {
            return buffering.as_mut().poll(cx).map(Ok);
        }
        let Ok(response) = ready!(this.inner.poll(cx));
        match cap(response, *this.max, *this.endpoint) {
            Ok(response) => Poll::Ready(Ok(response)),
            Err(buffering) => this.buffering.insert(buffering).as_mut().poll(cx).map(Ok),
        }
    }
}

/// `response` within `max` bytes: as it is, or the `RESPONSE_TOO_LARGE` error; `Err` when
/// its length is unknown, with the future that buffers it (up to the cap) to decide.
fn cap(
    response: Response,
    max: usize,
    endpoint: Endpoint,
) -> Result<Response, BoxFuture<'static, Response>> {
    if !is_json(response.headers()) {
        return Ok(response);
    }
    let hint = http_body::Body::size_hint(response.body());
    if hint.upper().is_some_and(|upper| upper <= max as u64) {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let too_large = move |headers: &HeaderMap| {
        count("response_too_large");
        let status = match endpoint {
            Endpoint::Rest => StatusCode::BAD_REQUEST,
            Endpoint::Graphql => StatusCode::OK,
        };
        let mut response = endpoint_error(
            endpoint,
            status,
            RESPONSE_TOO_LARGE,
            format!(
                "the response is over the server's limit of {max} bytes and was not sent \
                 (a mutation in it did take effect); ask for less: a smaller page \
                 (first/last/limit), fewer fields, or fewer operations per batch"
            ),
        );
        keep_request_id(headers, response.headers_mut());
        response
    };
    if hint.lower() > max as u64 {
        return Ok(too_large(&parts.headers));
    }
    // A body of unknown length: buffer it up to the cap to decide.
    Err(Box::pin(async move {
        match Limited::new(body, max).collect().await {
            Ok(collected) => Response::from_parts(parts, Body::from(collected.to_bytes())),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => too_large(&parts.headers),
            Err(e) => {
                tracing::warn!(error = %e, "the response body failed while being sent");
                endpoint_error(
                    endpoint,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    crate::error::code::INTERNAL,
                    "the response failed while being produced; retry".to_owned(),
                )
            }
        }
    }))
}

/// Middleware for the router, outside its body-limit layer (like
/// [`crate::rest::JsonPayloadTooLarge`] for `/api/`): the layer refuses a body whose
/// `content-length` is over the limit with a plain-text 413; elsewhere (`/graphql`) this
/// gives that answer the GraphQL shape with `PAYLOAD_TOO_LARGE`, as a body that outgrows
/// the limit while streaming gets. The limit is its value.
#[derive(Debug, Clone, Copy)]
pub struct GraphqlPayloadTooLarge(pub usize);

impl Finisher for GraphqlPayloadTooLarge {
    type Finish = Option<GraphqlPayloadTooLarge>;

    fn start(&self, request: &Request) -> Self::Finish {
        (!is_rest(request.uri().path())).then_some(*self)
    }
}

impl Finish for GraphqlPayloadTooLarge {
    fn finish(self, response: Response) -> Response {
        if response.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json(response.headers()) {
            return response;
        }
        let limit = self.0;
        endpoint_error(
            Endpoint::Graphql,
            StatusCode::PAYLOAD_TOO_LARGE,
            PAYLOAD_TOO_LARGE,
            format!(
                "the request body is over the server's limit of {limit} bytes; send less \
                 (PARLEY_MAX_REQUEST_BYTES)"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn limits(args: &[&str]) -> Result<ConnLimits, clap::Error> {
        let cli = Cli::try_parse_from(["parley", "serve"].iter().chain(args))?;
        match cli.command {
            Some(Command::Serve(serve)) => Ok(serve.conn.limits()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_flags_defaults_are_the_documented_defaults() {
        assert_eq!(limits(&[]).unwrap(), ConnLimits::default());
    }

    #[test]
    fn limits_out_of_range_are_refused_naming_the_flag() {
        for (args, expected) in [
            (
                &["--max-connections", "0"][..],
                "'--max-connections <MAX_CONNECTIONS>'",
            ),
            (
                &["--max-in-flight", "0"],
                "'--max-in-flight <MAX_IN_FLIGHT>'",
            ),
            (
                &["--body-min-rate", "0"],
                "'--body-min-rate <BODY_MIN_RATE>'",
            ),
            (&["--max-response-bytes", "1023"], "1023 is not in 1024.."),
            (
                &["--idle-timeout", "0"],
                "must be between 0.001 and 86400 seconds",
            ),
            (
                &["--header-read-timeout=-1"],
                "'--header-read-timeout <HEADER_READ_TIMEOUT>'",
            ),
        ] {
            let err = limits(args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
            assert!(err.to_string().contains(expected), "{args:?}: {err}");
        }
        let zero_queue = limits(&["--max-queued", "0"]).unwrap();
        assert_eq!(zero_queue.max_queued, 0);
    }

    #[tokio::test]
    async fn a_body_is_cut_when_it_falls_behind_its_allowance() {
        use futures::StreamExt as _;
        let settings = BodyDeadline {
            timeout: Duration::from_millis(200),
            min_rate: 100,
        };
        // 50 bytes at once, then nothing: allowed 0.2 s + 0.5 s.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let expired = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody {
            inner: Body::from_stream(tokio_stream(rx)),
            settings,
            started: None,
            received: 0,
            sleep: None,
            expired: expired.clone(),
        };
        tx.send(Ok(Bytes::from(vec![b'x'; 50]))).await.unwrap();
        let started = Instant::now();
        let mut stream = Body::new(body).into_data_stream();
        assert_eq!(stream.next().await.unwrap().unwrap().len(), 50);
        assert!(stream.next().await.unwrap().is_err());
        let cut = started.elapsed();
        assert!(cut >= Duration::from_millis(690), "{cut:?}");
        assert!(cut < Duration::from_millis(2000), "{cut:?}");
        assert!(expired.load(Ordering::SeqCst));
        drop(tx);
    }

    fn tokio_stream(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
