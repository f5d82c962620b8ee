//! The control socket end to end: server and client over a real Unix socket.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::client::*;
use super::protocol::*;
use super::server::*;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
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
    let reply =
        tokio::task::spawn_blocking(move || call_blocking(&path, &Request::Get { key: None }, T))
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
