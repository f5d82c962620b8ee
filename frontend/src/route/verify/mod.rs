//! Verification: Apache is the authority on what a URL means.
//!
//! The front cannot read Apache's main configuration (`<Directory>`, `<Files>`, `<Location>`
//! rules, `AddType application/x-httpd-php .html`, handlers on upload directories) nor run its
//! `.htaccess` rewrites and auth. So, with a backend, a URL the local rules call static is served
//! by the front only after Apache has shown that it sends *that file, as it is on disk, to an
//! anonymous outside client*: a probe request without cookies or credentials, from an outside
//! address (`X-Forwarded-For`, or the PROXY header when the bridge speaks it), asking a Range of
//! the first [`PROBE_BYTES`]. The evidence is a 200 or 206 with exactly the file's bytes and size,
//! no `Set-Cookie`, no `WWW-Authenticate`, no `Vary` on `Cookie` or `Authorization`, no content
//! coding. A directory the front would list needs Apache's own listing (mod_autoindex's
//! "Index of" page). Anything else, a timeout or an error leaves the URL with the backend.
//!
//! A verdict belongs to the URL path, the file's identity (device, inode, size, mtime) and the
//! `.htaccess` chain above it; it expires after `--verify-ttl` and `khttpd-ctl flush` drops them
//! all. Until a verdict is positive and current, requests go to the backend as they came.
//!
//! This file keeps the verdicts and runs the probes; [`probe`] asks Apache and judges its answer.

mod probe;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::route::decide::{ListingDir, StaticFile};
use probe::{Probe, ProbeKind};

/// Most probes waiting for their turn (beyond the `--verify-probes` running): a URL that finds
/// the queue full stays with the backend until a later request asks again.
pub(crate) const PENDING_MAX: u64 = 4096;

/// How long a failed probe (timeout, refused, unparsable) keeps the URL with the backend before
/// the next try, at most: long enough not to hammer a backend that is down.
const ERROR_HOLD: Duration = Duration::from_secs(5);

/// What a verdict is bound to: the file (or directory) as it was when Apache was asked, and the
/// `.htaccess` chain above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evidence {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: SystemTime,
    guards: u64,
    listing: bool,
}

impl Evidence {
    /// A file's evidence.
    pub(crate) fn of_file(f: &StaticFile) -> Evidence {
        Evidence {
            dev: f.meta.dev,
            ino: f.meta.ino,
            len: f.meta.len,
            mtime: f.meta.mtime,
            guards: f.guards,
            listing: false,
        }
    }

    /// A listed directory's evidence (its mtime changes when entries come or go).
    pub(crate) fn of_listing(d: &ListingDir) -> Evidence {
        Evidence {
            dev: d.meta.dev,
            ino: d.meta.ino,
            len: d.meta.len,
            mtime: d.meta.mtime,
            guards: d.guards,
            listing: true,
        }
    }
}

/// What a static candidate is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// A file (a directory's index file included: the URL is the directory's).
    File(&'a StaticFile),
    /// A directory the front would list.
    Listing(&'a ListingDir),
}

impl Target<'_> {
    fn url(&self) -> &str {
        match self {
            Target::File(f) => &f.url,
            Target::Listing(d) => &d.url,
        }
    }

    fn evidence(&self) -> Evidence {
        match self {
            Target::File(f) => Evidence::of_file(f),
            Target::Listing(d) => Evidence::of_listing(d),
        }
    }
}

/// The state of a URL's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Apache serves this file as it is: the front may.
    Verified,
    /// Apache does something else with it (or the probe failed): the backend's.
    Refused,
    /// No current verdict for this file version: the backend's, and a probe is due.
    Unknown,
}

/// What a verdict is kept by: the client's `Host` as sent and the canonical path. Apache may answer
/// the same path differently per virtual host, so a verdict obtained with one `Host` says nothing
/// about another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    host: Box<str>,
    path: Box<str>,
}

/// [`Key`] borrowed, so a lookup allocates nothing; hashes as `Key` does (str fields in order).
#[derive(Hash)]
struct KeyRef<'a> {
    host: &'a str,
    path: &'a str,
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *key.host == *self.host && *key.path == *self.path
    }
}

impl KeyRef<'_> {
    fn owned(&self) -> Key {
        Key {
            host: self.host.into(),
            path: self.path.into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Verdict {
    evidence: Evidence,
    positive: bool,
    expires: Instant,
    epoch: u64,
}

#[derive(Debug, Default)]
struct Counters {
    verified: AtomicU64,
    refused: AtomicU64,
    expired: AtomicU64,
    probes: AtomicU64,
    probe_errors: AtomicU64,
    in_flight: AtomicU64,
    flushes: AtomicU64,
}

/// Counters for `khttpd-ctl status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct VerifyStats {
    /// Probes whose answer was the file as it is on disk.
    pub verified: u64,
    /// Probes whose answer was anything else (403, 401, a redirect, other bytes, PHP output).
    pub refused: u64,
    /// Verdicts found past their time (or from before a flush) and asked again.
    pub expired: u64,
    /// Probes sent.
    pub probes: u64,
    /// Probes that failed (refused connection, timeout, unreadable answer): the URL stays with the
    /// backend.
    pub probe_errors: u64,
    /// Probes running now.
    pub in_flight: u64,
    /// Verdicts held.
    pub entries: u64,
    /// `khttpd-ctl flush` calls.
    pub flushes: u64,
}

/// Apache's verdicts, shared by every main daemon; bounded like every cache.
pub(crate) struct Verifier {
    verdicts: quick_cache::sync::Cache<Key, Verdict>,
    in_flight: Mutex<HashSet<Key>>,
    /// At most `--verify-probes` probes talk to the backend at once; the others wait here.
    permits: tokio::sync::Semaphore,
    epoch: AtomicU64,
    counters: Counters,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("entries", &self.verdicts.len())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Holds at most `max` verdicts (the least used go first) and runs at most `probes` probes
    /// at once.
    pub(crate) fn new(max: usize, probes: usize) -> Arc<Verifier> {
        Arc::new(Verifier {
            verdicts: quick_cache::sync::Cache::new(max.max(1)),
            in_flight: Mutex::new(HashSet::new()),
            permits: tokio::sync::Semaphore::new(probes.max(1)),
            epoch: AtomicU64::new(0),
            counters: Counters::default(),
        })
    }

    /// The verdict for `path` asked with `host` as `evidence` stands now.
    pub(crate) fn check(&self, host: &str, path: &str, evidence: &Evidence, now: Instant) -> Check {
        let key = KeyRef { host, path };
        let Some(v) = self.verdicts.get(&key) else {
            return Check::Unknown;
        };
        if v.epoch != self.epoch.load(Ordering::Relaxed) || now >= v.expires {
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
            self.verdicts.remove(&key);
            return Check::Unknown;
        }
        match (v.evidence == *evidence, v.positive) {
            (false, _) => Check::Unknown,
            (true, true) => Check::Verified,
            (true, false) => Check::Refused,
        }
    }

    /// Whether the front may answer `target` itself. A URL without a current verdict goes to the
    /// backend, and a probe is started for it (at most `--verify-probes` at once, one per URL).
    /// `host` is the client's Host, which the probe sends too. Verdicts are kept by that Host and
    /// the target's canonical path, whatever spelling the client used.
    pub(crate) fn gate(
        self: &Arc<Self>,
        host: Option<&str>,
        target: Target<'_>,
        cfg: &Arc<Config>,
    ) -> bool {
        let evidence = target.evidence();
        let path = target.url();
        let host = host.unwrap_or("");
        match self.check(host, path, &evidence, Instant::now()) {
            Check::Verified => true,
            Check::Refused => false,
            Check::Unknown => {
                self.start_probe(path, host, target, evidence, cfg);
                false
            }
        }
    }

    /// Drops every verdict (after `apachectl graceful`): from now on each URL is asked again.
    pub(crate) fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.verdicts.clear();
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters.
    pub(crate) fn stats(&self) -> VerifyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VerifyStats {
            verified: get(&c.verified),
            refused: get(&c.refused),
            expired: get(&c.expired),
            probes: get(&c.probes),
            probe_errors: get(&c.probe_errors),
            in_flight: get(&c.in_flight),
            entries: self.verdicts.len() as u64,
            flushes: get(&c.flushes),
        }
    }

    fn start_probe(
        self: &Arc<Self>,
        path: &str,
        host: &str,
        target: Target<'_>,
        evidence: Evidence,
        cfg: &Arc<Config>,
    ) {
        if self.counters.in_flight.load(Ordering::Relaxed) >= PENDING_MAX {
            return;
        }
        {
            let mut running = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !running.insert(KeyRef { host, path }.owned()) {
                return;
            }
        }
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        self.counters.probes.fetch_add(1, Ordering::Relaxed);
        let spec = Probe {
            path: path.to_owned(),
            host: host.to_owned(),
            kind: match target {
                Target::File(f) => ProbeKind::File {
                    file: f.path.clone(),
                    meta: f.meta,
                    len: f.meta.len,
                },
                Target::Listing(d) => ProbeKind::Listing {
                    display: d.display.clone(),
                },
            },
        };
        let epoch = self.epoch.load(Ordering::Relaxed);
        let (this, cfg) = (Arc::clone(self), Arc::clone(cfg));
        tokio::spawn(async move {
            // Waits its turn: a burst of new URLs (a crawler, a deploy) is asked in order.
            let permit = this.permits.acquire().await;
            let outcome = tokio::time::timeout(cfg.bridge.timeout, spec.run(&cfg)).await;
            drop(permit);
            let now = Instant::now();
            let (positive, expires) = match outcome {
                Ok(Ok(true)) => {
                    this.counters.verified.fetch_add(1, Ordering::Relaxed);
                    (true, now + cfg.verify_ttl)
                }
                Ok(Ok(false)) => {
                    this.counters.refused.fetch_add(1, Ordering::Relaxed);
                    (false, now + cfg.verify_ttl)
                }
                Ok(Err(e)) => {
                    tracing::debug!(path = %spec.path, error = %e, "verification probe failed");
                    this.counters.probe_errors.fetch_add(1, Ordering::Relaxed);
                    (false, now + cfg.verify_ttl.min(ERROR_HOLD))
                }
                Err(_) => {
                    tracing::debug!(path = %spec.path, "verification probe timed out");
                    this.counters.probe_errors.fetch_add(1, Ordering::Relaxed);
                    (false, now + cfg.verify_ttl.min(ERROR_HOLD))
                }
            };
            // A flush while the probe ran: its answer may predate Apache's new configuration.
            let key = KeyRef {
                host: &spec.host,
                path: &spec.path,
            }
            .owned();
            if this.epoch.load(Ordering::Relaxed) == epoch {
                this.verdicts.insert(
                    key.clone(),
                    Verdict {
                        evidence,
                        positive,
                        expires,
                        epoch,
                    },
                );
            }
            this.in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            this.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_file_the_clock_and_flushes() {
        let v = Verifier::new(16, 2);
        let ev = Evidence {
            dev: 1,
            ino: 2,
            len: 3,
            mtime: SystemTime::UNIX_EPOCH,
            guards: 0,
            listing: false,
        };
        let now = Instant::now();
        let key = || {
            KeyRef {
                host: "h",
                path: "/a",
            }
            .owned()
        };
        assert_eq!(v.check("h", "/a", &ev, now), Check::Unknown);
        v.verdicts.insert(
            key(),
            Verdict {
                evidence: ev,
                positive: true,
                expires: now + Duration::from_secs(60),
                epoch: 0,
            },
        );
        assert_eq!(v.check("h", "/a", &ev, now), Check::Verified);
        assert_eq!(v.check("other", "/a", &ev, now), Check::Unknown, "per Host");
        let changed = Evidence { len: 4, ..ev };
        assert_eq!(
            v.check("h", "/a", &changed, now),
            Check::Unknown,
            "new version"
        );
        let guarded = Evidence { guards: 9, ..ev };
        assert_eq!(
            v.check("h", "/a", &guarded, now),
            Check::Unknown,
            ".htaccess changed"
        );
        assert_eq!(
            v.check("h", "/a", &ev, now + Duration::from_secs(61)),
            Check::Unknown,
            "expired"
        );
        v.verdicts.insert(
            key(),
            Verdict {
                evidence: ev,
                positive: false,
                expires: now + Duration::from_secs(60),
                epoch: 0,
            },
        );
        assert_eq!(v.check("h", "/a", &ev, now), Check::Refused);
        v.flush();
        assert_eq!(v.check("h", "/a", &ev, now), Check::Unknown, "flushed");
        assert_eq!(v.stats().expired, 1);
    }
}
