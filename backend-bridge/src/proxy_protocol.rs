//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that opens a backend connection,
//! so the backend (Apache's mod_remoteip with `RemoteIPProxyProtocol On`) sees the client's own
//! address as kHTTPd's socket hand-off let it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::config::ProxyProtocol;

/// The 12 bytes every v2 header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const V2_VERSION_PROXY: u8 = 0x21;
/// AF_INET, SOCK_STREAM.
const V2_TCP4: u8 = 0x11;
/// AF_INET6, SOCK_STREAM.
const V2_TCP6: u8 = 0x21;

/// The header for `version` (none when off), `src` the client, `dst` the address it reached.
pub fn header(version: ProxyProtocol, src: SocketAddr, dst: SocketAddr) -> Option<Vec<u8>> {
    match version {
        ProxyProtocol::Off => None,
        ProxyProtocol::V1 => Some(v1(src, dst).into_bytes()),
        ProxyProtocol::V2 => Some(v2(src, dst)),
    }
}

/// Both addresses in one family: IPv4 when both are (v4-mapped IPv6 counts as IPv4, as a
/// dual-stack listener reports IPv4 peers), otherwise both IPv6.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (IpAddr, IpAddr) {
    let (s, d) = (src.ip().to_canonical(), dst.ip().to_canonical());
    match (s, d) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (s, d),
        _ => (IpAddr::V6(as_v6(s)), IpAddr::V6(as_v6(d))),
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The v1 text header: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` (`TCP6` for IPv6).
pub fn v1(src: SocketAddr, dst: SocketAddr) -> String {
    let (s, d) = same_family(src, dst);
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {family} {s} {d} {} {}\r\n", src.port(), dst.port())
}

/// The v2 binary header: signature, version/command, family, length, then source and
/// destination addresses and ports in network byte order; no TLVs.
pub fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(src, dst);
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(V2_VERSION_PROXY);
    match (s, d) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(V2_TCP4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => {
            out.push(V2_TCP6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&as_v6(s).octets());
            out.extend_from_slice(&as_v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4() {
        assert_eq!(
            v1(sa("192.0.2.1:56324"), sa("198.51.100.2:80")),
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 80\r\n"
        );
    }

    #[test]
    fn v1_tcp6() {
        assert_eq!(
            v1(sa("[2001:db8::1]:40000"), sa("[::1]:8080")),
            "PROXY TCP6 2001:db8::1 ::1 40000 8080\r\n"
        );
    }

    #[test]
    fn v1_maps_v4_mapped_peers_to_tcp4() {
        assert_eq!(
            v1(sa("[::ffff:127.0.0.2]:1234"), sa("[::ffff:127.0.0.1]:80")),
            "PROXY TCP4 127.0.0.2 127.0.0.1 1234 80\r\n"
        );
    }

    #[test]
    fn v1_mixed_families_become_tcp6() {
        assert_eq!(
            v1(sa("10.0.0.1:1"), sa("[2001:db8::2]:2")),
            "PROXY TCP6 ::ffff:10.0.0.1 2001:db8::2 1 2\r\n"
        );
    }

    #[test]
    fn v2_tcp4_is_byte_exact() {
        let h = v2(sa("127.0.0.2:51000"), sa("127.0.0.1:80"));
        let expected: Vec<u8> = [
            &[
                0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
            ][..],
            &[0x21, 0x11, 0x00, 0x0C],
            &[127, 0, 0, 2],
            &[127, 0, 0, 1],
            &51000u16.to_be_bytes(),
            &[0x00, 0x50],
        ]
        .concat();
        assert_eq!(h, expected);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn v2_tcp6_is_byte_exact() {
        let h = v2(sa("[2001:db8::1]:443"), sa("[::1]:8080"));
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0x01, 0xBB, 0x1F, 0x90]);
        assert_eq!(h, expected);
        assert_eq!(h.len(), 16 + 36);
    }

    #[test]
    fn v2_maps_v4_mapped_peers_to_tcp4() {
        let h = v2(sa("[::ffff:10.1.2.3]:1"), sa("[::ffff:10.0.0.1]:2"));
        assert_eq!(&h[12..16], &[0x21, 0x11, 0x00, 0x0C]);
        assert_eq!(&h[16..24], &[10, 1, 2, 3, 10, 0, 0, 1]);
    }

    #[test]
    fn off_writes_nothing() {
        let (s, d) = (sa("127.0.0.1:1"), sa("127.0.0.1:2"));
        assert_eq!(header(ProxyProtocol::Off, s, d), None);
        assert_eq!(
            header(ProxyProtocol::V1, s, d),
            Some(b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\n".to_vec())
        );
        assert_eq!(header(ProxyProtocol::V2, s, d).map(|h| h.len()), Some(28));
    }
}
