//! The front as a library call, as mini-redis's `server::run(listener, shutdown)`: the main
//! daemons of a configuration on a listener the caller bound, until `shutdown` resolves, then the
//! in-flight requests get `--grace` to finish. Without the management daemon's parts (control
//! socket, admin listener, signals, privileges, reload), for embedding and for in-process tests;
//! the binary runs the same daemons under [`crate::daemon::manager::run`].

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::Config;
use crate::daemon::main_daemon::{self, Listeners};
use crate::daemon::state::{Runtime, Shared};
use crate::logging::access_log::AccessLog;

/// Access-log lines queued for the writer (`--log-queue`'s default).
const LOG_QUEUE: usize = 8192;

/// Serves `config` on `listener` (shared by `config.threads` main daemons; the HTTPS port, when
/// configured, is bound here) until `shutdown` resolves.
pub fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let log = AccessLog::start(
        config.access_log.clone(),
        config.log_format.clone(),
        LOG_QUEUE,
    )?;
    let threads = config.threads.max(1);
    let mut tls = match &config.tls {
        Some(t) => main_daemon::bind_group(t.addr, &config)
            .map_err(|e| io::Error::other(e.to_string()))?
            .into_iter()
            .map(Some)
            .collect(),
        None => Vec::new(),
    };
    tls.resize_with(threads, || None);
    listener.set_nonblocking(true)?;
    let listeners = tls
        .into_iter()
        .map(|tls| {
            Ok(Listeners {
                plain: listener.try_clone()?,
                tls,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    let shared = Shared::new(Runtime::new(config, None), log.clone(), threads);
    let daemons = main_daemon::start(listeners, shared.clone())?;
    shared.serving.store(true, Ordering::Relaxed);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(shutdown);
    shared.serving.store(false, Ordering::Relaxed);
    daemons.stop();
    log.flush_and_stop(Duration::from_secs(5));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// In-process: a front on a listener this test bound answers a static file and a missing
    /// one, and stops when told.
    #[test]
    fn serves_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
        let settings = crate::config::knobs::Settings::new(vec![
            "khttpd-front".into(),
            "--root".into(),
            dir.path().as_os_str().into(),
            "--threads".into(),
            "1".into(),
            "--grace".into(),
            "1".into(),
        ]);
        let (_, config) = settings.load().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            run(listener, config, async {
                let _ = stopped.await;
            })
        });
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("/hello.txt");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nhello\n"), "{ok}");
        assert!(get("/missing").starts_with("HTTP/1.1 404"));
        stop.send(()).unwrap();
        server.join().unwrap().unwrap();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "the port is closed once run returns"
        );
    }
}
