//! One main daemon's idle keep-alive connections, per backend. Only that daemon's thread
//! touches it, so its locks are never contended.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::upstreams::{Backend, IdleMark};

/// A backend connection that can wait in a pool.
pub(crate) trait Reusable {
    /// Whether it can carry another request: still open, with nothing unexpected pending.
    fn alive(&self) -> bool;
}

/// Whether an idle backend socket is open with nothing to read: one `recv(MSG_PEEK)`. Bytes on an
/// idle connection are an answer to no request (a PHP script that wrote past its own
/// `Content-Length`, say); reused, they would be taken as the next client's answer. tokio's cached
/// readiness is not enough here: it lags until the reactor runs, so the kernel is asked.
pub(crate) fn socket_is_quiet(socket: &socket2::Socket) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket.peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// An idle connection and since when it is idle.
struct Idle<C> {
    conn: C,
    since: Instant,
    _mark: IdleMark,
}

impl<C: Reusable> Idle<C> {
    /// Not idle past the timeout. Liveness costs a system call, so it is checked only on the one
    /// connection taken, not on every one swept.
    fn fresh(&self, idle_timeout: Duration) -> bool {
        self.since.elapsed() < idle_timeout
    }
}

/// Idle connections per backend index: one pool, whether the relay or hyper's client used them
/// last, so idle connections never outnumber `--backend-max-conns` per daemon.
pub(crate) struct Pool<C> {
    idle: Vec<Mutex<Vec<Idle<C>>>>,
    idle_timeout: Duration,
    /// Most idle connections kept per backend: more could never be busy at once.
    max_idle: usize,
}

impl<C> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("backends", &self.idle.len())
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl<C: Reusable> Pool<C> {
    pub(crate) fn new(backends: usize, idle_timeout: Duration, max_idle: usize) -> Pool<C> {
        Pool {
            idle: (0..backends).map(|_| Mutex::new(Vec::new())).collect(),
            idle_timeout,
            max_idle: max_idle.max(1),
        }
    }

    /// The most recently used live connection to backend `i`. Expired and closed ones are
    /// dropped on the way: a connection idle longer than the timeout is never used.
    pub(crate) fn take(&self, i: usize) -> Option<C> {
        let mut idle = self.idle[i].lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|c| c.fresh(self.idle_timeout));
        // A closed one, or one with bytes nobody asked for, is dropped for the next.
        while let Some(c) = idle.pop() {
            if c.conn.alive() {
                return Some(c.conn);
            }
        }
        None
    }

    /// Parks a connection whose last exchange completed, unless something is already pending on
    /// it (then it is closed and counted in `discarded`).
    pub(crate) fn put(&self, i: usize, conn: C, backend: &Arc<Backend>) {
        if !conn.alive() {
            backend
                .counters
                .discarded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let mut idle = self.idle[i].lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|c| c.fresh(self.idle_timeout));
        if idle.len() >= self.max_idle {
            // The oldest goes: it is the nearest to its idle timeout.
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
            _mark: IdleMark::new(Arc::clone(backend)),
        });
    }
}
