//! What all main daemons share about the backends: concurrency slots, health and counters.

use crate::addr::BackendAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::balance;
use crate::config::BridgeConfig;
use crate::error::BridgeError;
use crate::spool::{SpoolCounts, SpoolLimits, SpoolStats};

/// The backends of one server, shared (behind an `Arc`) by every main daemon.
#[derive(Debug)]
pub struct Upstreams {
    cfg: BridgeConfig,
    backends: Vec<Arc<Backend>>,
    /// Answer buffering: its limits (from `cfg`) and counters.
    pub(crate) spool_limits: Arc<SpoolLimits>,
    pub(crate) spool_stats: Arc<SpoolStats>,
    /// Round-robin counter.
    next: AtomicUsize,
    /// Zero of the millisecond clock the cooldowns are kept in.
    epoch: Instant,
}

/// One backend's shared state.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) addr: BackendAddr,
    /// Whether its answers are read ahead of slow clients (`buffering`, or its own setting).
    pub(crate) buffering: bool,
    slots: Arc<Semaphore>,
    /// When its cooldown ends, in ms since [`Upstreams::epoch`]; 0 when it never failed.
    cooling_until: AtomicU64,
    pub(crate) counters: Counters,
}

/// A backend's counters; see [`BackendStats`] for their meaning.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) reset: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) bad_responses: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) idle_pooled: AtomicU64,
    pub(crate) discarded: AtomicU64,
}

/// One backend's counters, for the status command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    /// The backend.
    pub addr: BackendAddr,
    /// False while it is cooling down after a failure.
    pub healthy: bool,
    /// Whether its answers are read ahead of slow clients.
    pub buffering: bool,
    /// Requests sent its way (a failover counts on each backend tried).
    pub requests: u64,
    /// Requests holding one of its slots now (upgraded connections included).
    pub in_flight: u64,
    /// Requests sent again on a fresh connection after a reused one was found closed.
    pub retries: u64,
    /// Connections it refused (or that could not be opened).
    pub refused: u64,
    /// Connections it closed or reset before a complete response head.
    pub reset: u64,
    /// Connects and response heads that took longer than the timeout.
    pub timeouts: u64,
    /// Responses that were not valid HTTP/1.x.
    pub bad_responses: u64,
    /// Requests answered 503 because all its slots stayed busy.
    pub queue_full: u64,
    /// Idle keep-alive connections to it parked in the daemons' pools (an expired one counts
    /// until its daemon next takes from or parks into that pool).
    pub idle_pooled: u64,
    /// Connections closed instead of parked because the backend had sent more than its answer
    /// (or closed it) when the answer ended: never reused, so no client gets those bytes.
    pub discarded: u64,
}

/// A request's claim on one backend slot; frees it and the in-flight count when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    backend: Arc<Backend>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.backend
            .counters
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one pooled idle connection for as long as it lives.
#[derive(Debug)]
pub(crate) struct IdleMark(Arc<Backend>);

impl IdleMark {
    pub(crate) fn new(backend: Arc<Backend>) -> IdleMark {
        backend.counters.idle_pooled.fetch_add(1, Ordering::Relaxed);
        IdleMark(backend)
    }
}

impl Drop for IdleMark {
    fn drop(&mut self) {
        self.0.counters.idle_pooled.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstreams {
    /// Shared state for the backends of `cfg`.
    pub fn new(cfg: BridgeConfig) -> Arc<Upstreams> {
        let slots = cfg.max_conns.clamp(1, Semaphore::MAX_PERMITS);
        let backends = cfg
            .backends
            .iter()
            .map(|&addr| {
                let buffering = cfg
                    .buffering_by_backend
                    .iter()
                    .find(|(a, _)| *a == addr)
                    .map_or(cfg.buffering, |&(_, on)| on);
                Arc::new(Backend {
                    addr,
                    buffering,
                    slots: Arc::new(Semaphore::new(slots)),
                    cooling_until: AtomicU64::new(0),
                    counters: Counters::default(),
                })
            })
            .collect();
        Arc::new(Upstreams {
            spool_limits: Arc::new(SpoolLimits::of(&cfg)),
            spool_stats: Arc::default(),
            cfg,
            backends,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    /// Whether backend `i`'s answers are read ahead of slow clients.
    pub(crate) fn buffers(&self, i: usize) -> bool {
        self.backends[i].buffering
    }

    /// Answer buffering's counters.
    pub fn spool(&self) -> SpoolCounts {
        self.spool_stats.counts()
    }

    /// Every backend's counters, in configuration order.
    pub fn snapshot(&self) -> Vec<BackendStats> {
        let now = self.now_ms();
        self.backends
            .iter()
            .map(|b| {
                let c = &b.counters;
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                BackendStats {
                    addr: b.addr,
                    healthy: b.cooling_until.load(Ordering::Relaxed) <= now,
                    buffering: b.buffering,
                    requests: get(&c.requests),
                    in_flight: get(&c.in_flight),
                    retries: get(&c.retries),
                    refused: get(&c.refused),
                    reset: get(&c.reset),
                    timeouts: get(&c.timeouts),
                    bad_responses: get(&c.bad_responses),
                    queue_full: get(&c.queue_full),
                    idle_pooled: get(&c.idle_pooled),
                    discarded: get(&c.discarded),
                }
            })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.backends.len()
    }

    pub(crate) fn backend(&self, i: usize) -> &Arc<Backend> {
        &self.backends[i]
    }

    /// Milliseconds since the epoch, starting at 1 so 0 can mean "never failed".
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// The next backend for a request (see [`balance::pick`]), counted as a request to it.
    pub(crate) fn pick(&self, tried: &[usize]) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let cooling: Vec<u64> = self
            .backends
            .iter()
            .map(|b| b.cooling_until.load(Ordering::Relaxed))
            .collect();
        let i = balance::pick(start, self.now_ms(), &cooling, tried)?;
        self.count_request(i);
        Some(i)
    }

    /// Counts a request sent to backend `i`.
    pub(crate) fn count_request(&self, i: usize) {
        self.backends[i]
            .counters
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Waits up to the queue timeout for one of backend `i`'s slots.
    pub(crate) async fn acquire(&self, i: usize) -> Result<Slot, BridgeError> {
        let backend = &self.backends[i];
        let permit = match Arc::clone(&backend.slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let wait = Arc::clone(&backend.slots).acquire_owned();
                match tokio::time::timeout(self.cfg.queue_timeout, wait).await {
                    Ok(Ok(p)) => p,
                    // The semaphore is never closed; treat it like a full queue all the same.
                    Ok(Err(_)) | Err(_) => {
                        backend.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(backend = %backend.addr, "backend queue full");
                        return Err(BridgeError::QueueFull);
                    }
                }
            }
        };
        backend.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            backend: Arc::clone(backend),
            _permit: permit,
        })
    }

    /// Counts `err` against backend `i` and starts its cooldown when the backend is to blame.
    /// `fresh`: the connection was new, so a reset says something about the backend (a reused
    /// one may simply have timed out on the backend's side).
    pub(crate) fn record_failure(&self, i: usize, err: &BridgeError, fresh: bool) {
        let backend = &self.backends[i];
        let c = &backend.counters;
        let counter = match err {
            BridgeError::Refused(_) => Some(&c.refused),
            BridgeError::Reset(_) => Some(&c.reset),
            BridgeError::Timeout(_) => Some(&c.timeouts),
            BridgeError::BadResponse(_) => Some(&c.bad_responses),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let blame = err.marks_failed() && (fresh || !matches!(err, BridgeError::Reset(_)));
        if !blame {
            return;
        }
        let now = self.now_ms();
        let cooldown = u64::try_from(self.cfg.fail_cooldown.as_millis()).unwrap_or(u64::MAX);
        let before = backend
            .cooling_until
            .swap(now.saturating_add(cooldown), Ordering::Relaxed);
        if before <= now {
            tracing::warn!(
                backend = %backend.addr,
                error = %err,
                cooldown_ms = cooldown,
                "backend marked failed"
            );
        }
    }

    /// Ends backend `i`'s cooldown after it answered.
    pub(crate) fn record_success(&self, i: usize) {
        let backend = &self.backends[i];
        if backend.cooling_until.load(Ordering::Relaxed) != 0 {
            backend.cooling_until.store(0, Ordering::Relaxed);
            tracing::info!(backend = %backend.addr, "backend answering again");
        }
    }

    pub(crate) fn count_retry(&self, i: usize) {
        self.backends[i]
            .counters
            .retries
            .fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn upstreams(n: usize, max_conns: usize) -> Arc<Upstreams> {
        Upstreams::new(BridgeConfig {
            backends: (0..n)
                .map(|i| {
                    BackendAddr::from(std::net::SocketAddr::from((
                        [127, 0, 0, 1],
                        9000 + i as u16,
                    )))
                })
                .collect(),
            max_conns,
            queue_timeout: Duration::from_millis(50),
            fail_cooldown: Duration::from_secs(60),
            ..BridgeConfig::default()
        })
    }

    #[tokio::test]
    async fn slots_count_in_flight_and_fill_up() {
        let up = upstreams(1, 2);
        let a = up.acquire(0).await.unwrap();
        let _b = up.acquire(0).await.unwrap();
        assert_eq!(up.snapshot()[0].in_flight, 2);
        let e = up.acquire(0).await.unwrap_err();
        assert!(matches!(e, BridgeError::QueueFull));
        assert_eq!(up.snapshot()[0].queue_full, 1);
        drop(a);
        assert_eq!(up.snapshot()[0].in_flight, 1);
        assert!(up.acquire(0).await.is_ok());
    }

    #[test]
    fn failures_cool_a_backend_down_and_success_ends_it() {
        let up = upstreams(2, 1);
        let refused = BridgeError::Refused(std::io::ErrorKind::ConnectionRefused.into());
        up.record_failure(0, &refused, true);
        let s = up.snapshot();
        assert!(!s[0].healthy && s[1].healthy);
        assert_eq!(s[0].refused, 1);
        assert_eq!(up.pick(&[]), Some(1));
        assert_eq!(up.pick(&[]), Some(1));
        up.record_success(0);
        assert!(up.snapshot()[0].healthy);
    }

    #[test]
    fn a_reset_on_a_reused_connection_is_counted_but_not_blamed() {
        let up = upstreams(1, 1);
        let reset = BridgeError::Reset("closed".into());
        up.record_failure(0, &reset, false);
        let s = &up.snapshot()[0];
        assert!(s.healthy);
        assert_eq!(s.reset, 1);
        up.record_failure(0, &reset, true);
        assert!(!up.snapshot()[0].healthy);
    }

    #[test]
    fn zero_max_conns_still_allows_one_request() {
        let up = upstreams(1, 0);
        assert_eq!(up.backend(0).slots.available_permits(), 1);
    }
}
