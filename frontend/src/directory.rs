//! DataSending for a directory listing: read the directory on the blocking pool, render with
//! [`crate::listing`], answer HTML or JSON by the Accept header.

use std::io;
use std::path::Path;

use http::header::{
    HeaderMap, HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, VARY,
};
use http::{Method, Response, StatusCode};

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::body::Body;
use crate::cache::{ListingFormat, ListingKey};
use crate::config::Config;
use crate::fs::Meta;
use crate::listing::{self, Entry};
use crate::pages;
use crate::route::ListingDir;
use crate::static_file::{io_error_page, Cache};

/// Reads the visible entries of `dir`, sorted directories first. Blocking.
pub fn read_entries(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
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
    Ok(entries)
}

/// Answers a listing request: rendered once per directory version and format, then from the cache
/// until `--cache-revalidate` passes (entries' sizes change without touching the directory).
pub async fn serve(
    method: &Method,
    headers: &HeaderMap,
    dir: ListingDir,
    cfg: &Config,
    cache: &Arc<Cache>,
) -> Response<Body> {
    let json = listing::wants_json(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    let (format, ctype) = if json {
        (ListingFormat::Json, "application/json; charset=utf-8")
    } else {
        (ListingFormat::Html, "text/html; charset=utf-8")
    };
    let key = ListingKey::of(&dir.meta, format, &dir.display);
    let text = match cache.listing(&key, Instant::now()) {
        Some(t) => t,
        None => {
            let path = dir.path.clone();
            let entries = match tokio::task::spawn_blocking(move || read_entries(&path)).await {
                Ok(Ok(e)) => e,
                Ok(Err(e)) => return io_error_page(&e),
                Err(_) => {
                    return pages::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        pages::default_detail(StatusCode::INTERNAL_SERVER_ERROR),
                    )
                }
            };
            let rendered = Bytes::from(match format {
                ListingFormat::Json => listing::render_json(&entries),
                ListingFormat::Html => listing::render_html(&dir.display, &entries),
            });
            cache.put_listing(key, rendered.clone(), Instant::now());
            rendered
        }
    };
    let mut r = Response::new(Body::empty());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    // The representation depends on Accept, so caches must key on it.
    h.insert(VARY, HeaderValue::from_static("Accept"));
    if let Some(cc) = &cfg.cache_control_value {
        h.insert(CACHE_CONTROL, cc.clone());
    }
    if *method != Method::HEAD {
        *r.body_mut() = Body::full(text);
    }
    r
}
