//! Hop-by-hop header removal (RFC 9110 §7.6.1).

use http::header::{HeaderMap, HeaderName, CONNECTION, UPGRADE};

/// Fields that describe one connection only and are never forwarded (RFC 9110 §7.6.1).
/// `Keep-Alive` and `Proxy-Connection` are not in RFC 9110's list but are hop-by-hop in practice
/// (RFC 9112 §9.6). `Connection` and `Upgrade` are kept only while upgrading.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "upgrade",
    "te",
    "trailer",
    "transfer-encoding",
    "keep-alive",
    "proxy-connection",
];

/// The field names listed in `Connection` values (also hop-by-hop), trimmed.
pub fn connection_tokens<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    values
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether `name` is hop-by-hop for a message whose `Connection` fields named `named`
/// (not upgrading).
pub fn is_hop_by_hop(name: &str, named: &[&[u8]]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || named
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// Removes `Connection`, every field it names, and the other hop-by-hop fields. `Upgrade` is kept
/// only when `upgrading` (a WebSocket handshake is forwarded with its `Connection: upgrade`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    let named: Vec<HeaderName> =
        connection_tokens(headers.get_all(CONNECTION).iter().map(|v| v.as_bytes()))
            .into_iter()
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
    for n in named {
        if upgrading && n == UPGRADE {
            continue;
        }
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        if !(upgrading && (n == "connection" || n == "upgrade")) {
            headers.remove(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{TE, TRANSFER_ENCODING};
    use http::HeaderValue;

    #[test]
    fn removes_connection_and_named_fields() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn named_fields_are_hop_by_hop_in_any_case() {
        let named = connection_tokens([&b"Keep-Alive, X-Secret ,, "[..], b"x-other"]);
        assert_eq!(named, [&b"Keep-Alive"[..], b"X-Secret", b"x-other"]);
        for n in [
            "X-SECRET",
            "x-other",
            "Transfer-Encoding",
            "TE",
            "proxy-connection",
        ] {
            assert!(is_hop_by_hop(n, &named), "{n}");
        }
        assert!(!is_hop_by_hop("x-kept", &named));
    }

    #[test]
    fn upgrade_survives_when_upgrading() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[CONNECTION], "Upgrade");
    }
}
