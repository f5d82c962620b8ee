//! Faults Apache cannot produce on demand, from small in-process backends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use khttpd_bridge::{BridgeConfig, ProxyProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn no_backend_is_a_502(path: Path) {
    let front = Front::start_on(path, BridgeConfig::default()).await;
    let (parts, _) = fetch_once(front.addr, get("/x.php")).await;
    assert_status(&parts, 502, "no_backend");
}

async fn reset_before_the_answer_is_a_502(path: Path) {
    let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
        let mut buf = Vec::new();
        read_head(&mut s, &mut buf).await;
        // SO_LINGER 0: close sends RST instead of FIN.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    })
    .await;
    let front = Front::start_on(path, config(backend.addr)).await;
    let (parts, _) = fetch_once(front.addr, get("/x.php")).await;
    assert_status(&parts, 502, "reset");
    let s = &front.stats()[0];
    assert_eq!((s.reset, s.retries, s.healthy), (1, 0, false));
}

async fn close_before_the_answer_is_a_502(path: Path) {
    let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
        let mut buf = Vec::new();
        read_head(&mut s, &mut buf).await;
    })
    .await;
    let front = Front::start_on(path, config(backend.addr)).await;
    let (parts, _) = fetch_once(front.addr, get("/x.php")).await;
    assert_status(&parts, 502, "reset");
}

/// Reads request heads and never answers.
async fn stall(mut s: TcpStream) {
    let mut buf = Vec::new();
    while read_head(&mut s, &mut buf).await.is_some() {}
}

async fn stalled_backend_is_a_504_after_the_timeout(path: Path) {
    let backend = FakeBackend::start(|s, _| stall(s)).await;
    let front = Front::start_on(
        path,
        BridgeConfig {
            timeout: Duration::from_millis(300),
            ..config(backend.addr)
        },
    )
    .await;
    let started = Instant::now();
    let (parts, _) = fetch_once(front.addr, get("/slow.php")).await;
    let took = started.elapsed();
    assert_status(&parts, 504, "timeout");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let s = &front.stats()[0];
    assert_eq!((s.timeouts, s.in_flight, s.healthy), (1, 0, false));
}

async fn connect_timeout_is_a_504(path: Path) {
    // A full accept queue: the listener never accepts, the SYNs of later connects go
    // unanswered once the backlog is used up.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let front = Front::start_on(
        path,
        BridgeConfig {
            timeout: Duration::from_millis(300),
            ..config(addr)
        },
    )
    .await;
    let (parts, _) = fetch_once(front.addr, get("/x.php")).await;
    assert_status(&parts, 504, "timeout");
    assert_eq!(front.stats()[0].timeouts, 1);
}

async fn garbage_answer_is_a_502_and_the_connection_is_not_reused(path: Path) {
    let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
        let mut buf = Vec::new();
        while read_head(&mut s, &mut buf).await.is_some() {
            if s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await.is_err() {
                return;
            }
        }
    })
    .await;
    let front = Front::start_on(path, config(backend.addr)).await;
    let mut client = Client::connect(front.addr).await;
    for _ in 0..2 {
        let (parts, _) = client.get("/x.php").await;
        assert_status(&parts, 502, "bad_response");
    }
    assert_eq!(backend.accepted(), 2);
    let s = &front.stats()[0];
    assert_eq!((s.bad_responses, s.idle_pooled, s.healthy), (2, 0, true));
}

/// Answers the first request of its first connection, then closes that connection on the
/// next request without answering (Apache's keep-alive timeout racing the request); later
/// connections answer normally.
async fn closes_after_first(mut s: TcpStream, n: usize) {
    if n > 0 {
        return answer_ok(s).await;
    }
    let mut buf = Vec::new();
    if read_head(&mut s, &mut buf).await.is_none() {
        return;
    }
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .await
        .unwrap();
    read_head(&mut s, &mut buf).await;
}

async fn get_on_a_closed_reused_connection_is_sent_again(path: Path) {
    let backend = FakeBackend::start(closes_after_first).await;
    let front = Front::start_on(path, config(backend.addr)).await;
    let mut client = Client::connect(front.addr).await;
    let (parts, body) = client.get("/a.php").await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "ok"));
    eventually("connection pooled", || front.stats()[0].idle_pooled == 1).await;
    let (parts, body) = client.get("/b.php").await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "ok"));
    assert_eq!(backend.accepted(), 2);
    let s = &front.stats()[0];
    assert_eq!((s.retries, s.reset, s.healthy), (1, 0, true));
}

#[tokio::test]
async fn post_with_a_body_on_a_closed_reused_connection_is_not_replayed() {
    bounded(async {
        let backend = FakeBackend::start(closes_after_first).await;
        let front = Front::start(config(backend.addr)).await;
        let mut client = Client::connect(front.addr).await;
        let (parts, _) = client.get("/a.php").await;
        assert_eq!(parts.status, 200);
        eventually("connection pooled", || front.stats()[0].idle_pooled == 1).await;
        let post = Request::post("/b.php")
            .header("host", "front.test")
            .body(full("x=1"))
            .unwrap();
        let (parts, _) = client.fetch(post).await;
        assert_status(&parts, 502, "reset");
        assert_eq!(backend.accepted(), 1);
        let s = &front.stats()[0];
        // A reused connection the backend closed says nothing about the backend's health.
        assert_eq!((s.retries, s.reset, s.healthy), (0, 1, true));
    })
    .await;
}

async fn idle_connections_past_the_idle_timeout_are_not_used(path: Path) {
    let backend = ok_backend().await;
    let front = Front::start_on(
        path,
        BridgeConfig {
            idle_timeout: Duration::from_millis(200),
            ..config(backend.addr)
        },
    )
    .await;
    let mut client = Client::connect(front.addr).await;
    client.get("/a.php").await;
    eventually("connection pooled", || front.stats()[0].idle_pooled == 1).await;
    client.get("/b.php").await;
    assert_eq!(backend.accepted(), 1);
    eventually("connection pooled", || front.stats()[0].idle_pooled == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (parts, _) = client.get("/c.php").await;
    assert_eq!(parts.status, 200);
    assert_eq!(backend.accepted(), 2);
    assert_eq!(front.stats()[0].retries, 0);
}

async fn full_queue_is_a_quick_503_with_retry_after(path: Path) {
    let backend = FakeBackend::start(|s, _| stall(s)).await;
    let front = Front::start_on(
        path,
        BridgeConfig {
            max_conns: 1,
            queue_timeout: Duration::from_millis(200),
            ..config(backend.addr)
        },
    )
    .await;
    let addr = front.addr;
    let first = tokio::spawn(async move { fetch_once(addr, get("/stuck.php")).await });
    eventually("first request in flight", || {
        front.stats()[0].in_flight == 1
    })
    .await;
    let started = Instant::now();
    let (parts, body) = fetch_once(front.addr, get("/next.php")).await;
    assert_status(&parts, 503, "queue_full");
    assert_eq!(parts.headers["retry-after"], "1");
    assert!(body.contains("busy"));
    assert!(started.elapsed() < Duration::from_secs(1));
    let s = &front.stats()[0];
    assert_eq!((s.queue_full, s.in_flight, s.healthy), (1, 1, true));
    first.abort();
}

async fn client_leaving_cancels_the_backend_request(path: Path) {
    let closed = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&closed);
    let backend = FakeBackend::start(move |mut s: TcpStream, _| {
        let seen = Arc::clone(&seen);
        async move {
            let mut buf = Vec::new();
            read_head(&mut s, &mut buf).await;
            // Never answers; notices when the front closes the connection.
            let mut b = [0u8; 64];
            while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
            seen.store(true, Ordering::SeqCst);
        }
    })
    .await;
    let front = Front::start_on(path, config(backend.addr)).await;
    let mut client = Client::connect(front.addr).await;
    let pending = tokio::spawn(async move { client.send(get("/slow.php")).await });
    eventually("request in flight", || front.stats()[0].in_flight == 1).await;
    pending.abort();
    eventually("backend connection closed", || {
        closed.load(Ordering::SeqCst)
    })
    .await;
    eventually("slot freed", || front.stats()[0].in_flight == 0).await;
    assert_eq!(front.stats()[0].idle_pooled, 0);
}

async fn half_read_download_never_goes_back_to_the_pool(path: Path) {
    let backend = FakeBackend::start(|mut s: TcpStream, n| async move {
        if n > 0 {
            return answer_ok(s).await;
        }
        let mut buf = Vec::new();
        read_head(&mut s, &mut buf).await;
        let total = 64usize << 20;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'z'; 1 << 16];
        for _ in 0..total / chunk.len() {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let front = Front::start_on(path, config(backend.addr)).await;
    let mut client = Client::connect(front.addr).await;
    let resp = client.send(get("/big.php")).await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.into_data().unwrap().iter().all(|&b| b == b'z'));
    drop(body);
    drop(client);
    eventually("slot freed", || front.stats()[0].in_flight == 0).await;
    assert_eq!(front.stats()[0].idle_pooled, 0);
    let (parts, body) = fetch_once(front.addr, get("/a.php")).await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "ok"));
    assert_eq!(backend.accepted(), 2);
}

#[tokio::test]
async fn slow_upload_is_not_cut_off_by_the_response_timeout() {
    bounded(async {
        let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
            let mut buf = Vec::new();
            let head = read_head(&mut s, &mut buf).await.unwrap();
            read_body(&mut s, &mut buf, content_length(&head)).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
                .await
                .unwrap();
        })
        .await;
        let front = Front::start(BridgeConfig {
            timeout: Duration::from_millis(300),
            ..config(backend.addr)
        })
        .await;
        // Five pieces 150 ms apart: 750 ms in all, more than twice the timeout.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                tx.send(Bytes::from_static(b"12345")).await.unwrap();
            }
        });
        let body = ChannelBody(rx).boxed();
        let req = Request::post("/upload.php")
            .header("host", "front.test")
            .header("content-length", "25")
            .body(body)
            .unwrap();
        let (parts, body) = fetch_once(front.addr, req).await;
        assert_eq!((parts.status.as_u16(), body.as_str()), (200, "done"));
    })
    .await;
}

/// A request body fed through a channel, one frame per message.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(http_body::Frame::data(b))))
    }
}

async fn refused_backend_fails_over_to_a_healthy_one(path: Path) {
    let good = ok_backend().await;
    let front = Front::start_on(
        path,
        BridgeConfig {
            backends: vec![dead_addr().into(), good.addr.into()],
            fail_cooldown: Duration::from_secs(60),
            ..config(good.addr)
        },
    )
    .await;
    for _ in 0..4 {
        let (parts, body) = fetch_once(front.addr, get("/x.php")).await;
        assert_eq!((parts.status.as_u16(), body.as_str()), (200, "ok"));
    }
    let s = front.stats();
    assert_eq!((s[0].refused, s[0].requests, s[0].healthy), (1, 1, false));
    assert_eq!((s[1].requests, s[1].healthy), (4, true));
}

async fn healthy_backends_take_turns(path: Path) {
    let (a, b) = (ok_backend().await, ok_backend().await);
    let front = Front::start_on(
        path,
        BridgeConfig {
            backends: vec![a.addr.into(), b.addr.into()],
            ..config(a.addr)
        },
    )
    .await;
    for _ in 0..6 {
        let (parts, _) = fetch_once(front.addr, get("/x.php")).await;
        assert_eq!(parts.status, 200);
    }
    let s = front.stats();
    assert_eq!((s[0].requests, s[1].requests), (3, 3));
}

async fn response_hop_by_hop_fields_are_dropped(path: Path) {
    let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
        let mut buf = Vec::new();
        read_head(&mut s, &mut buf).await;
        s.write_all(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n\
              Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    })
    .await;
    let front = Front::start_on(path, config(backend.addr)).await;
    let (parts, body) = fetch_once(front.addr, get("/x.php")).await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "hello"));
    assert_eq!(parts.headers["x-kept"], "yes");
    for gone in ["x-private", "keep-alive", "proxy-connection"] {
        assert!(parts.headers.get(gone).is_none(), "{gone}: {parts:?}");
    }
}

#[tokio::test]
async fn proxy_header_opens_each_session_connection() {
    bounded(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let backend = FakeBackend::start(move |mut s: TcpStream, _| {
            let tx = tx.clone();
            async move {
                let mut buf = Vec::new();
                while let Some(head) = read_head(&mut s, &mut buf).await {
                    tx.send(head.into_bytes()).unwrap();
                    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                }
            }
        })
        .await;
        let front = Front::start(BridgeConfig {
            proxy_protocol: ProxyProtocol::V1,
            ..config(backend.addr)
        })
        .await;
        let mut client = Client::connect(front.addr).await;
        client.get("/a.php").await;
        client.get("/b.php").await;
        let first = String::from_utf8(rx.recv().await.unwrap()).unwrap();
        let expected = format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\nGET /a.php HTTP/1.1\r\n",
            client.local.port(),
            front.addr.port()
        );
        assert!(first.starts_with(&expected), "{first:?}");
        let second = String::from_utf8(rx.recv().await.unwrap()).unwrap();
        assert!(second.starts_with("GET /b.php HTTP/1.1\r\n"), "{second:?}");
        assert_eq!(backend.accepted(), 1);
        // A session's connection closes with it.
        drop(client);
        let mut other = Client::connect(front.addr).await;
        other.get("/c.php").await;
        assert_eq!(backend.accepted(), 2);
    })
    .await;
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    bounded(async {
        let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
            let mut buf = Vec::new();
            let head = read_head(&mut s, &mut buf).await.unwrap();
            assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
            s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            )
            .await
            .unwrap();
            s.write_all(&buf).await.unwrap();
            let mut b = [0u8; 1024];
            loop {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => s.write_all(&b[..n]).await.unwrap(),
                }
            }
        })
        .await;
        let front = Front::start(config(backend.addr)).await;
        let mut client = Client::connect(front.addr).await;
        let req = Request::get("/ws")
            .header("host", "front.test")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(empty())
            .unwrap();
        let mut resp = client.send(req).await;
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["upgrade"], "websocket");
        let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
        let mut io = TokioIo::new(upgraded);
        for msg in [&b"ping"[..], b"pong pong", &[0u8, 255, 13, 10]] {
            io.write_all(msg).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            io.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }
        assert_eq!(front.stats()[0].in_flight, 1);
        drop(io);
        eventually("tunnel closed", || front.stats()[0].in_flight == 0).await;
    })
    .await;
}

#[tokio::test]
async fn client_abandoning_an_upload_frees_the_backend() {
    bounded(async {
        let closed = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&closed);
        let backend = FakeBackend::start(move |mut s: TcpStream, _| {
            let seen = Arc::clone(&seen);
            async move {
                let mut b = [0u8; 65536];
                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
                seen.store(true, Ordering::SeqCst);
            }
        })
        .await;
        let front = Front::start(config(backend.addr)).await;
        let mut raw = TcpStream::connect(front.addr).await.unwrap();
        raw.write_all(
            b"POST /upload.php HTTP/1.1\r\nHost: front.test\r\nContent-Length: 1048576\r\n\r\n",
        )
        .await
        .unwrap();
        raw.write_all(&[b'x'; 1000]).await.unwrap();
        eventually("request in flight", || front.stats()[0].in_flight == 1).await;
        drop(raw);
        eventually("backend connection closed", || {
            closed.load(Ordering::SeqCst)
        })
        .await;
        eventually("slot freed", || front.stats()[0].in_flight == 0).await;
        let s = &front.stats()[0];
        assert_eq!((s.idle_pooled, s.healthy), (0, true));
    })
    .await;
}

both_paths!(
    no_backend_is_a_502,
    reset_before_the_answer_is_a_502,
    close_before_the_answer_is_a_502,
    stalled_backend_is_a_504_after_the_timeout,
    connect_timeout_is_a_504,
    garbage_answer_is_a_502_and_the_connection_is_not_reused,
    get_on_a_closed_reused_connection_is_sent_again,
    idle_connections_past_the_idle_timeout_are_not_used,
    full_queue_is_a_quick_503_with_retry_after,
    client_leaving_cancels_the_backend_request,
    half_read_download_never_goes_back_to_the_pool,
    refused_backend_fails_over_to_a_healthy_one,
    healthy_backends_take_turns,
    response_hop_by_hop_fields_are_dropped,
);
