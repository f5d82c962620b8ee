//! The fast path's decision from one parsed head: a cached static answer (its head written here,
//! with the fields the full pipeline gives), a request the relay carries to the backend, a miss to
//! warm, or the full pipeline's business.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;

use crate::cache::compress;
use crate::cache::keys::FileKey;
use crate::cache::negotiate::Encoding;
use crate::conn::handler::{path_of, route_afresh, ConnCtx};
use crate::conn::wire::{end_head, field, status_line, MAX_FIELDS};
use crate::daemon::stats::RouteKind;
use crate::logging::log_line::LogRecord;
use crate::route::decide::{BackendReason, Route};
use crate::route::verify::Target;
use crate::sending::conditional::{self, Conditions, Precondition, Validators};
use crate::sending::head::{caching_fields, Caching};
use crate::sending::static_file;
use crate::userspace::relay::RelayPlan;

use super::send::{open_cached, open_version, Answer, COPY_BODY};

/// What to do with the bytes read so far.
pub(super) enum Decision {
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
pub(super) fn decide(
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
pub(super) struct Miss {
    target: String,
    accept_encoding: Option<String>,
    /// A HEAD: the cache is filled with the file, never with a compression nobody will read.
    head_only: bool,
}

/// Fills the cache for `miss` as the full pipeline would: a fresh verdict, the body read once, the
/// encoding compressed once. Verdicts expire every `--cache-revalidate`; without this, each expiry
/// would hand a keep-alive connection to hyper for good.
pub(super) async fn warm(miss: Miss, ctx: &ConnCtx, runtime: &crate::daemon::state::Runtime) {
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
        // With a backend, Apache's verdict decides (route::verify); a URL without one is relayed.
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
}
