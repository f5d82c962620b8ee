//! Command line and configuration.
//!
//! Flags (each with a `KHTTPD_*` environment fallback) are parsed by clap into [`Args`], then validated
//! once into an immutable [`Config`]. Names follow kHTTPd's /proc/sys/net/khttpd knobs where one exists
//! (`--root` = documentroot, `--port` = serverport, `--backend` = clientport, `--threads`, `--dynamic`,
//! `--sloppy-mime`, `--perm-required`, `--perm-forbid`). Every limit is a field here with its default.

pub mod args;
pub mod knobs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use self::args::Args;

/// Exit status for a bad command line or configuration (EX_USAGE from sysexits.h).
pub const EX_USAGE: i32 = 64;

/// Requests in flight per backend and core when `--backend-max-conns` is 0. Measured with the
/// bench's Apache + mod_php on one core: 8 to 16 at once served 18-22% more than 64 (BENCHMARKS.md).
pub const BACKEND_CONNS_PER_CORE: usize = 8;

impl Config {
    /// The permission bits that keep a file from the front. With a backend, execute bits alone
    /// (common after `chmod -R 755`) are left to verification: Apache shows whether it runs the
    /// file or sends it. Without one, kHTTPd's `perm_forbid` as it is.
    pub fn forbidden_bits(&self) -> u32 {
        if self.backends.is_empty() {
            self.perm_forbid
        } else {
            self.perm_forbid & !0o111
        }
    }
}

/// Extensions that a stock Apache runs or refuses rather than sends: Debian's mod_php runs
/// `.php`, `.phtml` and `.phar` and refuses `.phps`; `.php3`–`.php8` and `.pht` are mapped to PHP by
/// older or other packagings; `.shtml` goes through mod_include, `.cgi`, `.pl` and `.py` through
/// mod_cgi where `ExecCGI` is on. No knob (`--dynamic ''`, `--sloppy-mime`, `khttpd-ctl set`) lets the
/// front send one of them as a download: their source may hold a database password.
pub const ALWAYS_DYNAMIC: &[&str] = &[
    "php", "php3", "php4", "php5", "php7", "php8", "phtml", "pht", "phar", "phps", "shtml", "cgi",
    "pl", "py",
];

/// Dynamic rules: extensions (lower-case, without dot) and path prefixes (starting with `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// Extensions such as `php`, compared case-insensitively.
    pub extensions: Vec<String>,
    /// Decoded path prefixes such as `/cgi-bin/`.
    pub prefixes: Vec<String>,
}

impl Dynamic {
    /// Parses `php,shtml,/cgi-bin/`.
    pub fn parse(s: &str) -> Result<Dynamic, String> {
        let mut d = Dynamic::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item.starts_with('/') {
                d.prefixes.push(item.to_owned());
            } else {
                let ext = item.trim_start_matches('.');
                if ext.is_empty() || ext.contains(['/', '.']) {
                    return Err(format!(
                        "--dynamic: {item:?} is neither an extension nor a /prefix"
                    ));
                }
                d.extensions.push(ext.to_ascii_lowercase());
            }
        }
        Ok(d)
    }

    /// Whether a file name ends in a dynamic extension (`x.PHP` included): one of the configured
    /// ones, or one that a stock Apache executes or refuses ([`ALWAYS_DYNAMIC`]), whatever the list.
    pub fn is_dynamic_name(&self, name: &[u8]) -> bool {
        let Some(dot) = name.iter().rposition(|b| *b == b'.') else {
            return false;
        };
        let ext = &name[dot + 1..];
        ALWAYS_DYNAMIC
            .iter()
            .any(|e| e.as_bytes().eq_ignore_ascii_case(ext))
            || self
                .extensions
                .iter()
                .any(|e| e.as_bytes().eq_ignore_ascii_case(ext))
    }
}

/// The validated configuration, shared read-only by every main daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the main daemons listen.
    pub listen: SocketAddr,
    /// HTTPS, when a --tls-port is given.
    pub tls: Option<Arc<crate::conn::tls::Tls>>,
    /// Most concurrent HTTP/2 streams per connection.
    pub h2_max_streams: u32,
    /// Plain HTTP answers 308 to HTTPS (ACME challenges excepted).
    pub redirect_https: bool,
    /// `--add-header` rules, in order.
    pub header_rules: Vec<crate::sending::header_rules::HeaderRule>,
    /// The operator's pages for the front's own error answers, by status.
    pub error_pages: std::collections::HashMap<u16, bytes::Bytes>,
    /// `Strict-Transport-Security` for HTTPS answers, if any.
    pub hsts: Option<http::HeaderValue>,
    /// Canonical document root.
    pub root: PathBuf,
    /// Backends, resolved: `HOST:PORT` or `unix:/PATH`.
    pub backends: Vec<khttpd_bridge::BackendAddr>,
    /// Dynamic extensions and prefixes.
    pub dynamic: Dynamic,
    /// Index file names in order.
    pub index: Vec<String>,
    /// Directory listings on.
    pub listing: bool,
    /// Most entries in one listing.
    pub listing_max: usize,
    /// Unknown types served as octet-stream.
    pub sloppy_mime: bool,
    /// kHTTPd's perm_required.
    pub perm_required: u32,
    /// kHTTPd's perm_forbid.
    pub perm_forbid: u32,
    /// Number of main daemons.
    pub threads: usize,
    /// Deadline for a complete request head.
    pub header_timeout: Duration,
    /// Idle time allowed between keep-alive requests.
    pub keepalive_timeout: Duration,
    /// Longest stall of a request body.
    pub body_timeout: Duration,
    /// Longest stall of a response write.
    pub send_timeout: Duration,
    /// Largest request head accepted.
    pub max_head_size: usize,
    /// Largest request body accepted (413 beyond).
    pub max_body_size: u64,
    /// Request bodies held in memory up to this size, in a temporary file beyond.
    pub body_buffer: u64,
    /// Where temporary files of request bodies go.
    pub temp_dir: PathBuf,
    /// How long a verification verdict is trusted.
    pub verify_ttl: Duration,
    /// Most verdicts held.
    pub verify_max: usize,
    /// Most probes at once.
    pub verify_probes: usize,
    /// Where `/healthz` and `/metrics` are served, if anywhere (loopback only).
    pub admin_listen: Option<SocketAddr>,
    /// Most path segments routed (414 beyond).
    pub max_path_depth: usize,
    /// Longest decoded path routed (414 beyond).
    pub max_path_length: usize,
    /// Most ranges in a multipart answer.
    pub max_ranges: usize,
    /// Read size for streamed files, and the largest file read whole.
    pub chunk_size: usize,
    /// Cache-Control value, if any.
    pub cache_control_value: Option<http::HeaderValue>,
    /// The content cache's limits.
    pub cache: crate::cache::limits::CacheConfig,
    /// sendfile(2) for large cached bodies.
    pub sendfile: bool,
    /// Drain deadline at stop.
    pub grace: Duration,
    /// Listen backlog.
    pub backlog: i32,
    /// TCP_DEFER_ACCEPT on the listeners, for the header timeout.
    pub defer_accept: bool,
    /// Most open connections.
    pub maxconnect: usize,
    /// How requests reach the backends.
    pub bridge: khttpd_bridge::BridgeConfig,
    /// `X-Khttpd-Route` on every answer.
    pub route_header: bool,
    /// Where access-log lines go.
    pub access_log: crate::logging::format::LogTarget,
    /// Their format.
    pub log_format: crate::logging::format::LogFormat,
}

/// Why a configuration was refused: one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(a: Args) -> Result<Config, ConfigError> {
        let root = std::fs::canonicalize(&a.root)
            .map_err(|e| ConfigError(format!("document root {}: {e}", a.root.display())))?;
        if !root.is_dir() {
            return Err(ConfigError(format!(
                "document root {} is not a directory",
                a.root.display()
            )));
        }
        let mut backends = Vec::new();
        let mut buffering_by_backend = Vec::new();
        for b in a.backend.iter().filter(|b| !b.trim().is_empty()) {
            // nginx's proxy_pass takes a URL; ours takes what Apache's Listen takes.
            if let Some((scheme, rest)) = b.trim().split_once("://") {
                let hostport = rest.trim_end_matches('/');
                return Err(ConfigError(format!(
                    "--backend {b:?}: drop the scheme, the backend is HOST:PORT or unix:/PATH (--backend {hostport}){}",
                    if scheme.eq_ignore_ascii_case("https") {
                        "; the backend is spoken to in plain HTTP/1.1"
                    } else {
                        ""
                    }
                )));
            }
            // nginx's `server ADDR param=value`: the address, then the backend's own settings.
            let mut words = b.split_whitespace();
            let addr = khttpd_bridge::BackendAddr::parse(words.next().unwrap_or_default())
                .map_err(|e| ConfigError(format!("--backend {e}")))?;
            for option in words {
                match option.split_once('=') {
                    Some(("buffering", "on")) => buffering_by_backend.push((addr, true)),
                    Some(("buffering", "off")) => buffering_by_backend.push((addr, false)),
                    _ => {
                        return Err(ConfigError(format!(
                            "--backend {b:?}: unknown setting {option:?} (a backend takes buffering=on or buffering=off)"
                        )))
                    }
                }
            }
            backends.push(addr);
        }
        let dynamic = Dynamic::parse(&a.dynamic).map_err(ConfigError)?;
        let index: Vec<String> = a
            .index
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = index.iter().find(|i| i.contains('/') || i.starts_with('.')) {
            return Err(ConfigError(format!(
                "--index: {bad:?} is not a plain file name"
            )));
        }
        let admin_listen = match a.admin_listen.as_deref().map(str::trim) {
            None | Some("") | Some("off") => None,
            Some(text) => {
                let addr: SocketAddr = text.parse().map_err(|_| {
                    ConfigError(format!(
                        "--admin-listen {text:?}: expected a loopback IP:PORT such as 127.0.0.1:9180"
                    ))
                })?;
                // Metrics and health say much about the site: they stay on this machine.
                if !addr.ip().is_loopback() {
                    return Err(ConfigError(format!(
                        "--admin-listen {addr}: only a loopback address (127.0.0.1, ::1); put a proxy in front to publish it"
                    )));
                }
                Some(addr)
            }
        };
        let temp_dir = a.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        if !temp_dir.is_dir() {
            return Err(ConfigError(format!(
                "--temp-dir {}: not a directory",
                temp_dir.display()
            )));
        }
        if a.verify_max == 0 || a.verify_probes == 0 {
            return Err(ConfigError(
                "--verify-max and --verify-probes must be at least 1".into(),
            ));
        }
        if a.max_path_depth == 0 || a.max_path_length == 0 {
            return Err(ConfigError(
                "--max-path-depth and --max-path-length must be at least 1".into(),
            ));
        }
        if a.max_head_size < 8192 {
            return Err(ConfigError(
                "--max-head-size must be at least 8192 (hyper's smallest read buffer)".into(),
            ));
        }
        if a.chunk_size < 4096 || a.chunk_size > 16 << 20 {
            return Err(ConfigError(
                "--chunk-size must be between 4096 and 16777216".into(),
            ));
        }
        if a.max_ranges == 0 {
            return Err(ConfigError("--max-ranges must be at least 1".into()));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if a.threads == 0 { cores } else { a.threads };
        if threads > 1024 {
            return Err(ConfigError("--threads must be at most 1024".into()));
        }
        let cache_control_value = match a.cache_control.trim() {
            "" => None,
            cc => Some(http::HeaderValue::from_str(cc).map_err(|_| {
                ConfigError(format!("--cache-control {cc:?} is not a header value"))
            })?),
        };
        let revalidate = Duration::from_secs_f64(a.cache_revalidate);
        let cache = crate::cache::limits::CacheConfig {
            size: a.cache_size,
            max_file: a.cache_max_file,
            compress_min: a.compress_min,
            revalidate,
            settle: revalidate,
            compress_wait: Duration::from_secs_f64(a.compress_wait),
            compress_threads: a
                .compress_threads
                .unwrap_or_else(crate::cache::limits::default_compress_threads),
            compress_queue: a.compress_queue,
        };
        cache.validate().map_err(ConfigError)?;
        let proxy_protocol = a
            .proxy_protocol
            .parse()
            .map_err(|e| ConfigError(format!("--proxy-protocol: {e}")))?;
        let trusted_proxies = a
            .trusted_proxy
            .iter()
            .filter(|c| !c.trim().is_empty())
            .map(|c| {
                c.trim()
                    .parse()
                    .map_err(|e| ConfigError(format!("--trusted-proxy: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bridge = khttpd_bridge::BridgeConfig {
            backends: backends.clone(),
            timeout: Duration::from_secs_f64(a.backend_timeout),
            max_conns: if a.backend_max_conns == 0 {
                BACKEND_CONNS_PER_CORE * cores
            } else {
                a.backend_max_conns
            },
            queue_timeout: Duration::from_secs_f64(a.backend_queue_timeout),
            idle_timeout: Duration::from_secs_f64(a.backend_idle_timeout),
            fail_cooldown: Duration::from_secs_f64(a.backend_cooldown),
            proxy_protocol,
            trusted_proxies,
            buffering: a.proxy_buffering,
            buffering_by_backend,
            proxy_buffer: a.proxy_buffer,
            proxy_buffers_total: a.proxy_buffers_total,
            proxy_temp_max: a.proxy_temp_max,
            proxy_temp_total: a.proxy_temp_total,
            temp_dir: temp_dir.clone(),
        };
        let tls = match a.tls_port {
            Some(port) => {
                let (mut certs, mut keys) = (a.cert.clone(), a.key.clone());
                // Paired by position, so the flags must pair up before the directory's join.
                if let (Some(_), true) = (&a.cert_dir, certs.len() != keys.len()) {
                    return Err(ConfigError(format!(
                        "{} --cert and {} --key: give one key per certificate, in the same order",
                        certs.len(),
                        keys.len()
                    )));
                }
                if let Some(dir) = &a.cert_dir {
                    let found =
                        crate::conn::tls::cert_dir(dir).map_err(|e| ConfigError(e.to_string()))?;
                    for (cert, key) in found {
                        certs.push(cert);
                        keys.push(key);
                    }
                }
                Some(Arc::new(
                    crate::conn::tls::Tls::load(
                        SocketAddr::new(a.bind, port),
                        &certs,
                        &keys,
                        &a.ocsp,
                    )
                    .map_err(|e| ConfigError(e.to_string()))?,
                ))
            }
            None if !a.cert.is_empty()
                || !a.key.is_empty()
                || !a.ocsp.is_empty()
                || a.cert_dir.is_some() =>
            {
                return Err(ConfigError(
                    "--cert, --key and --cert-dir need --tls-port (e.g. --tls-port 443)".into(),
                ))
            }
            None => None,
        };
        if a.redirect_https && tls.is_none() {
            return Err(ConfigError(
                "--redirect-https needs --tls-port (and --cert, --key)".into(),
            ));
        }
        if a.tls_port.is_some() && a.tls_port == Some(a.port) && a.port != 0 {
            return Err(ConfigError(format!(
                "--tls-port {}: the same port as --port",
                a.port
            )));
        }
        let error_pages = error_pages(&a.error_page, &root)?;
        let header_rules = a
            .add_header
            .iter()
            .map(|spec| {
                crate::sending::header_rules::HeaderRule::parse(spec)
                    .map_err(|e| ConfigError(format!("--add-header {spec:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            bridge,
            tls,
            error_pages,
            header_rules,
            h2_max_streams: a.h2_max_streams.max(1),
            redirect_https: a.redirect_https,
            hsts: (a.hsts > 0).then(|| {
                http::HeaderValue::from_str(&format!("max-age={}", a.hsts))
                    .unwrap_or(http::HeaderValue::from_static("max-age=0"))
            }),
            route_header: a.route_header,
            listen: SocketAddr::new(a.bind, a.port),
            root,
            backends,
            dynamic,
            index,
            listing: a.listing,
            listing_max: a.listing_max.max(1),
            sloppy_mime: a.sloppy_mime,
            perm_required: a.perm_required,
            perm_forbid: a.perm_forbid,
            threads,
            header_timeout: Duration::from_secs_f64(a.header_timeout),
            keepalive_timeout: Duration::from_secs_f64(a.keepalive_timeout),
            body_timeout: Duration::from_secs_f64(a.body_timeout),
            send_timeout: Duration::from_secs_f64(a.send_timeout),
            max_head_size: a.max_head_size,
            max_body_size: a.max_body_size,
            body_buffer: a.body_buffer,
            temp_dir,
            verify_ttl: Duration::from_secs_f64(a.verify_ttl),
            verify_max: a.verify_max,
            verify_probes: a.verify_probes,
            admin_listen,
            max_path_depth: a.max_path_depth,
            max_path_length: a.max_path_length,
            max_ranges: a.max_ranges,
            chunk_size: a.chunk_size,
            cache_control_value,
            cache,
            sendfile: a.sendfile,
            grace: Duration::from_secs_f64(a.grace),
            backlog: a.backlog.max(16),
            defer_accept: a.defer_accept,
            maxconnect: a.maxconnect.max(1),
            access_log: a
                .access_log
                .parse()
                .map_err(|e| ConfigError(format!("--access-log: {e}")))?,
            log_format: a
                .log_format
                .parse()
                .map_err(|e| ConfigError(format!("--log-format: {e}")))?,
        })
    }
}

/// The largest custom error page.
const ERROR_PAGE_MAX: u64 = 64 * 1024;

/// `--error-page CODE=PATH` values, read now: a missing or oversized page refuses the
/// configuration (at start, or the reload) instead of surprising a visitor later.
fn error_pages(
    specs: &[String],
    root: &std::path::Path,
) -> Result<std::collections::HashMap<u16, bytes::Bytes>, ConfigError> {
    let mut pages = std::collections::HashMap::new();
    for spec in specs {
        let bad = |why: String| ConfigError(format!("--error-page {spec:?}: {why}"));
        let (code, path) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected CODE=PATH, e.g. 404=/errors/404.html".into()))?;
        let code: u16 = code
            .trim()
            .parse()
            .ok()
            .filter(|c| (400..=599).contains(c))
            .ok_or_else(|| bad("the code must be 400 to 599".into()))?;
        let rel = path.trim().trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|s| s == "..") {
            return Err(bad(
                "PATH is a file under --root, e.g. /errors/404.html".into()
            ));
        }
        let file = root.join(rel);
        let meta = std::fs::metadata(&file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
        if !meta.is_file() || meta.len() > ERROR_PAGE_MAX {
            return Err(bad(format!(
                "{}: must be a file of at most 64 KiB",
                file.display()
            )));
        }
        let body = std::fs::read(&file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
        pages.insert(code, bytes::Bytes::from(body));
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["khttpd-front"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn defaults_follow_khttpd() {
        let a = args(&[]);
        assert_eq!(a.port, 80);
        assert_eq!(a.perm_required, 0o4);
        assert_eq!(a.perm_forbid, 0o7111);
        assert_eq!(a.root, PathBuf::from("www"));
        assert!(a.listing);
    }

    #[test]
    fn dynamic_parses_extensions_and_prefixes() {
        let d = Dynamic::parse("php, .SHTML,/cgi-bin/").unwrap();
        assert_eq!(d.extensions, vec!["php", "shtml"]);
        assert_eq!(d.prefixes, vec!["/cgi-bin/"]);
        assert!(d.is_dynamic_name(b"x.PHP"));
        assert!(d.is_dynamic_name(b"a.b.shtml"));
        assert!(!d.is_dynamic_name(b"php"));
        assert!(!d.is_dynamic_name(b"x.phpx"));
        // Issue 15: no list makes a file Apache executes a download.
        let none = Dynamic::parse("").unwrap();
        for name in [
            &b"demo1.php"[..],
            b"x.PHTML",
            b"a.phar",
            b"ssi.shtml",
            b"x.phps",
        ] {
            assert!(
                none.is_dynamic_name(name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert!(!none.is_dynamic_name(b"style.css"));
        assert!(Dynamic::parse("a/b").is_err());
    }

    /// Issue 17: a URL where HOST:PORT belongs says what to write instead.
    #[test]
    fn a_backend_with_a_scheme_says_to_drop_it() {
        let err = Config::try_from(args(&[
            "--root",
            "/tmp",
            "--backend",
            "http://127.0.0.1:8080/",
        ]))
        .unwrap_err();
        assert!(
            err.0.contains("drop the scheme") && err.0.contains("--backend 127.0.0.1:8080)"),
            "{err}"
        );
        // nginx's way of naming a socket gets the same advice.
        let err = Config::try_from(args(&[
            "--root",
            "/tmp",
            "--backend",
            "http://unix:/run/apache.sock",
        ]))
        .unwrap_err();
        assert!(err.0.contains("(--backend unix:/run/apache.sock)"), "{err}");
        let ok = Config::try_from(args(&[
            "--root",
            "/tmp",
            "--backend",
            "unix:/run/apache.sock",
        ]))
        .unwrap();
        assert_eq!(ok.backends[0].to_string(), "unix:/run/apache.sock");
    }

    #[test]
    fn missing_root_is_refused() {
        let err = Config::try_from(args(&["--root", "/nonexistent/khttpd"])).unwrap_err();
        assert!(err.0.contains("document root"), "{err}");
    }

    #[test]
    fn bad_backend_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        assert!(Config::try_from(args(&["--root", root, "--backend", "nohostport"])).is_err());
        let c = Config::try_from(args(&["--root", root, "--backend", "127.0.0.1:8080"])).unwrap();
        assert_eq!(c.backends.len(), 1);
    }
}
