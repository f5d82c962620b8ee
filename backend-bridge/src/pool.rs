//! One main daemon's idle keep-alive connections, per backend. Only that daemon's thread
//! touches it, so its locks are never contended.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::connect::Sender;
use crate::upstreams::{Backend, IdleMark};

/// An idle connection and since when it is idle.
struct Idle {
    sender: Sender,
    since: Instant,
    _mark: IdleMark,
}

impl Idle {
    fn usable(&self, idle_timeout: Duration) -> bool {
        self.since.elapsed() < idle_timeout && !self.sender.is_closed() && self.sender.is_ready()
    }
}

/// Idle connections per backend index.
pub(crate) struct Pool {
    idle: Vec<Mutex<Vec<Idle>>>,
    idle_timeout: Duration,
    /// Most idle connections kept per backend: more could never be busy at once.
    max_idle: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("backends", &self.idle.len())
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl Pool {
    pub(crate) fn new(backends: usize, idle_timeout: Duration, max_idle: usize) -> Pool {
        Pool {
            idle: (0..backends).map(|_| Mutex::new(Vec::new())).collect(),
            idle_timeout,
            max_idle: max_idle.max(1),
        }
    }

    /// The most recently used live connection to backend `i`. Expired and closed ones are
    /// dropped on the way: a connection idle longer than the timeout is never used.
    pub(crate) fn take(&self, i: usize) -> Option<Sender> {
        let mut idle = self.idle[i].lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|c| c.usable(self.idle_timeout));
        idle.pop().map(|c| c.sender)
    }

    /// Parks a connection whose last exchange completed.
    pub(crate) fn put(&self, i: usize, sender: Sender, backend: &Arc<Backend>) {
        let mut idle = self.idle[i].lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|c| c.usable(self.idle_timeout));
        if idle.len() >= self.max_idle {
            // The oldest goes: it is the nearest to its idle timeout.
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
            _mark: IdleMark::new(Arc::clone(backend)),
        });
    }
}
