//! End-to-end test harness for khttpd-front.
//!
//! The harness drives the *real* artefacts over *real* sockets: the
//! `khttpd-front` binary ([`front`]), a real Apache 2.4 + mod_php backend
//! ([`apache`]) and a deliberately dumb raw-bytes HTTP/1.1 client ([`http`])
//! so wire-level behaviour (framing, pipelining, keep-alive) is observed
//! exactly as a browser or proxy would see it, not through a client library
//! that normalises it away.
//!
//! Everything here is built to run in parallel: every server gets its own
//! port and its own temporary directory, and every wait has a deadline.

pub mod apache;
pub mod bins;
pub mod front;
pub mod http;
pub mod process;
pub mod proto;
pub mod readme;

pub use bins::binary;
pub use proto::Proto;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root (the directory holding the root `Cargo.toml`,
/// `www/`, `docker/`), independent of the directory the tests run in.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
        .to_path_buf()
}

/// A loopback TCP port that was free a moment ago.
///
/// Only for servers that cannot be told `--port 0` (Apache needs the number
/// in its config file). The kernel hands out ports round-robin, so a
/// collision with another process is unlikely; ports handed out earlier in
/// this process are never returned twice, so parallel tests in one test
/// binary cannot collide with each other.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local_addr of a freshly bound listener")
            .port();
        // Dropping the listener frees the port for the caller; remembering
        // it keeps a sibling test from being handed the same number.
        let mut seen = handed_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.insert(port) {
            return port;
        }
    }
}

/// Polls until something accepts TCP connections on `addr`, or `timeout`
/// passes. Returns whether it came up.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or `timeout` passes.
///
/// Servers log and exit asynchronously to the responses a test sees, so
/// assertions on logs or process state need a bounded retry, not a sleep.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Copies a directory tree where Apache's workers (www-data when root) can read it: directories
/// 0755, files 0644.
pub fn copy_readable(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    for e in entries {
        let e = e.expect("a directory entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("an entry's type").is_dir() {
            copy_readable(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest)
                .unwrap_or_else(|err| panic!("copying to {}: {err}", dest.display()));
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644))
                .unwrap_or_else(|err| panic!("chmod {}: {err}", dest.display()));
        }
    }
}
