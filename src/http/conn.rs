//! The accept loop: every connection is bounded in number, in how long it may take to send a
//! request's head, and in buffer size, and is drained on shutdown.
//!
//! axum's own `serve` runs hyper without a timer, so a client that sends half a request line and
//! stops holds its socket (and a file descriptor) forever: a few thousand such connections stop
//! every client. Here hyper gets a timer (its header-read timeout then closes such a connection,
//! and an idle keep-alive one too, since the timeout runs while the next head is awaited), and a
//! connection that has not completed its first request head in time is closed by us as well:
//! before the first bytes, hyper-util's HTTP/1-or-2 detection waits with no timeout of its own.
//!
//! With TLS, the handshake comes first, in the connection's own task, holding its place under
//! the cap, and the header timeout runs from the accept: a client that stalls mid-handshake is
//! closed like one that stalls mid-request.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::metrics::{self as m, Metrics};
use crate::tls::server::ReloadingTls;

/// What one replica allows its clients' connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most; past it a new one is closed at once (and counted).
    pub max_connections: usize,
    /// How long a client may take to send a request's head, and how long a keep-alive
    /// connection may sit idle between requests.
    pub header_timeout: Duration,
    /// How long a shutdown waits for requests in flight before closing what is left.
    pub drain_timeout: Duration,
}

/// Bytes hyper buffers per HTTP/1 connection at most: a request head and a small JSON body
/// (bodies over 4 KiB are refused anyway) fit many times over.
const MAX_BUF: usize = 64 * 1024;
/// Streams one HTTP/2 connection may have open at once; each may be a waiter.
const MAX_STREAMS: u32 = 256;

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` completes; then
/// stops accepting, lets requests in flight finish (for `drain_timeout` at most), and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    tls: Option<Arc<ReloadingTls>>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before accept): the
                    // listener itself is fine. Pause so a full table is not spun on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics.count(m::CONNECTIONS_REFUSED, &[]);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + limits.header_timeout;
        let gauge = metrics.connection_open();
        let connection = Connection {
            app: app.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            deadline,
        };
        let (tls, metrics) = (tls.clone(), metrics.clone());
        tokio::spawn(async move {
            let _held = (permit, gauge);
            match tls {
                None => connection.serve(stream).await,
                Some(tls) => {
                    // The acceptor of now: a reload after this accept applies to the next one.
                    let handshake = tls.acceptor().accept(stream);
                    match tokio::time::timeout_at(deadline, handshake).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(e)) => {
                            // A scanner, a plain-HTTP client or one without a trusted client
                            // certificate: debug only, since anyone can cause these.
                            tracing::debug!(error = %e, "a TLS handshake failed");
                            metrics.count(m::TLS_HANDSHAKE_FAILURES, &[("reason", "refused")]);
                        }
                        Err(_) => {
                            metrics.count(m::TLS_HANDSHAKE_FAILURES, &[("reason", "timeout")])
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("requests were still in flight when the drain time ran out");
        }
    }
    Ok(())
}

/// One accepted connection, ready to serve HTTP once its transport is (TLS or not).
struct Connection {
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// Tells the drain that this connection is open, so that a shutdown waits for it.
    watcher: Watcher,
    /// When its first request head must have arrived by (the header timeout from the accept).
    deadline: Instant,
}

impl Connection {
    /// Serves HTTP/1.1 or HTTP/2 on `io` until it closes, or its first head is overdue.
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let started = Arc::new(AtomicBool::new(false));
        let service = {
            let (app, started) = (self.app, started.clone());
            TowerToHyperService::new(tower::service_fn(move |req| {
                started.store(true, Ordering::Relaxed);
                app.clone().oneshot(req)
            }))
        };
        let connection = self.watcher.watch(
            self.builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned(),
        );
        tokio::select! {
            _ = connection => {}
            _ = first_head_overdue(self.deadline, started) => {}
        }
    }
}

/// Completes once `deadline` has passed without the connection's first request head; never
/// after one has come (hyper's own header-read timeout governs from then on).
async fn first_head_overdue(deadline: Instant, started: Arc<AtomicBool>) {
    tokio::time::sleep_until(deadline).await;
    if started.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}
