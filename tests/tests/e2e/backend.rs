//! The front in front of a real Apache 2.4 + mod_php: what goes to the backend and what never does,
//! bodies streamed both ways, client addresses, faults, WebSocket and request smuggling. In-process
//! backends only for what Apache cannot do on demand (stall, WebSocket echo).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use khttpd_tests::apache::{Apache, ApacheOptions};
use khttpd_tests::front::Front;
use khttpd_tests::http::{self, Conn};
use khttpd_tests::Proto;
use tempfile::TempDir;

use crate::wire::assert_smuggling_refused;

/// The sample site plus a few PHP probes, in a temp docroot both servers share.
struct Docroot {
    dir: TempDir,
}

impl Docroot {
    fn new() -> Docroot {
        let dir = tempfile::Builder::new()
            .prefix("khttpd-docroot-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("www");
        khttpd_tests::copy_readable(&khttpd_tests::repo_root().join("www"), &root);
        let probes: &[(&str, &str)] = &[
            (
                "env.php",
                r#"<?php header('Content-Type: application/json'); echo json_encode([
                    'remote_addr' => $_SERVER['REMOTE_ADDR'] ?? null,
                    'xff' => $_SERVER['HTTP_X_FORWARDED_FOR'] ?? null,
                    'xfp' => $_SERVER['HTTP_X_FORWARDED_PROTO'] ?? null,
                    'xfh' => $_SERVER['HTTP_X_FORWARDED_HOST'] ?? null,
                    'via' => $_SERVER['HTTP_VIA'] ?? null,
                    'host' => $_SERVER['HTTP_HOST'] ?? null,
                    'uri' => $_SERVER['REQUEST_URI'] ?? null,
                    'method' => $_SERVER['REQUEST_METHOD'] ?? null,
                ]);"#,
            ),
            (
                "upload.php",
                r#"<?php $in = fopen('php://input', 'rb'); $n = 0; $h = hash_init('md5');
                    while (!feof($in)) { $b = fread($in, 65536); $n += strlen($b); hash_update($h, $b); }
                    echo $n, ' ', hash_final($h);"#,
            ),
            (
                "download.php",
                r#"<?php $mb = (int)($_GET['mb'] ?? 1); header('Content-Type: application/octet-stream');
                    $chunk = str_repeat('0123456789abcdef', 65536);
                    for ($i = 0; $i < $mb; $i++) { echo $chunk; flush(); }"#,
            ),
            (
                "big.php",
                "<?php header('Content-Length: 4194304'); echo str_repeat('0123456789abcdef', 262144);",
            ),
            (
                "events.php",
                "<?php header('Content-Type: text/event-stream'); header('Cache-Control: no-cache');
                    echo \"data: one\\n\\n\"; flush(); usleep(1500000); echo \"data: two\\n\\n\";",
            ),
            (
                "unbuffered.php",
                "<?php header('X-Accel-Buffering: no'); echo 'one '; flush(); usleep(1500000); echo 'two';",
            ),
            (
                "article.php",
                "<?php header('Content-Type: text/html; charset=UTF-8'); header('ETag: \"v1\"');
                    for ($i = 0; $i < 1000; $i++) { echo \"<p>Paragraph $i of a page PHP made.</p>\\n\"; if ($i % 100 == 0) flush(); }",
            ),
            (
                "article_cl.php",
                "<?php $b = str_repeat('<li>an item of a list</li>', 2000); header('Content-Length: ' . strlen($b)); echo $b;",
            ),
            (
                "notransform.php",
                "<?php header('Cache-Control: no-transform'); echo str_repeat('same bytes ', 5000);",
            ),
            ("tiny.php", "<?php echo 'tiny';"),
            (
                "shape.php",
                r#"<?php $s = (int)($_GET['s'] ?? 200); $m = $_GET['m'] ?? 'sized';
                    if (isset($_GET['r'])) { header("HTTP/1.1 $s " . hex2bin($_GET['r'])); } else { http_response_code($s); }
                    header('X-Shape: ' . $m);
                    if ($s == 204 || $s == 304) { exit; }
                    $b = str_repeat("shape $s ", 300);
                    if ($m == 'sized') { header('Content-Length: ' . strlen($b)); echo $b; }
                    elseif ($m == 'chunked') { echo substr($b, 0, 100); flush(); echo substr($b, 100); }
                    else { header('Content-Length: 0'); }"#,
            ),
            ("slow.php", "<?php usleep(300000); echo 'slow';"),
            (
                "fields.php",
                "<?php for ($i = 0; $i < (int)($_GET['n'] ?? 0); $i++) { header(\"X-F$i: v\"); }
                $size = (int)($_GET['size'] ?? 0);
                if ($size > 0) { header('X-Big: ' . str_repeat('a', $size)); }
                echo 'ok';",
            ),
            (
                "fixed.php",
                "<?php header('X-App: fixed'); header('Cache-Control: no-store'); echo 'fixed page ', $_GET['n'] ?? '-';",
            ),
            ("private/.htaccess", "Require all denied\n"),
            ("private/secret.html", "PRIVATE-LEAK\n"),
            (
                "app/index.php",
                "<?php echo 'front controller: ', $_SERVER['REQUEST_URI'];",
            ),
        ];
        for (name, body) in probes {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        Docroot { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("www")
    }
}

/// Apache settings for big bodies: no request-body limit in Apache or PHP.
const BIG_BODIES: &str =
    "LimitRequestBody 0\nphp_admin_value post_max_size 0\nphp_admin_value output_buffering 0\n";

fn apache(doc: &Docroot, options: ApacheOptions) -> Apache {
    let mut options = options;
    options.extra.push_str(BIG_BODIES);
    Apache::start_with(&doc.root(), options)
}

fn front(p: Proto, doc: &Docroot, backend: SocketAddr, extra: &[&str]) -> Front {
    let root = doc.root();
    let backend = backend.to_string();
    let mut args = vec![
        "--root",
        root.to_str().unwrap(),
        "--threads",
        "2",
        "--backend",
        &backend,
    ];
    args.extend_from_slice(extra);
    Front::start_over(p, &args)
}

// Issue 18: the same checks over HTTP/1.1 and over HTTP/2 (TLS, curl); Apache gets HTTP/1.1.
over_h1_and_h2!(
    php_form_flow_and_ssi_through_the_front,
    static_files_reach_apache_once_for_verification_and_missing_ones_always,
    forwarded_headers_replace_a_spoofed_client_value,
    apache_down_gives_502_fast_static_still_served_and_recovery,
    stalled_backend_gives_504,
    fifos_deep_paths_and_executable_files_never_become_front_answers,
    backend_text_is_gzipped_on_the_way,
    bodies_over_the_limit_get_413,
    custom_error_pages_for_the_fronts_own_errors,
    unix_socket_backend_end_to_end,
);

fn json(r: &http::Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// Apache's access-log lines for `path` (the request line as logged).
fn apache_saw(a: &Apache, path: &str) -> usize {
    a.log_lines_matching(&format!(" {path} HTTP/")).len()
}

fn php_form_flow_and_ssi_through_the_front(p: Proto) {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(p, &doc, a.addr, &["--route-header"]);
    let form = f.get("/demo1.php");
    assert_eq!(form.status, 200);
    assert_eq!(form.header("x-khttpd-route"), Some("backend"));
    assert!(
        form.text().contains("demo2.php") && !form.text().contains("<?php"),
        "{}",
        form.text()
    );
    let posted = f.request(
        "POST",
        "/demo2.php",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=Ada+%3Cb%3E",
    );
    assert_eq!(posted.status, 200);
    assert!(posted.text().contains("Ada &lt;b&gt;"), "{}", posted.text());
    let ssi = f.get("/ssi.shtml");
    assert_eq!(ssi.status, 200);
    assert!(
        !ssi.text().contains("<!--#echo"),
        "SSI was rendered by Apache: {}",
        ssi.text()
    );
    assert!(ssi.text().contains("ssi.shtml"), "{}", ssi.text());
    // Case-insensitive dynamic extension and path-info both reach Apache, never as source.
    let upper = f.get("/demo1.PHP");
    assert!(!upper.text().contains("<?php"));
    // Apache logs after it has answered: wait for the line.
    assert!(a
        .wait_for_log_line(" /demo1.PHP HTTP/", Duration::from_secs(5))
        .is_some());
}

fn static_files_reach_apache_once_for_verification_and_missing_ones_always(p: Proto) {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(p, &doc, a.addr, &["--route-header"]);
    let statics = [
        "/",
        "/assets/style.css",
        "/assets/app.js?v=3",
        "/assets/logo.png",
        "/files/",
        "/files/readme.txt",
    ];
    for path in statics {
        let first = f.get(path);
        assert_eq!(first.status, 200, "{path}: Apache's answer first");
        let r = f
            .until_front_serves(path, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{path} never verified:\n{}", a.access_log()));
        assert_eq!(r.status, 200, "{path}");
    }
    // Verified: from now on Apache sees none of them.
    std::thread::sleep(Duration::from_millis(200));
    let before = a.access_log().lines().count();
    for path in statics {
        for _ in 0..3 {
            let r = f.get(path);
            assert_eq!(
                (r.status, r.header("x-khttpd-route")),
                (200, Some("static")),
                "{path}"
            );
        }
    }
    let missing = f.get("/no/such/page");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-khttpd-route"), Some("backend"));
    assert!(
        a.wait_for_log_line(" /no/such/page HTTP/", Duration::from_secs(5))
            .is_some(),
        "Apache answered the 404"
    );
    // A front-controller style pretty URL under a directory whose index is PHP.
    let app = f.get("/app/");
    assert!(
        app.text().contains("front controller: /app/"),
        "{}",
        app.text()
    );
    let log = a.access_log();
    let after: Vec<&str> = log.lines().skip(before).collect();
    for path in [
        "/assets/style.css",
        "/assets/app.js",
        "/files/",
        "/files/readme.txt",
    ] {
        assert!(
            !after.iter().any(|l| l.contains(&format!(" {path} HTTP/"))),
            "{path} reached Apache after its verification:\n{log}"
        );
    }
    // An .htaccess-guarded directory is Apache's to judge: its 403, never the file.
    let private = f.get("/private/secret.html");
    assert_eq!(private.status, 403);
    assert!(!private.text().contains("PRIVATE-LEAK"));
    assert!(a
        .wait_for_log_line(" /private/secret.html HTTP/", Duration::from_secs(5))
        .is_some());
    let other = f.request("DELETE", "/files/readme.txt", &[], b"");
    assert_eq!(other.header("x-khttpd-route"), Some("backend"));
}

#[test]
fn large_upload_and_download_stream_without_growing_memory() {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(Proto::H1, &doc, a.addr, &["--max-body-size", "300M"]);
    // 256 MiB up, generated as it is sent (read whole into an unlinked temporary file first).
    let size: usize = 256 << 20;
    let mut s = TcpStream::connect(f.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!("POST /upload.php HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    let mut digest = Md5Check::default();
    for _ in 0..size / block.len() {
        s.write_all(&block).unwrap();
        digest.blocks += 1;
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(body.starts_with(&format!("{size} ")), "PHP received {body}");
    let md5 = body.split_whitespace().nth(1).unwrap();
    assert_eq!(md5, digest.expected(&block), "upload arrived intact");
    let (_, out, _) = f.ctl(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["uploads"]["spooled"], 1, "{}", v["uploads"]);
    assert_eq!(v["uploads"]["temp_files"], 0, "the temporary file is gone");

    // 256 MiB down, read as it comes.
    let mut s = TcpStream::connect(f.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /download.php?mb=256 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total > 256 << 20, "downloaded {total} bytes");
    // Neither body ever sat in the front's memory.
    let hwm = peak_rss_kib(f.pid());
    assert!(
        hwm < 96 * 1024,
        "front peaked at {hwm} KiB while streaming 2 x 256 MiB"
    );
}

/// The md5 of `blocks` copies of one block, computed by the `md5sum` tool.
#[derive(Default)]
struct Md5Check {
    blocks: usize,
}

impl Md5Check {
    fn expected(&self, block: &[u8]) -> String {
        let mut child = std::process::Command::new("md5sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for _ in 0..self.blocks {
            stdin.write_all(block).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Plain GETs and HEADs of dynamic pages are relayed from the fast path without hyper; a
/// request with a hop-by-hop `TE` field takes the full pipeline. Both must give the client the
/// same answer, and the relay must keep pipelined requests in order.
#[test]
fn relayed_answers_match_the_full_pipeline() {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(
        Proto::H1,
        &doc,
        a.addr,
        &["--threads", "1", "--route-header"],
    );
    assert!(
        http::until_front_serves(f.addr, "/assets/style.css", Duration::from_secs(5)).is_some()
    );
    let fields = |r: &http::Response| {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(n, _)| !["date", "keep-alive"].contains(&n.to_ascii_lowercase().as_str()))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        h.sort();
        h
    };
    let cases: &[(&str, &str)] = &[
        ("GET", "/fixed.php?n=1"),
        ("HEAD", "/fixed.php?n=1"),
        ("GET", "/download.php?mb=2"),
        ("GET", "/no-such-page.html"),
        ("GET", "/private/secret.html"),
    ];
    for &(method, path) in cases {
        let relayed = http::request(f.addr, method, path, &[], b"");
        let full = http::request(f.addr, method, path, &[("TE", "trailers")], b"");
        assert_eq!(relayed.status, full.status, "{method} {path}");
        assert_eq!(fields(&relayed), fields(&full), "{method} {path}");
        assert_eq!(relayed.body, full.body, "{method} {path}");
        assert_eq!(relayed.header("x-khttpd-route"), Some("backend"));
        assert!(relayed.header("date").is_some());
        assert!(!relayed.text().contains("<?php"));
        if path.starts_with("/fixed.php") {
            // Which path answered shows in the field names: the relay passes Apache's bytes,
            // hyper writes its own lower-case names.
            let names = |r: &http::Response| r.headers.iter().any(|(n, _)| n == "X-App");
            assert!(names(&relayed) && !names(&full), "{method} {path}");
        }
    }
    assert_eq!(
        http::get(f.addr, "/download.php?mb=2").body.len(),
        2 << 20,
        "chunked answer passed through whole"
    );

    // Static, relayed and Apache's 404, pipelined in one write, answered in order.
    let mut c = Conn::open(f.addr);
    let mut burst = Vec::new();
    for (method, path) in [
        ("GET", "/assets/style.css"),
        ("GET", "/fixed.php?n=2"),
        ("HEAD", "/fixed.php?n=3"),
        ("GET", "/no-such-page.html"),
        ("GET", "/fixed.php?n=4"),
    ] {
        burst.extend(http::build_request(method, path, &[], b"", false));
    }
    c.send(&burst);
    let css = c.read_response(false);
    assert_eq!(
        (css.status, css.header("x-khttpd-route")),
        (200, Some("static"))
    );
    let two = c.read_response(false);
    assert_eq!((two.status, two.text().as_str()), (200, "fixed page 2"));
    let three = c.read_response(true);
    assert_eq!((three.status, three.body.len()), (200, 0));
    assert_eq!(c.read_response(false).status, 404);
    assert_eq!(c.read_response(false).text(), "fixed page 4");
    // The connection is still good, and Apache saw each dynamic request once.
    assert_eq!(
        c.request("GET", "/fixed.php?n=5", &[], b"").text(),
        "fixed page 5"
    );
    for n in 2..=5 {
        let seen = khttpd_tests::wait_until(Duration::from_secs(5), || {
            (apache_saw(&a, &format!("/fixed.php?n={n}")) == 1).then_some(())
        });
        assert!(seen.is_some(), "Apache saw /fixed.php?n={n} once");
    }
    // Apache saw the first request and the verification probe, nothing since.
    assert!(
        apache_saw(&a, "/assets/style.css") <= 2,
        "{}",
        a.access_log()
    );
}

#[test]
fn many_requests_share_few_backend_connections() {
    let doc = Docroot::new();
    let conns_log = tempfile::NamedTempFile::new().unwrap();
    std::fs::set_permissions(conns_log.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let extra = format!(
        "LogFormat \"%{{remote}}p\" connport\nCustomLog {} connport\n",
        conns_log.path().display()
    );
    let a = apache(
        &doc,
        ApacheOptions {
            extra,
            ..ApacheOptions::default()
        },
    );
    let f = front(Proto::H1, &doc, a.addr, &["--threads", "1"]);
    let mut clients: Vec<Conn> = (0..4).map(|_| Conn::open(f.addr)).collect();
    for i in 0..60 {
        let c = &mut clients[i % 4];
        assert_eq!(c.request("GET", "/env.php", &[], b"").status, 200);
    }
    khttpd_tests::wait_until(Duration::from_secs(5), || {
        (std::fs::read_to_string(conns_log.path())
            .unwrap()
            .lines()
            .count()
            >= 60)
            .then_some(())
    });
    let ports: std::collections::HashSet<String> = std::fs::read_to_string(conns_log.path())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        ports.len() <= 4,
        "60 requests used {} backend connections",
        ports.len()
    );
}

/// Issue 14: the relay (plain GETs) and hyper's client (POSTs) take their backend connections
/// from one pool. With 4 slots, 4 slow GETs at once and then 4 slow POSTs at once, three times,
/// use the same 4 connections (with a pool each they used 8), and the front never keeps more idle
/// connections than slots.
#[test]
fn relay_and_hyper_client_share_one_pool() {
    let doc = Docroot::new();
    let conns_log = tempfile::NamedTempFile::new().unwrap();
    std::fs::set_permissions(conns_log.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let extra = format!(
        "LogFormat \"%{{remote}}p\" connport\nCustomLog {} connport\nStartServers 8\nMinSpareServers 8\nMaxSpareServers 16\n",
        conns_log.path().display()
    );
    let a = apache(
        &doc,
        ApacheOptions {
            extra,
            ..ApacheOptions::default()
        },
    );
    let f = front(
        Proto::H1,
        &doc,
        a.addr,
        &["--threads", "1", "--backend-max-conns", "4"],
    );
    let addr = f.addr;
    for round in 0..3 {
        for method in ["GET", "POST"] {
            let clients: Vec<_> = (0..4)
                .map(|_| {
                    std::thread::spawn(move || {
                        let body: &[u8] = if method == "POST" { b"x=1" } else { b"" };
                        http::request(addr, method, "/slow.php", &[], body)
                    })
                })
                .collect();
            for c in clients {
                let r = c.join().unwrap();
                assert_eq!((r.status, r.text()), (200, "slow".to_owned()), "{method}");
            }
            // The last connections are parked a moment after their answers went out.
            std::thread::sleep(Duration::from_millis(300));
            let idle = f.status()["backends"][0]["idle_pooled"].as_u64().unwrap();
            assert!(
                idle <= 4,
                "round {round}, {method}: {idle} idle connections"
            );
        }
    }
    khttpd_tests::wait_until(Duration::from_secs(5), || {
        let lines = std::fs::read_to_string(conns_log.path()).unwrap();
        (lines.lines().count() >= 24).then_some(())
    })
    .expect("Apache logged the 24 requests");
    let ports: std::collections::HashSet<String> = std::fs::read_to_string(conns_log.path())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        ports.len() <= 4,
        "24 requests through the relay and hyper used {} backend connections",
        ports.len()
    );
}

/// Issue 14: the relay (GET) and hyper's client (POST) apply one set of limits to a backend's
/// answer head (khttpd_bridge::h1): up to 100 fields and 64 KiB pass both ways, more is a 502
/// both ways.
#[test]
fn both_ways_to_the_backend_take_the_same_heads() {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(Proto::H1, &doc, a.addr, &[]);
    for (query, want) in [
        ("n=80", 200),
        ("n=120", 502),
        ("size=60000", 200),
        ("size=70000", 502),
    ] {
        let path = format!("/fields.php?{query}");
        let relayed = http::get(f.addr, &path);
        let hyper = http::request(f.addr, "POST", &path, &[], b"x=1");
        assert_eq!(
            (relayed.status, hyper.status),
            (want, want),
            "{query}: relay {} / hyper {}",
            relayed.raw_head.len(),
            hyper.raw_head.len()
        );
    }
}

/// Issue 14: a file deleted after its routing verdict was cached gets what a missing file gets,
/// Apache's own answer, never its old bytes nor a 404 the front made up (the verification gate
/// sees the file gone; a deletion after the gate is routed afresh by `FrontError::Stale`).
#[test]
fn a_file_deleted_after_routing_is_apaches_again() {
    let doc = Docroot::new();
    std::fs::write(doc.root().join("files/gone.txt"), "x".repeat(8192)).unwrap();
    let a = apache(&doc, ApacheOptions::default());
    // Larger than --cache-max-file: read from disk at each request; the verdict is kept 60 s.
    let f = front(
        Proto::H1,
        &doc,
        a.addr,
        &[
            "--route-header",
            "--cache-max-file",
            "4K",
            "--cache-revalidate",
            "60",
        ],
    );
    let served = http::until_front_serves(f.addr, "/files/gone.txt", Duration::from_secs(5))
        .expect("verified");
    assert_eq!(served.body.len(), 8192);
    std::fs::remove_file(doc.root().join("files/gone.txt")).unwrap();
    let r = http::get(f.addr, "/files/gone.txt");
    assert_eq!(
        (r.status, r.header("x-khttpd-route")),
        (404, Some("backend")),
        "{}",
        r.raw_head
    );
    assert!(a
        .wait_for_log_line(" /files/gone.txt HTTP/", Duration::from_secs(5))
        .is_some());
}

fn forwarded_headers_replace_a_spoofed_client_value(p: Proto) {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(p, &doc, a.addr, &[]);
    let r = f.request(
        "GET",
        "/env.php?a=%2F%20b&c",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Host", "evil.example"),
            ("Host", "site.example"),
        ],
        b"",
    );
    let v = json(&r);
    assert_eq!(v["remote_addr"], "127.0.0.1", "{v}");
    assert!(
        !v.to_string().contains("6.6.6.6"),
        "spoofed address reached the backend: {v}"
    );
    assert!(!v.to_string().contains("evil.example"), "{v}");
    assert_eq!(v["host"], "site.example", "Host is kept");
    assert_eq!(
        v["uri"], "/env.php?a=%2F%20b&c",
        "path and query forwarded byte for byte"
    );
    assert_eq!(v["xfp"], if p.is_h1() { "http" } else { "https" });
    assert!(
        v["via"].as_str().unwrap_or("").contains("khttpd-front"),
        "{v}"
    );
    // From a trusted proxy the chain is kept and extended.
    let t = front(p, &doc, a.addr, &["--trusted-proxy", "127.0.0.0/8"]);
    let v = json(&t.request(
        "GET",
        "/env.php",
        &[("X-Forwarded-For", "203.0.113.9")],
        b"",
    ));
    assert_eq!(v["remote_addr"], "203.0.113.9", "{v}");
}

#[test]
fn proxy_protocol_v2_shows_the_real_client() {
    let doc = Docroot::new();
    let a = apache(
        &doc,
        ApacheOptions {
            proxy_protocol: true,
            ..ApacheOptions::default()
        },
    );
    let f = front(
        Proto::H1,
        &doc,
        a.addr,
        &["--proxy-protocol", "v2", "--bind", "0.0.0.0"],
    );
    let port = f.addr.port();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut s: TcpStream = s.into();
    s.write_all(b"GET /env.php HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let (r, _) = http::parse_one(&raw).unwrap();
    assert_eq!(json(&r)["remote_addr"], "127.0.0.2", "{}", r.text());
}

fn apache_down_gives_502_fast_static_still_served_and_recovery(p: Proto) {
    let doc = Docroot::new();
    let mut a = apache(&doc, ApacheOptions::default());
    let f = front(
        p,
        &doc,
        a.addr,
        &["--backend-cooldown", "0.5", "--route-header"],
    );
    assert_eq!(f.get("/env.php").status, 200);
    // Verified while Apache was up: the verdict outlives Apache's absence until it expires.
    assert!(f
        .until_front_serves("/assets/style.css", Duration::from_secs(5))
        .is_some());
    a.stop();
    let started = Instant::now();
    let r = f.get("/env.php");
    assert_eq!(r.status, 502);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "502 took {:?}",
        started.elapsed()
    );
    assert!(!r.text().contains("<?php"), "never the source");
    let css = f.get("/assets/style.css");
    assert_eq!(
        (css.status, css.header("x-khttpd-route")),
        (200, Some("static")),
        "verified static files still served"
    );
    // Never verified: nothing says what Apache would make of it, so it fails closed.
    let js = f.get("/assets/app.js");
    assert_eq!(
        (js.status, js.header("x-khttpd-route")),
        (502, Some("error"))
    );
    a.start_again();
    let back = khttpd_tests::wait_until(Duration::from_secs(5), || {
        (f.get("/env.php").status == 200).then_some(())
    });
    assert!(back.is_some(), "the front recovered after Apache restarted");
    let (_, out, _) = f.ctl(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["backends"][0]["refused"].as_u64().unwrap() >= 1, "{v}");
}

fn stalled_backend_gives_504(p: Proto) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and never answers: a backend Apache cannot imitate on demand.
    let _hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(4) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(10));
    });
    let doc = Docroot::new();
    let f = front(p, &doc, addr, &["--backend-timeout", "1"]);
    let started = Instant::now();
    let r = f.get("/env.php");
    assert_eq!(r.status, 504);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(!r.text().contains("<?php"));
}

#[test]
fn websocket_echo_through_the_front() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        let mut w = s;
        w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = r.read(&mut buf).unwrap_or(0);
            if n == 0 || w.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let doc = Docroot::new();
    let f = front(Proto::H1, &doc, addr, &[]);
    let mut s = TcpStream::connect(f.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /ws/chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    for msg in [
        &b"\x81\x05hello"[..],
        b"\x82\x03\x00\x01\x02",
        b"line\nwith\nLF\n\n",
    ] {
        s.write_all(msg).unwrap();
        let mut echo = vec![0u8; msg.len()];
        s.read_exact(&mut echo).unwrap();
        assert_eq!(echo, msg);
    }
}

#[test]
fn smuggling_never_reaches_apache() {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(Proto::H1, &doc, a.addr, &[]);
    assert_smuggling_refused(f.addr);
    // A well-formed request after them reaches Apache, and none of the others did.
    assert_eq!(http::get(f.addr, "/env.php").status, 200);
    assert!(a
        .wait_for_log_line(" /env.php HTTP/", Duration::from_secs(5))
        .is_some());
    assert_eq!(apache_saw(&a, "/x.php"), 0, "{}", a.access_log());
    assert_eq!(apache_saw(&a, "/alphabet.txt"), 0, "{}", a.access_log());
}

#[test]
fn stalled_request_body_is_cut_at_the_body_timeout() {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(Proto::H1, &doc, a.addr, &["--body-timeout", "1"]);
    // Issue 16: an `Upgrade:` field on the request does not switch the timeout off.
    for upgrade in ["", "Connection: Upgrade\r\nUpgrade: websocket\r\n"] {
        let mut s = TcpStream::connect(f.addr).unwrap();
        s.write_all(
            format!(
                "POST /upload.php HTTP/1.1\r\nHost: a\r\n{upgrade}Content-Length: 100000\r\n\r\nabc"
            )
            .as_bytes(),
        )
        .unwrap();
        let started = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(4),
            "a stalled upload ({upgrade:?}) held the connection for {waited:?}"
        );
        assert!(
            waited >= Duration::from_millis(800),
            "cut before the body timeout: {waited:?}"
        );
    }
}

/// Issues 15 and 16 with a real Apache behind the front: a FIFO is answered by the front and never
/// handed to Apache (whose worker would block in open() forever); a path of 7000 segments gets 414
/// before the disk is touched; `.phtml` with `--sloppy-mime` and an empty `--dynamic` stays with
/// Apache, and its source never leaves.
fn fifos_deep_paths_and_executable_files_never_become_front_answers(p: Proto) {
    let doc = Docroot::new();
    let fifo = doc.root().join("pipe.html");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o644)).unwrap();
    let phtml = doc.root().join("legacy.phtml");
    std::fs::write(&phtml, "<?php $db_password = 'hunter2'; echo 'ran';").unwrap();
    std::fs::set_permissions(&phtml, std::fs::Permissions::from_mode(0o644)).unwrap();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(
        p,
        &doc,
        a.addr,
        &["--route-header", "--sloppy-mime", "--dynamic", ""],
    );

    let r = f.get("/pipe.html");
    assert_eq!((r.status, r.header("x-khttpd-route")), (403, Some("error")));
    let deep = "/a".repeat(7000);
    let r = f.get(&deep);
    assert_eq!(r.status, 414, "{}", r.raw_head);
    let r = f.get("/legacy.phtml");
    assert!(
        !r.text().contains("hunter2"),
        "PHP source served: {}",
        r.text()
    );
    assert_eq!(
        (r.text().as_str(), r.header("x-khttpd-route")),
        ("ran", Some("backend"))
    );
    // Names the shared Apache config does not run are refused there, never shown.
    std::fs::copy(&phtml, doc.root().join("old.php5")).unwrap();
    let r = f.get("/old.php5");
    assert_eq!(
        (r.status, r.header("x-khttpd-route")),
        (403, Some("backend"))
    );
    let r = f.get("/demo1.php");
    assert!(!r.text().contains("<?php"), "{}", r.text());
    assert_eq!(r.header("x-khttpd-route"), Some("backend"));
    // Apache saw the PHP requests, and neither the FIFO nor the deep path.
    assert!(a
        .wait_for_log_line(" /legacy.phtml HTTP/", Duration::from_secs(5))
        .is_some());
    assert_eq!(apache_saw(&a, "/pipe.html"), 0, "{}", a.access_log());
    assert!(!a.access_log().contains("/a/a/a/a"), "{}", a.access_log());
}

/// Issue 16: slow uploads are read by the front, not by Apache. 200 clients that send a POST head
/// and one byte of the body, then nothing, hold no backend slot: every other dynamic request still
/// gets its answer at once (before, each held one of the slots and the rest got 503).
#[test]
fn slow_uploads_hold_no_backend_slot() {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(
        Proto::H1,
        &doc,
        a.addr,
        &[
            "--backend-max-conns",
            "4",
            "--backend-queue-timeout",
            "1",
            "--body-timeout",
            "30",
        ],
    );
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(f.addr).unwrap();
        s.write_all(b"POST /upload.php HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nx")
            .unwrap();
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for i in 0..20 {
        let r = http::get(f.addr, &format!("/fixed.php?n={i}"));
        assert_eq!((r.status, r.text()), (200, format!("fixed page {i}")));
        let r = http::request(f.addr, "POST", "/upload.php", &[], b"0123456789");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().starts_with("10 "), "{}", r.text());
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // None of the slow uploads reached Apache (its lines come after the answers: wait for them).
    khttpd_tests::wait_until(Duration::from_secs(5), || {
        (a.log_lines_matching("POST /upload.php").len() >= 20).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        a.log_lines_matching("POST /upload.php").len(),
        20,
        "{}",
        a.access_log()
    );
    drop(slow);
}

/// Issue 16: slow readers hold no backend slot either. 200 clients with a 4 KiB receive buffer ask
/// for a 4 MiB PHP answer (more than the kernel's socket buffers take) (half relayed from the fast path, half through the full pipeline) and
/// never read it. With 4 backend slots, Apache still finishes all 200 answers (it logs a request
/// once its answer is written), every other dynamic request gets its answer at once, and the
/// answers wait in the front's temporary files, which are gone once the clients leave. Without
/// buffering (`--proxy-buffering off`) the first 4 clients hold the 4 slots and the rest get 503.
#[test]
fn slow_readers_hold_no_backend_slot() {
    let doc = Docroot::new();
    // Enough prefork children from the start: prefork adds at most a few per second, and a request
    // waiting for one would wait for Apache, not for the front.
    let a = apache(
        &doc,
        ApacheOptions {
            extra: "StartServers 12\nMinSpareServers 12\nMaxSpareServers 16\n".into(),
            ..ApacheOptions::default()
        },
    );
    let temp = tempfile::tempdir().unwrap();
    let f = front(
        Proto::H1,
        &doc,
        a.addr,
        &[
            "--backend-max-conns",
            "4",
            // 800 MiB pass through 4 slots: a queue, but one that moves.
            "--backend-queue-timeout",
            "30",
            "--temp-dir",
            temp.path().to_str().unwrap(),
        ],
    );
    let mut slow = Vec::new();
    for i in 0..200 {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&f.addr.into()).unwrap();
        let mut s: TcpStream = sock.into();
        // A hop-by-hop TE field sends the request through hyper instead of the relay.
        let te = if i % 2 == 0 { "" } else { "TE: trailers\r\n" };
        s.write_all(format!("GET /big.php?c={i} HTTP/1.1\r\nHost: a\r\n{te}\r\n").as_bytes())
            .unwrap();
        slow.push(s);
    }
    // Apache wrote every one of the 200 answers while no client read a byte.
    let done = khttpd_tests::wait_until(Duration::from_secs(60), || {
        (a.log_lines_matching("GET /big.php?c=").len() >= 200).then_some(())
    });
    assert!(
        done.is_some(),
        "Apache finished {} of 200 answers; front status: {}\n{}",
        a.log_lines_matching("GET /big.php?c=").len(),
        f.status()["answers"],
        f.stderr()
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let started = Instant::now();
    for i in 0..20 {
        let r = http::get(f.addr, &format!("/fixed.php?n={i}"));
        assert_eq!((r.status, r.text()), (200, format!("fixed page {i}")));
        let r = http::request(
            f.addr,
            "GET",
            &format!("/fixed.php?n={i}"),
            &[("TE", "trailers")],
            b"",
        );
        assert_eq!((r.status, r.text()), (200, format!("fixed page {i}")));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let answers = f.status()["answers"].clone();
    assert!(answers["buffered"].as_u64().unwrap() >= 240, "{answers}");
    assert!(answers["to_disk"].as_u64().unwrap() >= 150, "{answers}");
    assert!(answers["temp_files"].as_u64().unwrap() >= 150, "{answers}");
    assert!(
        answers["memory"].as_u64().unwrap() <= 200 * (200 << 10),
        "{answers}"
    );
    assert!(
        std::fs::read_dir(temp.path()).unwrap().next().is_none(),
        "temporary files are unlinked at once"
    );

    // A slow reader still gets every byte, in order.
    let mut first = slow.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 65536];
    let expected_body = 4 << 20;
    while answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .is_none_or(|p| answer.len() < p + 4 + expected_body)
    {
        let n = first.read(&mut buf).unwrap();
        assert!(n > 0, "answer cut at {} bytes", answer.len());
        answer.extend_from_slice(&buf[..n]);
    }
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..split])
    );
    let pattern = b"0123456789abcdef";
    assert!(
        answer[split..].chunks(16).all(|c| c == &pattern[..c.len()]),
        "body intact"
    );

    // The clients leave: their spools go with them.
    drop(slow);
    drop(first);
    let gone = khttpd_tests::wait_until(Duration::from_secs(20), || {
        let a = f.status()["answers"].clone();
        (a["temp_files"] == 0 && a["memory"] == 0 && a["temp_bytes"] == 0).then_some(())
    });
    assert!(gone.is_some(), "{}", f.status()["answers"]);
}

/// Issue 16: what must stream is not buffered: server-sent events and answers with
/// `X-Accel-Buffering: no` pass as they come (counted as `streamed`), the first part arrives while
/// PHP is still sleeping, and the `X-Accel-Buffering` field stays between Apache and the front.
#[test]
fn event_streams_and_unbuffered_answers_pass_as_they_come() {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(Proto::H1, &doc, a.addr, &[]);
    for (path, first) in [("/events.php", "data: one"), ("/unbuffered.php", "one ")] {
        for te in ["", "TE: trailers\r\n"] {
            let mut s = TcpStream::connect(f.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let sent = Instant::now();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: a\r\n{te}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let mut first_at = None;
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if first_at.is_none() && String::from_utf8_lossy(&got).contains(first) {
                    first_at = Some(sent.elapsed());
                }
            }
            let text = String::from_utf8_lossy(&got).into_owned();
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(
                !text.to_ascii_lowercase().contains("x-accel-buffering"),
                "{text}"
            );
            let first_at = first_at.unwrap_or_else(|| panic!("{path}: {text}"));
            assert!(
                first_at < Duration::from_millis(1200),
                "{path} {te:?}: first part after {first_at:?}"
            );
            assert!(
                sent.elapsed() >= Duration::from_millis(1500),
                "{path}: {text}"
            );
            assert!(text.contains("two"), "{text}");
        }
    }
    let answers = f.status()["answers"].clone();
    assert_eq!(answers["streamed"], 4, "{answers}");
}

/// Issue 16: text answers Apache sent uncompressed reach gzip clients compressed (nginx's
/// `gzip_proxied any`), through the relay and through hyper, chunked or with a length from PHP:
/// the same bytes once decompressed, `Vary: Accept-Encoding`, a weakened ETag. Left alone: clients
/// without gzip, HEAD, small bodies, `no-transform`, server-sent events, already encoded answers.
fn backend_text_is_gzipped_on_the_way(p: Proto) {
    use std::io::Read;
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(p, &doc, a.addr, &[]);
    let gunzip = |b: &[u8]| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    for path in ["/article.php", "/article_cl.php"] {
        for te in [None, Some(("TE", "trailers"))] {
            let mut plain_fields = vec![];
            let mut gz_fields = vec![("Accept-Encoding", "gzip, deflate, br")];
            if let Some(t) = te {
                plain_fields.push(t);
                gz_fields.push(t);
            }
            let plain = f.request("GET", path, &plain_fields, b"");
            let gz = f.request("GET", path, &gz_fields, b"");
            assert_eq!((plain.status, gz.status), (200, 200), "{path}");
            assert_eq!(plain.header("content-encoding"), None, "{path} {te:?}");
            assert_eq!(
                gz.header("content-encoding"),
                Some("gzip"),
                "{path} {te:?}: {}",
                gz.raw_head
            );
            assert!(
                gz.headers_all("vary")
                    .iter()
                    .any(|v| v.contains("Accept-Encoding")),
                "{}",
                gz.raw_head
            );
            assert!(gz.header("content-length").is_none(), "{}", gz.raw_head);
            let body = gunzip(&gz.body);
            assert_eq!(body, plain.body, "{path} {te:?}: decompressed differs");
            assert!(
                gz.body.len() * 4 < plain.body.len(),
                "{path}: {} of {}",
                gz.body.len(),
                plain.body.len()
            );
            if path == "/article.php" {
                assert_eq!(plain.header("etag"), Some("\"v1\""));
                assert_eq!(gz.header("etag"), Some("W/\"v1\""), "{}", gz.raw_head);
            }
        }
    }
    let gz = [("Accept-Encoding", "gzip")];
    for path in ["/tiny.php", "/notransform.php", "/events.php"] {
        let r = f.request("GET", path, &gz, b"");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-encoding"), None, "{path}: {}", r.raw_head);
    }
    let r = f.request("HEAD", "/article.php", &gz, b"");
    assert_eq!(r.header("content-encoding"), None, "{}", r.raw_head);
    if !p.is_h1() {
        return;
    }
    // The connection stays usable after a compressed answer (the chunked framing is right).
    let mut c = Conn::open(f.addr);
    for _ in 0..3 {
        let r = c.request("GET", "/article.php", &gz, b"");
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert!(gunzip(&r.body).ends_with(b"<p>Paragraph 999 of a page PHP made.</p>\n"));
    }
}

/// Issue 16: a body over `--max-body-size` gets 413, announced or chunked, and never reaches Apache.
fn bodies_over_the_limit_get_413(p: Proto) {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(p, &doc, a.addr, &["--max-body-size", "1K"]);
    let big = vec![b'x'; 2048];
    let r = f.request("POST", "/upload.php", &[], &big);
    assert_eq!(r.status, 413);
    if p.is_h1() {
        // HTTP/2 has no chunked coding: its bodies without a length are DATA frames alone.
        let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
        chunked.extend_from_slice(&big);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        let r = f.request(
            "POST",
            "/upload.php",
            &[("Transfer-Encoding", "chunked")],
            &chunked,
        );
        assert_eq!(r.status, 413);
    }
    let r = f.request("POST", "/upload.php", &[], b"small");
    assert_eq!(
        (r.status, r.text().starts_with("5 ")),
        (200, true),
        "{}",
        r.text()
    );
    // Apache writes its line after the answer: wait for it, then count.
    khttpd_tests::wait_until(Duration::from_secs(5), || {
        (!a.log_lines_matching("POST /upload.php").is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        a.log_lines_matching("POST /upload.php").len(),
        1,
        "{}",
        a.access_log()
    );
}

/// Issue 17: `--error-page CODE=PATH` replaces the pages of errors the front answers itself (a
/// missing file without a backend, a backend that is down, on the relay and through hyper), never
/// the backend's own error pages; a page that is missing or not an error code refuses the start.
fn custom_error_pages_for_the_fronts_own_errors(p: Proto) {
    let doc = Docroot::new();
    let root = doc.root();
    std::fs::create_dir_all(root.join("errors")).unwrap();
    let mine_404 = "<!doctype html><title>Lost</title><p>Our own 404 page.</p>\n";
    let mine_502 = "<!doctype html><title>Back soon</title><p>Our own 502 page.</p>\n";
    std::fs::write(root.join("errors/404.html"), mine_404).unwrap();
    std::fs::write(root.join("errors/502.html"), mine_502).unwrap();
    let pages = "404=/errors/404.html,502=/errors/502.html";

    // Without a backend, the front's own 404.
    let alone = Front::start_over(
        p,
        &["--root", root.to_str().unwrap(), "--error-page", pages],
    );
    let r = alone.get("/no/such/page.html");
    assert_eq!((r.status, r.text()), (404, mine_404.to_owned()));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = alone.request("HEAD", "/no/such/page.html", &[], b"");
    assert_eq!(
        r.header("content-length"),
        Some(mine_404.len().to_string().as_str())
    );
    drop(alone);

    // With Apache: its own 404 passes as it is; once it is down, the front's 502 is ours.
    let a = apache(&doc, ApacheOptions::default());
    let f = front(p, &doc, a.addr, &["--error-page", pages]);
    let r = f.get("/no/such/page.html");
    assert_eq!(r.status, 404);
    assert_ne!(r.text(), mine_404, "Apache's own 404 is Apache's");
    drop(a);
    let r = f.get("/fixed.php");
    assert_eq!((r.status, r.text()), (502, mine_502.to_owned()), "relay");
    let r = f.request("POST", "/fixed.php", &[], b"x=1");
    assert_eq!((r.status, r.text()), (502, mine_502.to_owned()), "hyper");

    for bad in [
        "404=/errors/none.html",
        "200=/errors/404.html",
        "404=../etc/passwd",
        "404",
    ] {
        match Front::try_start(&["--root", root.to_str().unwrap(), "--error-page", bad]) {
            Ok(_) => panic!("--error-page {bad} was accepted"),
            Err((code, err)) => assert!(
                code == Some(64) && err.contains("--error-page"),
                "{bad}: {err}"
            ),
        }
    }
}

/// `socat UNIX-LISTEN:PATH,fork TCP:APACHE`: Apache listens only on TCP, so this is how it stands
/// behind a Unix socket; each socket connection is one TCP connection to Apache.
struct UnixBridge(std::process::Child);

impl UnixBridge {
    fn start(path: &std::path::Path, to: SocketAddr) -> UnixBridge {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("socat")
            // Its own group, so the forked children (one per connection) go with it.
            .process_group(0)
            .arg(format!("UNIX-LISTEN:{},fork,mode=600", path.display()))
            .arg(format!("TCP:{to}"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat (scripts/deps installs it)");
        khttpd_tests::wait_until(Duration::from_secs(5), || path.exists().then_some(()))
            .expect("socat made its socket");
        UnixBridge(child)
    }
}

impl Drop for UnixBridge {
    fn drop(&mut self) {
        let group = -i32::try_from(self.0.id()).expect("pid fits in i32");
        khttpd_tests::process::send_signal(group, libc::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Issue 17: `--backend unix:/PATH` end to end, with Apache + mod_php behind the socket: PHP, a
/// POST, static files verified through the socket and then served by the front, kept-alive
/// backend connections, the socket named in the log and in `status`, a 502 (and static files
/// still served) when the socket is gone.
fn unix_socket_backend_end_to_end(p: Proto) {
    let doc = Docroot::new();
    let conns_log = tempfile::NamedTempFile::new().unwrap();
    std::fs::set_permissions(conns_log.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let a = apache(
        &doc,
        ApacheOptions {
            extra: format!(
                "LogFormat \"%{{remote}}p %U\" connport\nCustomLog {} connport\n",
                conns_log.path().display()
            ),
            ..ApacheOptions::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("apache.sock");
    let bridge = UnixBridge::start(&sock, a.addr);
    let backend = format!("unix:{}", sock.display());
    let log = dir.path().join("access.log");
    let root = doc.root();
    let f = Front::start_over(
        p,
        &[
            "--root",
            root.to_str().unwrap(),
            "--threads",
            "1",
            "--backend",
            &backend,
            "--route-header",
            "--access-log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    );
    let env = json(&f.get("/env.php?via=unix"));
    assert_eq!(env["method"], "GET");
    assert_eq!(env["uri"], "/env.php?via=unix");
    assert_eq!(env["remote_addr"], "127.0.0.1", "the client, as over TCP");
    let body = vec![b'u'; 300_000];
    let up = f.request("POST", "/upload.php", &[], &body);
    assert_eq!(up.status, 200);
    assert!(up.text().starts_with("300000 "), "{}", up.text());
    // Verification asks Apache through the socket too.
    let css = f
        .until_front_serves("/assets/style.css", Duration::from_secs(5))
        .expect("a static file verified through the Unix socket");
    assert_eq!(css.status, 200);
    // Kept alive: 30 PHP pages one after the other take one or two socket connections.
    for i in 0..30 {
        let r = f.get(&format!("/env.php?n={i}"));
        assert_eq!(r.status, 200);
    }
    let ports = khttpd_tests::wait_until(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(conns_log.path()).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.ends_with(" /env.php")).collect();
        (lines.len() >= 31).then(|| {
            lines
                .iter()
                .map(|l| l.split(' ').next().unwrap().to_owned())
                .collect::<std::collections::HashSet<_>>()
                .len()
        })
    })
    .expect("Apache logged the 31 PHP requests");
    assert!(ports <= 2, "31 requests took {ports} backend connections");
    let logged = khttpd_tests::wait_until(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .find(|l| l.contains("via=unix"))
            .map(str::to_owned)
    })
    .expect("the PHP request logged");
    let v: serde_json::Value = serde_json::from_str(&logged).unwrap();
    assert_eq!(v["upstream"].as_str(), Some(backend.as_str()), "{logged}");
    let status = f.status();
    assert_eq!(
        status["backends"][0]["backend"].as_str(),
        Some(backend.as_str()),
        "{status}"
    );
    // The socket goes away: dynamic pages 502 at once, verified static files still served.
    drop(bridge);
    let _ = std::fs::remove_file(&sock);
    let started = Instant::now();
    let gone = f.get("/env.php?after=gone");
    assert_eq!(gone.status, 502, "{}", gone.text());
    assert!(started.elapsed() < Duration::from_secs(3));
    let css = f.get("/assets/style.css");
    assert_eq!(
        (css.status, css.header("x-khttpd-route")),
        (200, Some("static"))
    );
}

/// Issue 16: buffering per backend (`--backend 'ADDR buffering=off'`, nginx's per-location
/// `proxy_buffering`): that backend's answers stream while buffering stays on for the others,
/// through the relay (GET) and hyper (POST) alike; `status` shows each backend's setting.
#[test]
fn buffering_can_be_switched_off_per_backend() {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let root = doc.root();
    for (setting, streams) in [("", false), (" buffering=off", true)] {
        let backend = format!("{}{setting}", a.addr);
        let f = Front::start(&[
            "--root",
            root.to_str().unwrap(),
            "--threads",
            "1",
            "--backend",
            &backend,
        ]);
        let answers = |f: &Front| f.status()["answers"].clone();
        let before = answers(&f);
        let get = http::get(f.addr, "/big.php");
        assert_eq!((get.status, get.body.len()), (200, 4 << 20));
        let post = http::request(f.addr, "POST", "/big.php", &[], b"x");
        assert_eq!((post.status, post.body.len()), (200, 4 << 20));
        let after = answers(&f);
        let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
        if streams {
            assert_eq!((delta("streamed"), delta("buffered")), (2, 0), "{after}");
        } else {
            assert_eq!((delta("streamed"), delta("buffered")), (0, 2), "{after}");
        }
        assert_eq!(f.status()["backends"][0]["buffering"], !streams);
    }
}

/// Issue 14: the relay (Apache's bytes passed on) and hyper's pipeline answer alike whatever shape
/// the backend's answer has: standard, unusual and unknown statuses (a reason that is not UTF-8,
/// none at all), 204 and 304 without a body, sized, chunked and empty bodies, GET and HEAD. Each
/// request is asked plainly (the relay) and with `TE: trailers` (hyper).
#[test]
fn backend_answers_of_every_shape_pass_alike_both_ways() {
    let doc = Docroot::new();
    let a = apache(&doc, ApacheOptions::default());
    let f = front(Proto::H1, &doc, a.addr, &["--threads", "1"]);
    let fields = |r: &http::Response| {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .filter(|(n, _)| !matches!(n.as_str(), "date" | "keep-alive" | "connection"))
            .collect();
        h.sort();
        h
    };
    // (status, reason as hex or none)
    let statuses: &[(u16, Option<&str>)] = &[
        (200, None),
        (201, None),
        (204, None),
        (299, Some("6f6464")),
        (304, None),
        (404, None),
        (418, None),
        (499, Some("636166e9")),
        (503, None),
    ];
    for &(status, reason) in statuses {
        for mode in ["sized", "chunked", "empty"] {
            for method in ["GET", "HEAD"] {
                let mut path = format!("/shape.php?s={status}&m={mode}");
                if let Some(r) = reason {
                    path.push_str(&format!("&r={r}"));
                }
                let relayed = http::request(f.addr, method, &path, &[], b"");
                let full = http::request(f.addr, method, &path, &[("TE", "trailers")], b"");
                let case = format!("{method} {path}");
                // Apache's own status for it (it turns codes it does not know into 500).
                let direct = http::request(a.addr, method, &path, &[], b"");
                assert_eq!(relayed.status, direct.status, "{case}");
                assert_eq!(relayed.status, full.status, "{case}");
                assert_eq!(fields(&relayed), fields(&full), "{case}");
                assert_eq!(relayed.body, full.body, "{case}");
                if method == "GET"
                    && direct.status == status
                    && ![204, 304].contains(&status)
                    && mode != "empty"
                {
                    assert_eq!(relayed.body.len(), format!("shape {status} ").len() * 300);
                }
            }
        }
    }
    // The connection carried on after every shape: one more page on a kept-alive connection.
    let mut c = Conn::open(f.addr);
    for _ in 0..3 {
        assert_eq!(c.request("GET", "/shape.php?s=204", &[], b"").status, 204);
        assert_eq!(c.request("GET", "/tiny.php", &[], b"").text(), "tiny");
    }
}

/// Issue 14: an error the front makes about its backend is decided once (`ErrorAnswer`) and
/// encoded twice: as raw bytes by the relay (a plain GET or HEAD, which the fast path relays, as
/// `relayed_answers_match_the_full_pipeline` shows) and as a `Response` by hyper (the same
/// request with `TE: trailers`). Both must carry the same status, fields and page, the front's
/// own and the operator's (`--error-page`), for a backend that refuses (502) and one that never
/// answers (504).
#[test]
fn backend_error_pages_are_alike_both_ways() {
    let fields = |r: &http::Response| {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .filter(|(n, _)| !matches!(n.as_str(), "date" | "keep-alive"))
            .collect();
        h.sort();
        h
    };
    // Nothing listens on a port just given back: every connection is refused.
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled = silent.local_addr().unwrap();
    let _hold = std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(16).collect();
        std::thread::sleep(Duration::from_secs(20));
        drop(held);
    });
    let doc = Docroot::new();
    std::fs::write(doc.root().join("oops.html"), "<p>our own words</p>\n").unwrap();
    for (backend, status) in [(refused, 502), (stalled, 504)] {
        for custom in [false, true] {
            let mut extra = vec!["--threads", "1", "--backend-timeout", "1", "--route-header"];
            let spec = format!("{status}=/oops.html");
            if custom {
                extra.extend_from_slice(&["--error-page", &spec]);
            }
            let f = front(Proto::H1, &doc, backend, &extra);
            for method in ["GET", "HEAD"] {
                let case = format!("{method} to {backend} (custom page: {custom})");
                let relayed = http::request(f.addr, method, "/env.php", &[], b"");
                let full = http::request(f.addr, method, "/env.php", &[("TE", "trailers")], b"");
                assert_eq!((relayed.status, full.status), (status, status), "{case}");
                assert_eq!(fields(&relayed), fields(&full), "{case}");
                assert_eq!(relayed.body, full.body, "{case}");
                assert_eq!(relayed.header("x-khttpd-route"), Some("error"), "{case}");
                if method == "GET" {
                    assert_eq!(
                        relayed.text().contains("our own words"),
                        custom,
                        "{case}: {}",
                        relayed.text()
                    );
                }
            }
        }
    }
}
