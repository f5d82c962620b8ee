//! The management daemon's side of the control socket: [`bind`] before dropping privileges, then
//! [`serve`] each connection's request with a [`Handler`], bounded in size and time.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinSet;

use crate::control::protocol::{check_trusted, with_path, Reply, Request, IO_TIMEOUT, MAX_REQUEST};

/// Time in-flight replies (such as the answer to `unload`) get once the socket is shutting down.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Mode of the socket: connecting needs write permission, so 0600 limits control to its owner.
const SOCKET_MODE: u32 = 0o600;

/// How long the accept loop pauses after an error such as EMFILE instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The future a [`Handler`] returns.
pub(crate) type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// What the management daemon does with a request.
pub(crate) type Handler = Arc<dyn Fn(Request) -> ReplyFuture + Send + Sync>;

/// Wraps an async closure as a [`Handler`].
pub(crate) fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)) as ReplyFuture)
}

/// Binds the control socket with mode 0600, refusing when a live daemon answers there ("already
/// running") and replacing a stale socket file. Callable without a runtime, before privileges drop.
pub(crate) fn bind(path: &Path) -> io::Result<StdUnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            // 0700: only this user ever adds or replaces the socket; root (khttpd-ctl as root)
            // gets in anyway. With --user, the socket is bound before privileges drop.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| with_path(path, e))?;
        }
    }
    check_trusted(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "control socket {}: exists and is not a socket; remove it or choose another --control",
                    path.display()
                ),
            ));
        }
        Ok(_) => match StdUnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "khttpd-front is already running: a daemon answers on {}",
                        path.display()
                    ),
                ));
            }
            // Left behind by a daemon that died without cleaning up.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|e| with_path(path, e))?;
            }
            Err(e) => return Err(with_path(path, e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path(path, e)),
    }
    let listener = StdUnixListener::bind(path).map_err(|e| with_path(path, e))?;
    // Right after bind, whatever the umask made of it.
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)) {
        let _ = std::fs::remove_file(path);
        return Err(with_path(path, e));
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves requests until `shutdown` resolves, then lets replies in flight finish (up to
/// [`SHUTDOWN_GRACE`]) and removes the socket file.
pub(crate) async fn serve(
    listener: StdUnixListener,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let path = listener.local_addr()?.as_pathname().map(Path::to_path_buf);
    // Remembered so that at exit we remove our own socket, not one a later daemon put there.
    let ident = path
        .as_deref()
        .and_then(|p| std::fs::symlink_metadata(p).ok())
        .map(|m| (m.dev(), m.ino()));
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    tokio::pin!(shutdown);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(stream, handler.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    if let Some(p) = &path {
        let same = std::fs::symlink_metadata(p)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if same.is_some() && same == ident {
            if let Err(e) = std::fs::remove_file(p) {
                tracing::warn!(error = %e, path = %p.display(), "cannot remove the control socket");
            }
        }
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "control connections still busy at exit; closing them"
        );
    }
    Ok(())
}

enum ReadError {
    /// The peer connected and closed without a byte: a liveness probe such as [`bind`]'s.
    Empty,
    TooLarge,
    Io(io::Error),
}

async fn read_request<R: tokio::io::AsyncRead + Unpin>(r: R) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    let limit = (MAX_REQUEST + 1) as u64;
    BufReader::new(r.take(limit))
        .read_until(b'\n', &mut line)
        .await
        .map_err(ReadError::Io)?;
    if line.is_empty() {
        return Err(ReadError::Empty);
    }
    if line.len() > MAX_REQUEST {
        return Err(ReadError::TooLarge);
    }
    Ok(line)
}

async fn connection(mut stream: UnixStream, handler: Handler) {
    let (rd, mut wr) = stream.split();
    let reply = match tokio::time::timeout(IO_TIMEOUT, read_request(rd)).await {
        Err(_) => Reply::error(format!(
            "no request within {} s (send one JSON line, then wait for the answer)",
            IO_TIMEOUT.as_secs()
        )),
        Ok(Err(ReadError::Empty)) => return,
        Ok(Err(ReadError::Io(e))) => {
            tracing::debug!(error = %e, "control connection failed while reading");
            return;
        }
        Ok(Err(ReadError::TooLarge)) => Reply::error(format!(
            "request larger than {} KiB; send one JSON line such as {{\"cmd\":\"status\"}}",
            MAX_REQUEST / 1024
        )),
        Ok(Ok(line)) => match serde_json::from_slice::<Request>(&line) {
            Ok(req) => handler(req).await,
            Err(e) => Reply::error(format!(
                "invalid request ({e}); expected one JSON line such as {{\"cmd\":\"status\"}}"
            )),
        },
    };
    let Ok(mut out) = serde_json::to_vec(&reply) else {
        tracing::error!("control reply could not be serialised");
        return;
    };
    out.push(b'\n');
    let written = tokio::time::timeout(IO_TIMEOUT, async {
        wr.write_all(&out).await?;
        wr.shutdown().await
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "control connection failed while replying"),
        Err(_) => tracing::debug!("control client did not read its reply in time"),
    }
}
