//! The HTTP/1.1 pieces both encoders of the front's answers share: the raw bytes of the fast path,
//! the relay and the busy and error pages, and the `http::Response` hyper writes (HTTP/1.1 and
//! HTTP/2). The raw encoder itself is here too ([`status_line`], [`field`], [`end_head`]), so the
//! fast path and the relay write heads one way. Request parsing limits are `khttpd_bridge::h1`'s.

use std::time::SystemTime;

use http::header::{HeaderName, HeaderValue, SERVER, STRICT_TRANSPORT_SECURITY};

use crate::config::Config;
use crate::daemon::stats::RouteKind;

/// The `Server` field of every answer.
pub(crate) const SERVER_NAME: &str = "khttpd-front";

/// Most header fields the fast path reads into its stack array; a head with more goes to hyper
/// (whose limit is `khttpd_bridge::h1::MAX_REQUEST_FIELDS`).
pub(crate) const MAX_FIELDS: usize = 48;

const ROUTE: HeaderName = HeaderName::from_static("x-khttpd-route");

/// The front's own fields on every answer, whichever encoder writes it: `Server`,
/// `X-Khttpd-Route` when asked for (`route`: static, backend or error), HSTS over TLS when
/// configured. The one list: [`front_fields`] writes it as bytes, the hyper handler inserts it.
pub(crate) fn own_fields<'a>(
    cfg: &'a Config,
    route: RouteKind,
    tls: bool,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'a {
    let server = Some((SERVER, HeaderValue::from_static(SERVER_NAME)));
    let route = cfg
        .route_header
        .then(|| (ROUTE, HeaderValue::from_static(route.name())));
    let hsts = cfg
        .hsts
        .as_ref()
        .filter(|_| tls)
        .map(|v| (STRICT_TRANSPORT_SECURITY, v.clone()));
    server.into_iter().chain(route).chain(hsts)
}

/// [`own_fields`] as HTTP/1.1 header lines.
pub(crate) fn front_fields(out: &mut Vec<u8>, cfg: &Config, route: RouteKind, tls: bool) {
    for (name, value) in own_fields(cfg, route, tls) {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// The status line: the standard reason for a known status, else `reason` as the backend sent it
/// (any bytes: RFC 9112 §4 lets a client ignore it).
pub(crate) fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    match status {
        200 => out.extend_from_slice(b"HTTP/1.1 200 OK\r\n"),
        304 => out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\n"),
        _ => {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(status.to_string().as_bytes());
            out.push(b' ');
            match http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
            {
                Some(known) => out.extend_from_slice(known.as_bytes()),
                None => out.extend_from_slice(reason),
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// One header line.
pub(crate) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The end of every raw head: the front's own fields, `Connection: close` when the connection
/// ends after this answer, `Date` unless the backend's is kept (`dated`), and the blank line.
pub(crate) fn end_head(
    out: &mut Vec<u8>,
    cfg: &Config,
    route: RouteKind,
    tls: bool,
    close: bool,
    dated: bool,
) {
    front_fields(out, cfg, route, tls);
    if close {
        field(out, b"connection", b"close");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Today's `Date` value, formatted once a second per thread.
pub(crate) fn http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                d.1.copy_from_slice(text.as_bytes());
            }
            d.0 = secs;
        }
        out.extend_from_slice(&d.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_imf_fixdate() {
        let mut out = Vec::new();
        http_date(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
    }

    #[test]
    fn status_lines_take_the_standard_reason_or_the_backends_bytes() {
        let line = |status, reason: &[u8]| {
            let mut out = Vec::new();
            status_line(&mut out, status, reason);
            out
        };
        assert_eq!(line(200, b"Fine"), b"HTTP/1.1 200 OK\r\n");
        assert_eq!(line(304, b""), b"HTTP/1.1 304 Not Modified\r\n");
        assert_eq!(line(404, b"Gone"), b"HTTP/1.1 404 Not Found\r\n");
        assert_eq!(line(499, b"caf\xe9"), b"HTTP/1.1 499 caf\xe9\r\n");
        assert_eq!(line(599, b""), b"HTTP/1.1 599 \r\n");
    }

    #[test]
    fn both_encoders_write_the_same_fields() {
        use clap::Parser;
        let root = std::env::temp_dir();
        let args = crate::config::args::Args::try_parse_from([
            "khttpd-front",
            "--root",
            root.to_str().unwrap(),
            "--route-header",
            "--hsts",
            "60",
        ])
        .unwrap();
        let cfg = Config::try_from(args).unwrap();
        let mut bytes = Vec::new();
        front_fields(&mut bytes, &cfg, RouteKind::Static, true);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "server: khttpd-front\r\nx-khttpd-route: static\r\nstrict-transport-security: max-age=60\r\n"
        );
        let mut bytes = Vec::new();
        front_fields(&mut bytes, &cfg, RouteKind::Error, false);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "server: khttpd-front\r\nx-khttpd-route: error\r\n"
        );
    }
}
