//! The content cache: one bounded, weighted cache shared by every main daemon.
//!
//! One [`quick_cache`] holds, under one byte budget (`size`):
//! - identity bodies of small files and their compressed variants, keyed by the file version's
//!   validator (device, inode, size, mtime with nanoseconds) and the coding. A changed file is a new
//!   key, so it is never served stale; the old version just ages out;
//! - "not worth compressing" markers, so a variant that did not pay is not tried on every request;
//! - rendered directory listings, keyed by the directory's version, format and displayed path;
//! - routing metadata per request path, with a freshness stamp.
//!
//! The cache is internally sharded, so main daemons reading it rarely meet on a lock. Loads and
//! compressions of one key are coalesced with quick_cache's placeholders: the first caller does the
//! work in a spawned task, the others wait for its value. The task is detached from the request, so
//! a client that leaves mid-compression does not waste the work, and a request waits for a
//! compression only up to `compress_wait` (brotli 11 takes seconds on a few megabytes): then it
//! gets the next-best representation while the work finishes for the requests after it. Each entry weighs its bytes on the
//! heap plus its slot, so the memory held stays under `size` plus quick_cache's fixed tables (a map
//! and ghost slots sized by `size`), whatever the working set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, OptionsBuilder};
use tokio::sync::Semaphore;

use crate::cache::keys::{FileKey, ListingKey};
use crate::cache::limits::{CacheConfig, LARGEST_PER_SHARD};
use crate::cache::map::{
    slot_bytes, ByBytes, Counters, Counting, Key, KeyRef, Map, Value, AVERAGE_ENTRY, HEADER_VALUES,
    MAX_SHARDS,
};

/// Counters for `khttpd-ctl status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheStats {
    /// Lookups answered from memory (negative entries included).
    pub hits: u64,
    /// Lookups that had to load, compress, render or re-stat.
    pub misses: u64,
    /// Entries pushed out to make room (and bodies too large to be admitted).
    pub evictions: u64,
    /// Weight held now, in bytes; never above `capacity`.
    pub bytes: u64,
    /// The byte budget in force (the configured size, rounded down to a multiple of the shards).
    pub capacity: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes of quick_cache's own tables (slots, ghosts and map), outside the budget.
    pub tables: u64,
    /// Compressions run.
    pub compressions: u64,
    /// Time spent in them, in milliseconds.
    pub compression_time_ms: u64,
    /// "Not worth compressing" entries held now.
    pub negative: u64,
    /// Compressions put off because every thread was busy and the queue full.
    pub compress_deferred: u64,
}

/// The shared content cache. `M` is the routing metadata type kept by [`ContentCache::put_fresh`].
pub(crate) struct ContentCache<M = ()> {
    pub(super) cfg: CacheConfig,
    pub(super) map: Map<M>,
    pub(super) counters: Arc<Counters>,
    pub(super) compress_slots: Arc<Semaphore>,
    /// Compressions waiting for one of `compress_slots`.
    pub(super) compress_waiting: Arc<AtomicUsize>,
}

impl<M> std::fmt::Debug for ContentCache<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentCache")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl<M: Clone + Send + Sync + 'static> ContentCache<M> {
    /// Builds the cache; share the `Arc` between all main daemons.
    pub(crate) fn new(cfg: CacheConfig) -> Arc<ContentCache<M>> {
        let largest = cfg.max_file + slot_bytes::<M>() + HEADER_VALUES;
        let fit = (cfg.size / largest.saturating_mul(LARGEST_PER_SHARD)).max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let wanted = usize::try_from(fit)
            .unwrap_or(usize::MAX)
            .min(cores * 4)
            .min(MAX_SHARDS);
        // A power of two (quick_cache rounds up otherwise) that divides the capacity exactly, so
        // the shards' budgets add up to no more than `size`.
        let shards = 1usize << wanted.ilog2();
        let capacity = cfg.size - cfg.size % shards as u64;
        let items = usize::try_from(cfg.size / AVERAGE_ENTRY)
            .unwrap_or(usize::MAX)
            .max(32 * shards);
        let counters = Arc::new(Counters::default());
        let options = OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(items)
            .weight_capacity(capacity)
            .build()
            .expect("cache options are positive by construction");
        let map = Cache::with_options(
            options,
            ByBytes,
            DefaultHashBuilder::default(),
            Counting(counters.clone()),
        );
        Arc::new(ContentCache {
            compress_slots: Arc::new(Semaphore::new(cfg.compress_threads.max(1))),
            compress_waiting: Arc::new(AtomicUsize::new(0)),
            cfg,
            map,
            counters,
        })
    }

    /// The limits in force.
    pub(crate) fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// A rendered listing, if one younger than `revalidate` is held.
    pub(crate) fn listing(&self, key: &ListingKey, now: Instant) -> Option<Bytes> {
        match self.map.get(&KeyRef::Listing(key)) {
            Some(Value::Listing { body, stamp }) if self.fresh(stamp, now) => {
                self.hit();
                Some(body)
            }
            _ => {
                self.miss();
                None
            }
        }
    }

    /// Keeps a rendered listing, stamped `now`.
    pub(crate) fn put_listing(&self, key: ListingKey, body: Bytes, now: Instant) {
        self.map
            .insert(Key::Listing(key), Value::Listing { body, stamp: now });
    }

    /// A snapshot of the counters and gauges.
    pub(crate) fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            bytes: self.map.weight(),
            capacity: self.map.capacity(),
            entries: self.map.len() as u64,
            tables: self.map.memory_used().total() as u64,
            compressions: c.compressions.load(Ordering::Relaxed),
            compression_time_ms: c.compression_nanos.load(Ordering::Relaxed) / 1_000_000,
            negative: c.negative.load(Ordering::Relaxed),
            compress_deferred: c.compress_deferred.load(Ordering::Relaxed),
        }
    }

    pub(super) fn hit(&self) {
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn fresh(&self, stamp: Instant, now: Instant) -> bool {
        now.saturating_duration_since(stamp) < self.cfg.revalidate
    }

    /// When the entries of version `key` must be read again: `None` when its mtime is at least
    /// `settle` away from now, so no write can hide in the same timestamp tick as our read.
    pub(super) fn racy_until(&self, key: &FileKey) -> Option<Instant> {
        let now = SystemTime::now();
        let distance = match now.duration_since(key.mtime) {
            Ok(age) => age,
            Err(future) => future.duration(),
        };
        if distance >= self.cfg.settle {
            return None;
        }
        let left = key
            .mtime
            .checked_add(self.cfg.settle)
            .and_then(|end| end.duration_since(now).ok())
            .unwrap_or_default();
        Some(Instant::now() + left)
    }
}
