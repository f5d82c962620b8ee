//! DataSending for a static file: representation, preconditions, ranges, then the body.
//!
//! Files up to `--cache-max-file` are answered from the [`ContentCache`]: the identity body and its
//! br/zstd/gzip variants are read or compressed once per file version and kept with their header
//! values, so a hit touches neither the disk nor the compressor. The representation is chosen first
//! (RFC 9110 §12.5.3), because each has its own strong ETag (§8.8.3) that preconditions compare
//! against; ranges are always cut from the identity representation. Larger files stream from disk.
//!
//! The file is opened with `O_NOFOLLOW | O_NONBLOCK` on the blocking pool and checked with `fstat`:
//! a file swapped for a symlink, a FIFO or something with execute bits is never served, and a file
//! that is no longer the version routing saw makes the request route again ([`FrontError::Stale`]).

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_ENCODING,
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::{Method, Response, StatusCode};

use crate::cache::compress;
use crate::cache::keys::FileKey;
use crate::cache::negotiate::Encoding;
use crate::cache::representation::{FileHead, Representation};
use crate::cache::store::ContentCache;
use crate::config::Config;
use crate::error::{stale_file, FrontError};
use crate::route::decide::{Route, StaticFile};
use crate::route::fs::{Kind, Meta};
use crate::sending::body::{read_exact_at, Body, Segment};
use crate::sending::conditional::{self, Conditions, Precondition, Validators};
use crate::sending::head::{insert_caching_fields, Caching};
use crate::sending::range::{self, ByteRange, RangeOutcome};

/// The cache as the front uses it: bodies, variants, listings and routing verdicts (shared, so a
/// hit costs a reference count, not a copy of the paths).
pub(crate) type Cache = ContentCache<Arc<Route>>;

/// The strong validator of a file version: inode, size and mtime with nanoseconds, so a file
/// rewritten within the same second still gets a new tag.
pub(crate) fn etag(meta: &Meta) -> String {
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
pub(crate) fn last_modified(meta: &Meta) -> String {
    httpdate::fmt_http_date(clamp_date(meta.mtime))
}

// httpdate cannot format dates before 1970 or after 9999; a file's mtime can be anything.
fn clamp_date(t: SystemTime) -> SystemTime {
    let max = UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
    t.clamp(UNIX_EPOCH, max)
}

/// Joins every value of a list header (If-Match and If-None-Match may come on several lines).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut it = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = it.next()?;
    let mut s = first.to_owned();
    for v in it {
        s.push_str(", ");
        s.push_str(v);
    }
    Some(s)
}

fn one<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The headers one representation carries on 200, 206 and 304 alike.
struct Head {
    etag: HeaderValue,
    last_modified: HeaderValue,
    content_type: HeaderValue,
    encoding: Option<HeaderValue>,
    /// The response varies with Accept-Encoding (RFC 9110 §12.5.5), identity answers included.
    vary: bool,
}

impl Head {
    /// The caching fields, as the fast path writes them too.
    fn caching(&self) -> Caching<'_> {
        Caching {
            etag: Some(&self.etag),
            last_modified: Some(&self.last_modified),
            vary: self.vary.then_some("Accept-Encoding"),
        }
    }
}

/// The body source: bytes in memory (cached) or the file on disk (streamed).
enum Source {
    Memory(Bytes),
    Disk { path: PathBuf, meta: Meta },
}

/// Answers a GET or HEAD for a routed static file; `path` is the request's path, which the
/// operator's header rules match.
pub(crate) async fn serve(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    file: StaticFile,
    cfg: &Arc<Config>,
    cache: &Arc<Cache>,
) -> Result<Response<Body>, FrontError> {
    let len = file.meta.len;
    let base_tag = etag(&file.meta);
    let lm = last_modified(&file.meta);
    let ranged = *method == Method::GET && len > 0 && headers.contains_key(RANGE);
    let compressible =
        compress::worth_compressing(file.mime.compressible, len, cache.config().compress_min);

    let (head, source) = if len <= cache.config().max_file {
        let accept = joined(headers, &ACCEPT_ENCODING);
        // A HEAD sends no body, so it never starts a compression (a HEAD with `br` for a 2 MB
        // file would cost seconds of CPU for nothing): it gets a variant already made, else the
        // file as it is.
        let work = if *method == Method::HEAD {
            Negotiate::CachedOnly
        } else {
            Negotiate::Compress
        };
        let rep = match representation(
            &file,
            accept.as_deref(),
            if compressible && !ranged {
                work
            } else {
                Negotiate::No
            },
            cfg,
            cache,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return Err(e.into()),
        };
        (head_of(&rep, compressible), Source::Memory(rep.body))
    } else {
        let head = Head {
            etag: value(&base_tag),
            last_modified: value(&lm),
            content_type: value(&file.mime.content_type),
            encoding: None,
            vary: compressible,
        };
        (
            head,
            Source::Disk {
                path: file.path.clone(),
                meta: file.meta,
            },
        )
    };

    let if_match = joined(headers, &IF_MATCH);
    let if_none_match = joined(headers, &IF_NONE_MATCH);
    let conds = Conditions {
        if_match: if_match.as_deref(),
        if_none_match: if_none_match.as_deref(),
        if_modified_since: one(headers, &IF_MODIFIED_SINCE),
        if_unmodified_since: one(headers, &IF_UNMODIFIED_SINCE),
    };
    let tag = head.etag.to_str().unwrap_or_default();
    let validators = Validators {
        etag: tag,
        last_modified: file.meta.mtime,
    };
    let safe = *method == Method::GET || *method == Method::HEAD;
    match conditional::evaluate(&conds, &validators, safe) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            // RFC 9110 §15.4.5: a 304 carries the validators and caching headers a 200 would have.
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            insert_caching_fields(r.headers_mut(), &head.caching(), cfg, path);
            return Ok(r);
        }
        // The file was the right answer; the client's conditions were not: still route `static`.
        Precondition::Failed => return Ok(FrontError::PreconditionFailed.page()),
    }

    // RFC 9110 §14.2: Range is defined for GET only; HEAD answers as a plain GET would. An empty
    // file has no byte to select, so it is simply served whole.
    let body_len = match &source {
        Source::Memory(b) => b.len() as u64,
        Source::Disk { meta, .. } => meta.len,
    };
    let outcome = match one(headers, &RANGE) {
        Some(r) if ranged => {
            let if_range_ok = one(headers, &IF_RANGE)
                .is_none_or(|ir| range::if_range_matches(ir, tag, file.meta.mtime));
            if if_range_ok {
                range::evaluate(r, body_len, cfg.max_ranges)
            } else {
                RangeOutcome::Full
            }
        }
        _ => RangeOutcome::Full,
    };

    let mut r = Response::new(Body::empty());
    let plan = match outcome {
        RangeOutcome::Full => {
            *r.status_mut() = StatusCode::OK;
            r.headers_mut()
                .insert(CONTENT_TYPE, head.content_type.clone());
            vec![Segment::File {
                offset: 0,
                len: body_len,
            }]
        }
        RangeOutcome::Partial(ranges) if ranges.len() == 1 => {
            let one = ranges[0];
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, head.content_type.clone());
            h.insert(CONTENT_RANGE, value(&one.content_range(body_len)));
            vec![Segment::File {
                offset: one.start,
                len: one.len(),
            }]
        }
        RangeOutcome::Partial(ranges) => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            multipart_plan(&mut r, &ranges, body_len, &file.mime.content_type)
        }
        RangeOutcome::Unsatisfiable => {
            return Ok(FrontError::RangeNotSatisfiable(body_len).page());
        }
    };
    let total: u64 = plan
        .iter()
        .map(|s| match s {
            Segment::Bytes(b) => b.len() as u64,
            Segment::File { len, .. } => *len,
        })
        .sum();
    {
        let h = r.headers_mut();
        h.insert(CONTENT_LENGTH, HeaderValue::from(total));
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(enc) = &head.encoding {
            h.insert(CONTENT_ENCODING, enc.clone());
        }
        insert_caching_fields(h, &head.caching(), cfg, path);
    }
    if *method == Method::HEAD {
        return Ok(r);
    }
    let body = match source {
        Source::Memory(bytes) => Body::full(assemble(&bytes, &plan)),
        Source::Disk { path, meta } => {
            let f = open_for_streaming(path, meta, cfg).await?;
            Body::stream(Arc::new(f), plan, cfg.chunk_size)
        }
    };
    *r.body_mut() = body;
    Ok(r)
}

/// How far [`representation`] may go for a compressed variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negotiate {
    /// The file as it is (not worth compressing, or a Range).
    No,
    /// A variant the cache already holds, else the file as it is: no compression is started.
    CachedOnly,
    /// Compress (or read a precompressed sibling) if the chosen variant is missing.
    Compress,
}

/// The cached representation of a small file for an Accept-Encoding value (identity unless
/// `negotiate` allows a variant): read once per file version, each encoding compressed (or taken
/// from a sibling) once. A file that is no longer the routed version is an error that
/// [`FrontError`] takes for [`FrontError::Stale`].
pub(crate) async fn representation(
    file: &StaticFile,
    accept_encoding: Option<&str>,
    negotiate: Negotiate,
    cfg: &Config,
    cache: &Arc<Cache>,
) -> io::Result<Representation> {
    let base_tag = etag(&file.meta);
    let lm = last_modified(&file.meta);
    let key = FileKey::of(&file.meta);
    let fh = FileHead {
        etag: &base_tag,
        last_modified: &lm,
        content_type: &file.mime.content_type,
    };
    let (path, meta, req, forbid) = (
        file.path.clone(),
        file.meta,
        cfg.perm_required,
        cfg.forbidden_bits(),
    );
    let load = move || {
        let f = open_checked(&path, &meta, req, forbid)?;
        read_exact_at(&f, 0, meta.len as usize)
    };
    let identity = cache.identity(&key, &fh, load).await?;
    match negotiate {
        Negotiate::No => return Ok(identity),
        Negotiate::CachedOnly => {
            return Ok(cache
                .select_cached(&key, accept_encoding, &Encoding::COMPRESSED, &identity)
                .unwrap_or(identity))
        }
        Negotiate::Compress => {}
    }
    let sib = Sibling {
        path: file.path.clone(),
        root: cfg.root.clone(),
        mtime: file.meta.mtime,
        perm_required: cfg.perm_required,
        perm_forbid: cfg.forbidden_bits(),
    };
    Ok(cache
        .select(
            &key,
            accept_encoding,
            &Encoding::COMPRESSED,
            &identity,
            move |enc| sib.check(enc),
        )
        .await)
}

fn head_of(rep: &Representation, vary: bool) -> Head {
    Head {
        etag: rep.etag.clone(),
        last_modified: rep.last_modified.clone(),
        content_type: rep.content_type.clone(),
        encoding: rep.content_encoding(),
        vary,
    }
}

/// A header value from our own formatting (always valid; an empty value if not).
fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The multipart/byteranges framing around the ranges (RFC 9110 §14.6).
fn multipart_plan(
    r: &mut Response<Body>,
    ranges: &[ByteRange],
    len: u64,
    content_type: &str,
) -> Vec<Segment> {
    let boundary = boundary();
    let mp = range::multipart(ranges, len, content_type, &boundary);
    r.headers_mut().insert(
        CONTENT_TYPE,
        value(&range::multipart_content_type(&boundary)),
    );
    let mut segs = Vec::with_capacity(mp.parts.len() * 2 + 1);
    for (part_head, rr) in mp.parts {
        segs.push(Segment::Bytes(Bytes::from(part_head)));
        segs.push(Segment::File {
            offset: rr.start,
            len: rr.len(),
        });
    }
    segs.push(Segment::Bytes(Bytes::from(mp.trailer)));
    segs
}

/// A body from memory following `plan`: the whole thing is a cheap clone, a slice is a cheap slice.
fn assemble(bytes: &Bytes, plan: &[Segment]) -> Bytes {
    match plan {
        [Segment::File { offset, len }] => bytes.slice(*offset as usize..(*offset + *len) as usize),
        _ => {
            let mut out = BytesMut::new();
            for s in plan {
                match s {
                    Segment::Bytes(b) => out.extend_from_slice(b),
                    Segment::File { offset, len } => {
                        out.extend_from_slice(&bytes[*offset as usize..(*offset + *len) as usize])
                    }
                }
            }
            out.freeze()
        }
    }
}

async fn open_for_streaming(path: PathBuf, meta: Meta, cfg: &Config) -> io::Result<File> {
    let (req, forbid) = (cfg.perm_required, cfg.forbidden_bits());
    match tokio::task::spawn_blocking(move || open_checked(&path, &meta, req, forbid)).await {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(e)),
    }
}

/// Opens the routed file without following a symlink or blocking on a FIFO, and checks it is still
/// the servable regular file routing saw.
pub(crate) fn open_checked(
    path: &Path,
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
    if (now.dev, now.ino, now.len, now.mtime)
        != (expected.dev, expected.ino, expected.len, expected.mtime)
    {
        return Err(stale_file());
    }
    Ok(f)
}

/// Precompressed siblings (`app.js.br`, `.zst`, `.gz`): used when regular, inside the root (after
/// symlinks), servable by the permission rules, and not older than the file.
#[derive(Debug, Clone)]
struct Sibling {
    path: PathBuf,
    root: PathBuf,
    mtime: SystemTime,
    perm_required: u32,
    perm_forbid: u32,
}

impl Sibling {
    /// Blocking; runs on the blocking pool only when a variant is missing from the cache.
    fn check(&self, enc: Encoding) -> Option<(PathBuf, u64)> {
        let mut name = self.path.clone().into_os_string();
        name.push(enc.sibling_ext()?);
        let real = std::fs::canonicalize(PathBuf::from(name)).ok()?;
        if !real.starts_with(&self.root) {
            return None;
        }
        let m = Meta::from_std(&std::fs::metadata(&real).ok()?);
        let ok = m.kind == Kind::File
            && m.mode & self.perm_required != 0
            && m.mode & self.perm_forbid == 0
            && m.mtime >= self.mtime;
        ok.then_some((real, m.len))
    }
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
