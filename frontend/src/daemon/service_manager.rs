//! Life under systemd: readiness, reload and stop notifications (`Type=notify`, the `sd-notify`
//! crate) and listening sockets handed over by socket activation (`LISTEN_FDS`, the `listenfd`
//! crate), so a restart loses no connection: the kernel keeps queueing them on systemd's socket
//! while the new process starts. Both are no-ops outside systemd.

use std::net::TcpListener;

use sd_notify::NotifyState;

/// Tells the service manager the server is up (`READY=1`), with a status line for `systemctl
/// status`.
pub(crate) fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins (`RELOADING=1`); [`ready`] ends it.
pub(crate) fn reloading() {
    notify(&[NotifyState::Reloading]);
}

/// The server is stopping (`STOPPING=1`): draining, then exit.
pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(state: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Listening sockets inherited from socket activation: the first is the plain port, the second
/// (if any) the TLS port, in the order of the `.socket` unit's `ListenStream=` lines.
#[derive(Debug)]
pub(crate) struct Inherited {
    /// The plain HTTP listener.
    pub plain: TcpListener,
    /// The TLS listener, when a second socket was passed.
    pub tls: Option<TcpListener>,
}

impl Inherited {
    /// The sockets passed by the service manager (`LISTEN_FDS`, for this very process), if any.
    pub(crate) fn from_env() -> std::io::Result<Option<Inherited>> {
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() == 0 {
            return Ok(None);
        }
        let Some(plain) = fds.take_tcp_listener(0)? else {
            return Ok(None);
        };
        let tls = if fds.len() > 1 {
            fds.take_tcp_listener(1)?
        } else {
            None
        };
        for l in std::iter::once(&plain).chain(tls.as_ref()) {
            // tokio needs them non-blocking; systemd passes them as they were made.
            l.set_nonblocking(true)?;
        }
        Ok(Some(Inherited { plain, tls }))
    }
}
