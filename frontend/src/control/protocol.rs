//! The control protocol: one JSON [`Request`] per connection and one JSON [`Reply`], each a single
//! line, over a Unix stream socket of mode 0600 (only the user that started the server, and root,
//! may steer it). For example `{"cmd":"set","key":"maxconnect","value":"500"}` →
//! `{"ok":true,"message":"maxconnect = 500"}`; `socat - UNIX-CONNECT:/run/khttpd/ctl.sock` works
//! too. Also where the socket is, and the check that nobody else could have planted it.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest request line the daemon reads; a request is a few words, so more is a mistake or abuse.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Largest reply a client reads; `status` of 1024 main daemons stays far below it.
pub const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Time a connection has to send its request, and the daemon to write its reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

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

pub(super) fn encode(req: &Request) -> Vec<u8> {
    // A Request holds only strings; serialising it cannot fail.
    let mut line = serde_json::to_vec(req).unwrap_or_default();
    line.push(b'\n');
    line
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

pub(super) fn choose_socket_path(
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
pub(super) fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Whether `uid` may create entries in a directory with this metadata. Group membership is not
/// checked (it needs getgroups); a group-writable-only directory falls through to the next choice.
fn writable(m: &std::fs::Metadata, uid: Option<u32>) -> bool {
    uid == Some(0) || (uid == Some(m.uid()) && m.mode() & 0o200 != 0) || m.mode() & 0o002 != 0
}

pub(super) fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
}
