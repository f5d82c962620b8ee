//! kHTTPd's Logging stage: one access-log line per request, written off the request path.
//!
//! The request handler fills a [`LogRecord`] and calls [`AccessLog::log`], which only pushes the record
//! onto a bounded queue (a full queue drops the line and counts it; the request path never waits for
//! the disk). One writer thread takes everything queued, formats it ([`format_combined`] or
//! [`format_json`]) and writes the batch with one write. The target and the format can be switched at
//! run time (`khttpd-ctl set logging`), and the file reopened after logrotate moved it (SIGUSR1,
//! `khttpd-ctl reopen-logs`).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use crate::logging::log_line::LogRecord;
use crate::logging::log_line::{iso_time, nonempty, push_clf_time, push_escaped};

/// Default capacity of the queue between the main daemons and the writer thread.
pub const DEFAULT_QUEUE_LEN: usize = 8192;

/// Mode of a newly created log file: the owner writes, the group (adm, for log readers) reads.
const FILE_MODE: u32 = 0o640;

/// Write errors are reported at most this often, so a full disk does not flood stderr.
const ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The line format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    /// Apache's combined format, read by goaccess, awstats and fail2ban.
    Combined,
    /// One JSON object per line.
    Json,
    /// A template with nginx's variables (`$remote_addr "$request" $status …`).
    Template(Arc<crate::logging::log_template::Template>),
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "combined" => Ok(LogFormat::Combined),
            "json" => Ok(LogFormat::Json),
            _ if s.contains('$') => crate::logging::log_template::Template::parse(s)
                .map(|t| LogFormat::Template(Arc::new(t))),
            _ => Err(format!(
                "expected combined, json or a template with $variables, got {s:?}"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogFormat::Combined => f.write_str("combined"),
            LogFormat::Json => f.write_str("json"),
            LogFormat::Template(t) => t.fmt(f),
        }
    }
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// No access log; [`AccessLog::log`] returns at once.
    Off,
    /// Standard output (`-`), for containers.
    Stdout,
    /// A file, opened for appending and created with mode 0640.
    File(PathBuf),
}

impl FromStr for LogTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("expected off, - (standard output) or a file path, got nothing".into()),
            "off" => Ok(LogTarget::Off),
            "-" => Ok(LogTarget::Stdout),
            path => Ok(LogTarget::File(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTarget::Off => f.write_str("off"),
            LogTarget::Stdout => f.write_str("-"),
            LogTarget::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Appends one line (with its `\n`) in Apache's combined format,
/// `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"`:
/// `127.0.0.1 - - [22/Nov/2026:02:31:50 +0000] "GET /x HTTP/1.1" 200 12 "-" "curl/8"`.
pub fn format_combined(r: &LogRecord, out: &mut Vec<u8>) {
    let client = r.client.to_canonical();
    let _ = write!(out, "{client} - - [");
    push_clf_time(out, r.time);
    out.extend_from_slice(b"] \"");
    // hyper never yields an empty method or target, but a log parser must see three words.
    push_escaped(out, nonempty(&r.method));
    out.push(b' ');
    push_escaped(out, nonempty(&r.target));
    out.push(b' ');
    push_escaped(out, nonempty(r.version));
    let _ = write!(out, "\" {} ", r.status);
    if r.bytes == 0 {
        out.push(b'-');
    } else {
        let _ = write!(out, "{}", r.bytes);
    }
    out.extend_from_slice(b" \"");
    push_escaped(out, r.referer.as_deref().unwrap_or("-"));
    out.extend_from_slice(b"\" \"");
    push_escaped(out, r.user_agent.as_deref().unwrap_or("-"));
    out.extend_from_slice(b"\"\n");
}

/// Appends one JSON line (with its `\n`) with the combined fields plus `duration_ms` and `route`.
pub fn format_json(r: &LogRecord, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct Line<'a> {
        time: String,
        client: IpAddr,
        method: &'a str,
        target: &'a str,
        version: &'a str,
        status: u16,
        bytes: u64,
        referer: Option<&'a str>,
        user_agent: Option<&'a str>,
        duration_ms: f64,
        route: &'a str,
        host: Option<&'a str>,
        request_id: Option<&'a str>,
        upstream: Option<String>,
        upstream_time_ms: Option<f64>,
    }
    // Milliseconds with microsecond precision: more digits are noise, and they cost log volume.
    let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
    let line = Line {
        time: iso_time(r.time),
        client: r.client.to_canonical(),
        method: &r.method,
        target: &r.target,
        version: r.version,
        status: r.status,
        bytes: r.bytes,
        referer: r.referer.as_deref(),
        user_agent: r.user_agent.as_deref(),
        duration_ms: ms(r.duration),
        route: r.route,
        host: r.host.as_deref(),
        request_id: r.request_id.as_deref(),
        upstream: r.upstream.map(|a| a.to_string()),
        upstream_time_ms: r.upstream_time.map(ms),
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// The access log's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AccessLogStats {
    /// Lines written.
    pub written: u64,
    /// Lines lost: the queue was full, or the write that carried them failed.
    pub dropped: u64,
    /// Lines queued and not yet written (kHTTPd's Logging queue).
    pub depth: u64,
    /// Failed writes and failed reopens.
    pub errors: u64,
}

enum Msg {
    // Boxed: a line is large, and the queue holds --log-queue messages of the largest variant.
    Record(Box<LogRecord>),
    /// Makes an idle writer look at the pending control requests.
    Wake,
}

/// What the writer writes to.
enum Output {
    Off,
    Stdout,
    File { path: PathBuf, file: File },
}

impl Output {
    fn open(target: &LogTarget) -> io::Result<Output> {
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
struct Control {
    target: Option<Output>,
    reopen: bool,
    stop: bool,
}

struct Shared {
    /// False when the target is off or the log is stopping: `log` then does nothing.
    enabled: AtomicBool,
    format: arc_swap::ArcSwap<LogFormat>,
    queued: AtomicU64,
    taken: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    control: Mutex<Control>,
    target: Mutex<LogTarget>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked: every update is one assignment.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The logging stage: a bounded queue in front of one writer thread.
pub struct AccessLog {
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
    pub fn start(
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
    pub fn log(&self, r: LogRecord) {
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
    pub fn enabled(&self) -> bool {
        self.shared.enabled.load(Relaxed)
    }

    /// Makes the writer reopen its file by path before the next batch (after logrotate moved it).
    pub fn reopen(&self) {
        lock(&self.shared.control).reopen = true;
        self.wake();
    }

    /// Switches the target; the file is opened here so that a bad path is reported to the caller.
    pub fn set_target(&self, t: LogTarget) -> io::Result<()> {
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
    pub fn set_format(&self, f: LogFormat) {
        self.shared.format.store(Arc::new(f));
    }

    /// The current target.
    pub fn target(&self) -> LogTarget {
        lock(&self.shared.target).clone()
    }

    /// The current format.
    pub fn format(&self) -> LogFormat {
        LogFormat::clone(&self.shared.format.load())
    }

    /// The counters and the queue depth.
    pub fn stats(&self) -> AccessLogStats {
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
    pub fn flush_and_stop(&self, timeout: Duration) {
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

struct Writer {
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    output: Output,
    batch_max: usize,
    last_report: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::UNIX_EPOCH;

    const COMBINED: &str = r#"^(\S+) (\S+) (\S+) \[([\w:/]+\s[+\-]\d{4})\] "(\S+) (.+?) (\S+)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"$"#;

    fn record() -> LogRecord {
        LogRecord {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            time: UNIX_EPOCH + Duration::from_secs(1_795_314_710),
            method: "GET".into(),
            target: "/x".into(),
            version: "HTTP/1.1",
            status: 200,
            bytes: 12,
            referer: None,
            user_agent: Some("curl/8".into()),
            duration: Duration::from_micros(1500),
            route: "static",
            host: Some("example.test".into()),
            request_id: None,
            upstream: None,
            upstream_time: None,
        }
    }

    fn combined(r: &LogRecord) -> String {
        let mut out = Vec::new();
        format_combined(r, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with('\n'), "{s:?}");
        s.trim_end_matches('\n').to_owned()
    }

    #[test]
    fn combined_matches_apache() {
        assert_eq!(
            combined(&record()),
            r#"127.0.0.1 - - [22/Nov/2026:02:31:50 +0000] "GET /x HTTP/1.1" 200 12 "-" "curl/8""#
        );
    }

    #[test]
    fn combined_parses_for_log_tools_even_with_nasty_input() {
        let re = regex::Regex::new(COMBINED).unwrap();
        let mut nasty = record();
        nasty.client = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        nasty.method = "GE\"T".into();
        nasty.target = "/a b\"c\\d\x01\x7f\u{e9}?q=\"x\"".into();
        nasty.referer = Some("http://e.x/\" \"-\" injected".into());
        nasty.user_agent = Some("Mozilla \"5.0\" \\ \t\r\n\u{1b}[31m 日本語 😀".into());
        nasty.bytes = 0;
        nasty.status = 404;
        for r in [record(), nasty.clone()] {
            let line = combined(&r);
            assert!(line.is_ascii(), "{line}");
            assert!(!line.contains('\n'));
            let caps = re
                .captures(&line)
                .unwrap_or_else(|| panic!("no match: {line}"));
            assert_eq!(&caps[8], r.status.to_string());
        }
        let line = combined(&nasty);
        let caps = re.captures(&line).unwrap();
        assert_eq!(&caps[1], "10.0.0.1");
        assert_eq!(&caps[9], "-");
        assert_eq!(&caps[5], r"GE\x22T");
        assert_eq!(&caps[6], r"/a b\x22c\x5Cd\x01\x7F\xC3\xA9?q=\x22x\x22");
        assert_eq!(&caps[10], r"http://e.x/\x22 \x22-\x22 injected");
        assert_eq!(
            &caps[11],
            r"Mozilla \x225.0\x22 \x5C \x09\x0D\x0A\x1B[31m \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80"
        );
        let mut ipv6 = record();
        ipv6.client = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(re.is_match(&combined(&ipv6)));
    }

    #[test]
    fn json_parses_back() {
        let mut r = record();
        r.user_agent = Some("ua \"q\" \\ \u{1} 日本".into());
        let mut out = Vec::new();
        format_json(&r, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["time"], "2026-11-22T02:31:50.000Z");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["target"], "/x");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "ua \"q\" \\ \u{1} 日本");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["route"], "static");
    }

    #[test]
    fn dates_of_known_timestamps() {
        let clf = |secs: i64| {
            let t = if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            };
            let mut out = Vec::new();
            push_clf_time(&mut out, t);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(clf(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf(951_782_400), "29/Feb/2000:00:00:00 +0000");
        // kHTTPd's date tables stopped here.
        assert_eq!(clf(1_167_609_599), "31/Dec/2006:23:59:59 +0000");
        assert_eq!(clf(2_147_483_648), "19/Jan/2038:03:14:08 +0000");
        assert_eq!(clf(4_107_542_400), "01/Mar/2100:00:00:00 +0000");
        assert_eq!(clf(-1), "31/Dec/1969:23:59:59 +0000");
        assert_eq!(
            iso_time(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
        // Every fifth day or so over three centuries agrees with httpdate's independent calendar.
        let mut secs = 0u64;
        while secs < 10_000_000_000 {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let http = httpdate::fmt_http_date(t); // "Sun, 22 Nov 2026 02:31:50 GMT"
            let p: Vec<&str> = http.split([' ', ',']).filter(|s| !s.is_empty()).collect();
            let expect = format!("{}/{}/{}:{} +0000", p[1], p[2], p[3], p[4]);
            assert_eq!(clf(secs as i64), expect);
            secs += 5 * 86_400 + 3_607;
        }
    }

    #[test]
    fn parses_targets_and_formats() {
        assert_eq!("off".parse::<LogTarget>(), Ok(LogTarget::Off));
        assert_eq!("-".parse::<LogTarget>(), Ok(LogTarget::Stdout));
        assert_eq!(
            "/var/log/khttpd/access.log".parse::<LogTarget>(),
            Ok(LogTarget::File("/var/log/khttpd/access.log".into()))
        );
        assert!("".parse::<LogTarget>().is_err());
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("combined".parse::<LogFormat>(), Ok(LogFormat::Combined));
        assert!("common".parse::<LogFormat>().is_err());
        assert_eq!(LogTarget::Stdout.to_string(), "-");
    }

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
