//! The command line: every flag with its `KHTTPD_*` environment fallback and its default, as clap
//! parses it, before [`crate::config::Config`] validates it.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

/// khttpd-front: serves static files itself and hands everything dynamic or unknown to a backend.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(name = "khttpd-front", version, about, long_about = None, args_override_self = true)]
pub struct Args {
    /// TCP port to listen on (kHTTPd's serverport). 0 picks a free port and prints it.
    #[arg(long, env = "KHTTPD_PORT", default_value_t = 80)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "KHTTPD_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// TCP port for HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on the same address; needs --cert and
    /// --key. Off when not given.
    #[arg(long, env = "KHTTPD_TLS_PORT")]
    pub tls_port: Option<u16>,

    /// PEM certificate chain (leaf first) for HTTPS; repeatable, one --key each, in the same order.
    /// The client's SNI name picks the first certificate valid for it, else the first one.
    #[arg(long, env = "KHTTPD_CERT", value_delimiter = ',')]
    pub cert: Vec<PathBuf>,

    /// PEM private key of the --cert at the same position (a warning if others may read it).
    #[arg(long, env = "KHTTPD_KEY", value_delimiter = ',')]
    pub key: Vec<PathBuf>,

    /// A directory of certificates for HTTPS, read at start and at each reload: certbot's layout
    /// (NAME/fullchain.pem with NAME/privkey.pem, as /etc/letsencrypt/live has them) and NAME.pem
    /// or NAME.crt with NAME.key side by side; added after any --cert, in name order.
    #[arg(long, env = "KHTTPD_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,

    /// DER OCSP response to staple for the --cert at the same position (nginx's ssl_stapling_file);
    /// repeatable. Refresh it (openssl ocsp -respout, certbot hooks) and reload.
    #[arg(long, env = "KHTTPD_OCSP", value_delimiter = ',')]
    pub ocsp: Vec<PathBuf>,

    /// Most concurrent HTTP/2 streams per connection (nginx's http2_max_concurrent_streams).
    #[arg(long, env = "KHTTPD_H2_MAX_STREAMS", default_value_t = 128)]
    pub h2_max_streams: u32,

    /// Answer every plain-HTTP request with 308 to the same URL on HTTPS (--tls-port), except
    /// /.well-known/acme-challenge/ (certbot's and other ACME clients' webroot checks).
    #[arg(long, env = "KHTTPD_REDIRECT_HTTPS", default_value = "off", value_parser = parse_on_off,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "on")]
    pub redirect_https: bool,

    /// Strict-Transport-Security max-age in seconds sent with HTTPS answers; 0 sends none.
    #[arg(long, env = "KHTTPD_HSTS", default_value_t = 0)]
    pub hsts: u64,

    /// Document root (kHTTPd's documentroot). Requests never resolve outside it.
    #[arg(long, env = "KHTTPD_ROOT", default_value = "www")]
    pub root: PathBuf,

    /// Backend HOST:PORT or unix:/PATH for dynamic and unknown requests (kHTTPd's clientport), e.g.
    /// 127.0.0.1:8080 or unix:/run/apache.sock. Without one, such requests get a clear error instead (404, 405, 403 or 502).
    #[arg(long, env = "KHTTPD_BACKEND", value_delimiter = ',')]
    pub backend: Vec<String>,

    /// Seconds to connect to a backend and, again, to receive its response head; past it, 504.
    /// A relayed answer's body that stalls this long is cut (nginx's proxy_read_timeout).
    #[arg(long, env = "KHTTPD_BACKEND_TIMEOUT", default_value_t = 60.0, value_parser = parse_secs)]
    pub backend_timeout: f64,

    /// Requests in flight per backend over all main daemons; more wait in a queue. 0 = eight per
    /// core: a PHP backend is mostly busy on the CPU, and Apache with a few requests at once
    /// serves more than with many (fewer processes to switch between), so they wait here instead.
    #[arg(long, env = "KHTTPD_BACKEND_MAX_CONNS", default_value_t = 0)]
    pub backend_max_conns: usize,

    /// Seconds a request waits in a backend's queue before it is answered 503 with Retry-After.
    #[arg(long, env = "KHTTPD_BACKEND_QUEUE_TIMEOUT", default_value_t = 5.0, value_parser = parse_secs)]
    pub backend_queue_timeout: f64,

    /// Seconds a pooled backend connection may stay idle; keep it under Apache's KeepAliveTimeout (5 s).
    #[arg(long, env = "KHTTPD_BACKEND_IDLE_TIMEOUT", default_value_t = 4.0, value_parser = parse_secs)]
    pub backend_idle_timeout: f64,

    /// Seconds a backend that refused, reset or timed out is skipped before it is tried again.
    #[arg(long, env = "KHTTPD_BACKEND_COOLDOWN", default_value_t = 2.0, value_parser = parse_secs)]
    pub backend_cooldown: f64,

    /// PROXY protocol toward the backend: off, v1 or v2 (each client connection then gets its own
    /// backend connection, and Apache's mod_remoteip `RemoteIPProxyProtocol On` sees the client).
    #[arg(long, env = "KHTTPD_PROXY_PROTOCOL", default_value = "off")]
    pub proxy_protocol: String,

    /// Peers (CIDR) whose own X-Forwarded-For/-Proto/-Host are kept and extended; from anyone else
    /// they are replaced. Repeatable.
    #[arg(long, env = "KHTTPD_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<String>,

    /// Add `X-Khttpd-Route: static|backend|error` to every answer, to see who served what.
    #[arg(long, env = "KHTTPD_ROUTE_HEADER", default_value = "off", value_parser = parse_on_off,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "on")]
    pub route_header: bool,

    /// Comma-separated dynamic extensions, matched case-insensitively on any path segment (so
    /// `index.php/extra` is dynamic); an entry starting with `/` is a path prefix such as `/cgi-bin/`.
    #[arg(long, env = "KHTTPD_DYNAMIC", default_value = "php,shtml,/cgi-bin/")]
    pub dynamic: String,

    /// Comma-separated index file names tried in order for a directory; a dynamic one (index.php)
    /// sends the directory to the backend.
    #[arg(
        long,
        env = "KHTTPD_INDEX",
        default_value = "index.html,index.htm,index.php"
    )]
    pub index: String,

    /// Directory listings for directories without an index file: on, or off (403).
    #[arg(long, env = "KHTTPD_LISTING", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub listing: bool,

    /// Most entries read into one directory listing; a directory with more is listed with this many
    /// (in the order the file system gives them, then sorted) and a note, so one huge directory
    /// cannot cost seconds of CPU or megabytes per listing.
    #[arg(long, env = "KHTTPD_LISTING_MAX", default_value_t = 10000)]
    pub listing_max: usize,

    /// Serve files of unknown type as application/octet-stream instead of handing them to the backend
    /// (kHTTPd's sloppymime): on or off; the bare flag means on.
    #[arg(long, env = "KHTTPD_SLOPPY_MIME", default_value = "off", value_parser = parse_on_off,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "on")]
    pub sloppy_mime: bool,

    /// Octal mode bits of which a file must have at least one to be served (kHTTPd's perm_required;
    /// 4 = world-readable).
    #[arg(long, env = "KHTTPD_PERM_REQUIRED", default_value = "4", value_parser = parse_octal)]
    pub perm_required: u32,

    /// Octal mode bits that hand a file to the backend when any is set (kHTTPd's perm_forbid plus
    /// setuid/setgid; 7111 = setuid, setgid, sticky, any execute bit).
    #[arg(long, env = "KHTTPD_PERM_FORBID", default_value = "7111", value_parser = parse_octal)]
    pub perm_forbid: u32,

    /// Number of main daemons (worker threads, each with its own listener); 0 = one per core.
    #[arg(long, env = "KHTTPD_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Seconds a client has to send a complete request head, from the connection's start or the
    /// head's first byte (slowloris defence).
    #[arg(long, env = "KHTTPD_HEADER_TIMEOUT", default_value_t = 20.0, value_parser = parse_secs)]
    pub header_timeout: f64,

    /// Seconds an idle keep-alive connection waits for its next request.
    #[arg(long, env = "KHTTPD_KEEPALIVE_TIMEOUT", default_value_t = 15.0, value_parser = parse_secs)]
    pub keepalive_timeout: f64,

    /// Seconds a request body may stall (no byte while the server waits) before the connection is
    /// closed (slow POST defence).
    #[arg(long, env = "KHTTPD_BODY_TIMEOUT", default_value_t = 60.0, value_parser = parse_secs)]
    pub body_timeout: f64,

    /// Seconds a response may stall (client not reading) before the connection is closed (slow read).
    #[arg(long, env = "KHTTPD_SEND_TIMEOUT", default_value_t = 60.0, value_parser = parse_secs)]
    pub send_timeout: f64,

    /// Largest request head in bytes (request line plus headers); larger heads get 431.
    #[arg(long, env = "KHTTPD_MAX_HEAD_SIZE", default_value_t = 16384)]
    pub max_head_size: usize,

    /// Largest request body accepted (nginx's client_max_body_size); larger gets 413. Bodies are
    /// read whole before a backend slot is taken, so a slow upload never holds an Apache worker.
    #[arg(long, env = "KHTTPD_MAX_BODY_SIZE", default_value = "64M", value_parser = parse_size)]
    pub max_body_size: u64,

    /// Request bodies up to this size are held in memory while they arrive; larger ones go to an
    /// unlinked temporary file in --temp-dir (nginx's client_body_buffer_size).
    #[arg(long, env = "KHTTPD_BODY_BUFFER", default_value = "64K", value_parser = parse_size)]
    pub body_buffer: u64,

    /// Backend answers are read as fast as the backend writes them and held for the client
    /// (nginx's proxy_buffering), so a slow client never holds an Apache worker; `off` passes them
    /// through at the client's pace. `text/event-stream` and `X-Accel-Buffering: no` always stream.
    #[arg(long, env = "KHTTPD_PROXY_BUFFERING", default_value = "on", value_parser = parse_on_off,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "on")]
    pub proxy_buffering: bool,

    /// Bytes of one backend answer held in memory for a slow client; the rest goes to an unlinked
    /// temporary file in --temp-dir (nginx's proxy_buffers).
    #[arg(long, env = "KHTTPD_PROXY_BUFFER", default_value = "64K", value_parser = parse_size)]
    pub proxy_buffer: u64,

    /// Bytes of all backend answers held in memory at once; past it, answers go to their files.
    #[arg(long, env = "KHTTPD_PROXY_BUFFERS_TOTAL", default_value = "64M", value_parser = parse_size)]
    pub proxy_buffers_total: u64,

    /// Largest temporary file of one backend answer (nginx's proxy_max_temp_file_size); past it the
    /// backend waits for the client. 0: no files, memory only.
    #[arg(long, env = "KHTTPD_PROXY_TEMP_MAX", default_value = "1G", value_parser = parse_size)]
    pub proxy_temp_max: u64,

    /// Bytes of all backend answers' temporary files at once; past it, backends wait for clients.
    #[arg(long, env = "KHTTPD_PROXY_TEMP_TOTAL", default_value = "4G", value_parser = parse_size)]
    pub proxy_temp_total: u64,

    /// Directory for the temporary files of large request bodies and backend answers (unlinked at
    /// once); default: the system's ($TMPDIR or /tmp).
    #[arg(long, env = "KHTTPD_TEMP_DIR")]
    pub temp_dir: Option<PathBuf>,

    /// Most segments in a request path routed by the front; deeper paths get 414 before any file is
    /// looked at (each level costs a stat and an `.htaccess` look-up).
    #[arg(long, env = "KHTTPD_MAX_PATH_DEPTH", default_value_t = 64)]
    pub max_path_depth: usize,

    /// Longest decoded request path in bytes routed by the front; longer paths get 414 before any
    /// file is looked at (Linux refuses paths over 4096 bytes anyway).
    #[arg(long, env = "KHTTPD_MAX_PATH_LENGTH", default_value_t = 4096)]
    pub max_path_length: usize,

    /// Most ranges served in one multipart answer after merging; more ask for the whole file (200).
    #[arg(long, env = "KHTTPD_MAX_RANGES", default_value_t = 16)]
    pub max_ranges: usize,

    /// Files up to this many bytes are read whole; larger files stream in chunks of this size.
    #[arg(long, env = "KHTTPD_CHUNK_SIZE", default_value_t = 65536)]
    pub chunk_size: usize,

    /// Bytes the content cache may hold (bodies, compressed variants, listings, routing): a number
    /// with an optional K, M or G suffix.
    #[arg(long, env = "KHTTPD_CACHE_SIZE", default_value = "256M", value_parser = parse_size)]
    pub cache_size: u64,

    /// Largest file kept in the cache (and compressed); larger files stream from disk.
    #[arg(long, env = "KHTTPD_CACHE_MAX_FILE", default_value = "2M", value_parser = parse_size)]
    pub cache_max_file: u64,

    /// Smallest body worth compressing, in bytes.
    #[arg(long, env = "KHTTPD_COMPRESS_MIN", default_value = "256", value_parser = parse_size)]
    pub compress_min: u64,

    /// Seconds a request waits for a compression in progress before taking the next-best encoding
    /// (the compression finishes for later requests).
    #[arg(long, env = "KHTTPD_COMPRESS_WAIT", default_value_t = 1.0, value_parser = parse_secs)]
    pub compress_wait: f64,

    /// Compressions running at once on the blocking pool [default: half the cores, at least 1],
    /// so a burst of first requests for large files never holds every core.
    #[arg(long, env = "KHTTPD_COMPRESS_THREADS")]
    pub compress_threads: Option<usize>,

    /// Compressions waiting for a thread; past it, a file goes out uncompressed and a later
    /// request compresses it (a burst of first requests cannot pile up work and memory).
    #[arg(long, env = "KHTTPD_COMPRESS_QUEUE", default_value_t = 8)]
    pub compress_queue: usize,

    /// Seconds a cached file's metadata (and a rendered listing) is trusted before the file is
    /// looked at again: the longest a changed file can be served stale.
    #[arg(long, env = "KHTTPD_CACHE_REVALIDATE", default_value_t = 1.0, value_parser = parse_secs)]
    pub cache_revalidate: f64,

    /// With a backend: seconds Apache's verdict on a static URL (it serves the file as it is, or not)
    /// is trusted before Apache is asked again, so a change in Apache's main configuration takes
    /// effect without a restart (`khttpd-ctl flush` drops all verdicts at once).
    #[arg(long, env = "KHTTPD_VERIFY_TTL", default_value_t = 60.0, value_parser = parse_secs)]
    pub verify_ttl: f64,

    /// Most verdicts held (the least used are dropped first).
    #[arg(long, env = "KHTTPD_VERIFY_MAX", default_value_t = 65536)]
    pub verify_max: usize,

    /// Most verification probes to the backend at once, over all main daemons; more wait their turn
    /// (up to 4096; beyond, a URL stays with the backend until a later request asks again).
    #[arg(long, env = "KHTTPD_VERIFY_PROBES", default_value_t = 8)]
    pub verify_probes: usize,

    /// Send large cached files with sendfile(2) instead of copying them from memory (as nginx's
    /// `sendfile on`): the kernel reads them from the page cache on the main daemon's thread.
    #[arg(long, env = "KHTTPD_SENDFILE", default_value = "on", value_parser = parse_on_off,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "on")]
    pub sendfile: bool,

    /// A page of yours for an error the front answers itself (not the backend's own), nginx's
    /// error_page: CODE=PATH, PATH under --root (e.g. 404=/errors/404.html); repeatable. Read at
    /// start and at each reload, at most 64 KiB.
    #[arg(long, env = "KHTTPD_ERROR_PAGE", value_delimiter = ',')]
    pub error_page: Vec<String>,

    /// A response field for the front's own answers under a path pattern (nginx's add_header and
    /// expires): PATTERN=NAME: VALUE, e.g. '/assets/*=Cache-Control: public, max-age=31536000,
    /// immutable' or '*.html=X-Frame-Options: SAMEORIGIN'; repeatable. A field set here replaces the
    /// front's own (Cache-Control); the backend's answers are left as they are.
    #[arg(long, env = "KHTTPD_ADD_HEADER")]
    pub add_header: Vec<String>,

    /// Cache-Control sent with static files and listings; empty for none.
    #[arg(long, env = "KHTTPD_CACHE_CONTROL", default_value = "no-cache")]
    pub cache_control: String,

    /// Seconds in-flight requests get to finish when the server stops (SIGTERM/SIGINT).
    #[arg(long, env = "KHTTPD_GRACE", default_value_t = 30.0, value_parser = parse_secs)]
    pub grace: f64,

    /// Most connections open at once over all main daemons (kHTTPd's maxconnect); past it a new
    /// connection is answered 503 and closed at once, never left waiting in the backlog.
    #[arg(long, env = "KHTTPD_MAXCONNECT", default_value_t = 16384)]
    pub maxconnect: usize,

    /// Listen backlog of each main daemon's socket.
    #[arg(long, env = "KHTTPD_BACKLOG", default_value_t = 1024)]
    pub backlog: i32,

    /// Let the kernel hold a new connection until its first bytes arrive, for at most the header
    /// timeout (TCP_DEFER_ACCEPT, as Apache's `AcceptFilter http data` and nginx's `listen ...
    /// deferred`): a main daemon then wakes once per connection, when its request is there to
    /// read, instead of twice. A client that connects and sends nothing is closed after about two
    /// header timeouts instead of one, and waits in the kernel meanwhile, not in maxconnect.
    #[arg(long, env = "KHTTPD_DEFER_ACCEPT", default_value = "on", value_parser = parse_on_off,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "on")]
    pub defer_accept: bool,

    /// Check the configuration and exit (nginx's -t): flags, environment and config file are
    /// validated exactly as at start, the effective configuration is printed, nothing is bound;
    /// exit status 0 when valid, 64 when not.
    #[arg(short = 't', long)]
    pub check_config: bool,

    /// TOML configuration file with the same keys as these flags (`port = 80`, `backend =
    /// ["127.0.0.1:8080"]`); flags and environment variables override it; `khttpd-ctl reload` re-reads it.
    #[arg(long, env = "KHTTPD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Control socket for khttpd-ctl (mode 0600). Default: /run/khttpd/ctl.sock when writable, else
    /// $XDG_RUNTIME_DIR/khttpd.sock, else /tmp/khttpd-$UID/ctl.sock.
    #[arg(long, env = "KHTTPD_CONTROL")]
    pub control: Option<PathBuf>,

    /// Admin listener for `/healthz` and `/metrics` (OpenMetrics, for Prometheus), such as
    /// 127.0.0.1:9180: loopback addresses only, never the public port. Off when not given.
    #[arg(long, env = "KHTTPD_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,

    /// Start with the listeners closed until `khttpd-ctl start`, as kHTTPd waited for `echo 1 > start`.
    #[arg(long, env = "KHTTPD_STOPPED")]
    pub stopped: bool,

    /// Access log (kHTTPd's logging): a file path, `-` for standard output, or `off`.
    #[arg(long, env = "KHTTPD_ACCESS_LOG", default_value = "off")]
    pub access_log: String,

    /// Access log format: `combined` (Apache's, read by goaccess, awstats and fail2ban), `json`, or a
    /// template with nginx's variables, e.g. '$remote_addr "$request" $status $request_time'.
    #[arg(long, env = "KHTTPD_LOG_FORMAT", default_value = "combined")]
    pub log_format: String,

    /// Access log lines queued for the writer thread; a full queue drops lines (counted), never blocks.
    #[arg(long, env = "KHTTPD_LOG_QUEUE", default_value_t = 8192)]
    pub log_queue: usize,

    /// When started as root: after binding the port and the control socket, switch to this user and
    /// its group.
    #[arg(long, env = "KHTTPD_USER")]
    pub user: Option<String>,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

fn parse_octal(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("expected octal mode bits such as 4 or 7111, got {s:?}"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("expected a size such as 65536, 256K, 256M or 1G, got {s:?}"))
}

fn parse_secs(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 86_400.0)
        .ok_or_else(|| format!("expected a number of seconds between 0 and 86400, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_switches() {
        assert_eq!(
            parse_octal("041111"),
            Err("expected octal mode bits such as 4 or 7111, got \"041111\"".into())
        );
        assert_eq!(parse_octal("0o644"), Ok(0o644));
        assert!(parse_octal("9").is_err());
        assert_eq!(parse_on_off("OFF"), Ok(false));
        assert!(parse_on_off("maybe").is_err());
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("nan").is_err());
    }
}
