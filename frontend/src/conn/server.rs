//! One main daemon's accept loop and its connections (kHTTPd's accept and WaitForHeaders stages).
//!
//! hyper decodes each head under `header_read_timeout` (it needs the timer for that to apply) and
//! `max_buf_size` (a larger head is answered 431, a malformed one 400, and only that connection is
//! closed). At stop the listener is closed first, then every connection is told to finish its
//! in-flight response and close, and the daemon waits for them up to the grace period.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use khttpd_bridge::{Bridge, ProxyProtocol};

use crate::config::Config;
use crate::conn::fast_path::{self, Next};
use crate::conn::handler::{self, ConnCtx};
use crate::conn::head_guard::{HeadGuard, Timeouts};
use crate::daemon::maxconnect::Slot;
use crate::daemon::state::Shared;
use crate::daemon::stats::{DaemonStats, Stage};
use crate::logging::finish::{finish, Outcome};

/// The answer past maxconnect: short, complete, and closing.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 43\r\nRetry-After: 1\r\nConnection: close\r\n\r\nToo many connections (maxconnect); retry.\r\n";

/// How long a turned-away client gets to read the 503 before the socket closes.
const BUSY_LINGER: Duration = Duration::from_secs(1);

/// How long the accept loop pauses after EMFILE and similar errors instead of spinning on them.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The hyper connection settings of one main daemon.
pub(crate) fn http1_builder(cfg: &Config) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        // hyper's timer starts once the previous response is written, so it bounds the idle time
        // between keep-alive requests; the head guard bounds each head from its first byte.
        .header_read_timeout(cfg.keepalive_timeout)
        .max_buf_size(cfg.max_head_size)
        .keep_alive(true)
        // Lower-case field names (hyper's native form): HTTP field names are case-insensitive, and
        // title-casing them costs a pass over every name of every response.
        .title_case_headers(false)
        // Not pipeline_flush: it defers the flush while unread bytes remain, and after a malformed
        // head the bytes always remain, so hyper's automatic 400/431 would never reach the client.
        .pipeline_flush(false);
    b
}

/// Accepts and serves connections until `stop` turns true, then drains them for `cfg.grace`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls_listener: Option<TcpListener>,
    shared: Arc<Shared>,
    stats: Arc<DaemonStats>,
    stop: watch::Receiver<bool>,
) {
    // This daemon's backend connection pools, rebuilt when the backends change.
    let mut bridge: Option<Arc<Bridge>> = None;
    // Each connection holds a sender; when all are gone the daemon is drained (mini-redis's pattern).
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let listening = listener.local_addr().ok();
    let tls_listening = tls_listener.as_ref().and_then(|l| l.local_addr().ok());
    // One stop waiter for the loop, not one per accepted connection (each took the watch's lock).
    let mut stop_watch = stop.clone();
    let mut stopped = std::pin::pin!(stop_watch.changed());
    loop {
        if *stop.borrow() {
            break;
        }
        let (accepted, tls) = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => (accepted, false),
            accepted = accept_tls(tls_listener.as_ref()) => (accepted, true),
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_error(&e).await;
                continue;
            }
        };
        // Settings changed at run time apply from the next connection on.
        let cfg = shared.config();
        let Some(slot) = shared.open.try_acquire(cfg.maxconnect) else {
            tokio::spawn(turn_away(stream));
            continue;
        };
        // Our exact address matters only to the PROXY protocol header; elsewhere the
        // listener's spares a getsockname() per connection.
        let local = match (
            if tls { tls_listening } else { listening },
            cfg.bridge.proxy_protocol,
        ) {
            (Some(l), ProxyProtocol::Off) => l,
            _ => stream.local_addr().unwrap_or(peer),
        };
        let ctx = Arc::new(ConnCtx::new(
            shared.clone(),
            stats.clone(),
            peer,
            local,
            bridge_for(&shared, &mut bridge),
            tls,
        ));
        let alive = (alive_tx.clone(), slot);
        if tls {
            tokio::spawn(serve_tls(stream, ctx, cfg, stop.clone(), alive));
        } else {
            tokio::spawn(serve(stream, ctx, cfg, stop.clone(), alive));
        }
    }
    // kHTTPd's stop: the port refuses new connections at once.
    drop(listener);
    drop(alive_tx);
    if tokio::time::timeout(shared.config().grace, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            open = stats.connections.load(std::sync::atomic::Ordering::Relaxed),
            "grace period over; cutting the connections still open"
        );
    }
}

/// This daemon's way to the backends (kHTTPd's Userspace hand-off), if there are any: its pools,
/// rebuilt when the backends change.
fn bridge_for(shared: &Shared, bridge: &mut Option<Arc<Bridge>>) -> Option<Arc<Bridge>> {
    let runtime = shared.current.load();
    let upstreams = runtime.upstreams.as_ref()?;
    Some(match bridge {
        Some(b) if Arc::ptr_eq(b.upstreams(), upstreams) => b.clone(),
        _ => {
            let b = Bridge::new(upstreams.clone());
            *bridge = Some(b.clone());
            b
        }
    })
}

/// The next connection on the TLS listener; never, when there is none.
async fn accept_tls(
    listener: Option<&TcpListener>,
) -> io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_error(e: &io::Error) {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            tracing::warn!(error = %e, "accept failed for lack of resources; backing off");
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
        // The client gave up between SYN and accept: nothing to do.
        _ => tracing::debug!(error = %e, "accept failed"),
    }
}

/// Past maxconnect: a 503 written at once, then the socket closed after a short linger so the client
/// can read it (closing with unread request bytes would reset the connection and lose the answer).
async fn turn_away(mut stream: TcpStream) {
    let _ = stream.try_write(BUSY);
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(BUSY_LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn serve(
    stream: TcpStream,
    ctx: Arc<ConnCtx>,
    cfg: Arc<Config>,
    stop: watch::Receiver<bool>,
    _alive: (mpsc::Sender<()>, Slot),
) {
    let _conn = ctx.stats.enter(Stage::WaitForHeaders);
    let timeouts = Timeouts {
        header: cfg.header_timeout,
        body: cfg.body_timeout,
        send: cfg.send_timeout,
    };
    let guard = HeadGuard::new(stream, cfg.max_head_size, timeouts);
    // Cached static answers first (kHTTPd's in-kernel path); anything else makes hyper take over.
    // With --redirect-https every request is redirected, which the handler does.
    let io = if cfg.redirect_https {
        fast_path::Prefixed::new(guard)
    } else {
        match fast_path::serve(guard, &ctx, &stop).await {
            Next::Closed => return,
            Next::HandOff(io) => io,
        }
    };
    // hyper may answer in several writes (head, then a streamed body): don't let Nagle hold them.
    io.nodelay();
    // Boxed: hyper's connection state is large, and most connections never need it; inline, it
    // would be copied into every connection's task at spawn.
    Box::pin(serve_hyper(io, ctx, cfg, stop)).await;
}

/// An HTTPS connection: the handshake within the header timeout, then HTTP/2 or HTTP/1.1 as ALPN
/// chose, both through hyper and the same handler as plain HTTP/1.1's full pipeline.
async fn serve_tls(
    stream: TcpStream,
    ctx: Arc<ConnCtx>,
    cfg: Arc<Config>,
    stop: watch::Receiver<bool>,
    _alive: (mpsc::Sender<()>, Slot),
) {
    let _conn = ctx.stats.enter(Stage::WaitForHeaders);
    let Some(tls) = cfg.tls.as_ref() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server));
    let stream = match tokio::time::timeout(cfg.header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(peer = %ctx.peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %ctx.peer, "TLS handshake not complete in time (header timeout)");
            return;
        }
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let timeouts = Timeouts {
        header: cfg.header_timeout,
        body: cfg.body_timeout,
        send: cfg.send_timeout,
    };
    if h2 {
        // HTTP/2 frames are not HTTP/1.1 heads: the guard keeps only its send deadline.
        let io = HeadGuard::aside(stream, timeouts);
        Box::pin(serve_h2(io, ctx, cfg, stop)).await;
    } else {
        // HTTP/1.1 over TLS takes the fast path too (cached answers, the relay), without sendfile.
        let guard = HeadGuard::new(stream, cfg.max_head_size, timeouts);
        let io = match fast_path::serve(guard, &ctx, &stop).await {
            Next::Closed => return,
            Next::HandOff(io) => io,
        };
        Box::pin(serve_hyper(io, ctx, cfg, stop)).await;
    }
}

/// The hyper service every request of a connection goes through.
fn service(
    ctx: Arc<ConnCtx>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::sending::body::Body>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<http::Response<crate::sending::body::Body>, std::convert::Infallible>,
    > + Send,
> + Clone {
    service_fn(move |req| {
        let ctx = ctx.clone();
        async move {
            // A panic while handling one request answers 500 on that request only.
            // Boxed: hyper's HTTP/2 server spawns a task per stream and moves this future into
            // it (a memcpy of the whole state, 8% of the CPU of small answers when inline).
            let answer = Box::pin(handler::handle(req, ctx));
            match AssertUnwindSafe(answer).catch_unwind().await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::error!("panic while handling a request; answered 500");
                    Ok(crate::error::FrontError::Internal("panic").page())
                }
            }
        }
    })
}

/// An HTTP/2 connection, with the stream and header-list limits and hyper's defences against
/// the known floods (rapid reset, CONTINUATION, SETTINGS and PING floods).
async fn serve_h2<I>(io: I, ctx: Arc<ConnCtx>, cfg: Arc<Config>, mut stop: watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.h2_max_streams)
        .max_header_list_size(u32::try_from(cfg.max_head_size).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(cfg.keepalive_timeout))
        .keep_alive_timeout(cfg.header_timeout)
        .serve_connection(TokioIo::new(io), service(ctx.clone()));
    tokio::pin!(conn);
    let stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed(), if !stopping => {
            // GOAWAY: streams in flight finish, no new ones start.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %ctx.peer, error = %e, "HTTP/2 connection ended with an error");
    }
}

/// The rest of the connection, in hyper's hands.
async fn serve_hyper<I>(
    io: fast_path::Prefixed<HeadGuard<I>>,
    ctx: Arc<ConnCtx>,
    cfg: Arc<Config>,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc_ctx = ctx.clone();
    let service = service(svc_ctx);
    // Upgrades (WebSocket) are tunnelled to the backend after its 101.
    let conn = http1_builder(&cfg)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed(), if !stopping => {
            // Finish the response in flight, then close; idle keep-alive connections close now.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        if let Some(status) = refused_head(&e) {
            log_refused(&ctx, status);
        }
        tracing::debug!(peer = %ctx.peer, error = %e, "connection ended with an error");
    }
}

/// The status hyper answered a head it could not take with: 431 for one too large, 400 for a
/// malformed one (the head guard's poisoned framing included).
fn refused_head(e: &hyper::Error) -> Option<u16> {
    if e.is_parse_too_large() {
        Some(431)
    } else if e.is_parse() {
        Some(400)
    } else {
        None
    }
}

/// hyper answers a malformed head itself, before any service sees it: counted and logged here, so
/// probes and attacks show up in the access log (with `-` for what could not be read) as in
/// Apache's and nginx's.
fn log_refused(ctx: &ConnCtx, status: u16) {
    let log = &ctx.shared.access_log;
    let record = log.enabled().then(|| crate::logging::log_line::LogRecord {
        client: ctx.peer.ip(),
        time: std::time::SystemTime::now(),
        method: String::new(),
        target: String::new(),
        version: "",
        status,
        bytes: 0,
        referer: None,
        user_agent: None,
        duration: Duration::ZERO,
        route: crate::daemon::stats::RouteKind::Error.name(),
        host: None,
        request_id: None,
        upstream: None,
        upstream_time: None,
    });
    let outcome = Outcome::new(crate::daemon::stats::RouteKind::Error, status, 0);
    finish(&ctx.stats, log, record, &outcome, std::time::Instant::now());
}
