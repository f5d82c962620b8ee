//! The request body as sent to the backend: the client's own stream, passed through chunk by
//! chunk (hyper applies back-pressure both ways), noting when the last byte went out.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
}

impl ProxyBody {
    /// The client's body, or [`ProxyBody::Empty`] when it has none, so an empty request can be
    /// rebuilt and sent again.
    pub(crate) fn from_client(body: Incoming, progress: &Arc<Progress>) -> ProxyBody {
        if body.is_end_stream() {
            ProxyBody::Empty
        } else {
            ProxyBody::Client {
                body,
                progress: Arc::clone(progress),
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Client { body, progress } => {
                let polled = Pin::new(body).poll_frame(cx);
                if matches!(polled, Poll::Ready(Some(Ok(_)) | None)) {
                    progress.touch();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Client { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Client { body, .. } => body.size_hint(),
        }
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
