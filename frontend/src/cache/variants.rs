//! Variant selection: the identity body of a file version loaded once, each compressed variant
//! made once (from a precompressed sibling or an encoder on the blocking pool, bounded in threads
//! and queue), and the choice among them by the client's `Accept-Encoding`.

use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::cache::compress;
use crate::cache::keys::FileKey;
use crate::cache::map::{Key, Value};
use crate::cache::negotiate::{negotiate, Encoding};
use crate::cache::representation::{FileHead, OwnedHead, Representation};
use crate::cache::store::ContentCache;

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

impl<M: Clone + Send + Sync + 'static> ContentCache<M> {
    /// The identity body of a file version, read once: `load` runs on a blocking thread and must
    /// return exactly `key.len` bytes (an `Err` is returned otherwise: the file changed). Concurrent
    /// misses for one key wait for the same load. Files over `max_file` are loaded for this request
    /// only: stream those instead.
    pub(crate) async fn identity<F>(
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
    /// work. Files over `max_file` get `None`: stream those. (The server asks through [`select`].)
    ///
    /// [`select`]: ContentCache::select
    #[cfg(test)]
    pub(crate) async fn variant<S>(
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
    pub(crate) async fn select<S>(
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
    pub(crate) fn peek_identity(&self, key: &FileKey) -> Option<Representation> {
        self.lookup(&Key::Body(*key, Encoding::Identity)).flatten()
    }

    /// What [`ContentCache::select`] would answer, when everything that choice needs is already
    /// held; `None` sends the request down the path that can load and compress.
    pub(crate) fn select_cached(
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
    pub(super) fn lookup(&self, k: &Key) -> Option<Option<Representation>> {
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
pub(super) fn read_sibling(path: &Path, limit: u64) -> io::Result<Bytes> {
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
