//! Per-daemon gauges and counters: kHTTPd's four queues made observable.
//!
//! Each main daemon owns one [`DaemonStats`]; only its own thread writes it, so the relaxed atomics
//! never bounce between cores. Readers (the status command) sum the daemons.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::daemon::latency::Histogram;

/// kHTTPd's stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// An open connection; counted as waiting for a head while it is in no other stage.
    WaitForHeaders,
    /// Requests whose static answer is being sent.
    DataSending,
    /// Requests with the backend.
    Userspace,
}

/// Where a request went, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// Served by the front.
    Static,
    /// Handed to the backend.
    Backend,
    /// Answered with an error by the front.
    Error,
}

impl RouteKind {
    /// The route's one name: in the access log, `X-Khttpd-Route` and the metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RouteKind::Static => "static",
            RouteKind::Backend => "backend",
            RouteKind::Error => "error",
        }
    }
}

/// One main daemon's gauges and counters.
#[derive(Debug, Default)]
pub(crate) struct DaemonStats {
    /// Connections open; those neither sending nor in userspace are waiting for headers.
    pub connections: AtomicI64,
    /// Gauge: sending static data.
    pub sending: AtomicI64,
    /// Gauge: with the backend.
    pub userspace: AtomicI64,
    /// Requests served statically.
    pub static_requests: AtomicU64,
    /// Requests handed to the backend.
    pub backend_requests: AtomicU64,
    /// Requests answered with a front error.
    pub error_requests: AtomicU64,
    /// Responses by status class: 1xx..5xx at index 1..5.
    pub status_class: [AtomicU64; 6],
    /// Body bytes announced in responses.
    pub bytes_out: AtomicU64,
    /// Requests the backend could not answer (refused, reset, timeout, queue full, garbage).
    pub backend_errors: AtomicU64,
    /// Time to answer what the front answered itself (static and its own errors): the whole
    /// answer on the fast path, the response head on hyper's.
    pub latency_front: Histogram,
    /// Time to answer backend requests, from the request's head to the answer (or its head).
    pub latency_backend: Histogram,
    /// The backend's time to its response head, from sending the request (time to first byte).
    pub upstream_head: Histogram,
}

impl DaemonStats {
    /// Counts one response.
    pub(crate) fn count(&self, kind: RouteKind, status: u16, body_len: u64) {
        let c = match kind {
            RouteKind::Static => &self.static_requests,
            RouteKind::Backend => &self.backend_requests,
            RouteKind::Error => &self.error_requests,
        };
        c.fetch_add(1, Relaxed);
        let class = usize::from(status / 100).min(5);
        self.status_class[class].fetch_add(1, Relaxed);
        self.bytes_out.fetch_add(body_len, Relaxed);
    }

    /// Counts how long one answer took.
    pub(crate) fn observe(&self, kind: RouteKind, took: std::time::Duration) {
        match kind {
            RouteKind::Backend => self.latency_backend.observe(took),
            RouteKind::Static | RouteKind::Error => self.latency_front.observe(took),
        }
    }

    /// Connections waiting for a request head: kHTTPd's WaitForHeaders queue, derived rather than
    /// tracked so that it can never drift from the other gauges.
    pub(crate) fn waiting(&self) -> i64 {
        let busy = self.sending.load(Relaxed) + self.userspace.load(Relaxed);
        (self.connections.load(Relaxed) - busy).max(0)
    }

    fn gauge(&self, stage: Stage) -> &AtomicI64 {
        match stage {
            Stage::WaitForHeaders => &self.connections,
            Stage::DataSending => &self.sending,
            Stage::Userspace => &self.userspace,
        }
    }

    /// Moves one unit into `stage` until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>, stage: Stage) -> StageGuard {
        self.gauge(stage).fetch_add(1, Relaxed);
        StageGuard {
            stats: self.clone(),
            stage,
        }
    }
}

/// Holds one unit of a stage gauge.
#[derive(Debug)]
pub(crate) struct StageGuard {
    stats: Arc<DaemonStats>,
    stage: Stage,
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        self.stats.gauge(self.stage).fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_move_gauges() {
        let s = Arc::new(DaemonStats::default());
        let g = s.enter(Stage::DataSending);
        assert_eq!(s.sending.load(Relaxed), 1);
        drop(g);
        assert_eq!(s.sending.load(Relaxed), 0);
        s.count(RouteKind::Static, 304, 0);
        s.count(RouteKind::Error, 404, 10);
        assert_eq!(s.status_class[3].load(Relaxed), 1);
        assert_eq!(s.status_class[4].load(Relaxed), 1);
        assert_eq!(s.bytes_out.load(Relaxed), 10);
    }
}
