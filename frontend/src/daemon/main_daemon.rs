//! The main daemons: one thread per core, each with its own current-thread tokio runtime and its own
//! `SO_REUSEPORT` listener, as kHTTPd ran one MainDaemon per CPU. Nothing on the hot path is shared
//! between them: the kernel spreads connections over the listeners.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::config::Config;
use crate::conn::server;
use crate::daemon::state::Shared;
use crate::daemon::stats::DaemonStats;

/// Why the listeners could not be opened, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A privileged port without the privilege.
    #[error("cannot listen on {0}: permission denied; use a port above 1023 (--port 8080) or allow it with `sudo setcap cap_net_bind_service=+ep $(command -v khttpd-front)`")]
    Privileged(SocketAddr),
    /// Any other socket error.
    #[error("cannot listen on {0}: {1}")]
    Other(SocketAddr, io::Error),
}

/// One main daemon's listening sockets: plain HTTP, and HTTPS when a TLS port is set.
#[derive(Debug)]
pub(crate) struct Listeners {
    /// The plain HTTP port.
    pub plain: TcpListener,
    /// The TLS port, if any.
    pub tls: Option<TcpListener>,
}

/// Opens `cfg.threads` listeners on the same address with `SO_REUSEPORT` (and as many on the TLS
/// address when there is one). With port 0 the first listener picks the port and the others join
/// it.
pub(crate) fn bind(cfg: &Config) -> Result<Vec<Listeners>, BindError> {
    let plain = bind_group(cfg.listen, cfg)?;
    let mut tls = match &cfg.tls {
        Some(t) => bind_group(t.addr, cfg)?.into_iter().map(Some).collect(),
        None => Vec::new(),
    };
    tls.resize_with(plain.len(), || None);
    Ok(plain
        .into_iter()
        .zip(tls)
        .map(|(plain, tls)| Listeners { plain, tls })
        .collect())
}

/// `cfg.threads` listeners on `addr` (see [`bind`]).
pub(crate) fn bind_group(
    mut addr: SocketAddr,
    cfg: &Config,
) -> Result<Vec<TcpListener>, BindError> {
    // SO_REUSEPORT would let us join another server's port and split its traffic: first make sure
    // nobody listens there, with a plain socket that is closed again at once.
    if addr.port() != 0 {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .and_then(|s| {
                s.set_reuse_address(true)?;
                s.bind(&addr.into())?;
                s.listen(1)
            });
        if let Err(e) = probe {
            return Err(match e.kind() {
                io::ErrorKind::PermissionDenied => BindError::Privileged(addr),
                _ => BindError::Other(addr, e),
            });
        }
    }
    let mut out = Vec::with_capacity(cfg.threads);
    for _ in 0..cfg.threads {
        // Connections that sent nothing are held for the header timeout, as nginx's `deferred` does
        // with client_header_timeout: by then the daemon would have closed them anyway.
        let defer = if cfg.defer_accept {
            cfg.header_timeout.as_secs_f64().ceil() as u32
        } else {
            0
        };
        let l = bind_one(addr, cfg.backlog, defer).map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => BindError::Privileged(addr),
            _ => BindError::Other(addr, e),
        })?;
        if addr.port() == 0 {
            addr = l.local_addr().map_err(|e| BindError::Other(addr, e))?;
        }
        out.push(l);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr, backlog: i32, defer_accept: u32) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    set_defer_accept(&s, defer_accept)?;
    Ok(s.into())
}

/// TCP_DEFER_ACCEPT (0 = off): the kernel queues a connection for accept() only once its first
/// data has arrived, or `secs` have passed. A main daemon then wakes once per connection, when the
/// request is there to read, instead of once for the handshake and again for the request. On
/// loopback the wake-up of a sleeping daemon is paid on the client's CPU, which is why short
/// connections (`Connection: close`) gain.
#[allow(unsafe_code)]
fn set_defer_accept(s: &Socket, secs: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: `s` is an open socket for the whole call, and the option value is a live c_int
    // whose exact size is passed, as setsockopt(2) requires for TCP_DEFER_ACCEPT.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::addr_of!(value).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The running main daemons.
pub(crate) struct Daemons {
    threads: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// Starts one main daemon per listener; daemon `i` counts into `shared.stats[i]`.
pub(crate) fn start(listeners: Vec<Listeners>, shared: Arc<Shared>) -> io::Result<Daemons> {
    let (stop, stop_rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(listeners.len());
    for (i, l) in listeners.into_iter().enumerate() {
        let stats = shared.stats.get(i).cloned().unwrap_or_default();
        let shared = shared.clone();
        let stop_rx = stop_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("khttpd-main-{i}"))
            .spawn(move || run_daemon(l, shared, stats, stop_rx))?;
        threads.push(t);
    }
    Ok(Daemons { threads, stop })
}

fn run_daemon(
    l: Listeners,
    shared: Arc<Shared>,
    stats: Arc<DaemonStats>,
    stop: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a main daemon's runtime");
            return;
        }
    };
    rt.block_on(async move {
        let tls = match l.tls.map(tokio::net::TcpListener::from_std).transpose() {
            Ok(t) => t,
            Err(e) => return tracing::error!(error = %e, "cannot register the TLS listener"),
        };
        match tokio::net::TcpListener::from_std(l.plain) {
            Ok(l) => server::accept_loop(l, tls, shared, stats, stop).await,
            Err(e) => tracing::error!(error = %e, "cannot register the listener"),
        }
    });
}

impl Daemons {
    /// Stops accepting, lets in-flight requests finish within the grace period, and waits.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a main daemon panicked while stopping");
            }
        }
    }
}
