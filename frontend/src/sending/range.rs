//! Byte-range requests (RFC 9110 §14): parsing and evaluating `Range`, the
//! `If-Range` precondition (§13.1.5), `Content-Range` values (§14.4) and the
//! framing of `multipart/byteranges` bodies (§14.6). Pure functions: no I/O,
//! no clock, so the server decides what to read and when.

use std::time::SystemTime;

use crate::sending::conditional::unix_seconds;

/// Ranges closer than this are merged: a multipart part head costs about this much.
pub(crate) const COALESCE_GAP: u64 = 80;

/// One satisfiable byte range, both ends inclusive (as in Content-Range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset, inclusive.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes covered (`end - start + 1`; 0 for a malformed `end < start`).
    pub(crate) fn len(&self) -> u64 {
        if self.is_empty() {
            0
        } else {
            // Saturating: 0..=u64::MAX has 2^64 bytes, which u64 cannot hold.
            (self.end - self.start).saturating_add(1)
        }
    }

    /// True only for a malformed range (`end < start`); `evaluate` never yields one.
    pub(crate) fn is_empty(&self) -> bool {
        self.end < self.start
    }

    /// `Content-Range` value for this range, e.g. `bytes 0-499/1234` (RFC 9110 §14.4).
    pub(crate) fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, total)
    }
}

/// What to do with a request's `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeOutcome {
    /// Serve the whole representation with 200 (no usable Range, ignored syntax, or a request that would amplify).
    Full,
    /// One or more ranges, sorted ascending, non-overlapping and not adjacent.
    Partial(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */LEN`.
    Unsatisfiable,
}

/// A syntactically valid range-spec, before it is resolved against a length.
enum Spec {
    /// `first-pos "-" [ last-pos ]`
    Int { first: u64, last: Option<u64> },
    /// `"-" suffix-length`
    Suffix(u64),
}

/// Evaluates a Range header value against a representation of `len` bytes.
///
/// Rules (RFC 9110 §14.1.2, §14.2): unit `bytes` (case-insensitive) only; any
/// syntax error anywhere → `Full`. Unsatisfiable specs are dropped; none left →
/// `Unsatisfiable`. Survivors are sorted and merged when closer than
/// [`COALESCE_GAP`]. `Full` if more than `2 * max_ranges` specs were sent, if more
/// than `max_ranges` ranges remain, or if several specs merge into the whole
/// representation; a single spec covering everything (`bytes=0-`) stays `Partial`.
/// `max_ranges == 0` therefore disables ranges (always `Full`).
pub(crate) fn evaluate(header: &str, len: u64, max_ranges: usize) -> RangeOutcome {
    let spec_limit = max_ranges.saturating_mul(2);
    let specs = match parse(header, spec_limit) {
        Some(specs) => specs,
        // §14.2: "An origin server MUST ignore a Range header field that contains
        // a range unit it does not understand", and it MAY ignore an invalid
        // ranges-specifier; too many specs is treated the same way (never amplify).
        None => return RangeOutcome::Full,
    };

    let mut ranges: Vec<ByteRange> = specs.iter().filter_map(|s| resolve(s, len)).collect();
    if ranges.is_empty() {
        // §15.5.17: 416 when "none of the requested ranges are satisfiable". (It
        // also allows 416 for "an excessive number of small or overlapping
        // ranges"; we answer those with a 200 instead, see above and below.)
        return RangeOutcome::Unsatisfiable;
    }

    // §14.2: a server MAY coalesce ranges that overlap or that are separated by a
    // gap smaller than the overhead of sending multiple parts. Sorting first also
    // neutralises "many small ranges not listed in ascending order" (CVE-2011-3192).
    ranges.sort_unstable_by_key(|r| r.start);
    let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if let Some(last) = merged.last_mut() {
            if r.start <= last.end.saturating_add(COALESCE_GAP) {
                last.end = last.end.max(r.end);
                continue;
            }
        }
        merged.push(r);
    }

    if merged.len() > max_ranges {
        return RangeOutcome::Full;
    }
    // Several specs that collapse into the whole file are just a 200 in disguise;
    // a lone `bytes=0-` is kept as a 206 because resuming clients expect one.
    // `len - 1` cannot underflow: a non-empty `ranges` implies len > 0.
    let whole = ByteRange {
        start: 0,
        end: len - 1,
    };
    if specs.len() > 1 && merged.as_slice() == [whole] {
        return RangeOutcome::Full;
    }
    RangeOutcome::Partial(merged)
}

/// Parses `ranges-specifier`; `None` means "ignore the header".
fn parse(header: &str, spec_limit: usize) -> Option<Vec<Spec>> {
    // §14.1.1: ranges-specifier = range-unit "=" range-set. Whitespace around
    // "=" is not in the grammar but is tolerated (be liberal in what we accept).
    let (unit, set) = header.split_once('=')?;
    // §14.1: range units are compared case-insensitively.
    if !trim_ows(unit).eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for item in set.split(',') {
        let item = trim_ows(item);
        // §5.6.1: recipients MUST accept and ignore empty list elements.
        if item.is_empty() {
            continue;
        }
        if specs.len() >= spec_limit {
            return None;
        }
        specs.push(parse_spec(item)?);
    }
    // range-set = 1#range-spec: at least one element is required.
    if specs.is_empty() {
        return None;
    }
    Some(specs)
}

fn parse_spec(item: &str) -> Option<Spec> {
    let (first, last) = item.split_once('-')?;
    if first.is_empty() {
        return Some(Spec::Suffix(digits(last)?));
    }
    let first = digits(first)?;
    if last.is_empty() {
        return Some(Spec::Int { first, last: None });
    }
    let last = digits(last)?;
    // §14.1.1: "A range-spec is invalid if the last-pos value is present and less
    // than the first-pos."
    if last < first {
        return None;
    }
    Some(Spec::Int {
        first,
        last: Some(last),
    })
}

/// `1*DIGIT` as u64; `None` on anything else, including overflow.
fn digits(s: &str) -> Option<u64> {
    // u64::from_str also accepts a leading '+', which the grammar does not.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Resolves a spec against `len`; `None` when it is unsatisfiable (§14.1.2).
fn resolve(spec: &Spec, len: u64) -> Option<ByteRange> {
    // §14.1.2 lets a non-zero suffix-range be "satisfiable" on an empty
    // representation, but no Content-Range can describe zero bytes, so an
    // empty representation makes every range unsatisfiable here.
    if len == 0 {
        return None;
    }
    match *spec {
        // §14.1.2: satisfiable if "an int-range with a first-pos that is less than
        // the current length"; a last-pos past the end means "the remainder".
        Spec::Int { first, last } => {
            if first >= len {
                return None;
            }
            let end = last.map_or(len - 1, |l| l.min(len - 1));
            Some(ByteRange { start: first, end })
        }
        // §14.1.2: "a suffix-range with a non-zero suffix-length"; if the
        // representation is shorter, "the entire representation is used".
        Spec::Suffix(n) => {
            if n == 0 {
                return None;
            }
            Some(ByteRange {
                start: len.saturating_sub(n),
                end: len - 1,
            })
        }
    }
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// RFC 9110 §13.1.5: whether an If-Range value lets the Range apply: a strong ETag equal (strong comparison) to `etag`, or an HTTP-date exactly equal to `last_modified` (seconds).
///
/// Weak tags, other tags and unparseable dates give `false` (serve a full 200).
/// The §13.1.5 rule that a date validator must itself be strong (§8.8.2.2) needs
/// the original response time, which a pure function does not have.
pub(crate) fn if_range_matches(if_range: &str, etag: &str, last_modified: SystemTime) -> bool {
    let v = trim_ows(if_range);
    // §13.1.5: "A valid entity-tag can be distinguished from a valid HTTP-date by
    // examining the first three characters for a DQUOTE."
    if v.starts_with('"') || v.starts_with("W/") {
        // Strong comparison (§8.8.3.2): both strong and opaque-tags equal
        // character-by-character. A `W/` value never starts with DQUOTE and so
        // never equals a strong tag; it is rejected by is_strong_tag anyway.
        return is_strong_tag(v) && v == trim_ows(etag);
    }
    match httpdate::parse_http_date(v) {
        // "If the HTTP-date validator provided exactly matches the Last-Modified
        // field value" – Last-Modified has one-second resolution, so compare seconds.
        Ok(date) => unix_seconds(date) == unix_seconds(last_modified),
        Err(_) => false,
    }
}

/// `DQUOTE *etagc DQUOTE` with etagc = %x21 / %x23-7E / obs-text (§8.8.3).
fn is_strong_tag(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b[0] == b'"'
        && b[b.len() - 1] == b'"'
        && b[1..b.len() - 1]
            .iter()
            .all(|&c| c == 0x21 || (0x23..=0x7e).contains(&c) || c >= 0x80)
}

/// "Content-Range: bytes */LEN" value for 416.
pub(crate) fn unsatisfied_content_range(len: u64) -> String {
    // §14.4: unsatisfied-range = "*/" complete-length; §15.5.17 says a 416 for a
    // byte-range request SHOULD carry it.
    format!("bytes */{len}")
}

/// The pieces of a multipart/byteranges body (RFC 9110 §14.6), in sending order.
///
/// Send, for each part, the head string then the file bytes of its range; then the
/// trailer. The first head is `--B\r\n...`, later heads start with `\r\n--B\r\n`
/// (the CRLF before a delimiter belongs to the delimiter, RFC 2046 §5.1.1), and
/// the trailer is `\r\n--B--\r\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Multipart {
    /// Part head and the range whose bytes follow it.
    pub parts: Vec<(String, ByteRange)>,
    /// Closing delimiter, sent after the last range's bytes.
    pub trailer: String,
    /// Exact body length: heads + range bytes + trailer.
    pub content_length: u64,
}

/// Builds the multipart/byteranges framing for `ranges` of a `total`-byte representation.
///
/// `boundary` must be a valid RFC 2046 boundary that does not occur in the file
/// data and needs no quoting (token characters, 1-70 chars).
pub(crate) fn multipart(
    ranges: &[ByteRange],
    total: u64,
    content_type: &str,
    boundary: &str,
) -> Multipart {
    let mut parts = Vec::with_capacity(ranges.len());
    let mut content_length: u64 = 0;
    for (i, r) in ranges.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        // §14.6: each body part carries Content-Range, and Content-Type when the
        // selected representation would have had one in a 200 response.
        let head = format!(
            "{lead}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
            r.content_range(total)
        );
        content_length = content_length
            .saturating_add(head.len() as u64)
            .saturating_add(r.len());
        parts.push((head, *r));
    }
    let trailer = format!("\r\n--{boundary}--\r\n");
    content_length = content_length.saturating_add(trailer.len() as u64);
    Multipart {
        parts,
        trailer,
        content_length,
    }
}

/// Content-Type value: "multipart/byteranges; boundary=..."
pub(crate) fn multipart_content_type(boundary: &str) -> String {
    format!("multipart/byteranges; boundary={boundary}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn br(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn p(v: &[(u64, u64)]) -> RangeOutcome {
        RangeOutcome::Partial(v.iter().map(|&(s, e)| br(s, e)).collect())
    }

    #[test]
    fn evaluate_table() {
        use RangeOutcome::{Full, Unsatisfiable};
        let cases: &[(&str, u64, RangeOutcome)] = &[
            ("bytes=0-499", 1234, p(&[(0, 499)])),
            ("bytes=-500", 1234, p(&[(734, 1233)])),
            ("bytes=1000-", 1234, p(&[(1000, 1233)])),
            ("bytes=0-", 1234, p(&[(0, 1233)])),
            ("bytes=-5000", 1234, p(&[(0, 1233)])),
            ("bytes=1000-99999", 1234, p(&[(1000, 1233)])),
            ("bytes=0-9,500-509", 1234, p(&[(0, 9), (500, 509)])),
            ("bytes=500-509,0-9", 1234, p(&[(0, 9), (500, 509)])),
            (
                "bytes=0-199,100-299,1000-1009",
                1234,
                p(&[(0, 299), (1000, 1009)]),
            ),
            (
                "bytes=0-99,100-199,1000-1009",
                1234,
                p(&[(0, 199), (1000, 1009)]),
            ),
            (
                "bytes=0-9,89-99,1000-1009",
                1234,
                p(&[(0, 99), (1000, 1009)]),
            ),
            (
                "bytes=0-9,90-99,1000-1009",
                1234,
                p(&[(0, 9), (90, 99), (1000, 1009)]),
            ),
            (" Bytes = 0-9 ,\t 500-509 ", 1234, p(&[(0, 9), (500, 509)])),
            ("BYTES=0-9", 1234, p(&[(0, 9)])),
            ("bytes=0-9,,", 1234, p(&[(0, 9)])),
            ("bytes=0-9,2000-2009", 1234, p(&[(0, 9)])),
            ("bytes=000-009", 1234, p(&[(0, 9)])),
            // Ignored syntax → Full.
            ("bytes=a-9", 1234, Full),
            ("bytes=9-0", 1234, Full),
            ("bytes=", 1234, Full),
            ("bytes= , ", 1234, Full),
            ("bytes 0-9", 1234, Full),
            ("items=0-9", 1234, Full),
            ("bytes=0-9,x", 1234, Full),
            ("bytes=+1-9", 1234, Full),
            ("bytes=0 - 9", 1234, Full),
            ("bytes=-", 1234, Full),
            ("bytes=--5", 1234, Full),
            ("bytes=99999999999999999999999-", 1234, Full),
            ("bytes=0-99999999999999999999999", 1234, Full),
            ("", 1234, Full),
            // Unsatisfiable.
            ("bytes=1234-", 1234, Unsatisfiable),
            ("bytes=2000-3000,5000-", 1234, Unsatisfiable),
            ("bytes=-0", 1234, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            // Several specs that merge into the whole file → Full.
            ("bytes=0-0,-1", 10, Full),
            ("bytes=0-0,-1", 1000, p(&[(0, 0), (999, 999)])),
            ("bytes=0-,5000-", 100, Full),
        ];
        for (header, len, want) in cases {
            assert_eq!(&evaluate(header, *len, 16), want, "{header:?} len {len}");
        }
    }

    #[test]
    fn amplification_is_refused() {
        let many: Vec<String> = (0..1000)
            .map(|i| format!("{}-{}", i * 200, i * 200))
            .collect();
        let header = format!("bytes={}", many.join(","));
        assert_eq!(evaluate(&header, 1_000_000, 16), RangeOutcome::Full);
        // Overlapping duplicates that coalesce to one range still count as sent specs.
        let dup = format!("bytes={}", vec!["0-10"; 33].join(","));
        assert_eq!(evaluate(&dup, 1000, 16), RangeOutcome::Full);
        // Within the spec limit but too many ranges after coalescing.
        assert_eq!(
            evaluate("bytes=0-0,200-200,400-400", 1000, 2),
            RangeOutcome::Full
        );
        assert_eq!(
            evaluate("bytes=0-0,200-200", 1000, 2),
            p(&[(0, 0), (200, 200)])
        );
        assert_eq!(evaluate("bytes=0-", 1000, 0), RangeOutcome::Full);
    }

    #[test]
    fn byte_range_helpers() {
        assert_eq!(br(0, 499).len(), 500);
        assert_eq!(br(0, 499).content_range(1234), "bytes 0-499/1234");
        assert_eq!(br(0, u64::MAX).len(), u64::MAX);
        assert!(br(5, 4).is_empty());
        assert_eq!(br(5, 4).len(), 0);
        assert_eq!(unsatisfied_content_range(1234), "bytes */1234");
    }

    const LM: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn if_range() {
        let lm = UNIX_EPOCH + Duration::from_secs(LM);
        let etag = "\"1a-2b-3c\"";
        assert!(if_range_matches("\"1a-2b-3c\"", etag, lm));
        assert!(if_range_matches("  \"1a-2b-3c\" ", etag, lm));
        assert!(!if_range_matches("W/\"1a-2b-3c\"", etag, lm));
        assert!(!if_range_matches("\"other\"", etag, lm));
        assert!(!if_range_matches("W/\"1a-2b-3c\"", "W/\"1a-2b-3c\"", lm));
        assert!(if_range_matches("Sun, 06 Nov 1994 08:49:37 GMT", etag, lm));
        // Sub-second mtimes still match the whole-second date that was sent.
        assert!(if_range_matches(
            "Sun, 06 Nov 1994 08:49:37 GMT",
            etag,
            lm + Duration::from_millis(999)
        ));
        assert!(!if_range_matches("Sun, 06 Nov 1994 08:49:38 GMT", etag, lm));
        assert!(!if_range_matches("Sun, 06 Nov 1994 08:49:36 GMT", etag, lm));
        for garbage in ["", "garbage", "\"", "\"unterminated", "\"a\"b\"", "1994"] {
            assert!(!if_range_matches(garbage, etag, lm), "{garbage:?}");
        }
    }

    #[test]
    fn multipart_framing() {
        let total = 10_000;
        let ranges = [br(0, 99), br(500, 599), br(9000, 9999)];
        let m = multipart(&ranges, total, "text/plain", "XYZ");
        assert_eq!(m.parts.len(), 3);
        assert_eq!(
            m.parts[0].0,
            "--XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-99/10000\r\n\r\n"
        );
        assert!(m.parts[1].0.starts_with("\r\n--XYZ\r\n"));
        assert_eq!(m.trailer, "\r\n--XYZ--\r\n");

        // Build the real body and check the advertised length matches it exactly.
        let file: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut body = Vec::new();
        for (head, r) in &m.parts {
            body.extend_from_slice(head.as_bytes());
            body.extend_from_slice(&file[r.start as usize..=r.end as usize]);
        }
        body.extend_from_slice(m.trailer.as_bytes());
        assert_eq!(body.len() as u64, m.content_length);
        assert_eq!(
            multipart_content_type("XYZ"),
            "multipart/byteranges; boundary=XYZ"
        );
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        /// Mostly-valid specs built from small numbers, so Partial is common.
        fn structured() -> impl Strategy<Value = String> {
            let spec = (prop::option::of(0u64..4000), prop::option::of(0u64..500));
            prop::collection::vec(spec, 1..40).prop_map(|specs| {
                let items: Vec<String> = specs
                    .iter()
                    .map(|&(first, delta)| match (first, delta) {
                        (None, d) => format!("-{}", d.unwrap_or(1)),
                        (Some(a), None) => format!("{a}-"),
                        (Some(a), Some(d)) => format!("{a}-{}", a + d),
                    })
                    .collect();
                format!("bytes={}", items.join(","))
            })
        }

        fn header() -> impl Strategy<Value = String> {
            prop_oneof![
                1 => ".*",
                1 => "[ \t]*[bB][yY][tT][eE][sS][ \t]*=[0-9, \t-]{0,60}",
                1 => "bytes=[0-9]{1,21}-[0-9]{0,21}(,[0-9]{0,21}-[0-9]{0,21}){0,5}",
                3 => structured(),
            ]
        }

        fn length() -> impl Strategy<Value = u64> {
            prop_oneof![3 => 0u64..5000, 1 => any::<u64>()]
        }

        proptest! {
            #[test]
            fn evaluate_invariants(h in header(), len in length(), max in 0usize..20) {
                if let RangeOutcome::Partial(rs) = evaluate(&h, len, max) {
                    prop_assert!(!rs.is_empty());
                    prop_assert!(rs.len() <= max);
                    for r in &rs {
                        prop_assert!(r.start <= r.end && r.end < len);
                    }
                    for w in rs.windows(2) {
                        prop_assert!(w[0].end.saturating_add(COALESCE_GAP) < w[1].start);
                    }
                }
            }

            #[test]
            fn if_range_never_panics(v in ".*", e in ".*", secs in any::<u32>()) {
                let _ = if_range_matches(&v, &e, std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(secs)));
            }
        }
    }
}
