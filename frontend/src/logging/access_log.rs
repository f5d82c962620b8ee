//! kHTTPd's Logging stage: one access-log line per request, written off the request path.
//!
//! The request handler fills a [`LogRecord`] and calls [`AccessLog::log`], which only pushes the record
//! onto a bounded queue (a full queue drops the line and counts it; the request path never waits for
//! the disk). One writer thread takes everything queued, formats it (in [`crate::logging::format`]) and writes the batch with one write. The
//! target and the format can be switched at run time (`khttpd-ctl set logging`), and the file reopened after logrotate moved it (SIGUSR1,
//! `khttpd-ctl reopen-logs`).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::logging::format::{LogFormat, LogTarget};
use crate::logging::log_line::LogRecord;
use crate::logging::writer::{lock, Control, Msg, Output, Shared, Writer};

/// Default capacity of the queue between the main daemons and the writer thread.
pub(crate) const DEFAULT_QUEUE_LEN: usize = 8192;

/// The access log's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct AccessLogStats {
    /// Lines written.
    pub written: u64,
    /// Lines lost: the queue was full, or the write that carried them failed.
    pub dropped: u64,
    /// Lines queued and not yet written (kHTTPd's Logging queue).
    pub depth: u64,
    /// Failed writes and failed reopens.
    pub errors: u64,
}

/// The logging stage: a bounded queue in front of one writer thread.
pub(crate) struct AccessLog {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    done: Mutex<Option<(Receiver<()>, JoinHandle<()>)>>,
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("target", &self.target())
            .field("format", &self.format())
            .field("stats", &self.stats())
            .finish()
    }
}

impl AccessLog {
    /// Opens the target and starts the writer thread; `queue_len` lines may wait (0 means the default).
    pub(crate) fn start(
        target: LogTarget,
        format: LogFormat,
        queue_len: usize,
    ) -> io::Result<Arc<AccessLog>> {
        let output = Output::open(&target)?;
        let queue_len = if queue_len == 0 {
            DEFAULT_QUEUE_LEN
        } else {
            queue_len
        };
        let (tx, rx) = mpsc::sync_channel(queue_len);
        let shared = Arc::new(Shared {
            enabled: AtomicBool::new(target != LogTarget::Off),
            format: arc_swap::ArcSwap::from_pointee(format),
            queued: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            control: Mutex::new(Control::default()),
            target: Mutex::new(target),
        });
        let (done_tx, done_rx) = mpsc::channel();
        let writer = Writer {
            rx,
            shared: shared.clone(),
            output,
            batch_max: queue_len,
            last_report: None,
        };
        let thread = std::thread::Builder::new()
            .name("khttpd-log".into())
            .spawn(move || {
                writer.run();
                let _ = done_tx.send(());
            })?;
        Ok(Arc::new(AccessLog {
            tx,
            shared,
            done: Mutex::new(Some((done_rx, thread))),
        }))
    }

    /// Queues one line; never blocks: with the queue full the line is dropped and counted.
    pub(crate) fn log(&self, r: LogRecord) {
        if !self.shared.enabled.load(Relaxed) {
            return;
        }
        match self.tx.try_send(Msg::Record(Box::new(r))) {
            Ok(()) => {
                self.shared.queued.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Whether lines are being logged at all, so a caller can skip gathering a record.
    pub(crate) fn enabled(&self) -> bool {
        self.shared.enabled.load(Relaxed)
    }

    /// Makes the writer reopen its file by path before the next batch (after logrotate moved it).
    pub(crate) fn reopen(&self) {
        lock(&self.shared.control).reopen = true;
        self.wake();
    }

    /// Switches the target; the file is opened here so that a bad path is reported to the caller.
    pub(crate) fn set_target(&self, t: LogTarget) -> io::Result<()> {
        let output = Output::open(&t)?;
        let on = t != LogTarget::Off;
        {
            let mut c = lock(&self.shared.control);
            c.target = Some(output);
            c.reopen = false;
            if !c.stop {
                self.shared.enabled.store(on, Relaxed);
            }
        }
        *lock(&self.shared.target) = t;
        self.wake();
        Ok(())
    }

    /// Switches the line format from the next batch on.
    pub(crate) fn set_format(&self, f: LogFormat) {
        self.shared.format.store(Arc::new(f));
    }

    /// The current target.
    pub(crate) fn target(&self) -> LogTarget {
        lock(&self.shared.target).clone()
    }

    /// The current format.
    pub(crate) fn format(&self) -> LogFormat {
        LogFormat::clone(&self.shared.format.load())
    }

    /// The counters and the queue depth.
    pub(crate) fn stats(&self) -> AccessLogStats {
        let s = &self.shared;
        // taken is read first: it never passes queued, so the difference cannot go negative.
        let taken = s.taken.load(Relaxed);
        let queued = s.queued.load(Relaxed);
        AccessLogStats {
            written: s.written.load(Relaxed),
            dropped: s.dropped.load(Relaxed),
            depth: queued.saturating_sub(taken),
            errors: s.errors.load(Relaxed),
        }
    }

    /// At exit: stops taking lines, writes what is queued, and waits up to `timeout` for the writer.
    pub(crate) fn flush_and_stop(&self, timeout: Duration) {
        {
            let mut c = lock(&self.shared.control);
            c.stop = true;
            self.shared.enabled.store(false, Relaxed);
        }
        self.wake();
        let Some((done, thread)) = lock(&self.done).take() else {
            return;
        };
        match done.recv_timeout(timeout) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if thread.join().is_err() {
                    tracing::error!("the access-log writer panicked");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    queued = self.stats().depth,
                    "the access log did not finish writing in time; lines may be lost"
                );
            }
        }
    }

    fn wake(&self) {
        // A full queue means the writer has work and will look at the control requests after this
        // batch anyway; blocking here could hang the control socket behind a stuck disk.
        let _ = self.tx.try_send(Msg::Wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use crate::logging::format::tests::record;

    fn wait_for(log: &AccessLog, written: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.stats().written < written {
            assert!(Instant::now() < deadline, "{:?}", log.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn writes_appends_with_mode_0640_and_flushes_at_stop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(LogTarget::File(path.clone()), LogFormat::Combined, 0).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // The umask may take bits away, never add them.
        assert_eq!(mode & !0o640, 0, "{mode:o}");
        for _ in 0..100 {
            log.log(record());
        }
        log.flush_and_stop(Duration::from_secs(10));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100);
        let s = log.stats();
        assert_eq!((s.written, s.dropped, s.depth, s.errors), (100, 0, 0, 0));
        // Stopped: further lines are ignored, and a second stop returns at once.
        log.log(record());
        log.flush_and_stop(Duration::from_secs(1));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        // A restart appends to what is there.
        let again = AccessLog::start(LogTarget::File(path.clone()), LogFormat::Json, 0).unwrap();
        again.log(record());
        again.flush_and_stop(Duration::from_secs(10));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 101);
        assert!(text.lines().last().unwrap().starts_with('{'));
    }

    #[test]
    fn full_queue_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(LogTarget::File(path.clone()), LogFormat::Combined, 1).unwrap();
        // Holding the control lock stalls the writer right after it takes its next batch.
        let stall = lock(&log.shared.control);
        let started = Instant::now();
        for _ in 0..1000 {
            log.log(record());
        }
        let elapsed = started.elapsed();
        let s = log.stats();
        assert!(s.dropped >= 990, "{s:?}");
        assert!(
            elapsed < Duration::from_secs(1),
            "log() blocked: {elapsed:?}"
        );
        drop(stall);
        log.flush_and_stop(Duration::from_secs(10));
        let s = log.stats();
        assert_eq!(s.written + s.dropped, 1000, "{s:?}");
        assert_eq!(s.depth, 0);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert_eq!(lines, s.written);
    }

    #[test]
    fn reopen_after_logrotate_moved_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        let log = AccessLog::start(LogTarget::File(path.clone()), LogFormat::Combined, 0).unwrap();
        log.log(record());
        wait_for(&log, 1);
        std::fs::rename(&path, &rotated).unwrap();
        // Until the reopen, lines still go to the moved file, as with Apache.
        log.log(record());
        wait_for(&log, 2);
        log.reopen();
        let mut r = record();
        r.target = "/after".into();
        log.log(r);
        log.flush_and_stop(Duration::from_secs(10));
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            2
        );
        let now = std::fs::read_to_string(&path).unwrap();
        assert_eq!(now.lines().count(), 1);
        assert!(now.contains("/after"));
    }

    #[test]
    fn switches_target_and_format_at_run_time() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        let log = AccessLog::start(LogTarget::Off, LogFormat::Combined, 0).unwrap();
        assert!(!log.enabled());
        log.log(record());
        assert_eq!(log.stats(), AccessLogStats::default());
        log.set_target(LogTarget::File(a.clone())).unwrap();
        assert_eq!(log.target(), LogTarget::File(a.clone()));
        log.log(record());
        wait_for(&log, 1);
        log.set_format(LogFormat::Json);
        assert_eq!(log.format(), LogFormat::Json);
        log.set_target(LogTarget::File(b.clone())).unwrap();
        log.log(record());
        wait_for(&log, 2);
        let bad = dir.path().join("missing-dir").join("x.log");
        assert!(log.set_target(LogTarget::File(bad)).is_err());
        assert_eq!(log.target(), LogTarget::File(b.clone()));
        log.set_target(LogTarget::Off).unwrap();
        log.log(record());
        log.flush_and_stop(Duration::from_secs(10));
        let a_text = std::fs::read_to_string(&a).unwrap();
        assert!(a_text.starts_with("127.0.0.1 - - ["), "{a_text}");
        let b_text = std::fs::read_to_string(&b).unwrap();
        let v: serde_json::Value = serde_json::from_str(b_text.trim()).unwrap();
        assert_eq!(v["route"], "static");
        assert_eq!(log.stats().written, 2);
    }
}
