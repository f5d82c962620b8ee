//! A tiny front (hyper server calling `Session::forward`), clients, and fake backends.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use khttpd_bridge::{
    BackendStats, Bridge, BridgeConfig, BridgeError, ClientInfo, Framing, RelayRequest, Session,
    Upstreams,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Every test finishes within this, or fails.
pub(crate) const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// Runs a test body under [`TEST_DEADLINE`].
pub(crate) async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_DEADLINE, f)
        .await
        .expect("test ran past its deadline");
}

/// The header the test front puts on its own error answers: the error's kind.
pub(crate) const ERROR_KIND: &str = "x-bridge-error";

pub(crate) type ClientBody = BoxBody<Bytes, Infallible>;
type FrontBody = Either<khttpd_bridge::AnswerBody, Full<Bytes>>;

/// The two ways a request reaches the backend; the tests of plain GETs run through both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// `Session::forward`, through hyper on both sides.
    Forward,
    /// `Session::relay`, the fast path's raw relay.
    Relay,
}

/// Runs each named `async fn(Path)` test once per [`Path`], under [`TEST_DEADLINE`].
macro_rules! both_paths {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn forward() {
                $crate::support::bounded(super::$name($crate::support::Path::Forward)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn relay() {
                $crate::support::bounded(super::$name($crate::support::Path::Relay)).await
            }
        }
    )*};
}
pub(crate) use both_paths;

/// A front on 127.0.0.1:0 whose every request goes through `Session::forward`, with
/// `.with_upgrades()` on its connections as the real front must have; or, on [`Path::Relay`],
/// a raw front like khttpd-front's fast path whose every request goes through `Session::relay`.
pub(crate) struct Front {
    pub addr: SocketAddr,
    pub bridge: Arc<Bridge>,
}

impl Front {
    pub(crate) async fn start_on(path: Path, cfg: BridgeConfig) -> Front {
        match path {
            Path::Forward => Front::start(cfg).await,
            Path::Relay => Front::start_relay(cfg).await,
        }
    }

    /// The relay front: GET and HEAD only (anything else is a test error).
    pub(crate) async fn start_relay(cfg: BridgeConfig) -> Front {
        let bridge = Bridge::new(Upstreams::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let b = Arc::clone(&bridge);
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                stream.set_nodelay(true).unwrap();
                let local = stream.local_addr().unwrap();
                let session = b.session(ClientInfo {
                    peer,
                    local,
                    scheme: "http",
                });
                tokio::spawn(relay_connection(stream, session));
            }
        });
        Front { addr, bridge }
    }

    pub(crate) async fn start(cfg: BridgeConfig) -> Front {
        let bridge = Bridge::new(Upstreams::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let b = Arc::clone(&bridge);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                stream.set_nodelay(true).unwrap();
                let local = stream.local_addr().unwrap();
                let session = Arc::new(b.session(ClientInfo {
                    peer,
                    local,
                    scheme: "http",
                }));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let session = Arc::clone(&session);
                        async move {
                            Ok::<_, Infallible>(match session.forward(req).await {
                                Ok(resp) => resp.map(Either::Left),
                                Err(e) => {
                                    let mut r = Response::new(Either::Right(Full::new(
                                        Bytes::from_static(e.detail().as_bytes()),
                                    )));
                                    *r.status_mut() = e.status();
                                    r.headers_mut()
                                        .insert(ERROR_KIND, e.kind().parse().unwrap());
                                    if let Some(secs) = e.retry_after() {
                                        r.headers_mut().insert("retry-after", secs.into());
                                    }
                                    r
                                }
                            }
                                as Response<FrontBody>)
                        }
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Front { addr, bridge }
    }

    pub(crate) fn stats(&self) -> Vec<BackendStats> {
        self.bridge.upstreams().snapshot()
    }
}

/// One client connection of the relay front: heads read with httparse, answers written by
/// `Relayed::send`, errors as the forward front gives them.
async fn relay_connection(mut stream: TcpStream, session: Session) {
    let mut buf = Vec::new();
    loop {
        let consumed = loop {
            let mut storage = [httparse::EMPTY_HEADER; 64];
            match httparse::Request::new(&mut storage).parse(&buf) {
                Ok(httparse::Status::Complete(n)) => break n,
                Ok(httparse::Status::Partial) => {}
                Err(e) => panic!("test client sent a bad head: {e}"),
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut storage);
        req.parse(&buf[..consumed]).unwrap();
        let method = req.method.unwrap();
        assert!(
            method == "GET" || method == "HEAD",
            "the relay takes GET and HEAD"
        );
        let request = RelayRequest {
            method,
            target: req.path.unwrap(),
            fields: req.headers,
            request_id: None,
        };
        // Resolves when the client closes (a readable byte is the next pipelined request).
        let gone = async {
            let mut probe = [0u8; 1];
            if matches!(stream.peek(&mut probe).await, Ok(1..)) {
                std::future::pending::<()>().await;
            }
        };
        let result = session.relay(&request, gone).await;
        let mut head = Vec::new();
        let sent = match result {
            Ok(relayed) => {
                head.extend_from_slice(format!("HTTP/1.1 {} X\r\n", relayed.status()).as_bytes());
                for (n, v) in relayed.fields() {
                    head.extend_from_slice(n);
                    head.extend_from_slice(b": ");
                    head.extend_from_slice(v);
                    head.extend_from_slice(b"\r\n");
                }
                let close = match relayed.framing() {
                    Framing::Length(n) => {
                        head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
                        false
                    }
                    Framing::Chunked => {
                        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
                        false
                    }
                    Framing::Empty => false,
                    Framing::UntilClose => {
                        head.extend_from_slice(b"connection: close\r\n");
                        true
                    }
                };
                head.extend_from_slice(b"\r\n");
                relayed.send(&mut stream, &head).await.is_ok() && !close
            }
            Err(BridgeError::ClientGone) => return,
            Err(e) => {
                let detail = e.detail();
                let mut text = format!(
                    "HTTP/1.1 {}\r\n{ERROR_KIND}: {}\r\ncontent-length: {}\r\n",
                    e.status(),
                    e.kind(),
                    detail.len()
                );
                if let Some(secs) = e.retry_after() {
                    text.push_str(&format!("retry-after: {secs}\r\n"));
                }
                text.push_str("\r\n");
                text.push_str(detail);
                stream.write_all(text.as_bytes()).await.is_ok()
            }
        };
        if !sent {
            return;
        }
        buf.drain(..consumed);
    }
}

/// A client connection to the front, optionally from a chosen local address (127.0.0.2).
pub(crate) struct Client {
    pub sender: client::SendRequest<ClientBody>,
    pub local: SocketAddr,
}

impl Client {
    pub(crate) async fn connect(front: SocketAddr) -> Client {
        Client::connect_from(None, front).await
    }

    pub(crate) async fn connect_from(ip: Option<IpAddr>, front: SocketAddr) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(ip) = ip {
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
        }
        let stream = socket.connect(front).await.unwrap();
        let local = stream.local_addr().unwrap();
        let (sender, conn) = client::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        Client { sender, local }
    }

    pub(crate) async fn send(&mut self, req: Request<ClientBody>) -> Response<Incoming> {
        self.sender.ready().await.unwrap();
        self.sender.send_request(req).await.unwrap()
    }

    /// Sends and reads the whole answer.
    pub(crate) async fn fetch(
        &mut self,
        req: Request<ClientBody>,
    ) -> (http::response::Parts, String) {
        let (parts, body) = self.send(req).await.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts, String::from_utf8_lossy(&bytes).into_owned())
    }

    pub(crate) async fn get(&mut self, path: &str) -> (http::response::Parts, String) {
        self.fetch(get(path)).await
    }
}

/// One request on a fresh client connection.
pub(crate) async fn fetch_once(
    front: SocketAddr,
    req: Request<ClientBody>,
) -> (http::response::Parts, String) {
    Client::connect(front).await.fetch(req).await
}

pub(crate) fn empty() -> ClientBody {
    Full::new(Bytes::new()).boxed()
}

pub(crate) fn full(data: impl Into<Bytes>) -> ClientBody {
    Full::new(data.into()).boxed()
}

pub(crate) fn get(path: &str) -> Request<ClientBody> {
    Request::get(path)
        .header("host", "front.test")
        .body(empty())
        .unwrap()
}

/// A body of `total` bytes in `chunk`-sized frames, made as it is polled (never all in
/// memory); `exact` decides whether it announces its length (Content-Length) or not (chunked).
pub(crate) struct Repeat {
    chunk: Bytes,
    remaining: u64,
    exact: bool,
}

impl Repeat {
    pub(crate) fn body(total: u64, chunk: usize, exact: bool) -> ClientBody {
        Repeat {
            chunk: Bytes::from(vec![b'x'; chunk]),
            remaining: total,
            exact,
        }
        .boxed()
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// Reads a body to its end, counting bytes and checking every one is `byte`.
pub(crate) async fn drain_counting(mut body: Incoming, byte: u8) -> u64 {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(data.iter().all(|&b| b == byte), "unexpected body bytes");
            n += data.len() as u64;
        }
    }
    n
}

/// `KEY=value` lines (as the PHP fixtures print them) as a lookup.
pub(crate) fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in:\n{text}"))
}

pub(crate) fn error_kind(parts: &http::response::Parts) -> &str {
    parts
        .headers
        .get(ERROR_KIND)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

pub(crate) fn assert_status(parts: &http::response::Parts, status: u16, kind: &str) {
    assert_eq!(
        parts.status,
        StatusCode::from_u16(status).unwrap(),
        "{parts:?}"
    );
    assert_eq!(error_kind(parts), kind, "{parts:?}");
}

/// Polls `check` until it holds or 5 s pass.
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// A raw-TCP backend: `handle(stream, n)` runs for the n-th accepted connection (0-based).
pub(crate) struct FakeBackend {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl FakeBackend {
    pub(crate) async fn start<F, Fut>(handle: F) -> FakeBackend
    where
        F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(stream, n));
            }
        });
        FakeBackend { addr, accepted }
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads one request head (up to the blank line); `None` at EOF. Bytes after the head stay
/// in `buf`.
pub(crate) async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The Content-Length of a raw head (0 when absent).
pub(crate) fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// Reads `n` body bytes (some may already be in `buf`).
pub(crate) async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) {
    while buf.len() < n {
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => panic!("body ended early"),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    buf.drain(..n);
}

/// Answers every request on the connection with `200 ok` (keep-alive).
pub(crate) async fn answer_ok(mut stream: TcpStream) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut stream, &mut buf).await {
        read_body(&mut stream, &mut buf, content_length(&head)).await;
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A backend that answers `200 ok` to everything.
pub(crate) async fn ok_backend() -> FakeBackend {
    FakeBackend::start(|stream, _| answer_ok(stream)).await
}

/// A loopback address nothing listens on.
pub(crate) fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A config for tests: short deadlines, one backend.
pub(crate) fn config(backend: SocketAddr) -> BridgeConfig {
    BridgeConfig {
        backends: vec![backend.into()],
        timeout: Duration::from_secs(5),
        queue_timeout: Duration::from_secs(2),
        fail_cooldown: Duration::from_millis(300),
        ..BridgeConfig::default()
    }
}
