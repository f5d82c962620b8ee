//! kHTTPd's Logging stage, once for every answer, whichever transport wrote it (the fast path,
//! the relay, hyper over HTTP/1.1 or HTTP/2, or hyper's own 400/431): the answer is counted in
//! its route and status class, its latency observed, and its access-log line completed and
//! queued.

use std::time::{Duration, Instant};

use khttpd_bridge::Upstream;

use crate::daemon::stats::{DaemonStats, RouteKind};
use crate::logging::access_log::AccessLog;
use crate::logging::log_line::LogRecord;

/// What an answer came to.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub kind: RouteKind,
    pub status: u16,
    /// Body bytes: those sent, or announced when counted before the body went out.
    pub bytes: u64,
    /// The backend that answered, if one did.
    pub upstream: Option<Upstream>,
    /// The id the backend request carried.
    pub request_id: Option<String>,
}

impl Outcome {
    pub(crate) fn new(kind: RouteKind, status: u16, bytes: u64) -> Outcome {
        Outcome {
            kind,
            status,
            bytes,
            upstream: None,
            request_id: None,
        }
    }
}

/// Counts the answer and observes how long it took (and its backend's time to a head).
pub(crate) fn count(stats: &DaemonStats, o: &Outcome, took: Duration) {
    stats.count(o.kind, o.status, o.bytes);
    stats.observe(o.kind, took);
    if let Some(up) = &o.upstream {
        stats.upstream_head.observe(up.head_time);
    }
}

/// Completes the access-log line with the outcome and queues it.
pub(crate) fn log(log: &AccessLog, mut record: LogRecord, o: &Outcome, started: Instant) {
    record.status = o.status;
    record.bytes = o.bytes;
    record.route = o.kind.name();
    record.duration = started.elapsed();
    if o.request_id.is_some() {
        record.request_id.clone_from(&o.request_id);
    }
    if let Some(up) = &o.upstream {
        record.upstream = Some(up.addr);
        record.upstream_time = Some(up.head_time);
    }
    log.log(record);
}

/// [`count`] and [`log`] at once, for answers written whole.
pub(crate) fn finish(
    stats: &DaemonStats,
    access_log: &AccessLog,
    record: Option<LogRecord>,
    o: &Outcome,
    started: Instant,
) {
    count(stats, o, started.elapsed());
    if let Some(record) = record {
        log(access_log, record, o, started);
    }
}
