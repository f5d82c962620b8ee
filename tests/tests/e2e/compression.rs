//! The compressed content cache through the real binary: every encoding decodes to the file, the
//! negotiation table, per-representation ETags and 304s with Vary, precompressed siblings, freshness
//! after changes, the memory bound, and one compression for many first requests.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use khttpd_tests::front::Front;
use khttpd_tests::http::{self, Response};
use khttpd_tests::Proto;

/// A JavaScript-like text that compresses well but not trivially.
fn script(kib: usize) -> Vec<u8> {
    let mut s = String::new();
    let mut i = 0u64;
    while s.len() < kib * 1024 {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(&format!(
            "function f{}(a, b) {{ return a * {} + b; }} // {}\n",
            i % 997,
            i % 89,
            i >> 40
        ));
    }
    s.into_bytes()
}

fn write(root: &Path, name: &str, data: &[u8]) {
    let p = root.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A minute old, like real content: files younger than the cache's settle time (1 s) are
    // deliberately read and compressed again, which would blur the counts these tests check.
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(past)
        .unwrap();
}

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir(&root).unwrap();
        write(&root, "app.js", &script(48));
        write(&root, "tiny.css", b"a{b:c}");
        // xorshift64*: no compressor finds structure in it.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect();
        write(&root, "noise.txt", &noise);
        write(&root, "logo.png", &script(8));
        Site { dir }
    }
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("www")
    }
    fn start(&self, extra: &[&str]) -> Front {
        self.start_over(Proto::H1, extra)
    }
    fn start_over(&self, p: Proto, extra: &[&str]) -> Front {
        let root = self.root();
        // Wait for every compression: a busy debug build must not fall back to the next encoding.
        let mut args = vec![
            "--root",
            root.to_str().unwrap(),
            "--threads",
            "2",
            "--compress-wait",
            "60",
        ];
        args.extend_from_slice(extra);
        Front::start_over(p, &args)
    }
}

fn get(f: &Front, path: &str, ae: &str) -> Response {
    f.request("GET", path, &[("Accept-Encoding", ae)], b"")
}

// Issue 18: the same checks over HTTP/1.1 and over HTTP/2 (TLS, curl).
over_h1_and_h2!(
    every_encoding_decodes_to_the_file,
    negotiation_table,
    each_representation_has_its_own_etag_and_304,
    tiny_and_incompressible_files_are_left_alone,
    precompressed_siblings_are_used_when_fresh_and_inside,
    changed_replaced_and_deleted_files_are_never_stale_for_long,
);

fn decode(r: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    match r.header("content-encoding") {
        None => out = r.body.clone(),
        Some("gzip") => {
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(&r.body[..], 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("zstd") => out = zstd::decode_all(&r.body[..]).unwrap(),
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
    out
}

fn every_encoding_decodes_to_the_file(p: Proto) {
    let site = Site::new();
    let f = site.start_over(p, &[]);
    let original = script(48);
    for (ae, want) in [
        ("gzip", Some("gzip")),
        ("br", Some("br")),
        ("zstd", Some("zstd")),
        ("identity", None),
    ] {
        let r = get(&f, "/app.js", ae);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), want, "{ae}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{ae}");
        assert_eq!(
            r.header("content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap(),
            r.body.len()
        );
        assert!(
            r.body.len() < original.len() / 2 || want.is_none(),
            "{ae}: {} bytes",
            r.body.len()
        );
        assert!(decode(&r) == original, "{ae} decodes to the file");
        // HEAD carries exactly the same length and encoding.
        let h = f.request("HEAD", "/app.js", &[("Accept-Encoding", ae)], b"");
        assert_eq!(h.header("content-length"), r.header("content-length"));
        assert_eq!(h.header("content-encoding"), r.header("content-encoding"));
    }
}

fn negotiation_table(p: Proto) {
    let site = Site::new();
    let f = site.start_over(p, &[]);
    let table: &[(&str, Option<&str>)] = &[
        ("gzip, deflate, br, zstd", Some("br")),
        ("br;q=0.5, gzip", Some("gzip")),
        ("zstd, gzip;q=0.9", Some("zstd")),
        ("GZIP", Some("gzip")),
        ("*", Some("br")),
        ("*;q=0, gzip;q=0", None),
        ("gzip;q=0", None),
        ("deflate", None),
        ("", None),
        ("identity;q=0, gzip;q=0.1", Some("gzip")),
    ];
    for (ae, want) in table {
        assert_eq!(
            get(&f, "/app.js", ae).header("content-encoding"),
            *want,
            "Accept-Encoding: {ae}"
        );
    }
    let none = f.get("/app.js");
    assert_eq!(
        none.header("content-encoding"),
        None,
        "no Accept-Encoding: identity"
    );
}

fn each_representation_has_its_own_etag_and_304(p: Proto) {
    let site = Site::new();
    let f = site.start_over(p, &[]);
    let gz = get(&f, "/app.js", "gzip");
    let br = get(&f, "/app.js", "br");
    let id = get(&f, "/app.js", "identity");
    let tags = [
        gz.header("etag").unwrap(),
        br.header("etag").unwrap(),
        id.header("etag").unwrap(),
    ];
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    let nm = f.request(
        "GET",
        "/app.js",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", tags[0])],
        b"",
    );
    assert_eq!(nm.status, 304);
    assert_eq!(nm.header("etag"), Some(tags[0]));
    assert_eq!(
        nm.header("vary"),
        Some("Accept-Encoding"),
        "Vary on 304 too"
    );
    // The gzip tag does not validate the brotli representation.
    let other = f.request(
        "GET",
        "/app.js",
        &[("Accept-Encoding", "br"), ("If-None-Match", tags[0])],
        b"",
    );
    assert_eq!(other.status, 200);
    // Ranges come from the identity representation.
    let r = f.request(
        "GET",
        "/app.js",
        &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-99")],
        b"",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, script(48)[..100]);
}

fn tiny_and_incompressible_files_are_left_alone(p: Proto) {
    let site = Site::new();
    let f = site.start_over(p, &[]);
    let tiny = get(&f, "/tiny.css", "gzip, br");
    assert_eq!(tiny.header("content-encoding"), None);
    let noise = get(&f, "/noise.txt", "gzip, br, zstd");
    assert_eq!(
        noise.header("content-encoding"),
        None,
        "incompressible body stays identity"
    );
    let png = get(&f, "/logo.png", "gzip, br");
    assert_eq!(
        png.header("content-encoding"),
        None,
        "images are never compressed"
    );
    assert_eq!(png.header("vary"), None);
}

fn precompressed_siblings_are_used_when_fresh_and_inside(p: Proto) {
    let site = Site::new();
    let root = site.root();
    let original = script(40);
    write(&root, "lib.js", &original);
    // A sibling with a marker only it has: the gzip member carries a file name.
    let mut e = flate2::GzBuilder::new()
        .filename("from-sibling")
        .write(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, &original).unwrap();
    let sibling = e.finish().unwrap();
    write(&root, "lib.js.gz", &sibling);
    // An older sibling must be ignored.
    write(&root, "old.js", &original);
    write(&root, "old.js.gz", &sibling);
    let past = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(root.join("old.js.gz"))
        .unwrap()
        .set_modified(past)
        .unwrap();
    // A sibling that is a symlink out of the root must be ignored.
    write(&root, "out.js", &original);
    let outside = site.dir.path().join("evil.gz");
    std::fs::write(&outside, &sibling).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out.js.gz")).unwrap();

    let f = site.start_over(p, &[]);
    let r = get(&f, "/lib.js", "gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, sibling, "the sibling's bytes are served");
    assert!(decode(&r) == original);
    let old = get(&f, "/old.js", "gzip");
    assert_ne!(
        old.body, sibling,
        "a sibling older than the file is not used"
    );
    assert!(decode(&old) == original);
    let out = get(&f, "/out.js", "gzip");
    assert_ne!(out.body, sibling, "a sibling outside the root is not used");
    assert!(decode(&out) == original);
    // A sibling alone (no file) is not a file.
    write(&root, "only.css.gz", &sibling);
    assert_eq!(get(&f, "/only.css", "gzip").status, 404);
}

fn changed_replaced_and_deleted_files_are_never_stale_for_long(p: Proto) {
    let site = Site::new();
    let root = site.root();
    write(&root, "page.js", &script(20));
    let f = site.start_over(p, &[]);
    for ae in ["gzip", "identity"] {
        assert!(decode(&get(&f, "/page.js", ae)) == script(20));
    }
    let fresh = |want: &[u8]| {
        khttpd_tests::wait_until(Duration::from_millis(2500), || {
            let ok = ["gzip", "br", "identity"]
                .iter()
                .all(|ae| decode(&get(&f, "/page.js", ae)) == want);
            ok.then_some(())
        })
        .is_some()
    };
    // Changed in place (same size, new content).
    let mut changed = script(20);
    changed[0] = b'/';
    changed[1] = b'*';
    std::fs::write(root.join("page.js"), &changed).unwrap();
    assert!(
        fresh(&changed),
        "in-place change seen within the revalidation time"
    );
    // Replaced by rename (a new inode).
    let replaced = script(21);
    write(&root, "page.js.tmp", &replaced);
    std::fs::rename(root.join("page.js.tmp"), root.join("page.js")).unwrap();
    assert!(fresh(&replaced), "replacement seen");
    // Deleted.
    std::fs::remove_file(root.join("page.js")).unwrap();
    let gone = khttpd_tests::wait_until(Duration::from_millis(2500), || {
        (get(&f, "/page.js", "gzip").status == 404).then_some(())
    });
    assert!(gone.is_some(), "deletion seen");
    // A listing follows added entries the same way.
    assert!(!f.get("/").text().contains("new-entry.txt"));
    write(&root, "new-entry.txt", b"x");
    let listed = khttpd_tests::wait_until(Duration::from_millis(2500), || {
        f.get("/").text().contains("new-entry.txt").then_some(())
    });
    assert!(listed.is_some(), "listing shows the new file");
}

#[test]
fn memory_stays_bounded_with_a_working_set_many_times_the_cache() {
    let site = Site::new();
    let root = site.root();
    // 160 files of 160 KiB = 25 MiB of compressible text against an 8 MiB cache.
    for i in 0..160 {
        let mut body = script(160);
        body.extend_from_slice(format!("// file {i}\n").as_bytes());
        write(&root, &format!("set/f{i}.js"), &body);
    }
    let f = site.start(&[
        "--cache-size",
        "8M",
        "--cache-max-file",
        "256K",
        "--compress-wait",
        "30",
    ]);
    for round in 0..2 {
        for i in 0..160 {
            let r = get(&f, &format!("/set/f{i}.js"), "gzip");
            assert_eq!(r.status, 200, "round {round} file {i}");
        }
    }
    let (_, out, _) = f.ctl(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cache = &v["cache"];
    assert!(cache["bytes"].as_u64().unwrap() <= 8 << 20, "{cache}");
    assert!(cache["evictions"].as_u64().unwrap() > 0, "{cache}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", f.pid())).unwrap();
    let rss: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rss < 8 * 1024 + 48 * 1024,
        "RSS {rss} KiB with an 8 MiB cache"
    );
}

#[test]
fn one_compression_for_many_concurrent_first_requests() {
    let site = Site::new();
    let f = site.start(&["--compress-wait", "30"]);
    let addr = f.addr;
    let threads: Vec<_> = (0..24)
        .map(|_| {
            std::thread::spawn(move || {
                http::request(addr, "GET", "/app.js", &[("Accept-Encoding", "br")], b"")
            })
        })
        .collect();
    let bodies: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for r in &bodies {
        assert_eq!(r.header("content-encoding"), Some("br"));
        assert_eq!(r.body, bodies[0].body);
    }
    let (_, out, _) = f.ctl(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cache"]["compressions"], 1, "{}", v["cache"]);
}

/// Issue 16: a HEAD sends no body, so it never starts a compression (43 HEADs with `br` for large
/// files held the front at 191% CPU): it answers from a variant already made, else the file as it
/// is; a GET then compresses, and a HEAD after it carries that encoding.
#[test]
fn head_never_starts_a_compression() {
    let site = Site::new();
    let f = site.start(&[]);
    let compressions = || {
        let (_, out, _) = f.ctl(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["cache"]["compressions"].as_u64().unwrap()
    };
    for _ in 0..5 {
        let h = http::request(f.addr, "HEAD", "/app.js", &[("Accept-Encoding", "br")], b"");
        assert_eq!(h.status, 200);
        assert_eq!(h.header("content-encoding"), None, "the file as it is");
        assert_eq!(h.header("vary"), Some("Accept-Encoding"));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(compressions(), 0, "no compression for HEADs");
    let r = get(&f, "/app.js", "br");
    assert_eq!(r.header("content-encoding"), Some("br"));
    let h = http::request(f.addr, "HEAD", "/app.js", &[("Accept-Encoding", "br")], b"");
    assert_eq!(h.header("content-encoding"), Some("br"));
    assert_eq!(h.header("content-length"), r.header("content-length"));
    assert_eq!(compressions(), 1);
}

/// Issue 16: compressions have a CPU budget. With one compression thread and a queue of one,
/// 12 concurrent first requests for 12 large scripts with `gzip` are all answered at once (the
/// ones that find no place go out uncompressed, nothing remembered), `status` counts the
/// deferred ones, and once the burst is over a later request compresses the file.
#[test]
fn a_burst_of_compressions_is_queued_then_deferred() {
    let site = Site::new();
    for i in 0..12 {
        write(&site.root(), &format!("big{i}.js"), &script(200));
    }
    let f = site.start(&[
        "--compress-threads",
        "1",
        "--compress-queue",
        "1",
        "--compress-wait",
        "0.2",
    ]);
    let addr = f.addr;
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..12)
        .map(|i| {
            std::thread::spawn(move || {
                let path = format!("/big{i}.js");
                http::request(addr, "GET", &path, &[("Accept-Encoding", "gzip")], b"")
            })
        })
        .collect();
    let answers: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let took = started.elapsed();
    let expected = script(200);
    for r in &answers {
        assert_eq!(r.status, 200);
        if r.header("content-encoding").is_none() {
            assert!(r.body == expected, "the file as it is");
        }
    }
    assert!(
        took < Duration::from_secs(5),
        "the burst was answered in {took:?}"
    );
    let status = |f: &Front| -> serde_json::Value {
        let (_, out, _) = f.ctl(&["status", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["cache"].clone()
    };
    let deferred = status(&f)["compressions_deferred"].as_u64().unwrap();
    assert!(deferred >= 1, "{}", status(&f));
    // Once the burst is over, a file put off is compressed by a later request.
    let later = khttpd_tests::wait_until(Duration::from_secs(30), || {
        let all_gzip = (0..12).all(|i| {
            let r = get(&f, &format!("/big{i}.js"), "gzip");
            r.header("content-encoding") == Some("gzip")
        });
        all_gzip.then_some(())
    });
    assert!(later.is_some(), "{}", status(&f));
}
