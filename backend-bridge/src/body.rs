//! The request body as sent to the backend: the client's own stream, passed through chunk by
//! chunk (hyper applies back-pressure both ways), or a body the front read whole first (so a slow
//! client never holds a backend slot), noting when the last byte went out.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

/// A request body the front has read whole (from memory, or from an unlinked temporary file)
/// before a backend slot is taken.
pub type Buffered = UnsyncBoxBody<Bytes, std::io::Error>;

/// What a client request carries toward the backend.
#[derive(Debug)]
pub enum ClientBody {
    /// The client's own stream, passed through as it arrives (upgrades, and the bridge's tests).
    Streamed(Incoming),
    /// A body read whole first.
    Buffered(Buffered),
}

impl From<Incoming> for ClientBody {
    fn from(body: Incoming) -> ClientBody {
        ClientBody::Streamed(body)
    }
}

impl From<Buffered> for ClientBody {
    fn from(body: Buffered) -> ClientBody {
        ClientBody::Buffered(body)
    }
}

/// Errors of a body toward the backend (the client's stream, or a temporary file).
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// When the request body last moved. The response-head deadline runs from there, so a large
/// upload from a slow client is not cut off while it is still arriving.
#[derive(Debug)]
pub(crate) struct Progress {
    start: Instant,
    /// Milliseconds after `start` of the last frame (or end of stream).
    last_ms: AtomicU64,
}

impl Progress {
    pub(crate) fn new() -> Arc<Progress> {
        Arc::new(Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Notes that the body moved now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The last time the body moved (its creation when it never did).
    pub(crate) fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A request body toward the backend.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    /// No body (also what a replayed request carries).
    Empty,
    /// The client's body, streamed.
    Client {
        body: Incoming,
        progress: Arc<Progress>,
    },
    /// A body the front read whole first.
    Buffered {
        body: Buffered,
        progress: Arc<Progress>,
    },
}

impl ProxyBody {
    /// The client's body, or [`ProxyBody::Empty`] when it has none, so an empty request can be
    /// rebuilt and sent again.
    pub(crate) fn from_client(body: ClientBody, progress: &Arc<Progress>) -> ProxyBody {
        match body {
            ClientBody::Streamed(b) if b.is_end_stream() => ProxyBody::Empty,
            ClientBody::Buffered(b) if b.is_end_stream() => ProxyBody::Empty,
            ClientBody::Streamed(body) => ProxyBody::Client {
                body,
                progress: Arc::clone(progress),
            },
            ClientBody::Buffered(body) => ProxyBody::Buffered {
                body,
                progress: Arc::clone(progress),
            },
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let (polled, progress) = match self.get_mut() {
            ProxyBody::Empty => return Poll::Ready(None),
            ProxyBody::Client { body, progress } => (
                Pin::new(body).poll_frame(cx).map_err(BodyError::from),
                progress,
            ),
            ProxyBody::Buffered { body, progress } => (
                Pin::new(body).poll_frame(cx).map_err(BodyError::from),
                progress,
            ),
        };
        if matches!(polled, Poll::Ready(Some(Ok(_)) | None)) {
            progress.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Client { body, .. } => body.is_end_stream(),
            ProxyBody::Buffered { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Client { body, .. } => body.size_hint(),
            ProxyBody::Buffered { body, .. } => body.size_hint(),
        }
    }
}

/// A backend's answer body as the front gets it: hyper's own stream when it passes through
/// unbuffered, or what [`spool::pump`](crate::spool) reads ahead into a spool for a slow client.
#[derive(Debug)]
pub enum AnswerBody {
    /// Passed through as the backend sends it (server-sent events, `X-Accel-Buffering: no`,
    /// `--proxy-buffering off`, empty bodies).
    Direct(Incoming),
    /// Read ahead by a task of its own; `remaining` is the backend's `Content-Length` still to
    /// come, when it sent one (so the client's framing stays the same).
    Spooled {
        rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
        remaining: Option<u64>,
    },
}

impl AnswerBody {
    /// Reads `body` ahead through a spool with `up`'s limits, on a task of its own that ends when
    /// the answer is read and delivered, or when the client leaves (the body is dropped).
    pub(crate) fn spooled(body: Incoming, up: &crate::Upstreams) -> AnswerBody {
        use crate::spool::{pump, Spool};
        let remaining = body.size_hint().exact();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        up.spool_stats.count_buffered();
        let mut spool = Spool::new(Arc::clone(&up.spool_limits), Arc::clone(&up.spool_stats));
        tokio::spawn(async move {
            let mut src = IncomingSource(body);
            let mut sink = ChannelSink(tx.clone());
            if let Err(e) = pump(Bytes::new(), &mut src, &mut sink, &mut spool).await {
                // The client's connection is cut rather than given a short answer as whole.
                let _ = tx.send(Err(e)).await;
            }
        });
        AnswerBody::Spooled { rx, remaining }
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            AnswerBody::Direct(b) => Pin::new(b).poll_frame(cx).map_err(std::io::Error::other),
            AnswerBody::Spooled { rx, remaining } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    if let Some(r) = remaining {
                        *r = r.saturating_sub(b.len() as u64);
                    }
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if remaining.is_some_and(|r| r > 0) => {
                    Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "backend answer ended early",
                    ))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AnswerBody::Direct(b) => b.is_end_stream(),
            AnswerBody::Spooled { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AnswerBody::Direct(b) => b.size_hint(),
            AnswerBody::Spooled {
                remaining: Some(r), ..
            } => SizeHint::with_exact(*r),
            AnswerBody::Spooled { .. } => SizeHint::default(),
        }
    }
}

/// hyper's client body as a [`Source`](crate::spool::Source): data frames in order, trailers
/// dropped (nginx drops them too).
struct IncomingSource(Incoming);

impl crate::spool::Source for IncomingSource {
    async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        use http_body_util::BodyExt;
        loop {
            match self.0.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// The channel to an [`AnswerBody::Spooled`] as a [`Sink`](crate::spool::Sink).
struct ChannelSink(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl crate::spool::Sink for ChannelSink {
    async fn write(&mut self, out: &mut Bytes) -> std::io::Result<()> {
        let permit = self
            .0
            .reserve()
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        permit.send(Ok(std::mem::take(out)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_starts_at_creation_and_only_moves_forward() {
        let p = Progress::new();
        let created = p.last();
        std::thread::sleep(Duration::from_millis(5));
        p.touch();
        let moved = p.last();
        assert!(moved > created);
        assert!(moved <= Instant::now());
    }

    #[test]
    fn empty_body_is_exactly_empty() {
        let b = ProxyBody::Empty;
        assert!(b.is_end_stream());
        assert_eq!(b.size_hint().exact(), Some(0));
    }
}
