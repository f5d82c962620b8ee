//! Request bodies read whole before the backend is asked (nginx's default `proxy_request_buffering
//! on`): a slow upload holds a descriptor and a little memory of the front's, never a backend slot
//! or an Apache worker. Up to `--body-buffer` in memory, beyond in an unlinked temporary file in
//! `--temp-dir`; more than `--max-body-size` is refused with 413. Upgrades (WebSocket) stream.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use khttpd_bridge::{Buffered, ClientBody};
use serde::Serialize;

use crate::config::Config;
use crate::sending::body::{Body, Segment};

/// Why a body was not taken, with the status it is answered with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// Over `--max-body-size` (413).
    #[error("request body larger than {0} bytes (--max-body-size)")]
    TooLarge(u64),
    /// The client stalled past `--body-timeout` or broke off (400: the request is incomplete).
    #[error("request body incomplete: {0}")]
    Client(String),
    /// The temporary file could not be written (500).
    #[error("temporary file for a request body: {0}")]
    Spool(std::io::Error),
}

impl UploadError {
    /// The status the client gets.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Client(_) => StatusCode::BAD_REQUEST,
            UploadError::Spool(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Counters for `khttpd-ctl status`.
#[derive(Debug, Default)]
pub(crate) struct UploadStats {
    buffered: AtomicU64,
    spooled: AtomicU64,
    spooling: AtomicU64,
    too_large: AtomicU64,
}

/// A snapshot of [`UploadStats`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UploadCounts {
    /// Request bodies read whole in memory.
    pub buffered: u64,
    /// Request bodies that went to a temporary file.
    pub spooled: u64,
    /// Temporary files open now (each already unlinked).
    pub temp_files: u64,
    /// Bodies refused with 413.
    pub too_large: u64,
}

impl UploadStats {
    /// The counters now.
    pub(crate) fn counts(&self) -> UploadCounts {
        UploadCounts {
            buffered: self.buffered.load(Ordering::Relaxed),
            spooled: self.spooled.load(Ordering::Relaxed),
            temp_files: self.spooling.load(Ordering::Relaxed),
            too_large: self.too_large.load(Ordering::Relaxed),
        }
    }
}

/// An open temporary file, counted while it lives.
struct Spool {
    file: std::fs::File,
    stats: Arc<UploadStats>,
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.stats.spooling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Most of a refused HTTP/2 body read and dropped before the refusal (413, or 405 and the like
/// without a backend) goes out.
///
/// An answer sent while the body is still coming ends the stream with RST_STREAM(NO_ERROR), as
/// RFC 9113 §8.1 allows, but clients such as curl 7.88 may take that reset for a failure and
/// lose the answer (seen in the suite: `curl: (92)`) when it crosses their last DATA frame. A
/// small remainder is read first, as nginx discards a refused body; a large one still gets the
/// answer at once, so a refused upload never costs more than this.
const DRAIN_MAX: u64 = 64 << 10;

/// Reads and drops up to `left` more bytes of `body`, within the body timeout.
async fn drain(mut body: Incoming, mut left: u64, cfg: &Config) {
    let _ = tokio::time::timeout(cfg.body_timeout, async {
        while left > 0 {
            match body.frame().await {
                Some(Ok(frame)) => {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    left = left.saturating_sub(n);
                }
                _ => return,
            }
        }
    })
    .await;
}

/// Whether a refused body is read and dropped before the answer (see [`DRAIN_MAX`]): only over
/// HTTP/2, where the reset is what clients trip on (HTTP/1.1 closes or reads on), and not when the
/// client waits for 100 Continue before sending (the drain would only wait).
fn drains(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_2 && !req.headers().contains_key(http::header::EXPECT)
}

/// The Content-Length a request declares, if it is a number.
fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads and drops the body of a request refused before its body was read, when that is cheap
/// (HTTP/2, at most [`DRAIN_MAX`] bytes, within the body timeout), so the refusal reaches clients
/// that would take the stream's reset for a failure.
pub(crate) async fn discard(req: Request<Incoming>, cfg: &Config) {
    use http_body::Body as _;
    if !drains(&req) || req.body().is_end_stream() {
        return;
    }
    if declared_length(&req).is_some_and(|n| n > DRAIN_MAX) {
        return;
    }
    drain(req.into_body(), DRAIN_MAX, cfg).await;
}

/// Reads the body of `req` whole (unless it has none, or asks for an upgrade) and returns the
/// request with a body the bridge sends at the backend's pace, framed by Content-Length.
pub(crate) async fn buffer(
    req: Request<Incoming>,
    cfg: &Config,
    stats: &Arc<UploadStats>,
) -> Result<Request<ClientBody>, UploadError> {
    use http_body::Body as _;
    let upgrade = req.headers().contains_key(UPGRADE);
    if upgrade || req.body().is_end_stream() {
        return Ok(req.map(ClientBody::from));
    }
    if declared_length(&req).is_some_and(|n| n > cfg.max_body_size) {
        stats.too_large.fetch_add(1, Ordering::Relaxed);
        discard(req, cfg).await;
        return Err(UploadError::TooLarge(cfg.max_body_size));
    }
    let drain_refused = drains(&req);
    let (mut parts, mut body) = req.into_parts();
    let mut memory = BytesMut::new();
    let mut spool: Option<Spool> = None;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UploadError::Client(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            // Trailers are not passed on (nginx drops them too).
            continue;
        };
        total += data.len() as u64;
        if total > cfg.max_body_size {
            stats.too_large.fetch_add(1, Ordering::Relaxed);
            if drain_refused {
                drain(body, DRAIN_MAX.saturating_sub(total), cfg).await;
            }
            return Err(UploadError::TooLarge(cfg.max_body_size));
        }
        if spool.is_none() && total > cfg.body_buffer {
            let file = tempfile::tempfile_in(&cfg.temp_dir).map_err(UploadError::Spool)?;
            stats.spooling.fetch_add(1, Ordering::Relaxed);
            spool = Some(Spool {
                file,
                stats: Arc::clone(stats),
            });
        }
        match spool.take() {
            Some(mut s) => {
                // Blocking writes go to the blocking pool, never a main daemon's thread.
                let pending = memory.split().freeze();
                let back = tokio::task::spawn_blocking(move || {
                    s.file.write_all(&pending)?;
                    s.file.write_all(&data)?;
                    Ok::<Spool, std::io::Error>(s)
                })
                .await
                .map_err(|e| UploadError::Spool(std::io::Error::other(e)))?
                .map_err(UploadError::Spool)?;
                spool = Some(back);
            }
            None => memory.extend_from_slice(&data),
        }
    }
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(total));
    let body: Buffered = match spool {
        None => {
            stats.buffered.fetch_add(1, Ordering::Relaxed);
            Full::new(memory.freeze())
                .map_err(|never| match never {})
                .boxed_unsync()
        }
        Some(s) => {
            stats.spooled.fetch_add(1, Ordering::Relaxed);
            let file = Arc::new(s.file.try_clone().map_err(UploadError::Spool)?);
            // The spool's counter lives as long as the stream reading the file.
            let stream = Body::stream(
                file,
                vec![Segment::File {
                    offset: 0,
                    len: total,
                }],
                64 << 10,
            );
            KeepAlive {
                body: stream,
                _spool: s,
            }
            .boxed_unsync()
        }
    };
    Ok(Request::from_parts(parts, ClientBody::Buffered(body)))
}

/// A body that keeps something alive until it is dropped.
struct KeepAlive<T> {
    body: Body,
    _spool: T,
}

impl<T: Unpin> http_body::Body for KeepAlive<T> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
