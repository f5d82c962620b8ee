//! Small HTML pages for the errors the front answers itself.
//!
//! The detail line is always one of our own static strings, never request data, so a page can never
//! reflect a client's input back (no XSS through error pages).

use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::sending::body::Body;

/// The media type of every error page.
pub(crate) const ERROR_TYPE: &str = "text/html; charset=utf-8";

/// The HTML of an error page for `status` with a one-line explanation.
pub(crate) fn error_html(status: StatusCode, detail: &str) -> String {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\n\
         <body><h1>{code} {reason}</h1>\n<p>{detail}</p>\n<hr><address>khttpd-front</address></body></html>\n"
    )
}

/// An error page for `status` with a one-line explanation.
pub(crate) fn error(status: StatusCode, detail: &str) -> Response<Body> {
    let html = error_html(status, detail);
    let mut r = Response::new(Body::full(html.clone()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ERROR_TYPE));
    h.insert(CONTENT_LENGTH, HeaderValue::from(html.len()));
    r
}

/// The explanation shown for a status when the caller has none more specific.
pub(crate) fn default_detail(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request could not be understood.",
        403 => "You do not have permission to access this resource.",
        404 => "The requested resource was not found on this server.",
        405 => "The method is not allowed for this resource.",
        412 => "A precondition of the request did not hold.",
        416 => "The requested range is not satisfiable.",
        431 => "The request head is too large.",
        500 => "The server failed to handle the request.",
        502 => "The backend could not be reached.",
        503 => "The service is temporarily unavailable.",
        504 => "The backend did not answer in time.",
        _ => "The request failed.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_have_length_and_type() {
        for s in [400, 403, 404, 405, 412, 416, 431, 500, 502] {
            let st = StatusCode::from_u16(s).unwrap();
            let r = error(st, default_detail(st));
            assert_eq!(r.status(), st);
            assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
            assert!(r.headers().contains_key(CONTENT_LENGTH));
        }
    }
}
