//! Opening one backend connection: TCP with `TCP_NODELAY` or a Unix socket, the PROXY header if any, and hyper's
//! HTTP/1.1 client handshake, its connection task spawned on the current runtime. A pooled
//! connection is a plain stream ([`crate::raw::RawConn`]); the hyper client borrows one for an
//! exchange ([`lend`]) and gives it back, so the relay and hyper share one pool per backend.

use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use crate::addr::{BackendAddr, BackendStream};
use crate::body::ProxyBody;
use crate::error::{BridgeError, Phase};

/// The sending half of a backend connection; for a connection the session keeps (PROXY
/// protocol), a second descriptor of its socket, so bytes the backend sent unasked can be seen
/// before it is used again (hyper owns the socket itself).
pub(crate) struct Sender {
    inner: http1::SendRequest<ProxyBody>,
    socket: Option<socket2::Socket>,
}

impl std::ops::Deref for Sender {
    type Target = http1::SendRequest<ProxyBody>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Sender {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Sender {
    /// Whether the socket is quiet: open, and nothing pending that no request asked for.
    pub(crate) fn quiet(&self) -> bool {
        self.socket
            .as_ref()
            .is_some_and(crate::pool::socket_is_quiet)
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// Connects to `addr`, writes `preface` (a PROXY header) and performs the handshake, all
/// within `timeout`.
pub(crate) async fn open(
    addr: BackendAddr,
    timeout: Duration,
    preface: Option<&[u8]>,
) -> Result<Sender, BridgeError> {
    match tokio::time::timeout(timeout, open_now(addr, preface)).await {
        Ok(result) => result,
        Err(_) => Err(BridgeError::Timeout(Phase::Connect)),
    }
}

/// Connects to `addr` within `timeout`, without hyper: the relay's own connections.
pub(crate) async fn open_stream(
    addr: BackendAddr,
    timeout: Duration,
) -> Result<BackendStream, BridgeError> {
    match tokio::time::timeout(timeout, stream(addr, None)).await {
        Ok(result) => result,
        Err(_) => Err(BridgeError::Timeout(Phase::Connect)),
    }
}

async fn open_now(addr: BackendAddr, preface: Option<&[u8]>) -> Result<Sender, BridgeError> {
    let stream = stream(addr, preface).await?;
    // A dup of the descriptor shares the socket (and its O_NONBLOCK), costing one descriptor per
    // backend connection; it is closed with the Sender.
    let socket = std::os::fd::AsFd::as_fd(&stream)
        .try_clone_to_owned()
        .map(socket2::Socket::from)
        .map_err(|e| BridgeError::Internal(e.into()))?;
    let (inner, conn) = client()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| BridgeError::Internal(e.into()))?;
    tokio::spawn(async move {
        // with_upgrades: a 101 hands the socket to the tunnel instead of closing it.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(backend = %addr, error = %e, "backend connection ended with an error");
        }
    });
    Ok(Sender {
        inner,
        socket: Some(socket),
    })
}

/// hyper's client with the relay's limits ([`crate::h1`]): the same heads are refused either way.
fn client() -> http1::Builder {
    let mut b = http1::Builder::new();
    // max_headers is hyper's default (MAX_RESPONSE_FIELDS); setting it would move its parse to
    // the heap for every answer.
    b.max_header_size(crate::h1::MAX_RESPONSE_HEAD);
    b
}

/// Where a lent stream comes back: once its exchange is complete and the [`Sender`] dropped.
pub(crate) type GiveBack = oneshot::Receiver<BackendStream>;

/// Lends a pooled (or new) stream to hyper's client for one exchange. The stream comes back
/// through the [`GiveBack`] when the sender is dropped after a complete exchange, with nothing
/// read past the answer; otherwise (an error, bytes beyond the answer, an upgrade) it is closed.
pub(crate) async fn lend(
    stream: BackendStream,
    addr: BackendAddr,
) -> Result<(Sender, GiveBack), BridgeError> {
    let (inner, conn) = client()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| BridgeError::Internal(e.into()))?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        match conn.without_shutdown().await {
            // Bytes read past the answer belong to no request: never reused.
            Ok(parts) if parts.read_buf.is_empty() => {
                let _ = tx.send(parts.io.into_inner());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(backend = %addr, error = %e, "backend connection ended with an error");
            }
        }
    });
    Ok((
        Sender {
            inner,
            socket: None,
        },
        rx,
    ))
}

/// A stream to `addr` (TCP with `TCP_NODELAY`, or a Unix socket), and the PROXY header if any.
async fn stream(addr: BackendAddr, preface: Option<&[u8]>) -> Result<BackendStream, BridgeError> {
    let mut stream = BackendStream::connect(addr)
        .await
        .map_err(BridgeError::Refused)?;
    if let Some(preface) = preface {
        stream
            .write_all(preface)
            .await
            .map_err(|e| BridgeError::Reset(e.into()))?;
    }
    Ok(stream)
}
