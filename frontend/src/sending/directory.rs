//! DataSending for a directory listing: read the directory on the blocking pool, render with
//! [`crate::sending::listing`], answer HTML or JSON (by `?format=json` or the Accept header), sorted as the
//! query asks, with an ETag of the rendered bytes so a listing revalidates (304).

use std::io;
use std::path::Path;

use http::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH};
use http::{Method, Response, StatusCode};

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::cache::keys::{ListingFormat, ListingKey};
use crate::config::Config;
use crate::error::FrontError;
use crate::route::decide::ListingDir;
use crate::route::decide::Reject;
use crate::route::fs::Meta;
use crate::sending::body::Body;
use crate::sending::head::{insert_caching_fields, Caching};
use crate::sending::listing::{self, Entry};
use crate::sending::static_file::Cache;

/// Reads at most `max` visible entries of `dir`, sorted directories first, and whether more were
/// left out. Blocking.
pub(crate) fn read_entries(dir: &Path, max: usize) -> io::Result<(Vec<Entry>, bool)> {
    let mut entries = Vec::new();
    let mut more = false;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if entries.len() >= max {
            more = listing::visible(&e.file_name());
            if more {
                break;
            }
            continue;
        }
        let name = e.file_name();
        if !listing::visible(&name) {
            continue;
        }
        // Follow symlinks for size and kind; a dangling one is listed as a zero-length file.
        let (is_dir, size, mtime) = match std::fs::metadata(e.path()) {
            Ok(m) => {
                let meta = Meta::from_std(&m);
                (m.is_dir(), meta.len, meta.mtime)
            }
            Err(_) => (false, 0, std::time::UNIX_EPOCH),
        };
        entries.push(Entry {
            name,
            is_dir,
            size,
            mtime,
        });
    }
    listing::sort(&mut entries);
    Ok((entries, more))
}

/// Reads and renders a listing: blocking, and for a large directory long, so it runs on the
/// blocking pool, never on a main daemon's thread.
fn build(
    dir: &Path,
    display: &str,
    format: ListingFormat,
    order: listing::Order,
    max: usize,
) -> io::Result<Bytes> {
    let (mut entries, more) = read_entries(dir, max)?;
    listing::sort_by(&mut entries, order);
    Ok(Bytes::from(match format {
        ListingFormat::Json => listing::render_json(&entries),
        ListingFormat::Html => {
            let mut html = listing::render_html_sorted(display, &entries, order);
            if more {
                let note = format!(
                    "<p class=\"note\">This directory has more entries; only {max} are listed \
                     (<code>--listing-max</code>).</p>\n</body>"
                );
                html = html.replacen("</body>", &note, 1);
            }
            html
        }
    }))
}

/// Answers a listing request: rendered once per directory version and format, then from the cache
/// until `--cache-revalidate` passes (entries' sizes change without touching the directory).
pub(crate) async fn serve(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    dir: ListingDir,
    cfg: &Config,
    cache: &Arc<Cache>,
) -> Response<Body> {
    let asked_json = query
        .unwrap_or_default()
        .split('&')
        .any(|p| p == "format=json");
    let json = asked_json || listing::wants_json(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    let (format, ctype) = if json {
        (ListingFormat::Json, "application/json; charset=utf-8")
    } else {
        (ListingFormat::Html, "text/html; charset=utf-8")
    };
    let order = listing::Order::from_query(query);
    let key = ListingKey {
        order,
        ..ListingKey::of(&dir.meta, format, &dir.display)
    };
    let tagged = match cache.listing(&key, Instant::now()) {
        Some(t) => t,
        None => {
            let (path, display, max) = (dir.path.clone(), dir.display.clone(), cfg.listing_max);
            let built =
                tokio::task::spawn_blocking(move || build(&path, &display, format, order, max))
                    .await;
            let rendered = match built {
                Ok(Ok(r)) => r,
                // A directory gone since routing is not there: 404 (a file is routed afresh).
                Ok(Err(e)) => {
                    return match FrontError::from(e) {
                        FrontError::Stale => FrontError::Route(Reject::NotFound),
                        other => other,
                    }
                    .page()
                }
                Err(_) => return FrontError::Internal("listing task").page(),
            };
            let tagged = with_tag(&rendered);
            cache.put_listing(key, tagged.clone(), Instant::now());
            tagged
        }
    };
    let (tag, text) = split_tag(&tagged);
    let mut r = Response::new(Body::empty());
    let not_modified = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == tag
        });
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    // The representation depends on Accept, so caches must key on it.
    let etag = HeaderValue::from_str(tag).ok();
    let caching = Caching {
        etag: etag.as_ref(),
        last_modified: None,
        vary: Some("Accept"),
    };
    insert_caching_fields(h, &caching, cfg, path);
    if not_modified {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return r;
    }
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    if *method != Method::HEAD {
        *r.body_mut() = Body::full(text);
    }
    r
}

/// The length of a listing's ETag: `"l-` and 16 hex digits and `"`.
const TAG_LEN: usize = 20;

/// A rendered listing with its ETag in front, as the cache keeps it. The entries' sizes and
/// times change without the directory's own mtime, so the validator is the page itself (64 bits of
/// SipHash over its bytes), computed once per rendering: hashing at each request halved the
/// listing row of `bench/run`.
fn with_tag(page: &[u8]) -> Bytes {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    page.hash(&mut h);
    let mut out = Vec::with_capacity(TAG_LEN + page.len());
    out.extend_from_slice(format!("\"l-{:016x}\"", h.finish()).as_bytes());
    out.extend_from_slice(page);
    Bytes::from(out)
}

/// The ETag and the page of a [`with_tag`] value (the page shares its bytes).
fn split_tag(tagged: &Bytes) -> (&str, Bytes) {
    let tag = std::str::from_utf8(&tagged[..TAG_LEN]).unwrap_or("\"l-\"");
    (tag, tagged.slice(TAG_LEN..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_rides_in_front_of_the_page() {
        let tagged = with_tag(b"<p>page</p>");
        let (tag, page) = split_tag(&tagged);
        assert_eq!(page, &b"<p>page</p>"[..]);
        assert!(
            tag.starts_with("\"l-") && tag.ends_with('"') && tag.len() == TAG_LEN,
            "{tag}"
        );
        assert_ne!(split_tag(&with_tag(b"<p>other</p>")).0, tag);
    }

    /// Issue 16: a huge directory is listed with at most `--listing-max` entries and a note.
    #[test]
    fn listings_are_capped_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..7 {
            std::fs::write(dir.path().join(format!("f{i}.txt")), b"x").unwrap();
        }
        std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
        let (entries, more) = read_entries(dir.path(), 10).unwrap();
        assert_eq!((entries.len(), more), (7, false));
        let (entries, more) = read_entries(dir.path(), 3).unwrap();
        assert_eq!((entries.len(), more), (3, true));
        let html = build(
            dir.path(),
            "/d/",
            ListingFormat::Html,
            listing::Order::default(),
            3,
        )
        .unwrap();
        let html = std::str::from_utf8(&html).unwrap();
        assert!(html.contains("only 3 are listed"), "{html}");
        assert!(html.trim_end().ends_with("</html>"));
        let json = build(
            dir.path(),
            "/d/",
            ListingFormat::Json,
            listing::Order::default(),
            3,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
    }
}
