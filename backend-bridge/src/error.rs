//! Errors by blame, and the one place that maps them to a status.

use std::fmt;

use http::StatusCode;

/// The cause of an error, kept for the logs (never shown to the client).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// `Retry-After` of a 503 for a full backend queue, in seconds: a queue is full for as long as
/// the slowest requests in it take, so a short wait is the honest hint.
pub const QUEUE_FULL_RETRY_AFTER_SECS: u64 = 1;

/// Why a request could not be carried to the backend and back.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// No backend is configured.
    #[error("no backend configured")]
    NoBackend,
    /// The backend could not be connected to (refused, unreachable).
    #[error("backend connection failed: {0}")]
    Refused(#[source] std::io::Error),
    /// The backend closed or reset the connection before a complete response head.
    #[error("backend closed the connection: {0}")]
    Reset(#[source] Cause),
    /// The backend did not accept the connection or answer in time.
    #[error("backend timed out ({0})")]
    Timeout(Phase),
    /// Every slot of the backend stayed busy for the whole queue timeout.
    #[error("backend queue full")]
    QueueFull,
    /// The backend answered something that is not HTTP/1.x.
    #[error("backend sent an invalid response: {0}")]
    BadResponse(#[source] Cause),
    /// The client went away (its request body broke off) while the request was being forwarded.
    #[error("client went away")]
    ClientGone,
    /// A bug or resource problem on our side.
    #[error("internal error: {0}")]
    Internal(#[source] Cause),
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting (and writing the PROXY header).
    Connect,
    /// Waiting for the response head after the request was sent.
    ResponseHead,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connect",
            Phase::ResponseHead => "response head",
        })
    }
}

impl BridgeError {
    /// The status answered to the client: backend faults are 502 (504 for a timeout), a full
    /// queue 503, a client that left 400 (nobody reads it), our own faults 500.
    pub fn status(&self) -> StatusCode {
        match self {
            BridgeError::NoBackend
            | BridgeError::Refused(_)
            | BridgeError::Reset(_)
            | BridgeError::BadResponse(_) => StatusCode::BAD_GATEWAY,
            BridgeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            BridgeError::QueueFull => StatusCode::SERVICE_UNAVAILABLE,
            BridgeError::ClientGone => StatusCode::BAD_REQUEST,
            BridgeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds for a `Retry-After` header (RFC 9110 §10.2.3), for the 503 of a full queue.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            BridgeError::QueueFull => Some(QUEUE_FULL_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// One sentence for the error page; carries no request data.
    pub fn detail(&self) -> &'static str {
        match self {
            BridgeError::NoBackend => "No backend server is configured for this request.",
            BridgeError::Refused(_) => "The backend server could not be reached.",
            BridgeError::Reset(_) => "The backend server closed the connection without answering.",
            BridgeError::Timeout(Phase::Connect) => {
                "The backend server did not accept the connection in time."
            }
            BridgeError::Timeout(Phase::ResponseHead) => {
                "The backend server did not answer in time."
            }
            BridgeError::QueueFull => "The backend server is busy; please try again shortly.",
            BridgeError::BadResponse(_) => "The backend server sent an invalid response.",
            BridgeError::ClientGone => "The request was not received completely.",
            BridgeError::Internal(_) => "An internal error occurred while contacting the backend.",
        }
    }

    /// A short stable name for logs and counters (`refused`, `timeout`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            BridgeError::NoBackend => "no_backend",
            BridgeError::Refused(_) => "refused",
            BridgeError::Reset(_) => "reset",
            BridgeError::Timeout(_) => "timeout",
            BridgeError::QueueFull => "queue_full",
            BridgeError::BadResponse(_) => "bad_response",
            BridgeError::ClientGone => "client_gone",
            BridgeError::Internal(_) => "internal",
        }
    }

    /// Whether the backend itself is to blame in a way that makes it worth skipping for a while.
    pub(crate) fn marks_failed(&self) -> bool {
        matches!(
            self,
            BridgeError::Refused(_) | BridgeError::Reset(_) | BridgeError::Timeout(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<BridgeError> {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        vec![
            BridgeError::NoBackend,
            BridgeError::Refused(io()),
            BridgeError::Reset(io().into()),
            BridgeError::Timeout(Phase::Connect),
            BridgeError::Timeout(Phase::ResponseHead),
            BridgeError::QueueFull,
            BridgeError::BadResponse("garbage".into()),
            BridgeError::ClientGone,
            BridgeError::Internal("bug".into()),
        ]
    }

    #[test]
    fn statuses_follow_blame() {
        let statuses: Vec<u16> = all().iter().map(|e| e.status().as_u16()).collect();
        assert_eq!(statuses, [502, 502, 502, 504, 504, 503, 502, 400, 500]);
    }

    #[test]
    fn only_a_full_queue_says_when_to_retry() {
        for e in all() {
            let expected = matches!(e, BridgeError::QueueFull).then_some(1);
            assert_eq!(e.retry_after(), expected, "{e}");
        }
    }

    #[test]
    fn details_are_single_sentences() {
        for e in all() {
            let d = e.detail();
            assert!(d.ends_with('.') && d.matches(". ").count() <= 1, "{d}");
            assert!(!e.kind().is_empty());
        }
    }

    #[test]
    fn only_backend_faults_start_a_cooldown() {
        let marked: Vec<bool> = all().iter().map(BridgeError::marks_failed).collect();
        assert_eq!(
            marked,
            [false, true, true, true, true, false, false, false, false]
        );
    }
}
