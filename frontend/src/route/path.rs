//! Request path decoding and sanitizing (routing step 2), a pure function.
//!
//! kHTTPd prepended the raw URL to the document root and stopped `..` only with a substring rule; a URL
//! without a leading `/` reached sibling directories. Here the path is split on `/` first and each
//! segment percent-decoded once, so `%2f` can never create a segment; `..` segments, NUL, backslashes
//! and malformed escapes are refused outright. The result is a list of plain segments, relative to
//! the document root by construction.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Why a request path was refused (always the client's fault: 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// The path does not start with `/` (kHTTPd's `GET -old/x` reached `/var/www-old/x`).
    #[error("request path must start with /")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding in request path")]
    BadEscape,
    /// A NUL byte, raw or encoded.
    #[error("NUL byte in request path")]
    Nul,
    /// A `..` segment.
    #[error("`..` segment in request path")]
    DotDot,
    /// An encoded `/` or a backslash inside a segment.
    #[error("encoded slash or backslash in request path")]
    Separator,
}

/// A decoded request path: segments relative to the document root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DecodedPath {
    /// Decoded segments, none empty, `.` or `..`.
    pub segments: Vec<Vec<u8>>,
    /// Whether the request path ended with `/` (directories are redirected to it).
    pub trailing_slash: bool,
}

impl DecodedPath {
    /// The path relative to the document root.
    pub(crate) fn relative(&self) -> PathBuf {
        let mut p = PathBuf::new();
        for s in &self.segments {
            p.push(OsStr::from_bytes(s));
        }
        p
    }

    /// The decoded path as `/a/b` (with its trailing slash), for prefix rules and listings.
    pub(crate) fn display(&self) -> String {
        let mut s = String::from("/");
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                s.push('/');
            }
            s.push_str(&String::from_utf8_lossy(seg));
        }
        if self.trailing_slash && !self.segments.is_empty() {
            s.push('/');
        }
        s
    }

    /// The path in one canonical spelling: every byte outside RFC 3986's unreserved set
    /// percent-encoded, with its trailing slash. Every spelling of a name (`/a%2Ecss`, `/%61.css`)
    /// has the same canonical one, which Apache decodes to the same file.
    pub(crate) fn canonical(&self) -> String {
        const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let mut s = String::from("/");
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                s.push('/');
            }
            s.extend(percent_encoding::percent_encode(seg, SET));
        }
        if self.trailing_slash && !self.segments.is_empty() {
            s.push('/');
        }
        s
    }

    /// The last segment (the file name), if any.
    pub(crate) fn file_name(&self) -> Option<&[u8]> {
        self.segments.last().map(Vec::as_slice)
    }
}

/// Decodes the path part of a request target (no query). Empty and `.` segments are dropped
/// (as nginx's merge_slashes does); everything suspicious is refused.
pub(crate) fn decode(raw: &str) -> Result<DecodedPath, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut out = DecodedPath {
        segments: Vec::new(),
        trailing_slash: raw.ends_with('/'),
    };
    for raw_seg in rest.split('/') {
        let seg = decode_segment(raw_seg.as_bytes())?;
        match seg.as_slice() {
            b"" | b"." => continue,
            b".." => return Err(PathError::DotDot),
            _ => out.segments.push(seg),
        }
    }
    // A path like `/a/.` names the directory `a`: treat it as `a/`.
    if raw.ends_with("/.") {
        out.trailing_slash = true;
    }
    Ok(out)
}

fn decode_segment(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = match raw[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let hi = hex_val(hex[0]).ok_or(PathError::BadEscape)?;
                let lo = hex_val(hex[1]).ok_or(PathError::BadEscape)?;
                i += 3;
                hi << 4 | lo
            }
            b => {
                i += 1;
                b
            }
        };
        match b {
            0 => return Err(PathError::Nul),
            b'/' | b'\\' => return Err(PathError::Separator),
            _ => out.push(b),
        }
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segs(raw: &str) -> Vec<String> {
        decode(raw)
            .unwrap()
            .segments
            .iter()
            .map(|s| String::from_utf8(s.clone()).unwrap())
            .collect()
    }

    #[test]
    fn plain_paths() {
        assert_eq!(segs("/"), Vec::<String>::new());
        assert_eq!(segs("/a/b.html"), vec!["a", "b.html"]);
        assert_eq!(segs("//a///b/./c"), vec!["a", "b", "c"]);
        assert!(decode("/a/").unwrap().trailing_slash);
        assert!(!decode("/a").unwrap().trailing_slash);
        assert!(decode("/a/.").unwrap().trailing_slash);
    }

    #[test]
    fn decodes_once() {
        assert_eq!(segs("/a%20b/%E6%97%A5.txt"), vec!["a b", "日.txt"]);
        // %2525 decodes to the literal "%25", never again to "%".
        assert_eq!(segs("/%2525"), vec!["%25"]);
        assert_eq!(segs("/x.ph%70"), vec!["x.php"]);
    }

    #[test]
    fn refusals() {
        assert_eq!(decode("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(decode("-old/x"), Err(PathError::NotAbsolute));
        assert_eq!(decode("../x"), Err(PathError::NotAbsolute));
        assert_eq!(decode("/../x"), Err(PathError::DotDot));
        assert_eq!(decode("/a/../../x"), Err(PathError::DotDot));
        assert_eq!(decode("/a/%2e%2e/x"), Err(PathError::DotDot));
        assert_eq!(decode("/a/.%2E"), Err(PathError::DotDot));
        assert_eq!(decode("/a%00.html"), Err(PathError::Nul));
        assert_eq!(decode("/a%2f..%2fb"), Err(PathError::Separator));
        assert_eq!(decode("/a%2F"), Err(PathError::Separator));
        assert_eq!(decode("/a\\..\\b"), Err(PathError::Separator));
        assert_eq!(decode("/a%5c..%5cb"), Err(PathError::Separator));
        assert_eq!(decode("/%"), Err(PathError::BadEscape));
        assert_eq!(decode("/%4"), Err(PathError::BadEscape));
        assert_eq!(decode("/%zz"), Err(PathError::BadEscape));
    }

    #[test]
    fn display_and_relative() {
        let d = decode("/a%20b/c/").unwrap();
        assert_eq!(d.display(), "/a b/c/");
        assert_eq!(d.relative(), PathBuf::from("a b/c"));
        assert_eq!(decode("/").unwrap().display(), "/");
    }

    proptest! {
        /// For any input, the decoded path stays below the root: no segment is empty, `.`, `..`,
        /// or contains a separator or NUL.
        #[test]
        fn decoded_paths_stay_inside(raw in "\\PC*") {
            if let Ok(d) = decode(&raw) {
                for s in &d.segments {
                    prop_assert!(!s.is_empty());
                    prop_assert!(s.as_slice() != b"." && s.as_slice() != b"..");
                    prop_assert!(!s.contains(&b'/') && !s.contains(&b'\\') && !s.contains(&0));
                }
                let rel = d.relative();
                prop_assert!(rel.is_relative());
                prop_assert!(rel.components().all(|c| matches!(c, std::path::Component::Normal(_))));
            }
        }

        #[test]
        fn dangerous_bytes_encoded(seg in proptest::collection::vec(any::<u8>(), 0..24)) {
            let mut raw = String::from("/");
            for b in &seg { raw.push_str(&format!("%{b:02X}")); }
            if let Ok(d) = decode(&raw) {
                let normal = d.relative().components().all(|c| matches!(c, std::path::Component::Normal(_)));
                prop_assert!(normal);
            }
        }
    }

    /// Issue 15: one verdict per file, whatever the spelling.
    #[test]
    fn every_spelling_has_one_canonical_form() {
        let c = |p: &str| decode(p).unwrap().canonical();
        assert_eq!(c("/a.css"), "/a.css");
        assert_eq!(c("/a%2Ecss"), "/a.css");
        assert_eq!(c("/%61.css"), "/a.css");
        assert_eq!(c("//x/./y/"), c("/x/y/"));
        assert_eq!(
            c("/with space/%E6%97%A5.txt"),
            "/with%20space/%E6%97%A5.txt"
        );
        assert_eq!(c("/"), "/");
    }
}
