//! One probe: the request that asks Apache for a URL as an anonymous outside client would, and
//! the judgement of its answer (see the parent module for what counts as evidence).

use std::net::SocketAddr;
use std::path::PathBuf;

use khttpd_bridge::BackendStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;

/// Bytes of a file a probe asks for (a Range), and compares.
pub(crate) const PROBE_BYTES: u64 = 64 * 1024;

/// The outside address a probe speaks for (TEST-NET-1, RFC 5737): no `Require ip` or
/// `Require local` rule that lets only insiders in can match it.
pub(crate) const OUTSIDER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    50000,
);

/// Largest probe answer head read: the same as any backend answer's.
const MAX_HEAD: usize = khttpd_bridge::h1::MAX_RESPONSE_HEAD;

/// What a probe asks for.
#[derive(Debug)]
pub(super) enum ProbeKind {
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
pub(super) struct Probe {
    pub(super) path: String,
    pub(super) host: String,
    pub(super) kind: ProbeKind,
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
    pub(super) async fn run(&self, cfg: &Config) -> std::io::Result<bool> {
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
}
