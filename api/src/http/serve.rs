//! The accept loop of `parley serve`: HTTP/1.1 connections through hyper with the
//! connection-level limits, and graceful shutdown.
//!
//! - At most `max_connections` connections are open, and `max_connections_per_ip` from one
//!   address; one more is answered 503 `OVERLOADED` (with `Retry-After`) and closed at
//!   once, without reading it.
//! - A request's headers must arrive within `header_read_timeout` of the connection being
//!   ready for them (hyper's header timer); a client that dribbles them is disconnected.
//! - A connection with nothing sent either way for `idle_timeout` while no request on it is
//!   being handled is closed (idle keep-alive connections, and clients that stop reading).
//! - The request-level limits (in-flight cap and shedding, body deadline, response cap) are
//!   layered on the router by [`super::limits::layer`].
//!
//! Shutdown: when `signal` resolves, the listener is dropped (new connections are refused),
//! idle connections are closed, and `serve` returns once every in-flight request has been
//! answered and its connection closed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::limits::{self, ConnLimits, RETRY_AFTER_SECONDS};

/// Serves `app` on `listener` under `limits` until `signal` resolves, then drains (see the
/// module docs). Errors only if the listener fails for good.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = limits::layer(app, &limits);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp {
        max: limits.max_connections_per_ip,
        open: Mutex::new(HashMap::new()),
    });
    // Connections watch `stop` to start their graceful shutdown; each holds a `done`
    // receiver, so `done_tx.closed()` resolves when the last one has ended.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let mut signal = pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            limits::count("max_connections");
            tracing::debug!(%peer, "connection refused: --max-connections open");
            refuse(&stream, "too many connections");
            continue;
        };
        let Some(ip) = PerIp::enter(&per_ip, peer.ip()) else {
            limits::count("max_connections_per_ip");
            tracing::debug!(%peer, "connection refused: --max-connections-per-ip open");
            refuse(&stream, "too many connections from this address");
            continue;
        };
        let connection = Connection {
            app: app.clone(),
            limits,
            stop: stop_rx.clone(),
            hold: ConnectionHold(Arc::new(Held {
                stop: stop_rx.clone(),
                _done: done_rx.clone(),
                _permit: permit,
                _ip: ip,
            })),
        };
        tokio::spawn(connection.run(stream, peer));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// What to do when `accept` fails: per-connection errors are the client's problem; others
/// (out of file descriptors) are logged and retried after a pause, as axum does.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed (raise `ulimit -n` above --max-connections?)");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Answers a connection over a cap with a 503 `OVERLOADED` without reading it or waiting
/// (the write goes to the socket's buffer or not at all), then closes it.
fn refuse(stream: &TcpStream, why: &str) {
    let body = serde_json::json!({
        "errors": [{
            "message": format!("the server is overloaded ({why}); retry after {RETRY_AFTER_SECONDS} s"),
            "extensions": { "code": limits::OVERLOADED },
        }]
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {RETRY_AFTER_SECONDS}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Open connections per client address.
struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// A place for one more connection from `ip`, or `None` at the cap. An IPv4 address
    /// mapped into IPv6 counts as the IPv4 address.
    fn enter(this: &Arc<PerIp>, ip: IpAddr) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut open = this.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= this.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: this.clone(),
            ip,
        })
    }
}

/// One connection's place in [`PerIp`], given back on drop.
struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// One accepted connection and what it holds until it ends.
struct Connection {
    app: limits::Bounded<Router>,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
    hold: ConnectionHold,
}

/// What an accepted connection holds while it is open: its place under `max_connections`
/// and `max_connections_per_ip`, and its part in the shutdown's wait. Every request carries
/// a clone in its extensions, so a request that upgrades the connection (a WebSocket, whose
/// connection outlives hyper's) keeps it: the upgraded connection stays counted, and
/// shutdown waits for it after telling it to close ([`ConnectionHold::stopping`]).
#[derive(Clone)]
pub struct ConnectionHold(Arc<Held>);

struct Held {
    stop: watch::Receiver<bool>,
    _done: watch::Receiver<()>,
    _permit: OwnedSemaphorePermit,
    _ip: IpSlot,
}

impl ConnectionHold {
    /// Changes to `true` when the server starts shutting down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.0.stop.clone()
    }
}

impl Connection {
    async fn run(mut self, stream: TcpStream, peer: SocketAddr) {
        let activity = Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
        });
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let app = self.app.clone();
        let handling = activity.clone();
        let hold = self.hold.clone();
        let service = tower::service_fn(move |request: Request<Incoming>| {
            let app = app.clone();
            let handling = Handling::enter(handling.clone());
            let hold = hold.clone();
            async move {
                let mut request = request.map(Body::new);
                // The client's address, for the per-IP rate limits of `auth`.
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request.extensions_mut().insert(hold);
                let response = app.oneshot(request).await;
                drop(handling);
                response
            }
        });
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        let mut conn =
            pin!(builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service)));
        let idle = self.limits.idle_timeout;
        let mut draining = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        let timeout = e
                            .downcast_ref::<hyper::Error>()
                            .is_some_and(hyper::Error::is_timeout);
                        if timeout {
                            limits::count("header_timeout");
                        }
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                changed = self.stop.changed(), if !draining => {
                    draining = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
                () = tokio::time::sleep_until(activity.idle_deadline(idle)) => {
                    if activity.is_idle(idle) {
                        limits::count("idle_timeout");
                        tracing::debug!(%peer, "closing an idle connection");
                        break;
                    }
                }
            }
        }
    }
}

/// When a connection last moved bytes, and how many of its requests are being handled.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    handling: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        last + idle
    }

    fn is_idle(&self, idle: Duration) -> bool {
        self.handling.load(Ordering::SeqCst) == 0 && Instant::now() >= self.idle_deadline(idle)
    }
}

/// A request being handled on a connection (from its headers to the handler's answer);
/// the connection is not idle meanwhile, however quiet it is.
struct Handling(Arc<Activity>);

impl Handling {
    fn enter(activity: Arc<Activity>) -> Handling {
        activity.handling.fetch_add(1, Ordering::SeqCst);
        Handling(activity)
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.touch();
        self.0.handling.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A socket that records when it last moved bytes.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
