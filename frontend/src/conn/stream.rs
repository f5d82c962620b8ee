//! The client's connection as the fast path sees it: plain TCP, or TLS over TCP.
//!
//! Both carry HTTP/1.1 the same way; what differs is what may bypass the stream. On plain TCP the
//! bytes written are the bytes on the wire, so a cached file can go out by sendfile(2), a head can
//! be corked with MSG_MORE and the connection half-closed by shutdown(2). Over TLS every byte must
//! pass through the record layer: the fast path writes through the stream and flushes it.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection the fast path can serve.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether written bytes reach the socket unchanged (no TLS), so writes may bypass the stream.
    const RAW: bool;

    /// The TCP socket underneath (for TCP_NODELAY, and to notice a client that left).
    fn tcp(&self) -> &TcpStream;
}

impl ClientStream for TcpStream {
    const RAW: bool = true;

    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl ClientStream for TlsStream<TcpStream> {
    const RAW: bool = false;

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}
