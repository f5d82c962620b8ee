//! The type table of khttpd-front.
//!
//! kHTTPd served a file only when its extension had a known MIME type and handed every other request to
//! the userspace server (unless `sloppymime`). This crate answers the two questions the front asks of a
//! file name: which `Content-Type` it is served with, and whether that type is worth compressing.
//! `mime_guess` holds the bulk of the table; [`OVERRIDES`] corrects the entries browsers and tools
//! expect differently, and text types carry `; charset=utf-8` so browsers never have to sniff.

use std::path::Path;

/// The type served for a file whose type is unknown when `sloppymime` is on.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// What the front knows about a file name's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeInfo {
    /// The full `Content-Type` value, with `; charset=utf-8` on text types.
    pub content_type: String,
    /// Whether gzip, br or zstd usually shrink this type (text, scripts, JSON, SVG, wasm, …).
    pub compressible: bool,
}

/// Extensions whose answer differs from `mime_guess`'s, or that it does not know.
/// `.js` is `text/javascript` per RFC 9239; `.mjs` and `.wasm` must be exact for module loading.
const OVERRIDES: &[(&str, &str)] = &[
    ("js", "text/javascript"),
    ("mjs", "text/javascript"),
    ("cjs", "text/javascript"),
    ("json", "application/json"),
    ("map", "application/json"),
    ("webmanifest", "application/manifest+json"),
    ("wasm", "application/wasm"),
    ("md", "text/markdown"),
    ("txt", "text/plain"),
    ("csv", "text/csv"),
    ("ico", "image/x-icon"),
    ("woff2", "font/woff2"),
    ("woff", "font/woff"),
    ("avif", "image/avif"),
    ("webp", "image/webp"),
    ("zst", "application/zstd"),
    ("br", "application/x-brotli"),
];

/// Types that are compressible though they are not `text/*`.
const COMPRESSIBLE_APPLICATION: &[&str] = &[
    "application/javascript",
    "application/json",
    "application/manifest+json",
    "application/ld+json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/wasm",
    "application/x-javascript",
    "application/rtf",
    "application/x-sh",
    "application/x-tex",
    "application/vnd.ms-fontobject",
    "application/x-font-ttf",
    "image/svg+xml",
    "image/x-icon",
    "image/bmp",
    "font/ttf",
    "font/otf",
];

/// Looks up the type of `path` by its extension (case-insensitive). `None` means unknown.
pub fn lookup(path: &Path) -> Option<MimeInfo> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let essence: String = match OVERRIDES.iter().find(|(e, _)| *e == ext) {
        Some((_, t)) => (*t).to_owned(),
        None => mime_guess::from_ext(&ext).first_raw()?.to_owned(),
    };
    Some(MimeInfo {
        compressible: is_compressible(&essence),
        content_type: with_charset(essence),
    })
}

/// The type for `path`, falling back to `application/octet-stream` (the `sloppymime` answer).
pub fn lookup_or_octet(path: &Path) -> MimeInfo {
    lookup(path).unwrap_or_else(|| MimeInfo {
        content_type: OCTET_STREAM.to_owned(),
        compressible: false,
    })
}

/// Whether a media type (without parameters) is usually worth compressing.
pub fn is_compressible(essence: &str) -> bool {
    let essence = essence.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || COMPRESSIBLE_APPLICATION.contains(&essence)
        || essence.ends_with("+xml")
        || essence.ends_with("+json")
}

/// Text types and the JSON/XML family are UTF-8 on the sites we serve; say so instead of letting
/// browsers sniff.
fn with_charset(essence: String) -> String {
    let wants_charset = essence.starts_with("text/")
        || essence == "application/json"
        || essence == "application/manifest+json"
        || essence == "application/xml"
        || essence == "image/svg+xml";
    if wants_charset {
        essence + "; charset=utf-8"
    } else {
        essence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(name: &str) -> Option<String> {
        lookup(Path::new(name)).map(|m| m.content_type)
    }

    #[test]
    fn text_types_carry_charset() {
        assert_eq!(
            ct("index.html").as_deref(),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(ct("a.css").as_deref(), Some("text/css; charset=utf-8"));
        assert_eq!(
            ct("app.js").as_deref(),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            ct("data.json").as_deref(),
            Some("application/json; charset=utf-8")
        );
    }

    #[test]
    fn binary_types_have_no_charset() {
        assert_eq!(ct("logo.png").as_deref(), Some("image/png"));
        assert_eq!(ct("x.wasm").as_deref(), Some("application/wasm"));
        assert_eq!(ct("f.woff2").as_deref(), Some("font/woff2"));
    }

    #[test]
    fn extension_is_case_insensitive() {
        assert_eq!(ct("INDEX.HTML"), ct("index.html"));
        assert_eq!(ct("Logo.PnG").as_deref(), Some("image/png"));
    }

    #[test]
    fn unknown_and_missing_extensions() {
        assert_eq!(ct("file.khttpd-unknown-ext"), None);
        assert_eq!(ct("Makefile"), None);
        assert_eq!(
            lookup_or_octet(Path::new("x.nope")).content_type,
            OCTET_STREAM
        );
    }

    #[test]
    fn compressibility() {
        let c = |n: &str| lookup(Path::new(n)).map(|m| m.compressible);
        assert_eq!(c("a.js"), Some(true));
        assert_eq!(c("a.css"), Some(true));
        assert_eq!(c("a.svg"), Some(true));
        assert_eq!(c("a.wasm"), Some(true));
        assert_eq!(c("a.png"), Some(false));
        assert_eq!(c("a.gz"), Some(false));
        assert_eq!(c("a.zip"), Some(false));
        assert_eq!(c("a.woff2"), Some(false));
        assert_eq!(c("a.jpg"), Some(false));
    }
}
