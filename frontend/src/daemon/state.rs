//! What the management daemon shares with the main daemons.
//!
//! The configuration in force is one `Arc<Runtime>` behind an `ArcSwap`: `khttpd-ctl set` and `reload`
//! build a complete new one and swap it in, so every request sees one consistent configuration, and
//! requests already running finish with the one they started with. Counters, the access log and the
//! connection count outlive swaps and stop/start cycles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use khttpd_bridge::Upstreams;

use crate::config::Config;
use crate::daemon::maxconnect::OpenConnections;
use crate::daemon::stats::DaemonStats;
use crate::logging::access_log::AccessLog;
use crate::sending::static_file::Cache;

/// One consistent configuration and what is built from it.
pub(crate) struct Runtime {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The backends (None without any): concurrency limits, health and counters, shared by all daemons.
    pub upstreams: Option<Arc<Upstreams>>,
    /// Distinguishes this configuration's cached routing verdicts from any other's: a verdict made
    /// under an old `dynamic` list must never serve a now-dynamic file as source.
    pub generation: u64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the run-time pieces for `config`, keeping `previous`'s backends (their pools, health and
    /// counters) when their settings did not change.
    pub(crate) fn new(config: Config, previous: Option<&Runtime>) -> Runtime {
        let upstreams = match previous.and_then(|p| p.upstreams.as_ref()) {
            Some(u) if *u.config() == config.bridge => Some(u.clone()),
            _ if config.bridge.backends.is_empty() => None,
            _ => Some(Upstreams::new(config.bridge.clone())),
        };
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        Runtime {
            config: Arc::new(config),
            upstreams,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// State shared by the management daemon and every main daemon.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The configuration in force, swapped atomically.
    pub current: ArcSwap<Runtime>,
    /// The Logging stage.
    pub access_log: Arc<AccessLog>,
    /// Connections open over all main daemons (maxconnect).
    pub open: Arc<OpenConnections>,
    /// Each main daemon's counters, by daemon number.
    pub stats: Vec<Arc<DaemonStats>>,
    /// File bodies, compressed variants, listings and routing verdicts (sized at start).
    pub cache: Arc<Cache>,
    /// Apache's verdicts on static URLs (sized at start; `khttpd-ctl flush` empties it).
    pub verifier: Arc<crate::route::verify::Verifier>,
    /// Whether the main daemons accept new connections: false while stopped or draining, for
    /// `/healthz`, which must answer at once even while the management daemon waits for a drain.
    pub serving: std::sync::atomic::AtomicBool,
    /// Request bodies read whole before the backend is asked, and their temporary files.
    pub uploads: Arc<crate::userspace::upload::UploadStats>,
    /// The TLS port the main daemons listen on (0 when none): where `--redirect-https` sends
    /// clients, also when `--tls-port 0` let the kernel choose it.
    pub tls_port: std::sync::atomic::AtomicU16,
}

impl Shared {
    /// State for `threads` main daemons.
    pub(crate) fn new(runtime: Runtime, access_log: Arc<AccessLog>, threads: usize) -> Arc<Shared> {
        let cache = Cache::new(runtime.config.cache.clone());
        let verifier = crate::route::verify::Verifier::new(
            runtime.config.verify_max,
            runtime.config.verify_probes,
        );
        Arc::new(Shared {
            cache,
            verifier,
            serving: std::sync::atomic::AtomicBool::new(false),
            uploads: Arc::default(),
            tls_port: std::sync::atomic::AtomicU16::new(0),
            current: ArcSwap::from_pointee(runtime),
            access_log,
            open: Arc::new(OpenConnections::default()),
            stats: (0..threads)
                .map(|_| Arc::new(DaemonStats::default()))
                .collect(),
        })
    }

    /// The configuration in force now.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.current.load().config.clone()
    }
}
