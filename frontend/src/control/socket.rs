//! The control socket: how `khttpd-ctl` talks to the management daemon, as kHTTPd's
//! /proc/sys/net/khttpd files did.
//!
//! One JSON [`Request`] per connection, one JSON [`Reply`], each a single line, over a Unix stream
//! socket of mode 0600 (only the user that started the server, and root, may steer it). For example
//! `{"cmd":"set","key":"maxconnect","value":"500"}` →
//! `{"ok":true,"message":"maxconnect = 500"}`; `socat - UNIX-CONNECT:/run/khttpd/ctl.sock` works too.
//!
//! The management daemon side is [`bind`] (before dropping privileges) then [`serve`] with a
//! [`Handler`]; the client side is [`call`] and [`call_blocking`].

use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinSet;

/// Largest request line the daemon reads; a request is a few words, so more is a mistake or abuse.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Largest reply a client reads; `status` of 1024 main daemons stays far below it.
pub const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Time a connection has to send its request, and the daemon to write its reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Time in-flight replies (such as the answer to `unload`) get once the socket is shutting down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Mode of the socket: connecting needs write permission, so 0600 limits control to its owner.
const SOCKET_MODE: u32 = 0o600;

/// How long the accept loop pauses after an error such as EMFILE instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One command for the management daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// State, uptime, per-daemon stage gauges, counters, cache and backends.
    Status,
    /// Close the listeners and drain; the process stays up (kHTTPd's `stop`).
    Stop,
    /// Listen and serve again (kHTTPd's `start`).
    Start,
    /// Stop, then exit (kHTTPd's `unload`).
    Unload,
    /// Re-read the config file; an invalid one is refused and the old one keeps serving.
    Reload,
    /// Reopen the access log after logrotate moved it.
    ReopenLogs,
    /// Drop every verification verdict (after `apachectl graceful`).
    Flush,
    /// One knob, or all of them without a key.
    Get {
        /// The knob, such as `maxconnect`.
        #[serde(default)]
        key: Option<String>,
    },
    /// Change one knob for new requests.
    Set {
        /// The knob, such as `maxconnect`.
        key: String,
        /// Its new value, as typed.
        value: String,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// One human-readable line, shown by `khttpd-ctl`; on failure, why (without the command's name,
    /// which `khttpd-ctl` puts in front).
    #[serde(default)]
    pub message: String,
    /// Structured output of `status` and `get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Reply {
    /// Success with a message.
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            message: message.into(),
            data: None,
        }
    }

    /// Refusal with the reason.
    pub fn error(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            message: message.into(),
            data: None,
        }
    }

    /// The same reply carrying structured data.
    pub fn with_data(mut self, data: serde_json::Value) -> Reply {
        self.data = Some(data);
        self
    }
}

/// The future a [`Handler`] returns.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// What the management daemon does with a request.
pub type Handler = Arc<dyn Fn(Request) -> ReplyFuture + Send + Sync>;

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)) as ReplyFuture)
}

/// The default socket path both binaries agree on: `/run/khttpd/ctl.sock` when `/run/khttpd` exists
/// and is writable by us (or can be created), else `$XDG_RUNTIME_DIR/khttpd.sock`, else
/// `/tmp/khttpd-$UID/ctl.sock` in a directory of mode 0700.
pub fn default_socket_path() -> PathBuf {
    let uid = current_uid();
    let run = Path::new("/run/khttpd");
    let run_usable = match std::fs::metadata(run) {
        Ok(m) => m.is_dir() && writable(&m, uid),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::metadata("/run").is_ok_and(|m| m.is_dir() && writable(&m, uid))
        }
        Err(_) => false,
    };
    choose_socket_path(run_usable, std::env::var_os("XDG_RUNTIME_DIR"), uid)
}

fn choose_socket_path(
    run_usable: bool,
    xdg_runtime_dir: Option<std::ffi::OsString>,
    uid: Option<u32>,
) -> PathBuf {
    if run_usable {
        return PathBuf::from("/run/khttpd/ctl.sock");
    }
    // The XDG spec says a relative value is to be ignored.
    if let Some(dir) = xdg_runtime_dir
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
    {
        return dir.join("khttpd.sock");
    }
    // A private directory, not a name in /tmp itself: another local user could plant a socket
    // there (a fake `status`, a refused start). `bind` creates it 0700 and both sides check it.
    match uid {
        Some(uid) => PathBuf::from(format!("/tmp/khttpd-{uid}/ctl.sock")),
        None => PathBuf::from("/tmp/khttpd/ctl.sock"),
    }
}

/// Whether the socket at `path` and its directory can be trusted: the directory belongs to us or
/// root and only its owner may add or replace entries (or it is sticky, as /tmp, and then an existing
/// socket must belong to us or root). Anything else could be another local user's plant.
pub fn check_trusted(path: &Path) -> io::Result<()> {
    let uid = current_uid();
    let ours = |owner: u32| owner == 0 || Some(owner) == uid;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("control socket {}: {why}", path.display()),
        ))
    };
    let d = std::fs::symlink_metadata(dir).map_err(|e| with_path(path, e))?;
    if !d.is_dir() {
        return refuse(format!("{} is not a directory", dir.display()));
    }
    if !ours(d.uid()) {
        return refuse(format!(
            "{} belongs to another user (uid {})",
            dir.display(),
            d.uid()
        ));
    }
    let shared = d.mode() & 0o022 != 0;
    if shared && d.mode() & 0o1000 == 0 {
        return refuse(format!("{} is writable by other users", dir.display()));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !ours(m.uid()) => refuse(format!(
            "the socket belongs to another user (uid {})",
            m.uid()
        )),
        _ => Ok(()),
    }
}

/// Our effective uid, read without unsafe code: /proc/self belongs to the process's effective user.
fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Whether `uid` may create entries in a directory with this metadata. Group membership is not
/// checked (it needs getgroups); a group-writable-only directory falls through to the next choice.
fn writable(m: &std::fs::Metadata, uid: Option<u32>) -> bool {
    uid == Some(0) || (uid == Some(m.uid()) && m.mode() & 0o200 != 0) || m.mode() & 0o002 != 0
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
}

/// Binds the control socket with mode 0600, refusing when a live daemon answers there ("already
/// running") and replacing a stale socket file. Callable without a runtime, before privileges drop.
pub fn bind(path: &Path) -> io::Result<StdUnixListener> {
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
pub async fn serve(
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
fn classify(path: &Path, e: io::Error) -> CallError {
    let path = path.to_path_buf();
    match e.kind() {
        io::ErrorKind::NotFound
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::NotADirectory => CallError::NoDaemon { path },
        io::ErrorKind::PermissionDenied => CallError::PermissionDenied { path },
        _ => CallError::Io { path, source: e },
    }
}

fn encode(req: &Request) -> Vec<u8> {
    // A Request holds only strings; serialising it cannot fail.
    let mut line = serde_json::to_vec(req).unwrap_or_default();
    line.push(b'\n');
    line
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
fn peer_closed(e: &io::Error) -> bool {
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

impl fmt::Display for Request {
    /// The command as typed to `khttpd-ctl`, without a `set` value: `status`, `get maxconnect`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Status => f.write_str("status"),
            Request::Stop => f.write_str("stop"),
            Request::Start => f.write_str("start"),
            Request::Unload => f.write_str("unload"),
            Request::Reload => f.write_str("reload"),
            Request::ReopenLogs => f.write_str("reopen-logs"),
            Request::Flush => f.write_str("flush"),
            Request::Get { key: None } => f.write_str("get"),
            Request::Get { key: Some(k) } => write!(f, "get {k}"),
            Request::Set { key, .. } => write!(f, "set {key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    fn all_requests() -> Vec<Request> {
        vec![
            Request::Status,
            Request::Stop,
            Request::Start,
            Request::Unload,
            Request::Reload,
            Request::ReopenLogs,
            Request::Flush,
            Request::Get { key: None },
            Request::Get {
                key: Some("maxconnect".into()),
            },
            Request::Set {
                key: "dynamic".into(),
                value: "php,\"shtml\" \n日本".into(),
            },
        ]
    }

    /// Answers every request with the request itself as data.
    fn echo() -> Handler {
        handler(|req: Request| async move {
            let data = serde_json::to_value(&req).unwrap();
            Reply::ok(req.to_string()).with_data(data)
        })
    }

    struct Server {
        path: PathBuf,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<io::Result<()>>,
        _dir: tempfile::TempDir,
    }

    impl Server {
        fn start(h: Handler) -> Server {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ctl.sock");
            let l = bind(&path).unwrap();
            let (tx, rx) = oneshot::channel();
            let task = tokio::spawn(serve(l, h, async {
                let _ = rx.await;
            }));
            Server {
                path,
                stop: Some(tx),
                task,
                _dir: dir,
            }
        }

        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            self.task.await.unwrap().unwrap();
            assert!(!self.path.exists(), "socket file left behind");
        }
    }

    async fn raw(path: &Path, bytes: &[u8]) -> Reply {
        let mut s = UnixStream::connect(path).await.unwrap();
        let _ = s.write_all(bytes).await;
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        if let Err(e) = s.read_to_end(&mut buf).await {
            assert!(peer_closed(&e) && !buf.is_empty(), "{e}");
        }
        serde_json::from_slice(&buf).unwrap()
    }

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn bind_gives_mode_0600_whatever_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("ctl.sock");
        let _l = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert!(path.parent().unwrap().is_dir());
    }

    #[test]
    fn second_bind_on_a_live_socket_says_already_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let _live = bind(&path).unwrap();
        let e = bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("already running"), "{e}");
        assert!(path.exists());
    }

    #[test]
    fn stale_socket_is_replaced_but_a_regular_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        drop(bind(&path).unwrap());
        assert!(path.exists(), "the dead listener leaves its file");
        let _l = bind(&path).unwrap();
        assert!(StdUnixStream::connect(&path).is_ok());

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "precious").unwrap();
        let e = bind(&file).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    }

    #[tokio::test]
    async fn every_request_round_trips() {
        let srv = Server::start(echo());
        for req in all_requests() {
            let reply = call(&srv.path, &req, T).await.unwrap();
            assert!(reply.ok);
            assert_eq!(reply.message, req.to_string());
            let back: Request = serde_json::from_value(reply.data.unwrap()).unwrap();
            assert_eq!(back, req);
        }
        let path = srv.path.clone();
        let reply = tokio::task::spawn_blocking(move || {
            call_blocking(&path, &Request::Get { key: None }, T)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(reply.message, "get");
        srv.stop().await;
    }

    #[test]
    fn wire_format_is_readable() {
        let set = Request::Set {
            key: "maxconnect".into(),
            value: "500".into(),
        };
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"{"cmd":"set","key":"maxconnect","value":"500"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::ReopenLogs).unwrap(),
            r#"{"cmd":"reopen-logs"}"#
        );
        let get: Request = serde_json::from_str(r#"{"cmd":"get"}"#).unwrap();
        assert_eq!(get, Request::Get { key: None });
        assert_eq!(
            serde_json::to_string(&Reply::ok("done")).unwrap(),
            r#"{"ok":true,"message":"done"}"#
        );
    }

    #[tokio::test]
    async fn bad_requests_get_a_clear_no_and_the_server_keeps_serving() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let srv = Server::start(handler(move |_req: Request| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Reply::ok("fine") }
        }));
        let r = raw(&srv.path, b"this is not json\n").await;
        assert!(!r.ok);
        assert!(r.message.starts_with("invalid request"), "{}", r.message);
        let r = raw(&srv.path, b"{\"cmd\":\"explode\"}\n").await;
        assert!(!r.ok);
        assert!(r.message.contains("explode"), "{}", r.message);
        let r = raw(&srv.path, &vec![b'x'; 100 * 1024]).await;
        assert!(!r.ok);
        assert!(r.message.contains("larger than 64 KiB"), "{}", r.message);
        // Without a newline, the end of the stream ends the request.
        let r = raw(&srv.path, b"{\"cmd\":\"status\"}").await;
        assert!(r.ok);
        // A bare connect-and-close (bind's liveness probe) gets no answer and harms nothing.
        drop(StdUnixStream::connect(&srv.path).unwrap());
        let r = call(&srv.path, &Request::Status, T).await.unwrap();
        assert_eq!(r.message, "fine");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        srv.stop().await;
    }

    /// Takes IO_TIMEOUT (5 s) of real time: pausing the clock needs tokio's test-util feature.
    #[tokio::test]
    async fn a_silent_client_is_cut_off() {
        let srv = Server::start(echo());
        let mut s = UnixStream::connect(&srv.path).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let r: Reply = serde_json::from_slice(&buf).unwrap();
        assert!(!r.ok);
        assert!(
            r.message.starts_with("no request within 5 s"),
            "{}",
            r.message
        );
        srv.stop().await;
    }

    #[tokio::test]
    async fn the_reply_to_the_request_that_ends_the_server_gets_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let l = bind(&path).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let tx = std::sync::Mutex::new(Some(tx));
        let h = handler(move |_req: Request| {
            let stop = tx.lock().unwrap().take();
            async move {
                if let Some(stop) = stop {
                    let _ = stop.send(());
                }
                // The shutdown is under way while the reply is still being made.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Reply::ok("unloading")
            }
        });
        let task = tokio::spawn(serve(l, h, async {
            let _ = rx.await;
        }));
        let r = call(&path, &Request::Unload, T).await.unwrap();
        assert_eq!(r.message, "unloading");
        task.await.unwrap().unwrap();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn missing_daemon_is_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing.sock");
        let e = call(&path, &Request::Status, T).await.unwrap_err();
        assert!(matches!(e, CallError::NoDaemon { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("no khttpd-front is listening on {}", path.display())
        );
        let e = call_blocking(&path, &Request::Status, T).unwrap_err();
        assert!(matches!(e, CallError::NoDaemon { .. }), "{e:?}");
        // A stale socket: the file is there, nobody listens.
        drop(bind(&path).unwrap());
        let e = call_blocking(&path, &Request::Status, T).unwrap_err();
        assert!(matches!(e, CallError::NoDaemon { .. }), "{e:?}");
    }

    #[test]
    fn error_kinds_map_to_what_the_user_is_told() {
        let p = Path::new("/run/khttpd/ctl.sock");
        let kind = |k: io::ErrorKind| classify(p, io::Error::from(k));
        assert!(matches!(
            kind(io::ErrorKind::NotFound),
            CallError::NoDaemon { .. }
        ));
        assert!(matches!(
            kind(io::ErrorKind::ConnectionRefused),
            CallError::NoDaemon { .. }
        ));
        assert!(matches!(
            kind(io::ErrorKind::PermissionDenied),
            CallError::PermissionDenied { .. }
        ));
        assert!(matches!(kind(io::ErrorKind::Other), CallError::Io { .. }));
    }

    #[tokio::test]
    async fn permission_denied_on_a_socket_of_another_user() {
        if current_uid() == Some(0) {
            // Root passes every permission check; the mapping is covered by the test above.
            return;
        }
        let srv = Server::start(echo());
        std::fs::set_permissions(&srv.path, std::fs::Permissions::from_mode(0o000)).unwrap();
        let e = call(&srv.path, &Request::Status, T).await.unwrap_err();
        assert!(matches!(e, CallError::PermissionDenied { .. }), "{e:?}");
        srv.stop().await;
    }

    #[tokio::test]
    async fn timeout_when_the_daemon_is_slow() {
        let srv = Server::start(handler(|_req: Request| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Reply::ok("late")
        }));
        let e = call(&srv.path, &Request::Status, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Timeout { .. }), "{e:?}");
        let path = srv.path.clone();
        let e = tokio::task::spawn_blocking(move || {
            call_blocking(&path, &Request::Status, Duration::from_millis(100))
        })
        .await
        .unwrap()
        .unwrap_err();
        assert!(matches!(e, CallError::Timeout { .. }), "{e:?}");
        drop(srv);
    }

    #[test]
    fn socket_path_choice() {
        assert_eq!(
            choose_socket_path(true, Some("/run/user/1000".into()), Some(1000)),
            PathBuf::from("/run/khttpd/ctl.sock")
        );
        assert_eq!(
            choose_socket_path(false, Some("/run/user/1000".into()), Some(1000)),
            PathBuf::from("/run/user/1000/khttpd.sock")
        );
        assert_eq!(
            choose_socket_path(false, Some("relative".into()), Some(1000)),
            PathBuf::from("/tmp/khttpd-1000/ctl.sock")
        );
        assert_eq!(
            choose_socket_path(false, None, Some(1000)),
            PathBuf::from("/tmp/khttpd-1000/ctl.sock")
        );
        assert!(default_socket_path().is_absolute());
        assert!(current_uid().is_some());
    }

    /// Issue 16: a socket another local user could have planted is neither trusted nor replaced.
    #[test]
    fn sockets_in_directories_others_may_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl.sock");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_trusted(&sock).is_ok());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_trusted(&sock).unwrap_err();
        assert!(err.to_string().contains("writable by other users"), "{err}");
        assert!(bind(&sock).is_err(), "bind refuses too");
        // Sticky, as /tmp: fine until a socket there belongs to someone else.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_trusted(&sock).is_ok());
        if current_uid() == Some(0) {
            std::fs::write(&sock, b"").unwrap();
            std::os::unix::fs::chown(&sock, Some(65534), Some(65534)).unwrap();
            let err = check_trusted(&sock).unwrap_err();
            assert!(err.to_string().contains("another user"), "{err}");
        }
    }
}
