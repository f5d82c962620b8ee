//! The bridge's settings: backends, limits, PROXY protocol and trusted proxies.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

/// Settings of the bridge; every limit is a field with its default documented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Backends, used round-robin. Default: none (every forward fails with
    /// [`BridgeError::NoBackend`](crate::BridgeError::NoBackend)).
    pub backends: Vec<crate::BackendAddr>,
    /// Deadline to connect (PROXY header included) and, separately, to receive the response head
    /// once the last request byte was sent (`--backend-timeout`); on the relay, also the longest
    /// wait for each read of the answer's body. Default 60 s.
    pub timeout: Duration,
    /// Requests in flight per backend, across all main daemons (`--backend-max-conns`).
    /// An upgraded (WebSocket) connection holds its slot until it closes. Default 64; 0 counts as 1.
    pub max_conns: usize,
    /// How long a request waits for a free slot before it is answered 503 with `Retry-After`.
    /// Default 5 s.
    pub queue_timeout: Duration,
    /// How long a pooled connection may sit idle before it is discarded instead of reused.
    /// Default 4 s: Apache's `KeepAliveTimeout` defaults to 5 s, so we give up on a connection
    /// before Apache closes it under us.
    pub idle_timeout: Duration,
    /// How long a backend that refused, reset or timed out is skipped by the round-robin before
    /// it is tried again. Default 2 s.
    pub fail_cooldown: Duration,
    /// Whether each client connection gets its own backend connection that starts with a PROXY
    /// protocol header (`--proxy-protocol`). Default [`ProxyProtocol::Off`] (pooled connections).
    pub proxy_protocol: ProxyProtocol,
    /// Peers whose own `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` are passed on
    /// (`--trusted-proxy`, repeatable); from anyone else they are replaced. Default: none.
    pub trusted_proxies: Vec<Cidr>,
    /// Whether backend answers are read as fast as the backend writes them and held for the
    /// client (`--proxy-buffering`), so a slow client never holds an Apache worker. Answers that
    /// are `text/event-stream` or carry `X-Accel-Buffering: no` stream anyway. Default on.
    pub buffering: bool,
    /// Backends whose answers are buffered otherwise than `buffering` says
    /// (`--backend 'ADDR buffering=off'`, nginx's per-location `proxy_buffering`): a backend
    /// that serves long polls or streams, say, among buffered ones. Default: none.
    pub buffering_by_backend: Vec<(crate::BackendAddr, bool)>,
    /// Bytes of one answer held in memory for a slow client before the rest goes to a temporary
    /// file (`--proxy-buffer`). Default 64 KiB.
    pub proxy_buffer: u64,
    /// Bytes of all answers held in memory at once (`--proxy-buffers-total`); past it, answers
    /// go straight to their files. Default 64 MiB.
    pub proxy_buffers_total: u64,
    /// Largest temporary file of one answer (`--proxy-temp-max`, nginx's
    /// `proxy_max_temp_file_size`); past it, the backend waits for the client. 0: no files.
    /// Default 1 GiB.
    pub proxy_temp_max: u64,
    /// Bytes of all answers' temporary files at once (`--proxy-temp-total`); past it, backends
    /// wait for their clients. Default 4 GiB.
    pub proxy_temp_total: u64,
    /// Where those files go (`--temp-dir`); each is unlinked as it is made.
    pub temp_dir: std::path::PathBuf,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            backends: Vec::new(),
            timeout: Duration::from_secs(60),
            max_conns: 64,
            queue_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(4),
            fail_cooldown: Duration::from_secs(2),
            proxy_protocol: ProxyProtocol::Off,
            trusted_proxies: Vec::new(),
            buffering: true,
            buffering_by_backend: Vec::new(),
            proxy_buffer: 64 << 10,
            proxy_buffers_total: 64 << 20,
            proxy_temp_max: 1 << 30,
            proxy_temp_total: 4 << 30,
            temp_dir: std::env::temp_dir(),
        }
    }
}

impl BridgeConfig {
    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

/// A setting that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not `off`, `v1` or `v2`.
    #[error("invalid PROXY protocol setting {0:?}: expected off, v1 or v2")]
    ProxyProtocol(String),
    /// Not `ADDR` or `ADDR/PREFIX`.
    #[error("invalid address range {input:?}: {reason}")]
    Cidr {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Whether (and which) PROXY protocol header starts each backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyProtocol {
    /// No header; backend connections are pooled and shared by all clients of a main daemon.
    #[default]
    Off,
    /// The text header, `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header.
    V2,
}

impl FromStr for ProxyProtocol {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(ProxyProtocol::Off),
            "v1" => Ok(ProxyProtocol::V1),
            "v2" => Ok(ProxyProtocol::V2),
            _ => Err(ConfigError::ProxyProtocol(s.to_owned())),
        }
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyProtocol::Off => "off",
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        })
    }
}

/// An address range: `127.0.0.1`, `10.0.0.0/8`, `::1/128`.
///
/// Host bits below the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`), as Apache's
/// `RemoteIPInternalProxy` does. A v4-mapped IPv6 range (`::ffff:10.0.0.0/104`) is stored as
/// the IPv4 range it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this range. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
    /// dual-stack listener reports IPv4 peers) matches the IPv4 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_v4(self.prefix);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.prefix);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }

    /// The first address of the range.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ConfigError::Cidr {
            input: s.to_owned(),
            reason,
        };
        let text = s.trim();
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        if addr_text.is_empty() {
            return Err(err("expected an IP address or ADDR/PREFIX"));
        }
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| err("not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                let p: u8 = p
                    .parse()
                    .map_err(|_| err("the prefix after '/' must be a number"))?;
                if p > max {
                    return Err(err(if max == 32 {
                        "an IPv4 prefix is at most 32"
                    } else {
                        "an IPv6 prefix is at most 128"
                    }));
                }
                p
            }
        };
        Ok(normalise(addr, prefix))
    }
}

/// Masks the host bits off and turns a v4-mapped IPv6 range into its IPv4 range.
fn normalise(addr: IpAddr, prefix: u8) -> Cidr {
    match addr {
        IpAddr::V4(a) => Cidr {
            addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix))),
            prefix,
        },
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) if prefix >= 96 => normalise(IpAddr::V4(v4), prefix - 96),
            _ => Cidr {
                addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix))),
                prefix,
            },
        },
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = BridgeConfig::default();
        assert!(c.backends.is_empty());
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert_eq!(c.max_conns, 64);
        assert_eq!(c.queue_timeout, Duration::from_secs(5));
        assert_eq!(c.idle_timeout, Duration::from_secs(4));
        assert_eq!(c.fail_cooldown, Duration::from_secs(2));
        assert_eq!(c.proxy_protocol, ProxyProtocol::Off);
        assert!(c.trusted_proxies.is_empty());
    }

    #[test]
    fn proxy_protocol_parses_and_rejects() {
        assert_eq!("off".parse::<ProxyProtocol>().unwrap(), ProxyProtocol::Off);
        assert_eq!("v1".parse::<ProxyProtocol>().unwrap(), ProxyProtocol::V1);
        assert_eq!("V2".parse::<ProxyProtocol>().unwrap(), ProxyProtocol::V2);
        let e = "v3".parse::<ProxyProtocol>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid PROXY protocol setting \"v3\": expected off, v1 or v2"
        );
        assert_eq!(ProxyProtocol::V1.to_string(), "v1");
    }

    #[test]
    fn single_addresses_are_full_length_ranges() {
        let c: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(c.to_string(), "127.0.0.1/32");
        assert!(c.contains(ip("127.0.0.1")));
        assert!(!c.contains(ip("127.0.0.2")));
        let c: Cidr = "::1".parse().unwrap();
        assert_eq!(c.to_string(), "::1/128");
        assert!(c.contains(ip("::1")));
        assert!(!c.contains(ip("127.0.0.1")));
    }

    #[test]
    fn prefixes_match_their_network() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:ffff::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        let c: Cidr = "::1/128".parse().unwrap();
        assert!(c.contains(ip("::1")));
    }

    #[test]
    fn host_bits_are_ignored() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(ip("10.9.9.9")));
    }

    #[test]
    fn zero_prefix_matches_its_whole_family() {
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(c.contains(ip("203.0.113.9")));
        assert!(!c.contains(ip("2001:db8::1")));
        let c: Cidr = "::/0".parse().unwrap();
        assert!(c.contains(ip("2001:db8::1")));
    }

    #[test]
    fn v4_mapped_peers_match_v4_ranges() {
        let c: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("::ffff:127.0.0.2")));
        assert!(!c.contains(ip("::ffff:10.0.0.1")));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(mapped.contains(ip("10.1.1.1")));
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        for (input, reason) in [
            ("", "expected an IP address or ADDR/PREFIX"),
            ("/8", "expected an IP address or ADDR/PREFIX"),
            ("example.com", "not an IPv4 or IPv6 address"),
            ("10.0.0/8", "not an IPv4 or IPv6 address"),
            ("10.0.0.0/", "the prefix after '/' must be a number"),
            ("10.0.0.0/x", "the prefix after '/' must be a number"),
            ("10.0.0.0/33", "an IPv4 prefix is at most 32"),
            ("::1/129", "an IPv6 prefix is at most 128"),
        ] {
            let e = input.parse::<Cidr>().unwrap_err();
            assert_eq!(
                e,
                ConfigError::Cidr {
                    input: input.to_owned(),
                    reason
                },
                "{input}"
            );
        }
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>().unwrap_err().to_string(),
            "invalid address range \"10.0.0.0/33\": an IPv4 prefix is at most 32"
        );
    }

    #[test]
    fn trust_is_any_range() {
        let c = BridgeConfig {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
            ..BridgeConfig::default()
        };
        assert!(c.is_trusted(ip("10.2.3.4")));
        assert!(c.is_trusted(ip("::1")));
        assert!(!c.is_trusted(ip("127.0.0.1")));
    }
}
