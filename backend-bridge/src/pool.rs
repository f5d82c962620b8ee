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
/// last; with the other daemons' pools, never more than `--backend-max-conns` idle per backend.
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
        // The bound counts every daemon's idle connections to this backend (they all hold an
        // Apache worker): past it, this daemon's oldest goes, or this one if it has none.
        let all_idle = backend
            .counters
            .idle_pooled
            .load(std::sync::atomic::Ordering::Relaxed);
        if idle.len() >= self.max_idle || all_idle >= self.max_idle as u64 {
            if idle.is_empty() {
                return;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstreams::Upstreams;

    struct Fake;
    impl Reusable for Fake {
        fn alive(&self) -> bool {
            true
        }
    }

    /// Two daemons' pools together keep no more idle connections to a backend than its slots.
    #[test]
    fn idle_connections_are_bounded_over_all_daemons() {
        let up = Upstreams::new(crate::BridgeConfig {
            backends: vec!["127.0.0.1:9".parse().unwrap()],
            max_conns: 3,
            ..crate::BridgeConfig::default()
        });
        let backend = up.backend(0);
        let (a, b) = (
            Pool::<Fake>::new(1, Duration::from_secs(60), 3),
            Pool::<Fake>::new(1, Duration::from_secs(60), 3),
        );
        for _ in 0..5 {
            a.put(0, Fake, backend);
            b.put(0, Fake, backend);
        }
        let idle = |b: &Arc<Backend>| {
            b.counters
                .idle_pooled
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(idle(backend), 3);
        assert!(a.take(0).is_some());
        assert_eq!(idle(backend), 2);
        // Room again: the next one is parked.
        b.put(0, Fake, backend);
        assert_eq!(idle(backend), 3);
    }
}
