//! The access log's writer thread: takes every queued line, formats the batch and writes it with
//! one write(2); applies target switches, reopens and the stop between batches.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::logging::format::{format_combined, format_json, LogFormat, LogTarget};
use crate::logging::log_line::LogRecord;

/// Mode of a newly created log file: the owner writes, the group (adm, for log readers) reads.
const FILE_MODE: u32 = 0o640;

/// Write errors are reported at most this often, so a full disk does not flood stderr.
const ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(10);

pub(super) enum Msg {
    // Boxed: a line is large, and the queue holds --log-queue messages of the largest variant.
    Record(Box<LogRecord>),
    /// Makes an idle writer look at the pending control requests.
    Wake,
}

/// What the writer writes to.
pub(super) enum Output {
    Off,
    Stdout,
    File { path: PathBuf, file: File },
}

impl Output {
    pub(super) fn open(target: &LogTarget) -> io::Result<Output> {
        Ok(match target {
            LogTarget::Off => Output::Off,
            LogTarget::Stdout => Output::Stdout,
            LogTarget::File(path) => Output::File {
                path: path.clone(),
                file: open_log_file(path)?,
            },
        })
    }

    /// Writes the whole batch; `Ok(false)` when it went nowhere.
    fn write(&mut self, buf: &[u8]) -> io::Result<bool> {
        match self {
            Output::Off => Ok(false),
            Output::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()?;
                Ok(true)
            }
            // A File has no user-space buffer: the batch is one write(2) of O_APPEND data.
            Output::File { file, .. } => file.write_all(buf).map(|()| true),
        }
    }
}

fn open_log_file(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

/// Control requests for the writer, applied before its next batch.
#[derive(Default)]
pub(super) struct Control {
    pub(super) target: Option<Output>,
    pub(super) reopen: bool,
    pub(super) stop: bool,
}

pub(super) struct Shared {
    /// False when the target is off or the log is stopping: `log` then does nothing.
    pub(super) enabled: AtomicBool,
    pub(super) format: arc_swap::ArcSwap<LogFormat>,
    pub(super) queued: AtomicU64,
    pub(super) taken: AtomicU64,
    pub(super) written: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) control: Mutex<Control>,
    pub(super) target: Mutex<LogTarget>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked: every update is one assignment.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) struct Writer {
    pub(super) rx: Receiver<Msg>,
    pub(super) shared: Arc<Shared>,
    pub(super) output: Output,
    pub(super) batch_max: usize,
    pub(super) last_report: Option<Instant>,
}

impl Writer {
    pub(super) fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch_max.min(1024));
        let mut buf = Vec::with_capacity(64 * 1024);
        // Ends when every AccessLog handle is gone; std's channel hands out what is queued first.
        while let Ok(first) = self.rx.recv() {
            push_record(&mut batch, first);
            // Bounded, so that a steady stream of lines still gets written out in batches.
            while batch.len() < self.batch_max {
                match self.rx.try_recv() {
                    Ok(m) => push_record(&mut batch, m),
                    Err(_) => break,
                }
            }
            let stop = self.apply_control();
            self.write_batch(&mut batch, &mut buf);
            if stop {
                // log() no longer queues; take what was queued before the stop.
                while let Ok(m) = self.rx.try_recv() {
                    push_record(&mut batch, m);
                }
                self.write_batch(&mut batch, &mut buf);
                return;
            }
        }
    }

    /// Applies pending control requests; true when the writer is to stop.
    fn apply_control(&mut self) -> bool {
        let mut c = lock(&self.shared.control);
        if let Some(out) = c.target.take() {
            self.output = out;
        }
        if std::mem::take(&mut c.reopen) {
            if let Output::File { path, file } = &mut self.output {
                match open_log_file(path) {
                    Ok(f) => *file = f,
                    Err(e) => {
                        // Keep writing to the old file: a line there beats a lost line.
                        self.shared.errors.fetch_add(1, Relaxed);
                        tracing::error!(error = %e, "cannot reopen the access log; keeping the old file");
                    }
                }
            }
        }
        c.stop
    }

    fn write_batch(&mut self, batch: &mut Vec<LogRecord>, buf: &mut Vec<u8>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        self.shared.taken.fetch_add(n, Relaxed);
        if matches!(self.output, Output::Off) {
            // Queued just before the target was switched off.
            self.shared.dropped.fetch_add(n, Relaxed);
            batch.clear();
            return;
        }
        buf.clear();
        let format = self.shared.format.load();
        for r in batch.drain(..) {
            match &**format {
                LogFormat::Combined => format_combined(&r, buf),
                LogFormat::Json => format_json(&r, buf),
                LogFormat::Template(t) => t.write(&r, buf),
            }
        }
        match self.output.write(buf) {
            Ok(true) => {
                self.shared.written.fetch_add(n, Relaxed);
            }
            Ok(false) => {
                self.shared.dropped.fetch_add(n, Relaxed);
            }
            Err(e) => {
                self.shared.errors.fetch_add(1, Relaxed);
                self.shared.dropped.fetch_add(n, Relaxed);
                if self
                    .last_report
                    .is_none_or(|t| t.elapsed() >= ERROR_REPORT_INTERVAL)
                {
                    self.last_report = Some(Instant::now());
                    tracing::error!(error = %e, lines = n, "cannot write the access log");
                }
            }
        }
        // Keep one large batch from pinning its memory for the life of the process.
        if buf.capacity() > 1 << 20 {
            *buf = Vec::with_capacity(64 * 1024);
        }
    }
}

fn push_record(batch: &mut Vec<LogRecord>, m: Msg) {
    if let Msg::Record(r) = m {
        batch.push(*r);
    }
}
