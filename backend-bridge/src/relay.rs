//! The relay: a bodiless GET or HEAD carried over a raw pooled backend connection, and the
//! answer passed back as the backend's own bytes.
//!
//! kHTTPd handed the live socket to the userspace server, so a dynamic request cost it almost
//! nothing. [`Session::forward`] goes through hyper twice (the front's server and our client):
//! two header maps, a channel and a connection task per exchange, which made a PHP page slower
//! through the front than through nginx. Most dynamic requests are plain GETs the front's fast
//! path has already parsed with httparse; for those the relay writes the backend's head straight
//! from the parsed fields (the rules of [`forwarded`](crate::forwarded)), parses the answer's
//! head with httparse, and copies the body through unchanged, finding its end from
//! `Content-Length` or the chunked framing ([`ChunkedEnd`]) so the connection can go back to the
//! pool, as nginx's `proxy_pass` does. Everything else (request bodies, upgrades, the PROXY
//! protocol, HTTP/1.0) keeps taking `forward`. Slots, health, counters and failover are the
//! shared ones of [`Upstreams`](crate::Upstreams).

use crate::addr::BackendAddr;
use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use crate::bridge::{Bridge, Session};
use crate::connect;
use crate::error::{BridgeError, Phase};
use crate::forwarded;
use crate::raw::{RawConn, ReadFailure};
use crate::spool::{pump, Source, Spool, WriteSink};
use crate::upstreams::Slot;

use crate::h1::{parse_head, ChunkError, ChunkedEnd, Framing, ResponseHead, MAX_RESPONSE_HEAD};

/// A request the relay can carry, as the front parsed it: origin-form HTTP/1.1, exactly one
/// `Host`, no body, no `Expect`, no upgrade. The caller checks these.
#[derive(Debug, Clone, Copy)]
pub struct RelayRequest<'a> {
    /// `GET` or `HEAD`.
    pub method: &'a str,
    /// The path and query, exactly as sent.
    pub target: &'a str,
    /// The client's fields, as httparse found them.
    pub fields: &'a [httparse::Header<'a>],
    /// The `X-Request-Id` the backend gets instead of any the client sent.
    pub request_id: Option<&'a str>,
}

/// A failed attempt: its error, and whether it looks like a pooled connection the backend had
/// closed while idle (nothing came back), which a fresh connection may retry.
struct Failure {
    error: BridgeError,
    stale: bool,
}

impl Session {
    /// Whether [`Session::relay`] can carry this session's requests: not with the PROXY
    /// protocol, whose backend connections belong to one client each.
    pub fn can_relay(&self) -> bool {
        self.preface.is_none()
    }

    /// Carries `req` to a backend over a pooled raw connection and returns the answer's head;
    /// [`Relayed::send`] then passes it to the client. `client_gone` resolves when the client
    /// has left: the backend request is then dropped with its connection.
    pub async fn relay(
        &self,
        req: &RelayRequest<'_>,
        client_gone: impl Future<Output = ()>,
    ) -> Result<Relayed, BridgeError> {
        let mut head = Vec::with_capacity(256 + req.fields.len() * 48);
        forwarded::relay_head(
            &mut head,
            req.method,
            req.target,
            req.fields,
            &self.origin(),
            req.request_id,
        );
        let head_only = req.method.eq_ignore_ascii_case("HEAD");
        let result = tokio::select! {
            biased;
            r = self.exchange_raw(&head, head_only) => r,
            () = client_gone => Err((BridgeError::ClientGone, None)),
        };
        result.map_err(|(e, backend)| {
            tracing::debug!(
                client = %self.client().peer,
                backend = ?backend,
                kind = e.kind(),
                error = %e,
                "backend request failed (relay)"
            );
            e
        })
    }

    async fn exchange_raw(
        &self,
        head: &[u8],
        head_only: bool,
    ) -> Result<Relayed, (BridgeError, Option<BackendAddr>)> {
        let bridge = &self.bridge;
        let up = bridge.upstreams();
        let timeout = up.config().timeout;
        let (backend, slot, stream, mut reused) = self
            .connect_with(
                |i| bridge.pool.take(i),
                |addr| async move { connect::open_stream(addr, timeout).await.map(RawConn::new) },
            )
            .await?;
        let addr = up.backend(backend).addr;
        let mut conn = stream;
        let mut retried = false;
        let sent_at = Instant::now();
        loop {
            match exchange_head(&mut conn, head, head_only, timeout).await {
                Ok(parsed) => {
                    up.record_success(backend);
                    return Ok(Relayed {
                        bridge: Arc::clone(bridge),
                        backend,
                        slot,
                        conn,
                        head: parsed,
                        timeout,
                        upstream: crate::Upstream {
                            addr,
                            head_time: sent_at.elapsed(),
                        },
                    });
                }
                Err(f) if f.stale && reused && !retried => {
                    tracing::debug!(backend = %addr, error = %f.error, "reused connection was closed; sending again on a fresh one");
                    retried = true;
                    reused = false;
                    up.count_retry(backend);
                    conn = connect::open_stream(addr, timeout)
                        .await
                        .map(RawConn::new)
                        .map_err(|e| {
                            up.record_failure(backend, &e, true);
                            (e, Some(addr))
                        })?;
                }
                Err(f) => {
                    up.record_failure(backend, &f.error, !reused);
                    return Err((f.error, Some(addr)));
                }
            }
        }
    }
}

/// Writes the request head and reads the answer's head, skipping 1xx interim answers, within
/// `limit` of sending.
async fn exchange_head(
    conn: &mut RawConn,
    head: &[u8],
    head_only: bool,
    limit: Duration,
) -> Result<ResponseHead, Failure> {
    let deadline = Instant::now() + limit;
    conn.buf.clear();
    match timeout_at(deadline, conn.stream.write_all(head)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Failure {
                stale: closed_kind(&e),
                error: BridgeError::Reset(e.into()),
            })
        }
        Err(_) => {
            return Err(Failure {
                error: BridgeError::Timeout(Phase::ResponseHead),
                stale: false,
            })
        }
    }
    let mut received = false;
    loop {
        if !conn.buf.is_empty() {
            match parse_head(&conn.buf, head_only) {
                Ok(Some(h)) if h.status < 200 => {
                    conn.buf.advance(h.len);
                    continue;
                }
                Ok(Some(h)) => return Ok(h),
                Ok(None) if conn.buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(Failure {
                        error: BridgeError::BadResponse("response head too large".into()),
                        stale: false,
                    })
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Failure {
                        error: BridgeError::BadResponse(e.into()),
                        stale: false,
                    })
                }
            }
        }
        match conn.read_more(deadline).await {
            Ok(0) => {
                return Err(Failure {
                    error: BridgeError::Reset("closed before the end of the response head".into()),
                    stale: !received,
                })
            }
            Ok(_) => received = true,
            Err(ReadFailure::Io(e)) => {
                return Err(Failure {
                    stale: !received && closed_kind(&e),
                    error: BridgeError::Reset(e.into()),
                })
            }
            Err(ReadFailure::Timeout) => {
                return Err(Failure {
                    error: BridgeError::Timeout(Phase::ResponseHead),
                    stale: false,
                })
            }
        }
    }
}

/// What a connection the backend closed looks like.
fn closed_kind(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// A backend's answer whose head has arrived; dropping it closes the backend connection.
#[derive(Debug)]
pub struct Relayed {
    bridge: Arc<Bridge>,
    backend: usize,
    slot: Slot,
    conn: RawConn,
    head: ResponseHead,
    timeout: Duration,
    upstream: crate::Upstream,
}

impl Relayed {
    /// Whether the answer is read ahead of the client (buffering on, and not one that must
    /// stream): only then may the front transform it on the way (see [`Relayed::send_gzip`]).
    pub fn buffered(&self) -> bool {
        self.bridge.upstreams().buffers(self.backend) && !self.head.streams
    }

    /// Like [`Relayed::send`], but the payload is gzip-compressed on the way (the caller's `head`
    /// says `Content-Encoding: gzip` and `Transfer-Encoding: chunked`); the backend's framing is
    /// decoded first. Returns the compressed bytes sent.
    pub async fn send_gzip<W: AsyncWrite + Unpin + Send>(
        self,
        client: &mut W,
        head: &[u8],
    ) -> io::Result<u64> {
        use crate::gzip::{chunk, GzipStream, LAST_CHUNK};
        let up = Arc::clone(self.bridge.upstreams());
        up.spool_stats.count_buffered();
        let mut body = self.into_body(true);
        let ready = body.take_buffered()?;
        let mut gz = GzipStream::default();
        let mut first = BytesMut::from(head);
        let out = gz.push(&ready)?;
        let mut sent = out.len() as u64;
        first.extend_from_slice(&chunk(&out));
        let gz = if body.conn.is_none() {
            let tail = gz.finish()?;
            sent += tail.len() as u64;
            first.extend_from_slice(&chunk(&tail));
            first.extend_from_slice(LAST_CHUNK);
            None
        } else {
            Some(gz)
        };
        let mut src = GzipSource {
            inner: body,
            gz,
            sent,
        };
        let mut spool = Spool::new(Arc::clone(&up.spool_limits), Arc::clone(&up.spool_stats));
        pump(first.freeze(), &mut src, &mut WriteSink(client), &mut spool).await?;
        client.flush().await?;
        Ok(src.sent)
    }

    /// The body as a [`Source`] (`decode`: the payload without chunk framing), the head consumed.
    fn into_body(self, decode: bool) -> RawBody {
        let Relayed {
            bridge,
            backend,
            slot,
            mut conn,
            head: parsed,
            timeout: limit,
            ..
        } = self;
        conn.buf.advance(parsed.len);
        RawBody {
            end: BodyEnd::of(parsed.framing),
            keep_alive: parsed.keep_alive,
            bridge,
            backend,
            slot: Some(slot),
            conn: Some(conn),
            limit,
            deadline: Instant::now() + limit,
            decode,
        }
    }

    /// Which backend answered, and how long its head took.
    pub fn upstream(&self) -> crate::Upstream {
        self.upstream
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// The backend's reason phrase (may be empty).
    pub fn reason(&self) -> &[u8] {
        &self.conn.buf[self.head.reason.clone()]
    }

    /// The end-to-end fields as the backend sent them: hop-by-hop ones, `Content-Length` and
    /// `Transfer-Encoding` are left out (the caller frames the answer from [`Relayed::framing`]).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let buf = &self.conn.buf;
        self.head
            .fields
            .iter()
            .map(move |(n, v)| (&buf[n.clone()], &buf[v.clone()]))
    }

    /// How the body is delimited.
    pub fn framing(&self) -> Framing {
        self.head.framing
    }

    /// The backend's `Content-Length`, also on answers without a body (HEAD, 304).
    pub fn content_length(&self) -> Option<u64> {
        self.head.content_length
    }

    /// Writes `head` (the caller's, built from this answer) and the body to `client`. The body
    /// is read as fast as the backend sends it and held for the client in a spool (see
    /// [`crate::spool`]), so the backend connection is parked and its slot freed as soon as the
    /// answer is complete, whatever the client's speed; answers that must stream are copied with
    /// back-pressure instead. Each read from the backend waits at most the backend timeout (as
    /// nginx's `proxy_read_timeout`). Returns the payload bytes. An error means the client's
    /// connection must close: the answer was cut short (by either side).
    pub async fn send<W: AsyncWrite + Unpin + Send>(
        self,
        client: &mut W,
        head: &[u8],
    ) -> io::Result<u64> {
        let sent = self.write_to(client, head).await?;
        // A stream that buffers (TLS records) holds the answer's end until flushed.
        client.flush().await?;
        Ok(sent)
    }

    async fn write_to<W: AsyncWrite + Unpin + Send>(
        self,
        client: &mut W,
        head: &[u8],
    ) -> io::Result<u64> {
        let up = Arc::clone(self.bridge.upstreams());
        if self.head.framing != Framing::Empty && self.buffered() {
            up.spool_stats.count_buffered();
            let mut body = self.into_body(false);
            let ready = body.take_buffered()?;
            if body.conn.is_none() {
                // The whole answer came with its head (most pages): the backend is free already.
                write_both(client, head, &ready).await?;
                return Ok(body.end.payload());
            }
            let mut first = BytesMut::with_capacity(head.len() + ready.len());
            first.extend_from_slice(head);
            first.extend_from_slice(&ready);
            let mut spool = Spool::new(Arc::clone(&up.spool_limits), Arc::clone(&up.spool_stats));
            pump(
                first.freeze(),
                &mut body,
                &mut WriteSink(client),
                &mut spool,
            )
            .await?;
            return Ok(body.end.payload());
        }
        let Relayed {
            bridge,
            backend,
            slot,
            mut conn,
            head: parsed,
            timeout: limit,
            ..
        } = self;
        conn.buf.advance(parsed.len);
        if parsed.framing != Framing::Empty {
            up.spool_stats.count_streamed();
        }
        let (sent, clean) = match parsed.framing {
            Framing::Empty => {
                client.write_all(head).await?;
                (0, conn.buf.is_empty())
            }
            Framing::Length(n) => copy_length(&mut conn, client, head, n, limit).await?,
            Framing::Chunked => copy_chunked(&mut conn, client, head, limit).await?,
            Framing::UntilClose => copy_until_close(&mut conn, client, head, limit).await?,
        };
        conn.buf.clear();
        if clean && parsed.keep_alive {
            bridge.pool.put(backend, conn, up.backend(backend));
        }
        drop(slot);
        Ok(sent)
    }
}

/// A relayed body compressed on the way, as HTTP/1.1 chunks ending with the last chunk.
struct GzipSource {
    inner: RawBody,
    gz: Option<crate::gzip::GzipStream>,
    /// Compressed bytes produced (the client's payload).
    sent: u64,
}

impl Source for GzipSource {
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        use crate::gzip::{chunk, LAST_CHUNK};
        loop {
            let Some(gz) = self.gz.as_mut() else {
                return Ok(None);
            };
            match self.inner.next().await? {
                Some(payload) => {
                    let out = gz.push(&payload)?;
                    if !out.is_empty() {
                        self.sent += out.len() as u64;
                        return Ok(Some(chunk(&out)));
                    }
                }
                None => {
                    let tail = match self.gz.take() {
                        Some(gz) => gz.finish()?,
                        None => Bytes::new(),
                    };
                    self.sent += tail.len() as u64;
                    let mut last = BytesMut::from(&chunk(&tail)[..]);
                    last.extend_from_slice(LAST_CHUNK);
                    return Ok(Some(last.freeze()));
                }
            }
        }
    }
}

/// Where an answer's body ends, followed as its bytes arrive.
enum BodyEnd {
    Length { left: u64, total: u64 },
    Chunked(ChunkedEnd),
    UntilClose { seen: u64 },
}

impl BodyEnd {
    fn of(framing: Framing) -> BodyEnd {
        match framing {
            Framing::Empty => BodyEnd::Length { left: 0, total: 0 },
            Framing::Length(n) => BodyEnd::Length { left: n, total: n },
            Framing::Chunked => BodyEnd::Chunked(ChunkedEnd::default()),
            Framing::UntilClose => BodyEnd::UntilClose { seen: 0 },
        }
    }

    /// Takes the next bytes: `Some(n)` when the body ends after the first `n` of them.
    fn feed(&mut self, bytes: &[u8]) -> io::Result<Option<usize>> {
        match self {
            BodyEnd::Length { left, .. } => {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                *left -= take as u64;
                Ok((*left == 0).then_some(take))
            }
            BodyEnd::Chunked(scan) => scan
                .feed(bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            BodyEnd::UntilClose { seen } => {
                *seen += bytes.len() as u64;
                Ok(None)
            }
        }
    }

    /// Payload bytes seen so far.
    fn payload(&self) -> u64 {
        match self {
            BodyEnd::Length { left, total } => total - left,
            BodyEnd::Chunked(scan) => scan.payload,
            BodyEnd::UntilClose { seen } => *seen,
        }
    }
}

/// A relayed answer's body as a [`Source`]: read from the raw connection, which is parked (or
/// closed) and its slot freed the moment the body's end is read.
struct RawBody {
    bridge: Arc<Bridge>,
    backend: usize,
    slot: Option<Slot>,
    conn: Option<RawConn>,
    end: BodyEnd,
    keep_alive: bool,
    limit: Duration,
    /// When the backend must have sent more: `limit` after its last bytes.
    deadline: Instant,
    /// Whether to yield the payload (chunk framing removed) instead of the bytes as they came.
    decode: bool,
}

impl RawBody {
    /// Takes what the connection's buffer holds of the body.
    fn take_buffered(&mut self) -> io::Result<Bytes> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Bytes::new());
        };
        let mut payload = BytesMut::new();
        let decoding = match &mut self.end {
            BodyEnd::Chunked(scan) if self.decode => Some(
                scan.feed_with(&conn.buf, |d| payload.extend_from_slice(d))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            ),
            _ => None,
        };
        let end = match decoding {
            Some(end) => end,
            None => self.end.feed(&conn.buf)?,
        };
        let raw = match end {
            Some(n) => {
                // Anything after the body's end is not an answer to anything: never pooled.
                let clean = n == conn.buf.len();
                let body = conn.buf.split_to(n).freeze();
                self.finish(clean);
                body
            }
            None => conn.buf.split().freeze(),
        };
        Ok(if decoding.is_some() {
            payload.freeze()
        } else {
            raw
        })
    }

    /// The body is complete: frees the slot and parks the connection if it may carry another
    /// request.
    fn finish(&mut self, clean: bool) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        conn.buf.clear();
        if clean && self.keep_alive {
            let up = self.bridge.upstreams();
            self.bridge
                .pool
                .put(self.backend, conn, up.backend(self.backend));
        }
        // Parked first: a request waiting for the slot finds the connection.
        drop(self.slot.take());
    }
}

impl Source for RawBody {
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            match conn.read_more(self.deadline).await {
                Ok(0) if matches!(self.end, BodyEnd::UntilClose { .. }) => {
                    self.finish(false);
                    return Ok(None);
                }
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "backend closed the connection before the end of the body",
                    ))
                }
                Ok(_) => self.deadline = Instant::now() + self.limit,
                Err(ReadFailure::Io(e)) => return Err(e),
                Err(ReadFailure::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "backend stopped sending the body",
                    ))
                }
            }
            let bytes = self.take_buffered()?;
            if !bytes.is_empty() {
                return Ok(Some(bytes));
            }
        }
    }
}

/// Reads more body from the backend within `limit`; the end of the stream is an error here.
async fn body_read(conn: &mut RawConn, limit: Duration) -> io::Result<()> {
    conn.buf.clear();
    match conn.read_more(Instant::now() + limit).await {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "backend closed the connection before the end of the body",
        )),
        Ok(_) => Ok(()),
        Err(ReadFailure::Io(e)) => Err(e),
        Err(ReadFailure::Timeout) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "backend stopped sending the body",
        )),
    }
}

/// A `Content-Length` body: returns the bytes sent and whether nothing followed them.
async fn copy_length<W: AsyncWrite + Unpin>(
    conn: &mut RawConn,
    client: &mut W,
    head: &[u8],
    len: u64,
    limit: Duration,
) -> io::Result<(u64, bool)> {
    let mut clean = true;
    let first = conn
        .buf
        .len()
        .min(usize::try_from(len).unwrap_or(usize::MAX));
    clean &= conn.buf.len() == first;
    write_both(client, head, &conn.buf[..first]).await?;
    let mut sent = first as u64;
    while sent < len {
        body_read(conn, limit).await?;
        let take = conn
            .buf
            .len()
            .min(usize::try_from(len - sent).unwrap_or(usize::MAX));
        clean &= conn.buf.len() == take;
        client.write_all(&conn.buf[..take]).await?;
        sent += take as u64;
    }
    Ok((sent, clean))
}

/// A chunked body, passed through as it came: returns the payload bytes and whether nothing
/// followed the last chunk.
async fn copy_chunked<W: AsyncWrite + Unpin>(
    conn: &mut RawConn,
    client: &mut W,
    head: &[u8],
    limit: Duration,
) -> io::Result<(u64, bool)> {
    let mut scan = ChunkedEnd::default();
    let bad = |e: ChunkError| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut head = Some(head);
    loop {
        let end = scan.feed(&conn.buf).map_err(bad)?;
        let upto = end.unwrap_or(conn.buf.len());
        match head.take() {
            Some(h) => write_both(client, h, &conn.buf[..upto]).await?,
            None => client.write_all(&conn.buf[..upto]).await?,
        }
        if end.is_some() {
            return Ok((scan.payload, upto == conn.buf.len()));
        }
        body_read(conn, limit).await?;
    }
}

/// A body that ends when the backend closes.
async fn copy_until_close<W: AsyncWrite + Unpin>(
    conn: &mut RawConn,
    client: &mut W,
    head: &[u8],
    limit: Duration,
) -> io::Result<(u64, bool)> {
    write_both(client, head, &conn.buf).await?;
    let mut sent = conn.buf.len() as u64;
    loop {
        conn.buf.clear();
        match conn.read_more(Instant::now() + limit).await {
            Ok(0) => return Ok((sent, false)),
            Ok(n) => {
                client.write_all(&conn.buf).await?;
                sent += n as u64;
            }
            Err(ReadFailure::Io(e)) => return Err(e),
            Err(ReadFailure::Timeout) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "backend stopped sending the body",
                ))
            }
        }
    }
}

/// Writes `head` then `body`, both in one `writev` when the socket takes them.
pub async fn write_both<W: AsyncWrite + Unpin>(
    io: &mut W,
    head: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let (mut h, mut b) = (head, body);
    while !h.is_empty() {
        let n = io
            .write_vectored(&[IoSlice::new(h), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(h.len());
        h = &h[from_head..];
        b = &b[n - from_head..];
    }
    io.write_all(b).await
}
