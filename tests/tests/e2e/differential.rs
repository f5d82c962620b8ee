//! Issue 14: the front's two HTTP/1.1 stacks answer alike. The fast path (cached answers written
//! as bytes) and hyper's pipeline (the handler) must give the same status, fields and body for
//! the same request. Requests are generated (proptest, a bounded number of cases) over the sample
//! site: methods, paths (files, directories, redirects, missing, dynamic, dotfiles, odd
//! spellings) and the fields both stacks look at. Each is asked plainly (the fast path, once the
//! cache is warm) and with a `TE: trailers` field, which sends it through hyper.

use khttpd_tests::front::Front;
use khttpd_tests::http::{self, Response};
use proptest::prelude::*;

const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/index.html?v=1",
    "/assets/style.css",
    "/assets/app.js",
    "/assets/logo.png",
    "/assets/logo.svg",
    "/assets",
    "/files/",
    "/files/readme.txt",
    "/files/data.json",
    "/files/notes.md",
    "/files/more/",
    "/%61ssets/style.css",
    "//assets//app.js",
    "/assets/../index.html",
    "/no/such/file.html",
    "/demo1.php",
    "/ssi.shtml",
    "/.env",
    "/index.html%00",
];

const ENCODINGS: &[&str] = &[
    "gzip", "br", "zstd", "identity", "gzip;q=0", "*", "br, gzip",
];

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: &'static str,
    accept_encoding: Option<&'static str>,
    if_none_match: Option<bool>,
    if_modified_since: Option<&'static str>,
}

fn requests() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["GET", "HEAD"]),
        prop::sample::select(PATHS.to_vec()),
        prop::option::of(prop::sample::select(ENCODINGS.to_vec())),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(vec![
            "Sat, 01 Jan 2000 00:00:00 GMT",
            "Fri, 01 Jan 2100 00:00:00 GMT",
            "not a date",
        ])),
    )
        .prop_map(
            |(method, path, accept_encoding, if_none_match, if_modified_since)| Req {
                method,
                path,
                accept_encoding,
                if_none_match,
                if_modified_since,
            },
        )
}

/// What must match: status, fields (names lower-cased, sorted; `Date` and the connection's own
/// fields left out) and body.
fn comparable(r: &Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut fields: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| !matches!(n.as_str(), "date" | "connection" | "keep-alive"))
        .collect();
    fields.sort();
    (r.status, fields, r.body.clone())
}

/// With the operator's header rules, which both encoders take from one list (`sending/head.rs`),
/// including a rule's `Vary` beside the front's own.
#[test]
fn fast_path_and_hyper_answer_alike() {
    alike(
        &[
            "--add-header",
            "/assets/*=Cache-Control: public, max-age=60",
            "--add-header",
            "*.css=Vary: Origin",
            "--add-header",
            "/files/*=X-Frame-Options: DENY",
        ],
        128,
    );
}

/// Issue 16: files too large for the cache leave the fast path from disk with sendfile(2); their
/// answers are still the pipeline's (here `index.html`, `app.js` and `style.css` exceed 1 KiB).
#[test]
fn files_sent_from_disk_answer_as_the_pipeline_does() {
    alike(&["--cache-max-file", "1K"], 64);
}

fn alike(extra: &[&str], cases: u32) {
    let www = khttpd_tests::repo_root().join("www");
    // One main daemon, compressions waited for: the same cache state whichever stack asks.
    let mut args = vec![
        "--root",
        www.to_str().unwrap(),
        "--threads",
        "1",
        "--compress-wait",
        "60",
    ];
    args.extend_from_slice(extra);
    let f = Front::start(&args);
    let etag = http::get(f.addr, "/assets/style.css")
        .header("etag")
        .unwrap()
        .to_owned();
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(req in requests())| {
        let tag = match req.if_none_match {
            Some(true) => etag.clone(),
            Some(false) => "\"other\"".to_owned(),
            None => String::new(),
        };
        let mut fields: Vec<(&str, &str)> = Vec::new();
        if let Some(ae) = req.accept_encoding {
            fields.push(("Accept-Encoding", ae));
        }
        if req.if_none_match.is_some() {
            fields.push(("If-None-Match", &tag));
        }
        if let Some(ims) = req.if_modified_since {
            fields.push(("If-Modified-Since", ims));
        }
        // Twice plainly: the first may fill the cache, the second is the fast path's if it can be.
        http::request(f.addr, req.method, req.path, &fields, b"");
        let fast = http::request(f.addr, req.method, req.path, &fields, b"");
        let mut through_hyper = fields.clone();
        through_hyper.push(("TE", "trailers"));
        let full = http::request(f.addr, req.method, req.path, &through_hyper, b"");
        let (a, b) = (comparable(&fast), comparable(&full));
        prop_assert_eq!((a.0, &a.1), (b.0, &b.1), "{:?}", req);
        prop_assert!(a.2 == b.2, "{:?}: bodies differ ({} and {} bytes)", req, a.2.len(), b.2.len());
    });
}
