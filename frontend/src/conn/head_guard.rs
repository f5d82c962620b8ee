//! A byte-level guard in front of hyper against framing that a backend could read differently.
//!
//! hyper (through httparse) accepts a bare LF as a line end and reports an overflowing chunk size only
//! while the body streams, after the head has been handed to the service (and so to the backend).
//! Header-level ambiguity (Content-Length with Transfer-Encoding, duplicate lengths, other codings) is
//! refused by the handler, which sees the parsed head; this guard covers the rest. It follows the
//! client's bytes with a small framing tracker (head, fixed-length body, chunked body) and, at the first
//! violation, *poisons* the stream: it overwrites one byte with DEL (0x7f), a byte no part of an
//! HTTP/1.1 head or chunk line may hold. If the offending request's head is still in the same read,
//! the head's first byte is poisoned, so hyper answers 400 and closes before any service runs; otherwise
//! the offending byte is, and hyper ends the connection. After a head that asks for an upgrade the guard
//! stands aside, since the rest may be another protocol.
//!
//! Since it sees where heads and bodies begin, the guard also keeps kHTTPd's missing deadlines: a head
//! must be complete within `header` of the connection's start or of its own first byte (slowloris), a
//! body may not stall longer than `body` while the server waits for it (slow POST), and a response
//! write may not stall longer than `send` (slow read). Idle time between keep-alive requests is left to
//! hyper's header timer, which starts only once the previous response is written.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::future::Future;
use std::time::Duration;

use khttpd_bridge::h1::{request_framing, ChunkedEnd, RequestBody, MAX_REQUEST_FIELDS};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The byte that makes hyper refuse whatever it lands in.
const POISON: u8 = 0x7f;

/// The guard's deadlines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// A complete head, from the connection's start or the head's first byte.
    pub header: Duration,
    /// Longest stall of a request body while the server waits for it.
    pub body: Duration,
    /// Longest stall of a response write.
    pub send: Duration,
}

/// Wraps a client connection.
#[derive(Debug)]
pub(crate) struct HeadGuard<T> {
    inner: T,
    scan: Scanner,
    timeouts: Timeouts,
    /// Absolute deadline of the head being read, or stall deadline of the body.
    read_timer: Option<Pin<Box<Sleep>>>,
    read_timer_for_head: bool,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<T> HeadGuard<T> {
    /// Guards `inner`; heads longer than `max_head` are left to hyper's own limit.
    pub(crate) fn new(inner: T, max_head: usize, timeouts: Timeouts) -> HeadGuard<T> {
        HeadGuard {
            inner,
            scan: Scanner::new(max_head),
            timeouts,
            // The first head is due `header` after the connection is accepted.
            read_timer: Some(Box::pin(tokio::time::sleep(timeouts.header))),
            read_timer_for_head: true,
            write_timer: None,
        }
    }

    /// Guards only the writes of `inner` (the send deadline): for a protocol that is not
    /// HTTP/1.1 (HTTP/2 frames), whose own server keeps the read deadlines.
    pub(crate) fn aside(inner: T, timeouts: Timeouts) -> HeadGuard<T> {
        let mut scan = Scanner::new(0);
        scan.state = State::Aside;
        HeadGuard {
            inner,
            scan,
            timeouts,
            read_timer: None,
            read_timer_for_head: false,
            write_timer: None,
        }
    }

    /// The connection underneath, for writes that bypass the guard (sendfile).
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The send deadline, for writes that bypass the guard.
    pub(crate) fn send_timeout(&self) -> Duration {
        self.timeouts.send
    }

    fn arm_read(&mut self, after: Duration, for_head: bool) {
        let at = Instant::now() + after;
        match &mut self.read_timer {
            Some(t) => t.as_mut().reset(at),
            None => self.read_timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.read_timer_for_head = for_head;
    }

    /// Keeps the read deadline in step with the framing after `feed`.
    fn after_read(&mut self) {
        match self.scan.phase() {
            Phase::Head if !self.read_timer_for_head || self.read_timer.is_none() => {
                self.arm_read(self.timeouts.header, true)
            }
            Phase::Head => {}
            Phase::Idle | Phase::Body | Phase::Aside => self.read_timer = None,
        }
    }

    fn read_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.scan.phase() == Phase::Body && self.read_timer.is_none() {
            self.arm_read(self.timeouts.body, false);
        }
        match &mut self.read_timer {
            Some(t) => t.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    fn write_result<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => {
                if self.write_timer.is_none() {
                    self.write_timer = Some(Box::pin(tokio::time::sleep(self.timeouts.send)));
                }
                let expired = self
                    .write_timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading (send timeout)",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.write_timer = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.scan.feed(&mut buf.filled_mut()[before..]);
                this.after_read();
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.read_expired(cx) => {
                let what = if this.read_timer_for_head {
                    "request head not complete in time (header timeout)"
                } else {
                    "request body stalled (body timeout)"
                };
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        self.write_result(cx, r)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.write_result(cx, r)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_result(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Where the connection is in its request stream, for the deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Between requests, after at least one: hyper's keep-alive timer applies.
    Idle,
    /// Reading a head (or waiting for the first one).
    Head,
    /// Reading a body.
    Body,
    /// Not following (upgrade or poisoned).
    Aside,
}

#[derive(Debug)]
enum State {
    /// Reading a head; `prev` is the byte before, for the CR check.
    Head,
    /// `n` body bytes to skip.
    Body(u64),
    /// A chunked body, followed by the one chunked scanner of the bridge's `h1` (boxed: few
    /// requests have one, and every connection holds a `State`).
    Chunked(Box<ChunkedEnd>),
    /// Not following any more (upgrade, poisoned, or something hyper will refuse anyway).
    Aside,
}

/// The framing tracker, separate from I/O so it can be tested on byte strings.
#[derive(Debug)]
pub(crate) struct Scanner {
    state: State,
    prev: u8,
    head: Vec<u8>,
    max_head: usize,
    heads_done: u64,
    /// The body being read belongs to a request asking for an upgrade: follow (and time) the body,
    /// then stand aside, since what follows may be another protocol.
    then_aside: bool,
}

impl Scanner {
    /// A tracker at the start of a connection.
    pub(crate) fn new(max_head: usize) -> Scanner {
        Scanner {
            state: State::Head,
            prev: 0,
            head: Vec::new(),
            max_head,
            heads_done: 0,
            then_aside: false,
        }
    }

    /// The phase for the deadlines.
    pub(crate) fn phase(&self) -> Phase {
        match self.state {
            State::Head if self.head.is_empty() && self.heads_done > 0 => Phase::Idle,
            State::Head => Phase::Head,
            State::Aside => Phase::Aside,
            _ => Phase::Body,
        }
    }

    /// Whether the tracker gave up following (after poisoning or an upgrade).
    #[cfg(test)]
    pub(crate) fn is_aside(&self) -> bool {
        matches!(self.state, State::Aside)
    }

    /// Follows `bytes` just read from the client, poisoning them on the first violation.
    pub(crate) fn feed(&mut self, bytes: &mut [u8]) {
        // Where the current request's head starts in `bytes`, if it starts in this read.
        let mut head_start: Option<usize> =
            if matches!(self.state, State::Head) && !self.head.is_empty() {
                None
            } else {
                Some(0)
            };
        // Where the current head's bytes not yet in `self.head` start, while reading a head.
        let mut in_head_from: Option<usize> = None;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                State::Aside => return,
                State::Head => {
                    // The head's bytes in this read start at `from`; only what a read leaves
                    // unfinished is copied into `self.head`. A head that arrives whole (nearly all
                    // of them) is judged where it lies.
                    let from = *in_head_from.get_or_insert(i);
                    let have = self.head.len() + (i - from);
                    if have == 0 && (b == b'\r' || b == b'\n') {
                        // Empty lines before a request line are tolerated (RFC 9112 §2.2).
                        head_start = Some(i + 1);
                        in_head_from = None;
                        i += 1;
                        continue;
                    }
                    // A line at a time: only line ends need a decision.
                    let rest = &bytes[i..];
                    let Some(lf) = memchr::memchr(b'\n', rest) else {
                        if have + rest.len() > self.max_head {
                            // hyper answers 431 on its own.
                            self.state = State::Aside;
                            return;
                        }
                        self.prev = rest[rest.len() - 1];
                        self.head.extend_from_slice(&bytes[from..]);
                        return;
                    };
                    // The same order of checks as byte by byte: the line's length, then a bare
                    // LF, then the length with the LF.
                    if have + lf > self.max_head {
                        self.state = State::Aside;
                        return;
                    }
                    let before_lf = if lf > 0 { rest[lf - 1] } else { self.prev };
                    if before_lf != b'\r' {
                        return self.poison(bytes, head_start.unwrap_or(i + lf));
                    }
                    if have + lf + 1 > self.max_head {
                        self.state = State::Aside;
                        return;
                    }
                    self.prev = b'\n';
                    i += lf + 1;
                    if !ends_head(&self.head, &bytes[from..i]) {
                        continue;
                    }
                    self.heads_done += 1;
                    in_head_from = None;
                    let verdict = if self.head.is_empty() {
                        after_head(&bytes[from..i])
                    } else {
                        self.head.extend_from_slice(&bytes[from..i]);
                        after_head(&self.head)
                    };
                    self.head.clear();
                    match verdict {
                        Ok((State::Head, _)) => head_start = Some(i),
                        Ok((next, upgrade)) => {
                            self.state = next;
                            self.then_aside = upgrade;
                        }
                        Err(()) => return self.poison(bytes, head_start.unwrap_or(i - 1)),
                    }
                    continue;
                }
                State::Body(n) => {
                    let take = n.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = if n != take {
                        State::Body(n - take)
                    } else if self.then_aside {
                        State::Aside
                    } else {
                        State::Head
                    };
                    head_start = Some(i);
                    self.prev = 0;
                    continue;
                }
                State::Chunked(ref mut chunks) => {
                    match chunks.feed(&bytes[i..]) {
                        Ok(Some(n)) => {
                            i += n;
                            self.state = if self.then_aside {
                                State::Aside
                            } else {
                                State::Head
                            };
                            // The body's last byte was the LF of its final CRLF.
                            self.prev = b'\n';
                            head_start = Some(i);
                        }
                        Ok(None) => i = bytes.len(),
                        Err(e) => return self.poison(bytes, head_start.unwrap_or(i + e.at)),
                    }
                    continue;
                }
            }
        }
        // A read that ended right after a line of an unfinished head.
        if let Some(from) = in_head_from {
            self.head.extend_from_slice(&bytes[from..]);
        }
    }

    fn poison(&mut self, bytes: &mut [u8], at: usize) {
        if let Some(b) = bytes.get_mut(at) {
            *b = POISON;
        }
        self.state = State::Aside;
    }
}

/// Decides the framing of the body after a complete head, and whether the request asks for an
/// upgrade. Err: poison (ambiguous framing).
fn after_head(head: &[u8]) -> Result<(State, bool), ()> {
    // Most heads name none of the fields that decide framing: skip parsing those.
    if head.is_ascii() && !mentions_framing(head) {
        return Ok(if head.starts_with(b"CONNECT ") {
            (State::Aside, true)
        } else {
            (State::Head, false)
        });
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_FIELDS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        // hyper will refuse the same bytes with its own 400 or 431.
        _ => return Ok((State::Aside, false)),
    }
    let fields = req.headers.iter().map(|h| (h.name.as_bytes(), h.value));
    let (body, upgrade) = request_framing(fields).map_err(|_| ())?;
    let upgrade = upgrade || req.method == Some("CONNECT");
    // An upgrade's own body (a POST with `Upgrade:`) is still a request body: followed, and under
    // the body timeout, whatever the headers say; only after it may the bytes be another protocol.
    let state = match body {
        RequestBody::Chunked => State::Chunked(Box::default()),
        RequestBody::Length(0) | RequestBody::None if upgrade => State::Aside,
        RequestBody::Length(0) | RequestBody::None => State::Head,
        RequestBody::Length(n) => State::Body(n),
    };
    Ok((state, upgrade))
}

/// Whether the head read so far (`kept` then `line`, which ends with CRLF) ends with an empty line.
fn ends_head(kept: &[u8], line: &[u8]) -> bool {
    if line.len() >= 4 {
        return line.ends_with(b"\r\n\r\n");
    }
    let need = 4 - line.len();
    kept.len() >= need && kept[kept.len() - need..].iter().chain(line).eq(b"\r\n\r\n")
}

/// Whether a head may carry Content-Length, Transfer-Encoding or Upgrade (case-insensitively).
/// Runs on every head, so it finds lines with memchr and compares a name only when its length fits.
fn mentions_framing(head: &[u8]) -> bool {
    let mut start = match memchr::memchr(b'\n', head) {
        Some(lf) => lf + 1,
        None => return false,
    };
    while start < head.len() {
        let end = memchr::memchr(b'\n', &head[start..]).map_or(head.len(), |lf| start + lf);
        let line = &head[start..end];
        let name = memchr::memchr(b':', line).map_or(line, |colon| &line[..colon]);
        let name = name.trim_ascii();
        let framing = match name.len() {
            14 => name.eq_ignore_ascii_case(b"content-length"),
            17 => name.eq_ignore_ascii_case(b"transfer-encoding"),
            7 => name.eq_ignore_ascii_case(b"upgrade"),
            _ => false,
        };
        if framing {
            return true;
        }
        start = end + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the bytes as hyper would see them.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut s = Scanner::new(16384);
        let mut out = input.to_vec();
        for chunk in out.chunks_mut(step) {
            s.feed(chunk);
        }
        let poisoned = out.contains(&POISON);
        (out, poisoned)
    }

    fn clean(input: &[u8]) {
        for step in [1, 3, 7, input.len()] {
            let (out, poisoned) = run(input, step);
            assert!(
                !poisoned,
                "step {step}: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    fn poisoned(input: &[u8]) {
        for step in [1, 5, input.len()] {
            assert!(
                run(input, step).1,
                "step {step}: {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn well_formed_traffic_is_untouched() {
        clean(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
        clean(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\na\nb\ncGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        clean(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\na\nb\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        clean(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn bare_lf_in_a_head_poisons_its_first_byte() {
        poisoned(b"GET / HTTP/1.1\nHost: a\n\n");
        poisoned(b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n");
        let (out, _) = run(b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 1000);
        assert_eq!(
            out[0], POISON,
            "the head's first byte, so hyper answers 400 before routing"
        );
        // The second request of a pipeline.
        let (out, p) = run(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\nHost: a\n\n",
            1000,
        );
        assert!(p);
        assert_eq!(out[0], b'G');
        assert_eq!(out[27], POISON);
    }

    #[test]
    fn ambiguous_lengths_poison() {
        poisoned(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        poisoned(
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        );
        poisoned(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc");
        poisoned(
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        );
        poisoned(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    }

    #[test]
    fn bad_chunks_poison() {
        poisoned(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n");
        poisoned(
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        );
        poisoned(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n");
        poisoned(
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n",
        );
        // The limits of every parser (khttpd_bridge::h1): 16 digits, even zeros, and a chunk-size
        // line past 8 KiB of extensions.
        poisoned(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000003\r\nabc\r\n0\r\n\r\n");
        let mut long_ext =
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'x', khttpd_bridge::h1::MAX_CHUNK_LINE));
        long_ext.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        poisoned(&long_ext);
        // In one read, the head itself is poisoned so the request never reaches a service.
        let (out, _) = run(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\n", 1000);
        assert_eq!(out[0], POISON);
    }

    #[test]
    fn framing_fields_are_found_on_any_line_in_any_case() {
        assert!(mentions_framing(
            b"POST / HTTP/1.1\r\ncontent-LENGTH: 1\r\n\r\n"
        ));
        assert!(mentions_framing(
            b"POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding :chunked\r\n\r\n"
        ));
        assert!(mentions_framing(
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n"
        ));
        assert!(!mentions_framing(
            b"GET /content-length HTTP/1.1\r\nHost: upgrade\r\nX-Upgrade: 1\r\n\r\n"
        ));
        assert!(!mentions_framing(b"GET / HTTP/1.1"));
    }

    #[test]
    fn upgrades_are_left_alone() {
        let mut s = Scanner::new(16384);
        let mut b = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello\n\n".to_vec();
        s.feed(&mut b);
        assert!(s.is_aside());
        assert!(!b.contains(&POISON));
    }

    /// Issue 16: a body sent with `Upgrade:` is a body: followed (so under the body timeout)
    /// until it ends, and only then does the guard stand aside.
    #[test]
    fn an_upgrade_requests_body_is_followed_before_standing_aside() {
        let mut s = Scanner::new(16384);
        let mut b =
            b"POST /x HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\nab".to_vec();
        s.feed(&mut b);
        assert_eq!(s.phase(), Phase::Body);
        let mut rest = b"cde\x81\x05hello".to_vec();
        s.feed(&mut rest);
        assert!(s.is_aside());
        assert!(!rest.contains(&POISON));
        let mut s = Scanner::new(16384);
        let mut b = b"POST /x HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na".to_vec();
        s.feed(&mut b);
        assert_eq!(s.phase(), Phase::Body);
        let mut rest = b"\r\n0\r\n\r\nanything".to_vec();
        s.feed(&mut rest);
        assert!(s.is_aside());
    }

    proptest::proptest! {
        /// Any bytes: never a panic, and well-formed heads before them stay untouched.
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512), step in 1usize..64) {
            let mut s = Scanner::new(256);
            let mut d = data.clone();
            for c in d.chunks_mut(step) { s.feed(c); }
        }

        /// Whether a stream is poisoned, and whether the guard stands aside, does not depend on how
        /// the reads cut it: heads and line ends split across reads are judged as in one read.
        #[test]
        fn verdict_is_independent_of_read_sizes(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "GET / HTTP/1.1\r\n", "POST /p HTTP/1.1\r\n", "Host: a\r\n", "\r\n", "\r", "\n",
                "Content-Length: 2\r\n", "Transfer-Encoding: chunked\r\n", "Upgrade: x\r\n",
                "0\r\n", "3\r\nabc\r\n", "ab", "X: y\n", "X: y\r\n", "Content-Length: 1\r\n",
            ]), 0..40),
            step in 1usize..40,
        ) {
            let data: Vec<u8> = pieces.concat().into_bytes();
            let verdict = |step: usize| {
                let mut s = Scanner::new(128);
                let mut d = data.clone();
                for c in d.chunks_mut(step) { s.feed(c); }
                (d.contains(&POISON), s.is_aside(), s.heads_done, s.phase())
            };
            proptest::prop_assert_eq!(verdict(1), verdict(step));
            proptest::prop_assert_eq!(verdict(1), verdict(data.len().max(1)));
        }
    }
}
