//! Where a backend listens, and the stream to it: a TCP address, or a Unix socket path written
//! `unix:/run/apache2/site.sock` (the form nginx's `proxy_pass http://unix:` and Apache's
//! `ProxyPass "unix:…|http://…"` use). Both carry the same HTTP/1.1; only connecting differs.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A backend's address. `Copy`, like the `SocketAddr` it extends, because it is stamped on every
/// answer (logs, metrics); a socket path is interned once per distinct path (see [`intern`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BackendAddr {
    /// `HOST:PORT`, resolved once when the configuration is read.
    Tcp(SocketAddr),
    /// `unix:PATH`, an absolute path.
    Unix(&'static Path),
}

impl BackendAddr {
    /// Reads `HOST:PORT` or `unix:/ABSOLUTE/PATH`. The error says what was expected.
    pub fn parse(text: &str) -> Result<BackendAddr, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(format!(
                    "{text:?}: a Unix socket is given by its absolute path (unix:/run/php/site.sock)"
                ));
            }
            // sun_path holds 108 bytes with its terminating NUL.
            if path.as_os_str().len() > 107 {
                return Err(format!("{text:?}: a Unix socket path is at most 107 bytes"));
            }
            return Ok(BackendAddr::Unix(intern(path)));
        }
        text.to_socket_addrs()
            .map_err(|e| format!("{text:?}: {e} (expected HOST:PORT or unix:/PATH)"))?
            .next()
            .map(BackendAddr::Tcp)
            .ok_or_else(|| format!("{text:?}: no address"))
    }

    /// The TCP address, if it is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            BackendAddr::Tcp(a) => Some(*a),
            BackendAddr::Unix(_) => None,
        }
    }
}

impl From<SocketAddr> for BackendAddr {
    fn from(a: SocketAddr) -> BackendAddr {
        BackendAddr::Tcp(a)
    }
}

impl std::str::FromStr for BackendAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<BackendAddr, String> {
        BackendAddr::parse(s)
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Tcp(a) => a.fmt(f),
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The one `'static` copy of a socket path. Paths come only from the configuration, so the set
/// grows with the distinct paths ever configured (reloads that keep a path add nothing), and an
/// address stays `Copy`.
fn intern(path: &Path) -> &'static Path {
    static PATHS: OnceLock<Mutex<HashSet<&'static Path>>> = OnceLock::new();
    let mut set = PATHS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = set.get(path) {
        return p;
    }
    let leaked: &'static Path = Box::leak(path.to_path_buf().into_boxed_path());
    set.insert(leaked);
    leaked
}

/// A connection to a backend, over TCP or a Unix socket.
#[derive(Debug)]
pub enum BackendStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl BackendStream {
    /// Connects to `addr`; over TCP with `TCP_NODELAY`, so request heads and small answers do
    /// not wait for Nagle (a Unix socket has no such delay).
    pub async fn connect(addr: BackendAddr) -> io::Result<BackendStream> {
        match addr {
            BackendAddr::Tcp(a) => {
                let s = TcpStream::connect(a).await?;
                s.set_nodelay(true)?;
                Ok(BackendStream::Tcp(s))
            }
            BackendAddr::Unix(p) => Ok(BackendStream::Unix(UnixStream::connect(p).await?)),
        }
    }

    /// The local TCP address, if it is TCP.
    pub fn local_tcp(&self) -> Option<SocketAddr> {
        match self {
            BackendStream::Tcp(s) => s.local_addr().ok(),
            BackendStream::Unix(_) => None,
        }
    }
}

impl AsFd for BackendStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            BackendStream::Tcp(s) => s.as_fd(),
            BackendStream::Unix(s) => s.as_fd(),
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Tcp(s) => s.is_write_vectored(),
            BackendStream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_says_what_is_expected() {
        assert_eq!(
            BackendAddr::parse("127.0.0.1:8080").unwrap(),
            BackendAddr::Tcp("127.0.0.1:8080".parse().unwrap())
        );
        let u = BackendAddr::parse("unix:/run/apache2/site.sock").unwrap();
        assert_eq!(u.to_string(), "unix:/run/apache2/site.sock");
        assert_eq!(u.tcp(), None);
        // The same path is interned once.
        let again = BackendAddr::parse(" unix:/run/apache2/site.sock ").unwrap();
        match (u, again) {
            (BackendAddr::Unix(a), BackendAddr::Unix(b)) => assert!(std::ptr::eq(a, b)),
            _ => unreachable!(),
        }
        assert!(BackendAddr::parse("unix:run/site.sock")
            .unwrap_err()
            .contains("absolute"));
        let long = format!("unix:/{}", "a".repeat(120));
        assert!(BackendAddr::parse(&long).unwrap_err().contains("107"));
        assert!(BackendAddr::parse("localhost")
            .unwrap_err()
            .contains("HOST:PORT or unix:/PATH"));
    }

    #[tokio::test]
    async fn a_unix_socket_carries_bytes_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let addr = BackendAddr::parse(&format!("unix:{}", path.display())).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        let mut c = BackendStream::connect(addr).await.unwrap();
        assert_eq!(c.local_tcp(), None);
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        server.await.unwrap();
    }
}
