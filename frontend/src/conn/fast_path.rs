//! kHTTPd's fast path, in userspace: a cached static answer written straight from WaitForHeaders.
//!
//! kHTTPd answered static GETs inside the kernel and handed every other request, bytes untouched, to
//! the userspace server. Here the same split happens inside one process. Each connection starts in
//! this loop: it reads a head, parses it with httparse, and when the request is a plain GET or HEAD
//! whose routing verdict, body and chosen encoding are all already in the [`Cache`](crate::sending::static_file::Cache), it writes the
//! answer itself: one head built from the representation's prebuilt header values, the body, one
//! write. A plain GET or HEAD whose verdict is the backend is relayed from here too
//! ([`crate::userspace::relay`]). Anything else (a miss, a body, a Range on a static file, If-Match, an
//! upgrade, HTTP/1.0, any oddity) hands the connection, with every byte read so far, to hyper and
//! the full pipeline for good.
//!
//! The answers are the ones the full pipeline gives for the same request (same headers, same 304
//! rules); the end-to-end suite exercises both paths, since a repeated request takes this one.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::cache::compress;
use crate::cache::keys::FileKey;
use crate::cache::negotiate::Encoding;
use crate::conn::handler::{path_of, route_afresh, ConnCtx};
use crate::conn::head_guard::HeadGuard;
use crate::conn::stream::ClientStream;
use crate::conn::wire::{end_head, field, status_line, MAX_FIELDS};
use crate::daemon::stats::{RouteKind, Stage};
use crate::logging::finish::{self, finish};
use crate::logging::log_line::LogRecord;
use crate::route::decide::{BackendReason, Route};
use crate::route::verify::Target;
use crate::sending::conditional::{self, Conditions, Precondition, Validators};
use crate::sending::head::{caching_fields, Caching};
use crate::sending::static_file;
use crate::userspace::relay::{self, RelayPlan};
use khttpd_bridge::relay::write_both;

/// Bodies up to this size are copied behind the head for one `write`; larger ones go by `writev`.
const COPY_BODY: usize = 16 * 1024;

/// The read buffer of a connection that has a request coming: most heads fit.
const HEAD_BUF: usize = 2048;

/// The write buffer for a head (and a small body, which grows it).
const OUT_BUF: usize = 512;

/// Where the connection goes after the fast path.
pub(crate) enum Next<T> {
    /// It is closed (client left, keep-alive over, stop, or an answer with `Connection: close`).
    Closed,
    /// hyper takes over, replaying the bytes already read.
    HandOff(Prefixed<T>),
}

/// An I/O object that first yields bytes already read from it.
pub(crate) struct Prefixed<T> {
    prefix: BytesMut,
    inner: T,
}

impl<T> Prefixed<T> {
    /// `inner` with nothing read ahead (a connection that never went through the fast path).
    pub(crate) fn new(inner: T) -> Prefixed<T> {
        Prefixed {
            prefix: BytesMut::new(),
            inner,
        }
    }
}

impl<S: ClientStream> Prefixed<HeadGuard<S>> {
    /// Sets TCP_NODELAY before handing the connection on.
    pub(crate) fn nodelay(&self) {
        set_nodelay(&self.inner);
    }
}

/// TCP_NODELAY, set once a connection needs it: a keep-alive connection (as nginx's tcp_nodelay),
/// or an answer written in more than one step. A one-shot answer is a single write and needs none,
/// which saves a system call per connection.
fn set_nodelay<S: ClientStream>(io: &HeadGuard<S>) {
    if let Err(e) = io.get_ref().tcp().set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY failed");
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One answer decided from a parsed head.
struct Answer {
    /// The file itself, for sendfile(2), when the body is its identity bytes, and its version.
    file: Option<(Arc<File>, FileKey)>,
    started: Instant,
    consumed: usize,
    keep_alive: bool,
    status: u16,
    /// The body in memory; empty when it goes from the file alone (see `len`).
    body: Bytes,
    /// The body's length: `body`'s, or the file's when it is sent from disk only.
    len: u64,
    log: Option<LogRecord>,
}

/// Serves the connection's cached static requests; returns when it closes or needs hyper.
///
/// An idle keep-alive connection on plain TCP waits here, in a small state: the timer, the stop
/// waiter and the socket's readiness. Reading and answering run in [`busy`], boxed while a
/// request is under way, so its buffers and larger state are given back between requests (an
/// idle connection costs about 1.6 KiB instead of 5.1).
pub(crate) async fn serve<S: ClientStream>(
    mut io: HeadGuard<S>,
    ctx: &ConnCtx,
    stop: &watch::Receiver<bool>,
) -> Next<HeadGuard<S>> {
    // One keep-alive timer and one stop waiter for the whole connection, not one per read: making
    // and dropping them per request took the timer wheel's and the watch's locks every time, while
    // moving a registered timer later is a single atomic store.
    let mut idle_timer = std::pin::pin!(tokio::time::sleep(
        ctx.shared.current.load().config.keepalive_timeout
    ));
    let mut stop_watch = stop.clone();
    let mut stopped = std::pin::pin!(stop_watch.changed());
    let mut woke = false;
    loop {
        // Boxed: its state (buffers, the answer being sent) exists only while a request is under
        // way, not in the task of every idle connection.
        let step = Box::pin(busy(
            &mut io,
            ctx,
            stop,
            woke,
            idle_timer.as_mut(),
            stopped.as_mut(),
        ));
        match step.await {
            Step::Idle => {}
            Step::Closed => return Next::Closed,
            Step::HandOff(read) => return hand_off(read, io),
        }
        // Idle between requests (plain TCP only, see busy): no buffer held while waiting.
        idle_timer
            .as_mut()
            .reset(tokio::time::Instant::now() + ctx.shared.config().keepalive_timeout);
        // poll_read_ready keeps its waker in the socket's registration: this wait adds a
        // closure to the state, where readable() would add a 152-byte waiter.
        let tcp = io.get_ref().tcp();
        tokio::select! {
            biased;
            r = std::future::poll_fn(|cx| tcp.poll_read_ready(cx)) => if r.is_err() { return Next::Closed },
            _ = &mut idle_timer => return Next::Closed,
            _ = &mut stopped => return Next::Closed,
        }
        woke = true;
    }
}

/// Where [`busy`] left the connection.
enum Step {
    /// Answered everything it read and is waiting for the next request on plain TCP.
    Idle,
    /// Closed (client left, keep-alive over, stop, an answer with `Connection: close`).
    Closed,
    /// hyper takes over, with the bytes read so far.
    HandOff(BytesMut),
}

/// Reads, decides and answers until the connection goes idle (plain TCP), closes or needs hyper.
/// `woke`: the connection was idle and the socket is readable now (so read before idling again).
async fn busy<S: ClientStream>(
    io: &mut HeadGuard<S>,
    ctx: &ConnCtx,
    stop: &watch::Receiver<bool>,
    mut woke: bool,
    mut idle_timer: Pin<&mut tokio::time::Sleep>,
    mut stopped: Pin<
        &mut (dyn std::future::Future<Output = Result<(), watch::error::RecvError>> + Send + '_),
    >,
) -> Step {
    let mut buf = BytesMut::with_capacity(HEAD_BUF);
    let mut out: Vec<u8> = Vec::with_capacity(OUT_BUF);
    // A connection that wakes from idle has answered a request already (and set TCP_NODELAY).
    let mut served = u64::from(woke);
    let mut warmed = false;
    let mut nodelay = woke;
    loop {
        if buf.is_empty() && *stop.borrow() {
            return Step::Closed;
        }
        let runtime = ctx.shared.current.load_full();
        let cfg = &runtime.config;
        out.clear();
        let decision = if buf.is_empty() {
            Decision::Partial
        } else {
            decide(&buf, ctx, &runtime, &mut out)
        };
        let answer = match decision {
            Decision::Answer(a) => a,
            Decision::Relay(plan) => {
                // The answer may take several writes.
                if !nodelay {
                    set_nodelay(io);
                    nodelay = true;
                }
                let consumed = plan.consumed;
                let pipelined = buf.len() > consumed;
                // Boxed, like hyper's state: the relay's is large and only backend requests
                // need it, so it is not part of every connection's task.
                let relay = relay::serve(io, &buf[..consumed], *plan, pipelined, ctx, cfg);
                let keep = Box::pin(relay).await;
                buf.advance(consumed);
                served += 1;
                warmed = false;
                if !keep {
                    return Step::Closed;
                }
                continue;
            }
            Decision::Hyper => return Step::HandOff(buf),
            // Warm once per request; if that is still not enough, the full pipeline answers.
            Decision::Warm(_) if warmed => return Step::HandOff(buf),
            Decision::Warm(miss) => {
                // Boxed: filling the cache is rare and its state large; inline, every
                // connection's task would carry it.
                Box::pin(warm(miss, ctx, &runtime)).await;
                warmed = true;
                continue;
            }
            // Waiting for a head: idle keep-alive ends after keepalive_timeout; a head in progress
            // is bounded by the head guard's header deadline underneath.
            Decision::Partial => {
                if buf.len() >= cfg.max_head_size {
                    return Step::HandOff(buf);
                }
                let idle = buf.is_empty() && served > 0;
                if idle && S::RAW && !woke {
                    // Between requests a plain TCP connection keeps no buffer: it waits in
                    // serve's small state. (Over TLS, rustls may hold plaintext the socket no
                    // longer shows, so there the read waits here; and before the first request
                    // the head guard's header deadline, which runs in its reads, must apply.)
                    return Step::Idle;
                }
                if idle {
                    idle_timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + cfg.keepalive_timeout);
                }
                let read = tokio::select! {
                    biased;
                    r = io.read_buf(&mut buf) => r,
                    _ = &mut idle_timer, if idle => return Step::Closed,
                    _ = &mut stopped, if buf.is_empty() => return Step::Closed,
                };
                woke = false;
                match read {
                    Ok(0) | Err(_) => return Step::Closed,
                    Ok(_) => continue,
                }
            }
        };
        warmed = false;
        buf.advance(answer.consumed);
        let keep = deliver(io, answer, &mut out, ctx, cfg, &mut nodelay).await;
        served += 1;
        if !keep {
            return Step::Closed;
        }
    }
}

/// Sends one decided answer and finishes it (counts, log line); whether the connection goes on.
async fn deliver<S: ClientStream>(
    io: &mut HeadGuard<S>,
    answer: Box<Answer>,
    out: &mut Vec<u8>,
    ctx: &ConnCtx,
    cfg: &crate::config::Config,
    nodelay: &mut bool,
) -> bool {
    let started = answer.started;
    let stage = ctx.stats.enter(Stage::DataSending);
    // A body sent from the file alone (too large for the cache) has no bytes in memory.
    let from_disk = answer.body.len() as u64 != answer.len;
    let sent = if !from_disk && answer.body.len() <= COPY_BODY {
        out.extend_from_slice(&answer.body);
        if answer.keep_alive || !S::RAW {
            write_out(io, out).await
        } else {
            // The connection's last answer: held back (MSG_MORE) for the FIN that shutdown()
            // adds below, so both leave in one segment, as nginx's corked answers do. Apart,
            // they cost the client an extra segment each way.
            send_more(io, out).await
        }
    } else if let Some((file, key)) = answer.file.as_ref().filter(|_| cfg.sendfile && S::RAW) {
        if !*nodelay {
            set_nodelay(io);
            *nodelay = true;
        }
        match send_more(io, out).await {
            Ok(()) => send_file(io, file, answer.len, key).await,
            Err(e) => Err(e),
        }
    } else if from_disk {
        // decide() sends from disk only where sendfile is used.
        Err(io::Error::other("a file body without sendfile"))
    } else {
        if !*nodelay {
            set_nodelay(io);
            *nodelay = true;
        }
        match write_both(io, out, &answer.body).await {
            Ok(()) => io.flush().await,
            Err(e) => Err(e),
        }
    };
    drop(stage);
    let outcome = finish::Outcome::new(RouteKind::Static, answer.status, answer.len);
    finish(
        &ctx.stats,
        &ctx.shared.access_log,
        answer.log,
        &outcome,
        started,
    );
    if sent.is_err() {
        return false;
    }
    if !answer.keep_alive {
        // shutdown() sends what MSG_MORE held back, with the FIN, before close(): a close with
        // unread request bytes would reset the connection and drop unsent data. Over TLS the
        // stream's shutdown sends close_notify first.
        if S::RAW {
            let _ = socket2::SockRef::from(io.get_ref().tcp()).shutdown(std::net::Shutdown::Write);
        } else {
            let _ = io.shutdown().await;
        }
        return false;
    }
    if !*nodelay {
        set_nodelay(io);
        *nodelay = true;
    }
    true
}

fn hand_off<T>(prefix: BytesMut, inner: T) -> Next<T> {
    Next::HandOff(Prefixed { prefix, inner })
}

/// What to do with the bytes read so far.
enum Decision {
    /// A cached answer, head already in the output buffer.
    Answer(Box<Answer>),
    /// A request for the backend the relay can carry.
    Relay(Box<RelayPlan>),
    /// The head is not complete yet.
    Partial,
    /// The full pipeline's business.
    Hyper,
    /// Answerable once the cache is filled for it.
    Warm(Miss),
}

/// The fields of a head the fast path reads, found in one pass.
#[derive(Default)]
struct Fields<'a> {
    hosts: u8,
    host: Option<&'a str>,
    close: bool,
    accept_encoding: Option<&'a str>,
    if_none_match: Option<&'a str>,
    if_modified_since: Option<&'a str>,
    referer: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
    /// `X-Forwarded-For`, for the log's client behind a trusted proxy (a repeated one: hyper's).
    forwarded_for: Option<&'a [u8]>,
    /// The client's `X-Request-Id`, for the log.
    request_id: Option<&'a [u8]>,
    /// A Range or a precondition the fast path does not evaluate.
    selection: bool,
}

/// Decides a cached static answer and writes its head into `out`.
fn decide(
    buf: &[u8],
    ctx: &ConnCtx,
    runtime: &crate::daemon::state::Runtime,
    out: &mut Vec<u8>,
) -> Decision {
    let started = Instant::now();
    let mut storage = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut storage);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Decision::Partial,
        Err(_) => return Decision::Hyper,
    };
    let mut miss = None;
    match answer(&req, consumed, started, ctx, runtime, out, &mut miss) {
        Some(Outcome::Static(a)) => Decision::Answer(Box::new(a)),
        Some(Outcome::Relay(plan)) => Decision::Relay(Box::new(plan)),
        None => {
            out.clear();
            miss.map_or(Decision::Hyper, Decision::Warm)
        }
    }
}

/// A request the fast path could answer once the cache holds its verdict and representation.
struct Miss {
    target: String,
    accept_encoding: Option<String>,
    /// A HEAD: the cache is filled with the file, never with a compression nobody will read.
    head_only: bool,
}

/// Fills the cache for `miss` as the full pipeline would: a fresh verdict, the body read once, the
/// encoding compressed once. Verdicts expire every `--cache-revalidate`; without this, each expiry
/// would hand a keep-alive connection to hyper for good.
async fn warm(miss: Miss, ctx: &ConnCtx, runtime: &crate::daemon::state::Runtime) {
    let cfg = &runtime.config;
    let verdict = route_afresh(
        &http::Method::GET,
        &miss.target,
        ctx,
        cfg,
        runtime.generation,
    )
    .await;
    let Some(Route::Static(file)) = verdict.as_deref() else {
        return;
    };
    let cache = &ctx.shared.cache;
    if file.meta.len <= cache.config().max_file {
        let negotiate = compress::worth_compressing(
            file.mime.compressible,
            file.meta.len,
            cache.config().compress_min,
        );
        let negotiate = match (negotiate, miss.head_only) {
            (false, _) => static_file::Negotiate::No,
            (true, true) => static_file::Negotiate::CachedOnly,
            (true, false) => static_file::Negotiate::Compress,
        };
        let _ = static_file::representation(
            file,
            miss.accept_encoding.as_deref(),
            negotiate,
            cfg,
            cache,
        )
        .await;
    }
}

/// Where a static answer's head and body come from.
enum Rep {
    /// A representation in the cache (its body in memory).
    Cached(crate::cache::representation::Representation),
    /// The file on disk, too large for the cache: identity, sent with sendfile(2).
    Disk {
        etag: HeaderValue,
        last_modified: HeaderValue,
    },
}

/// What the fast path does with a request it can take.
enum Outcome {
    Static(Answer),
    Relay(RelayPlan),
}

fn answer(
    req: &httparse::Request<'_, '_>,
    consumed: usize,
    started: Instant,
    ctx: &ConnCtx,
    runtime: &crate::daemon::state::Runtime,
    out: &mut Vec<u8>,
    miss: &mut Option<Miss>,
) -> Option<Outcome> {
    let head_only = match req.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    // HTTP/1.0's keep-alive rules and everything unusual stay with hyper.
    if req.version? != 1 {
        return None;
    }
    let target = req.path?;
    if !target.starts_with('/') {
        return None;
    }
    let mut f = Fields::default();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let text = || std::str::from_utf8(h.value).ok();
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                f.hosts += 1;
                f.host = std::str::from_utf8(h.value).ok();
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                let v = text()?;
                if v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                    f.close = true;
                } else if !v
                    .split(',')
                    .all(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
                {
                    return None;
                }
            }
            // A repeated list field is joined by the full pipeline; leave it to hyper.
            15 if name.eq_ignore_ascii_case(b"accept-encoding")
                && f.accept_encoding.replace(text()?).is_some() =>
            {
                return None
            }
            13 if name.eq_ignore_ascii_case(b"if-none-match")
                && f.if_none_match.replace(text()?).is_some() =>
            {
                return None
            }
            17 if name.eq_ignore_ascii_case(b"if-modified-since") => {
                f.if_modified_since = Some(text()?)
            }
            7 if name.eq_ignore_ascii_case(b"referer") => f.referer = Some(h.value),
            12 if name.eq_ignore_ascii_case(crate::userspace::request_id::FIELD.as_bytes()) => {
                f.request_id = Some(h.value)
            }
            10 if name.eq_ignore_ascii_case(b"user-agent") => f.user_agent = Some(h.value),
            15 if name.eq_ignore_ascii_case(b"x-forwarded-for")
                && f.forwarded_for.replace(h.value).is_some() =>
            {
                return None
            }
            // Anything that changes framing: hyper's, whatever the route.
            _ if is_framing(name) => return None,
            // Ranges and the preconditions the fast path does not evaluate: the backend's own
            // business on a relayed request, hyper's on a static one.
            _ if is_selection(name) => f.selection = true,
            _ => {}
        }
    }
    if f.hosts != 1 {
        return None;
    }
    let cache = &ctx.shared.cache;
    // From here on, what is missing can be filled in: remember what to warm. Built only on a miss,
    // so a hit allocates nothing.
    let remember = |miss: &mut Option<Miss>| {
        *miss = Some(Miss {
            target: target.to_owned(),
            accept_encoding: f.accept_encoding.map(str::to_owned),
            head_only,
        });
        None
    };
    let Some(verdict) = cache.get_fresh(runtime.generation, path_of(target), started) else {
        return remember(miss);
    };
    let relay = |reason: BackendReason| {
        ctx.session().is_some_and(|s| s.can_relay()).then(|| {
            Outcome::Relay(RelayPlan {
                consumed,
                head_only,
                close: f.close,
                reason,
                started,
                log: log_record(ctx, head_only, target, &f, RouteKind::Backend),
            })
        })
    };
    let file = match &*verdict {
        // With a backend, Apache's verdict decides (verify.rs); a URL without one is relayed.
        Route::Static(file) if !f.selection => {
            if ctx.has_backend()
                && !ctx
                    .shared
                    .verifier
                    .gate(f.host, Target::File(file), &runtime.config)
            {
                return relay(BackendReason::Unverified);
            }
            file
        }
        Route::Backend(reason) => return relay(*reason),
        _ => return None,
    };
    let key = FileKey::of(&file.meta);
    let cfg = &runtime.config;
    let vary = compress::worth_compressing(
        file.mime.compressible,
        file.meta.len,
        cache.config().compress_min,
    );
    // A file too large for the cache is sent from disk with sendfile(2), on plain TCP: no buffer
    // of ours holds its bytes, so a client reading it slowly costs its connection alone. (Over
    // TLS, or with sendfile off, hyper's pipeline streams it.) Its head is the one that pipeline
    // gives it: identity, validators made from the file's version.
    let from_disk = file.meta.len > cache.config().max_file;
    let rep = if from_disk {
        // The fast path's TLS connections are exactly its streams that are not RAW.
        if ctx.tls || !cfg.sendfile {
            return None;
        }
        Rep::Disk {
            etag: HeaderValue::try_from(static_file::etag(&file.meta)).ok()?,
            last_modified: HeaderValue::try_from(static_file::last_modified(&file.meta)).ok()?,
        }
    } else {
        let Some(identity) = cache.peek_identity(&key) else {
            return remember(miss);
        };
        Rep::Cached(if vary {
            match cache.select_cached(&key, f.accept_encoding, &Encoding::COMPRESSED, &identity) {
                Some(rep) => rep,
                // A HEAD takes the file as it is rather than wait for (or start) a compression.
                None if head_only => identity,
                None => return remember(miss),
            }
        } else {
            identity
        })
    };
    let (etag, last_modified) = match &rep {
        Rep::Cached(r) => (&r.etag, &r.last_modified),
        Rep::Disk {
            etag,
            last_modified,
        } => (etag, last_modified),
    };
    let conds = Conditions {
        if_match: None,
        if_none_match: f.if_none_match,
        if_modified_since: f.if_modified_since,
        if_unmodified_since: None,
    };
    let validators = Validators {
        etag: etag.to_str().ok()?,
        last_modified: file.meta.mtime,
    };
    let not_modified = match conditional::evaluate(&conds, &validators, true) {
        Precondition::Proceed => false,
        Precondition::NotModified => true,
        Precondition::Failed => return None,
    };

    // The same fields, in the same form, as the full pipeline's answer.
    let status = if not_modified {
        status_line(out, 304, b"");
        304
    } else {
        status_line(out, 200, b"");
        match &rep {
            Rep::Cached(r) => {
                field(out, b"content-type", r.content_type.as_bytes());
                field(out, b"content-length", r.content_length.as_bytes());
                field(out, b"accept-ranges", b"bytes");
                if let Some(enc) = r.content_encoding() {
                    field(out, b"content-encoding", enc.as_bytes());
                }
            }
            Rep::Disk { .. } => {
                field(out, b"content-type", file.mime.content_type.as_bytes());
                field(out, b"content-length", file.meta.len.to_string().as_bytes());
                field(out, b"accept-ranges", b"bytes");
            }
        }
        200
    };
    let caching = Caching {
        etag: Some(etag),
        last_modified: Some(last_modified),
        vary: vary.then_some("Accept-Encoding"),
    };
    caching_fields(&caching, cfg, path_of(target), |name, value| {
        field(out, name.as_str().as_bytes(), value.as_bytes())
    });
    end_head(out, cfg, RouteKind::Static, ctx.tls, f.close, false);

    let sends_body = !not_modified && !head_only;
    let (body, len, open_file) = match rep {
        Rep::Cached(rep) => {
            let large_identity = rep.content_encoding().is_none() && rep.body.len() > COPY_BODY;
            let open_file = (large_identity && sends_body)
                .then(|| open_cached(&key, &file.path).map(|f| (f, key)))
                .flatten();
            let body = if sends_body { rep.body } else { Bytes::new() };
            let len = body.len() as u64;
            (body, len, open_file)
        }
        Rep::Disk { .. } if sends_body => {
            // Opened afresh at each request, never kept: a file deleted or replaced since routing
            // saw it is not the version routing saw, and the full pipeline decides afresh.
            let opened = Arc::new(open_version(&key, &file.path)?);
            (Bytes::new(), file.meta.len, Some((opened, key)))
        }
        Rep::Disk { .. } => (Bytes::new(), 0, None),
    };
    let log = log_record(ctx, head_only, target, &f, RouteKind::Static).map(|mut r| {
        r.status = status;
        r
    });
    Some(Outcome::Static(Answer {
        file: open_file,
        started,
        consumed,
        keep_alive: !f.close,
        status,
        body,
        len,
        log,
    }))
}

/// The access-log line of a fast-path request, filled from its head, when logging is on.
fn log_record(
    ctx: &ConnCtx,
    head_only: bool,
    target: &str,
    f: &Fields<'_>,
    route: RouteKind,
) -> Option<LogRecord> {
    ctx.shared.access_log.enabled().then(|| LogRecord {
        client: khttpd_bridge::forwarded::real_client(ctx.peer.ip(), f.forwarded_for, |ip| {
            ctx.shared.current.load().config.bridge.is_trusted(ip)
        }),
        time: SystemTime::now(),
        method: if head_only { "HEAD" } else { "GET" }.to_owned(),
        target: target.to_owned(),
        version: "HTTP/1.1",
        status: 0,
        bytes: 0,
        referer: f.referer.map(|v| String::from_utf8_lossy(v).into_owned()),
        user_agent: f
            .user_agent
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        duration: Duration::ZERO,
        route: route.name(),
        host: f.host.map(str::to_owned),
        request_id: f
            .request_id
            .and_then(crate::userspace::request_id::usable)
            .map(str::to_owned),
        upstream: None,
        upstream_time: None,
    })
}

/// Open files by version, per main daemon (nginx's open_file_cache): sendfile needs a descriptor,
/// and opening on every request would cost three system calls.
const OPEN_FILES: usize = 256;

/// The file at `path` if it is still the version `key` names. Opening an inode routing just
/// stat'ed is a metadata lookup.
fn open_version(key: &FileKey, path: &std::path::Path) -> Option<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let meta = crate::route::fs::Meta::from_std(&f.metadata().ok()?);
    (FileKey::of(&meta) == *key).then_some(f)
}

fn open_cached(key: &FileKey, path: &std::path::Path) -> Option<Arc<File>> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static OPEN: RefCell<HashMap<FileKey, Arc<File>>> = RefCell::new(HashMap::new());
    }
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        if let Some(f) = open.get(key) {
            return Some(f.clone());
        }
        // The version must match, or the body goes from memory instead.
        let f = open_version(key, path)?;
        if open.len() >= OPEN_FILES {
            open.clear();
        }
        let f = Arc::new(f);
        open.insert(*key, f.clone());
        Some(f)
    })
}

/// Writes a whole answer through the stream; over TLS the records are flushed to the socket.
async fn write_out<S: ClientStream>(io: &mut HeadGuard<S>, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    if !S::RAW {
        io.flush().await?;
    }
    Ok(())
}

/// Waits until the socket takes more, for at most the send timeout (slow-read defence for writes
/// that bypass the head guard).
async fn writable<S: ClientStream>(io: &HeadGuard<S>) -> io::Result<()> {
    match tokio::time::timeout(io.send_timeout(), io.get_ref().tcp().writable()).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client stopped reading (send timeout)",
        )),
    }
}

/// Writes the head with MSG_MORE, so the kernel packs it with the sendfile data that follows into
/// full segments instead of sending it alone (nginx's tcp_nopush does the same with TCP_CORK).
async fn send_more<S: ClientStream>(io: &HeadGuard<S>, mut head: &[u8]) -> io::Result<()> {
    let stream = io.get_ref().tcp();
    // Send first and wait only when the socket is full: waiting first would arm a send timer for
    // every answer, though the socket nearly always has room.
    while !head.is_empty() {
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            socket2::SockRef::from(stream).send_with_flags(head, libc::MSG_MORE)
        });
        match sent {
            Ok(n) => head = &head[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable(io).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// sendfile(2) of the first `len` bytes of the version `key`, waiting for the socket as needed.
/// A file that shrank ends the connection (the head promised `len` bytes). So does one rewritten
/// meanwhile: the last byte goes only after the file's version is checked again, so a file
/// truncated and refilled (NUL bytes) or rewritten (old and new bytes mixed) never ends as a
/// complete answer under the old validators; the client sees a short body, as after nginx's "file
/// was truncated".
async fn send_file<S: ClientStream>(
    io: &HeadGuard<S>,
    file: &File,
    len: u64,
    key: &FileKey,
) -> io::Result<()> {
    let end = i64::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    if end == 0 {
        return Ok(());
    }
    send_range(io, file, 0, end - 1).await?;
    let now = FileKey::of(&crate::route::fs::Meta::from_std(&file.metadata()?));
    if now != *key {
        return Err(io::Error::other("file changed while being sent"));
    }
    send_range(io, file, end - 1, end).await
}

/// sendfile(2) of the bytes `offset..end`.
async fn send_range<S: ClientStream>(
    io: &HeadGuard<S>,
    file: &File,
    mut offset: i64,
    end: i64,
) -> io::Result<()> {
    let stream = io.get_ref().tcp();
    while offset < end {
        let want = (end - offset) as usize;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile(stream, file, Some(&mut offset), want)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable(io).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fields whose presence sends any request to the full pipeline: framing (a body, upgrades,
/// Expect) and the hop-by-hop fields about it.
fn is_framing(name: &[u8]) -> bool {
    const FIELDS: &[&[u8]] = &[
        b"content-length",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"te",
        b"trailer",
    ];
    FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// Fields that send a static request to the full pipeline: ranges and the preconditions the fast
/// path does not evaluate.
fn is_selection(name: &[u8]) -> bool {
    const FIELDS: &[&[u8]] = &[b"range", b"if-range", b"if-match", b"if-unmodified-since"];
    FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_fields_go_to_hyper() {
        for f in [
            "Content-Length",
            "transfer-encoding",
            "Upgrade",
            "expect",
            "TE",
        ] {
            assert!(is_framing(f.as_bytes()), "{f}");
            assert!(!is_selection(f.as_bytes()), "{f}");
        }
        for f in ["RANGE", "If-Match", "if-range", "If-Unmodified-Since"] {
            assert!(is_selection(f.as_bytes()), "{f}");
            assert!(!is_framing(f.as_bytes()), "{f}");
        }
        for f in ["accept", "cookie", "x-forwarded-for"] {
            assert!(
                !is_framing(f.as_bytes()) && !is_selection(f.as_bytes()),
                "{f}"
            );
        }
    }

    #[tokio::test]
    async fn prefixed_replays_then_reads() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut p = Prefixed {
            prefix: BytesMut::from(&b"hello"[..]),
            inner: b,
        };
        let mut s = String::new();
        p.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
