//! The request head as the backend must see it (pure): hop-by-hop fields gone, `Host` kept,
//! and who the client is in `X-Forwarded-For`, `-Proto`, `-Host` and `Via`.

use std::net::{IpAddr, SocketAddr};

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, EXPECT, FORWARDED, HOST, UPGRADE, VIA,
};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::Version;

use crate::hop::{connection_tokens, is_hop_by_hop, strip_hop_by_hop};

/// `X-Forwarded-For`: the chain of client addresses.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Our name in `Via` (RFC 9110 §7.6.3 allows a pseudonym instead of host:port).
const VIA_NAME: &str = "khttpd-front";

/// Who sent a request and where it arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// The client's (TCP peer's) address.
    pub peer: IpAddr,
    /// The front's address the client connected to; the `Host` of a request that has none.
    pub local: SocketAddr,
    /// `http` (the front speaks no TLS itself).
    pub scheme: &'static str,
    /// Whether the peer is a trusted proxy whose own forwarding fields are kept.
    pub trusted: bool,
}

/// Whether the client asks to switch protocols (RFC 9110 §7.8): HTTP/1.1, an `Upgrade` field
/// and `upgrade` among the `Connection` options.
pub(crate) fn is_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Rewrites the client's request head into the backend's.
///
/// The path and query go on byte for byte (never decoded or re-encoded); an absolute-form
/// target becomes origin-form with its authority as `Host` (RFC 9112 §3.2.2). The request is
/// sent as HTTP/1.1 so the backend connection stays open; `Via` records what the client spoke.
pub(crate) fn backend_head(parts: &mut Parts, origin: &Origin, upgrading: bool) {
    let received = parts.version;
    let mut authority_host = None;
    if let Some(authority) = parts.uri.authority() {
        let host = match authority.port() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_owned(),
        };
        authority_host = HeaderValue::from_str(&host).ok();
        if let Some(pq) = parts.uri.path_and_query().cloned() {
            parts.uri = origin_form(pq);
        }
    }
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;

    strip_hop_by_hop(headers, upgrading);
    // Our own server answers `100 Continue` when the body is first read; the backend gets the
    // body without waiting.
    headers.remove(EXPECT);

    if let Some(host) = authority_host {
        headers.insert(HOST, host);
    } else if !headers.contains_key(HOST) {
        // HTTP/1.0 without Host: name the address the client reached, as the front would.
        if let Ok(v) = HeaderValue::from_str(&origin.local.to_string()) {
            headers.insert(HOST, v);
        }
    }

    let xff = xff_value(joined(headers, &X_FORWARDED_FOR), origin);
    set(headers, X_FORWARDED_FOR, &xff);

    if !(origin.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        set(headers, X_FORWARDED_PROTO, origin.scheme);
    }
    if !(origin.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        headers.remove(&X_FORWARDED_HOST);
        if let Some(host) = headers.get(HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
    if !origin.trusted {
        // RFC 7239's form of the same claims; nobody may make them on a client's behalf.
        headers.remove(FORWARDED);
    }

    let via = via_value(joined(headers, &VIA), protocol_version(received));
    set(headers, VIA, &via);
}

/// The relay's form of [`backend_head`]: the same rules, written as bytes from the client's
/// parsed fields without building a header map. The caller sends only origin-form HTTP/1.1
/// requests with exactly one `Host`, no body and no upgrade, so the rules for absolute-form,
/// missing `Host` and upgrades do not arise.
pub(crate) fn relay_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    fields: &[httparse::Header<'_>],
    origin: &Origin,
    request_id: Option<&str>,
) {
    let named = connection_tokens(
        fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("connection"))
            .map(|f| f.value),
    );
    let (mut xff_chain, mut via_chain) = (Vec::new(), Vec::new());
    let (mut host, mut kept_proto, mut kept_host) = (None, false, false);
    let is =
        |f: &httparse::Header<'_>, name: &HeaderName| f.name.eq_ignore_ascii_case(name.as_str());
    push_line(
        out,
        &[method.as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1"],
    );
    for f in fields {
        if is_hop_by_hop(f.name, &named) || is(f, &EXPECT) {
            continue;
        }
        if request_id.is_some() && f.name.eq_ignore_ascii_case("x-request-id") {
            continue;
        }
        if is(f, &X_FORWARDED_FOR) {
            xff_chain.push(f.value);
            continue;
        }
        if is(f, &VIA) {
            via_chain.push(f.value);
            continue;
        }
        if is(f, &X_FORWARDED_PROTO) {
            if !origin.trusted {
                continue;
            }
            kept_proto = true;
        } else if is(f, &X_FORWARDED_HOST) {
            if !origin.trusted {
                continue;
            }
            kept_host = true;
        } else if is(f, &FORWARDED) && !origin.trusted {
            continue;
        } else if is(f, &HOST) {
            host = Some(f.value);
        }
        push_line(out, &[f.name.as_bytes(), b": ", f.value]);
    }
    if let Some(id) = request_id {
        push_line(out, &[b"x-request-id: ", id.as_bytes()]);
    }
    let chain = (!xff_chain.is_empty()).then(|| join_values(xff_chain));
    let xff = xff_value(chain, origin);
    push_line(out, &[b"x-forwarded-for: ", xff.as_bytes()]);
    if !kept_proto {
        push_line(out, &[b"x-forwarded-proto: ", origin.scheme.as_bytes()]);
    }
    if let Some(host) = host.filter(|_| !kept_host) {
        push_line(out, &[b"x-forwarded-host: ", host]);
    }
    let chain = (!via_chain.is_empty()).then(|| join_values(via_chain));
    let via = via_value(chain, "1.1");
    push_line(out, &[b"via: ", via.as_bytes()]);
    out.extend_from_slice(b"\r\n");
}

/// The client a request stands for, as nginx's realip module with `real_ip_recursive on` finds
/// it: the TCP peer, unless it is a trusted proxy; then the right-most address of the
/// `X-Forwarded-For` values (in the order received) that is not a trusted proxy itself. An entry
/// that is not an address ends the walk at the last good one: a client cannot name itself past it.
pub fn real_client<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    if !trusted(peer) {
        return peer;
    }
    let values: Vec<&[u8]> = forwarded_for.into_iter().collect();
    let mut client = peer;
    for entry in values.iter().rev().flat_map(|v| v.rsplit(|&b| b == b',')) {
        let Some(ip) = std::str::from_utf8(entry)
            .ok()
            .and_then(|t| t.trim().parse::<IpAddr>().ok())
        else {
            break;
        };
        client = ip;
        if !trusted(ip) {
            break;
        }
    }
    client
}

/// Appends the pieces and a CRLF.
fn push_line(out: &mut Vec<u8>, pieces: &[&[u8]]) {
    for p in pieces {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

/// `X-Forwarded-For`: the client's address after the chain a trusted proxy sent.
fn xff_value(chain: Option<String>, origin: &Origin) -> String {
    let client = origin.peer.to_canonical().to_string();
    match chain {
        Some(chain) if origin.trusted && !chain.is_empty() => format!("{chain}, {client}"),
        _ => client,
    }
}

/// `Via`: ours after the chain the client sent.
fn via_value(chain: Option<String>, received: &str) -> String {
    let ours = format!("{received} {VIA_NAME}");
    match chain {
        Some(chain) if !chain.is_empty() => format!("{chain}, {ours}"),
        _ => ours,
    }
}

/// `/path?query` alone.
fn origin_form(pq: PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(pq);
    // Only a path and query: the one shape from_parts accepts without a scheme.
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// All values of a field joined the way RFC 9110 §5.3 says repeated fields combine.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .contains_key(name)
        .then(|| join_values(headers.get_all(name).iter().map(HeaderValue::as_bytes)))
}

/// Field values joined with `, `, the empty ones and those that are not visible ASCII left out
/// (what `HeaderValue::to_str` refuses).
fn join_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> String {
    let text = |v: &'a [u8]| {
        v.iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            .then(|| std::str::from_utf8(v).ok())
            .flatten()
    };
    let values: Vec<&str> = values
        .into_iter()
        .filter_map(text)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    values.join(", ")
}

/// Replaces every value of `name` by `value` (dropped if it is not a valid field value).
fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// The received-protocol of `Via` (RFC 9110 §7.6.3); HTTP is implied.
fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn origin(peer: &str, trusted: bool) -> Origin {
        Origin {
            peer: peer.parse().unwrap(),
            local: "192.0.2.10:80".parse().unwrap(),
            scheme: "http",
            trusted,
        }
    }

    fn parts(uri: &str, version: Version, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri(uri).version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn values(p: &Parts, name: &str) -> Vec<String> {
        p.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn untrusted_peer_cannot_spoof_forwarding_fields() {
        let mut p = parts(
            "/x.php",
            Version::HTTP_11,
            &[
                ("host", "example.com"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "7.7.7.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
                ("forwarded", "for=6.6.6.6"),
            ],
        );
        backend_head(&mut p, &origin("203.0.113.5", false), false);
        assert_eq!(values(&p, "x-forwarded-for"), ["203.0.113.5"]);
        assert_eq!(values(&p, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&p, "x-forwarded-host"), ["example.com"]);
        assert!(values(&p, "forwarded").is_empty());
        assert_eq!(values(&p, "host"), ["example.com"]);
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let mut p = parts(
            "/",
            Version::HTTP_11,
            &[
                ("host", "example.com"),
                ("x-forwarded-for", "198.51.100.7"),
                ("x-forwarded-for", "10.0.0.3"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "www.example.com"),
                ("forwarded", "for=198.51.100.7"),
            ],
        );
        backend_head(&mut p, &origin("10.0.0.2", true), false);
        assert_eq!(
            values(&p, "x-forwarded-for"),
            ["198.51.100.7, 10.0.0.3, 10.0.0.2"]
        );
        assert_eq!(values(&p, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&p, "x-forwarded-host"), ["www.example.com"]);
        assert_eq!(values(&p, "forwarded"), ["for=198.51.100.7"]);
    }

    #[test]
    fn trusted_peer_without_fields_gets_ours() {
        let mut p = parts("/", Version::HTTP_11, &[("host", "example.com")]);
        backend_head(&mut p, &origin("10.0.0.2", true), false);
        assert_eq!(values(&p, "x-forwarded-for"), ["10.0.0.2"]);
        assert_eq!(values(&p, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&p, "x-forwarded-host"), ["example.com"]);
    }

    #[test]
    fn ipv6_peers_are_bare_and_v4_mapped_ones_are_ipv4() {
        let mut p = parts("/", Version::HTTP_11, &[("host", "h")]);
        backend_head(&mut p, &origin("2001:db8::1", false), false);
        assert_eq!(values(&p, "x-forwarded-for"), ["2001:db8::1"]);
        let mut p = parts("/", Version::HTTP_11, &[("host", "h")]);
        backend_head(&mut p, &origin("::ffff:192.0.2.33", false), false);
        assert_eq!(values(&p, "x-forwarded-for"), ["192.0.2.33"]);
    }

    #[test]
    fn http10_without_host_names_the_front() {
        let mut p = parts("/old.php", Version::HTTP_10, &[]);
        backend_head(&mut p, &origin("203.0.113.5", false), false);
        assert_eq!(p.version, Version::HTTP_11);
        assert_eq!(values(&p, "host"), ["192.0.2.10:80"]);
        assert_eq!(values(&p, "x-forwarded-host"), ["192.0.2.10:80"]);
        assert_eq!(values(&p, "via"), ["1.0 khttpd-front"]);
    }

    #[test]
    fn via_is_appended() {
        let mut p = parts(
            "/",
            Version::HTTP_11,
            &[("host", "h"), ("via", "1.1 cdn"), ("via", "1.0 squid")],
        );
        backend_head(&mut p, &origin("203.0.113.5", false), false);
        assert_eq!(values(&p, "via"), ["1.1 cdn, 1.0 squid, 1.1 khttpd-front"]);
    }

    #[test]
    fn hop_by_hop_fields_and_expect_are_removed() {
        let mut p = parts(
            "/up.php",
            Version::HTTP_11,
            &[
                ("host", "h"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("transfer-encoding", "chunked"),
                ("expect", "100-continue"),
                ("upgrade", "websocket"),
                ("content-type", "text/plain"),
            ],
        );
        backend_head(&mut p, &origin("203.0.113.5", false), false);
        for gone in [
            "connection",
            "x-hop",
            "keep-alive",
            "te",
            "transfer-encoding",
            "expect",
            "upgrade",
        ] {
            assert!(values(&p, gone).is_empty(), "{gone}");
        }
        assert_eq!(values(&p, "content-type"), ["text/plain"]);
    }

    #[test]
    fn upgrade_keeps_connection_and_upgrade() {
        let mut p = parts(
            "/ws",
            Version::HTTP_11,
            &[
                ("host", "h"),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
            ],
        );
        assert!(is_upgrade(p.version, &p.headers));
        backend_head(&mut p, &origin("203.0.113.5", false), true);
        assert_eq!(values(&p, "connection"), ["Upgrade"]);
        assert_eq!(values(&p, "upgrade"), ["websocket"]);
    }

    #[test]
    fn upgrade_needs_both_fields_and_http11() {
        let h = |pairs: &[(&str, &str)], v| {
            let p = parts("/", v, pairs);
            is_upgrade(p.version, &p.headers)
        };
        let both = [
            ("connection", "keep-alive, upgrade"),
            ("upgrade", "websocket"),
        ];
        assert!(h(&both, Version::HTTP_11));
        assert!(!h(&both, Version::HTTP_10));
        assert!(!h(&[("upgrade", "websocket")], Version::HTTP_11));
        assert!(!h(&[("connection", "upgrade")], Version::HTTP_11));
    }

    #[test]
    fn path_and_query_go_byte_for_byte() {
        let raw = "/a%2Fb/../%7e%zz/x.php?q=%20+&b=%C3%A9&&";
        let mut p = parts(raw, Version::HTTP_11, &[("host", "h")]);
        backend_head(&mut p, &origin("203.0.113.5", false), false);
        assert_eq!(p.uri.to_string(), raw);
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_authority_as_host() {
        let mut p = parts(
            "http://example.org:8080/p.php?x=1",
            Version::HTTP_11,
            &[("host", "other.example")],
        );
        backend_head(&mut p, &origin("203.0.113.5", false), false);
        assert_eq!(p.uri.to_string(), "/p.php?x=1");
        assert_eq!(values(&p, "host"), ["example.org:8080"]);
        assert_eq!(values(&p, "x-forwarded-host"), ["example.org:8080"]);
    }
    /// The relay's head and `backend_head` agree field for field (order aside) on every
    /// origin-form HTTP/1.1 request the relay may carry.
    #[test]
    fn relay_head_matches_backend_head() {
        let cases: &[&[(&str, &str)]] = &[
            &[("Host", "example.com")],
            &[
                ("host", "example.com"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("x-forwarded-for", "7.7.7.7"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.example"),
                ("Forwarded", "for=6.6.6.6"),
                ("Via", "1.1 cdn"),
                ("via", "1.0 squid"),
            ],
            &[
                ("host", "h"),
                ("Connection", "keep-alive, X-Hop"),
                ("x-hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("Cookie", "a=1"),
                ("cookie", "b=2"),
                ("X-Forwarded-For", ""),
                ("Accept", "*/*"),
            ],
        ];
        for fields in cases {
            for trusted in [false, true] {
                let o = origin("10.0.0.2", trusted);
                let mut p = parts("/a%2Fb.php?x=%20", Version::HTTP_11, fields);
                backend_head(&mut p, &o, false);
                let mut want: Vec<(String, String)> = p
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                    .collect();
                want.sort();

                let raw: Vec<httparse::Header<'_>> = fields
                    .iter()
                    .map(|(n, v)| httparse::Header {
                        name: n,
                        value: v.as_bytes(),
                    })
                    .collect();
                let mut out = Vec::new();
                relay_head(&mut out, "GET", "/a%2Fb.php?x=%20", &raw, &o, None);
                let mut storage = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut storage);
                assert_eq!(req.parse(&out), Ok(httparse::Status::Complete(out.len())));
                assert_eq!(req.path, Some("/a%2Fb.php?x=%20"));
                assert_eq!(req.version, Some(1));
                let mut got: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8(h.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                got.sort();
                assert_eq!(got, want, "fields {fields:?}, trusted {trusted}");
            }
        }
    }

    /// Issue 17: behind a trusted proxy the log names the client, as nginx's realip does.
    #[test]
    fn the_real_client_is_the_right_most_untrusted_address() {
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let rc = |peer: &str, xff: &[&str]| {
            real_client(ip(peer), xff.iter().map(|v| v.as_bytes()), trusted)
        };
        assert_eq!(
            rc("203.0.113.9", &["1.2.3.4"]),
            ip("203.0.113.9"),
            "untrusted peer"
        );
        assert_eq!(rc("10.0.0.1", &["1.2.3.4"]), ip("1.2.3.4"));
        assert_eq!(
            rc("10.0.0.1", &["6.6.6.6, 1.2.3.4, 10.0.0.2"]),
            ip("1.2.3.4")
        );
        assert_eq!(
            rc("10.0.0.1", &["6.6.6.6", "1.2.3.4"]),
            ip("1.2.3.4"),
            "two fields"
        );
        assert_eq!(rc("10.0.0.1", &["garbage, 10.0.0.3"]), ip("10.0.0.3"));
        assert_eq!(rc("10.0.0.1", &[]), ip("10.0.0.1"));
    }
}
