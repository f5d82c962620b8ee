//! The fast path's Userspace stage: a plain GET or HEAD routed to the backend, relayed without
//! hyper (see [`khttpd_bridge::relay`] for why).
//!
//! The fast path has parsed the head and found a fresh `Backend` verdict for it; this writes the
//! backend's answer to the client with the front's own fields (the same ones the full pipeline
//! sets: `Server`, `X-Khttpd-Route`, `Date` when the backend sent none, `Connection: close` when
//! the connection ends), or the same error page the full pipeline would give when the backend
//! fails. The connection stays on the fast path afterwards.

use std::time::Instant;

use khttpd_bridge::{BridgeError, Framing, RelayRequest, Relayed};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::conn::handler::{backend_failed, ConnCtx};
use crate::conn::head_guard::HeadGuard;
use crate::conn::stream::ClientStream;
use crate::conn::wire::{end_head, field, status_line, MAX_FIELDS};
use crate::daemon::stats::{RouteKind, Stage};
use crate::error::{ErrorAnswer, FrontError};
use crate::logging::finish::{finish, Outcome};
use crate::logging::log_line::LogRecord;
use crate::pages;
use crate::route::decide::BackendReason;
use crate::userspace::gzip_proxied::{self, AnswerHead};

/// A request the fast path hands to the relay.
pub(crate) struct RelayPlan {
    /// Bytes of the head in the connection's buffer.
    pub consumed: usize,
    /// A HEAD request: no body in the answer.
    pub head_only: bool,
    /// The client asked to close after this answer.
    pub close: bool,
    /// Why the request goes to the backend.
    pub reason: BackendReason,
    /// When the head was complete.
    pub started: Instant,
    /// The access-log line, filled from the head, when logging is on.
    pub log: Option<LogRecord>,
}

/// Relays the request whose head is `head` and writes the answer; returns whether the client's
/// connection stays open. `pipelined`: more requests already wait in the buffer, so a readable
/// socket says nothing about the client leaving.
pub(crate) async fn serve(
    io: &mut HeadGuard<impl ClientStream>,
    head: &[u8],
    plan: RelayPlan,
    pipelined: bool,
    ctx: &ConnCtx,
    cfg: &Config,
) -> bool {
    let Some(session) = ctx.session() else {
        return false;
    };
    let mut storage = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut storage);
    // The fast path parsed these very bytes already.
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let mut accept_encoding = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("accept-encoding"));
    // A repeated Accept-Encoding would have to be joined: not worth it, no compression then.
    let accept_encoding = match (accept_encoding.next(), accept_encoding.next()) {
        (Some(h), None) => std::str::from_utf8(h.value).ok(),
        _ => None,
    };
    let id = req
        .headers
        .iter()
        .find(|h| {
            h.name
                .eq_ignore_ascii_case(crate::userspace::request_id::FIELD)
        })
        .and_then(|h| crate::userspace::request_id::usable(h.value))
        .map_or_else(crate::userspace::request_id::new, str::to_owned);
    let request = RelayRequest {
        method: req.method.unwrap_or("GET"),
        target: req.path.unwrap_or("/"),
        fields: req.headers,
        request_id: Some(&id),
    };
    let stage = ctx.stats.enter(Stage::Userspace);
    let result = session
        .relay(&request, client_gone(io.get_ref().tcp(), pipelined))
        .await;
    let mut out = Vec::with_capacity(1024);
    let upstream = result.as_ref().ok().map(Relayed::upstream);
    let (kind, status, bytes, keep) = match result {
        Ok(relayed) => {
            let status = relayed.status();
            let gzip = relayed.buffered() && {
                let mut a = AnswerHead {
                    status,
                    content_length: relayed.content_length(),
                    head_only: plan.head_only,
                    ..AnswerHead::default()
                };
                for (name, value) in relayed.fields() {
                    a.field(name, value);
                }
                gzip_proxied::wanted(accept_encoding, &a, cfg.cache.compress_min)
            };
            // A compressed answer is chunked, so even a body the backend ends by closing can
            // leave the client's connection open.
            let close = plan.close || (!gzip && relayed.framing() == Framing::UntilClose);
            answer_head(&mut out, &relayed, cfg, close, ctx.tls, gzip);
            let sent = if gzip {
                relayed.send_gzip(io, &out).await
            } else {
                relayed.send(io, &out).await
            };
            match sent {
                Ok(bytes) => (RouteKind::Backend, status, bytes, !close),
                Err(e) => {
                    tracing::debug!(peer = %ctx.peer, error = %e, "relayed answer cut short");
                    (RouteKind::Backend, status, 0, false)
                }
            }
        }
        // Nobody to answer: the backend request was dropped with its connection.
        Err(BridgeError::ClientGone) => return false,
        Err(e) => {
            backend_failed(ctx, plan.reason, &e);
            let answer = FrontError::Backend(e).answer();
            let status = answer.status;
            let page = error_page(&mut out, &answer, cfg, &plan, ctx.tls);
            let body: &[u8] = if plan.head_only { b"" } else { &page };
            let sent = match khttpd_bridge::relay::write_both(io, &out, body).await {
                Ok(()) => tokio::io::AsyncWriteExt::flush(io).await,
                Err(e) => Err(e),
            };
            let bytes = body.len() as u64;
            (
                RouteKind::Error,
                status.as_u16(),
                bytes,
                sent.is_ok() && !plan.close,
            )
        }
    };
    drop(stage);
    let outcome = Outcome {
        upstream,
        request_id: Some(id),
        ..Outcome::new(kind, status, bytes)
    };
    finish(
        &ctx.stats,
        &ctx.shared.access_log,
        plan.log,
        &outcome,
        plan.started,
    );
    keep
}

/// Resolves once the client has closed its side (or its socket failed), unless more requests
/// are already buffered, in which case the client is still there by definition.
async fn client_gone(stream: &TcpStream, pipelined: bool) {
    if pipelined {
        return std::future::pending().await;
    }
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        // The next pipelined request: the client is there; keep waiting for the backend.
        Ok(_) => std::future::pending().await,
    }
}

/// The answer's head: the backend's status and end-to-end fields, framed for the client.
fn answer_head(
    out: &mut Vec<u8>,
    relayed: &Relayed,
    cfg: &Config,
    close: bool,
    tls: bool,
    gzip: bool,
) {
    let status = relayed.status();
    status_line(out, status, relayed.reason());
    let mut dated = false;
    for (name, value) in relayed.fields() {
        // Ours replaces the backend's, as on the full pipeline.
        if name.eq_ignore_ascii_case(b"server") {
            continue;
        }
        dated |= name.eq_ignore_ascii_case(b"date");
        if gzip && name.eq_ignore_ascii_case(b"etag") {
            field(out, name, &gzip_proxied::weakened(value));
            continue;
        }
        field(out, name, value);
    }
    if gzip {
        field(out, b"content-encoding", b"gzip");
        field(out, b"vary", b"Accept-Encoding");
        field(out, b"transfer-encoding", b"chunked");
        end_head(out, cfg, RouteKind::Backend, tls, close, dated);
        return;
    }
    match relayed.framing() {
        Framing::Length(n) => field(out, b"content-length", n.to_string().as_bytes()),
        Framing::Chunked => field(out, b"transfer-encoding", b"chunked"),
        // A HEAD answer or a 304 tells the length the body would have (never on a 204).
        Framing::Empty => {
            if let Some(n) = relayed.content_length().filter(|_| status != 204) {
                field(out, b"content-length", n.to_string().as_bytes());
            }
        }
        Framing::UntilClose => {}
    }
    end_head(out, cfg, RouteKind::Backend, tls, close, dated);
}

/// The raw encoder of an [`ErrorAnswer`]: its head into `out`; returns the page.
fn error_page(
    out: &mut Vec<u8>,
    answer: &ErrorAnswer,
    cfg: &Config,
    plan: &RelayPlan,
    tls: bool,
) -> bytes::Bytes {
    let status = answer.status;
    // The operator's page (--error-page) when there is one, else the front's own.
    let page = cfg
        .error_pages
        .get(&status.as_u16())
        .cloned()
        .unwrap_or_else(|| bytes::Bytes::from(pages::error_html(status, answer.detail)));
    status_line(out, status.as_u16(), b"Error");
    field(out, b"content-type", pages::ERROR_TYPE.as_bytes());
    field(out, b"content-length", page.len().to_string().as_bytes());
    if let Some((name, value)) = &answer.field {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    end_head(
        out,
        cfg,
        RouteKind::Error,
        tls,
        plan.close || answer.close,
        false,
    );
    page
}
