//! Verification: Apache is the authority on what a URL means.
//!
//! The front cannot read Apache's main configuration (`<Directory>`, `<Files>`, `<Location>`
//! rules, `AddType application/x-httpd-php .html`, handlers on upload directories) nor run its
//! `.htaccess` rewrites and auth. So, with a backend, a URL the local rules call static is served
//! by the front only after Apache has shown that it sends *that file, as it is on disk, to an
//! anonymous outside client*: a probe request without cookies or credentials, from an outside
//! address (`X-Forwarded-For`, or the PROXY header when the bridge speaks it), asking a Range of
//! the first [`PROBE_BYTES`]. The evidence is a 200 or 206 with exactly the file's bytes and size,
//! no `Set-Cookie`, no `WWW-Authenticate`, no `Vary` on `Cookie` or `Authorization`, no content
//! coding. A directory the front would list needs Apache's own listing (mod_autoindex's
//! "Index of" page). Anything else, a timeout or an error leaves the URL with the backend.
//!
//! A verdict belongs to the URL path, the file's identity (device, inode, size, mtime) and the
//! `.htaccess` chain above it; it expires after `--verify-ttl` and `khttpd-ctl flush` drops them
//! all. Until a verdict is positive and current, requests go to the backend as they came.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use khttpd_bridge::BackendStream;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::route::decide::{ListingDir, StaticFile};

/// Bytes of a file a probe asks for (a Range), and compares.
pub(crate) const PROBE_BYTES: u64 = 64 * 1024;

/// The outside address a probe speaks for (TEST-NET-1, RFC 5737): no `Require ip` or
/// `Require local` rule that lets only insiders in can match it.
pub(crate) const OUTSIDER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    50000,
);

/// Most probes waiting for their turn (beyond the `--verify-probes` running): a URL that finds
/// the queue full stays with the backend until a later request asks again.
pub(crate) const PENDING_MAX: u64 = 4096;

/// Largest probe answer head read: the same as any backend answer's.
const MAX_HEAD: usize = khttpd_bridge::h1::MAX_RESPONSE_HEAD;

/// How long a failed probe (timeout, refused, unparsable) keeps the URL with the backend before
/// the next try, at most: long enough not to hammer a backend that is down.
const ERROR_HOLD: Duration = Duration::from_secs(5);

/// What a verdict is bound to: the file (or directory) as it was when Apache was asked, and the
/// `.htaccess` chain above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evidence {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: SystemTime,
    guards: u64,
    listing: bool,
}

impl Evidence {
    /// A file's evidence.
    pub(crate) fn of_file(f: &StaticFile) -> Evidence {
        Evidence {
            dev: f.meta.dev,
            ino: f.meta.ino,
            len: f.meta.len,
            mtime: f.meta.mtime,
            guards: f.guards,
            listing: false,
        }
    }

    /// A listed directory's evidence (its mtime changes when entries come or go).
    pub(crate) fn of_listing(d: &ListingDir) -> Evidence {
        Evidence {
            dev: d.meta.dev,
            ino: d.meta.ino,
            len: d.meta.len,
            mtime: d.meta.mtime,
            guards: d.guards,
            listing: true,
        }
    }
}

/// What a static candidate is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// A file (a directory's index file included: the URL is the directory's).
    File(&'a StaticFile),
    /// A directory the front would list.
    Listing(&'a ListingDir),
}

impl Target<'_> {
    fn url(&self) -> &str {
        match self {
            Target::File(f) => &f.url,
            Target::Listing(d) => &d.url,
        }
    }

    fn evidence(&self) -> Evidence {
        match self {
            Target::File(f) => Evidence::of_file(f),
            Target::Listing(d) => Evidence::of_listing(d),
        }
    }
}

/// The state of a URL's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Apache serves this file as it is: the front may.
    Verified,
    /// Apache does something else with it (or the probe failed): the backend's.
    Refused,
    /// No current verdict for this file version: the backend's, and a probe is due.
    Unknown,
}

/// What a verdict is kept by: the client's `Host` as sent and the canonical path. Apache may answer
/// the same path differently per virtual host, so a verdict obtained with one `Host` says nothing
/// about another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    host: Box<str>,
    path: Box<str>,
}

/// [`Key`] borrowed, so a lookup allocates nothing; hashes as `Key` does (str fields in order).
#[derive(Hash)]
struct KeyRef<'a> {
    host: &'a str,
    path: &'a str,
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *key.host == *self.host && *key.path == *self.path
    }
}

impl KeyRef<'_> {
    fn owned(&self) -> Key {
        Key {
            host: self.host.into(),
            path: self.path.into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Verdict {
    evidence: Evidence,
    positive: bool,
    expires: Instant,
    epoch: u64,
}

#[derive(Debug, Default)]
struct Counters {
    verified: AtomicU64,
    refused: AtomicU64,
    expired: AtomicU64,
    probes: AtomicU64,
    probe_errors: AtomicU64,
    in_flight: AtomicU64,
    flushes: AtomicU64,
}

/// Counters for `khttpd-ctl status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct VerifyStats {
    /// Probes whose answer was the file as it is on disk.
    pub verified: u64,
    /// Probes whose answer was anything else (403, 401, a redirect, other bytes, PHP output).
    pub refused: u64,
    /// Verdicts found past their time (or from before a flush) and asked again.
    pub expired: u64,
    /// Probes sent.
    pub probes: u64,
    /// Probes that failed (refused connection, timeout, unreadable answer): the URL stays with the
    /// backend.
    pub probe_errors: u64,
    /// Probes running now.
    pub in_flight: u64,
    /// Verdicts held.
    pub entries: u64,
    /// `khttpd-ctl flush` calls.
    pub flushes: u64,
}

/// Apache's verdicts, shared by every main daemon; bounded like every cache.
pub(crate) struct Verifier {
    verdicts: quick_cache::sync::Cache<Key, Verdict>,
    in_flight: Mutex<HashSet<Key>>,
    /// At most `--verify-probes` probes talk to the backend at once; the others wait here.
    permits: tokio::sync::Semaphore,
    epoch: AtomicU64,
    counters: Counters,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("entries", &self.verdicts.len())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Holds at most `max` verdicts (the least used go first) and runs at most `probes` probes
    /// at once.
    pub(crate) fn new(max: usize, probes: usize) -> Arc<Verifier> {
        Arc::new(Verifier {
            verdicts: quick_cache::sync::Cache::new(max.max(1)),
            in_flight: Mutex::new(HashSet::new()),
            permits: tokio::sync::Semaphore::new(probes.max(1)),
            epoch: AtomicU64::new(0),
            counters: Counters::default(),
        })
    }

    /// The verdict for `path` asked with `host` as `evidence` stands now.
    pub(crate) fn check(&self, host: &str, path: &str, evidence: &Evidence, now: Instant) -> Check {
        let key = KeyRef { host, path };
        let Some(v) = self.verdicts.get(&key) else {
            return Check::Unknown;
        };
        if v.epoch != self.epoch.load(Ordering::Relaxed) || now >= v.expires {
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
            self.verdicts.remove(&key);
            return Check::Unknown;
        }
        match (v.evidence == *evidence, v.positive) {
            (false, _) => Check::Unknown,
            (true, true) => Check::Verified,
            (true, false) => Check::Refused,
        }
    }

    /// Whether the front may answer `target` itself. A URL without a current verdict goes to the
    /// backend, and a probe is started for it (at most `--verify-probes` at once, one per URL).
    /// `host` is the client's Host, which the probe sends too. Verdicts are kept by that Host and
    /// the target's canonical path, whatever spelling the client used.
    pub(crate) fn gate(
        self: &Arc<Self>,
        host: Option<&str>,
        target: Target<'_>,
        cfg: &Arc<Config>,
    ) -> bool {
        let evidence = target.evidence();
        let path = target.url();
        let host = host.unwrap_or("");
        match self.check(host, path, &evidence, Instant::now()) {
            Check::Verified => true,
            Check::Refused => false,
            Check::Unknown => {
                self.start_probe(path, host, target, evidence, cfg);
                false
            }
        }
    }

    /// Drops every verdict (after `apachectl graceful`): from now on each URL is asked again.
    pub(crate) fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.verdicts.clear();
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters.
    pub(crate) fn stats(&self) -> VerifyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VerifyStats {
            verified: get(&c.verified),
            refused: get(&c.refused),
            expired: get(&c.expired),
            probes: get(&c.probes),
            probe_errors: get(&c.probe_errors),
            in_flight: get(&c.in_flight),
            entries: self.verdicts.len() as u64,
            flushes: get(&c.flushes),
        }
    }

    fn start_probe(
        self: &Arc<Self>,
        path: &str,
        host: &str,
        target: Target<'_>,
        evidence: Evidence,
        cfg: &Arc<Config>,
    ) {
        if self.counters.in_flight.load(Ordering::Relaxed) >= PENDING_MAX {
            return;
        }
        {
            let mut running = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !running.insert(KeyRef { host, path }.owned()) {
                return;
            }
        }
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        self.counters.probes.fetch_add(1, Ordering::Relaxed);
        let spec = Probe {
            path: path.to_owned(),
            host: host.to_owned(),
            kind: match target {
                Target::File(f) => ProbeKind::File {
                    file: f.path.clone(),
                    meta: f.meta,
                    len: f.meta.len,
                },
                Target::Listing(d) => ProbeKind::Listing {
                    display: d.display.clone(),
                },
            },
        };
        let epoch = self.epoch.load(Ordering::Relaxed);
        let (this, cfg) = (Arc::clone(self), Arc::clone(cfg));
        tokio::spawn(async move {
            // Waits its turn: a burst of new URLs (a crawler, a deploy) is asked in order.
            let permit = this.permits.acquire().await;
            let outcome = tokio::time::timeout(cfg.bridge.timeout, spec.run(&cfg)).await;
            drop(permit);
            let now = Instant::now();
            let (positive, expires) = match outcome {
                Ok(Ok(true)) => {
                    this.counters.verified.fetch_add(1, Ordering::Relaxed);
                    (true, now + cfg.verify_ttl)
                }
                Ok(Ok(false)) => {
                    this.counters.refused.fetch_add(1, Ordering::Relaxed);
                    (false, now + cfg.verify_ttl)
                }
                Ok(Err(e)) => {
                    tracing::debug!(path = %spec.path, error = %e, "verification probe failed");
                    this.counters.probe_errors.fetch_add(1, Ordering::Relaxed);
                    (false, now + cfg.verify_ttl.min(ERROR_HOLD))
                }
                Err(_) => {
                    tracing::debug!(path = %spec.path, "verification probe timed out");
                    this.counters.probe_errors.fetch_add(1, Ordering::Relaxed);
                    (false, now + cfg.verify_ttl.min(ERROR_HOLD))
                }
            };
            // A flush while the probe ran: its answer may predate Apache's new configuration.
            let key = KeyRef {
                host: &spec.host,
                path: &spec.path,
            }
            .owned();
            if this.epoch.load(Ordering::Relaxed) == epoch {
                this.verdicts.insert(
                    key.clone(),
                    Verdict {
                        evidence,
                        positive,
                        expires,
                        epoch,
                    },
                );
            }
            this.in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            this.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[derive(Debug)]
enum ProbeKind {
    File {
        file: PathBuf,
        meta: crate::route::fs::Meta,
        len: u64,
    },
    Listing {
        display: String,
    },
}

/// One question to Apache.
#[derive(Debug)]
struct Probe {
    path: String,
    host: String,
    kind: ProbeKind,
}

impl Probe {
    /// The Host the probe sends: the client's, or (HTTP/1.0 without one) `localhost`.
    fn host_or_default(&self) -> &str {
        if self.host.is_empty() {
            "localhost"
        } else {
            &self.host
        }
    }

    /// Asks the first backend that takes the connection; `Ok(true)` is positive evidence.
    async fn run(&self, cfg: &Config) -> std::io::Result<bool> {
        let expected = match &self.kind {
            ProbeKind::File { file, meta, len } => {
                // The bytes of exactly the version the verdict will be bound to, opened as the
                // front opens what it serves (no symlink followed, no FIFO blocked on).
                let (file, meta) = (file.clone(), *meta);
                let (want, req, forbid) = (
                    (*len).min(PROBE_BYTES),
                    cfg.perm_required,
                    cfg.forbidden_bits(),
                );
                tokio::task::spawn_blocking(move || {
                    let f = crate::sending::static_file::open_checked(&file, &meta, req, forbid)?;
                    crate::sending::body::read_exact_at(&f, 0, want as usize)
                })
                .await
                .map_err(std::io::Error::other)??
                .to_vec()
            }
            ProbeKind::Listing { .. } => Vec::new(),
        };
        let mut last = std::io::Error::other("no backend");
        for addr in &cfg.bridge.backends {
            match BackendStream::connect(*addr).await {
                Ok(stream) => return self.ask(stream, cfg, &expected).await,
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn ask(
        &self,
        mut stream: BackendStream,
        cfg: &Config,
        expected: &[u8],
    ) -> std::io::Result<bool> {
        let mut req = Vec::with_capacity(512);
        if let Some(preface) = khttpd_bridge::proxy_protocol::header(
            cfg.bridge.proxy_protocol,
            OUTSIDER,
            // Over a Unix socket the connection has no address of its own: the front's.
            stream.local_tcp().unwrap_or(cfg.listen),
        ) {
            req.extend_from_slice(&preface);
        }
        req.extend_from_slice(
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: khttpd-front verification\r\n\
                 Accept: */*\r\nAccept-Encoding: identity\r\nX-Forwarded-For: {}\r\n\
                 X-Forwarded-Proto: http\r\nX-Forwarded-Host: {}\r\nConnection: close\r\n",
                self.path,
                self.host_or_default(),
                OUTSIDER.ip(),
                self.host_or_default()
            )
            .as_bytes(),
        );
        let limit = match &self.kind {
            ProbeKind::File { len, .. } if *len > 0 => {
                req.extend_from_slice(
                    format!("Range: bytes=0-{}\r\n", len.min(&PROBE_BYTES) - 1).as_bytes(),
                );
                PROBE_BYTES as usize
            }
            ProbeKind::File { .. } => 0,
            ProbeKind::Listing { .. } => PROBE_BYTES as usize,
        };
        req.extend_from_slice(b"\r\n");
        stream.write_all(&req).await?;
        let mut buf = Vec::with_capacity(8192);
        let head = loop {
            if buf.len() > MAX_HEAD {
                return Ok(false);
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before the answer's head",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(head) = Answer::parse(&buf)? {
                break head;
            }
        };
        // The body, up to what the judgement needs (one byte more shows "longer than expected").
        let want = head.body_start + limit + 1;
        while buf.len() < want {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = &buf[head.body_start.min(buf.len())..];
        Ok(match &self.kind {
            ProbeKind::File { len, .. } => judge_file(&head, body, expected, *len),
            ProbeKind::Listing { display } => judge_listing(&head, body, display),
        })
    }
}

/// A probe answer's head: what the judgement reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Status code.
    pub status: u16,
    /// Header fields, names lower-cased.
    pub fields: Vec<(String, String)>,
    /// Where the body starts in the buffer.
    pub body_start: usize,
}

impl Answer {
    /// Parses a complete head from `buf`; `None` until it is complete.
    pub(crate) fn parse(buf: &[u8]) -> std::io::Result<Option<Answer>> {
        let mut storage = [httparse::EMPTY_HEADER; khttpd_bridge::h1::MAX_RESPONSE_FIELDS];
        let mut resp = httparse::Response::new(&mut storage);
        match resp.parse(buf) {
            // However it arrived, a head past the limit every backend answer has is refused.
            Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
                Err(std::io::Error::other("answer head too large"))
            }
            Ok(httparse::Status::Complete(n)) => Ok(Some(Answer {
                status: resp.code.unwrap_or(0),
                fields: resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
                body_start: n,
            })),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(std::io::Error::other(format!(
                "unparsable answer head: {e}"
            ))),
        }
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| n == name)
    }

    /// What no answer meant for anyone carries: a session, a credential challenge, a variant per
    /// user.
    fn personal(&self) -> bool {
        let varies_by_user = self.fields.iter().any(|(n, v)| {
            n == "vary"
                && v.split(',').any(|t| {
                    let t = t.trim();
                    t == "*"
                        || t.eq_ignore_ascii_case("cookie")
                        || t.eq_ignore_ascii_case("authorization")
                })
        });
        self.has("set-cookie") || self.has("www-authenticate") || varies_by_user
    }

    /// What a file sent as it is never carries: a content coding, or a body framed by chunks
    /// (SSI and PHP output are chunked; Apache sends a file with its Content-Length).
    fn transformed(&self) -> bool {
        let coded = self
            .field("content-encoding")
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
        coded || self.has("transfer-encoding")
    }
}

/// Whether Apache's answer is the file as it is on disk: 200 with all of it, or 206 with the
/// first bytes asked and the file's size in `Content-Range`.
pub(crate) fn judge_file(head: &Answer, body: &[u8], expected: &[u8], len: u64) -> bool {
    if head.personal() || head.transformed() {
        return false;
    }
    let length: Option<u64> = head
        .field("content-length")
        .and_then(|v| v.trim().parse().ok());
    match head.status {
        200 => {
            // Without a Range (an empty file) or with Ranges off: the whole file, or at least its
            // first bytes and its exact size.
            length == Some(len)
                && body.len() as u64 >= expected.len() as u64
                && body[..expected.len()] == *expected
                && (len > expected.len() as u64 || body.len() == expected.len())
        }
        206 => {
            let want = format!("bytes 0-{}/{len}", expected.len().saturating_sub(1));
            head.field("content-range").map(str::trim) == Some(want.as_str())
                && length == Some(expected.len() as u64)
                && body == expected
        }
        _ => false,
    }
}

/// Whether Apache lists the directory itself (mod_autoindex's page for that path), so the front's
/// listing shows what Apache would let anyone see.
pub(crate) fn judge_listing(head: &Answer, body: &[u8], display: &str) -> bool {
    // mod_autoindex streams its page in chunks; only who may see it matters here.
    if head.status != 200 || head.personal() {
        return false;
    }
    let html = head
        .field("content-type")
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
    // mod_autoindex titles `/files/` as "Index of /files" (the root stays "/"), its name escaped.
    let shown = display
        .strip_suffix('/')
        .filter(|s| !s.is_empty())
        .unwrap_or(display);
    let text = String::from_utf8_lossy(body);
    html && [shown, display].iter().any(|name| {
        text.contains(&format!("<title>Index of {}</title>", html_escape(name)))
            || text.contains(&format!("<title>Index of {name}</title>"))
    })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(raw: &str) -> (Answer, Vec<u8>) {
        let a = Answer::parse(raw.as_bytes()).unwrap().unwrap();
        let body = raw.as_bytes()[a.body_start..].to_vec();
        (a, body)
    }

    #[test]
    fn the_file_as_it_is_is_evidence() {
        let (a, b) = answer(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-4/10\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert!(judge_file(&a, &b, b"hello", 10));
        assert!(!judge_file(&a, &b, b"hellx", 10), "other bytes");
        assert!(!judge_file(&a, &b, b"hello", 11), "other size");
        let (a, b) = answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert!(judge_file(&a, &b, b"hello", 5));
        let (a, b) = answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(judge_file(&a, &b, b"", 0));
    }

    #[test]
    fn anything_else_leaves_the_url_with_apache() {
        for raw in [
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nSet-Cookie: s=1\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nVary: Accept-Encoding, Cookie\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello!",
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhell",
            "HTTP/1.1 206 Partial\r\nContent-Range: bytes 0-4/99\r\nContent-Length: 5\r\n\r\nhello",
        ] {
            let (a, b) = answer(raw);
            assert!(!judge_file(&a, &b, b"hello", 5), "{raw}");
        }
    }

    #[test]
    fn only_apaches_own_listing_lets_the_front_list() {
        let page = "HTTP/1.1 200 OK\r\nContent-Type: text/html;charset=UTF-8\r\nContent-Length: 60\r\n\r\n\
                    <html><head><title>Index of /files</title></head></html>";
        let (a, b) = answer(page);
        assert!(judge_listing(&a, &b, "/files/"));
        assert!(!judge_listing(&a, &b, "/other/"));
        let (a, b) = answer(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n\
             2d\r\n<html><head><title>Index of /big</title></head>\r\n0\r\n\r\n",
        );
        assert!(
            judge_listing(&a, &b, "/big/"),
            "a long listing comes in chunks"
        );
        let (a, b) = answer("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        assert!(!judge_listing(&a, &b, "/files/"));
        let (a, b) = answer(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\r\n<p>php</p>",
        );
        assert!(!judge_listing(&a, &b, "/files/"));
    }

    #[test]
    fn verdicts_follow_the_file_the_clock_and_flushes() {
        let v = Verifier::new(16, 2);
        let ev = Evidence {
            dev: 1,
            ino: 2,
            len: 3,
            mtime: SystemTime::UNIX_EPOCH,
            guards: 0,
            listing: false,
        };
        let now = Instant::now();
        let key = || {
            KeyRef {
                host: "h",
                path: "/a",
            }
            .owned()
        };
        assert_eq!(v.check("h", "/a", &ev, now), Check::Unknown);
        v.verdicts.insert(
            key(),
            Verdict {
                evidence: ev,
                positive: true,
                expires: now + Duration::from_secs(60),
                epoch: 0,
            },
        );
        assert_eq!(v.check("h", "/a", &ev, now), Check::Verified);
        assert_eq!(v.check("other", "/a", &ev, now), Check::Unknown, "per Host");
        let changed = Evidence { len: 4, ..ev };
        assert_eq!(
            v.check("h", "/a", &changed, now),
            Check::Unknown,
            "new version"
        );
        let guarded = Evidence { guards: 9, ..ev };
        assert_eq!(
            v.check("h", "/a", &guarded, now),
            Check::Unknown,
            ".htaccess changed"
        );
        assert_eq!(
            v.check("h", "/a", &ev, now + Duration::from_secs(61)),
            Check::Unknown,
            "expired"
        );
        v.verdicts.insert(
            key(),
            Verdict {
                evidence: ev,
                positive: false,
                expires: now + Duration::from_secs(60),
                epoch: 0,
            },
        );
        assert_eq!(v.check("h", "/a", &ev, now), Check::Refused);
        v.flush();
        assert_eq!(v.check("h", "/a", &ev, now), Check::Unknown, "flushed");
        assert_eq!(v.stats().expired, 1);
    }
}
