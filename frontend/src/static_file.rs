//! DataSending for a static file: validators, preconditions, ranges, then the body.
//!
//! Preconditions are decided from the metadata routing already read, so a 304 never opens the file.
//! The file is opened with `O_NOFOLLOW | O_NONBLOCK` on the blocking pool and checked again with
//! `fstat`: if it was swapped for a symlink, a FIFO or a file with execute bits after routing, it is
//! not served.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE,
    LAST_MODIFIED, RANGE,
};
use http::{Method, Response, StatusCode};

use crate::body::{read_exact_at, Body, Segment};
use crate::conditional::{self, Conditions, Precondition, Validators};
use crate::config::Config;
use crate::fs::{Kind, Meta};
use crate::pages;
use crate::range::{self, RangeOutcome};
use crate::route::StaticFile;

/// The strong validator of a file version: inode, size and mtime with nanoseconds, so a file
/// rewritten within the same second still gets a new tag.
pub fn etag(meta: &Meta) -> String {
    let d = meta.mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "\"{:x}-{:x}-{:x}.{:x}\"",
        meta.ino,
        meta.len,
        d.as_secs(),
        d.subsec_nanos()
    )
}

/// `Last-Modified` value (IMF-fixdate).
pub fn last_modified(meta: &Meta) -> String {
    httpdate::fmt_http_date(clamp_date(meta.mtime))
}

// httpdate cannot format dates before 1970 or after 9999; a file's mtime can be anything.
fn clamp_date(t: SystemTime) -> SystemTime {
    let max = UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
    t.clamp(UNIX_EPOCH, max)
}

/// Joins every value of a list header (If-Match and If-None-Match may come on several lines).
fn joined(headers: &HeaderMap, name: &http::header::HeaderName) -> Option<String> {
    let mut it = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = it.next()?;
    let mut s = first.to_owned();
    for v in it {
        s.push_str(", ");
        s.push_str(v);
    }
    Some(s)
}

fn one<'a>(headers: &'a HeaderMap, name: &http::header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Headers shared by 200, 206 and 304 answers for one file version.
fn validator_headers(h: &mut HeaderMap, tag: &str, lm: &str, cfg: &Config) {
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(lm) {
        h.insert(LAST_MODIFIED, v);
    }
    if let Some(cc) = cfg
        .cache_control
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert(CACHE_CONTROL, cc);
    }
}

/// Answers a GET or HEAD for a routed static file.
pub async fn serve(
    method: &Method,
    headers: &HeaderMap,
    file: StaticFile,
    cfg: &Arc<Config>,
) -> Response<Body> {
    let tag = etag(&file.meta);
    let lm = last_modified(&file.meta);
    let safe = *method == Method::GET || *method == Method::HEAD;

    let if_match = joined(headers, &IF_MATCH);
    let if_none_match = joined(headers, &IF_NONE_MATCH);
    let conds = Conditions {
        if_match: if_match.as_deref(),
        if_none_match: if_none_match.as_deref(),
        if_modified_since: one(headers, &IF_MODIFIED_SINCE),
        if_unmodified_since: one(headers, &IF_UNMODIFIED_SINCE),
    };
    let validators = Validators {
        etag: &tag,
        last_modified: file.meta.mtime,
    };
    match conditional::evaluate(&conds, &validators, safe) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            // RFC 9110 §15.4.5: a 304 carries the validators and caching headers a 200 would have.
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            validator_headers(r.headers_mut(), &tag, &lm, cfg);
            return r;
        }
        Precondition::Failed => {
            return pages::error(
                StatusCode::PRECONDITION_FAILED,
                pages::default_detail(StatusCode::PRECONDITION_FAILED),
            )
        }
    }

    let len = file.meta.len;
    // RFC 9110 §14.2: Range is defined for GET only; HEAD answers as a plain GET would. An empty
    // file has no byte to select, so it is simply served whole.
    let outcome = match one(headers, &RANGE) {
        Some(r) if *method == Method::GET && len > 0 => {
            let if_range_ok = one(headers, &IF_RANGE)
                .is_none_or(|ir| range::if_range_matches(ir, &tag, file.meta.mtime));
            if if_range_ok {
                range::evaluate(r, len, cfg.max_ranges)
            } else {
                RangeOutcome::Full
            }
        }
        _ => RangeOutcome::Full,
    };

    let (status, segments, body_len, content_type, content_range) = match outcome {
        RangeOutcome::Full => (
            StatusCode::OK,
            vec![Segment::File { offset: 0, len }],
            len,
            file.mime.content_type.clone(),
            None,
        ),
        RangeOutcome::Partial(ranges) if ranges.len() == 1 => {
            let r = ranges[0];
            (
                StatusCode::PARTIAL_CONTENT,
                vec![Segment::File {
                    offset: r.start,
                    len: r.len(),
                }],
                r.len(),
                file.mime.content_type.clone(),
                Some(r.content_range(len)),
            )
        }
        RangeOutcome::Partial(ranges) => {
            let boundary = boundary();
            let mp = range::multipart(&ranges, len, &file.mime.content_type, &boundary);
            let mut segs = Vec::with_capacity(mp.parts.len() * 2 + 1);
            for (head, r) in mp.parts {
                segs.push(Segment::Bytes(Bytes::from(head)));
                segs.push(Segment::File {
                    offset: r.start,
                    len: r.len(),
                });
            }
            segs.push(Segment::Bytes(Bytes::from(mp.trailer)));
            (
                StatusCode::PARTIAL_CONTENT,
                segs,
                mp.content_length,
                range::multipart_content_type(&boundary),
                None,
            )
        }
        RangeOutcome::Unsatisfiable => {
            let mut r = pages::error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                pages::default_detail(StatusCode::RANGE_NOT_SATISFIABLE),
            );
            if let Ok(v) = HeaderValue::from_str(&range::unsatisfied_content_range(len)) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            return r;
        }
    };

    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    {
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            h.insert(CONTENT_TYPE, v);
        }
        h.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(cr) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
            h.insert(CONTENT_RANGE, cr);
        }
        validator_headers(h, &tag, &lm, cfg);
    }
    if *method == Method::HEAD {
        return r;
    }

    let expected = file.meta;
    let path = file.path.clone();
    let chunk = cfg.chunk_size;
    // Small answers are read in the same trip to the blocking pool as the open.
    let whole = match segments.as_slice() {
        [Segment::File { offset, len }] if *len as usize <= chunk => Some((*offset, *len as usize)),
        _ => None,
    };
    let (perm_required, perm_forbid) = (cfg.perm_required, cfg.perm_forbid);
    let opened = tokio::task::spawn_blocking(move || -> io::Result<(File, Option<Bytes>)> {
        let f = open_checked(&path, &expected, perm_required, perm_forbid)?;
        let data = match whole {
            Some((offset, n)) => Some(read_exact_at(&f, offset, n)?),
            None => None,
        };
        Ok((f, data))
    })
    .await;
    let body = match opened {
        Ok(Ok((_, Some(b)))) => Body::full(b),
        Ok(Ok((f, None))) => Body::stream(Arc::new(f), segments, chunk),
        Ok(Err(e)) => return io_error_page(&e),
        Err(_) => return internal_error(),
    };
    *r.body_mut() = body;
    r
}

fn internal_error() -> Response<Body> {
    pages::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        pages::default_detail(StatusCode::INTERNAL_SERVER_ERROR),
    )
}

/// Opens the routed file without following a symlink or blocking on a FIFO, and checks it is still
/// a servable regular file. A different inode (replaced since routing) is served only if it passes
/// the same checks; the validators already sent then may be stale for one request, never unsafe.
fn open_checked(
    path: &std::path::Path,
    expected: &Meta,
    perm_required: u32,
    perm_forbid: u32,
) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let now = Meta::from_std(&f.metadata()?);
    if now.kind != Kind::File || now.mode & perm_required == 0 || now.mode & perm_forbid != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "file changed into something not servable",
        ));
    }
    if now.len != expected.len {
        return Err(io::Error::other("file changed size while being opened"));
    }
    Ok(f)
}

/// File-system errors become statuses in one place: gone → 404, refused → 403, the rest → 500.
pub fn io_error_page(e: &io::Error) -> Response<Body> {
    let status = match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => StatusCode::NOT_FOUND,
        io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => {
            tracing::warn!(error = %e, "file system error while serving a static file");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    pages::error(status, pages::default_detail(status))
}

/// A multipart boundary unlikely to occur in any file: 64 bits from a per-process random hasher and
/// a counter.
fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = STATE.get_or_init(RandomState::new).hash_one(n);
    format!("khttpd{h:016x}")
}
