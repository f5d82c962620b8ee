//! One request through kHTTPd's stages: checks on the head, the routing verdict (on the blocking
//! pool, since it stats files), then DataSending or Userspace, and the counters.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, HOST, LOCATION,
    REFERER, USER_AGENT, VARY,
};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use khttpd_bridge::Session;

use crate::config::Config;
use crate::daemon::state::Shared;
use crate::daemon::stats::{DaemonStats, RouteKind, Stage};
use crate::error::FrontError;
use crate::logging::finish::{self, Outcome};
use crate::logging::log_line::LogRecord;
use crate::pages;
use crate::route::decide::{self, BackendReason, Route};
use crate::route::fs::RealFs;
use crate::route::verify::Target;
use crate::sending::body::{Body, PendingLog};
use crate::sending::{directory, static_file};
use crate::userspace::gzip_proxied;

/// What every request of one connection shares.
pub(crate) struct ConnCtx {
    /// State shared with the management daemon (the configuration in force, the access log).
    pub shared: Arc<Shared>,
    /// This main daemon's counters.
    pub stats: Arc<DaemonStats>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address on this connection.
    pub local: SocketAddr,
    /// This main daemon's way to the backends, when there are any.
    pub bridge: Option<Arc<khttpd_bridge::Bridge>>,
    /// Whether the client came over TLS (HSTS, `X-Forwarded-Proto: https`).
    pub tls: bool,
    /// The connection's session with the backends, made at its first backend request: most
    /// connections never make one, and an idle connection should cost little (a session is
    /// 136 bytes inline).
    session: std::sync::OnceLock<Box<Session>>,
}

impl ConnCtx {
    pub(crate) fn new(
        shared: Arc<Shared>,
        stats: Arc<DaemonStats>,
        peer: SocketAddr,
        local: SocketAddr,
        bridge: Option<Arc<khttpd_bridge::Bridge>>,
        tls: bool,
    ) -> ConnCtx {
        ConnCtx {
            shared,
            stats,
            peer,
            local,
            bridge,
            tls,
            session: std::sync::OnceLock::new(),
        }
    }

    /// The way to the backends, when there are any.
    pub(crate) fn session(&self) -> Option<&Session> {
        let bridge = self.bridge.as_ref()?;
        Some(self.session.get_or_init(|| {
            Box::new(bridge.session(khttpd_bridge::ClientInfo {
                peer: self.peer,
                local: self.local,
                scheme: if self.tls { "https" } else { "http" },
            }))
        }))
    }

    /// Whether there are backends, without making a session.
    pub(crate) fn has_backend(&self) -> bool {
        self.bridge.is_some()
    }
}

impl std::fmt::Debug for ConnCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnCtx")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// The hyper service: never fails; every problem becomes a status.
pub(crate) async fn handle(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let log = &ctx.shared.access_log;
    // Fill the log line from the head now; the request itself moves on to its stage.
    let runtime = ctx.shared.current.load_full();
    let record = log
        .enabled()
        .then(|| log_record(&req, ctx.peer, &runtime.config));
    let head_only = req.method() == Method::HEAD;
    let (kind, mut resp) = respond(req, &ctx, &runtime.config, runtime.generation).await;
    if kind == RouteKind::Error {
        custom_page(&mut resp, &runtime.config);
    }
    if head_only {
        // HTTP/1.1 in hyper drops a HEAD answer's body itself, HTTP/2 does not (and a client
        // takes DATA on a HEAD stream as a protocol error): error pages and the like carry one.
        resp = resp.map(|_| Body::empty());
    }
    let status = resp.status().as_u16();
    // Counted when the head goes out, with the length it announces; logged when the body is done
    // (Body's drop), with the bytes sent.
    let announced = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let outcome = Outcome {
        upstream: resp.extensions().get::<khttpd_bridge::Upstream>().copied(),
        request_id: resp
            .extensions()
            .get::<SentId>()
            .map(|SentId(id)| id.clone()),
        ..Outcome::new(kind, status, announced)
    };
    finish::count(&ctx.stats, &outcome, started.elapsed());
    let h = resp.headers_mut();
    for (name, value) in crate::conn::wire::own_fields(&runtime.config, kind, ctx.tls) {
        h.insert(name, value);
    }
    if let Some(record) = record {
        let pending = PendingLog {
            record,
            log: log.clone(),
            started,
            outcome,
        };
        resp = resp.map(|b| b.with_log(pending));
    }
    Ok(resp)
}

/// The routing verdict for a GET or HEAD: from the cache while it is fresh (`--cache-revalidate`),
/// else decided on the blocking pool (it stats files) and remembered.
async fn routed(
    req: &Request<Incoming>,
    ctx: &ConnCtx,
    cfg: &Arc<Config>,
    generation: u64,
    use_cache: bool,
) -> Option<Arc<Route>> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if use_cache {
        if let Some(r) = ctx
            .shared
            .cache
            .get_fresh(generation, path_of(target), Instant::now())
        {
            return Some(r);
        }
    }
    route_afresh(req.method(), target, ctx, cfg, generation).await
}

/// With a backend, what the front would answer itself needs Apache's verdict first
/// (`route::verify`): a static file or listing without a positive, current one goes to the backend
/// as it came, and so does a directory redirect (Apache's mod_dir or rewrites decide where it
/// leads).
fn gate<B>(route: Arc<Route>, req: &Request<B>, ctx: &ConnCtx, cfg: &Arc<Config>) -> Arc<Route> {
    if !ctx.has_backend() {
        return route;
    }
    let target = match &*route {
        Route::Static(file) => Target::File(file),
        Route::Listing(dir) => Target::Listing(dir),
        Route::Redirect(_) => return Arc::new(Route::Backend(BackendReason::Unverified)),
        _ => return route,
    };
    // HTTP/2 names the host in the `:authority` pseudo-field, which hyper puts in the URI.
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if ctx.shared.verifier.gate(host, target, cfg) {
        route
    } else {
        Arc::new(Route::Backend(BackendReason::Unverified))
    }
}

/// The path of a request target, without its query: what routing depends on.
pub(crate) fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(p, _)| p)
}

/// Decides a GET or HEAD verdict on the blocking pool (it stats files) and remembers it for
/// `--cache-revalidate`. `target` is the path and query exactly as sent; the verdict is decided
/// and kept by path alone, so junk query strings cannot fill the cache (a redirect gets the
/// request's query when it is answered).
pub(crate) async fn route_afresh(
    method: &Method,
    target: &str,
    ctx: &ConnCtx,
    cfg: &Arc<Config>,
    generation: u64,
) -> Option<Arc<Route>> {
    let now = Instant::now();
    let path = path_of(target).to_owned();
    let (rcfg, m) = (cfg.clone(), method.clone());
    let r = tokio::task::spawn_blocking(move || decide::route(&m, &path, None, &rcfg, &RealFs))
        .await
        .ok()?;
    let r = Arc::new(r);
    ctx.shared
        .cache
        .put_fresh(generation, path_of(target), r.clone(), now);
    Some(r)
}

/// kHTTPd's Userspace stage: the request goes to the backend as it came, or, with none configured,
/// gets an error; a dynamic file is never served as source, whatever fails.
async fn userspace(
    req: Request<Incoming>,
    ctx: &ConnCtx,
    reason: BackendReason,
) -> (RouteKind, Response<Body>) {
    let Some(session) = ctx.session() else {
        let refused = FrontError::NoBackend(Route::without_backend(reason));
        // The reason is the operator's business (the log), not the visitor's: the page says only
        // what any server would.
        tracing::debug!(peer = %ctx.peer, reason = reason.as_str(), "{refused}");
        // A form posted to a site without a backend: its small body is read first, as for a 413.
        crate::userspace::upload::discard(req, &ctx.shared.config()).await;
        return (RouteKind::Error, refused.page());
    };
    // The backend (and the log) learn the request's id: the client's when usable, else a new one.
    let mut req = req;
    let id = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| crate::userspace::request_id::usable(v.as_bytes()))
        .map_or_else(crate::userspace::request_id::new, str::to_owned);
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(X_REQUEST_ID, v);
    }
    let accept_encoding = req
        .headers()
        .get(http::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let head_only = req.method() == Method::HEAD;
    // The body first, whole: no backend slot is taken while a slow client is still sending it.
    let cfg = ctx.shared.config();
    let req = match crate::userspace::upload::buffer(req, &cfg, &ctx.shared.uploads).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(peer = %ctx.peer, error = %e, "request body refused");
            return (RouteKind::Error, FrontError::from(e).page());
        }
    };
    let stage = ctx.stats.enter(Stage::Userspace);
    match session.forward(req).await {
        Ok(mut resp) => {
            resp.extensions_mut().insert(SentId(id));
            let gzip = gzip_wanted(&resp, accept_encoding.as_deref(), head_only, &cfg);
            if gzip {
                let h = resp.headers_mut();
                h.remove(CONTENT_LENGTH);
                if let Some(tag) = h.get(ETAG) {
                    if let Ok(weak) =
                        HeaderValue::from_bytes(&gzip_proxied::weakened(tag.as_bytes()))
                    {
                        h.insert(ETAG, weak);
                    }
                }
                h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                h.append(VARY, HeaderValue::from_static("Accept-Encoding"));
            }
            let body = |b| match gzip {
                true => Body::backend_gzip(b),
                false => Body::backend(b),
            };
            (RouteKind::Backend, resp.map(|b| body(b).with_stage(stage)))
        }
        Err(e) => {
            backend_failed(ctx, reason, &e);
            (RouteKind::Error, FrontError::from(e).page())
        }
    }
}

/// Whether a backend answer goes to the client gzip'd (see [`gzip_proxied`]): only answers read
/// ahead of the client (the bridge's spool), so a streamed one (server-sent events) stays as it is.
fn gzip_wanted(
    resp: &Response<khttpd_bridge::AnswerBody>,
    accept_encoding: Option<&str>,
    head_only: bool,
    cfg: &Config,
) -> bool {
    if !matches!(resp.body(), khttpd_bridge::AnswerBody::Spooled { .. }) {
        return false;
    }
    let mut a = gzip_proxied::AnswerHead {
        status: resp.status().as_u16(),
        head_only,
        content_length: resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        ..Default::default()
    };
    for (name, value) in resp.headers() {
        a.field(name.as_str().as_bytes(), value.as_bytes());
    }
    gzip_proxied::wanted(accept_encoding, &a, cfg.cache.compress_min)
}

/// Counts and logs a backend failure (both Userspace paths).
pub(crate) fn backend_failed(ctx: &ConnCtx, reason: BackendReason, e: &khttpd_bridge::BridgeError) {
    ctx.stats
        .backend_errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(peer = %ctx.peer, reason = reason.as_str(), kind = e.kind(), error = %e, "backend failed");
}

fn log_record(req: &Request<Incoming>, peer: SocketAddr, cfg: &Config) -> LogRecord {
    let text = |name| {
        req.headers()
            .get(name)
            .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    LogRecord {
        client: khttpd_bridge::forwarded::real_client(
            peer.ip(),
            req.headers()
                .get_all(khttpd_bridge::forwarded::X_FORWARDED_FOR)
                .iter()
                .map(HeaderValue::as_bytes),
            |ip| cfg.bridge.is_trusted(ip),
        ),
        time: SystemTime::now(),
        method: req.method().as_str().to_owned(),
        target: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().to_string(), |p| p.as_str().to_owned()),
        version: match req.version() {
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        },
        status: 0,
        bytes: 0,
        referer: text(REFERER),
        user_agent: text(USER_AGENT),
        duration: Duration::ZERO,
        route: RouteKind::Error.name(),
        host: req
            .headers()
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .map(str::to_owned),
        request_id: req
            .headers()
            .get(X_REQUEST_ID)
            .and_then(|v| crate::userspace::request_id::usable(v.as_bytes()))
            .map(str::to_owned),
        upstream: None,
        upstream_time: None,
    }
}

/// The request id field (see [`crate::userspace::request_id`]).
const X_REQUEST_ID: HeaderName = HeaderName::from_static(crate::userspace::request_id::FIELD);

/// The id a backend request went out with, handed from the Userspace stage to the log line.
#[derive(Debug, Clone)]
struct SentId(String);

async fn respond(
    req: Request<Incoming>,
    ctx: &ConnCtx,
    cfg: &Arc<Config>,
    generation: u64,
) -> (RouteKind, Response<Body>) {
    if let Some((status, detail)) = framing_error(req.version(), req.headers()) {
        return (RouteKind::Error, FrontError::Framing(status, detail).page());
    }
    if cfg.redirect_https && !ctx.tls {
        if let Some(location) = https_location(&req, ctx) {
            return (
                RouteKind::Static,
                redirect(
                    &location,
                    "This site is served over HTTPS; follow the Location.",
                ),
            );
        }
    }
    let cfg = cfg.clone();
    let method = req.method().clone();
    let route = if method == Method::GET || method == Method::HEAD {
        match routed(&req, ctx, &cfg, generation, true).await {
            Some(r) => r,
            None => return (RouteKind::Error, FrontError::Internal("routing").page()),
        }
    } else {
        Arc::new(Route::Backend(decide::BackendReason::Method))
    };
    let route = gate(route, &req, ctx, &cfg);
    answer_route(route, req, ctx, &cfg, Some(generation)).await
}

/// Answers a request by its route. `reroute`: the verdict came from the cache, so a file found
/// changed or gone is judged afresh (routing generation given) and answered by that verdict (the
/// backend's, a 404, the new version); judged afresh already, it is 503.
async fn answer_route(
    route: Arc<Route>,
    req: Request<Incoming>,
    ctx: &ConnCtx,
    cfg: &Arc<Config>,
    reroute: Option<u64>,
) -> (RouteKind, Response<Body>) {
    let cfg = cfg.clone();
    let method = req.method().clone();
    let headers = req.headers();
    // The verdict is shared with the cache; the rare routes that need it owned take a copy.
    match (*route).clone() {
        Route::Static(file) => {
            let guard = ctx.stats.enter(Stage::DataSending);
            let cache = &ctx.shared.cache;
            let served =
                static_file::serve(&method, req.uri().path(), headers, file, &cfg, cache).await;
            let served = match (served, reroute) {
                (Err(FrontError::Stale), Some(generation)) => {
                    drop(guard);
                    let again = Box::pin(routed(&req, ctx, &cfg, generation, false)).await;
                    return match again.map(|r| gate(r, &req, ctx, &cfg)) {
                        Some(route) => Box::pin(answer_route(route, req, ctx, &cfg, None)).await,
                        None => (RouteKind::Error, FrontError::Internal("routing").page()),
                    };
                }
                (served, _) => served,
            };
            let r = match served {
                Ok(r) => r,
                Err(e) => return (RouteKind::Error, e.page()),
            };
            (RouteKind::Static, r.map(|b| b.with_stage(guard)))
        }
        Route::Listing(dir) => {
            let guard = ctx.stats.enter(Stage::DataSending);
            let query = req.uri().query();
            let path = req.uri().path();
            let listing =
                directory::serve(&method, path, headers, query, dir, &cfg, &ctx.shared.cache);
            let r = Box::pin(listing).await;
            (RouteKind::Static, r.map(|b| b.with_stage(guard)))
        }
        Route::Redirect(location) => {
            let location = match req.uri().query() {
                Some(q) => format!("{location}?{q}"),
                None => location.clone(),
            };
            (
                RouteKind::Static,
                redirect(
                    &location,
                    "The resource is a directory; follow the Location.",
                ),
            )
        }
        Route::Reject(rej) => (RouteKind::Error, FrontError::from(rej).page()),
        // Boxed, as are the other rare branches: the state of an await is kept inline in this
        // future, which every request's task carries (and moves), so the backend's would make
        // each static answer's task several KiB larger (measured under HTTP/2).
        Route::Backend(reason) => Box::pin(userspace(req, ctx, reason)).await,
    }
}

/// Heads a backend could frame differently from us are refused before routing: an HTTP/1.1 request
/// without exactly one Host (RFC 9112 §3.2), and the framing `khttpd_bridge::h1::request_framing`
/// refuses (the same function the byte-level [`crate::conn::head_guard`] follows bodies with).
pub(crate) fn framing_error(version: Version, h: &HeaderMap) -> Option<(StatusCode, &'static str)> {
    if version == Version::HTTP_11 && h.get_all(HOST).iter().count() != 1 {
        return Some((
            StatusCode::BAD_REQUEST,
            "HTTP/1.1 requests need exactly one Host header.",
        ));
    }
    let fields = h.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    match khttpd_bridge::h1::request_framing(fields) {
        Ok(_) => None,
        Err(refused) => Some((
            StatusCode::from_u16(refused.status).unwrap_or(StatusCode::BAD_REQUEST),
            refused.why,
        )),
    }
}

/// The operator's page (`--error-page`) instead of the front's own, for an error the front made.
fn custom_page(resp: &mut Response<Body>, cfg: &Config) {
    let Some(page) = cfg.error_pages.get(&resp.status().as_u16()) else {
        return;
    };
    *resp.body_mut() = Body::full(page.clone());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(pages::ERROR_TYPE),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(page.len()));
}

/// Where `--redirect-https` sends a plain-HTTP request: the same host and target on the TLS
/// port. `None` for ACME challenges, which certificate authorities fetch over plain HTTP.
fn https_location<B>(req: &Request<B>, ctx: &ConnCtx) -> Option<String> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if target.starts_with("/.well-known/acme-challenge/") {
        return None;
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .map_or_else(|| ctx.local.ip().to_string(), str::to_owned);
    // The host without its port (an IPv6 literal keeps its brackets).
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name.to_owned()
        }
        _ => host,
    };
    let port = ctx
        .shared
        .tls_port
        .load(std::sync::atomic::Ordering::Relaxed);
    let path = if target.starts_with('/') { target } else { "/" };
    Some(match port {
        443 | 0 => format!("https://{name}{path}"),
        p => format!("https://{name}:{p}{path}"),
    })
}

/// 308 keeps the method and body (RFC 9110 §15.4.9), unlike 301.
fn redirect(location: &str, detail: &'static str) -> Response<Body> {
    let mut r = pages::error(StatusCode::PERMANENT_REDIRECT, detail);
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(version: Version, headers: &[(&str, &str)]) -> Option<u16> {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        framing_error(version, &h).map(|(s, _)| s.as_u16())
    }

    #[test]
    fn framing_table() {
        let v11 = Version::HTTP_11;
        assert_eq!(check(v11, &[("host", "a")]), None);
        assert_eq!(check(v11, &[]), Some(400));
        assert_eq!(check(v11, &[("host", "a"), ("host", "b")]), Some(400));
        assert_eq!(check(Version::HTTP_10, &[]), None);
        assert_eq!(
            check(
                v11,
                &[
                    ("host", "a"),
                    ("content-length", "3"),
                    ("transfer-encoding", "chunked")
                ]
            ),
            Some(400)
        );
        assert_eq!(
            check(
                v11,
                &[
                    ("host", "a"),
                    ("content-length", "3"),
                    ("content-length", "3")
                ]
            ),
            Some(400)
        );
        assert_eq!(
            check(
                v11,
                &[("host", "a"), ("transfer-encoding", "gzip, chunked")]
            ),
            Some(501)
        );
        assert_eq!(
            check(
                v11,
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked")
                ]
            ),
            Some(501)
        );
        assert_eq!(
            check(v11, &[("host", "a"), ("transfer-encoding", "Chunked")]),
            None
        );
        assert_eq!(check(v11, &[("host", "a"), ("content-length", "10")]), None);
    }
}
