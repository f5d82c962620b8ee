//! Tests of the test harness itself against a real Apache + mod_php: if
//! these fail, no end-to-end result about khttpd-front means anything.
//! They also pin down the behaviour of the shared backend config
//! (docker/apache/khttpd-backend.conf) that the front relies on.

use std::time::Duration;

use khttpd_tests::apache::{Apache, ApacheOptions};
use khttpd_tests::http::{self, Conn};
use tempfile::TempDir;

/// A docroot with one file per backend feature under test.
fn docroot() -> TempDir {
    let dir = tempfile::tempdir().expect("creating a temp docroot");
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        let parent = path.parent().expect("a file in the docroot has a parent");
        std::fs::create_dir_all(parent).expect("creating a docroot subdirectory");
        std::fs::write(path, body).expect("writing a docroot file");
    };
    write("index.php", "<?php echo 6*7;");
    write(
        "form.php",
        "<?php echo 'name=' . htmlspecialchars($_POST['name'] ?? '(none)');",
    );
    write("remote.php", "<?php echo $_SERVER['REMOTE_ADDR'];");
    write(
        "page.shtml",
        "<p>doc=<!--#echo var=\"DOCUMENT_NAME\" --></p>\n",
    );
    write(
        "plain.html",
        "<p>doc=<!--#echo var=\"DOCUMENT_NAME\" --></p>\n",
    );
    write("secret/.htaccess", "Require all denied\n");
    write("secret/x.html", "you should not see this\n");
    write("static.txt", "static\n");
    write("source.php.txt", "<?php echo 1+1;");
    dir
}

fn refuses(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

#[test]
fn php_runs() {
    let root = docroot();
    let apache = Apache::start(root.path());
    let r = http::get(apache.addr, "/index.php");
    assert_eq!(r.status, 200, "{}", apache.error_log());
    assert_eq!(r.text(), "42");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
}

#[test]
fn only_names_ending_in_php_are_executed() {
    let root = docroot();
    let apache = Apache::start(root.path());
    let r = http::get(apache.addr, "/source.php.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<?php echo 1+1;");
}

#[test]
fn directory_index_prefers_index_php() {
    let root = docroot();
    std::fs::write(root.path().join("index.html"), "static index").unwrap();
    let apache = Apache::start(root.path());
    assert_eq!(http::get(apache.addr, "/").text(), "42");
}

#[test]
fn php_sees_a_posted_form_field() {
    let root = docroot();
    let apache = Apache::start(root.path());
    let r = http::request(
        apache.addr,
        "POST",
        "/form.php",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=khttpd%20front",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "name=khttpd front");
}

#[test]
fn shtml_is_rendered_with_ssi_and_html_is_not() {
    let root = docroot();
    let apache = Apache::start(root.path());
    let r = http::get(apache.addr, "/page.shtml");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<p>doc=page.shtml</p>\n");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let r = http::get(apache.addr, "/plain.html");
    assert!(r.text().contains("<!--#echo"), "only .shtml is parsed");
}

#[test]
fn htaccess_deny_gives_403_and_ht_files_are_hidden() {
    let root = docroot();
    let apache = Apache::start(root.path());
    assert_eq!(http::get(apache.addr, "/secret/x.html").status, 403);
    assert_eq!(http::get(apache.addr, "/secret/.htaccess").status, 403);
    assert_eq!(http::get(apache.addr, "/static.txt").status, 200);
}

#[test]
fn stop_refuses_and_start_again_serves_on_the_same_port() {
    let root = docroot();
    let mut apache = Apache::start(root.path());
    let addr = apache.addr;
    assert_eq!(http::get(addr, "/index.php").text(), "42");
    apache.stop();
    assert!(refuses(addr), "port still accepts after stop()");
    apache.start_again();
    assert_eq!(apache.addr, addr);
    assert_eq!(http::get(addr, "/index.php").text(), "42");
}

#[test]
fn access_log_records_each_request_and_the_client() {
    let root = docroot();
    let apache = Apache::start(root.path());
    http::get(apache.addr, "/static.txt");
    http::request(
        apache.addr,
        "GET",
        "/index.php?x=1",
        &[("Via", "1.1 khttpd-front")],
        b"",
    );
    // Apache writes the log line after the response has been sent: wait for it.
    apache.wait_for_log_line("\"GET /index.php?x=1 HTTP/1.1\"", Duration::from_secs(5));
    apache.wait_for_log_line("\"GET /static.txt HTTP/1.1\"", Duration::from_secs(5));
    let lines = apache.log_lines_matching("\"GET /static.txt HTTP/1.1\"");
    assert_eq!(lines.len(), 1, "{}", apache.access_log());
    assert!(
        lines[0].starts_with("127.0.0.1 127.0.0.1 \"GET /static.txt HTTP/1.1\" 200 7 "),
        "{}",
        lines[0]
    );
    let line = apache
        .wait_for_log_line("/index.php?x=1", Duration::from_secs(2))
        .unwrap();
    assert!(line.ends_with(" \"-\" \"1.1 khttpd-front\""), "{line}");
    assert!(apache.log_lines_matching("/never-requested").is_empty());
}

#[test]
fn forwarded_for_from_a_trusted_proxy_becomes_the_client() {
    let root = docroot();
    let apache = Apache::start(root.path());
    let r = http::request(
        apache.addr,
        "GET",
        "/remote.php",
        &[("X-Forwarded-For", "203.0.113.9")],
        b"",
    );
    assert_eq!(r.text(), "203.0.113.9");
    let line = apache
        .wait_for_log_line("/remote.php", Duration::from_secs(2))
        .unwrap();
    assert!(line.starts_with("203.0.113.9 127.0.0.1 "), "{line}");
}

#[test]
fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let root = docroot();
    let options = ApacheOptions {
        trusted_proxies: vec!["192.0.2.1".into()],
        ..ApacheOptions::default()
    };
    let apache = Apache::start_with(root.path(), options);
    let r = http::request(
        apache.addr,
        "GET",
        "/remote.php",
        &[("X-Forwarded-For", "203.0.113.9")],
        b"",
    );
    assert_eq!(r.text(), "127.0.0.1");
}

#[test]
fn proxy_protocol_sets_the_client_and_is_required() {
    let root = docroot();
    let options = ApacheOptions {
        proxy_protocol: true,
        ..ApacheOptions::default()
    };
    let apache = Apache::start_with(root.path(), options);
    let mut request = b"PROXY TCP4 198.51.100.7 127.0.0.1 50000 80\r\n".to_vec();
    request.extend(http::build_request("GET", "/remote.php", &[], b"", true));
    let (r, _) = http::parse_one(&http::raw(apache.addr, &request)).unwrap();
    assert_eq!(r.text(), "198.51.100.7");
    // Without the header Apache drops the connection without answering.
    let bare = http::raw(
        apache.addr,
        &http::build_request("GET", "/", &[], b"", true),
    );
    assert!(bare.is_empty(), "{}", String::from_utf8_lossy(&bare));
}

#[test]
fn extra_config_is_applied() {
    let root = docroot();
    let options = ApacheOptions {
        extra: "Header always set X-Harness extra-ok".into(),
        ..ApacheOptions::default()
    };
    let apache = Apache::start_with(root.path(), options);
    let r = http::get(apache.addr, "/static.txt");
    assert_eq!(r.header("x-harness"), Some("extra-ok"));
}

#[test]
fn keep_alive_and_pipelining_against_apache() {
    let root = docroot();
    let apache = Apache::start(root.path());
    let mut conn = Conn::open(apache.addr);
    assert_eq!(conn.request("GET", "/index.php", &[], b"").text(), "42");
    assert!(!conn.is_closed_within(Duration::from_millis(200)));
    // Two pipelined requests, the second a HEAD, on the same connection.
    let mut both = http::build_request("GET", "/static.txt", &[], b"", false);
    both.extend(http::build_request("HEAD", "/static.txt", &[], b"", true));
    conn.send(&both);
    let first = conn.read_response(false);
    let second = conn.read_response(true);
    assert_eq!(first.text(), "static\n");
    assert_eq!(second.status, 200);
    assert_eq!(second.header("content-length"), Some("7"));
    assert!(second.body.is_empty());
    assert!(conn.is_closed(), "Connection: close was honoured");
}

#[test]
fn concurrent_requests_are_served() {
    let root = docroot();
    let apache = Apache::start(root.path());
    let addr = apache.addr;
    let workers: Vec<_> = (0..12)
        .map(|_| std::thread::spawn(move || http::get(addr, "/index.php").text()))
        .collect();
    for worker in workers {
        assert_eq!(worker.join().unwrap(), "42");
    }
}

#[test]
fn instances_are_independent() {
    let (a, b) = (docroot(), docroot());
    std::fs::write(b.path().join("static.txt"), "other\n").unwrap();
    let first = Apache::start(a.path());
    let second = Apache::start(b.path());
    assert_ne!(first.port, second.port);
    assert_eq!(http::get(first.addr, "/static.txt").text(), "static\n");
    assert_eq!(http::get(second.addr, "/static.txt").text(), "other\n");
}

#[test]
fn drop_leaves_no_process_behind() {
    let root = docroot();
    let apache = Apache::start(root.path());
    let parent = apache.pid().unwrap();
    let workers = khttpd_tests::process::children_of(parent);
    assert!(!workers.is_empty(), "prefork started no workers?");
    let addr = apache.addr;
    drop(apache);
    for pid in std::iter::once(parent).chain(workers) {
        assert!(
            khttpd_tests::process::has_terminated(pid),
            "process {pid} survived"
        );
    }
    assert!(refuses(addr));
}
