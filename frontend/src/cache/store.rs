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

use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::mem::size_of;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Equivalent, Lifecycle, OptionsBuilder, Weighter};
use tokio::sync::Semaphore;

use crate::cache::compress;
use crate::cache::negotiate::{negotiate, Encoding};
use crate::route::fs::Meta;

/// Bytes charged per entry for quick_cache's own bookkeeping beyond the slot itself (map bucket,
/// ring links, reference bits).
const BOOKKEEPING: u64 = 64;
/// Bytes charged per heap allocation (allocator header, `Bytes`' shared header).
const ALLOC: u64 = 32;
/// Generous heap bytes of a representation's four header values, for sizing shards.
const HEADER_VALUES: u64 = 4 * (ALLOC + 64);
/// Heap bytes assumed for one routing value (typically a canonical path and a content type),
/// which the cache cannot measure through a generic type.
const ROUTE_VALUE_HEAP: u64 = 256;
/// Average entry weight assumed when sizing quick_cache's tables and ghost list: a mix of small
/// files, variants and routing entries.
const AVERAGE_ENTRY: u64 = 8 * 1024;
/// Each shard holds at least this many of the largest entries, so a `max_file` body always fits.
const LARGEST_PER_SHARD: u64 = 8;
/// Upper bound on shards: more only multiplies the fixed tables.
const MAX_SHARDS: usize = 64;

/// The cache's limits. Every field is a documented knob with its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Total bytes the cache may hold (`--cache-size`; default 256 MiB; 0 disables caching but
    /// keeps coalescing).
    pub size: u64,
    /// Largest file whose body is cached, and largest sibling read into memory (`--cache-max-file`;
    /// default 2 MiB). Larger files are streamed from disk.
    pub max_file: u64,
    /// Smallest body worth compressing (`--compress-min`; default 256 bytes).
    pub compress_min: u64,
    /// How long routing metadata and rendered listings are used before the caller re-stats
    /// (default 1 s). A listing cannot be keyed on its entries' sizes, which change without
    /// touching the directory's mtime, so it expires too.
    pub revalidate: Duration,
    /// Entries of a file modified less than this long ago (or this far in the future) expire
    /// this long after its mtime and are read again (default 1 s): file-system timestamps are
    /// coarse, so a same-size write landing in the same tick as our read would otherwise leave the
    /// old bytes under the new version's validator for good (git's "racy clean" problem).
    pub settle: Duration,
    /// Longest a request waits for a compression another request (or it) started (default 1 s);
    /// past it, the request is answered with the next-best representation and the compression
    /// finishes in the background for later requests.
    pub compress_wait: Duration,
    /// Most compressions running at once on the blocking pool (default half the cores, at least
    /// 1): brotli 11 is slow, and a burst of first requests must hold neither every core nor an
    /// encoder's memory per core.
    pub compress_threads: usize,
    /// Most compressions waiting for a thread (`--compress-queue`; default 8). Past it a file
    /// goes out in the next-best representation and nothing is remembered, so a later request
    /// compresses it: each waiting compression holds its file's body, so a burst of first
    /// requests for many large files would otherwise pile up memory and minutes of work.
    pub compress_queue: usize,
}

/// Half the cores, at least one.
pub fn default_compress_threads() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            size: 256 << 20,
            max_file: 2 << 20,
            compress_min: 256,
            revalidate: Duration::from_secs(1),
            settle: Duration::from_secs(1),
            compress_wait: Duration::from_secs(1),
            compress_threads: default_compress_threads(),
            compress_queue: 8,
        }
    }
}

impl CacheConfig {
    /// Checks the limits fit together; the error is one line for the operator.
    pub fn validate(&self) -> Result<(), String> {
        if self.compress_threads == 0 || self.compress_threads > 1024 {
            return Err("--compress-threads must be between 1 and 1024".into());
        }
        if self.size != 0 && self.max_file.saturating_mul(LARGEST_PER_SHARD) > self.size {
            return Err(format!(
                "--cache-max-file must be at most --cache-size / {LARGEST_PER_SHARD}"
            ));
        }
        let hour = Duration::from_secs(3600);
        if self.revalidate > hour || self.settle > hour || self.compress_wait > hour {
            return Err(
                "cache revalidate, settle and compress-wait times must be at most an hour".into(),
            );
        }
        Ok(())
    }
}

/// A file version: the strong validator the cache keys bodies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub len: u64,
    /// Modification time with nanoseconds.
    pub mtime: SystemTime,
}

impl FileKey {
    /// The version of the file `meta` describes.
    pub fn of(meta: &Meta) -> FileKey {
        FileKey {
            dev: meta.dev,
            ino: meta.ino,
            len: meta.len,
            mtime: meta.mtime,
        }
    }
}

/// Which rendering of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListingFormat {
    /// `text/html`.
    Html,
    /// `application/json`.
    Json,
}

/// A rendered listing: the directory's version, the format and the path shown in the page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListingKey {
    /// Directory device.
    pub dev: u64,
    /// Directory inode.
    pub ino: u64,
    /// Directory mtime (changes when an entry is added, removed or renamed).
    pub mtime: SystemTime,
    /// HTML or JSON.
    pub format: ListingFormat,
    /// The request path shown in the page (two URLs may reach one directory).
    pub display: String,
    /// The column and direction it is sorted by.
    pub order: crate::sending::listing::Order,
}

impl ListingKey {
    /// The key of `format` for the directory `meta` describes, shown as `display`.
    pub fn of(meta: &Meta, format: ListingFormat, display: &str) -> ListingKey {
        ListingKey {
            dev: meta.dev,
            ino: meta.ino,
            mtime: meta.mtime,
            format,
            display: display.to_owned(),
            order: crate::sending::listing::Order::default(),
        }
    }
}

/// The header values of a file version, which the caller computes anyway for preconditions.
#[derive(Debug, Clone, Copy)]
pub struct FileHead<'a> {
    /// The identity representation's ETag, quoted (`"…"`).
    pub etag: &'a str,
    /// `Last-Modified` (IMF-fixdate).
    pub last_modified: &'a str,
    /// `Content-Type`.
    pub content_type: &'a str,
}

/// A cached representation: body plus header values built once per version, cheap to clone
/// (`Bytes` and `HeaderValue` are reference-counted).
#[derive(Debug, Clone)]
pub struct Representation {
    /// The body, encoded as `encoding` says.
    pub body: Bytes,
    /// The content coding of `body`.
    pub encoding: Encoding,
    /// RFC 9110 §8.8.3: this representation's own strong ETag (the version's tag plus a suffix).
    pub etag: HeaderValue,
    /// `Content-Length` of `body`.
    pub content_length: HeaderValue,
    /// `Content-Type` (the same for every coding).
    pub content_type: HeaderValue,
    /// `Last-Modified` (the same for every coding).
    pub last_modified: HeaderValue,
}

impl Representation {
    /// The `Content-Encoding` value, `None` for identity.
    pub fn content_encoding(&self) -> Option<HeaderValue> {
        match self.encoding {
            Encoding::Identity => None,
            e => Some(HeaderValue::from_static(e.token())),
        }
    }

    /// The same version encoded with `enc` as `body`.
    fn encoded(&self, enc: Encoding, body: Bytes) -> Option<Representation> {
        let etag = HeaderValue::from_str(&enc.etag(self.etag.to_str().ok()?)).ok()?;
        Some(Representation {
            content_length: HeaderValue::from(body.len()),
            body,
            encoding: enc,
            etag,
            content_type: self.content_type.clone(),
            last_modified: self.last_modified.clone(),
        })
    }

    fn heap_bytes(&self) -> u64 {
        let headers = [
            &self.etag,
            &self.content_length,
            &self.content_type,
            &self.last_modified,
        ];
        self.body.len() as u64 + ALLOC + headers.iter().map(|h| h.len() as u64 + ALLOC).sum::<u64>()
    }
}

/// Counters for `khttpd-ctl status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
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

/// The keys of all four kinds. Hashing goes through [`KeyRef`] so a borrowed key finds an owned one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Body(FileKey, Encoding),
    Listing(ListingKey),
    Route(u64, Box<str>),
}

/// A key without allocation, for lookups.
#[derive(Debug, PartialEq, Eq, Hash)]
enum KeyRef<'a> {
    Body(FileKey, Encoding),
    Listing(&'a ListingKey),
    Route(u64, &'a str),
}

impl Key {
    fn as_ref(&self) -> KeyRef<'_> {
        match self {
            Key::Body(k, e) => KeyRef::Body(*k, *e),
            Key::Listing(k) => KeyRef::Listing(k),
            Key::Route(g, p) => KeyRef::Route(*g, p),
        }
    }

    fn heap_bytes(&self) -> u64 {
        match self {
            Key::Body(..) => 0,
            Key::Listing(k) => k.display.len() as u64 + ALLOC,
            Key::Route(_, p) => p.len() as u64 + ALLOC,
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self == key.as_ref()
    }
}

#[derive(Debug, Clone)]
enum Value<M> {
    /// A file body, or `None` where compressing did not pay. `until` ends the entry of a version
    /// whose mtime was too close to now to trust (see [`CacheConfig::settle`]).
    Body {
        rep: Option<Representation>,
        until: Option<Instant>,
    },
    Listing {
        body: Bytes,
        stamp: Instant,
    },
    Route {
        value: M,
        stamp: Instant,
    },
}

impl<M> Value<M> {
    fn is_negative(&self) -> bool {
        matches!(self, Value::Body { rep: None, .. })
    }

    fn expired(&self, now: Instant) -> bool {
        matches!(self, Value::Body { until: Some(t), .. } if now >= *t)
    }
}

/// Weighs an entry by what it really holds: its slot in quick_cache plus its heap bytes.
#[derive(Debug, Clone, Copy)]
struct ByBytes;

impl<M> Weighter<Key, Value<M>> for ByBytes {
    fn weight(&self, key: &Key, val: &Value<M>) -> u64 {
        let value_heap = match val {
            Value::Body { rep, .. } => rep.as_ref().map_or(0, Representation::heap_bytes),
            Value::Listing { body, .. } => body.len() as u64 + ALLOC,
            Value::Route { .. } => ROUTE_VALUE_HEAP,
        };
        slot_bytes::<M>() + key.heap_bytes() + value_heap
    }
}

fn slot_bytes<M>() -> u64 {
    (size_of::<Key>() + size_of::<Value<M>>()) as u64 + BOOKKEEPING
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    compressions: AtomicU64,
    compression_nanos: AtomicU64,
    negative: AtomicU64,
    compress_deferred: AtomicU64,
}

/// Counts evictions and keeps the negative-entry gauge; defers dropping up to two evicted values
/// until the shard lock is released, as quick_cache's default lifecycle does.
#[derive(Debug, Clone)]
struct Counting(Arc<Counters>);

impl<M> Lifecycle<Key, Value<M>> for Counting {
    type RequestState = [Option<Value<M>>; 2];

    fn on_evict(&self, state: &mut Self::RequestState, _key: Key, val: Value<M>) {
        self.0.evictions.fetch_add(1, Ordering::Relaxed);
        if val.is_negative() {
            self.0.negative.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(slot) = state.iter_mut().find(|s| s.is_none()) {
            *slot = Some(val);
        }
    }
}

type Map<M> = Cache<Key, Value<M>, ByBytes, DefaultHashBuilder, Counting>;

/// What [`ContentCache::produce`] made of a variant.
enum Produced {
    /// A body worth sending, or `None` when the coding does not pay (remembered).
    Done(Option<Representation>),
    /// Every compression thread busy and the queue full: not now, nothing remembered.
    Deferred,
}

/// A place in the compression queue, given back when dropped.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    /// A place, if fewer than `max` are taken.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Waiting> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Waiting(count.clone()))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The shared content cache. `M` is the routing metadata type kept by [`ContentCache::put_fresh`].
pub struct ContentCache<M = ()> {
    cfg: CacheConfig,
    map: Map<M>,
    counters: Arc<Counters>,
    compress_slots: Arc<Semaphore>,
    /// Compressions waiting for one of `compress_slots`.
    compress_waiting: Arc<AtomicUsize>,
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
    pub fn new(cfg: CacheConfig) -> Arc<ContentCache<M>> {
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
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// The identity body of a file version, read once: `load` runs on a blocking thread and must
    /// return exactly `key.len` bytes (an `Err` is returned otherwise: the file changed). Concurrent
    /// misses for one key wait for the same load. Files over `max_file` are loaded for this request
    /// only: stream those instead.
    pub async fn identity<F>(
        self: &Arc<Self>,
        key: &FileKey,
        head: &FileHead<'_>,
        load: F,
    ) -> io::Result<Representation>
    where
        F: FnOnce() -> io::Result<Bytes> + Send + 'static,
    {
        let k = Key::Body(*key, Encoding::Identity);
        if let Some(Some(r)) = self.lookup(&k) {
            return Ok(r);
        }
        let head = OwnedHead::new(head)?;
        let version = *key;
        if key.len > self.cfg.max_file {
            let body = blocking(load).await??;
            return head.identity(&version, body);
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            match this.map.get_value_or_guard_async(&k).await {
                Ok(Value::Body { rep: Some(r), .. }) => Ok(r),
                Ok(_) => Err(io::Error::other("cache entry of the wrong kind")),
                Err(guard) => {
                    // On an error the guard is dropped unfilled and the next waiter loads.
                    let until = this.racy_until(&version);
                    let body = blocking(load).await??;
                    let rep = head.identity(&version, body)?;
                    let _ = guard.insert(Value::Body {
                        rep: Some(rep.clone()),
                        until,
                    });
                    Ok(rep)
                }
            }
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The `enc` variant of a file version, or `None` when it does not pay (remembered, so it is
    /// not retried) or is not ready within `compress_wait` (it still lands for later requests).
    /// On a miss, `sibling` runs on the blocking pool and names the precompressed file to use, if
    /// any (canonical path and size, checked by the caller's policy: regular, inside the root,
    /// servable, not older than the file); it is read once. Else the variant is compressed once from
    /// `identity`, at most `compress_threads` at a time. Concurrent first requests wait for the same
    /// work. Files over `max_file` get `None`: stream those.
    pub async fn variant<S>(
        self: &Arc<Self>,
        key: &FileKey,
        enc: Encoding,
        identity: &Representation,
        sibling: S,
    ) -> Option<Representation>
    where
        S: FnOnce() -> Option<(PathBuf, u64)> + Send + 'static,
    {
        let deadline = Instant::now() + self.cfg.compress_wait;
        self.variant_until(key, enc, identity, sibling, deadline)
            .await
    }

    /// The representation to send: RFC 9110 §12.5.3 negotiation of `accept_encoding` among
    /// `offered` (the codings worth trying for this file, see [`crate::cache::compress::worth_compressing`];
    /// empty for a Range request), falling back to the client's next choice when one does not pay
    /// or is not ready within `compress_wait` in all, and ending at `identity`. `sibling` is
    /// [`ContentCache::variant`]'s, for each coding: it runs only on a miss, on the blocking pool.
    pub async fn select<S>(
        self: &Arc<Self>,
        key: &FileKey,
        accept_encoding: Option<&str>,
        offered: &[Encoding],
        identity: &Representation,
        sibling: S,
    ) -> Representation
    where
        S: Fn(Encoding) -> Option<(PathBuf, u64)> + Clone + Send + 'static,
    {
        let deadline = Instant::now() + self.cfg.compress_wait;
        // The codings still worth asking for, without allocating on the hot path.
        let mut left = Encoding::COMPRESSED;
        let mut n = 0;
        for enc in Encoding::COMPRESSED
            .into_iter()
            .filter(|e| offered.contains(e))
        {
            left[n] = enc;
            n += 1;
        }
        loop {
            let enc = negotiate(accept_encoding, &left[..n]);
            if enc == Encoding::Identity {
                return identity.clone();
            }
            if let Some(r) = self
                .variant_until(key, enc, identity, with(&sibling, enc), deadline)
                .await
            {
                return r;
            }
            if let Some(i) = left[..n].iter().position(|e| *e == enc) {
                left.swap(i, n - 1);
                n -= 1;
            }
        }
    }

    async fn variant_until<S>(
        self: &Arc<Self>,
        key: &FileKey,
        enc: Encoding,
        identity: &Representation,
        sibling: S,
        deadline: Instant,
    ) -> Option<Representation>
    where
        S: FnOnce() -> Option<(PathBuf, u64)> + Send + 'static,
    {
        if enc == Encoding::Identity {
            return Some(identity.clone());
        }
        let k = Key::Body(*key, enc);
        if let Some(found) = self.lookup(&k) {
            return found;
        }
        if identity.body.len() as u64 > self.cfg.max_file {
            return None;
        }
        let this = Arc::clone(self);
        let identity = identity.clone();
        let version = *key;
        let work = tokio::spawn(async move {
            match this.map.get_value_or_guard_async(&k).await {
                Ok(Value::Body { rep, .. }) => rep,
                Ok(_) => None,
                Err(guard) => {
                    let until = this.racy_until(&version);
                    // The queue is full: nothing is remembered (the guard goes unfilled), so a
                    // later request compresses it.
                    let Produced::Done(rep) = this.produce(enc, &identity, sibling).await else {
                        this.counters
                            .compress_deferred
                            .fetch_add(1, Ordering::Relaxed);
                        return None;
                    };
                    if rep.is_none() {
                        // Counted before the insert: an insert may evict (and uncount) it.
                        this.counters.negative.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = guard.insert(Value::Body {
                        rep: rep.clone(),
                        until,
                    });
                    rep
                }
            }
        });
        // On timeout the handle is dropped and the task goes on, detached.
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(Ok(rep)) => rep,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, encoding = enc.token(), "variant task failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Reads the sibling or compresses; `Done(None)` when neither gives a body worth sending,
    /// `Deferred` when every thread is busy and the queue is full.
    async fn produce<S>(&self, enc: Encoding, identity: &Representation, sibling: S) -> Produced
    where
        S: FnOnce() -> Option<(PathBuf, u64)> + Send + 'static,
    {
        let limit = self.cfg.max_file;
        // One trip to the blocking pool for the caller's checks (stats) and the read.
        let read = blocking(move || {
            let (path, len) = sibling()?;
            (len <= limit).then(|| read_sibling(&path, limit))
        })
        .await;
        match read {
            Ok(None) => {}
            Ok(Some(Ok(body))) => {
                if let Some(r) = identity.encoded(enc, body) {
                    return Produced::Done(Some(r));
                }
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "precompressed sibling unusable; compressing");
            }
            Err(e) => tracing::warn!(error = %e, "sibling task failed"),
        }
        if (identity.body.len() as u64) < self.cfg.compress_min {
            return Produced::Done(None);
        }
        let permit = match self.compress_slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let Some(_place) = Waiting::take(&self.compress_waiting, self.cfg.compress_queue)
                else {
                    return Produced::Deferred;
                };
                match self.compress_slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return Produced::Done(None),
                }
            }
        };
        let data = identity.body.clone();
        let counters = self.counters.clone();
        let done = blocking(move || {
            let _permit = permit;
            let started = Instant::now();
            let out = compress::compress(&data, enc);
            drop(data);
            // The encoders' tables (tens of MiB for brotli 11 on a large file) go back to the
            // system now rather than staying in this thread's arena.
            crate::daemon::memory::give_back();
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            counters.compressions.fetch_add(1, Ordering::Relaxed);
            counters
                .compression_nanos
                .fetch_add(nanos, Ordering::Relaxed);
            out
        })
        .await;
        Produced::Done(match done {
            Ok(body) => body.and_then(|b| identity.encoded(enc, b)),
            Err(e) => {
                tracing::warn!(error = %e, encoding = enc.token(), "compression task failed");
                None
            }
        })
    }

    /// The identity body of `key` if it is held, without waiting or loading (the fast path's lookup).
    pub fn peek_identity(&self, key: &FileKey) -> Option<Representation> {
        self.lookup(&Key::Body(*key, Encoding::Identity)).flatten()
    }

    /// What [`ContentCache::select`] would answer, when everything that choice needs is already
    /// held; `None` sends the request down the path that can load and compress.
    pub fn select_cached(
        &self,
        key: &FileKey,
        accept_encoding: Option<&str>,
        offered: &[Encoding],
        identity: &Representation,
    ) -> Option<Representation> {
        let mut left = Encoding::COMPRESSED;
        let mut n = 0;
        for enc in Encoding::COMPRESSED
            .into_iter()
            .filter(|e| offered.contains(e))
        {
            left[n] = enc;
            n += 1;
        }
        loop {
            let enc = negotiate(accept_encoding, &left[..n]);
            if enc == Encoding::Identity {
                return Some(identity.clone());
            }
            match self.lookup(&Key::Body(*key, enc))? {
                Some(r) => return Some(r),
                None => {
                    let i = left[..n].iter().position(|e| *e == enc)?;
                    left.swap(i, n - 1);
                    n -= 1;
                }
            }
        }
    }

    /// A body entry: `Some(Some(rep))` held, `Some(None)` known not to pay, `None` missing. The
    /// entry of a racy version past its settle time is dropped here and reported missing.
    fn lookup(&self, k: &Key) -> Option<Option<Representation>> {
        let now = Instant::now();
        match self.map.get(k) {
            Some(v @ Value::Body { .. }) if v.expired(now) => {
                if let Some((_, old)) = self.map.remove_if(k, |v| v.expired(now)) {
                    if old.is_negative() {
                        self.counters.negative.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                self.miss();
                None
            }
            Some(Value::Body { rep, .. }) => {
                self.hit();
                Some(rep)
            }
            _ => {
                self.miss();
                None
            }
        }
    }

    /// A rendered listing, if one younger than `revalidate` is held.
    pub fn listing(&self, key: &ListingKey, now: Instant) -> Option<Bytes> {
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
    pub fn put_listing(&self, key: ListingKey, body: Bytes, now: Instant) {
        self.map
            .insert(Key::Listing(key), Value::Listing { body, stamp: now });
    }

    /// Routing metadata for `path` (the request path exactly as routing saw it) under routing
    /// configuration `generation`, if stored less than `revalidate` ago; else the caller re-stats
    /// and calls [`ContentCache::put_fresh`]. `generation` must change whenever a setting that
    /// routing reads does (reload, `khttpd-ctl set`), so an old verdict never outlives its config.
    pub fn get_fresh(&self, generation: u64, path: &str, now: Instant) -> Option<M> {
        match self.map.get(&KeyRef::Route(generation, path)) {
            Some(Value::Route { value, stamp }) if self.fresh(stamp, now) => {
                self.hit();
                Some(value)
            }
            _ => {
                self.miss();
                None
            }
        }
    }

    /// Stores routing metadata for `path` under `generation`, stamped `now`.
    pub fn put_fresh(&self, generation: u64, path: &str, value: M, now: Instant) {
        self.map.insert(
            Key::Route(generation, path.into()),
            Value::Route { value, stamp: now },
        );
    }

    /// A snapshot of the counters and gauges.
    pub fn stats(&self) -> CacheStats {
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

    fn hit(&self) {
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
    }

    fn miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    fn fresh(&self, stamp: Instant, now: Instant) -> bool {
        now.saturating_duration_since(stamp) < self.cfg.revalidate
    }

    /// When the entries of version `key` must be read again: `None` when its mtime is at least
    /// `settle` away from now, so no write can hide in the same timestamp tick as our read.
    fn racy_until(&self, key: &FileKey) -> Option<Instant> {
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

/// The caller's header strings turned into header values once per miss.
struct OwnedHead {
    etag: HeaderValue,
    last_modified: HeaderValue,
    content_type: HeaderValue,
}

impl OwnedHead {
    fn new(h: &FileHead<'_>) -> io::Result<OwnedHead> {
        let value = |s: &str| {
            HeaderValue::from_str(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        Ok(OwnedHead {
            etag: value(h.etag)?,
            last_modified: value(h.last_modified)?,
            content_type: value(h.content_type)?,
        })
    }

    fn identity(self, key: &FileKey, body: Bytes) -> io::Result<Representation> {
        // A different length means the file changed between stat and read: the bytes do not
        // belong to this version, so they are neither cached nor sent under its validators.
        if body.len() as u64 != key.len {
            return Err(io::Error::other("file changed while being read"));
        }
        Ok(Representation {
            content_length: HeaderValue::from(body.len()),
            body,
            encoding: Encoding::Identity,
            etag: self.etag,
            content_type: self.content_type,
            last_modified: self.last_modified,
        })
    }
}

/// `sibling` bound to one coding, as [`ContentCache::variant`] takes it.
fn with<S>(sibling: &S, enc: Encoding) -> impl FnOnce() -> Option<(PathBuf, u64)> + Send + 'static
where
    S: Fn(Encoding) -> Option<(PathBuf, u64)> + Clone + Send + 'static,
{
    let f = sibling.clone();
    move || f(enc)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)
}

/// Reads a precompressed sibling whole, without following a symlink or blocking on a FIFO swapped
/// in since the caller checked it, and refusing more than `limit` bytes.
fn read_sibling(path: &Path, limit: u64) -> io::Result<Bytes> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "sibling is not a regular file",
        ));
    }
    // The sibling's bytes go out as the file's own, so it must pass what any served file passes:
    // world-readable, no execute, setuid, setgid or sticky bit. A second hard link may be another
    // name of `x.php`, `.env` or a file an `.htaccess` guards: only a sibling with one name is used.
    let mode = meta.permissions().mode();
    if mode & 0o004 == 0 || mode & 0o7111 != 0 || meta.nlink() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "sibling not world-readable, executable, or with more than one name",
        ));
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len().min(limit)).unwrap_or(0));
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::other(
            "sibling larger than the cache's largest file",
        ));
    }
    buf.shrink_to_fit();
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;
    use std::time::UNIX_EPOCH;

    fn cfg() -> CacheConfig {
        CacheConfig {
            size: 8 << 20,
            max_file: 256 << 10,
            compress_min: 64,
            // Debug builds compress slowly; tests of waiting set their own budget.
            compress_wait: Duration::from_secs(60),
            ..CacheConfig::default()
        }
    }

    fn key(ino: u64, len: usize) -> FileKey {
        FileKey {
            dev: 1,
            ino,
            len: len as u64,
            mtime: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
        }
    }

    fn head() -> FileHead<'static> {
        FileHead {
            etag: "\"1-2-3\"",
            last_modified: "Tue, 14 Nov 2023 22:13:20 GMT",
            content_type: "text/html; charset=utf-8",
        }
    }

    fn text(n: usize) -> Bytes {
        let line = b"<li><a href=\"page.html\">A page about kHTTPd</a> served from memory</li>\n";
        Bytes::from(line.iter().copied().cycle().take(n).collect::<Vec<u8>>())
    }

    fn noise(n: usize) -> Bytes {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        Bytes::from(
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u8
                })
                .collect::<Vec<u8>>(),
        )
    }

    fn decode(enc: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match enc {
            Encoding::Br => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Zstd => out = zstd::stream::decode_all(data).unwrap(),
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Identity => out = data.to_vec(),
        }
        out
    }

    async fn cached_identity<M: Clone + Send + Sync + 'static>(
        c: &Arc<ContentCache<M>>,
        k: FileKey,
        body: Bytes,
    ) -> Representation {
        c.identity(&k, &head(), move || Ok(body)).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn identity_loads_once_for_50_concurrent_callers() {
        let c = ContentCache::<()>::new(cfg());
        let loads = Arc::new(AtomicUsize::new(0));
        let body = text(10_000);
        let k = key(7, body.len());
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (c, loads, body) = (c.clone(), loads.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                c.identity(&k, &head(), move || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    Ok(body)
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.body, body);
            assert_eq!(r.encoding, Encoding::Identity);
            assert_eq!(r.etag, "\"1-2-3\"");
            assert_eq!(r.content_length, "10000");
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        let again = c
            .identity(&k, &head(), || panic!("must come from memory"))
            .await
            .unwrap();
        assert_eq!(again.body, body);
        assert!(c.stats().hits >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_compression_for_50_concurrent_first_requests() {
        let c = ContentCache::<()>::new(cfg());
        let body = text(200_000);
        let k = key(8, body.len());
        let id = cached_identity(&c, k, body.clone()).await;
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (c, id) = (c.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                c.variant(&k, Encoding::Br, &id, || None).await
            }));
        }
        for t in tasks {
            let r = t.await.unwrap().expect("text compresses");
            assert_eq!(decode(Encoding::Br, &r.body), body);
        }
        assert_eq!(c.stats().compressions, 1);
    }

    #[tokio::test]
    async fn variant_decodes_to_identity_with_its_own_headers() {
        let c = ContentCache::<()>::new(cfg());
        let body = text(50_000);
        let k = key(9, body.len());
        let id = cached_identity(&c, k, body.clone()).await;
        for enc in Encoding::COMPRESSED {
            let r = c.variant(&k, enc, &id, || None).await.unwrap();
            assert_eq!(decode(enc, &r.body), body, "{enc:?}");
            assert_eq!(r.encoding, enc);
            assert_eq!(r.etag, enc.etag("\"1-2-3\"").as_str());
            assert_eq!(r.content_length, r.body.len().to_string().as_str());
            assert_eq!(r.content_type, id.content_type);
            assert_eq!(r.last_modified, id.last_modified);
            assert_eq!(r.content_encoding().unwrap(), enc.token());
        }
        assert!(id.content_encoding().is_none());
        let same = c
            .variant(&k, Encoding::Identity, &id, || None)
            .await
            .unwrap();
        assert_eq!(same.body, body);
        assert_eq!(c.stats().compressions, 3);
    }

    #[tokio::test]
    async fn changed_file_key_is_a_miss() {
        let c = ContentCache::<()>::new(cfg());
        let old = text(1000);
        let k1 = key(10, old.len());
        cached_identity(&c, k1, old.clone()).await;
        let mut k2 = k1;
        k2.mtime += Duration::from_nanos(1);
        let new = Bytes::from(vec![b'n'; 1000]);
        let loads = Arc::new(AtomicUsize::new(0));
        let l = loads.clone();
        let r = c
            .identity(&k2, &head(), move || {
                l.fetch_add(1, Ordering::SeqCst);
                Ok(new)
            })
            .await
            .unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(&r.body[..], &[b'n'; 1000][..]);
        let r1 = c.identity(&k1, &head(), || panic!("cached")).await.unwrap();
        assert_eq!(r1.body, old);
    }

    #[tokio::test]
    async fn memory_stays_under_the_budget() {
        let size = 4u64 << 20;
        let c = ContentCache::<String>::new(CacheConfig {
            size,
            max_file: 64 << 10,
            ..cfg()
        });
        let body = text(64 << 10);
        // Ten times the budget in identity bodies, plus listings and routing entries.
        for i in 0..640u64 {
            let r = cached_identity(&c, key(1000 + i, body.len()), body.clone()).await;
            assert_eq!(r.body.len(), body.len());
            let lk = ListingKey {
                dev: 1,
                ino: i,
                mtime: UNIX_EPOCH,
                format: ListingFormat::Html,
                order: crate::sending::listing::Order::default(),
                display: format!("/dir{i}/"),
            };
            c.put_listing(lk, text(8 << 10), Instant::now());
            c.put_fresh(
                1,
                &format!("/file{i}.html"),
                "static".into(),
                Instant::now(),
            );
            let s = c.stats();
            assert!(s.bytes <= size, "{} > {size} after {i}", s.bytes);
        }
        let s = c.stats();
        assert!(s.capacity <= size);
        assert!(s.evictions > 0);
        assert!(s.entries > 0);
        assert!(s.bytes > size / 2, "the cache should be mostly full: {s:?}");
        // quick_cache's own tables are bounded by `size` too, not by the working set.
        assert!(s.tables < size / 4, "{s:?}");
    }

    #[tokio::test]
    async fn incompressible_is_declined_once_and_remembered() {
        let c = ContentCache::<()>::new(cfg());
        let body = noise(64 << 10);
        let k = key(11, body.len());
        let id = cached_identity(&c, k, body.clone()).await;
        for _ in 0..3 {
            assert!(c.variant(&k, Encoding::Gzip, &id, || None).await.is_none());
        }
        let s = c.stats();
        assert_eq!(s.compressions, 1);
        assert_eq!(s.negative, 1);
    }

    #[tokio::test]
    async fn tiny_is_declined_and_remembered() {
        let c = ContentCache::<()>::new(CacheConfig {
            compress_min: 0,
            ..cfg()
        });
        let body = Bytes::from_static(b"<p>hi</p>");
        let k = key(12, body.len());
        let id = cached_identity(&c, k, body).await;
        assert!(c.variant(&k, Encoding::Br, &id, || None).await.is_none());
        assert!(c.variant(&k, Encoding::Br, &id, || None).await.is_none());
        let s = c.stats();
        assert_eq!(s.compressions, 1);
        assert_eq!(s.negative, 1);
    }

    #[tokio::test]
    async fn below_compress_min_is_not_even_tried() {
        let c = ContentCache::<()>::new(cfg());
        let body = text(63);
        let k = key(13, body.len());
        let id = cached_identity(&c, k, body).await;
        let looked = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let l = looked.clone();
            let r = c
                .variant(&k, Encoding::Gzip, &id, move || {
                    l.fetch_add(1, Ordering::SeqCst);
                    None
                })
                .await;
            assert!(r.is_none());
        }
        assert_eq!(looked.load(Ordering::SeqCst), 1, "siblings looked for once");
        assert_eq!(c.stats().compressions, 0);
        assert_eq!(c.stats().negative, 1);
    }

    #[tokio::test]
    async fn sibling_is_used_instead_of_compressing() {
        let dir = tempfile::tempdir().unwrap();
        let body = text(30_000);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&body).unwrap();
            e.finish().unwrap()
        };
        let path = dir.path().join("app.js.gz");
        std::fs::write(&path, &gz).unwrap();
        let c = ContentCache::<()>::new(cfg());
        let k = key(14, body.len());
        let id = cached_identity(&c, k, body.clone()).await;
        let r = c
            .variant(&k, Encoding::Gzip, &id, {
                let (p, n) = (path.clone(), gz.len() as u64);
                move || Some((p, n))
            })
            .await
            .unwrap();
        assert_eq!(&r.body[..], &gz[..]);
        assert_eq!(decode(Encoding::Gzip, &r.body), body);
        assert_eq!(r.etag, "\"1-2-3-gzip\"");
        std::fs::remove_file(&path).unwrap();
        let again = c
            .variant(&k, Encoding::Gzip, &id, || panic!("not asked again"))
            .await
            .unwrap();
        assert_eq!(&again.body[..], &gz[..], "read once, then from memory");
        assert_eq!(c.stats().compressions, 0);
    }

    #[tokio::test]
    async fn missing_or_odd_sibling_falls_back_to_compressing() {
        let dir = tempfile::tempdir().unwrap();
        let c = ContentCache::<()>::new(cfg());
        let body = text(30_000);
        let k = key(15, body.len());
        let id = cached_identity(&c, k, body.clone()).await;
        let gone = dir.path().join("gone.js.br");
        let r = c
            .variant(&k, Encoding::Br, &id, move || Some((gone, 100)))
            .await
            .unwrap();
        assert_eq!(decode(Encoding::Br, &r.body), body);
        // A directory where the sibling was: never read as a body.
        let odd = dir.path().join("odd.js.zst");
        std::fs::create_dir(&odd).unwrap();
        let r = c
            .variant(&k, Encoding::Zstd, &id, move || Some((odd, 100)))
            .await
            .unwrap();
        assert_eq!(decode(Encoding::Zstd, &r.body), body);
        assert_eq!(c.stats().compressions, 2);
    }

    #[tokio::test]
    async fn a_symlinked_sibling_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret");
        std::fs::write(&target, b"not a compressed body").unwrap();
        let link = dir.path().join("a.css.gz");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_sibling(&link, 1 << 20).is_err());
        assert!(read_sibling(&target, 4).is_err(), "over the limit");
        assert_eq!(
            &read_sibling(&target, 1 << 20).unwrap()[..],
            b"not a compressed body"
        );
    }

    /// Issue 15: a sibling's bytes go out as its file's, so it passes every rule a served file
    /// passes; a second name of `x.php` or `.env` (a hard link) is never one.
    #[tokio::test]
    async fn a_sibling_with_two_names_or_odd_bits_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join(".env");
        std::fs::write(&secret, b"DB_PASSWORD=hunter2").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let linked = dir.path().join("x.js.gz");
        std::fs::hard_link(&secret, &linked).unwrap();
        assert!(read_sibling(&linked, 1 << 20).is_err(), "hard link");
        std::fs::remove_file(&linked).unwrap();
        let plain = dir.path().join("y.js.gz");
        for (mode, ok) in [
            (0o644, true),
            (0o640, false),
            (0o755, false),
            (0o4644, false),
        ] {
            std::fs::write(&plain, b"gz").unwrap();
            std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read_sibling(&plain, 1 << 20).is_ok(), ok, "mode {mode:o}");
        }
    }

    #[tokio::test]
    async fn a_client_that_leaves_does_not_waste_the_compression() {
        let c = ContentCache::<()>::new(cfg());
        let body = text(250_000);
        let k = key(16, body.len());
        let id = cached_identity(&c, k, body.clone()).await;
        let first = tokio::time::timeout(
            Duration::from_millis(1),
            c.variant(&k, Encoding::Br, &id, || None),
        )
        .await;
        drop(first);
        let r = c.variant(&k, Encoding::Br, &id, || None).await.unwrap();
        assert_eq!(decode(Encoding::Br, &r.body), body);
        assert_eq!(c.stats().compressions, 1);
    }

    #[tokio::test]
    async fn large_files_are_not_cached() {
        let c = ContentCache::<()>::new(cfg());
        let loads = Arc::new(AtomicUsize::new(0));
        let body = text(300 << 10);
        let big = key(18, body.len());
        for _ in 0..2 {
            let (l, b) = (loads.clone(), body.clone());
            let r = c
                .identity(&big, &head(), move || {
                    l.fetch_add(1, Ordering::SeqCst);
                    Ok(b)
                })
                .await
                .unwrap();
            assert_eq!(r.body.len(), body.len());
            assert!(c.variant(&big, Encoding::Gzip, &r, || None).await.is_none());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        assert_eq!(c.stats().entries, 0);
        assert_eq!(c.stats().compressions, 0);
    }

    #[tokio::test]
    async fn entries_of_a_just_modified_file_expire_after_settle() {
        let c = ContentCache::<()>::new(CacheConfig {
            settle: Duration::from_secs(1),
            ..cfg()
        });
        let loads = Arc::new(AtomicUsize::new(0));
        let body = text(5000);
        let mut racy = key(17, body.len());
        racy.mtime = SystemTime::now();
        let get = || {
            let (l, b) = (loads.clone(), body.clone());
            let c = c.clone();
            async move {
                let r = c
                    .identity(&racy, &head(), move || {
                        l.fetch_add(1, Ordering::SeqCst);
                        Ok(b)
                    })
                    .await
                    .unwrap();
                c.variant(&racy, Encoding::Gzip, &r, || None).await.unwrap()
            }
        };
        get().await;
        get().await;
        assert_eq!(loads.load(Ordering::SeqCst), 1, "cached while settling");
        assert_eq!(c.stats().compressions, 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        get().await;
        get().await;
        assert_eq!(loads.load(Ordering::SeqCst), 2, "read again once settled");
        assert_eq!(c.stats().compressions, 2);
        // Read again after its settle time, the version is trusted and kept for good.
        get().await;
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        assert_eq!(c.stats().compressions, 2);
    }

    #[tokio::test]
    async fn a_slow_compression_does_not_hold_the_request() {
        let c = ContentCache::<()>::new(CacheConfig {
            compress_wait: Duration::ZERO,
            ..cfg()
        });
        let body = text(100_000);
        let k = key(22, body.len());
        let id = cached_identity(&c, k, body.clone()).await;
        assert!(c.variant(&k, Encoding::Br, &id, || None).await.is_none());
        assert_eq!(c.stats().negative, 0, "not ready is not 'not worth it'");
        let r = loop {
            if let Some(r) = c.variant(&k, Encoding::Br, &id, || None).await {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(decode(Encoding::Br, &r.body), body);
        assert_eq!(c.stats().compressions, 1);
    }

    #[tokio::test]
    async fn select_negotiates_and_falls_back() {
        let c = ContentCache::<()>::new(cfg());
        let all = Encoding::COMPRESSED;
        let body = text(20_000);
        let k = key(23, body.len());
        let id = cached_identity(&c, k, body.clone()).await;
        let none = |_: Encoding| None;
        let r = c.select(&k, Some("gzip, br"), &all, &id, none).await;
        assert_eq!(r.encoding, Encoding::Br);
        let r = c
            .select(&k, Some("gzip;q=0.5, zstd;q=0.4"), &all, &id, none)
            .await;
        assert_eq!(r.encoding, Encoding::Gzip);
        assert_eq!(decode(Encoding::Gzip, &r.body), body);
        let r = c.select(&k, None, &all, &id, none).await;
        assert_eq!(r.encoding, Encoding::Identity);
        // A Range request offers nothing but identity.
        let r = c.select(&k, Some("br"), &[], &id, none).await;
        assert_eq!(r.encoding, Encoding::Identity);
        assert_eq!(r.etag, "\"1-2-3\"");

        // Noise: br does not pay, nor does gzip; identity it is, and neither is tried again.
        let noisy = noise(20_000);
        let kn = key(24, noisy.len());
        let idn = cached_identity(&c, kn, noisy).await;
        let before = c.stats().compressions;
        let r = c
            .select(&kn, Some("br, gzip;q=0.5"), &all, &idn, none)
            .await;
        assert_eq!(r.encoding, Encoding::Identity);
        assert_eq!(c.stats().compressions, before + 2);
        c.select(&kn, Some("br, gzip;q=0.5"), &all, &idn, none)
            .await;
        assert_eq!(c.stats().compressions, before + 2);
    }

    #[tokio::test]
    async fn a_short_read_is_an_error_and_not_cached() {
        let c = ContentCache::<()>::new(cfg());
        let k = key(19, 100);
        let e = c
            .identity(&k, &head(), || Ok(Bytes::from_static(b"short")))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("changed"), "{e}");
        let e = c
            .identity(&k, &head(), || {
                Err(io::Error::from(io::ErrorKind::NotFound))
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let bad = FileHead {
            etag: "\"bad\nvalue\"",
            ..head()
        };
        assert!(c.identity(&k, &bad, || Ok(text(100))).await.is_err());
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn listings_expire_after_revalidate() {
        let c = ContentCache::<()>::new(cfg());
        let t0 = Instant::now();
        let meta = Meta {
            kind: crate::route::fs::Kind::Dir,
            mode: 0o755,
            len: 4096,
            dev: 3,
            ino: 4,
            mtime: UNIX_EPOCH + Duration::from_secs(5),
        };
        let html = ListingKey::of(&meta, ListingFormat::Html, "/docs/");
        let json = ListingKey::of(&meta, ListingFormat::Json, "/docs/");
        c.put_listing(html.clone(), Bytes::from_static(b"<html>"), t0);
        assert_eq!(c.listing(&html, t0).unwrap(), "<html>");
        assert!(c.listing(&json, t0).is_none());
        assert!(c
            .listing(&ListingKey::of(&meta, ListingFormat::Html, "/d/"), t0)
            .is_none());
        assert!(c.listing(&html, t0 + Duration::from_secs(1)).is_none());
        let mut touched = meta;
        touched.mtime += Duration::from_nanos(1);
        assert!(c
            .listing(&ListingKey::of(&touched, ListingFormat::Html, "/docs/"), t0)
            .is_none());
    }

    #[test]
    fn route_metadata_is_fresh_for_revalidate_and_per_generation() {
        let c = ContentCache::<&'static str>::new(cfg());
        let t0 = Instant::now();
        c.put_fresh(1, "/a.html", "static", t0);
        assert_eq!(c.get_fresh(1, "/a.html", t0), Some("static"));
        assert_eq!(
            c.get_fresh(1, "/a.html", t0 + Duration::from_millis(999)),
            Some("static")
        );
        assert_eq!(c.get_fresh(1, "/a.html", t0 + Duration::from_secs(1)), None);
        assert_eq!(c.get_fresh(2, "/a.html", t0), None);
        assert_eq!(c.get_fresh(1, "/b.html", t0), None);
        c.put_fresh(1, "/a.html", "backend", t0 + Duration::from_secs(2));
        assert_eq!(
            c.get_fresh(1, "/a.html", t0 + Duration::from_secs(2)),
            Some("backend")
        );
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (3, 3));
    }

    #[test]
    fn borrowed_keys_hash_like_owned_ones() {
        let h = |k: &dyn Fn(&mut DefaultHasher)| {
            let mut s = DefaultHasher::new();
            k(&mut s);
            s.finish()
        };
        let owned = Key::Route(3, "/x".into());
        assert_eq!(
            h(&|s| owned.hash(s)),
            h(&|s| KeyRef::Route(3, "/x").hash(s))
        );
        assert!(KeyRef::Route(3, "/x").equivalent(&owned));
        assert!(!KeyRef::Route(4, "/x").equivalent(&owned));
        let lk = ListingKey::of(
            &Meta {
                kind: crate::route::fs::Kind::Dir,
                mode: 0o755,
                len: 0,
                dev: 1,
                ino: 2,
                mtime: UNIX_EPOCH,
            },
            ListingFormat::Json,
            "/",
        );
        let owned = Key::Listing(lk.clone());
        assert_eq!(h(&|s| owned.hash(s)), h(&|s| KeyRef::Listing(&lk).hash(s)));
    }

    #[test]
    fn file_key_comes_from_meta() {
        let meta = Meta {
            kind: crate::route::fs::Kind::File,
            mode: 0o644,
            len: 42,
            dev: 7,
            ino: 99,
            mtime: UNIX_EPOCH + Duration::new(1, 5),
        };
        let k = FileKey::of(&meta);
        assert_eq!((k.dev, k.ino, k.len, k.mtime), (7, 99, 42, meta.mtime));
    }

    #[tokio::test]
    async fn the_largest_file_fits_even_in_a_small_cache() {
        let c = ContentCache::<()>::new(CacheConfig {
            size: 2 << 20,
            max_file: 256 << 10,
            ..cfg()
        });
        let body = text(256 << 10);
        let k = key(20, body.len());
        cached_identity(&c, k, body).await;
        assert_eq!(c.stats().entries, 1);
        assert!(c.stats().capacity <= 2 << 20);
    }

    #[tokio::test]
    async fn size_zero_disables_caching_but_still_answers() {
        let c = ContentCache::<()>::new(CacheConfig { size: 0, ..cfg() });
        let body = text(5000);
        let k = key(21, body.len());
        let id = cached_identity(&c, k, body.clone()).await;
        let r = c.variant(&k, Encoding::Gzip, &id, || None).await.unwrap();
        assert_eq!(decode(Encoding::Gzip, &r.body), body);
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: T) {}
        let c = ContentCache::<String>::new(cfg());
        let k = key(25, 1);
        let id = Representation {
            body: Bytes::from_static(b"x"),
            encoding: Encoding::Identity,
            etag: HeaderValue::from_static("\"x\""),
            content_length: HeaderValue::from(1u64),
            content_type: HeaderValue::from_static("text/plain"),
            last_modified: HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        };
        send(c.identity(&k, &head(), || Ok(Bytes::from_static(b"x"))));
        send(c.variant(&k, Encoding::Gzip, &id, || None));
        send(c.select(&k, Some("gzip"), &Encoding::COMPRESSED, &id, |_| None));
    }

    #[test]
    fn config_validation() {
        assert!(CacheConfig::default().validate().is_ok());
        let bad = CacheConfig {
            compress_threads: 0,
            ..CacheConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = CacheConfig {
            size: 1 << 20,
            max_file: 1 << 20,
            ..CacheConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("--cache-max-file"));
        let off = CacheConfig {
            size: 0,
            ..CacheConfig::default()
        };
        assert!(off.validate().is_ok());
    }
}
