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
mod decision;
mod send;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::conn::handler::ConnCtx;
use crate::conn::head_guard::HeadGuard;
use crate::conn::stream::ClientStream;
use crate::daemon::stats::{RouteKind, Stage};
use crate::logging::finish::{self, finish};
use crate::userspace::relay::{self};
use khttpd_bridge::relay::write_both;

use self::decision::{decide, warm, Decision};
use self::send::{send_file, send_more, write_out, Answer, COPY_BODY};

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

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
