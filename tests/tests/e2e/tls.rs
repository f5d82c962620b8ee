//! HTTPS and HTTP/2 (issue 18) with real clients: curl over HTTP/1.1 and HTTP/2, `openssl
//! s_client` for ALPN, SNI, protocol versions and resumption, nghttp2's `h2load` for concurrent
//! streams, and a real Apache + mod_php behind. Certificates are made per test with `openssl req`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use khttpd_tests::apache::{Apache, ApacheOptions};
use khttpd_tests::front::Front;
use khttpd_tests::proto::{certificate, curl_head};
use tempfile::TempDir;

/// A front with HTTPS on a port it picks; returns it with its TLS address.
fn front_tls(extra: &[&str]) -> (Front, SocketAddr) {
    let www = khttpd_tests::repo_root().join("www");
    let mut args = vec!["--tls-port", "0"];
    if !extra.contains(&"--root") {
        args.extend(["--root", www.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    let f = Front::start(&args);
    let addr = tls_addr(&f);
    (f, addr)
}

fn tls_addr(f: &Front) -> SocketAddr {
    f.tls_addr()
        .unwrap_or_else(|| panic!("no TLS listener: {}", f.stdout()))
}

/// One answer as curl saw it.
#[derive(Debug, PartialEq)]
struct Seen {
    version: String,
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Fields whose values must be the same whichever protocol carried the answer.
const COMPARED: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "content-range",
    "etag",
    "last-modified",
    "location",
    "vary",
    "cache-control",
];

impl Seen {
    fn comparable(&self) -> (u16, Vec<(String, String)>, &[u8]) {
        let fields = COMPARED
            .iter()
            .filter_map(|k| self.headers.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        (self.status, fields, &self.body)
    }
}

/// Runs curl once: `proto` is `--http1.1` or `--http2`; `url` https or http.
fn curl(proto: &str, ca: &Path, url: &str, extra: &[&str]) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", proto, "--cacert"])
        .arg(ca)
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_version}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, status, headers, _) = curl_head(&std::fs::read_to_string(&head).unwrap());
    let headers = headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    Seen {
        version: String::from_utf8_lossy(&out.stdout).into_owned(),
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// Every static behaviour gives the same answer over HTTP/2 and HTTP/1.1 on TLS as over plain
/// HTTP/1.1: files, compression, listings, redirects, 404, 304 and ranges, with HSTS on HTTPS only.
#[test]
fn static_answers_are_the_same_over_http2_https_and_http() {
    let dir = TempDir::new().unwrap();
    let (cert, key) = certificate(dir.path(), "site", &["localhost"]);
    let (f, tls) = front_tls(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--hsts",
        "31536000",
    ]);
    let etag = curl("--http1.1", &cert, &f.url("/assets/style.css"), &[])
        .headers
        .get("etag")
        .cloned()
        .unwrap();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("/", vec![]),
        ("/assets/style.css", vec![]),
        (
            "/assets/style.css",
            vec!["-H".into(), "Accept-Encoding: gzip".into()],
        ),
        (
            "/assets/style.css",
            vec!["-H".into(), format!("If-None-Match: {etag}")],
        ),
        (
            "/assets/style.css",
            vec!["-H".into(), "Range: bytes=10-99".into()],
        ),
        ("/files/", vec![]),
        ("/assets", vec![]),
        ("/no/such/file.html", vec![]),
        ("/index.php", vec![]),
    ];
    for (path, extra) in &cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let plain = curl("--http1.1", &cert, &f.url(path), &extra);
        let url = format!("https://127.0.0.1:{}{path}", tls.port());
        let h1 = curl("--http1.1", &cert, &url, &extra);
        let h2 = curl("--http2", &cert, &url, &extra);
        assert_eq!(h1.version, "1.1");
        assert_eq!(h2.version, "2", "ALPN chose HTTP/2");
        assert_eq!(
            plain.comparable(),
            h1.comparable(),
            "{path} {extra:?} over HTTPS/1.1"
        );
        assert_eq!(
            plain.comparable(),
            h2.comparable(),
            "{path} {extra:?} over HTTP/2"
        );
        for seen in [&h1, &h2] {
            assert_eq!(
                seen.headers
                    .get("strict-transport-security")
                    .map(String::as_str),
                Some("max-age=31536000")
            );
        }
        assert!(
            !plain.headers.contains_key("strict-transport-security"),
            "HSTS over plain HTTP"
        );
    }
}

/// The backend gets HTTP/1.1 with `X-Forwarded-Proto: https` whichever protocol the client spoke;
/// PHP pages and uploads work over HTTP/2.
#[test]
fn php_through_https_and_http2_sees_https() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("www");
    khttpd_tests::copy_readable(&khttpd_tests::repo_root().join("www"), &root);
    std::fs::write(
        root.join("env.php"),
        r#"<?php header('Content-Type: application/json'); echo json_encode([
            'proto' => $_SERVER['HTTP_X_FORWARDED_PROTO'] ?? null,
            'host' => $_SERVER['HTTP_HOST'] ?? null,
            'protocol' => $_SERVER['SERVER_PROTOCOL'] ?? null,
            'method' => $_SERVER['REQUEST_METHOD'],
            'body' => file_get_contents('php://input'),
        ]);"#,
    )
    .unwrap();
    std::fs::set_permissions(root.join("env.php"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let a = Apache::start_with(&root, ApacheOptions::default());
    let (cert, key) = certificate(dir.path(), "site", &["localhost"]);
    let backend = a.addr.to_string();
    let (_f, tls) = front_tls(&[
        "--root",
        root.to_str().unwrap(),
        "--backend",
        &backend,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let url = format!("https://localhost:{}/env.php", tls.port());
    let resolve = format!("localhost:{}:127.0.0.1", tls.port());
    for proto in ["--http1.1", "--http2"] {
        let seen = curl(proto, &cert, &url, &["--resolve", &resolve]);
        assert_eq!(
            seen.status,
            200,
            "{proto}: {}",
            String::from_utf8_lossy(&seen.body)
        );
        let v: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(v["proto"], "https", "{v}");
        assert_eq!(v["host"], format!("localhost:{}", tls.port()), "{v}");
        assert_eq!(v["protocol"], "HTTP/1.1", "{v}");
        let posted = curl(
            proto,
            &cert,
            &url,
            &["--resolve", &resolve, "--data-binary", "a=1&b=2"],
        );
        let v: serde_json::Value = serde_json::from_slice(&posted.body).unwrap();
        assert_eq!(
            (v["method"].as_str(), v["body"].as_str()),
            (Some("POST"), Some("a=1&b=2")),
            "{v}"
        );
    }
}

/// `openssl s_client` against the listener: its output, given `stdin` and extra arguments.
fn s_client(addr: SocketAddr, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running openssl s_client");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
        // s_client reads session tickets only while it waits for more input.
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `--cert-dir`: certbot's layout and NAME.pem/NAME.key pairs, chosen by SNI; a site added to the
/// directory is served after `khttpd-ctl reload`; a directory without any pair is refused.
#[test]
fn certificates_from_a_directory_by_sni_and_reload() {
    let dir = TempDir::new().unwrap();
    let live = dir.path().join("live");
    for name in ["alpha.test", "beta.test"] {
        std::fs::create_dir_all(live.join(name)).unwrap();
        khttpd_tests::proto::certificate_at(
            &live.join(name).join("fullchain.pem"),
            &live.join(name).join("privkey.pem"),
            &[name],
        );
    }
    certificate(&live, "gamma", &["gamma.test"]);
    // Certbot's README and an unpaired file are skipped.
    std::fs::write(live.join("README"), "certbot").unwrap();
    std::fs::write(live.join("lonely.pem"), "x").unwrap();
    let (f, tls) = front_tls(&["--cert-dir", live.to_str().unwrap()]);
    for name in ["alpha.test", "beta.test", "gamma.test"] {
        let out = s_client(tls, &["-servername", name], "");
        assert!(
            out.contains(&format!("subject=CN = {name}")),
            "{name}: {out}"
        );
    }
    let out = s_client(tls, &["-servername", "other.test"], "");
    assert!(
        out.contains("subject=CN = alpha.test"),
        "the first in name order is the default: {out}"
    );
    // A new site, then a reload.
    std::fs::create_dir_all(live.join("delta.test")).unwrap();
    khttpd_tests::proto::certificate_at(
        &live.join("delta.test/fullchain.pem"),
        &live.join("delta.test/privkey.pem"),
        &["delta.test"],
    );
    let (code, out, err) = f.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let out = s_client(tls, &["-servername", "delta.test"], "");
    assert!(out.contains("subject=CN = delta.test"), "{out}");

    let empty = TempDir::new().unwrap();
    let www = khttpd_tests::repo_root().join("www");
    match Front::try_start(&[
        "--root",
        www.to_str().unwrap(),
        "--tls-port",
        "0",
        "--cert-dir",
        empty.path().to_str().unwrap(),
    ]) {
        Ok(_) => panic!("an empty --cert-dir was accepted"),
        Err((code, err)) => assert!(
            code == Some(64) && err.contains("--cert-dir") && err.contains("no certificate"),
            "{err}"
        ),
    }
}

/// ALPN, certificates chosen by SNI, TLS 1.2 and 1.3 only, and session resumption.
#[test]
fn alpn_sni_versions_and_resumption() {
    let dir = TempDir::new().unwrap();
    let (one, one_key) = certificate(dir.path(), "one", &["one.test"]);
    let (two, two_key) = certificate(dir.path(), "two", &["two.test", "*.two.test"]);
    let certs = format!("{},{}", one.display(), two.display());
    let keys = format!("{},{}", one_key.display(), two_key.display());
    let (_f, tls) = front_tls(&["--cert", &certs, "--key", &keys]);

    let out = s_client(
        tls,
        &["-servername", "one.test", "-alpn", "h2,http/1.1"],
        "",
    );
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(out.contains("subject=CN = one.test"), "{out}");
    let out = s_client(
        tls,
        &["-servername", "www.two.test", "-alpn", "http/1.1"],
        "",
    );
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    assert!(out.contains("subject=CN = two.test"), "{out}");
    let out = s_client(tls, &["-servername", "elsewhere.test"], "");
    assert!(
        out.contains("subject=CN = one.test"),
        "the first certificate is the default: {out}"
    );

    for old in ["-tls1", "-tls1_1"] {
        let out = s_client(tls, &[old, "-servername", "one.test"], "");
        assert!(
            !out.contains("Cipher is") || out.contains("Cipher is (NONE)"),
            "{old}: {out}"
        );
    }
    let out = s_client(tls, &["-servername", "one.test"], "");
    assert!(out.contains("TLSv1.3"), "{out}");

    // Resumption, TLS 1.2 (session ID or ticket) and TLS 1.3 (tickets).
    for version in ["-tls1_2", "-tls1_3"] {
        let sess = dir.path().join(format!("sess{version}"));
        let sess = sess.to_str().unwrap();
        let first = s_client(
            tls,
            &[version, "-servername", "one.test", "-sess_out", sess],
            "",
        );
        assert!(first.contains("New,"), "{version}: {first}");
        let again = s_client(
            tls,
            &[version, "-servername", "one.test", "-sess_in", sess],
            "",
        );
        assert!(again.contains("Reused,"), "{version} resumed: {again}");
    }
}

/// `khttpd-ctl reload` picks up a renewed certificate without a restart; a broken one is refused
/// and the previous one keeps serving. A key others may read gets a warning.
#[test]
fn certificates_reload_and_a_bad_one_is_refused() {
    let dir = TempDir::new().unwrap();
    let (cert, key) = certificate(dir.path(), "live", &["first.test"]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (f, tls) = front_tls(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(
        khttpd_tests::wait_until(Duration::from_secs(5), || f
            .stderr()
            .contains("private key readable by other users")
            .then_some(()))
        .is_some(),
        "{}",
        f.stderr()
    );
    assert!(s_client(tls, &["-servername", "first.test"], "").contains("CN = first.test"));

    // Renewed in place (as certbot's deploy hook would), then reloaded.
    let fresh = TempDir::new().unwrap();
    let (c2, k2) = certificate(fresh.path(), "renewed", &["second.test"]);
    std::fs::copy(&c2, &cert).unwrap();
    std::fs::copy(&k2, &key).unwrap();
    let (code, out, err) = f.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let out = s_client(tls, &["-servername", "second.test"], "");
    assert!(out.contains("CN = second.test"), "{out}");

    // A broken certificate: refused, the renewed one still serves.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (code, out, err) = f.ctl(&["reload"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(format!("{out}{err}").contains("--cert"), "{out}{err}");
    let out = s_client(tls, &["-servername", "second.test"], "");
    assert!(out.contains("CN = second.test"), "{out}");
}

/// Mistakes in the TLS settings stop the start with a clear line and exit 64.
#[test]
fn tls_setting_mistakes_are_refused_at_start() {
    let dir = TempDir::new().unwrap();
    let (cert, key) = certificate(dir.path(), "site", &["localhost"]);
    let (other, _) = certificate(dir.path(), "other", &["other.test"]);
    let cert = cert.to_str().unwrap();
    let key = key.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--cert", cert, "--key", key], "need --tls-port"),
        (vec!["--tls-port", "0"], "--tls-port needs a certificate"),
        (
            vec!["--tls-port", "0", "--cert", cert],
            "one key per certificate",
        ),
        (
            vec![
                "--tls-port",
                "0",
                "--cert",
                other.to_str().unwrap(),
                "--key",
                key,
            ],
            "does not fit",
        ),
        (
            vec!["--tls-port", "0", "--cert", key, "--key", key],
            "no certificate in the file",
        ),
    ];
    let www = khttpd_tests::repo_root().join("www");
    for (mut args, says) in cases {
        args.extend(["--root", www.to_str().unwrap()]);
        match Front::try_start(&args) {
            Ok(_) => panic!("{args:?} started"),
            Err((code, err)) => {
                assert_eq!(code, Some(64), "{args:?}: {err}");
                assert!(err.contains(says), "{args:?}: {err}");
            }
        }
    }
}

/// Many concurrent HTTP/2 streams over few connections (h2load), up to the stream limit.
#[test]
fn h2load_many_streams() {
    let dir = TempDir::new().unwrap();
    let (cert, key) = certificate(dir.path(), "site", &["localhost"]);
    let (f, tls) = front_tls(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--h2-max-streams",
        "32",
    ]);
    let out = Command::new("timeout")
        .args(["60", "h2load", "-n", "4000", "-c", "4", "-m", "32"])
        .arg(format!("https://127.0.0.1:{}/assets/style.css", tls.port()))
        .output()
        .expect("running h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("4000 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("Application protocol: h2"), "{text}");
    let totals = &f.status()["totals"];
    assert!(totals["static"].as_u64().unwrap_or(0) >= 4000, "{totals}");
}

/// `--redirect-https`: plain HTTP answers 308 to the same URL on the TLS port, the fast path
/// included, except ACME challenges, which stay on plain HTTP for certbot's webroot mode.
#[test]
fn plain_http_redirects_to_https_except_acme_challenges() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("www");
    khttpd_tests::copy_readable(&khttpd_tests::repo_root().join("www"), &root);
    let challenge = root.join(".well-known/acme-challenge");
    std::fs::create_dir_all(&challenge).unwrap();
    std::fs::write(challenge.join("tok3n"), "tok3n.thumbprint").unwrap();
    let (cert, key) = certificate(dir.path(), "site", &["localhost"]);
    let (f, tls) = front_tls(&[
        "--root",
        root.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--redirect-https",
    ]);
    for target in ["/", "/assets/style.css?v=2", "/index.php", "/no/such"] {
        // Twice: the second time the fast path would have the file cached.
        for _ in 0..2 {
            let r = khttpd_tests::http::request(
                f.addr,
                "GET",
                target,
                &[("Host", &format!("example.test:{}", f.addr.port()))],
                b"",
            );
            assert_eq!(r.status, 308, "{target}");
            assert_eq!(
                r.header("location"),
                Some(format!("https://example.test:{}{target}", tls.port()).as_str()),
                "{target}"
            );
        }
    }
    let r = khttpd_tests::http::get(f.addr, "/.well-known/acme-challenge/tok3n");
    assert_eq!((r.status, r.text()), (200, "tok3n.thumbprint".to_owned()));
    let seen = curl(
        "--http2",
        &cert,
        &format!("https://127.0.0.1:{}/", tls.port()),
        &[],
    );
    assert_eq!(seen.status, 200, "HTTPS itself is not redirected");
}

/// An HTTP/2 connection over `openssl s_client -quiet` (a TLS pipe with ALPN h2): raw frames in,
/// raw frames out.
struct RawH2 {
    child: std::process::Child,
    input: Option<std::process::ChildStdin>,
    output: std::thread::JoinHandle<Vec<u8>>,
}

impl RawH2 {
    fn connect(addr: SocketAddr) -> RawH2 {
        RawH2::connect_with(addr, 30, true)
    }

    /// `secs`: the pipe's life; `reading`: whether the server's frames are read as they come (a
    /// flooder that reads nothing leaves them to pile up in the server, if it lets them).
    fn connect_with(addr: SocketAddr, secs: u64, reading: bool) -> RawH2 {
        let mut child = Command::new("timeout")
            .arg(secs.to_string())
            .args([
                "openssl",
                "s_client",
                "-quiet",
                "-alpn",
                "h2",
                "-servername",
                "localhost",
                "-connect",
            ])
            .arg(addr.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running openssl s_client");
        let mut out = child.stdout.take().unwrap();
        let output = std::thread::spawn(move || {
            if !reading {
                std::thread::sleep(Duration::from_secs(secs + 1));
            }
            let mut all = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut all);
            all
        });
        let mut h2 = RawH2 {
            input: child.stdin.take(),
            child,
            output,
        };
        // The preface and an empty SETTINGS frame.
        h2.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        h2.send(&frame(4, 0, 0, &[]));
        h2
    }

    /// Sends bytes; false once the other side is gone.
    fn send(&mut self, bytes: &[u8]) -> bool {
        use std::io::Write;
        self.input
            .as_mut()
            .is_some_and(|i| i.write_all(bytes).is_ok())
    }

    /// Closes our side and returns every frame the server sent: (type, flags, stream, payload).
    fn finish(mut self) -> Vec<(u8, u8, u32, Vec<u8>)> {
        drop(self.input.take());
        let _ = self.child.wait();
        let raw = self.output.join().unwrap();
        let mut frames = Vec::new();
        let mut at = 0;
        while raw.len() >= at + 9 {
            let len = usize::from(raw[at]) << 16
                | usize::from(raw[at + 1]) << 8
                | usize::from(raw[at + 2]);
            let stream = u32::from_be_bytes([raw[at + 5], raw[at + 6], raw[at + 7], raw[at + 8]])
                & 0x7fff_ffff;
            let end = (at + 9 + len).min(raw.len());
            frames.push((raw[at + 3], raw[at + 4], stream, raw[at + 9..end].to_vec()));
            at += 9 + len;
        }
        frames
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A GET of / for `localhost` in HPACK: indexed :method GET, :scheme https, :path /, and a
/// literal :authority.
const GET_ROOT: &[u8] = b"\x82\x87\x84\x41\x09localhost";

/// The error code of the server's GOAWAY, if it sent one.
fn goaway(frames: &[(u8, u8, u32, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.0 == 7 && f.3.len() >= 8)
        .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
}

/// The HTTP/2 floods (bounded): rapid reset (CVE-2023-44487), a CONTINUATION flood, a PING flood
/// and a SETTINGS flood each end with the connection refused or closed, do little work, and never stop the
/// front serving everyone else.
#[test]
fn http2_floods_are_cut_off() {
    let dir = TempDir::new().unwrap();
    let (cert, key) = certificate(dir.path(), "site", &["localhost"]);
    let (f, tls) = front_tls(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let healthy = |what: &str| {
        let seen = curl(
            "--http2",
            &cert,
            &format!("https://127.0.0.1:{}/", tls.port()),
            &[],
        );
        assert_eq!(seen.status, 200, "after {what}");
    };
    healthy("start");

    // Rapid reset: 20,000 streams opened and cancelled at once.
    let mut h2 = RawH2::connect(tls);
    let mut burst = Vec::new();
    let mut sent = 0;
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(1, 0x5, id, GET_ROOT));
        burst.extend(frame(3, 0, id, &8u32.to_be_bytes()));
        if burst.len() > 64 << 10 {
            if !h2.send(&burst) {
                break;
            }
            sent = i;
            burst.clear();
        }
    }
    let frames = h2.finish();
    let handled = f.status()["totals"]["static"].as_u64().unwrap_or(0);
    assert_eq!(
        goaway(&frames),
        Some(0xb),
        "ENHANCE_YOUR_CALM after {sent} resets; frames {:?}",
        frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    assert!(
        handled < 1000,
        "the front answered {handled} of the cancelled streams"
    );
    healthy("rapid reset");

    // CONTINUATION flood: one header block that never ends, 1 KiB at a time, up to 64 MiB.
    let mut h2 = RawH2::connect(tls);
    h2.send(&frame(1, 0x1, 1, GET_ROOT));
    let mut junk = Vec::new();
    for i in 0..1000 {
        // Literal header without indexing, new name: x-junk-N: 1000 bytes.
        let name = format!("x-junk-{i}");
        junk.push(0x00);
        junk.push(name.len() as u8);
        junk.extend_from_slice(name.as_bytes());
        junk.extend_from_slice(&[0x7f, 0xe9, 0x06]); // 127 + 873 = 1000 bytes
        junk.extend(std::iter::repeat_n(b'a', 1000));
        if junk.len() > 900 {
            break;
        }
    }
    let mut sent_bytes = 0usize;
    let started = std::time::Instant::now();
    while sent_bytes < 64 << 20 {
        if !h2.send(&frame(9, 0, 1, &junk)) {
            break;
        }
        sent_bytes += junk.len();
    }
    let cut_after = started.elapsed();
    let frames = h2.finish();
    assert!(
        sent_bytes < 64 << 20,
        "the server read a 64 MiB header block"
    );
    // Cut off: a GOAWAY or a reset stream, or (when the close reset the socket before those
    // were read, as under load) the connection ended long before the pipe's 30 s life.
    assert!(
        goaway(&frames).is_some()
            || frames.iter().any(|f| f.0 == 3)
            || cut_after < Duration::from_secs(20),
        "after {cut_after:?}, frames: {:?}",
        frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    healthy("CONTINUATION flood");

    // PING flood: up to 1,000,000 PINGs for 5 s without reading a single PONG: the server stops
    // reading (back-pressure) instead of queueing the answers.
    let mut h2 = RawH2::connect_with(tls, 5, false);
    let pings: Vec<u8> = (0..1000).flat_map(|_| frame(6, 0, 0, &[7; 8])).collect();
    let mut rounds = 0;
    while rounds < 1000 && h2.send(&pings) {
        rounds += 1;
    }
    drop(h2.finish());
    assert!(
        rounds < 1000,
        "all 1,000,000 PINGs were taken without their PONGs being read"
    );
    healthy("PING flood");

    // SETTINGS flood: each frame changes the HPACK table size and the initial window (work for
    // the server, and an ACK owed), up to 1,000,000 frames in 5 s without reading an ACK: the
    // server owes at most one and stops reading until it is taken.
    let mut h2 = RawH2::connect_with(tls, 5, false);
    let settings: Vec<u8> = (0..1000u32)
        .flat_map(|i| {
            let mut payload = vec![0, 1]; // SETTINGS_HEADER_TABLE_SIZE
            payload.extend_from_slice(&(4096 - i % 2 * 1024).to_be_bytes());
            payload.extend_from_slice(&[0, 4]); // SETTINGS_INITIAL_WINDOW_SIZE
            payload.extend_from_slice(&(65_535 + i).to_be_bytes());
            frame(4, 0, 0, &payload)
        })
        .collect();
    let mut rounds = 0;
    while rounds < 1000 && h2.send(&settings) {
        rounds += 1;
    }
    drop(h2.finish());
    assert!(
        rounds < 1000,
        "all 1,000,000 SETTINGS were taken without their ACKs being read"
    );
    healthy("SETTINGS flood");
    let rss = std::fs::read_to_string(format!("/proc/{}/status", f.pid())).unwrap();
    let kib: u64 = rss
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        kib < 200 * 1024,
        "front peaked at {kib} KiB during the floods"
    );
}

/// A certificate authority and a leaf it signed for `localhost` and 127.0.0.1, valid for 200
/// days, naming where revocation would be checked: what a real site's certificate looks like to
/// testssl.sh, which then has only the server's own set-up left to rate.
fn ca_and_leaf(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "400",
        "-subj",
        "/CN=khttpd test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n\
         authorityInfoAccess=OCSP;URI:http://ocsp.invalid/\ncrlDistributionPoints=URI:http://crl.invalid/ca.crl\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "200",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("leaf.pem")).unwrap(),
        std::fs::read_to_string(dir.join("ca.pem")).unwrap()
    );
    std::fs::write(dir.join("fullchain.pem"), chain).unwrap();
    std::fs::set_permissions(dir.join("leaf.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    (
        dir.join("ca.pem"),
        dir.join("fullchain.pem"),
        dir.join("leaf.key"),
    )
}

/// testssl.sh, the full default run, finds nothing HIGH or CRITICAL (issue 18).
#[test]
fn testssl_finds_nothing_high_or_critical() {
    let dir = TempDir::new().unwrap();
    let (ca, chain, key) = ca_and_leaf(dir.path());
    let (_f, tls) = front_tls(&[
        "--cert",
        chain.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--hsts",
        "31536000",
    ]);
    let json = dir.path().join("testssl.json");
    let out = Command::new("timeout")
        .args([
            "600",
            "testssl",
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "batch",
            "--add-ca",
        ])
        .arg(&ca)
        .arg("--jsonfile")
        .arg(&json)
        .arg(format!("127.0.0.1:{}", tls.port()))
        .output()
        .expect("running testssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let findings: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
            .unwrap_or_else(|e| panic!("no JSON from testssl ({e}): {text}"));
    assert!(
        findings.len() > 50,
        "testssl ran only {} checks: {text}",
        findings.len()
    );
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["finding"]))
        .collect();
    assert!(bad.is_empty(), "testssl found:\n{}", bad.join("\n"));
}

/// `--ocsp FILE` staples the DER OCSP response given for the certificate at its position (here
/// one made by `openssl ocsp` as the CA's responder); a file that is not DER is refused at start.
#[test]
fn ocsp_response_is_stapled() {
    let dir = TempDir::new().unwrap();
    let (ca, chain, key) = ca_and_leaf(dir.path());
    let d = dir.path();
    let openssl = |args: &[&str]| -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let serial = openssl(&["x509", "-in", "leaf.pem", "-noout", "-serial"]);
    let serial = serial.trim_start_matches("serial=");
    std::fs::write(
        d.join("index.txt"),
        format!("V\t351231235959Z\t\t{serial}\tunknown\t/CN=localhost\n"),
    )
    .unwrap();
    openssl(&[
        "ocsp",
        "-issuer",
        "ca.pem",
        "-cert",
        "leaf.pem",
        "-reqout",
        "req.der",
        "-no_nonce",
    ]);
    openssl(&[
        "ocsp",
        "-index",
        "index.txt",
        "-rsigner",
        "ca.pem",
        "-rkey",
        "ca.key",
        "-CA",
        "ca.pem",
        "-reqin",
        "req.der",
        "-respout",
        "resp.der",
        "-ndays",
        "1",
    ]);
    let (_f, tls) = front_tls(&[
        "--cert",
        chain.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--ocsp",
        d.join("resp.der").to_str().unwrap(),
    ]);
    let out = s_client(
        tls,
        &[
            "-servername",
            "localhost",
            "-status",
            "-CAfile",
            ca.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.contains("OCSP Response Status: successful"), "{out}");
    assert!(out.contains("Cert Status: good"), "{out}");

    let www = khttpd_tests::repo_root().join("www");
    let refused = Front::try_start(&[
        "--root",
        www.to_str().unwrap(),
        "--tls-port",
        "0",
        "--cert",
        chain.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--ocsp",
        chain.to_str().unwrap(),
    ]);
    match refused {
        Ok(_) => panic!("a PEM file was accepted as an OCSP response"),
        Err((code, err)) => assert!(
            code == Some(64) && err.contains("not a DER OCSP response"),
            "{err}"
        ),
    }
}

/// Attacks on the handshake itself: 50 clients that connect to the TLS port and send nothing are
/// closed once the header timeout passes, and one that sends plain HTTP (or garbage) instead of a
/// ClientHello is closed at once; neither stops the front serving HTTPS meanwhile.
#[test]
fn silent_and_garbage_tls_clients_are_closed() {
    use std::io::{Read, Write};
    let dir = TempDir::new().unwrap();
    let (cert, key) = certificate(dir.path(), "site", &["localhost"]);
    let (_f, tls) = front_tls(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--header-timeout",
        "1",
    ]);
    let started = std::time::Instant::now();
    let mut silent: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let s = std::net::TcpStream::connect(tls).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    let mut garbage = std::net::TcpStream::connect(tls).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    // An alert or nothing, then the close; never an HTTP answer.
    let n = garbage.read(&mut buf).unwrap_or(0);
    assert!(!buf[..n].starts_with(b"HTTP/"), "{:?}", &buf[..n]);
    let seen = curl(
        "--http2",
        &cert,
        &format!("https://127.0.0.1:{}/", tls.port()),
        &[],
    );
    assert_eq!(seen.status, 200, "served while 50 handshakes hang");
    for s in &mut silent {
        // EOF or a reset once the header timeout has passed.
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "silent clients held for {took:?}"
    );
}
