//! The HTTP/1.1 wire rules, one set for every parser of the front and the bridge: the limits the
//! head guard and the fast path (client requests), the relay, the verification probe and hyper's
//! client (backend answers) share, and the backend answer's head and framing as the relay reads
//! them (any 3-digit status, any reason bytes; `Content-Length` and chunked framing
//! with one set of limits). Two parsers of one message that disagree on a limit would let one side
//! accept what the other refuses.

use std::ops::Range;

use crate::hop::{connection_tokens, is_hop_by_hop};
use crate::spool;

/// The largest response head (status line and fields) accepted from a backend; hyper's client is
/// built with it (`max_header_size`), so the relay and hyper refuse the same heads (502).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most fields in a backend's response head. hyper's client default, kept so its parse stays on
/// the stack; the relay and the probe use the same number.
pub const MAX_RESPONSE_FIELDS: usize = 100;

/// Most fields in a client's request head (hyper's server default: beyond it, 431).
pub const MAX_REQUEST_FIELDS: usize = 100;

/// Most hex digits in a chunk size, leading zeros included: more cannot be a real chunk, and
/// overflows some parsers behind us.
pub const MAX_CHUNK_SIZE_DIGITS: usize = 15;

/// The longest chunk-size line (extensions included) or trailer line accepted.
pub const MAX_CHUNK_LINE: usize = 8 * 1024;

/// How the body of an answer is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a HEAD request, 1xx, 204 or 304.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// Chunked; the chunks pass through as they are.
    Chunked,
    /// Until the backend closes: the client's connection must close too.
    UntilClose,
}

/// How a client's request body is delimited, by the strict rules a front owes the server behind
/// it (RFC 9112 §6.1, §6.3): anything two parsers could read differently is refused, not repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
}

/// A request head whose framing is refused: the status (400, or 501 for a transfer coding other
/// than `chunked`) and why, in words fit for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedFraming {
    /// 400 or 501.
    pub status: u16,
    /// What is wrong.
    pub why: &'static str,
}

/// The framing of a request from its fields (`name`, `value` pairs, in any case): one
/// `Content-Length` of digits, or one `Transfer-Encoding: chunked`, never both, never repeated;
/// and whether it asks for an upgrade. The head guard (raw bytes before hyper) and the hyper
/// handler (HTTP/1.1 and HTTP/2) both decide with it. A backend answer's framing is
/// [`parse_head`]'s, which takes what RFC 9112 lets a recipient accept (equal repeated lengths).
pub fn request_framing<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<(RequestBody, bool), RefusedFraming> {
    let refuse = |status, why| Err(RefusedFraming { status, why });
    let (mut length, mut lengths, mut codings, mut chunked, mut upgrade) =
        (None, 0, 0, false, false);
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            let digits = value.trim_ascii();
            length =
                (!digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                    .flatten();
            if length.is_none() {
                return refuse(400, "Content-Length is not a number.");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            chunked = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    if codings > 0 && lengths > 0 {
        return refuse(
            400,
            "Content-Length and Transfer-Encoding together are ambiguous.",
        );
    }
    if lengths > 1 {
        return refuse(400, "Content-Length must appear once.");
    }
    if codings > 1 || (codings == 1 && !chunked) {
        return refuse(501, "Only the chunked transfer coding is supported.");
    }
    let body = match (length, chunked) {
        (_, true) => RequestBody::Chunked,
        (Some(n), false) => RequestBody::Length(n),
        (None, false) => RequestBody::None,
    };
    Ok((body, upgrade))
}

/// A parsed response head; ranges index the connection's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) reason: Range<usize>,
    /// End-to-end fields: hop-by-hop ones, `Content-Length` and `Transfer-Encoding` left out.
    pub(crate) fields: Vec<(Range<usize>, Range<usize>)>,
    pub(crate) framing: Framing,
    pub(crate) content_length: Option<u64>,
    /// Whether the connection may carry another request after this answer.
    pub(crate) keep_alive: bool,
    /// Whether the answer must pass unbuffered (see [`spool::streams`]).
    pub(crate) streams: bool,
}

/// Parses an answer's head from `buf`: `Ok(None)` until it is complete. 1xx heads other than
/// 101 come back too; the caller skips them (as hyper's client does).
pub(crate) fn parse_head(buf: &[u8], head_only: bool) -> Result<Option<ResponseHead>, String> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_RESPONSE_FIELDS];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(buf) {
        // However it arrived (in one read or several), a head past the limit is refused, as
        // hyper's client refuses it.
        Ok(httparse::Status::Complete(n)) if n > MAX_RESPONSE_HEAD => {
            return Err("response head too large".into())
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("unparsable response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    if !(100..=999).contains(&status) {
        return Err(format!("invalid status {status}"));
    }
    if status == 101 {
        return Err("101 to a request that asked for no upgrade".into());
    }
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    let named = connection_tokens(
        resp.headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("connection"))
            .map(|f| f.value),
    );
    let close = named.iter().any(|t| t.eq_ignore_ascii_case(b"close"));
    let mut fields = Vec::with_capacity(resp.headers.len());
    let (mut lengths, mut codings) = (Vec::new(), 0usize);
    let mut chunked = false;
    let (mut content_type, mut accel) = (None, None);
    for f in resp.headers.iter() {
        if f.name.eq_ignore_ascii_case("content-type") {
            content_type = Some(f.value);
        }
        if f.name.eq_ignore_ascii_case(spool::X_ACCEL_BUFFERING) {
            accel = Some(f.value);
        } else if f.name.eq_ignore_ascii_case("content-length") {
            lengths.push(f.value);
        } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
            codings += 1;
            chunked = f.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if !is_hop_by_hop(f.name, &named) {
            fields.push((at(f.name.as_bytes()), at(f.value)));
        }
    }
    let content_length = content_length(&lengths)?;
    let framing = if head_only || status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else if codings > 0 {
        if content_length.is_some() {
            return Err("both Content-Length and Transfer-Encoding".into());
        }
        if codings > 1 || !chunked {
            return Err("a transfer coding other than chunked".into());
        }
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(ResponseHead {
        len,
        status,
        // httparse gives a static "" for a missing reason or one with bytes outside UTF-8 (PHP's
        // `header("HTTP/1.1 499 caf\xe9")`): no range of `buf`, so no reason is passed on.
        reason: resp
            .reason
            .map(str::as_bytes)
            .filter(|r| {
                let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
                !r.is_empty()
                    && r.as_ptr() as usize >= start
                    && r.as_ptr() as usize + r.len() <= end
            })
            .map_or(0..0, at),
        fields,
        framing,
        content_length,
        keep_alive: resp.version == Some(1) && !close && framing != Framing::UntilClose,
        streams: spool::streams(content_type, accel),
    }))
}

/// The one length all `Content-Length` values (and list members) agree on (RFC 9112 §6.3).
fn content_length(values: &[&[u8]]) -> Result<Option<u64>, String> {
    let mut found = None;
    for member in values.iter().flat_map(|v| v.split(|&b| b == b',')) {
        let digits = member.trim_ascii();
        let n = (!digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| "invalid Content-Length".to_owned())?;
        if found.is_some_and(|f| f != n) {
            return Err("conflicting Content-Length values".into());
        }
        found = Some(n);
    }
    Ok(found)
}

/// Finds the end of a chunked body without changing a byte (RFC 9112 §7.1), so the chunks can
/// go to the client as they came and the connection back to the pool after the last one. The
/// one chunked scanner: the relay reads backend answers with it, the front's head guard client
/// requests, so both refuse exactly the same framing.
#[derive(Debug, Default)]
pub struct ChunkedEnd {
    state: Chunk,
    size: u64,
    digits: usize,
    line: usize,
    left: u64,
    /// Payload bytes seen, for the access log.
    pub(crate) payload: u64,
}

/// Chunked framing that breaks the rules, and where: `at` indexes the bytes of the `feed` call
/// that found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct ChunkError {
    /// The offending byte's index in the bytes fed.
    pub at: usize,
    /// What is wrong, for the log.
    pub why: &'static str,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl ChunkedEnd {
    /// Takes the next bytes of the body: `Ok(Some(n))` when it ends after the first `n` of them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ChunkError> {
        self.feed_with(bytes, |_| {})
    }

    /// [`ChunkedEnd::feed`], handing each piece of chunk data (the payload) to `data`.
    pub fn feed_with(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Option<usize>, ChunkError> {
        let fail = |at: usize, why: &'static str| ChunkError { at, why };
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                Chunk::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = u64::from((b as char).to_digit(16).unwrap_or(0) as u8);
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(d))
                            .ok_or(fail(i, "chunk size overflow"))?;
                        self.digits += 1;
                        if self.digits > MAX_CHUNK_SIZE_DIGITS {
                            return Err(fail(i, "chunk size has too many digits"));
                        }
                    }
                    _ if self.digits == 0 => return Err(fail(i, "chunk size expected")),
                    b';' | b' ' | b'\t' => {
                        self.state = Chunk::Ext;
                        self.line = self.digits;
                    }
                    b'\r' => self.state = Chunk::SizeLf,
                    _ => return Err(fail(i, "invalid chunk size")),
                },
                Chunk::Ext | Chunk::TrailerLine => {
                    if b == b'\r' {
                        self.state = if self.state == Chunk::Ext {
                            Chunk::SizeLf
                        } else {
                            Chunk::TrailerLf
                        };
                    } else if b == b'\n' {
                        return Err(fail(i, "bare LF in chunked framing"));
                    } else {
                        self.line += 1;
                        if self.line > MAX_CHUNK_LINE {
                            return Err(fail(i, "chunk line too long"));
                        }
                    }
                }
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(fail(i, "CR without LF after a chunk size"));
                    }
                    self.state = if self.size == 0 {
                        Chunk::Trailer
                    } else {
                        self.left = self.size;
                        Chunk::Data
                    };
                    self.size = 0;
                    self.digits = 0;
                }
                Chunk::Data => {
                    let n = usize::try_from(self.left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    self.left -= n as u64;
                    self.payload += n as u64;
                    data(&bytes[i..i + n]);
                    i += n;
                    if self.left == 0 {
                        self.state = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::DataCr if b == b'\r' => self.state = Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => self.state = Chunk::Size,
                Chunk::DataCr | Chunk::DataLf => {
                    return Err(fail(i, "chunk data not followed by CRLF"))
                }
                Chunk::Trailer if b == b'\n' => return Err(fail(i, "bare LF in chunked framing")),
                Chunk::Trailer => {
                    if b == b'\r' {
                        self.state = Chunk::EndLf;
                    } else {
                        self.line = 1;
                        self.state = Chunk::TrailerLine;
                    }
                }
                Chunk::TrailerLf | Chunk::EndLf if b != b'\n' => {
                    return Err(fail(i, "CR without LF in chunked framing"))
                }
                Chunk::TrailerLf => self.state = Chunk::Trailer,
                Chunk::EndLf => {
                    self.state = Chunk::Done;
                    return Ok(Some(i + 1));
                }
                Chunk::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok((self.state == Chunk::Done).then_some(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_only: bool) -> Result<Option<ResponseHead>, String> {
        parse_head(raw.as_bytes(), head_only)
    }

    fn framing(raw: &str) -> Result<Framing, String> {
        head(raw, false).map(|h| h.expect("complete").framing)
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let ok = "HTTP/1.1 200 OK\r\n";
        assert_eq!(
            framing(&format!("{ok}Content-Length: 5\r\n\r\n")),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing(&format!("{ok}Transfer-Encoding: Chunked\r\n\r\n")),
            Ok(Framing::Chunked)
        );
        assert_eq!(framing(&format!("{ok}\r\n")), Ok(Framing::UntilClose));
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
            Ok(Framing::Empty)
        );
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\n\r\n"),
            Ok(Framing::Empty)
        );
        let h = head(&format!("{ok}Content-Length: 7\r\n\r\n"), true)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.content_length), (Framing::Empty, Some(7)));
        assert_eq!(
            framing(&format!(
                "{ok}Content-Length: 5\r\nContent-Length: 5, 5\r\n\r\n"
            )),
            Ok(Framing::Length(5))
        );
        for bad in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Content-Length: 99999999999999999999\r\n",
        ] {
            assert!(framing(&format!("{ok}{bad}\r\n")).is_err(), "{bad}");
        }
        assert!(framing("HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
        assert!(framing("HTTP/1.1 200 OK\r\nBad Field: x\r\n\r\n").is_err());
        assert!(framing("HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\n\r\n").is_err());
        assert_eq!(head("HTTP/1.1 200 OK\r\nX: a", false), Ok(None));
    }

    #[test]
    fn keep_alive_needs_http11_without_close() {
        let keep = |raw: &str| head(raw, false).unwrap().unwrap().keep_alive;
        assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.1 200 OK\r\n\r\n"), "until close");
    }

    #[test]
    fn hop_by_hop_and_framing_fields_are_left_out() {
        let raw = "HTTP/1.1 200 Fine\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
                   Content-Type: text/html\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
        let h = head(raw, false).unwrap().unwrap();
        let names: Vec<&str> = h.fields.iter().map(|(n, _)| &raw[n.clone()]).collect();
        assert_eq!(names, ["Content-Type", "Set-Cookie", "Set-Cookie"]);
        assert_eq!(&raw[h.reason.clone()], "Fine");
        assert_eq!(h.len, raw.len());
    }

    /// Issue 14: any three-digit status, with a reason missing, empty or outside UTF-8, parses
    /// (it panicked when the relay sliced the buffer at a reason that was not in it).
    #[test]
    fn odd_statuses_and_reasons_parse_without_a_reason_range_outside_the_buffer() {
        for raw in [
            &b"HTTP/1.1 599\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 499 caf\xe9\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 299 \xff\xfe odd\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 700 Whatever\r\nContent-Length: 0\r\n\r\n",
        ] {
            let h = parse_head(raw, false)
                .unwrap_or_else(|e| panic!("{e}: {raw:?}"))
                .expect("a complete head");
            assert!(h.reason.end <= raw.len(), "{raw:?}");
            let reason = &raw[h.reason.clone()];
            assert!(reason.is_empty() || raw.windows(reason.len()).any(|w| w == reason));
        }
    }

    fn scan_all(body: &[u8], step: usize) -> Result<Option<(usize, u64)>, &'static str> {
        let mut s = ChunkedEnd::default();
        let mut at = 0;
        for piece in body.chunks(step) {
            if let Some(n) = s.feed(piece).map_err(|e| e.why)? {
                return Ok(Some((at + n, s.payload)));
            }
            at += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn chunked_end_is_found_in_any_split() {
        let body = b"5\r\nhello\r\na;ext=1\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\nNEXT";
        let end = body.len() - 4;
        for step in 1..=body.len() {
            assert_eq!(scan_all(body, step), Ok(Some((end, 15))), "step {step}");
        }
        assert_eq!(scan_all(b"0\r\n\r\n", 5), Ok(Some((5, 0))));
        assert_eq!(scan_all(b"5\r\nhel", 3), Ok(None));
    }

    #[test]
    fn bad_chunked_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            // The limits every parser shares (h1): 16 digits, even zeros.
            b"0000000000000005\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\n\rX",
            b"0\r\n\n\r\n",
        ] {
            assert!(
                scan_all(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn errors_say_which_byte() {
        let at = |body: &[u8]| ChunkedEnd::default().feed(body).unwrap_err().at;
        assert_eq!(at(b"5\r\nhelloX\r\n"), 8);
        assert_eq!(at(b"3\nabc"), 1);
        assert_eq!(at(b"0\r\n\n"), 3);
        // Fed in pieces, the index is within the piece that holds the byte.
        let mut s = ChunkedEnd::default();
        assert_eq!(s.feed(b"5\r\nhe"), Ok(None));
        assert_eq!(s.feed(b"lloX").unwrap_err().at, 3);
    }

    #[test]
    fn request_framing_is_strict() {
        let f = |fields: &[(&str, &str)]| {
            request_framing(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
        };
        assert_eq!(f(&[]), Ok((RequestBody::None, false)));
        assert_eq!(
            f(&[("Content-Length", " 12 ")]),
            Ok((RequestBody::Length(12), false))
        );
        assert_eq!(
            f(&[("transfer-encoding", "Chunked"), ("Upgrade", "websocket")]),
            Ok((RequestBody::Chunked, true))
        );
        for (fields, status) in [
            (
                &[("Content-Length", "1"), ("Transfer-Encoding", "chunked")][..],
                400,
            ),
            (&[("Content-Length", "1"), ("Content-Length", "1")][..], 400),
            (&[("Content-Length", "1, 1")][..], 400),
            (&[("Content-Length", "-1")][..], 400),
            (&[("Content-Length", "")][..], 400),
            (&[("Content-Length", "99999999999999999999")][..], 400),
            (&[("Transfer-Encoding", "gzip, chunked")][..], 501),
            (
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked"),
                ][..],
                501,
            ),
        ] {
            assert_eq!(f(fields).map_err(|e| e.status), Err(status), "{fields:?}");
        }
    }
}
