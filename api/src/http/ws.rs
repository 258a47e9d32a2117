//! `GET /graphql/ws`: GraphQL subscriptions over WebSocket, in the `graphql-transport-ws`
//! subprotocol (the `graphql-ws` library) or the legacy `graphql-ws` one
//! (subscriptions-transport-ws), spoken by async-graphql-axum's `GraphQLWebSocket`.
//!
//! - **No request permit.** The upgrade is answered at once, so an open connection holds
//!   none of the `--max-in-flight` permits (a subscription is not a request being
//!   handled): subscribers never crowd out queries.
//! - **Authentication** rides in `connection_init`'s payload (`{"Authorization": "Bearer
//!   <JWT>"}`, or `{"authToken": "<JWT>"}`: browsers cannot set headers on a WebSocket),
//!   checked by the same verifier as HTTP; a refused token closes the connection. Without
//!   authentication configured (development mode) everyone is admin, as over HTTP. A
//!   browser page may connect only from an allowed origin (`--cors-origin`) or the
//!   server's own.
//! - **Operations** are checked as over HTTP (text size, tokens, nesting, price per
//!   event, depth) and must be subscriptions: queries and mutations go to `POST /graphql`.
//! - **Connections:** an upgraded connection keeps its place under `--max-connections`
//!   (and per IP), and on shutdown it is closed with 1001 before the server exits.
//! - **Limits:** `--max-subscriptions-per-connection` running at once
//!   (`TOO_MANY_SUBSCRIPTIONS`), `connection_init` within `--ws-init-timeout` (else close
//!   4408), a WebSocket ping every `--ws-keepalive` (a connection that answers nothing for
//!   two intervals, or does not take a message within them, is closed), and a subscriber
//!   that falls `--live-buffer` changes behind is ended with `SUBSCRIPTION_LAGGED`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{Data, Executor, Request, Response};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use service::Principal;

use super::graphql::{classify, guard};
use super::serve::ConnectionHold;
use crate::auth::Security;
use crate::error::code;
use crate::graphql::subscription::SubscriptionSlots;
use crate::graphql::{cost, shape};
use crate::state::AppState;

/// Close code of a connection that sent no `connection_init` in time (graphql-ws).
const INIT_TIMEOUT: u16 = 4408;
/// Close code of a connection whose `connection_init` was refused (graphql-ws: 4403
/// Forbidden).
const UNAUTHORIZED: u16 = 4403;
/// Close code of a connection that stopped answering or reading (1001: going away).
const GOING_AWAY: u16 = 1001;

/// `GET /graphql/ws`: upgrades to a GraphQL WebSocket connection.
pub async fn graphql_ws(
    State(state): State<AppState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    hold: Option<Extension<ConnectionHold>>,
    headers: HeaderMap,
) -> HttpResponse {
    if !origin_allowed(&headers, &state.security) {
        let body = serde_json::json!({ "errors": [{
            "message": "this origin may not open a subscription connection (--cors-origin)",
            "extensions": { "code": code::FORBIDDEN },
        }]});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let ip = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let max_message = state.config.max_request_bytes;
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        // The library reserves 128 KiB to read into per connection by default; messages
        // from a subscriber are small (init, subscribe, complete, pong), and a larger one
        // grows the buffer as it needs.
        .read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| serve(socket, state, protocol, ip, hold.map(|h| h.0)))
}

/// Whether a browser page of the request's `Origin` may connect: any non-browser client
/// (no `Origin`), the server's own origin, and the `--cors-origin` list. Browsers do not
/// apply CORS to WebSockets, so without this any page could read a development server's
/// messages.
fn origin_allowed(headers: &HeaderMap, security: &Security) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    if security.cors_origins.iter().any(|o| o == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.to_str().ok().and_then(|o| o.split_once("://")), host) {
        (Some((_, origin_host)), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// The principal of a `connection_init` payload: its bearer token verified, or the
/// development principal when authentication is off. `Err` is the reason to close with.
fn authenticate(
    security: &Security,
    ip: Option<IpAddr>,
    payload: &serde_json::Value,
) -> Result<Principal, String> {
    let Some(auth) = &security.authenticator else {
        return Ok(Principal::development());
    };
    let field = |name: &str| payload.get(name).and_then(|v| v.as_str());
    let token = match field("Authorization").or_else(|| field("authorization")) {
        Some(value) => value
            .split_once(' ')
            .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
            .map(|(_, t)| t.trim()),
        None => field("authToken").or_else(|| field("token")),
    };
    let verified = match token {
        Some(token) => auth.verify(token).map_err(|e| (e.reason(), e.to_string())),
        None => Err((
            "missing",
            "send a token in connection_init: {\"Authorization\": \"Bearer <JWT>\"}".to_owned(),
        )),
    };
    match verified {
        Ok(principal) => {
            if security.limits.check_principal(&principal.sub).is_err() {
                crate::auth::guard::count_failure("rate_limited");
                return Err(format!("{}: too many requests", code::RATE_LIMITED));
            }
            Ok(principal)
        }
        Err((reason, message)) => {
            crate::auth::guard::count_failure(reason);
            if security.limits.check_failed_auth(ip).is_err() {
                return Err(format!(
                    "{}: too many failed authentications",
                    code::RATE_LIMITED
                ));
            }
            Err(format!("{}: {message}", code::UNAUTHENTICATED))
        }
    }
}

/// Runs operations arriving over the WebSocket: each checked and priced as over HTTP,
/// then run as a subscription on the schema with the connection's data.
#[derive(Clone)]
struct Operations(AppState);

impl Executor for Operations {
    async fn execute(&self, request: Request) -> Response {
        // The WebSocket protocol runs everything through `execute_stream`.
        match prepare(&self.0, request).await {
            Ok(request) => self.0.schema.execute(request).await,
            Err(refused) => refused,
        }
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let state = self.0.clone();
        futures::stream::once(async move {
            match prepare(&state, request).await {
                Ok(request) => state
                    .schema
                    .execute_stream_with_session_data(request, session_data.unwrap_or_default()),
                Err(refused) => futures::stream::iter([refused]).boxed(),
            }
        })
        .flatten()
        .map(|mut response| {
            for err in &mut response.errors {
                classify(err);
            }
            response
        })
        .boxed()
    }
}

/// The checks of an operation before it runs: the cheap text limits, then the probe
/// (parse, validation, depth, the price of one event against `--max-complexity`, `Int`
/// ranges), then that it is a subscription.
async fn prepare(state: &AppState, request: Request) -> Result<Request, Response> {
    guard(state, &request).map_err(|refused| *refused)?;
    let shape = shape::parley(|| state.schema.sdl());
    let (mut request, _cost) = cost::prepare(&state.probe_schema, request, None, |doc, req| {
        shape::check_int_ranges(shape, doc, req.operation_name.as_deref(), &req.variables)
    })
    .await?;
    let operation_name = request.operation_name.clone();
    let subscription = request.parsed_query().is_ok_and(|doc| {
        let op = match (&doc.operations, operation_name.as_deref()) {
            (DocumentOperations::Single(op), _) => Some(op),
            (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
            (DocumentOperations::Multiple(ops), None) => ops.values().next(),
        };
        op.is_some_and(|op| op.node.ty == OperationType::Subscription)
    });
    if !subscription {
        let mut err = async_graphql::ServerError::new(
            "only subscriptions run over WebSocket; send queries and mutations to POST /graphql",
            None,
        );
        let mut ext = async_graphql::ErrorExtensionValues::default();
        ext.set("code", code::BAD_REQUEST);
        err.extensions = Some(ext);
        return Err(Response::from_errors(vec![err]));
    }
    Ok(request)
}

/// When the client was last heard from (any frame, pongs included), in milliseconds
/// since the connection opened.
struct Heard {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Heard {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }
}

/// One WebSocket connection: async-graphql speaks the protocol into a small channel, and
/// the writer below sends its messages, the keep-alive pings and the closes of the limits.
async fn serve(
    socket: WebSocket,
    state: AppState,
    protocol: GraphQLProtocol,
    ip: Option<IpAddr>,
    hold: Option<ConnectionHold>,
) {
    // Held until the connection ends: it stays counted under --max-connections, and
    // shutdown waits for it after `stopping` tells it to close.
    let stopping = hold.as_ref().map(ConnectionHold::stopping);
    let limits = state.config.live;
    metrics::gauge!("parley_ws_connections").increment(1.0);
    let heard = Arc::new(Heard {
        opened: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let initialized = Arc::new(AtomicBool::new(false));
    let (sink, stream) = socket.split();
    let input = {
        let heard = heard.clone();
        stream.inspect(move |_| heard.touch())
    };
    // Small: a client that does not read stops the protocol (and its subscriptions) here,
    // so nothing piles up in memory; the subscriptions' own buffers then overflow and end
    // them with SUBSCRIPTION_LAGGED.
    let (tx, rx) = futures::channel::mpsc::channel::<Message>(4);
    let security = state.security.clone();
    let slots = SubscriptionSlots::new(limits.max_subscriptions);
    let init = {
        let initialized = initialized.clone();
        move |payload: serde_json::Value| async move {
            let principal =
                authenticate(&security, ip, &payload).map_err(async_graphql::Error::new)?;
            initialized.store(true, Ordering::SeqCst);
            let mut data = Data::default();
            data.insert(principal.viewer());
            data.insert(principal);
            data.insert(slots);
            Ok(data)
        }
    };
    let graphql = GraphQLWebSocket::new_with_pair(
        tx.sink_map_err(|_| ()),
        input,
        Operations(state.clone()),
        protocol,
    )
    .on_connection_init(init)
    .serve();
    let writer = write(sink, rx, heard, initialized, limits, stopping);
    tokio::pin!(graphql, writer);
    let mut graphql_done = false;
    loop {
        tokio::select! {
            () = &mut graphql, if !graphql_done => graphql_done = true,
            () = &mut writer => break,
        }
    }
    metrics::gauge!("parley_ws_connections").decrement(1.0);
    drop(hold);
}

/// Sends the protocol's messages, a ping every `keepalive`, and closes the connection
/// when the client sent no `connection_init` in time, stopped answering, or stopped
/// reading. Ends when the protocol has ended and its messages are sent, or on a close.
async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: futures::channel::mpsc::Receiver<Message>,
    heard: Arc<Heard>,
    initialized: Arc<AtomicBool>,
    limits: crate::config::LiveLimits,
    stopping: Option<tokio::sync::watch::Receiver<bool>>,
) {
    let mut stopping = stopping.filter(|s| !*s.borrow());
    let keepalive = limits.keepalive;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    let init_deadline = tokio::time::sleep(limits.init_timeout);
    tokio::pin!(init_deadline);
    // A message the client does not take within two intervals: it stopped reading.
    let send_timeout = keepalive * 2;
    let close = |code: u16, reason: &str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        let (message, last) = tokio::select! {
            next = rx.next() => match next {
                Some(message) => {
                    let last = matches!(message, Message::Close(_));
                    (adjust_close(message), last)
                }
                None => {
                    let _ = tokio::time::timeout(send_timeout, sink.close()).await;
                    return;
                }
            },
            () = &mut init_deadline, if !initialized.load(Ordering::SeqCst) => {
                metrics::counter!("parley_ws_closed_total", "reason" => "init_timeout").increment(1);
                (close(INIT_TIMEOUT, "Connection initialisation timeout"), true)
            }
            changed = async { stopping.as_mut()?.changed().await.ok() }, if stopping.is_some() => {
                if changed.is_none() {
                    stopping = None;
                    continue;
                }
                (close(GOING_AWAY, "the server is shutting down"), true)
            }
            _ = ping.tick() => {
                if heard.silent_for() > keepalive * 2 {
                    metrics::counter!("parley_ws_closed_total", "reason" => "keepalive").increment(1);
                    (close(GOING_AWAY, "no answer to keep-alive pings"), true)
                } else {
                    (Message::Ping(b"parley".as_slice().into()), false)
                }
            }
        };
        match tokio::time::timeout(send_timeout, sink.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                metrics::counter!("parley_ws_closed_total", "reason" => "not_reading").increment(1);
                return;
            }
        }
        if last {
            return;
        }
    }
}

/// async-graphql closes a refused `connection_init` with 1002 (protocol error); the
/// graphql-transport-ws protocol says 4403 (Forbidden), which clients treat as final
/// rather than retrying.
fn adjust_close(message: Message) -> Message {
    match message {
        Message::Close(Some(frame))
            if frame.code == 1002
                && (frame.reason.starts_with(code::UNAUTHENTICATED)
                    || frame.reason.starts_with(code::RATE_LIMITED)) =>
        {
            Message::Close(Some(CloseFrame {
                code: UNAUTHORIZED,
                reason: frame.reason,
            }))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn pages_of_other_origins_may_not_connect() {
        let mut security = Security::development();
        security.cors_origins = vec!["https://app.example.com".parse().unwrap()];
        let allowed = |origin, host| origin_allowed(&headers(origin, host), &security);
        assert!(allowed(None, "127.0.0.1:8080"));
        assert!(allowed(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"));
        assert!(allowed(Some("https://app.example.com"), "api.example.com"));
        assert!(!allowed(Some("https://evil.example"), "127.0.0.1:8080"));
        assert!(!allowed(Some("null"), "127.0.0.1:8080"));
    }
}
