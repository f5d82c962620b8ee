//! Which backend answers are compressed on their way to the client (nginx's `gzip_proxied any`
//! with `gzip_types`): a pure decision over the answer's head and the client's `Accept-Encoding`.
//! Apache with mod_php sends pages uncompressed unless mod_deflate is set up; the front then sends
//! them gzip'd at a fast level (see [`khttpd_bridge::gzip`]), as it does its own files.

use crate::cache::negotiate::{negotiate, Encoding};

/// What the decision needs of a backend answer's head.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AnswerHead<'a> {
    /// The status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<&'a [u8]>,
    /// Whether the backend already chose a `Content-Encoding` (never encoded twice).
    pub encoded: bool,
    /// Whether a `Cache-Control` says `no-transform`.
    pub no_transform: bool,
    /// Whether it is a part of something (`Content-Range`).
    pub partial: bool,
    /// The announced length, if any.
    pub content_length: Option<u64>,
    /// A HEAD request: no body to compress.
    pub head_only: bool,
}

impl<'a> AnswerHead<'a> {
    /// Notes one of the answer's fields.
    pub(crate) fn field(&mut self, name: &[u8], value: &'a [u8]) {
        if name.eq_ignore_ascii_case(b"content-type") {
            self.content_type = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-encoding") {
            self.encoded |= !value.trim_ascii().eq_ignore_ascii_case(b"identity");
        } else if name.eq_ignore_ascii_case(b"cache-control") {
            self.no_transform |= value
                .split(|&b| b == b',')
                .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"));
        } else if name.eq_ignore_ascii_case(b"content-range") {
            self.partial = true;
        }
    }
}

/// Whether to gzip this answer for a client that sent `accept_encoding`. Only text-like types (the
/// ones the front compresses its own files of), only bodies of at least `min_len` when their length
/// is known, never a partial, already encoded or `no-transform` answer, never an empty body.
pub(crate) fn wanted(accept_encoding: Option<&str>, a: &AnswerHead<'_>, min_len: u64) -> bool {
    let has_body = !a.head_only && !matches!(a.status, 100..=199 | 204 | 206 | 304);
    let compressible = a
        .content_type
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|essence| khttpd_mime::is_compressible(&essence));
    has_body
        && compressible
        && !a.encoded
        && !a.no_transform
        && !a.partial
        && a.content_length.is_none_or(|n| n >= min_len)
        && negotiate(accept_encoding, &[Encoding::Gzip, Encoding::Identity]) == Encoding::Gzip
}

/// A strong ETag made weak: the compressed bytes are not the backend's, but they mean the same
/// (RFC 9110 §8.8.1), which is what nginx does too.
pub(crate) fn weakened(etag: &[u8]) -> Vec<u8> {
    if etag.starts_with(b"W/") {
        etag.to_vec()
    } else {
        [b"W/".as_slice(), etag].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(len: Option<u64>) -> AnswerHead<'static> {
        AnswerHead {
            status: 200,
            content_type: Some(b"text/html; charset=UTF-8"),
            content_length: len,
            ..AnswerHead::default()
        }
    }

    #[test]
    fn text_answers_for_gzip_clients_only() {
        assert!(wanted(Some("gzip, deflate, br"), &html(None), 256));
        assert!(wanted(Some("gzip"), &html(Some(50_000)), 256));
        assert!(!wanted(Some("gzip"), &html(Some(100)), 256), "small");
        assert!(!wanted(None, &html(None), 256));
        assert!(!wanted(Some("gzip;q=0"), &html(None), 256));
        assert!(!wanted(Some("br"), &html(None), 256));
        let mut a = html(None);
        a.field(b"Content-Encoding", b"gzip");
        assert!(!wanted(Some("gzip"), &a, 256), "already encoded");
        let mut a = html(None);
        a.field(b"cache-control", b"private, No-Transform");
        assert!(!wanted(Some("gzip"), &a, 256));
        let mut a = html(None);
        a.field(b"content-range", b"bytes 0-9/100");
        assert!(!wanted(Some("gzip"), &a, 256));
        let mut a = html(None);
        a.content_type = Some(b"image/png");
        assert!(!wanted(Some("gzip"), &a, 256));
        let mut a = html(None);
        a.content_type = Some(b"application/json");
        assert!(wanted(Some("gzip"), &a, 256));
        for status in [204, 206, 304] {
            let mut a = html(None);
            a.status = status;
            assert!(!wanted(Some("gzip"), &a, 256), "{status}");
        }
        let mut a = html(None);
        a.head_only = true;
        assert!(!wanted(Some("gzip"), &a, 256));
    }

    #[test]
    fn etags_are_weakened() {
        assert_eq!(weakened(b"\"abc\""), b"W/\"abc\"");
        assert_eq!(weakened(b"W/\"abc\""), b"W/\"abc\"");
    }
}
