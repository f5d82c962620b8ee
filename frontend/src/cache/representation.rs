//! A cached representation of a file version: its body in one coding and the header values built
//! once for it.

use std::io;

use bytes::Bytes;
use http::HeaderValue;

use crate::cache::keys::FileKey;
use crate::cache::negotiate::Encoding;

/// The header values of a file version, which the caller computes anyway for preconditions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileHead<'a> {
    /// The identity representation's ETag, quoted (`"…"`).
    pub etag: &'a str,
    /// `Last-Modified` (IMF-fixdate).
    pub last_modified: &'a str,
    /// `Content-Type`.
    pub content_type: &'a str,
}

/// A cached representation: body plus header values built once per version, cheap to clone
/// (`Bytes` and `HeaderValue` are reference-counted).
#[derive(Debug, Clone)]
pub(crate) struct Representation {
    /// The body, encoded as `encoding` says.
    pub body: Bytes,
    /// The content coding of `body`.
    pub encoding: Encoding,
    /// RFC 9110 §8.8.3: this representation's own strong ETag (the version's tag plus a suffix).
    pub etag: HeaderValue,
    /// `Content-Length` of `body`.
    pub content_length: HeaderValue,
    /// `Content-Type` (the same for every coding).
    pub content_type: HeaderValue,
    /// `Last-Modified` (the same for every coding).
    pub last_modified: HeaderValue,
}

impl Representation {
    /// The `Content-Encoding` value, `None` for identity.
    pub(crate) fn content_encoding(&self) -> Option<HeaderValue> {
        match self.encoding {
            Encoding::Identity => None,
            e => Some(HeaderValue::from_static(e.token())),
        }
    }

    /// The same version encoded with `enc` as `body`.
    pub(super) fn encoded(&self, enc: Encoding, body: Bytes) -> Option<Representation> {
        let etag = HeaderValue::from_str(&enc.etag(self.etag.to_str().ok()?)).ok()?;
        Some(Representation {
            content_length: HeaderValue::from(body.len()),
            body,
            encoding: enc,
            etag,
            content_type: self.content_type.clone(),
            last_modified: self.last_modified.clone(),
        })
    }
}

/// The caller's header strings turned into header values once per miss.
pub(super) struct OwnedHead {
    etag: HeaderValue,
    last_modified: HeaderValue,
    content_type: HeaderValue,
}

impl OwnedHead {
    pub(super) fn new(h: &FileHead<'_>) -> io::Result<OwnedHead> {
        let value = |s: &str| {
            HeaderValue::from_str(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        Ok(OwnedHead {
            etag: value(h.etag)?,
            last_modified: value(h.last_modified)?,
            content_type: value(h.content_type)?,
        })
    }

    pub(super) fn identity(self, key: &FileKey, body: Bytes) -> io::Result<Representation> {
        // A different length means the file changed between stat and read: the bytes do not
        // belong to this version, so they are neither cached nor sent under its validators.
        if body.len() as u64 != key.len {
            // Not the version routing saw: the request is routed afresh.
            return Err(crate::error::stale_file());
        }
        Ok(Representation {
            content_length: HeaderValue::from(body.len()),
            body,
            encoding: Encoding::Identity,
            etag: self.etag,
            content_type: self.content_type,
            last_modified: self.last_modified,
        })
    }
}
