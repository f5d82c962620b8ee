//! The cache's limits, each a documented knob with its default.

use std::time::Duration;

/// Each shard holds at least this many of the largest entries, so a `max_file` body always fits.
pub(super) const LARGEST_PER_SHARD: u64 = 8;

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
pub(crate) fn default_compress_threads() -> usize {
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
