//! Answers read as fast as the backend writes them (nginx's default `proxy_buffering on`): an
//! Apache worker is free the moment its answer is complete, whatever the client's speed. What
//! the client has not taken yet waits here: up to `--proxy-buffer` in memory, beyond in an
//! unlinked temporary file in `--temp-dir`, both bounded per answer and over all answers; when a
//! bound is reached, reading pauses and the backend waits (back-pressure, as without buffering).
//!
//! [`pump`] is the one loop both transports use: the relay's raw connection and hyper's client
//! body are [`Source`]s, the client's socket and hyper's body channel are [`Sink`]s.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use crate::config::BridgeConfig;

/// Bytes gathered before one write to the temporary file, and the most read back at once.
const FILE_CHUNK: usize = 64 * 1024;

/// Counters of answer buffering, over all main daemons.
#[derive(Debug, Default)]
pub(crate) struct SpoolStats {
    buffered: AtomicU64,
    to_disk: AtomicU64,
    streamed: AtomicU64,
    paused: AtomicU64,
    temp_files: AtomicU64,
    temp_bytes: AtomicU64,
    memory: AtomicU64,
}

/// A snapshot of [`SpoolStats`] for `khttpd-ctl status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolCounts {
    /// Answers read through a buffer (the backend was never waiting for the client).
    pub buffered: u64,
    /// Of those, answers that needed a temporary file.
    pub to_disk: u64,
    /// Answers passed through unbuffered (`text/event-stream`, `X-Accel-Buffering: no`,
    /// `--proxy-buffering off`).
    pub streamed: u64,
    /// Times reading an answer paused because its or the total budget was full.
    pub paused: u64,
    /// Temporary files open now (each already unlinked).
    pub temp_files: u64,
    /// Bytes those files hold now (their extent).
    pub temp_bytes: u64,
    /// Bytes of answers waiting in memory now.
    pub memory: u64,
}

impl SpoolStats {
    /// The counters now.
    pub(crate) fn counts(&self) -> SpoolCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SpoolCounts {
            buffered: get(&self.buffered),
            to_disk: get(&self.to_disk),
            streamed: get(&self.streamed),
            paused: get(&self.paused),
            temp_files: get(&self.temp_files),
            temp_bytes: get(&self.temp_bytes),
            memory: get(&self.memory),
        }
    }

    pub(crate) fn count_buffered(&self) {
        self.buffered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_streamed(&self) {
        self.streamed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether an answer with these fields is passed through as it comes instead of buffered:
/// buffering would hold back what must reach the client as it happens (server-sent events), or
/// the backend asked for it (`X-Accel-Buffering: no`, as nginx honours it).
pub(crate) fn streams(content_type: Option<&[u8]>, accel_buffering: Option<&[u8]>) -> bool {
    let event_stream = content_type.is_some_and(|v| {
        let essence = v.split(|&b| b == b';').next().unwrap_or_default();
        essence
            .trim_ascii()
            .eq_ignore_ascii_case(b"text/event-stream")
    });
    let refused = accel_buffering.is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"no"));
    event_stream || refused
}

/// The field a backend uses to ask for an unbuffered answer; it is not passed to the client
/// (nginx hides `X-Accel-*` too).
pub(crate) const X_ACCEL_BUFFERING: &str = "x-accel-buffering";

/// One answer's bytes between the backend and the client, in order: `mem`, then the file's
/// `[read_at, write_at)`, then `tail` (on its way to the file).
pub(crate) struct Spool {
    cfg: Arc<SpoolLimits>,
    stats: Arc<SpoolStats>,
    mem: VecDeque<Bytes>,
    mem_len: usize,
    file: Option<Arc<File>>,
    read_at: u64,
    write_at: u64,
    /// The file's extent counted in `temp_bytes`.
    extent: u64,
    tail: BytesMut,
    /// The file could not be made: memory only, then back-pressure.
    no_disk: bool,
    paused: bool,
}

/// The limits a spool keeps; see [`BridgeConfig`] for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpoolLimits {
    pub(crate) buffer: u64,
    pub(crate) buffers_total: u64,
    pub(crate) temp_max: u64,
    pub(crate) temp_total: u64,
    pub(crate) temp_dir: std::path::PathBuf,
}

impl SpoolLimits {
    pub(crate) fn of(cfg: &BridgeConfig) -> SpoolLimits {
        SpoolLimits {
            buffer: cfg.proxy_buffer,
            buffers_total: cfg.proxy_buffers_total,
            temp_max: cfg.proxy_temp_max,
            temp_total: cfg.proxy_temp_total,
            temp_dir: cfg.temp_dir.clone(),
        }
    }
}

impl Spool {
    pub(crate) fn new(cfg: Arc<SpoolLimits>, stats: Arc<SpoolStats>) -> Spool {
        Spool {
            cfg,
            stats,
            mem: VecDeque::new(),
            mem_len: 0,
            file: None,
            read_at: 0,
            write_at: 0,
            extent: 0,
            tail: BytesMut::new(),
            no_disk: false,
            paused: false,
        }
    }

    fn on_disk(&self) -> bool {
        self.read_at < self.write_at || !self.tail.is_empty()
    }

    /// Whether another read from the backend may be taken now.
    pub(crate) fn has_room(&mut self) -> bool {
        let total_mem = self.stats.memory.load(Ordering::Relaxed);
        let memory_room = !self.on_disk()
            && (self.mem_len as u64) < self.cfg.buffer
            && total_mem < self.cfg.buffers_total;
        let disk_room = !self.no_disk
            && self.write_at + self.tail.len() as u64 <= self.cfg.temp_max
            && self.cfg.temp_max > 0
            && self.stats.temp_bytes.load(Ordering::Relaxed) < self.cfg.temp_total
            && (self.tail.len() as u64) < FILE_CHUNK as u64 * 2;
        let room = memory_room || disk_room;
        if !room && !self.paused {
            self.stats.paused.fetch_add(1, Ordering::Relaxed);
        }
        self.paused = !room;
        room
    }

    /// Whether nothing waits for the client.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.mem.is_empty() && !self.on_disk()
    }

    /// Takes the next bytes read from the backend.
    pub(crate) async fn push(&mut self, bytes: Bytes) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let fits = (self.mem_len + bytes.len()) as u64 <= self.cfg.buffer
            && self.stats.memory.load(Ordering::Relaxed) + (bytes.len() as u64)
                <= self.cfg.buffers_total;
        self.stats
            .memory
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if !self.on_disk() && (fits || self.no_disk || self.cfg.temp_max == 0) {
            self.mem_len += bytes.len();
            self.mem.push_back(bytes);
            return Ok(());
        }
        if self.file.is_none() && !self.open_file().await {
            self.mem_len += bytes.len();
            self.mem.push_back(bytes);
            return Ok(());
        }
        self.tail.extend_from_slice(&bytes);
        if self.tail.len() >= FILE_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Creates the unlinked temporary file; `false` (logged, memory only from now) if it cannot.
    async fn open_file(&mut self) -> bool {
        let dir = self.cfg.temp_dir.clone();
        match tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir)).await {
            Ok(Ok(file)) => {
                self.stats.to_disk.fetch_add(1, Ordering::Relaxed);
                self.stats.temp_files.fetch_add(1, Ordering::Relaxed);
                self.file = Some(Arc::new(file));
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(dir = %self.cfg.temp_dir.display(), error = %e, "cannot create a temporary file for a backend answer; holding it in memory and pausing the backend");
                self.no_disk = true;
                false
            }
            Err(_) => {
                self.no_disk = true;
                false
            }
        }
    }

    /// Writes `tail` to the file (on the blocking pool, never a main daemon's thread).
    async fn flush(&mut self) -> io::Result<()> {
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        let data = self.tail.split().freeze();
        let at = self.write_at;
        let len = data.len() as u64;
        tokio::task::spawn_blocking(move || file.write_all_at(&data, at))
            .await
            .map_err(io::Error::other)??;
        self.stats.memory.fetch_sub(len, Ordering::Relaxed);
        self.write_at += len;
        if self.write_at > self.extent {
            self.stats
                .temp_bytes
                .fetch_add(self.write_at - self.extent, Ordering::Relaxed);
            self.extent = self.write_at;
        }
        Ok(())
    }

    /// The next bytes for the client, `None` when nothing waits.
    pub(crate) async fn pop(&mut self) -> io::Result<Option<Bytes>> {
        if let Some(b) = self.mem.pop_front() {
            self.mem_len -= b.len();
            self.stats
                .memory
                .fetch_sub(b.len() as u64, Ordering::Relaxed);
            return Ok(Some(b));
        }
        if self.read_at < self.write_at {
            let Some(file) = self.file.clone() else {
                return Ok(None);
            };
            let len = usize::try_from(self.write_at - self.read_at)
                .unwrap_or(FILE_CHUNK)
                .min(FILE_CHUNK);
            let at = self.read_at;
            let data = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; len];
                file.read_exact_at(&mut buf, at).map(|()| buf)
            })
            .await
            .map_err(io::Error::other)??;
            self.read_at += len as u64;
            if self.read_at == self.write_at {
                // All the file held is out: the next bytes may start over at its beginning.
                self.read_at = 0;
                self.write_at = 0;
            }
            return Ok(Some(Bytes::from(data)));
        }
        if !self.tail.is_empty() {
            let b = self.tail.split().freeze();
            self.stats
                .memory
                .fetch_sub(b.len() as u64, Ordering::Relaxed);
            return Ok(Some(b));
        }
        Ok(None)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let held = self.mem_len + self.tail.len();
        self.stats.memory.fetch_sub(held as u64, Ordering::Relaxed);
        if self.file.is_some() {
            self.stats.temp_files.fetch_sub(1, Ordering::Relaxed);
            self.stats
                .temp_bytes
                .fetch_sub(self.extent, Ordering::Relaxed);
        }
    }
}

/// Where an answer's bytes come from. `next` must be cancel-safe: dropped while waiting, it has
/// taken nothing.
pub(crate) trait Source {
    /// The next bytes of the body, `None` after the last.
    fn next(&mut self) -> impl std::future::Future<Output = io::Result<Option<Bytes>>> + Send;
}

/// Where an answer's bytes go. `write` must be cancel-safe: it advances `out` past what it
/// wrote, and dropped while waiting, it has written nothing.
pub(crate) trait Sink {
    /// Writes some of `out` (at least one byte) and advances it.
    fn write(
        &mut self,
        out: &mut Bytes,
    ) -> impl std::future::Future<Output = io::Result<()>> + Send;
}

/// Moves an answer from `src` to `sink` through `spool`: the client is written to whenever it
/// takes bytes, the backend read whenever the spool has room, so a slow client never slows the
/// backend down until the budgets are spent. `first` goes out before anything else (the head).
pub(crate) async fn pump<S: Source, K: Sink>(
    mut first: Bytes,
    src: &mut S,
    sink: &mut K,
    spool: &mut Spool,
) -> io::Result<()> {
    let mut done = false;
    loop {
        if first.is_empty() {
            first = spool.pop().await?.unwrap_or_default();
        }
        if first.is_empty() && done {
            return Ok(());
        }
        let room = !done && spool.has_room();
        tokio::select! {
            // The client first: bytes it can take now need no room.
            biased;
            r = sink.write(&mut first), if !first.is_empty() => r?,
            r = src.next(), if room => match r? {
                Some(bytes) => spool.push(bytes).await?,
                None => done = true,
            },
            else => return Err(io::Error::other("answer spool stalled")),
        }
    }
}

/// A client socket as a [`Sink`].
pub(crate) struct WriteSink<'a, W>(pub(crate) &'a mut W);

impl<W: tokio::io::AsyncWrite + Unpin + Send> Sink for WriteSink<'_, W> {
    async fn write(&mut self, out: &mut Bytes) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let n = self.0.write(out).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        out.advance(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(buffer: u64, temp_max: u64) -> Arc<SpoolLimits> {
        Arc::new(SpoolLimits {
            buffer,
            buffers_total: 1 << 30,
            temp_max,
            temp_total: 1 << 30,
            temp_dir: std::env::temp_dir(),
        })
    }

    #[test]
    fn streaming_exceptions() {
        assert!(streams(Some(b"text/event-stream; charset=utf-8"), None));
        assert!(streams(Some(b"Text/Event-Stream"), None));
        assert!(streams(Some(b"text/html"), Some(b" No ")));
        assert!(!streams(Some(b"text/html"), Some(b"yes")));
        assert!(!streams(None, None));
    }

    /// Bytes come out in the order they went in, across memory, the file and its tail, with
    /// the file reused once drained; the counters return to zero when the spool is dropped.
    #[tokio::test]
    async fn order_is_kept_across_memory_and_file() {
        let stats = Arc::new(SpoolStats::default());
        let mut spool = Spool::new(limits(40_000, 1 << 20), Arc::clone(&stats));
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for round in 0..3u8 {
            for i in 0..20u32 {
                let chunk: Vec<u8> = (0..10_000u32)
                    .map(|j| (i.wrapping_mul(31) ^ j ^ u32::from(round)) as u8)
                    .collect();
                expected.extend_from_slice(&chunk);
                assert!(spool.has_room());
                spool.push(Bytes::from(chunk)).await.unwrap();
                if i % 7 == 6 {
                    if let Some(b) = spool.pop().await.unwrap() {
                        got.extend_from_slice(&b);
                    }
                }
            }
            while let Some(b) = spool.pop().await.unwrap() {
                got.extend_from_slice(&b);
            }
            assert!(spool.is_empty());
        }
        assert_eq!(got, expected);
        let c = stats.counts();
        assert_eq!((c.to_disk, c.temp_files, c.memory), (1, 1, 0));
        assert!(c.temp_bytes > 0 && c.temp_bytes <= 1 << 20, "{c:?}");
        drop(spool);
        let c = stats.counts();
        assert_eq!((c.temp_files, c.temp_bytes, c.memory), (0, 0, 0));
    }

    /// With no file allowed, reading stops once the memory budget is spent.
    #[tokio::test]
    async fn budgets_pause_reading() {
        let stats = Arc::new(SpoolStats::default());
        let mut spool = Spool::new(limits(16_384, 0), Arc::clone(&stats));
        spool.push(Bytes::from(vec![1; 16_384])).await.unwrap();
        assert!(!spool.has_room());
        assert_eq!(stats.counts().paused, 1);
        spool.pop().await.unwrap();
        assert!(spool.has_room());
        let mut spool = Spool::new(limits(1024, 100_000), Arc::clone(&stats));
        let mut pushed = 0;
        while spool.has_room() && pushed < 10_000_000 {
            spool.push(Bytes::from(vec![2; 10_000])).await.unwrap();
            pushed += 10_000;
        }
        assert!(
            (100_000..=100_000 + 2 * FILE_CHUNK + 10_000).contains(&pushed),
            "{pushed}"
        );
    }
}
