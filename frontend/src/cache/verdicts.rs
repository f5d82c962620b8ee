//! The verdict cache: routing's decision per request path, kept `revalidate` long under the
//! routing configuration's generation, in the same map and budget as the bodies.

use std::time::Instant;

use crate::cache::map::{Key, KeyRef, Value};
use crate::cache::store::ContentCache;

impl<M: Clone + Send + Sync + 'static> ContentCache<M> {
    /// Routing metadata for `path` (the request path exactly as routing saw it) under routing
    /// configuration `generation`, if stored less than `revalidate` ago; else the caller re-stats
    /// and calls [`ContentCache::put_fresh`]. `generation` must change whenever a setting that
    /// routing reads does (reload, `khttpd-ctl set`), so an old verdict never outlives its config.
    pub(crate) fn get_fresh(&self, generation: u64, path: &str, now: Instant) -> Option<M> {
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
    pub(crate) fn put_fresh(&self, generation: u64, path: &str, value: M, now: Instant) {
        self.map.insert(
            Key::Route(generation, path.into()),
            Value::Route { value, stamp: now },
        );
    }
}
