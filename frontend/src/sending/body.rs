//! Response bodies: empty, whole in memory, or streamed from a file in bounded chunks.
//!
//! One enum instead of a boxed trait object keeps the cache-hit path free of allocations. Streamed
//! bodies read with `pread` on the blocking pool, one chunk at a time, into a channel of capacity one:
//! memory per response is at most two chunks whatever the file size, and a client that stops reading
//! stops the reads (back-pressure). A client that leaves drops the receiver, which ends the reader.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

use crate::daemon::stats::StageGuard;
use crate::logging::access_log::AccessLog;
use crate::logging::log_line::LogRecord;

/// A piece of a streamed body: literal bytes (multipart heads) or a byte range of the file.
#[derive(Debug, Clone)]
pub(crate) enum Segment {
    /// Bytes sent as they are.
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    File {
        /// First byte.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
}

impl Segment {
    fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::File { len, .. } => *len,
        }
    }
}

enum Inner {
    Empty,
    Full(Option<Bytes>),
    Stream {
        rx: mpsc::Receiver<io::Result<Bytes>>,
        remaining: u64,
    },
    Backend(khttpd_bridge::AnswerBody),
    /// A backend's body gzip'd on the way (see [`crate::userspace::gzip_proxied`]); `None` once finished.
    // The encoder boxed: its state is large, and every other body would carry its size.
    BackendGzip(
        khttpd_bridge::AnswerBody,
        Option<Box<khttpd_bridge::gzip::GzipStream>>,
    ),
}

/// An access-log line waiting for the end of its response (kHTTPd's Logging stage): written when
/// the body is finished or dropped, with the bytes actually sent and the whole duration.
pub(crate) struct PendingLog {
    /// The line, `bytes` and `duration` still to fill.
    pub record: LogRecord,
    /// Where it goes.
    pub log: Arc<AccessLog>,
    /// When the request started.
    pub started: std::time::Instant,
    /// What the answer came to (its bytes counted as they are sent).
    pub(crate) outcome: crate::logging::finish::Outcome,
}

/// The body of every response the front produces.
pub(crate) struct Body {
    inner: Inner,
    // Keeps the request counted in its kHTTPd stage until the body is done or dropped.
    _stage: Option<StageGuard>,
    log: Option<Box<PendingLog>>,
    sent: u64,
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(p) = self.log.take() {
            let PendingLog {
                record,
                log,
                started,
                mut outcome,
            } = *p;
            outcome.bytes = self.sent;
            crate::logging::finish::log(&log, record, &outcome, started);
        }
    }
}

impl Body {
    /// No body (304, HEAD, redirects).
    pub(crate) fn empty() -> Body {
        Body::new(Inner::Empty)
    }

    fn new(inner: Inner) -> Body {
        Body {
            inner,
            _stage: None,
            log: None,
            sent: 0,
        }
    }

    /// A backend's body, read ahead by the bridge or streamed through (see
    /// [`khttpd_bridge::AnswerBody`]).
    pub(crate) fn backend(b: khttpd_bridge::AnswerBody) -> Body {
        Body::new(Inner::Backend(b))
    }

    /// A backend's body, gzip-compressed as it passes.
    pub(crate) fn backend_gzip(b: khttpd_bridge::AnswerBody) -> Body {
        Body::new(Inner::BackendGzip(b, Some(Default::default())))
    }

    /// Logs `pending` when this body ends.
    pub(crate) fn with_log(mut self, pending: PendingLog) -> Body {
        self.log = Some(Box::new(pending));
        self
    }

    /// A body already in memory.
    pub(crate) fn full(b: impl Into<Bytes>) -> Body {
        Body::new(Inner::Full(Some(b.into())))
    }

    /// Streams `segments` of `file` in reads of at most `chunk` bytes. Must run inside a tokio runtime.
    pub(crate) fn stream(file: Arc<File>, segments: Vec<Segment>, chunk: usize) -> Body {
        let remaining = segments.iter().map(Segment::len).sum();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(pump(file, segments, chunk, tx));
        Body::new(Inner::Stream { rx, remaining })
    }

    /// Attaches a stage gauge that is released when the body ends.
    pub(crate) fn with_stage(mut self, guard: StageGuard) -> Body {
        self._stage = Some(guard);
        self
    }
}

async fn pump(
    file: Arc<File>,
    segments: Vec<Segment>,
    chunk: usize,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    // The file's version as the stream starts: checked again before the last bytes go, so a file
    // rewritten or truncated and refilled meanwhile ends the answer short (a failed download for
    // the client) instead of completing it with other bytes under the old validators.
    let version = file.metadata().ok().map(|m| version_of(&m));
    let last_file_segment = segments
        .iter()
        .rposition(|s| matches!(s, Segment::File { .. }));
    for (i, seg) in segments.into_iter().enumerate() {
        match seg {
            Segment::Bytes(b) => {
                if tx.send(Ok(b)).await.is_err() {
                    return;
                }
            }
            Segment::File { mut offset, len } => {
                let end = offset + len;
                // Reads start small and double while the client takes each piece at once, up to
                // `chunk`; a client that makes us wait (a slow reader) goes back to the smallest.
                // So a fast download reads in large pieces, and a slow one holds a few small ones
                // (about 3 x 8 KiB: the piece in the channel, the one hyper writes, the next read)
                // instead of three large ones.
                let mut size = STREAM_MIN_CHUNK.min(chunk.max(1));
                while offset < end {
                    let n = (end - offset).min(size as u64) as usize;
                    let f = file.clone();
                    let read =
                        tokio::task::spawn_blocking(move || read_exact_at(&f, offset, n)).await;
                    let read = match read {
                        Ok(r) => r,
                        Err(e) => Err(io::Error::other(e)),
                    };
                    let mut read = read;
                    if let Ok(b) = &read {
                        offset += b.len() as u64;
                        if offset >= end && Some(i) == last_file_segment {
                            let now = file.metadata().ok().map(|m| version_of(&m));
                            if version.is_none() || now != version {
                                read = Err(io::Error::other("file changed while being sent"));
                            }
                        }
                    }
                    let failed = read.is_err();
                    // A send error means the client left: stop reading.
                    match tx.try_reserve() {
                        Ok(permit) => {
                            permit.send(read);
                            size = (size * 2).min(chunk.max(1));
                        }
                        Err(mpsc::error::TrySendError::Full(())) => {
                            size = STREAM_MIN_CHUNK.min(chunk.max(1));
                            if tx.send(read).await.is_err() {
                                return;
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(())) => return,
                    }
                    if failed {
                        return;
                    }
                }
            }
        }
    }
}

/// The smallest read of a streamed file: what a slow reader's stream holds per piece.
const STREAM_MIN_CHUNK: usize = 8 * 1024;

/// Size and modification time: what changes when a file is written to or truncated.
fn version_of(m: &std::fs::Metadata) -> (u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (m.len(), m.mtime(), m.mtime_nsec())
}

/// Reads exactly `n` bytes at `offset`; a file that shrank under us is an error, never short data
/// under a promised Content-Length.
pub(crate) fn read_exact_at(file: &File, offset: u64, n: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; n];
    let mut done = 0;
    while done < n {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ))
            }
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Bytes::from(buf))
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Backend(b) => Pin::new(b).poll_frame(cx),
            Inner::BackendGzip(b, gz) => poll_gzip(b, gz, cx),
            Inner::Stream { rx, remaining } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    *remaining = remaining.saturating_sub(b.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if *remaining > 0 => Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file reader ended early",
                )))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(d) = frame.data_ref() {
                this.sent += d.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Full(b) => b.is_none(),
            Inner::Stream { remaining, .. } => *remaining == 0,
            Inner::Backend(b) => b.is_end_stream(),
            Inner::BackendGzip(_, gz) => gz.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
            Inner::Backend(b) => b.size_hint(),
            Inner::BackendGzip(..) => SizeHint::default(),
        }
    }
}

/// The next compressed frame of a backend body: data is compressed and sync-flushed as it comes,
/// trailers are dropped, the end adds the gzip trailer.
fn poll_gzip(
    body: &mut khttpd_bridge::AnswerBody,
    gz: &mut Option<Box<khttpd_bridge::gzip::GzipStream>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
    loop {
        let Some(enc) = gz.as_mut() else {
            return Poll::Ready(None);
        };
        match http_body::Body::poll_frame(Pin::new(&mut *body), cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                match enc.push(&data) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                let finished = gz.take().map(|g| g.finish());
                return match finished {
                    Some(Ok(out)) => Poll::Ready(Some(Ok(Frame::data(out)))),
                    Some(Err(e)) => Poll::Ready(Some(Err(e))),
                    None => Poll::Ready(None),
                };
            }
            Poll::Pending => return Poll::Pending,
        }
    }
}
