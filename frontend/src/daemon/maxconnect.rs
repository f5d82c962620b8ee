//! kHTTPd's maxconnect: the connections open over all main daemons, counted with one atomic at
//! accept and at close only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Connections open over all main daemons, for maxconnect: one atomic at accept and close only.
#[derive(Debug, Default)]
pub(crate) struct OpenConnections(AtomicUsize);

impl OpenConnections {
    /// Takes a slot unless `max` are open.
    pub(crate) fn try_acquire(self: &Arc<Self>, max: usize) -> Option<Slot> {
        if self.0.fetch_add(1, Ordering::AcqRel) >= max {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone()))
    }

    /// Connections open now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One open connection's share of maxconnect.
pub(crate) struct Slot(Arc<OpenConnections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}
