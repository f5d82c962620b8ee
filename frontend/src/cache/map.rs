//! The one map under the byte budget: its keys and values of every kind, each weighed by what it
//! holds, and the counters its evictions keep.

use std::hash::{Hash, Hasher};
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Equivalent, Lifecycle, Weighter};

use crate::cache::keys::{FileKey, ListingKey};
use crate::cache::negotiate::Encoding;
use crate::cache::representation::Representation;

/// Bytes charged per entry for quick_cache's own bookkeeping beyond the slot itself (map bucket,
/// ring links, reference bits).
pub(super) const BOOKKEEPING: u64 = 64;
/// Bytes charged per heap allocation (allocator header, `Bytes`' shared header).
pub(super) const ALLOC: u64 = 32;
/// Generous heap bytes of a representation's four header values, for sizing shards.
pub(super) const HEADER_VALUES: u64 = 4 * (ALLOC + 64);
/// Heap bytes assumed for one routing value (typically a canonical path and a content type),
/// which the cache cannot measure through a generic type.
pub(super) const ROUTE_VALUE_HEAP: u64 = 256;
/// Average entry weight assumed when sizing quick_cache's tables and ghost list: a mix of small
/// files, variants and routing entries.
pub(super) const AVERAGE_ENTRY: u64 = 8 * 1024;
/// Upper bound on shards: more only multiplies the fixed tables.
pub(super) const MAX_SHARDS: usize = 64;

/// The keys of all four kinds. Hashing goes through [`KeyRef`] so a borrowed key finds an owned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    Body(FileKey, Encoding),
    Listing(ListingKey),
    Route(u64, Box<str>),
}

/// A key without allocation, for lookups.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) enum KeyRef<'a> {
    Body(FileKey, Encoding),
    Listing(&'a ListingKey),
    Route(u64, &'a str),
}

impl Key {
    pub(super) fn as_ref(&self) -> KeyRef<'_> {
        match self {
            Key::Body(k, e) => KeyRef::Body(*k, *e),
            Key::Listing(k) => KeyRef::Listing(k),
            Key::Route(g, p) => KeyRef::Route(*g, p),
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

/// Heap bytes a key holds beyond its slot.
fn key_heap(key: &Key) -> u64 {
    match key {
        Key::Body(..) => 0,
        Key::Listing(k) => k.display.len() as u64 + ALLOC,
        Key::Route(_, p) => p.len() as u64 + ALLOC,
    }
}

/// Heap bytes a representation holds: its body and its four header values.
fn rep_heap(rep: &Representation) -> u64 {
    let headers = [
        &rep.etag,
        &rep.content_length,
        &rep.content_type,
        &rep.last_modified,
    ];
    rep.body.len() as u64 + ALLOC + headers.iter().map(|h| h.len() as u64 + ALLOC).sum::<u64>()
}

#[derive(Debug, Clone)]
pub(super) enum Value<M> {
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
    pub(super) fn is_negative(&self) -> bool {
        matches!(self, Value::Body { rep: None, .. })
    }

    pub(super) fn expired(&self, now: Instant) -> bool {
        matches!(self, Value::Body { until: Some(t), .. } if now >= *t)
    }
}

/// Weighs an entry by what it really holds: its slot in quick_cache plus its heap bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct ByBytes;

impl<M> Weighter<Key, Value<M>> for ByBytes {
    fn weight(&self, key: &Key, val: &Value<M>) -> u64 {
        let value_heap = match val {
            Value::Body { rep, .. } => rep.as_ref().map_or(0, rep_heap),
            Value::Listing { body, .. } => body.len() as u64 + ALLOC,
            Value::Route { .. } => ROUTE_VALUE_HEAP,
        };
        slot_bytes::<M>() + key_heap(key) + value_heap
    }
}

pub(super) fn slot_bytes<M>() -> u64 {
    (size_of::<Key>() + size_of::<Value<M>>()) as u64 + BOOKKEEPING
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) compressions: AtomicU64,
    pub(super) compression_nanos: AtomicU64,
    pub(super) negative: AtomicU64,
    pub(super) compress_deferred: AtomicU64,
}

/// Counts evictions and keeps the negative-entry gauge; defers dropping up to two evicted values
/// until the shard lock is released, as quick_cache's default lifecycle does.
#[derive(Debug, Clone)]
pub(super) struct Counting(pub(super) Arc<Counters>);

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

pub(super) type Map<M> = Cache<Key, Value<M>, ByBytes, DefaultHashBuilder, Counting>;
