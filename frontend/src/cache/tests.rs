//! The cache as its callers use it: coalescing, budgets, variants, siblings, expiry.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use quick_cache::Equivalent;

use super::keys::{FileKey, ListingFormat, ListingKey};
use super::limits::CacheConfig;
use super::map::{Key, KeyRef};
use super::negotiate::Encoding;
use super::representation::{FileHead, Representation};
use super::store::ContentCache;
use super::variants::read_sibling;
use crate::route::fs::Meta;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;

fn cfg() -> CacheConfig {
    CacheConfig {
        size: 8 << 20,
        max_file: 256 << 10,
        compress_min: 64,
        // Debug builds compress slowly; tests of waiting set their own budget.
        compress_wait: Duration::from_secs(60),
        ..CacheConfig::default()
    }
}

fn key(ino: u64, len: usize) -> FileKey {
    FileKey {
        dev: 1,
        ino,
        len: len as u64,
        mtime: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
    }
}

fn head() -> FileHead<'static> {
    FileHead {
        etag: "\"1-2-3\"",
        last_modified: "Tue, 14 Nov 2023 22:13:20 GMT",
        content_type: "text/html; charset=utf-8",
    }
}

fn text(n: usize) -> Bytes {
    let line = b"<li><a href=\"page.html\">A page about kHTTPd</a> served from memory</li>\n";
    Bytes::from(line.iter().copied().cycle().take(n).collect::<Vec<u8>>())
}

fn noise(n: usize) -> Bytes {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    Bytes::from(
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect::<Vec<u8>>(),
    )
}

fn decode(enc: Encoding, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match enc {
        Encoding::Br => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Encoding::Zstd => out = zstd::stream::decode_all(data).unwrap(),
        Encoding::Gzip => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Encoding::Identity => out = data.to_vec(),
    }
    out
}

async fn cached_identity<M: Clone + Send + Sync + 'static>(
    c: &Arc<ContentCache<M>>,
    k: FileKey,
    body: Bytes,
) -> Representation {
    c.identity(&k, &head(), move || Ok(body)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_loads_once_for_50_concurrent_callers() {
    let c = ContentCache::<()>::new(cfg());
    let loads = Arc::new(AtomicUsize::new(0));
    let body = text(10_000);
    let k = key(7, body.len());
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, loads, body) = (c.clone(), loads.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            c.identity(&k, &head(), move || {
                loads.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                Ok(body)
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.body, body);
        assert_eq!(r.encoding, Encoding::Identity);
        assert_eq!(r.etag, "\"1-2-3\"");
        assert_eq!(r.content_length, "10000");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let again = c
        .identity(&k, &head(), || panic!("must come from memory"))
        .await
        .unwrap();
    assert_eq!(again.body, body);
    assert!(c.stats().hits >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_compression_for_50_concurrent_first_requests() {
    let c = ContentCache::<()>::new(cfg());
    let body = text(200_000);
    let k = key(8, body.len());
    let id = cached_identity(&c, k, body.clone()).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, id) = (c.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            c.variant(&k, Encoding::Br, &id, || None).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap().expect("text compresses");
        assert_eq!(decode(Encoding::Br, &r.body), body);
    }
    assert_eq!(c.stats().compressions, 1);
}

#[tokio::test]
async fn variant_decodes_to_identity_with_its_own_headers() {
    let c = ContentCache::<()>::new(cfg());
    let body = text(50_000);
    let k = key(9, body.len());
    let id = cached_identity(&c, k, body.clone()).await;
    for enc in Encoding::COMPRESSED {
        let r = c.variant(&k, enc, &id, || None).await.unwrap();
        assert_eq!(decode(enc, &r.body), body, "{enc:?}");
        assert_eq!(r.encoding, enc);
        assert_eq!(r.etag, enc.etag("\"1-2-3\"").as_str());
        assert_eq!(r.content_length, r.body.len().to_string().as_str());
        assert_eq!(r.content_type, id.content_type);
        assert_eq!(r.last_modified, id.last_modified);
        assert_eq!(r.content_encoding().unwrap(), enc.token());
    }
    assert!(id.content_encoding().is_none());
    let same = c
        .variant(&k, Encoding::Identity, &id, || None)
        .await
        .unwrap();
    assert_eq!(same.body, body);
    assert_eq!(c.stats().compressions, 3);
}

#[tokio::test]
async fn changed_file_key_is_a_miss() {
    let c = ContentCache::<()>::new(cfg());
    let old = text(1000);
    let k1 = key(10, old.len());
    cached_identity(&c, k1, old.clone()).await;
    let mut k2 = k1;
    k2.mtime += Duration::from_nanos(1);
    let new = Bytes::from(vec![b'n'; 1000]);
    let loads = Arc::new(AtomicUsize::new(0));
    let l = loads.clone();
    let r = c
        .identity(&k2, &head(), move || {
            l.fetch_add(1, Ordering::SeqCst);
            Ok(new)
        })
        .await
        .unwrap();
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(&r.body[..], &[b'n'; 1000][..]);
    let r1 = c.identity(&k1, &head(), || panic!("cached")).await.unwrap();
    assert_eq!(r1.body, old);
}

#[tokio::test]
async fn memory_stays_under_the_budget() {
    let size = 4u64 << 20;
    let c = ContentCache::<String>::new(CacheConfig {
        size,
        max_file: 64 << 10,
        ..cfg()
    });
    let body = text(64 << 10);
    // Ten times the budget in identity bodies, plus listings and routing entries.
    for i in 0..640u64 {
        let r = cached_identity(&c, key(1000 + i, body.len()), body.clone()).await;
        assert_eq!(r.body.len(), body.len());
        let lk = ListingKey {
            dev: 1,
            ino: i,
            mtime: UNIX_EPOCH,
            format: ListingFormat::Html,
            order: crate::sending::listing::Order::default(),
            display: format!("/dir{i}/"),
        };
        c.put_listing(lk, text(8 << 10), Instant::now());
        c.put_fresh(
            1,
            &format!("/file{i}.html"),
            "static".into(),
            Instant::now(),
        );
        let s = c.stats();
        assert!(s.bytes <= size, "{} > {size} after {i}", s.bytes);
    }
    let s = c.stats();
    assert!(s.capacity <= size);
    assert!(s.evictions > 0);
    assert!(s.entries > 0);
    assert!(s.bytes > size / 2, "the cache should be mostly full: {s:?}");
    // quick_cache's own tables are bounded by `size` too, not by the working set.
    assert!(s.tables < size / 4, "{s:?}");
}

#[tokio::test]
async fn incompressible_is_declined_once_and_remembered() {
    let c = ContentCache::<()>::new(cfg());
    let body = noise(64 << 10);
    let k = key(11, body.len());
    let id = cached_identity(&c, k, body.clone()).await;
    for _ in 0..3 {
        assert!(c.variant(&k, Encoding::Gzip, &id, || None).await.is_none());
    }
    let s = c.stats();
    assert_eq!(s.compressions, 1);
    assert_eq!(s.negative, 1);
}

#[tokio::test]
async fn tiny_is_declined_and_remembered() {
    let c = ContentCache::<()>::new(CacheConfig {
        compress_min: 0,
        ..cfg()
    });
    let body = Bytes::from_static(b"<p>hi</p>");
    let k = key(12, body.len());
    let id = cached_identity(&c, k, body).await;
    assert!(c.variant(&k, Encoding::Br, &id, || None).await.is_none());
    assert!(c.variant(&k, Encoding::Br, &id, || None).await.is_none());
    let s = c.stats();
    assert_eq!(s.compressions, 1);
    assert_eq!(s.negative, 1);
}

#[tokio::test]
async fn below_compress_min_is_not_even_tried() {
    let c = ContentCache::<()>::new(cfg());
    let body = text(63);
    let k = key(13, body.len());
    let id = cached_identity(&c, k, body).await;
    let looked = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let l = looked.clone();
        let r = c
            .variant(&k, Encoding::Gzip, &id, move || {
                l.fetch_add(1, Ordering::SeqCst);
                None
            })
            .await;
        assert!(r.is_none());
    }
    assert_eq!(looked.load(Ordering::SeqCst), 1, "siblings looked for once");
    assert_eq!(c.stats().compressions, 0);
    assert_eq!(c.stats().negative, 1);
}

#[tokio::test]
async fn sibling_is_used_instead_of_compressing() {
    let dir = tempfile::tempdir().unwrap();
    let body = text(30_000);
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&body).unwrap();
        e.finish().unwrap()
    };
    let path = dir.path().join("app.js.gz");
    std::fs::write(&path, &gz).unwrap();
    let c = ContentCache::<()>::new(cfg());
    let k = key(14, body.len());
    let id = cached_identity(&c, k, body.clone()).await;
    let r = c
        .variant(&k, Encoding::Gzip, &id, {
            let (p, n) = (path.clone(), gz.len() as u64);
            move || Some((p, n))
        })
        .await
        .unwrap();
    assert_eq!(&r.body[..], &gz[..]);
    assert_eq!(decode(Encoding::Gzip, &r.body), body);
    assert_eq!(r.etag, "\"1-2-3-gzip\"");
    std::fs::remove_file(&path).unwrap();
    let again = c
        .variant(&k, Encoding::Gzip, &id, || panic!("not asked again"))
        .await
        .unwrap();
    assert_eq!(&again.body[..], &gz[..], "read once, then from memory");
    assert_eq!(c.stats().compressions, 0);
}

#[tokio::test]
async fn missing_or_odd_sibling_falls_back_to_compressing() {
    let dir = tempfile::tempdir().unwrap();
    let c = ContentCache::<()>::new(cfg());
    let body = text(30_000);
    let k = key(15, body.len());
    let id = cached_identity(&c, k, body.clone()).await;
    let gone = dir.path().join("gone.js.br");
    let r = c
        .variant(&k, Encoding::Br, &id, move || Some((gone, 100)))
        .await
        .unwrap();
    assert_eq!(decode(Encoding::Br, &r.body), body);
    // A directory where the sibling was: never read as a body.
    let odd = dir.path().join("odd.js.zst");
    std::fs::create_dir(&odd).unwrap();
    let r = c
        .variant(&k, Encoding::Zstd, &id, move || Some((odd, 100)))
        .await
        .unwrap();
    assert_eq!(decode(Encoding::Zstd, &r.body), body);
    assert_eq!(c.stats().compressions, 2);
}

#[tokio::test]
async fn a_symlinked_sibling_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("secret");
    std::fs::write(&target, b"not a compressed body").unwrap();
    let link = dir.path().join("a.css.gz");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(read_sibling(&link, 1 << 20).is_err());
    assert!(read_sibling(&target, 4).is_err(), "over the limit");
    assert_eq!(
        &read_sibling(&target, 1 << 20).unwrap()[..],
        b"not a compressed body"
    );
}

/// Issue 15: a sibling's bytes go out as its file's, so it passes every rule a served file
/// passes; a second name of `x.php` or `.env` (a hard link) is never one.
#[tokio::test]
async fn a_sibling_with_two_names_or_odd_bits_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join(".env");
    std::fs::write(&secret, b"DB_PASSWORD=hunter2").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let linked = dir.path().join("x.js.gz");
    std::fs::hard_link(&secret, &linked).unwrap();
    assert!(read_sibling(&linked, 1 << 20).is_err(), "hard link");
    std::fs::remove_file(&linked).unwrap();
    let plain = dir.path().join("y.js.gz");
    for (mode, ok) in [
        (0o644, true),
        (0o640, false),
        (0o755, false),
        (0o4644, false),
    ] {
        std::fs::write(&plain, b"gz").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(read_sibling(&plain, 1 << 20).is_ok(), ok, "mode {mode:o}");
    }
}

#[tokio::test]
async fn a_client_that_leaves_does_not_waste_the_compression() {
    let c = ContentCache::<()>::new(cfg());
    let body = text(250_000);
    let k = key(16, body.len());
    let id = cached_identity(&c, k, body.clone()).await;
    let first = tokio::time::timeout(
        Duration::from_millis(1),
        c.variant(&k, Encoding::Br, &id, || None),
    )
    .await;
    drop(first);
    let r = c.variant(&k, Encoding::Br, &id, || None).await.unwrap();
    assert_eq!(decode(Encoding::Br, &r.body), body);
    assert_eq!(c.stats().compressions, 1);
}

#[tokio::test]
async fn large_files_are_not_cached() {
    let c = ContentCache::<()>::new(cfg());
    let loads = Arc::new(AtomicUsize::new(0));
    let body = text(300 << 10);
    let big = key(18, body.len());
    for _ in 0..2 {
        let (l, b) = (loads.clone(), body.clone());
        let r = c
            .identity(&big, &head(), move || {
                l.fetch_add(1, Ordering::SeqCst);
                Ok(b)
            })
            .await
            .unwrap();
        assert_eq!(r.body.len(), body.len());
        assert!(c.variant(&big, Encoding::Gzip, &r, || None).await.is_none());
    }
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(c.stats().entries, 0);
    assert_eq!(c.stats().compressions, 0);
}

#[tokio::test]
async fn entries_of_a_just_modified_file_expire_after_settle() {
    let c = ContentCache::<()>::new(CacheConfig {
        settle: Duration::from_secs(1),
        ..cfg()
    });
    let loads = Arc::new(AtomicUsize::new(0));
    let body = text(5000);
    let mut racy = key(17, body.len());
    racy.mtime = SystemTime::now();
    let get = || {
        let (l, b) = (loads.clone(), body.clone());
        let c = c.clone();
        async move {
            let r = c
                .identity(&racy, &head(), move || {
                    l.fetch_add(1, Ordering::SeqCst);
                    Ok(b)
                })
                .await
                .unwrap();
            c.variant(&racy, Encoding::Gzip, &r, || None).await.unwrap()
        }
    };
    get().await;
    get().await;
    assert_eq!(loads.load(Ordering::SeqCst), 1, "cached while settling");
    assert_eq!(c.stats().compressions, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    get().await;
    get().await;
    assert_eq!(loads.load(Ordering::SeqCst), 2, "read again once settled");
    assert_eq!(c.stats().compressions, 2);
    // Read again after its settle time, the version is trusted and kept for good.
    get().await;
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(c.stats().compressions, 2);
}

#[tokio::test]
async fn a_slow_compression_does_not_hold_the_request() {
    let c = ContentCache::<()>::new(CacheConfig {
        compress_wait: Duration::ZERO,
        ..cfg()
    });
    let body = text(100_000);
    let k = key(22, body.len());
    let id = cached_identity(&c, k, body.clone()).await;
    assert!(c.variant(&k, Encoding::Br, &id, || None).await.is_none());
    assert_eq!(c.stats().negative, 0, "not ready is not 'not worth it'");
    let r = loop {
        if let Some(r) = c.variant(&k, Encoding::Br, &id, || None).await {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(decode(Encoding::Br, &r.body), body);
    assert_eq!(c.stats().compressions, 1);
}

#[tokio::test]
async fn select_negotiates_and_falls_back() {
    let c = ContentCache::<()>::new(cfg());
    let all = Encoding::COMPRESSED;
    let body = text(20_000);
    let k = key(23, body.len());
    let id = cached_identity(&c, k, body.clone()).await;
    let none = |_: Encoding| None;
    let r = c.select(&k, Some("gzip, br"), &all, &id, none).await;
    assert_eq!(r.encoding, Encoding::Br);
    let r = c
        .select(&k, Some("gzip;q=0.5, zstd;q=0.4"), &all, &id, none)
        .await;
    assert_eq!(r.encoding, Encoding::Gzip);
    assert_eq!(decode(Encoding::Gzip, &r.body), body);
    let r = c.select(&k, None, &all, &id, none).await;
    assert_eq!(r.encoding, Encoding::Identity);
    // A Range request offers nothing but identity.
    let r = c.select(&k, Some("br"), &[], &id, none).await;
    assert_eq!(r.encoding, Encoding::Identity);
    assert_eq!(r.etag, "\"1-2-3\"");

    // Noise: br does not pay, nor does gzip; identity it is, and neither is tried again.
    let noisy = noise(20_000);
    let kn = key(24, noisy.len());
    let idn = cached_identity(&c, kn, noisy).await;
    let before = c.stats().compressions;
    let r = c
        .select(&kn, Some("br, gzip;q=0.5"), &all, &idn, none)
        .await;
    assert_eq!(r.encoding, Encoding::Identity);
    assert_eq!(c.stats().compressions, before + 2);
    c.select(&kn, Some("br, gzip;q=0.5"), &all, &idn, none)
        .await;
    assert_eq!(c.stats().compressions, before + 2);
}

#[tokio::test]
async fn a_short_read_is_an_error_and_not_cached() {
    let c = ContentCache::<()>::new(cfg());
    let k = key(19, 100);
    let e = c
        .identity(&k, &head(), || Ok(Bytes::from_static(b"short")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("changed"), "{e}");
    let e = c
        .identity(&k, &head(), || {
            Err(io::Error::from(io::ErrorKind::NotFound))
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    let bad = FileHead {
        etag: "\"bad\nvalue\"",
        ..head()
    };
    assert!(c.identity(&k, &bad, || Ok(text(100))).await.is_err());
    assert_eq!(c.stats().entries, 0);
}

#[test]
fn listings_expire_after_revalidate() {
    let c = ContentCache::<()>::new(cfg());
    let t0 = Instant::now();
    let meta = Meta {
        kind: crate::route::fs::Kind::Dir,
        mode: 0o755,
        len: 4096,
        dev: 3,
        ino: 4,
        mtime: UNIX_EPOCH + Duration::from_secs(5),
    };
    let html = ListingKey::of(&meta, ListingFormat::Html, "/docs/");
    let json = ListingKey::of(&meta, ListingFormat::Json, "/docs/");
    c.put_listing(html.clone(), Bytes::from_static(b"<html>"), t0);
    assert_eq!(c.listing(&html, t0).unwrap(), "<html>");
    assert!(c.listing(&json, t0).is_none());
    assert!(c
        .listing(&ListingKey::of(&meta, ListingFormat::Html, "/d/"), t0)
        .is_none());
    assert!(c.listing(&html, t0 + Duration::from_secs(1)).is_none());
    let mut touched = meta;
    touched.mtime += Duration::from_nanos(1);
    assert!(c
        .listing(&ListingKey::of(&touched, ListingFormat::Html, "/docs/"), t0)
        .is_none());
}

#[test]
fn route_metadata_is_fresh_for_revalidate_and_per_generation() {
    let c = ContentCache::<&'static str>::new(cfg());
    let t0 = Instant::now();
    c.put_fresh(1, "/a.html", "static", t0);
    assert_eq!(c.get_fresh(1, "/a.html", t0), Some("static"));
    assert_eq!(
        c.get_fresh(1, "/a.html", t0 + Duration::from_millis(999)),
        Some("static")
    );
    assert_eq!(c.get_fresh(1, "/a.html", t0 + Duration::from_secs(1)), None);
    assert_eq!(c.get_fresh(2, "/a.html", t0), None);
    assert_eq!(c.get_fresh(1, "/b.html", t0), None);
    c.put_fresh(1, "/a.html", "backend", t0 + Duration::from_secs(2));
    assert_eq!(
        c.get_fresh(1, "/a.html", t0 + Duration::from_secs(2)),
        Some("backend")
    );
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (3, 3));
}

#[test]
fn borrowed_keys_hash_like_owned_ones() {
    let h = |k: &dyn Fn(&mut DefaultHasher)| {
        let mut s = DefaultHasher::new();
        k(&mut s);
        s.finish()
    };
    let owned = Key::Route(3, "/x".into());
    assert_eq!(
        h(&|s| owned.hash(s)),
        h(&|s| KeyRef::Route(3, "/x").hash(s))
    );
    assert!(KeyRef::Route(3, "/x").equivalent(&owned));
    assert!(!KeyRef::Route(4, "/x").equivalent(&owned));
    let lk = ListingKey::of(
        &Meta {
            kind: crate::route::fs::Kind::Dir,
            mode: 0o755,
            len: 0,
            dev: 1,
            ino: 2,
            mtime: UNIX_EPOCH,
        },
        ListingFormat::Json,
        "/",
    );
    let owned = Key::Listing(lk.clone());
    assert_eq!(h(&|s| owned.hash(s)), h(&|s| KeyRef::Listing(&lk).hash(s)));
}

#[test]
fn file_key_comes_from_meta() {
    let meta = Meta {
        kind: crate::route::fs::Kind::File,
        mode: 0o644,
        len: 42,
        dev: 7,
        ino: 99,
        mtime: UNIX_EPOCH + Duration::new(1, 5),
    };
    let k = FileKey::of(&meta);
    assert_eq!((k.dev, k.ino, k.len, k.mtime), (7, 99, 42, meta.mtime));
}

#[tokio::test]
async fn the_largest_file_fits_even_in_a_small_cache() {
    let c = ContentCache::<()>::new(CacheConfig {
        size: 2 << 20,
        max_file: 256 << 10,
        ..cfg()
    });
    let body = text(256 << 10);
    let k = key(20, body.len());
    cached_identity(&c, k, body).await;
    assert_eq!(c.stats().entries, 1);
    assert!(c.stats().capacity <= 2 << 20);
}

#[tokio::test]
async fn size_zero_disables_caching_but_still_answers() {
    let c = ContentCache::<()>::new(CacheConfig { size: 0, ..cfg() });
    let body = text(5000);
    let k = key(21, body.len());
    let id = cached_identity(&c, k, body.clone()).await;
    let r = c.variant(&k, Encoding::Gzip, &id, || None).await.unwrap();
    assert_eq!(decode(Encoding::Gzip, &r.body), body);
    assert_eq!(c.stats().bytes, 0);
}

#[test]
fn futures_are_send() {
    fn send<T: Send>(_: T) {}
    let c = ContentCache::<String>::new(cfg());
    let k = key(25, 1);
    let id = Representation {
        body: Bytes::from_static(b"x"),
        encoding: Encoding::Identity,
        etag: HeaderValue::from_static("\"x\""),
        content_length: HeaderValue::from(1u64),
        content_type: HeaderValue::from_static("text/plain"),
        last_modified: HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    };
    send(c.identity(&k, &head(), || Ok(Bytes::from_static(b"x"))));
    send(c.variant(&k, Encoding::Gzip, &id, || None));
    send(c.select(&k, Some("gzip"), &Encoding::COMPRESSED, &id, |_| None));
}

#[test]
fn config_validation() {
    assert!(CacheConfig::default().validate().is_ok());
    let bad = CacheConfig {
        compress_threads: 0,
        ..CacheConfig::default()
    };
    assert!(bad.validate().is_err());
    let bad = CacheConfig {
        size: 1 << 20,
        max_file: 1 << 20,
        ..CacheConfig::default()
    };
    assert!(bad.validate().unwrap_err().contains("--cache-max-file"));
    let off = CacheConfig {
        size: 0,
        ..CacheConfig::default()
    };
    assert!(off.validate().is_ok());
}
