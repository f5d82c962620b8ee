//! The relay's own framing work: finding the end of each answer so the connection can be
//! reused, passing the bytes through unchanged, and never pooling a connection whose answer
//! did not end cleanly. Faults shared with `forward` run through both paths in `faults.rs`.

use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use khttpd_bridge::BridgeConfig;

use crate::support::*;

/// Writes `parts` one by one with a pause between, so the front sees them in separate reads.
async fn dribble(s: &mut TcpStream, parts: &[&[u8]]) {
    for p in parts {
        s.write_all(p).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn chunked_in_pieces(path: Path) {
    let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
        let mut buf = Vec::new();
        while read_head(&mut s, &mut buf).await.is_some() {
            dribble(
                &mut s,
                &[
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kept: 1\r\n\r\n",
                    b"5\r\nhel",
                    b"lo\r\n",
                    b"6;ext=\"x\"\r\n wor",
                    b"ld\r",
                    b"\n0\r\nX-Trailer: t\r\n",
                    b"\r\n",
                ],
            )
            .await;
        }
    })
    .await;
    let front = Front::start_on(path, config(backend.addr)).await;
    let mut client = Client::connect(front.addr).await;
    for _ in 0..3 {
        let (parts, body) = client.get("/chunks.php").await;
        assert_eq!((parts.status.as_u16(), body.as_str()), (200, "hello world"));
        assert_eq!(parts.headers["x-kept"], "1");
    }
    // Each answer's end was found: one backend connection carried all three.
    assert_eq!(backend.accepted(), 1);
    eventually("connection pooled", || front.stats()[0].idle_pooled == 1).await;
}

async fn body_until_close_reaches_the_client(path: Path) {
    let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
        let mut buf = Vec::new();
        read_head(&mut s, &mut buf).await;
        dribble(
            &mut s,
            &[b"HTTP/1.1 200 OK\r\n\r\nno ", b"length ", b"here"],
        )
        .await;
    })
    .await;
    let front = Front::start_on(path, config(backend.addr)).await;
    for _ in 0..2 {
        let (parts, body) = fetch_once(front.addr, get("/old.php")).await;
        assert_eq!(
            (parts.status.as_u16(), body.as_str()),
            (200, "no length here")
        );
    }
    assert_eq!(
        backend.accepted(),
        2,
        "a close-delimited answer ends its connection"
    );
    assert_eq!(front.stats()[0].idle_pooled, 0);
}

async fn informational_answers_are_skipped(path: Path) {
    let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
        let mut buf = Vec::new();
        read_head(&mut s, &mut buf).await;
        s.write_all(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )
        .await
        .unwrap();
    })
    .await;
    let front = Front::start_on(path, config(backend.addr)).await;
    let (parts, body) = fetch_once(front.addr, get("/hints.php")).await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "ok"));
}

both_paths!(
    chunked_in_pieces,
    body_until_close_reaches_the_client,
    informational_answers_are_skipped,
);

/// Bytes after the end of an answer mean the backend and the front disagree about framing:
/// the answer goes through as framed, the connection is never reused.
#[tokio::test]
async fn bytes_after_the_answer_keep_the_connection_out_of_the_pool() {
    bounded(async {
        let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
            let mut buf = Vec::new();
            while read_head(&mut s, &mut buf).await.is_some() {
                let sent = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        })
        .await;
        let front = Front::start_relay(config(backend.addr)).await;
        let mut client = Client::connect(front.addr).await;
        for _ in 0..2 {
            let (parts, body) = client.get("/x.php").await;
            assert_eq!((parts.status.as_u16(), body.as_str()), (200, "ok"));
        }
        assert_eq!(backend.accepted(), 2);
        assert_eq!(front.stats()[0].idle_pooled, 0);
    })
    .await;
}

/// A chunked body that goes wrong after its head was sent cannot become an error page: the
/// client's connection is cut, so the client sees an incomplete answer rather than a wrong one.
#[tokio::test]
async fn broken_chunked_framing_cuts_the_answer() {
    bounded(async {
        let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
            let mut buf = Vec::new();
            read_head(&mut s, &mut buf).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        })
        .await;
        let front = Front::start_relay(config(backend.addr)).await;
        let mut client = Client::connect(front.addr).await;
        client.sender.ready().await.unwrap();
        // The head may or may not have gone out before the bad chunk was found; either way
        // the answer must not look complete.
        if let Ok(resp) = client.sender.send_request(get("/bad.php")).await {
            assert_eq!(resp.status(), 200);
            assert!(resp.into_body().collect().await.is_err());
        }
        eventually("slot freed", || front.stats()[0].in_flight == 0).await;
        assert_eq!(front.stats()[0].idle_pooled, 0);
    })
    .await;
}

/// A backend that stops in the middle of a body is given up after the backend timeout, as
/// nginx's `proxy_read_timeout` does, and the client's answer is cut.
#[tokio::test]
async fn body_stall_is_cut_after_the_timeout() {
    bounded(async {
        let backend = FakeBackend::start(|mut s: TcpStream, _| async move {
            let mut buf = Vec::new();
            read_head(&mut s, &mut buf).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let front = Front::start_relay(BridgeConfig {
            timeout: Duration::from_millis(300),
            ..config(backend.addr)
        })
        .await;
        let started = std::time::Instant::now();
        let mut client = Client::connect(front.addr).await;
        let resp = client.send(get("/stall.php")).await;
        assert!(resp.into_body().collect().await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}
