//! One request through kHTTPd's stages: checks on the head, the routing verdict (on the blocking
//! pool, since it stats files), then DataSending or Userspace, and the counters.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_LENGTH, HOST, LOCATION, SERVER};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::body::Body;
use crate::config::Config;
use crate::fs::RealFs;
use crate::pages;
use crate::route::{self, NoBackend, Route};
use crate::stats::{DaemonStats, RouteKind, Stage};
use crate::{directory, static_file};

/// What every request of one connection shares.
#[derive(Debug, Clone)]
pub struct ConnCtx {
    /// The configuration in force when the connection was accepted.
    pub config: Arc<Config>,
    /// This main daemon's counters.
    pub stats: Arc<DaemonStats>,
    /// The client's address.
    pub peer: SocketAddr,
}

/// The `Server` header of every response.
pub const SERVER_NAME: &str = "khttpd-front";

/// The hyper service: never fails; every problem becomes a status.
pub async fn handle(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<Body>, Infallible> {
    let (kind, mut resp) = respond(req, &ctx).await;
    let status = resp.status().as_u16();
    let len = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ctx.stats.count(kind, status, len);
    resp.headers_mut()
        .insert(SERVER, HeaderValue::from_static(SERVER_NAME));
    Ok(resp)
}

async fn respond(req: Request<Incoming>, ctx: &ConnCtx) -> (RouteKind, Response<Body>) {
    // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host is answered 400.
    if req.version() == Version::HTTP_11 && req.headers().get_all(HOST).iter().count() != 1 {
        return (
            RouteKind::Error,
            pages::error(
                StatusCode::BAD_REQUEST,
                "HTTP/1.1 requests need exactly one Host header.",
            ),
        );
    }
    let cfg = ctx.config.clone();
    let method = req.method().clone();
    let route = if method == Method::GET || method == Method::HEAD {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        let rcfg = cfg.clone();
        let m = method.clone();
        match tokio::task::spawn_blocking(move || {
            route::route(&m, &path, query.as_deref(), &rcfg, &RealFs)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => return (RouteKind::Error, internal()),
        }
    } else {
        Route::Backend(route::BackendReason::Method)
    };
    let headers = req.headers();
    match route {
        Route::Static(file) => {
            let guard = ctx.stats.enter(Stage::DataSending);
            let r = static_file::serve(&method, headers, file, &cfg).await;
            (RouteKind::Static, r.map(|b| b.with_stage(guard)))
        }
        Route::Listing(dir) => {
            let guard = ctx.stats.enter(Stage::DataSending);
            let r = directory::serve(&method, headers, dir, &cfg).await;
            (RouteKind::Static, r.map(|b| b.with_stage(guard)))
        }
        Route::Redirect(location) => (RouteKind::Static, redirect(&location)),
        Route::Reject(rej) => {
            let status = rej.status();
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::warn!(error = %rej, path = %req.uri().path(), "routing failed");
            }
            let detail = match &rej {
                route::Reject::BadPath(e) => bad_path_detail(e),
                route::Reject::Forbidden(why) => why,
                _ => pages::default_detail(status),
            };
            (RouteKind::Error, pages::error(status, detail))
        }
        Route::Backend(reason) => match Route::without_backend(reason) {
            NoBackend::MethodNotAllowed => (RouteKind::Error, pages::method_not_allowed()),
            NoBackend::Status(status, detail) => (RouteKind::Error, pages::error(status, detail)),
        },
    }
}

fn bad_path_detail(e: &crate::path::PathError) -> &'static str {
    use crate::path::PathError::*;
    match e {
        NotAbsolute => "The request path must start with /.",
        BadEscape => "The request path has a malformed percent-encoding.",
        Nul => "The request path contains a NUL byte.",
        DotDot => "The request path contains a .. segment.",
        Separator => "The request path contains an encoded slash or a backslash.",
    }
}

/// 308 keeps the method and body (RFC 9110 §15.4.9), unlike 301.
fn redirect(location: &str) -> Response<Body> {
    let mut r = pages::error(
        StatusCode::PERMANENT_REDIRECT,
        "The resource is a directory; follow the Location.",
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn internal() -> Response<Body> {
    pages::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        pages::default_detail(StatusCode::INTERNAL_SERVER_ERROR),
    )
}
