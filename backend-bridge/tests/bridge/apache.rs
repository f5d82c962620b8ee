//! Against a real Apache 2.4 + mod_php.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use http::Request;
use khttpd_bridge::{BridgeConfig, ProxyProtocol};
use khttpd_tests::apache::{Apache, ApacheOptions};
use tempfile::TempDir;

use crate::support::*;

const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A document root with the PHP scripts the tests call.
fn docroot() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("khttpd-bridge-www-")
        .tempdir()
        .unwrap();
    let files: &[(&str, &str)] = &[
        ("index.php", "<?php echo \"hello from php\\n\";\n"),
        (
            "form.php",
            "<?php echo 'name=', $_POST['name'] ?? '-', \"\\n\";\n",
        ),
        (
            "len.php",
            "<?php $in = fopen('php://input', 'rb'); $n = 0;\n\
             while (!feof($in)) { $n += strlen(fread($in, 1 << 16)); }\n\
             echo 'method=', $_SERVER['REQUEST_METHOD'], \"\\nbytes=$n\\n\";\n",
        ),
        (
            "big.php",
            "<?php header('Content-Type: application/octet-stream');\n\
             $chunk = str_repeat('y', 1 << 20);\n\
             for ($i = 0; $i < 50; $i++) { echo $chunk; flush(); }\n",
        ),
        (
            "env.php",
            "<?php foreach (['REMOTE_ADDR', 'REMOTE_PORT', 'REQUEST_URI', 'SERVER_PROTOCOL',\n\
             'HTTP_HOST', 'HTTP_X_FORWARDED_FOR', 'HTTP_X_FORWARDED_PROTO', 'HTTP_X_FORWARDED_HOST',\n\
             'HTTP_VIA', 'HTTP_EXPECT', 'HTTP_KEEP_ALIVE', 'HTTP_X_HOP'] as $k) {\n\
             echo $k, '=', $_SERVER[$k] ?? '-', \"\\n\"; }\n",
        ),
        // Issue 14: statuses outside the standard list, reasons missing or outside UTF-8.
        (
            "odd.php",
            "<?php header(\"HTTP/1.1 499 caf\\xe9\"); echo \"odd\\n\";\n",
        ),
        ("bare.php", "<?php header('HTTP/1.1 599'); echo \"bare\\n\";\n"),
        // Issue 16: an answer longer than its own Content-Length, the rest written later: a forged
        // answer waiting on the connection for whoever uses it next.
        (
            "poison.php",
            "<?php header('Content-Length: 5'); echo 'hello';\n\
             if (isset($_GET['us'])) { ob_flush(); flush(); usleep((int) $_GET['us']); }\n\
             echo \"HTTP/1.1 200 OK\\r\\nContent-Length: 6\\r\\nSet-Cookie: session=ATTACKER\\r\\n\\r\\nforged\";\n\
             ob_flush(); flush();\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// Starts Apache off the runtime's threads (it blocks while it waits for Apache).
async fn apache(www: &TempDir, options: ApacheOptions) -> Apache {
    let root = www.path().to_path_buf();
    tokio::task::spawn_blocking(move || Apache::start_with(&root, options))
        .await
        .unwrap()
}

async fn php_page_comes_back_without_hop_by_hop_fields(path: Path) {
    let www = docroot();
    let apache = apache(&www, ApacheOptions::default()).await;
    let front = Front::start_on(path, config(apache.addr)).await;
    let (parts, body) = fetch_once(front.addr, get("/index.php")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "hello from php\n");
    // Apache's Keep-Alive/Connection are about its connection to us, not the client's.
    assert!(parts.headers.get("keep-alive").is_none(), "{parts:?}");
    let head = Request::head("/index.php")
        .header("host", "front.test")
        .body(empty())
        .unwrap();
    let (parts, body) = fetch_once(front.addr, head).await;
    assert_eq!(parts.status, 200);
    assert!(body.is_empty());
    let s = &front.stats()[0];
    assert_eq!((s.requests, s.refused, s.reset), (2, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_form_field_is_echoed() {
    bounded(async {
        let www = docroot();
        let apache = apache(&www, ApacheOptions::default()).await;
        let front = Front::start(config(apache.addr)).await;
        let req = Request::post("/form.php")
            .header("host", "front.test")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("expect", "100-continue")
            .body(full("name=K%C3%A9vin+%26+co"))
            .unwrap();
        let (parts, body) = fetch_once(front.addr, req).await;
        assert_eq!(parts.status, 200);
        assert_eq!(body, "name=Kévin & co\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_of_20_mib_stream_through_with_and_without_length() {
    bounded(async {
        let www = docroot();
        // post_max_size (8M by default) would drop the raw input of a large POST.
        let options = ApacheOptions {
            extra: "php_admin_value post_max_size 0\nLimitRequestBody 0".into(),
            ..ApacheOptions::default()
        };
        let apache = apache(&www, options).await;
        let front = Front::start(config(apache.addr)).await;
        let total = 20u64 << 20;
        for exact in [true, false] {
            let req = Request::post("/len.php")
                .header("host", "front.test")
                .header("content-type", "application/octet-stream")
                .body(Repeat::body(total, 64 << 10, exact))
                .unwrap();
            let (parts, body) = fetch_once(front.addr, req).await;
            assert_eq!(parts.status, 200, "{body}");
            assert_eq!(field(&body, "bytes"), total.to_string(), "exact={exact}");
        }
    })
    .await;
}

async fn download_of_50_mib_streams_through(path: Path) {
    let www = docroot();
    let apache = apache(&www, ApacheOptions::default()).await;
    let front = Front::start_on(path, config(apache.addr)).await;
    let mut client = Client::connect(front.addr).await;
    let resp = client.send(get("/big.php")).await;
    assert_eq!(resp.status(), 200);
    let n = drain_counting(resp.into_body(), b'y').await;
    assert_eq!(n, 50 << 20);
    // The connection is still good for another request.
    let (parts, body) = client.get("/index.php").await;
    assert_eq!(
        (parts.status.as_u16(), body.as_str()),
        (200, "hello from php\n")
    );
}

async fn sequential_requests_reuse_few_backend_connections(path: Path) {
    let www = docroot();
    let apache = apache(&www, ApacheOptions::default()).await;
    let front = Front::start_on(path, config(apache.addr)).await;
    let mut ports = HashSet::new();
    // Several client connections, several requests each: all share the daemon's pool.
    for _ in 0..6 {
        let mut client = Client::connect(front.addr).await;
        for _ in 0..5 {
            let (parts, body) = client.get("/env.php").await;
            assert_eq!(parts.status, 200);
            ports.insert(field(&body, "REMOTE_PORT").to_owned());
        }
    }
    assert!(
        ports.len() <= 2,
        "30 requests used {} connections",
        ports.len()
    );
    let s = &front.stats()[0];
    assert_eq!(s.requests, 30);
    assert_eq!(s.in_flight, 0);
    assert!(s.idle_pooled >= 1);
}

async fn forwarding_fields_cannot_be_spoofed_by_untrusted_clients(path: Path) {
    let www = docroot();
    // Apache trusts nobody here, so it shows the forwarding fields exactly as sent.
    let options = ApacheOptions {
        trusted_proxies: vec!["192.0.2.1".into()],
        ..ApacheOptions::default()
    };
    let apache = apache(&www, options).await;
    let front = Front::start_on(path, config(apache.addr)).await;
    // Apache refuses %2F in a path (AllowEncodedSlashes Off), so the query carries one.
    let raw_uri = "/env.php/a%20b/%7e?q=%2F+&x=%C3%A9&&";
    let spoofed = || {
        Request::get(raw_uri)
            .header("host", "shop.example")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .body(empty())
            .unwrap()
    };
    let mut client = Client::connect_from(Some(CLIENT_IP), front.addr).await;
    let (parts, body) = client.fetch(spoofed()).await;
    assert_eq!(parts.status, 200);
    assert_eq!(field(&body, "HTTP_X_FORWARDED_FOR"), "127.0.0.2");
    assert_eq!(field(&body, "HTTP_X_FORWARDED_PROTO"), "http");
    assert_eq!(field(&body, "HTTP_X_FORWARDED_HOST"), "shop.example");
    assert_eq!(field(&body, "HTTP_HOST"), "shop.example");
    assert_eq!(field(&body, "HTTP_VIA"), "1.1 khttpd-front");
    assert_eq!(field(&body, "HTTP_X_HOP"), "-");
    assert_eq!(field(&body, "REQUEST_URI"), raw_uri);
    assert_eq!(field(&body, "SERVER_PROTOCOL"), "HTTP/1.1");

    // A trusted proxy's chain is extended instead.
    let mut cfg = config(apache.addr);
    cfg.trusted_proxies = vec!["127.0.0.2/32".parse().unwrap()];
    let front = Front::start_on(path, cfg).await;
    let mut client = Client::connect_from(Some(CLIENT_IP), front.addr).await;
    let (_, body) = client.fetch(spoofed()).await;
    assert_eq!(field(&body, "HTTP_X_FORWARDED_FOR"), "6.6.6.6, 127.0.0.2");
    assert_eq!(field(&body, "HTTP_X_FORWARDED_PROTO"), "https");
    assert_eq!(field(&body, "HTTP_X_FORWARDED_HOST"), "evil.example");
}

async fn apache_sees_the_client_address_from_x_forwarded_for(path: Path) {
    let www = docroot();
    let apache = apache(&www, ApacheOptions::default()).await;
    let front = Front::start_on(path, config(apache.addr)).await;
    let mut client = Client::connect_from(Some(CLIENT_IP), front.addr).await;
    let req = Request::get("/env.php?who")
        .header("host", "front.test")
        .header("x-forwarded-for", "6.6.6.6")
        .body(empty())
        .unwrap();
    let (_, body) = client.fetch(req).await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "127.0.0.2");
    let line = apache
        .wait_for_log_line("/env.php?who", Duration::from_secs(5))
        .expect("access log line");
    assert!(line.starts_with("127.0.0.2 127.0.0.1 "), "{line}");
    assert!(line.ends_with("\"1.1 khttpd-front\""), "{line}");
}

async fn proxy_protocol_shows_the_client(version: ProxyProtocol) {
    let www = docroot();
    let options = ApacheOptions {
        proxy_protocol: true,
        ..ApacheOptions::default()
    };
    let apache = apache(&www, options).await;
    let front = Front::start(BridgeConfig {
        proxy_protocol: version,
        ..config(apache.addr)
    })
    .await;
    let mut client = Client::connect_from(Some(CLIENT_IP), front.addr).await;
    let mut ports = HashSet::new();
    for _ in 0..3 {
        let (parts, body) = client.get("/env.php").await;
        assert_eq!(parts.status, 200, "{body}");
        assert_eq!(field(&body, "REMOTE_ADDR"), "127.0.0.2");
        // REMOTE_PORT is the backend connection's own port: the session keeps one connection.
        ports.insert(field(&body, "REMOTE_PORT").to_owned());
    }
    assert_eq!(ports.len(), 1, "{ports:?}");
    let (_, body) = client.get("/index.php").await;
    assert_eq!(body, "hello from php\n");
    // A second client gets a connection of its own, with its own address.
    let mut other = Client::connect(front.addr).await;
    let (_, body) = other.get("/env.php").await;
    assert_eq!(field(&body, "REMOTE_ADDR"), "127.0.0.1");
    assert!(!ports.contains(field(&body, "REMOTE_PORT")));
    let line = apache
        .wait_for_log_line("GET /index.php", Duration::from_secs(5))
        .expect("access log line");
    assert!(line.starts_with("127.0.0.2 "), "{line}");
    let s = &front.stats()[0];
    assert_eq!((s.requests, s.retries, s.idle_pooled), (5, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_gives_apache_the_client_address() {
    bounded(proxy_protocol_shows_the_client(ProxyProtocol::V2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_gives_apache_the_client_address() {
    bounded(proxy_protocol_shows_the_client(ProxyProtocol::V1)).await;
}

async fn stopped_apache_is_refused_then_recovers(path: Path) {
    let www = docroot();
    let mut apache = apache(&www, ApacheOptions::default()).await;
    let front = Front::start_on(path, config(apache.addr)).await;
    let (parts, _) = fetch_once(front.addr, get("/index.php")).await;
    assert_eq!(parts.status, 200);

    let mut apache = tokio::task::spawn_blocking(move || {
        apache.stop();
        apache
    })
    .await
    .unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let (parts, body) = fetch_once(front.addr, get("/index.php")).await;
        assert_status(&parts, 502, "refused");
        assert_eq!(body, "The backend server could not be reached.");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let s = &front.stats()[0];
    assert!(!s.healthy);
    assert_eq!(s.refused, 2);

    let apache = tokio::task::spawn_blocking(move || {
        apache.start_again();
        apache
    })
    .await
    .unwrap();
    tokio::time::sleep(front.bridge.upstreams().config().fail_cooldown).await;
    let (parts, body) = fetch_once(front.addr, get("/index.php")).await;
    assert_eq!(
        (parts.status.as_u16(), body.as_str()),
        (200, "hello from php\n")
    );
    assert!(front.stats()[0].healthy);
    drop(apache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_request_without_host_gets_the_front_address_as_host() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let www = docroot();
        let apache = apache(&www, ApacheOptions::default()).await;
        let front = Front::start(config(apache.addr)).await;
        let mut raw = tokio::net::TcpStream::connect(front.addr).await.unwrap();
        raw.write_all(b"GET /env.php HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        raw.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(field(body, "HTTP_HOST"), front.addr.to_string());
        assert_eq!(field(body, "HTTP_X_FORWARDED_HOST"), front.addr.to_string());
        assert_eq!(field(body, "HTTP_VIA"), "1.0 khttpd-front");
        assert_eq!(field(body, "SERVER_PROTOCOL"), "HTTP/1.1");
    })
    .await;
}

async fn odd_statuses_and_reasons_reach_the_client(path: Path) {
    let www = docroot();
    let apache = apache(&www, ApacheOptions::default()).await;
    let front = Front::start_on(path, config(apache.addr)).await;
    let mut client = Client::connect(front.addr).await;
    let mut direct = Client::connect(apache.addr).await;
    for (page, body) in [("/odd.php", "odd\n"), ("/bare.php", "bare\n")] {
        // Whatever Apache makes of it (it turns an unknown 599 into 500), the client gets the same.
        let (want, _) = direct.get(page).await;
        let (parts, got) = client.get(page).await;
        assert_eq!((parts.status, got.as_str()), (want.status, body), "{page}");
    }
    let (parts, _) = client.get("/odd.php").await;
    assert_eq!(parts.status.as_u16(), 499);
    // The connection and the daemon are still there.
    let (parts, got) = client.get("/index.php").await;
    assert_eq!(
        (parts.status.as_u16(), got.as_str()),
        (200, "hello from php\n")
    );
}

/// Issue 16, pool hygiene: bytes a script writes past its own Content-Length never reach another
/// request, whether they come with the answer (one write) or while the connection idles in the
/// pool (written 200 ms later, the next request 600 ms later). Bytes that arrive after the
/// connection was taken again are not covered: nothing on an HTTP/1.1 connection tells them from
/// the next answer (nginx's upstream keepalive has the same window).
async fn bytes_past_the_content_length_never_answer_the_next_request(path: Path) {
    let www = docroot();
    let apache = apache(&www, ApacheOptions::default()).await;
    let front = Front::start_on(
        path,
        BridgeConfig {
            max_conns: 1,
            ..config(apache.addr)
        },
    )
    .await;
    for (page, idle) in [
        ("/poison.php", Duration::ZERO),
        ("/poison.php?us=200000", Duration::from_millis(600)),
    ] {
        for _ in 0..3 {
            let (parts, body) = fetch_once(front.addr, get(page)).await;
            assert_eq!((parts.status.as_u16(), body.as_str()), (200, "hello"));
            tokio::time::sleep(idle).await;
            let mut client = Client::connect(front.addr).await;
            for _ in 0..3 {
                let (parts, body) = client.get("/index.php").await;
                assert!(
                    parts.headers.get("set-cookie").is_none(),
                    "forged: {parts:?}"
                );
                assert_eq!(
                    (parts.status.as_u16(), body.as_str()),
                    (200, "hello from php\n")
                );
            }
        }
    }
}

both_paths!(
    odd_statuses_and_reasons_reach_the_client,
    bytes_past_the_content_length_never_answer_the_next_request,
    php_page_comes_back_without_hop_by_hop_fields,
    download_of_50_mib_streams_through,
    sequential_requests_reuse_few_backend_connections,
    forwarding_fields_cannot_be_spoofed_by_untrusted_clients,
    apache_sees_the_client_address_from_x_forwarded_for,
    stopped_apache_is_refused_then_recovers,
);
