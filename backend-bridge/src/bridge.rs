//! One main daemon's bridge and one client connection's session: the phases of a forwarded
//! request, `upstream_request → connect → send → upstream_response`.

use crate::addr::BackendAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::sync::{oneshot, Mutex};

use crate::body::{AnswerBody, ClientBody, Progress, ProxyBody};
use crate::connect::{self, GiveBack, Sender};
use crate::error::{BridgeError, Phase};
use crate::forwarded::{self, Origin};
use crate::hop::strip_hop_by_hop;
use crate::pool::Pool;
use crate::proxy_protocol;
use crate::raw::RawConn;
use crate::spool;
use crate::tunnel;
use crate::upstreams::{Slot, Upstreams};

/// What the backend must learn about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address (the TCP peer).
    pub peer: std::net::SocketAddr,
    /// The front's address the client connected to.
    pub local: std::net::SocketAddr,
    /// The scheme the client used: `"http"`.
    pub scheme: &'static str,
}

/// Which backend answered and how long its response head took (from sending the request), in
/// the extensions of every response [`Session::forward`] returns, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    /// The backend's address.
    pub addr: BackendAddr,
    /// From the first request byte sent to the complete response head.
    pub head_time: Duration,
}

/// One main daemon's side of the bridge: its idle connection pool, so the hot path takes no
/// lock that another daemon's thread contends for.
#[derive(Debug)]
pub struct Bridge {
    up: Arc<Upstreams>,
    /// Idle connections, used by the relay directly and lent to hyper's client
    /// ([`connect::lend`]): one pool for both.
    pub(crate) pool: Pool<RawConn>,
}

impl Bridge {
    /// A bridge for one main daemon over the shared `up`.
    pub fn new(up: Arc<Upstreams>) -> Arc<Bridge> {
        let cfg = up.config();
        let pool = Pool::new(up.len(), cfg.idle_timeout, cfg.max_conns);
        Arc::new(Bridge { up, pool })
    }

    /// The shared backend state.
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.up
    }

    /// A session for one client connection; create it when the connection is accepted and
    /// drop it with the connection.
    pub fn session(self: &Arc<Self>, client: ClientInfo) -> Session {
        let cfg = self.up.config();
        let peer = client.peer.ip();
        Session {
            bridge: Arc::clone(self),
            client,
            trusted: cfg.is_trusted(peer),
            preface: proxy_protocol::header(cfg.proxy_protocol, client.peer, client.local),
            own: Mutex::new(None),
        }
    }
}

/// One client connection's way to the backend. With the PROXY protocol on it holds the
/// client's own backend connection, opened on the first request and closed when the session
/// is dropped.
#[derive(Debug)]
pub struct Session {
    pub(crate) bridge: Arc<Bridge>,
    client: ClientInfo,
    /// Whether the client is a trusted proxy (its own forwarding fields are kept).
    trusted: bool,
    /// The PROXY header every backend connection of this session starts with, if any.
    pub(crate) preface: Option<Vec<u8>>,
    /// The session's own connection (PROXY mode), handed back once its last exchange is over.
    own: Mutex<Option<oneshot::Receiver<Parked>>>,
}

/// A connection between exchanges.
#[derive(Debug)]
struct Parked {
    backend: usize,
    sender: Sender,
    since: Instant,
}

/// Which connections a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A pooled connection shared with the daemon's other clients.
    Pooled,
    /// The session's own connection (PROXY protocol).
    Own,
    /// A connection of its own that is closed afterwards (upgrades).
    Dedicated,
}

/// A connection ready for the request, and its claim on a backend slot.
struct Conn {
    backend: usize,
    sender: Sender,
    /// A pooled connection's way back to the pool.
    back: Option<GiveBack>,
    reused: bool,
    slot: Slot,
}

/// The head of a request without a body, kept to send it again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// RFC 9110 §9.2.2: idempotent requests may be retried automatically, and only one without
    /// a body can be rebuilt (a streamed body is gone once sent).
    fn of(req: &Request<ProxyBody>) -> Option<Replay> {
        let idempotent = matches!(
            *req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        (idempotent && matches!(req.body(), ProxyBody::Empty)).then(|| Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    fn request(&self) -> Request<ProxyBody> {
        let mut req = Request::new(ProxyBody::Empty);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// A failed send: what went wrong, whether it looks like a connection the backend had already
/// closed, and the request itself when hyper never started writing it.
struct Failure {
    error: BridgeError,
    stale: bool,
    unsent: Option<Request<ProxyBody>>,
}

impl Session {
    /// The client this session serves.
    pub fn client(&self) -> ClientInfo {
        self.client
    }

    /// Who sent the session's requests, for the fields the backend sees. Made when needed rather
    /// than kept beside `client`, which holds the same addresses.
    pub(crate) fn origin(&self) -> Origin {
        Origin {
            peer: self.client.peer.ip(),
            local: self.client.local,
            scheme: self.client.scheme,
            trusted: self.trusted,
        }
    }

    /// Carries `req` to a backend and returns its response head; the bodies stream both ways
    /// as they are polled. Dropping the future (the client left) cancels the backend request
    /// and closes that backend connection.
    pub async fn forward<B: Into<ClientBody>>(
        &self,
        req: Request<B>,
    ) -> Result<Response<AnswerBody>, BridgeError> {
        let result = self.exchange(req.map(Into::into)).await;
        if let Err((e, backend)) = &result {
            tracing::debug!(
                client = %self.client.peer,
                backend = ?backend,
                kind = e.kind(),
                error = %e,
                "backend request failed"
            );
        }
        result.map_err(|(e, _)| e)
    }

    async fn exchange(
        &self,
        mut req: Request<ClientBody>,
    ) -> Result<Response<AnswerBody>, (BridgeError, Option<BackendAddr>)> {
        let up = &self.bridge.up;
        // upstream_request
        let upgrading = forwarded::is_upgrade(req.version(), req.headers());
        // Taken before the request is consumed: hyper resolves it once our 101 went out.
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut head, body) = req.into_parts();
        forwarded::backend_head(&mut head, &self.origin(), upgrading);
        let progress = Progress::new();
        let req = Request::from_parts(head, ProxyBody::from_client(body, &progress));
        let mode = if upgrading {
            Mode::Dedicated
        } else if self.preface.is_some() {
            Mode::Own
        } else {
            Mode::Pooled
        };
        // One exchange at a time per client connection, as HTTP/1.1 has it anyway.
        let mut own = self.own.lock().await;

        // connect
        let mut conn = self.connect(mode, &mut own).await?;
        let addr = up.backend(conn.backend).addr;
        let buffering = up.buffers(conn.backend);
        // Only a reused connection may turn out closed under us; keep a copy to resend then.
        let replay = if conn.reused { Replay::of(&req) } else { None };

        // send
        let sent_at = Instant::now();
        let mut response = self
            .send(&mut conn, req, replay.as_ref(), &progress)
            .await
            .map_err(|e| (e, Some(addr)))?;
        response.extensions_mut().insert(Upstream {
            addr,
            head_time: sent_at.elapsed(),
        });

        // upstream_response
        up.record_success(conn.backend);
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        match client_upgrade {
            Some(client_upgrade) if switching => {
                strip_hop_by_hop(response.headers_mut(), true);
                let backend_upgrade = hyper::upgrade::on(&mut response);
                tunnel::spawn(client_upgrade, backend_upgrade, conn.slot, addr);
                return Ok(response.map(AnswerBody::Direct));
            }
            _ if switching => {
                let e =
                    BridgeError::BadResponse("101 to a request that asked for no upgrade".into());
                up.record_failure(conn.backend, &e, true);
                return Err((e, Some(addr)));
            }
            _ => {
                strip_hop_by_hop(response.headers_mut(), false);
                self.release(conn, mode, &mut own);
            }
        }
        // upstream_response, read ahead of a slow client unless it must stream.
        let headers = response.headers();
        let streams = spool::streams(
            headers.get(CONTENT_TYPE).map(|v| v.as_bytes()),
            headers.get(spool::X_ACCEL_BUFFERING).map(|v| v.as_bytes()),
        );
        response.headers_mut().remove(spool::X_ACCEL_BUFFERING);
        let (parts, body) = response.into_parts();
        let body = if http_body::Body::is_end_stream(&body) {
            AnswerBody::Direct(body)
        } else if streams || !buffering {
            up.spool_stats.count_streamed();
            AnswerBody::Direct(body)
        } else {
            AnswerBody::spooled(body, up)
        };
        Ok(Response::from_parts(parts, body))
    }

    /// Sends the request on `conn` and waits for the response head. A request that failed on
    /// a reused connection the backend had closed goes once more on a fresh one, if hyper
    /// never started writing it or it is idempotent without a body (`replay`).
    async fn send(
        &self,
        conn: &mut Conn,
        mut req: Request<ProxyBody>,
        replay: Option<&Replay>,
        progress: &Progress,
    ) -> Result<Response<Incoming>, BridgeError> {
        let up = &self.bridge.up;
        let addr = up.backend(conn.backend).addr;
        let timeout = up.config().timeout;
        let mut retried = false;
        loop {
            progress.touch();
            let failure = match send_head(&mut conn.sender, req, timeout, progress).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            let again = match failure.unsent {
                Some(unsent) => Some(unsent),
                None if failure.stale && conn.reused => replay.map(Replay::request),
                None => None,
            };
            let Some(next) = again.filter(|_| !retried) else {
                up.record_failure(conn.backend, &failure.error, !conn.reused);
                return Err(failure.error);
            };
            tracing::debug!(
                backend = %addr,
                error = %failure.error,
                "reused connection was closed; sending again on a fresh one"
            );
            retried = true;
            up.count_retry(conn.backend);
            (conn.sender, conn.back) = self
                .fresh(conn.back.is_some(), addr)
                .await
                .inspect_err(|e| up.record_failure(conn.backend, e, true))?;
            conn.reused = false;
            req = next;
        }
    }

    /// Picks a backend, waits for a slot and finds a connection: the session's own, a pooled
    /// one, or a new one. A backend that cannot be connected to is skipped for another healthy
    /// one, since nothing was sent yet.
    async fn connect(
        &self,
        mode: Mode,
        own: &mut Option<oneshot::Receiver<Parked>>,
    ) -> Result<Conn, (BridgeError, Option<BackendAddr>)> {
        let up = &self.bridge.up;
        let cfg = up.config();
        if mode == Mode::Own {
            if let Some(parked) = self.reclaim(own).await {
                up.count_request(parked.backend);
                let addr = up.backend(parked.backend).addr;
                let slot = up
                    .acquire(parked.backend)
                    .await
                    .map_err(|e| (e, Some(addr)))?;
                return Ok(Conn {
                    backend: parked.backend,
                    sender: parked.sender,
                    back: None,
                    reused: true,
                    slot,
                });
            }
        }
        if mode == Mode::Pooled {
            let (backend, slot, stream, reused) = self
                .connect_with(
                    |i| self.bridge.pool.take(i).map(RawConn::into_stream),
                    |addr| connect::open_stream(addr, cfg.timeout),
                )
                .await?;
            let addr = up.backend(backend).addr;
            let (sender, back) = connect::lend(stream, addr)
                .await
                .map_err(|e| (e, Some(addr)))?;
            return Ok(Conn {
                backend,
                sender,
                back: Some(back),
                reused,
                slot,
            });
        }
        let preface = self.preface.as_deref();
        let (backend, slot, sender, reused) = self
            .connect_with(|_| None, |addr| connect::open(addr, cfg.timeout, preface))
            .await?;
        Ok(Conn {
            backend,
            sender,
            back: None,
            reused,
            slot,
        })
    }

    /// A new connection for a retry: lent from the pool's side when `pooled`, else the
    /// session's kind (with its PROXY header).
    async fn fresh(
        &self,
        pooled: bool,
        addr: BackendAddr,
    ) -> Result<(Sender, Option<GiveBack>), BridgeError> {
        let timeout = self.bridge.up.config().timeout;
        if pooled {
            let stream = connect::open_stream(addr, timeout).await?;
            let (sender, back) = connect::lend(stream, addr).await?;
            return Ok((sender, Some(back)));
        }
        let sender = connect::open(addr, timeout, self.preface.as_deref()).await?;
        Ok((sender, None))
    }

    /// Picks a backend, waits for a slot and takes an idle connection (`take`) or opens one
    /// (`open`); a backend that cannot be connected to is skipped for another healthy one,
    /// since nothing was sent yet. Returns the backend, its slot, the connection and whether
    /// it was reused.
    pub(crate) async fn connect_with<C, Fut>(
        &self,
        take: impl Fn(usize) -> Option<C>,
        open: impl Fn(BackendAddr) -> Fut,
    ) -> Result<(usize, Slot, C, bool), (BridgeError, Option<BackendAddr>)>
    where
        Fut: std::future::Future<Output = Result<C, BridgeError>>,
    {
        let up = &self.bridge.up;
        let mut tried = Vec::new();
        let mut last = None;
        while let Some(i) = up.pick(&tried) {
            let addr = up.backend(i).addr;
            let slot = up.acquire(i).await.map_err(|e| (e, Some(addr)))?;
            if let Some(conn) = take(i) {
                return Ok((i, slot, conn, true));
            }
            match open(addr).await {
                Ok(conn) => return Ok((i, slot, conn, false)),
                Err(e) => {
                    up.record_failure(i, &e, true);
                    let nothing_sent =
                        matches!(e, BridgeError::Refused(_) | BridgeError::Timeout(_));
                    if !nothing_sent {
                        return Err((e, Some(addr)));
                    }
                    tracing::debug!(backend = %addr, error = %e, "cannot connect; trying another backend");
                    tried.push(i);
                    last = Some((e, Some(addr)));
                }
            }
        }
        Err(last.unwrap_or((BridgeError::NoBackend, None)))
    }

    /// The session's own connection, once its previous exchange is over, if it is still open
    /// and has not idled past the idle timeout.
    async fn reclaim(&self, own: &mut Option<oneshot::Receiver<Parked>>) -> Option<Parked> {
        let rx = own.take()?;
        let cfg = self.bridge.up.config();
        // The previous response is complete before hyper hands us the next request, so this
        // is quick; the bound only guards against a connection that never settles.
        let parked = tokio::time::timeout(cfg.timeout, rx).await.ok()?.ok()?;
        let usable = parked.since.elapsed() < cfg.idle_timeout
            && !parked.sender.is_closed()
            && parked.sender.is_ready()
            && parked.sender.quiet();
        usable.then_some(parked)
    }

    /// Once the response has been read to its end, parks the connection (in the pool, or as
    /// the session's own) and frees the slot; one left half-used (the client went away
    /// mid-body) is closed by hyper and never parked.
    fn release(&self, conn: Conn, mode: Mode, own: &mut Option<oneshot::Receiver<Parked>>) {
        let to_session = (mode == Mode::Own).then(|| {
            let (tx, rx) = oneshot::channel();
            *own = Some(rx);
            tx
        });
        let bridge = Arc::clone(&self.bridge);
        let Conn {
            backend,
            mut sender,
            back,
            slot,
            ..
        } = conn;
        tokio::spawn(async move {
            // The slot is held until the connection is parked, so a request that came
            // meanwhile takes it instead of opening another.
            let _slot = slot;
            if sender.ready().await.is_err() {
                return;
            }
            match (mode, to_session) {
                (Mode::Pooled, _) => {
                    // hyper's connection task hands the stream back once the sender is gone.
                    drop(sender);
                    let Some(back) = back else { return };
                    let timeout = bridge.up.config().timeout;
                    if let Ok(Ok(stream)) = tokio::time::timeout(timeout, back).await {
                        let conn = RawConn::new(stream);
                        bridge.pool.put(backend, conn, bridge.up.backend(backend));
                    }
                }
                (Mode::Own, Some(tx)) => {
                    let _ = tx.send(Parked {
                        backend,
                        sender,
                        since: Instant::now(),
                    });
                }
                _ => {}
            }
        });
    }
}

/// Sends the request and waits for the response head, at most `timeout` after the request
/// body last moved (or after sending began).
async fn send_head(
    sender: &mut Sender,
    req: Request<ProxyBody>,
    timeout: Duration,
    progress: &Progress,
) -> Result<Response<Incoming>, Failure> {
    let mut pending = std::pin::pin!(sender.try_send_request(req));
    loop {
        let deadline = tokio::time::Instant::from_std(progress.last() + timeout);
        match tokio::time::timeout_at(deadline, pending.as_mut()).await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(mut e)) => {
                let unsent = e.take_message();
                let (error, stale) = classify(e.into_error());
                return Err(Failure {
                    error,
                    stale,
                    unsent,
                });
            }
            // The body moved since the deadline was set: wait on from there.
            Err(_) if progress.last() + timeout > Instant::now() => continue,
            Err(_) => {
                return Err(Failure {
                    error: BridgeError::Timeout(Phase::ResponseHead),
                    stale: false,
                    unsent: None,
                })
            }
        }
    }
}

/// Maps a hyper client error to its blame, and tells whether it is what a connection the
/// backend closed while idle looks like (closed, reset, or ended before any answer).
fn classify(err: hyper::Error) -> (BridgeError, bool) {
    if err.is_parse() {
        return (BridgeError::BadResponse(err.into()), false);
    }
    if err.is_user() {
        // The request body failed: it is the client's own stream, so its error is the one
        // hyper's server side reported about the client.
        let client_side = std::error::Error::source(&err)
            .is_some_and(|s| s.downcast_ref::<hyper::Error>().is_some());
        return if client_side {
            (BridgeError::ClientGone, false)
        } else {
            (BridgeError::Internal(err.into()), false)
        };
    }
    let io_closed = io_kind(&err).is_some_and(|k| {
        use std::io::ErrorKind::*;
        matches!(
            k,
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
        )
    });
    let stale = err.is_canceled() || err.is_incomplete_message() || err.is_closed() || io_closed;
    (BridgeError::Reset(err.into()), stale)
}

/// The kind of the I/O error somewhere in `err`'s causes.
fn io_kind(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The front spawns connection tasks with `tokio::spawn`: everything must be `Send`.
    #[allow(dead_code)]
    fn forward_is_send(session: &Session, req: Request<Incoming>) {
        fn send<T: Send + Sync>(_: &T) {}
        fn send_future<T: Send>(_: &T) {}
        send(session);
        send(&Bridge::new(Upstreams::new(crate::BridgeConfig::default())));
        send_future(&session.forward(req));
    }

    #[test]
    fn only_bodiless_idempotent_requests_are_replayable() {
        let req = |m: Method| {
            let mut r = Request::new(ProxyBody::Empty);
            *r.method_mut() = m;
            r
        };
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(Replay::of(&req(m.clone())).is_some(), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(Replay::of(&req(m.clone())).is_none(), "{m}");
        }
        let replay = Replay::of(&req(Method::GET)).unwrap();
        assert_eq!(replay.request().method(), Method::GET);
    }

    #[test]
    fn io_kinds_are_found_in_the_cause_chain() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(io_kind(&io), Some(std::io::ErrorKind::ConnectionReset));
        let boxed: crate::error::Cause = "plain".into();
        assert_eq!(io_kind(boxed.as_ref()), None);
    }
}
