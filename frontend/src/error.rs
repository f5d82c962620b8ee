//! Everything that keeps the front from answering a request as asked, by who is to blame, and the
//! one place where each becomes a status and a page ([`FrontError::page`]).
//!
//! The page's text is always one of our own static strings, never request data nor the cause
//! (which names files and configuration: that goes to the log).

use std::io;

use http::header::{HeaderName, HeaderValue, ALLOW, CONNECTION, CONTENT_RANGE, RETRY_AFTER};
use http::{Response, StatusCode};
use khttpd_bridge::BridgeError;

use crate::pages;
use crate::route::decide::{NoBackend, Reject};
use crate::sending::body::Body;
use crate::userspace::upload::UploadError;

/// Why the front answers with an error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrontError {
    /// The client's head frames its body ambiguously or lacks a Host (400), or uses a transfer
    /// coding we do not take (501): the connection cannot carry another request either.
    #[error("request framing: {1}")]
    Framing(StatusCode, &'static str),
    /// Routing refused the path (the client's: 400, 403, 404, 414) or the file system failed
    /// while routing (500).
    #[error(transparent)]
    Route(#[from] Reject),
    /// The client's body: too large (413) or broken off (400); or its temporary file (500).
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// The backend's fault (502, 503, 504).
    #[error(transparent)]
    Backend(#[from] BridgeError),
    /// The client's preconditions (`If-Match`, `If-Unmodified-Since`) do not hold for the file
    /// (412).
    #[error("a precondition of the request does not hold")]
    PreconditionFailed,
    /// None of the client's byte ranges lies in the file of this length (416, with
    /// `Content-Range: bytes */LEN`).
    #[error("no requested range lies in the file's {0} bytes")]
    RangeNotSatisfiable(u64),
    /// The request is the backend's and none is configured (the operator's choice): 405 for a
    /// method, else 404, 502 or 403 by what routing found; never the file itself.
    #[error("no backend configured: {}", .0.why())]
    NoBackend(NoBackend),
    /// The file changed or went away between routing and answering, and again when routed
    /// afresh (503: retry).
    #[error("the file changed since it was routed")]
    Stale,
    /// The file system while answering (permission 403, anything else 500).
    #[error("file system: {0}")]
    Fs(io::Error),
    /// A bug: a panic while handling the request (500).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl FrontError {
    /// The status the client gets.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            FrontError::Framing(status, _) => *status,
            FrontError::Route(r) => r.status(),
            FrontError::Upload(u) => u.status(),
            FrontError::Backend(b) => b.status(),
            FrontError::NoBackend(n) => n.status(),
            FrontError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            FrontError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            FrontError::Stale => StatusCode::SERVICE_UNAVAILABLE,
            FrontError::Fs(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                StatusCode::FORBIDDEN
            }
            FrontError::Fs(_) | FrontError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The line the page shows: our own words, never the cause.
    fn detail(&self) -> &'static str {
        match self {
            FrontError::Framing(_, why) => why,
            FrontError::Route(Reject::BadPath(e)) => bad_path_detail(e),
            FrontError::Route(Reject::Forbidden(why)) => why,
            FrontError::Backend(b) => b.detail(),
            // Why is the operator's business (the log), not the visitor's.
            FrontError::NoBackend(NoBackend::MethodNotAllowed) => {
                "This server serves static files only (GET and HEAD)."
            }
            FrontError::Stale => "The file is changing; retry.",
            _ => pages::default_detail(self.status()),
        }
    }

    /// The error as both encoders write it: decided here once.
    pub(crate) fn answer(&self) -> ErrorAnswer {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(error = %self, "answered 500");
        }
        let field = match self {
            FrontError::Backend(b) => b
                .retry_after()
                .map(|secs| (RETRY_AFTER, HeaderValue::from(secs))),
            FrontError::NoBackend(NoBackend::MethodNotAllowed) => {
                Some((ALLOW, HeaderValue::from_static("GET, HEAD")))
            }
            FrontError::RangeNotSatisfiable(len) => {
                let range = crate::sending::range::unsatisfied_content_range(*len);
                HeaderValue::from_str(&range)
                    .ok()
                    .map(|v| (CONTENT_RANGE, v))
            }
            _ => None,
        };
        ErrorAnswer {
            status,
            detail: self.detail(),
            field,
            // What follows on this connection cannot be framed (an ambiguous head), or the rest
            // of a refused body was never read.
            close: matches!(self, FrontError::Framing(..) | FrontError::Upload(_)),
        }
    }

    /// The page for this error as hyper's pipeline sends it.
    pub(crate) fn page(&self) -> Response<Body> {
        self.answer().response()
    }
}

/// An error answer, whichever transport writes it: the status, the page's line, the one field its
/// kind adds (`Retry-After`, `Allow`, `Content-Range`), and whether the connection ends after it.
/// Encoded by [`ErrorAnswer::response`] for hyper and as raw bytes by the relay.
#[derive(Debug)]
pub(crate) struct ErrorAnswer {
    pub(crate) status: StatusCode,
    pub(crate) detail: &'static str,
    pub(crate) field: Option<(HeaderName, HeaderValue)>,
    pub(crate) close: bool,
}

impl ErrorAnswer {
    /// The `http::Response` encoder.
    pub(crate) fn response(&self) -> Response<Body> {
        let mut page = pages::error(self.status, self.detail);
        let h = page.headers_mut();
        if let Some((name, value)) = &self.field {
            h.insert(name.clone(), value.clone());
        }
        if self.close {
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        page
    }
}

fn bad_path_detail(e: &crate::route::path::PathError) -> &'static str {
    use crate::route::path::PathError::*;
    match e {
        NotAbsolute => "The request path must start with /.",
        BadEscape => "The request path has a malformed percent-encoding.",
        Nul => "The request path contains a NUL byte.",
        DotDot => "The request path contains a .. segment.",
        Separator => "The request path contains an encoded slash or a backslash.",
    }
}

/// "Not the version routing saw", as the blocking pool and the cache carry it: an `io::Error` of
/// kind `StaleNetworkFileHandle` (ESTALE, which an NFS server also gives for a file replaced
/// under an open handle), so its kind alone says it and nothing is downcast.
pub(crate) fn stale_file() -> io::Error {
    io::Error::new(
        io::ErrorKind::StaleNetworkFileHandle,
        "file changed since it was routed",
    )
}

impl From<io::Error> for FrontError {
    /// A file that is not the version routing saw, or no longer exists, is routed afresh; other
    /// failures are the file system's.
    fn from(e: io::Error) -> FrontError {
        let stale = matches!(
            e.kind(),
            io::ErrorKind::StaleNetworkFileHandle
                | io::ErrorKind::NotFound
                | io::ErrorKind::NotADirectory
        );
        if stale {
            FrontError::Stale
        } else {
            FrontError::Fs(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_by_blame() {
        let cases: Vec<(FrontError, u16)> = vec![
            (FrontError::Framing(StatusCode::BAD_REQUEST, "x"), 400),
            (FrontError::Route(Reject::NotFound), 404),
            (FrontError::Route(Reject::PathTooLong), 414),
            (FrontError::Upload(UploadError::TooLarge(1)), 413),
            (FrontError::Backend(BridgeError::QueueFull), 503),
            (FrontError::PreconditionFailed, 412),
            (FrontError::RangeNotSatisfiable(10), 416),
            (FrontError::Stale, 503),
            (
                FrontError::from(io::Error::from(io::ErrorKind::PermissionDenied)),
                403,
            ),
            (FrontError::from(io::Error::other("disk")), 500),
            (FrontError::Internal("panic"), 500),
        ];
        for (e, status) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.page().status().as_u16(), status, "{e}");
        }
        let method = FrontError::NoBackend(NoBackend::MethodNotAllowed).page();
        assert_eq!(
            (method.status().as_u16(), &method.headers()[ALLOW]),
            (405, &HeaderValue::from_static("GET, HEAD"))
        );
        let range = FrontError::RangeNotSatisfiable(26).page();
        assert_eq!(range.headers()[CONTENT_RANGE], "bytes */26");
        let busy = FrontError::Backend(BridgeError::QueueFull).page();
        assert!(busy.headers().contains_key(RETRY_AFTER));
        assert_eq!(
            FrontError::Framing(StatusCode::NOT_IMPLEMENTED, "x")
                .page()
                .headers()[CONNECTION],
            "close"
        );
    }

    #[test]
    fn a_file_gone_or_changed_is_routed_again() {
        assert!(matches!(
            FrontError::from(io::Error::from(io::ErrorKind::NotFound)),
            FrontError::Stale
        ));
        assert!(matches!(FrontError::from(stale_file()), FrontError::Stale));
    }

    #[test]
    fn pages_never_show_the_cause() {
        let e = FrontError::Fs(io::Error::other("/etc/secret/path failed"));
        let page = e.page();
        let Some(len) = page.headers().get(http::header::CONTENT_LENGTH) else {
            panic!("no length");
        };
        assert!(len.to_str().is_ok());
        assert!(!pages::error_html(e.status(), e.detail()).contains("/etc/secret"));
        // Nor the configuration: whether a backend exists is the operator's business.
        for reason in [
            crate::route::decide::BackendReason::Method,
            crate::route::decide::BackendReason::Missing,
            crate::route::decide::BackendReason::Hidden,
        ] {
            let e = FrontError::NoBackend(crate::route::decide::Route::without_backend(reason));
            assert!(!e.detail().contains("backend"), "{}", e.detail());
            assert!(e.to_string().contains("no backend"), "{e}");
        }
    }
}
