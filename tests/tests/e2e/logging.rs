//! kHTTPd's Logging stage: Apache's combined format that goaccess, awstats and fail2ban read, JSON,
//! logrotate's reopen, switching at run time, and `--user`.

use std::time::Duration;

use khttpd_tests::front::Front;
use khttpd_tests::http;
use khttpd_tests::Proto;
use regex::Regex;

use crate::site::Site;

/// The combined format as log analysers parse it.
const COMBINED: &str = r#"^(\S+) (\S+) (\S+) \[([\w:/]+\s[+\-]\d{4})\] "(\S+) (.+?) (\S+)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"$"#;

fn lines(path: &std::path::Path, at_least: usize) -> Vec<String> {
    khttpd_tests::wait_until(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let l: Vec<String> = text.lines().map(str::to_owned).collect();
        (l.len() >= at_least).then_some(l)
    })
    .unwrap_or_else(|| panic!("fewer than {at_least} lines in {}", path.display()))
}

// Issue 18: over HTTP/1.1 and over HTTP/2 (TLS, curl).
over_h1_and_h2!(
    combined_lines_match_the_format_analysers_read,
    json_lines_carry_duration_and_route,
);

fn combined_lines_match_the_format_analysers_read(p: Proto) {
    let site = Site::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let f = Front::start_over(
        p,
        &[
            "--root",
            site.root_arg(),
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    f.get("/alphabet.txt");
    f.get("/missing?q=1");
    f.request(
        "GET",
        "/style.css",
        &[
            ("User-Agent", "evil \"agent\" \\ with\tcontrol"),
            ("Referer", "http://example.org/a b"),
        ],
        b"",
    );
    f.request("POST", "/index.html", &[], b"x=1");
    let re = Regex::new(COMBINED).unwrap();
    let got = lines(&log, 4);
    for l in &got {
        assert!(re.is_match(l), "not combined format: {l}");
    }
    let caps = re.captures(&got[0]).unwrap();
    assert_eq!(&caps[1], "127.0.0.1");
    assert_eq!(
        (&caps[5], &caps[6], &caps[7]),
        (
            "GET",
            "/alphabet.txt",
            if p.is_h1() { "HTTP/1.1" } else { "HTTP/2.0" }
        )
    );
    assert_eq!((&caps[8], &caps[9]), ("200", "26"));
    let missing = re.captures(&got[1]).unwrap();
    assert_eq!((&missing[6], &missing[8]), ("/missing?q=1", "404"));
    assert!(got[2].contains("evil"), "{}", got[2]);
    assert!(re.captures(&got[3]).unwrap()[8].eq("405"));
}

fn json_lines_carry_duration_and_route(p: Proto) {
    let site = Site::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let f = Front::start_over(
        p,
        &[
            "--root",
            site.root_arg(),
            "--access-log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    );
    f.get("/big.bin");
    f.get("/page.php");
    let got = lines(&log, 2);
    let first: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], crate::site::big_content().len());
    assert_eq!(first["route"], "static");
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    let second: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
    assert_eq!(
        (second["status"].as_u64(), second["route"].as_str()),
        (Some(502), Some("error"))
    );
}

#[test]
fn reopen_after_logrotate_and_switch_at_run_time() {
    let site = Site::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let f = Front::start(&[
        "--root",
        site.root_arg(),
        "--access-log",
        log.to_str().unwrap(),
    ]);
    http::get(f.addr, "/alphabet.txt");
    lines(&log, 1);
    // logrotate: rename, then tell the server; new lines land in a new file at the old path.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let (code, _, err) = f.ctl(&["reopen-logs"]);
    assert_eq!(code, 0, "{err}");
    http::get(f.addr, "/style.css");
    let fresh = lines(&log, 1);
    assert!(fresh[0].contains("/style.css"), "{fresh:?}");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        1
    );
    // USR1 reopens too.
    std::fs::rename(&log, dir.path().join("access.log.2")).unwrap();
    f.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(300));
    http::get(f.addr, "/app.js");
    assert!(lines(&log, 1)[0].contains("/app.js"));
    // kHTTPd's logging knob at run time.
    let (code, _, err) = f.ctl(&["set", "logging", "off"]);
    assert_eq!(code, 0, "{err}");
    http::get(f.addr, "/index.html");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("/index.html"));
    let (code, _, err) = f.ctl(&["set", "logging", "/nonexistent-dir/x/access.log"]);
    assert_eq!(code, 1, "an unwritable log path is refused");
    assert!(err.contains("access log"), "{err}");
}

#[test]
fn user_drops_privileges_after_binding() {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    if uid != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let site = Site::new();
    let mut f = Front::start(&["--root", site.root_arg(), "--user", "nobody"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", f.pid())).unwrap();
    let uids = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    assert!(
        uids.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uids}"
    );
    assert_eq!(http::get(f.addr, "/alphabet.txt").status, 200);
    // Still controllable, and still able to listen again after a stop.
    assert_eq!(f.ctl(&["stop"]).0, 0);
    let (code, _, err) = f.ctl(&["start"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(http::get(f.refresh_addr(), "/alphabet.txt").status, 200);
}

/// journald and `docker logs` read diagnostics from a pipe or file: no colour escape codes there, even
/// when NO_COLOR is unset (issue 17).
#[test]
fn diagnostics_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let site = Site::new();
    let root = site.root.to_str().unwrap();
    let f = Front::try_start_with_env(&["--root", root], &[("NO_COLOR", "")])
        .unwrap_or_else(|(code, err)| panic!("did not start ({code:?}): {err}"));
    let stderr = khttpd_tests::wait_until(Duration::from_secs(5), || {
        let text = f.stderr();
        text.contains("main daemons started").then_some(text)
    })
    .expect("the start is logged");
    assert!(!stderr.contains('\u{1b}'), "escape codes in:\n{stderr:?}");
}

/// Issue 17: behind a trusted proxy the access log names the client from `X-Forwarded-For`, as
/// nginx's realip module does (fail2ban must not ban the load balancer); from anyone else the
/// header is the client's own claim and the peer is logged. Both transports: a static GET (the
/// fast path) and a POST (hyper).
#[test]
fn the_log_names_the_real_client_behind_a_trusted_proxy() {
    let site = Site::new();
    let dir = tempfile::tempdir().unwrap();
    for (trusted, want) in [("127.0.0.0/8", "203.0.113.5"), ("10.0.0.0/8", "127.0.0.1")] {
        let log = dir.path().join(format!("access-{want}.log"));
        let f = Front::start(&[
            "--root",
            site.root_arg(),
            "--access-log",
            log.to_str().unwrap(),
            "--trusted-proxy",
            trusted,
        ]);
        let xff = [("X-Forwarded-For", "198.51.100.7, 203.0.113.5")];
        http::request(f.addr, "GET", "/alphabet.txt", &xff, b"");
        http::request(f.addr, "GET", "/alphabet.txt", &xff, b"");
        http::request(f.addr, "POST", "/index.html", &xff, b"x=1");
        for l in lines(&log, 3) {
            assert!(l.starts_with(&format!("{want} ")), "trusted {trusted}: {l}");
        }
    }
}

/// Issue 17: a malformed head (400) and one too large (431), answered by hyper before any handler
/// runs, are logged too.
#[test]
fn malformed_and_oversized_heads_are_logged() {
    let site = Site::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let f = Front::start(&[
        "--root",
        site.root_arg(),
        "--access-log",
        log.to_str().unwrap(),
        "--max-head-size",
        "8192",
    ]);
    let bad = http::raw(f.addr, b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n");
    assert!(
        bad.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&bad)
    );
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let r = http::raw(f.addr, big.as_bytes());
    assert!(
        r.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    let re = Regex::new(COMBINED).unwrap();
    let got = lines(&log, 2);
    let statuses: Vec<String> = got
        .iter()
        .map(|l| {
            re.captures(l)
                .unwrap_or_else(|| panic!("not combined: {l}"))[8]
                .to_owned()
        })
        .collect();
    assert!(
        statuses.contains(&"400".to_owned()) && statuses.contains(&"431".to_owned()),
        "{got:?}"
    );
}

/// Issue 17: JSON lines name the host, the backend that answered and its time to the response
/// head, and a request id that Apache saw as `X-Request-Id` (the client's when it sent a sane one,
/// else a new one); durations have microsecond precision. Through the relay and through hyper.
#[test]
fn json_lines_follow_a_request_into_the_backend() {
    use khttpd_tests::apache::Apache;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(
        root.join("id.php"),
        "<?php echo $_SERVER['HTTP_X_REQUEST_ID'] ?? 'none';",
    )
    .unwrap();
    std::fs::write(root.join("plain.txt"), "plain\n").unwrap();
    // Apache's workers may run as another user: the docroot must be theirs to read.
    for p in [dir.path(), root.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in ["id.php", "plain.txt"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let a = Apache::start(&root);
    let log = dir.path().join("access.json");
    let backend = a.addr.to_string();
    let f = Front::start(&[
        "--root",
        root.to_str().unwrap(),
        "--backend",
        &backend,
        "--access-log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    // (extra fields, what PHP must see: None = a fresh 32-hex id)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (vec![], None),
        (vec![("X-Request-Id", "order-42.a:b")], Some("order-42.a:b")),
        (vec![("X-Request-Id", "bad id\"")], None),
        (vec![("TE", "trailers")], None),
        (
            vec![("TE", "trailers"), ("X-Request-Id", "via-hyper")],
            Some("via-hyper"),
        ),
    ];
    let mut seen = Vec::new();
    for (fields, expect) in &cases {
        let mut all = fields.clone();
        all.push(("Host", "shop.example"));
        let r = http::request(f.addr, "GET", "/id.php", &all, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let id = r.text();
        match expect {
            Some(e) => assert_eq!(&id, e),
            None => assert!(
                id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            ),
        }
        seen.push(id);
    }
    assert_ne!(seen[0], seen[2], "every request gets its own id");
    let got = lines(&log, cases.len());
    for (line, id) in got.iter().zip(&seen) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["request_id"].as_str(), Some(id.as_str()), "{line}");
        assert_eq!(v["host"], "shop.example", "{line}");
        assert_eq!(v["upstream"].as_str(), Some(backend.as_str()), "{line}");
        let up = v["upstream_time_ms"].as_f64().unwrap_or(-1.0);
        let total = v["duration_ms"].as_f64().unwrap();
        assert!(up >= 0.0 && up <= total, "{line}");
        // Microsecond precision: at most three decimals.
        let text = v["duration_ms"].to_string();
        assert!(
            text.split('.').nth(1).is_none_or(|d| d.len() <= 3),
            "{line}"
        );
    }
    // A static answer has no upstream.
    let r = http::get(f.addr, "/plain.txt");
    assert_eq!(r.status, 200);
}

/// Issue 17: `--log-format` takes a template with nginx's variables, escaped as the combined
/// format is (a client cannot forge a line); an unknown variable refuses the start, and
/// `khttpd-ctl set log_format` switches to another template at run time.
#[test]
fn templates_with_nginx_variables() {
    let site = Site::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let template = r#"$remote_addr "$request" $status $body_bytes_sent "$http_user_agent" $request_time $khttpd_route ${host}"#;
    let f = Front::start(&[
        "--root",
        site.root_arg(),
        "--access-log",
        log.to_str().unwrap(),
        "--log-format",
        template,
    ]);
    http::get(f.addr, "/alphabet.txt");
    http::request(
        f.addr,
        "GET",
        "/missing",
        &[("User-Agent", "evil\" 200 0 \"x")],
        b"",
    );
    let got = lines(&log, 2);
    let re = Regex::new(
        r#"^127\.0\.0\.1 "GET /alphabet\.txt HTTP/1\.1" 200 26 "-" \d+\.\d{3} static 127\.0\.0\.1$"#,
    )
    .unwrap();
    assert!(re.is_match(&got[0]), "{}", got[0]);
    assert!(
        got[1].contains(r#" 404 "#) && got[1].contains(r#""evil\x22 200 0 \x22x""#),
        "{}",
        got[1]
    );
    let (code, out, _) = f.ctl(&["get", "log_format"]);
    assert_eq!(code, 0);
    assert!(out.contains("$remote_addr"), "{out}");
    let (code, out, err) = f.ctl(&["set", "log_format", "$status $request_uri"]);
    assert_eq!(code, 0, "{out}{err}");
    http::get(f.addr, "/alphabet.txt?x=1");
    let got = lines(&log, 3);
    assert_eq!(got[2], "200 /alphabet.txt?x=1");

    match Front::try_start(&[
        "--root",
        site.root_arg(),
        "--log-format",
        "$remote_addr $nope",
    ]) {
        Ok(_) => panic!("an unknown variable was accepted"),
        Err((code, err)) => assert!(
            code == Some(64) && err.contains("$nope") && err.contains("--log-format"),
            "{err}"
        ),
    }
}
