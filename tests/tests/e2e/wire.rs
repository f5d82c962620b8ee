//! Raw bytes over real sockets to the real binary: keep-alive, pipelining, HTTP/1.0, malformed and
//! oversized heads, traversal attempts, the header timeout, and the command line's exit codes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use khttpd_tests::front::Front;
use khttpd_tests::http::{self, Conn};

use crate::site::{assert_no_leak, Site};

fn start(site: &Site, extra: &[&str]) -> Front {
    let mut args = vec!["--root", site.root_arg(), "--threads", "2"];
    args.extend_from_slice(extra);
    Front::start(&args)
}

#[test]
fn keep_alive_and_pipelining() {
    let site = Site::new();
    let f = start(&site, &[]);
    let mut c = Conn::open(f.addr);
    assert_eq!(c.request("GET", "/alphabet.txt", &[], b"").status, 200);
    assert_eq!(c.request("GET", "/style.css", &[], b"").status, 200);
    // Three requests in one write; three answers in order on the same connection.
    c.send(
        b"GET /alphabet.txt HTTP/1.1\r\nHost: a\r\n\r\n\
          HEAD /style.css HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /missing HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let a = c.read_response(false);
    let b = c.read_response(true);
    let m = c.read_response(false);
    assert_eq!(
        (a.status, a.body.as_slice()),
        (200, &b"abcdefghijklmnopqrstuvwxyz"[..])
    );
    assert_eq!((b.status, b.body.len()), (200, 0));
    assert_eq!(b.header("content-length"), Some("20"));
    assert_eq!(m.status, 404);
    assert!(
        !c.is_closed_within(Duration::from_millis(300)),
        "keep-alive connection stays open"
    );
}

#[test]
fn http10_is_answered_then_closed() {
    let site = Site::new();
    let f = start(&site, &[]);
    let raw = http::raw(f.addr, b"GET /alphabet.txt HTTP/1.0\r\n\r\n");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(text.ends_with("abcdefghijklmnopqrstuvwxyz"));
    let mut c = Conn::open(f.addr);
    c.send(b"GET /alphabet.txt HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response(false).status, 200);
    assert!(c.is_closed(), "HTTP/1.0 without keep-alive closes");
}

#[test]
fn malformed_heads_get_400_and_do_not_disturb_others() {
    let site = Site::new();
    let f = start(&site, &[]);
    let mut bystander = Conn::open(f.addr);
    assert_eq!(
        bystander.request("GET", "/alphabet.txt", &[], b"").status,
        200
    );
    let bad: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\nHost: a\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    ];
    for req in bad {
        let raw = http::raw(f.addr, req);
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "{:?} → {text}",
            String::from_utf8_lossy(req)
        );
    }
    assert_eq!(
        bystander.request("GET", "/style.css", &[], b"").status,
        200,
        "other connections unaffected"
    );
}

#[test]
fn host_header_is_required_once_on_http11() {
    let site = Site::new();
    let f = start(&site, &[]);
    let r = http::parse_one(&http::raw(
        f.addr,
        b"GET /alphabet.txt HTTP/1.1\r\nConnection: close\r\n\r\n",
    ))
    .unwrap()
    .0;
    assert_eq!(r.status, 400);
    let two = b"GET /alphabet.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n";
    assert_eq!(
        http::parse_one(&http::raw(f.addr, two)).unwrap().0.status,
        400
    );
    let ten = b"GET /alphabet.txt HTTP/1.0\r\n\r\n";
    assert_eq!(
        http::parse_one(&http::raw(f.addr, ten)).unwrap().0.status,
        200
    );
}

#[test]
fn oversized_head_gets_431() {
    let site = Site::new();
    let f = start(&site, &["--max-head-size", "8192"]);
    let mut req = b"GET /alphabet.txt HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..400 {
        req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(40)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let raw = http::raw(f.addr, &req);
    assert!(
        String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(http::get(f.addr, "/alphabet.txt").status, 200);
}

#[test]
fn traversal_list_never_escapes() {
    let site = Site::new();
    let f = start(&site, &[]);
    let targets: &[&str] = &[
        "../secret.txt",
        "/../secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..\\secret.txt",
        "/%5c..%5csecret.txt",
        "/sub/..%5c..%5csecret.txt",
        "/%252e%252e/secret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/.%00./secret.txt",
        "/index.html%00.txt",
        "/../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "-old/x",
        "/escape.txt",
        "/escape-dir/secret.txt",
        "//etc/passwd",
        "/./../secret.txt",
    ];
    for t in targets {
        let req = format!("GET {t} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let raw = http::raw(f.addr, req.as_bytes());
        let text = String::from_utf8_lossy(&raw);
        let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!((400..500).contains(&status), "{t} → {text}");
        assert_no_leak(t, &raw);
    }
}

#[test]
fn header_timeout_closes_slow_clients_while_others_are_served() {
    let site = Site::new();
    let f = start(&site, &["--header-timeout", "1"]);
    let mut slow = TcpStream::connect(f.addr).unwrap();
    slow.write_all(b"GET /alphabet.txt HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        http::get(f.addr, "/style.css").status,
        200,
        "others are served meanwhile"
    );
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "slow client closed after {waited:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // An idle connection that never sent a byte is closed too, after about two header timeouts:
    // one held in the kernel (TCP_DEFER_ACCEPT), one in the main daemon.
    let mut idle = TcpStream::connect(f.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let _ = idle.read_to_end(&mut Vec::new());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "idle closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn command_line_errors_exit_64_before_binding() {
    let (code, err) = Front::try_start(&["--root", "/nonexistent/khttpd-root"])
        .err()
        .unwrap();
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("document root"), "{err}");
    let (code, err) = Front::try_start(&["--no-such-flag"]).err().unwrap();
    assert_eq!(code, Some(64), "{err}");
    let (code, err) = Front::try_start(&["--listing", "maybe"]).err().unwrap();
    assert_eq!(code, Some(64), "{err}");
    let (code, _) = Front::try_start(&["--backend", "not-an-address"])
        .err()
        .unwrap();
    assert_eq!(code, Some(64));
}

/// Issue 17: `--check-config` / `-t` validates exactly as at start, prints what is in effect and
/// binds nothing; a bad value or file exits 64 with one line that says what is wrong.
#[test]
fn check_config_validates_prints_and_binds_nothing() {
    let site = Site::new();
    let port = khttpd_tests::free_port().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(khttpd_tests::binary("khttpd-front"))
            .args(args)
            .env_remove("KHTTPD_ROOT")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "-t",
        "--root",
        site.root_arg(),
        "--port",
        &port,
        "--maxconnect",
        "77",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("the configuration is valid"), "{out}");
    assert!(
        out.contains("maxconnect = 77") && out.contains(&format!("port = {port}")),
        "{out}"
    );
    assert!(out.contains("perm-forbid = \"7111\""), "{out}");
    assert!(
        TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err(),
        "nothing listens"
    );
    let (code, _, err) = run(&["--check-config", "--root", "/nonexistent/khttpd"]);
    assert_eq!(code, Some(64));
    assert_eq!(err.lines().count(), 1, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.toml");
    std::fs::write(&file, "maxconect = 5\n").unwrap();
    let (code, _, err) = run(&[
        "-t",
        "--root",
        site.root_arg(),
        "--config",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(64));
    assert!(err.contains("did you mean \"maxconnect\"?"), "{err}");
    let (code, _, err) = run(&[
        "-t",
        "--root",
        site.root_arg(),
        "--backend",
        "http://127.0.0.1:8080",
    ]);
    assert_eq!(code, Some(64));
    assert!(err.contains("drop the scheme"), "{err}");
}

#[test]
fn env_fallbacks_apply() {
    let site = Site::new();
    let f = Front::try_start_with_env(
        &["--threads", "1"],
        &[("KHTTPD_ROOT", site.root_arg()), ("KHTTPD_LISTING", "off")],
    )
    .unwrap_or_else(|(c, e)| panic!("{c:?} {e}"));
    assert_eq!(http::get(f.addr, "/alphabet.txt").status, 200);
    assert_eq!(http::get(f.addr, "/awkward/").status, 403);
}

#[test]
fn privileged_port_without_privilege_says_what_to_do() {
    // Only meaningful as root, where we can drop to `nobody` with util-linux's setpriv.
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !setpriv.exists() || not_root() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let site = Site::new();
    let bin = khttpd_tests::binary("khttpd-front");
    let out = std::process::Command::new(setpriv)
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&bin)
        .args([
            "--root",
            site.root_arg(),
            "--port",
            "80",
            "--bind",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Permission denied") && !err.contains("khttpd-front:") {
        eprintln!("skipped: nobody cannot run the binary here: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("setcap cap_net_bind_service"), "{err}");
    assert!(err.contains("--port 8080"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
}

fn not_root() -> bool {
    let out = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("running id -u");
    String::from_utf8_lossy(&out.stdout).trim() != "0"
}

/// Requests a backend could frame differently, each of which must be refused and its connection closed.
pub(crate) const SMUGGLING: &[(&str, &[u8])] = &[
    ("bare LF", b"GET /alphabet.txt HTTP/1.1\nHost: a\n\n"),
    ("bare LF in a header", b"POST /x.php HTTP/1.1\r\nHost: a\nContent-Length: 0\r\n\r\n"),
    ("CL and TE", b"POST /x.php HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE not chunked", b"POST /x.php HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("TE twice", b"POST /x.php HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE identity", b"POST /x.php HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"),
    ("CL twice", b"POST /x.php HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ("CL differing", b"POST /x.php HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("CL signed", b"POST /x.php HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc"),
    ("obs-fold", b"POST /x.php HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n"),
    ("chunk-size overflow", b"POST /x.php HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n"),
    ("no Host", b"POST /x.php HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
    ("two Hosts", b"POST /x.php HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n"),
];

/// Sends each smuggling attempt on its own connection: each is refused (400/501) and closed.
pub(crate) fn assert_smuggling_refused(addr: std::net::SocketAddr) {
    for (name, req) in SMUGGLING {
        let mut c = Conn::open(addr);
        c.send(req);
        let raw = c.read_to_end();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 501"),
            "{name}: {text}"
        );
    }
}

#[test]
fn smuggling_attempts_are_refused_and_closed() {
    let site = Site::new();
    let f = start(&site, &[]);
    assert_smuggling_refused(f.addr);
    assert_eq!(http::get(f.addr, "/alphabet.txt").status, 200);
}

#[test]
fn a_port_already_in_use_is_refused_not_shared() {
    // Another server's SO_REUSEPORT listener must not be joined silently.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    other
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    other.listen(8).unwrap();
    let port = other
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap()
        .port()
        .to_string();
    let site = Site::new();
    let (code, err) = Front::try_start(&["--root", site.root_arg(), "--port", &port])
        .err()
        .expect("refused");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen"), "{err}");
}
