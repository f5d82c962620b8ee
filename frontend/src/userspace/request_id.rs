//! Request ids, as nginx's `$request_id`: 32 random hex digits, made for each request that goes to
//! the backend (which gets it as `X-Request-Id`) unless the client sent a usable one, and logged,
//! so one request can be followed from the front's log into Apache's and the application's.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The field that carries the id, as HTTP/1.1 names it on the wire (lower case).
pub(crate) const FIELD: &str = "x-request-id";

/// The longest client-sent id taken as it is.
const MAX_LEN: usize = 128;

/// The client's `X-Request-Id` when it is a sane token (letters, digits, `-`, `_`, `.`, `:`, up to
/// 128 bytes); anything else is replaced, so a log line or Apache's environment never carries what
/// a client smuggled in there.
pub(crate) fn usable(value: &[u8]) -> Option<&str> {
    let ok = !value.is_empty()
        && value.len() <= MAX_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// A fresh id: 128 bits from SipHash keyed by the process's random keys (std's `RandomState`),
/// over a counter and the clock, so ids never repeat within a process and cannot be guessed
/// from one another.
pub(crate) fn new() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let state = std::collections::hash_map::RandomState::new();
    let half = |salt: u64| {
        let mut h = state.build_hasher();
        h.write_u64(n);
        h.write_u64(nanos);
        h.write_u64(salt);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        let a = new();
        let b = new();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn only_sane_client_ids_are_kept() {
        assert_eq!(usable(b"abc-123_x.y:z"), Some("abc-123_x.y:z"));
        for bad in [&b""[..], b"a b", b"a\"b", b"caf\xc3\xa9", &[b'a'; 129]] {
            assert_eq!(usable(bad), None, "{bad:?}");
        }
    }
}
