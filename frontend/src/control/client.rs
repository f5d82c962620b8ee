//! `khttpd-ctl`'s side of the control socket: [`call`] and [`call_blocking`], each one request and
//! one reply within a timeout, with errors that say what the user can do.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::control::protocol::{check_trusted, encode, Reply, Request, MAX_REPLY};

/// Why a client could not get a reply.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing listens at the path (no file, or a stale socket).
    #[error("no khttpd-front is listening on {}", .path.display())]
    NoDaemon {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The socket or its directory belongs to another user.
    #[error("permission denied on {}", .path.display())]
    PermissionDenied {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The daemon did not answer in time.
    #[error("no answer from {} within {} s", .path.display(), .after.as_secs_f64())]
    Timeout {
        /// The socket path tried.
        path: PathBuf,
        /// The time allowed.
        after: Duration,
    },
    /// Any other socket error.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The socket path tried.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The answer was not a reply.
    #[error("{}: {detail}", .path.display())]
    Protocol {
        /// The socket path tried.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
}

/// Maps a connect or I/O error to what the user should be told.
pub(super) fn classify(path: &Path, e: io::Error) -> CallError {
    let path = path.to_path_buf();
    match e.kind() {
        io::ErrorKind::NotFound
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::NotADirectory => CallError::NoDaemon { path },
        io::ErrorKind::PermissionDenied => CallError::PermissionDenied { path },
        _ => CallError::Io { path, source: e },
    }
}

fn decode(path: &Path, buf: &[u8]) -> Result<Reply, CallError> {
    let protocol = |detail: String| CallError::Protocol {
        path: path.to_path_buf(),
        detail,
    };
    if buf.is_empty() {
        return Err(protocol(
            "the daemon closed the connection without answering".into(),
        ));
    }
    if buf.len() > MAX_REPLY {
        return Err(protocol(format!(
            "reply larger than {} MiB",
            MAX_REPLY >> 20
        )));
    }
    serde_json::from_slice(buf).map_err(|e| protocol(format!("unreadable reply: {e}")))
}

/// The daemon answered and closed without reading all of an oversized request: the write then
/// fails with EPIPE, and after the answer is read Linux reports ECONNRESET for the unread bytes.
/// Either way the answer is there to read.
pub(super) fn peer_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Sends one request and reads the reply, all within `timeout`.
pub async fn call(path: &Path, req: &Request, timeout: Duration) -> Result<Reply, CallError> {
    let exchange = async {
        let mut s = UnixStream::connect(path)
            .await
            .map_err(|e| classify(path, e))?;
        match s.write_all(&encode(req)).await {
            Ok(()) => {
                // Half-close: the daemon sees the end of the request even without the newline.
                let _ = s.shutdown().await;
            }
            Err(e) if peer_closed(&e) => {}
            Err(e) => return Err(classify(path, e)),
        }
        let mut buf = Vec::new();
        let read = s.take((MAX_REPLY + 1) as u64).read_to_end(&mut buf).await;
        match read {
            Ok(_) => {}
            Err(e) if peer_closed(&e) && !buf.is_empty() => {}
            Err(e) => return Err(classify(path, e)),
        }
        decode(path, &buf)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| CallError::Timeout {
            path: path.to_path_buf(),
            after: timeout,
        })?
}

/// [`call`] without a runtime, for the command-line client.
pub fn call_blocking(path: &Path, req: &Request, timeout: Duration) -> Result<Reply, CallError> {
    let timed_out = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
    };
    let fail = |e: io::Error| {
        if timed_out(&e) {
            CallError::Timeout {
                path: path.to_path_buf(),
                after: timeout,
            }
        } else {
            classify(path, e)
        }
    };
    if let Err(e) = check_trusted(path) {
        if e.kind() == io::ErrorKind::PermissionDenied {
            return Err(CallError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    }
    let mut s = StdUnixStream::connect(path).map_err(|e| classify(path, e))?;
    // A zero timeout means "none" to the socket API, so keep it above zero.
    let t = timeout.max(Duration::from_millis(1));
    s.set_read_timeout(Some(t)).map_err(fail)?;
    s.set_write_timeout(Some(t)).map_err(fail)?;
    match s.write_all(&encode(req)) {
        Ok(()) => {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        Err(e) if peer_closed(&e) => {}
        Err(e) => return Err(fail(e)),
    }
    let mut buf = Vec::new();
    match s.take((MAX_REPLY + 1) as u64).read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if peer_closed(&e) && !buf.is_empty() => {}
        Err(e) => return Err(fail(e)),
    }
    decode(path, &buf)
}
