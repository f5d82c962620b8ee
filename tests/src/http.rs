//! A tiny raw-bytes HTTP/1.1 client for wire-level tests.
//!
//! No HTTP client crate is used on purpose: those normalise exactly what
//! these tests want to see (framing, chunking, pipelining, connection
//! reuse, byte-exact headers). Requests are written as the test spells them
//! and responses are parsed here, strictly enough to catch framing bugs:
//! the body length is decided the way RFC 9112 §6.3 says a client must.
//!
//! Malformed responses make the parser panic (this is a test harness: a
//! server emitting garbage is a failed test); `None` only ever means "not
//! complete yet".

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a read may block before the server is considered stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on reading one exchange to EOF, so a server that trickles
/// bytes forever still cannot hang a test.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Conn::is_closed`] waits for the server's EOF.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// One parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// e.g. `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    /// The reason phrase as sent (possibly empty).
    pub reason: String,
    /// Header fields in wire order, names as sent (case preserved).
    pub headers: Vec<(String, String)>,
    /// The body with any chunked transfer coding removed.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
    /// Whether the body was sent with chunked transfer coding.
    pub chunked: bool,
    /// The status line and header block exactly as received, including the
    /// terminating empty line, for byte-exact assertions.
    pub raw_head: String,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in wire order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (lossy UTF-8), for readable assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes `request` verbatim to a fresh connection to `addr`, then returns
/// everything the server sends until it closes the connection (or stays
/// silent for 5 s).
pub fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream
        .write_all(request)
        .unwrap_or_else(|e| panic!("writing the request to {addr}: {e}"));
    let mut buf = Vec::new();
    read_until_close(&mut stream, &mut buf);
    buf
}

/// Parses the first response in `buf`, which must hold everything the
/// server sent (so a body delimited by connection close runs to the end of
/// `buf`). Returns the response and the number of bytes it occupied, or
/// `None` if `buf` ends before the response does.
pub fn parse_one(buf: &[u8]) -> Option<(Response, usize)> {
    parse(buf, false, true)
}

/// [`parse_one`] for the response to a HEAD request, which carries the
/// headers (Content-Length included) of a GET but never a body.
pub fn parse_one_head(buf: &[u8]) -> Option<(Response, usize)> {
    parse(buf, true, true)
}

/// Parses consecutive (pipelined) responses. `heads[i]` says whether the
/// i-th *final* response answers a HEAD request (missing entries mean
/// "no"); interim 1xx responses are returned too but take no entry.
/// Stops at the first incomplete response.
pub fn parse_all(buf: &[u8], heads: &[bool]) -> Vec<Response> {
    let mut responses = Vec::new();
    let mut offset = 0;
    let mut finals = 0;
    while offset < buf.len() {
        let head = heads.get(finals).copied().unwrap_or(false);
        let Some((response, used)) = parse(&buf[offset..], head, true) else {
            break;
        };
        if !is_interim(response.status) {
            finals += 1;
        }
        offset += used;
        responses.push(response);
    }
    responses
}

/// `GET path` on a fresh connection with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

/// One request on a fresh connection, returning the final (non-1xx)
/// response. Adds `Host: 127.0.0.1` and `Connection: close` unless
/// `headers` has them, and `Content-Length` when there is a body (or the
/// method normally has one) unless `headers` frames the body itself.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut conn = Conn::open(addr);
    conn.send(&build_request(method, path, headers, body, true));
    loop {
        let response = conn.read_response(method.eq_ignore_ascii_case("HEAD"));
        if !is_interim(response.status) {
            return response;
        }
    }
}

/// The bytes of a request as [`request`] sends it; `close` adds
/// `Connection: close` (unless `headers` has a Connection field).
pub fn build_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str("Host: 127.0.0.1\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close && !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    // Servers may answer 411 to a POST without a length, so methods that
    // normally carry a body always say how long it is.
    let body_method = ["POST", "PUT", "PATCH"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method));
    if (!body.is_empty() || body_method) && !has("content-length") && !has("transfer-encoding") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A persistent connection for keep-alive and pipelining tests.
pub struct Conn {
    stream: TcpStream,
    /// Received bytes not yet consumed by a parsed response.
    buf: Vec<u8>,
    /// The server closed (or reset) the connection.
    eof: bool,
}

impl Conn {
    /// Connects to `addr` (panics if that fails within 5 s).
    pub fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: connect(addr),
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes `bytes` verbatim.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("writing to the server: {e}"));
    }

    /// Sends a keep-alive request (see [`build_request`]) and returns the
    /// final response to it.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send(&build_request(method, path, headers, body, false));
        loop {
            let response = self.read_response(method.eq_ignore_ascii_case("HEAD"));
            if !is_interim(response.status) {
                return response;
            }
        }
    }

    /// Reads exactly one response (interim 1xx ones included); `head` says
    /// it answers a HEAD request. Bytes after it stay buffered for the next
    /// call. Panics if the connection ends or stalls 5 s before the
    /// response is complete.
    pub fn read_response(&mut self, head: bool) -> Response {
        let started = Instant::now();
        loop {
            if let Some((response, used)) = parse(&self.buf, head, self.eof) {
                self.buf.drain(..used);
                return response;
            }
            if self.eof {
                panic!(
                    "connection closed before a complete response; received:\n{}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            if started.elapsed() > TOTAL_TIMEOUT || !self.fill() {
                panic!(
                    "timed out waiting for a complete response; received:\n{}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Whether the server closes the connection within 1 s (returns as soon
    /// as it does). Data arriving instead means "not closed"; it is kept.
    pub fn is_closed(&mut self) -> bool {
        self.is_closed_within(CLOSE_WAIT)
    }

    /// [`Conn::is_closed`] with an explicit wait.
    pub fn is_closed_within(&mut self, wait: Duration) -> bool {
        if self.eof {
            return true;
        }
        self.stream
            .set_read_timeout(Some(wait))
            .expect("setting a read timeout");
        let _ = self.fill();
        self.stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("restoring the read timeout");
        self.eof
    }

    /// Everything still buffered plus all the server sends until it closes
    /// (or stays silent for 5 s).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        if !self.eof {
            read_until_close(&mut self.stream, &mut self.buf);
            self.eof = true;
        }
        std::mem::take(&mut self.buf)
    }

    /// The underlying socket, e.g. to half-close it or read its address.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// One read into the buffer. Returns false if the read timed out; EOF
    /// and connection resets set `eof` (a reset after a complete response
    /// is how servers often close a connection with unread input).
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                true
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if is_timeout(&e) => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => {
                self.eof = true;
                true
            }
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("setting a read timeout");
    // Small writes (a request split on purpose) must leave immediately.
    stream.set_nodelay(true).expect("setting TCP_NODELAY");
    stream
}

/// Appends to `buf` until EOF, a reset, 5 s of silence or 30 s overall.
fn read_until_close(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let started = Instant::now();
    let mut chunk = [0u8; 16 * 1024];
    while started.elapsed() < TOTAL_TIMEOUT {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_interim(status: u16) -> bool {
    (100..200).contains(&status)
}

/// Parses one response at the start of `buf`. `eof` says no more bytes
/// will come, which is what ends a close-delimited body.
fn parse(buf: &[u8], head: bool, eof: bool) -> Option<(Response, usize)> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    // A reason phrase may be any bytes (RFC 9112 §4: obs-text); the fields must be UTF-8 here.
    let line_end = find(buf, b"\r\n")?;
    let status_line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
    let fields = &buf[(line_end + 2).min(head_end - 4)..head_end - 4];
    let fields = std::str::from_utf8(fields).unwrap_or_else(|_| {
        panic!(
            "response fields are not UTF-8: {:?}",
            String::from_utf8_lossy(&buf[..head_end])
        )
    });
    let raw_head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let lines = fields.split("\r\n").filter(|l| !l.is_empty());
    let (version, status, reason) = parse_status_line(&status_line);
    let headers: Vec<(String, String)> = lines.map(parse_header_line).collect();
    let mut response = Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
        chunked: false,
        raw_head,
    };

    // RFC 9112 §6.3, in order: no body for HEAD/1xx/204/304, then
    // Transfer-Encoding, then Content-Length, else read until close.
    if head || is_interim(status) || status == 204 || status == 304 {
        return Some((response, head_end));
    }
    let rest = &buf[head_end..];
    if let Some(coding) = response.header("transfer-encoding") {
        let last = coding.rsplit(',').next().unwrap_or_default().trim();
        if last.eq_ignore_ascii_case("chunked") {
            let chunked = parse_chunked(rest)?;
            response.body = chunked.body;
            response.trailers = chunked.trailers;
            response.chunked = true;
            return Some((response, head_end + chunked.used));
        }
        return until_close(response, rest, head_end, eof);
    }
    let lengths = response.headers_all("content-length");
    if let Some(first) = lengths.first() {
        assert!(
            lengths.iter().all(|l| l == first),
            "conflicting Content-Length headers: {lengths:?}"
        );
        let length: usize = first
            .parse()
            .unwrap_or_else(|_| panic!("bad Content-Length {first:?}"));
        if rest.len() < length {
            return None;
        }
        response.body = rest[..length].to_vec();
        return Some((response, head_end + length));
    }
    until_close(response, rest, head_end, eof)
}

fn until_close(
    mut response: Response,
    rest: &[u8],
    head_end: usize,
    eof: bool,
) -> Option<(Response, usize)> {
    if !eof {
        return None;
    }
    response.body = rest.to_vec();
    Some((response, head_end + rest.len()))
}

fn parse_status_line(line: &str) -> (String, u16, String) {
    fn bad(line: &str) -> ! {
        panic!("malformed status line {line:?}")
    }
    let (version, rest) = line.split_once(' ').unwrap_or_else(|| bad(line));
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if !version.starts_with("HTTP/") || code.len() != 3 {
        bad(line);
    }
    let status = code.parse().unwrap_or_else(|_| bad(line));
    (version.to_owned(), status, reason.to_owned())
}

fn parse_header_line(line: &str) -> (String, String) {
    // Obsolete line folding and spaces before the colon are errors a
    // conforming server never produces (RFC 9112 §5).
    let (name, value) = line
        .split_once(':')
        .filter(|(name, _)| !name.is_empty() && !name.contains([' ', '\t']))
        .unwrap_or_else(|| panic!("malformed header line {line:?}"));
    (name.to_owned(), value.trim_matches([' ', '\t']).to_owned())
}

/// A decoded chunked body.
struct Chunked {
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    /// Bytes of the wire the chunked body occupied.
    used: usize,
}

/// Decodes a chunked body at the start of `buf`, or `None` while
/// incomplete.
fn parse_chunked(buf: &[u8]) -> Option<Chunked> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let line = String::from_utf8_lossy(&buf[pos..line_end]);
        // Chunk extensions after ';' carry nothing these tests look at.
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        pos = line_end + 2;
        if size == 0 {
            break;
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        assert_eq!(
            &buf[pos + size..pos + size + 2],
            b"\r\n",
            "chunk data not followed by CRLF"
        );
        pos += size + 2;
    }
    let mut trailers = Vec::new();
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let line = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
        pos = line_end + 2;
        if line.is_empty() {
            return Some(Chunked {
                body,
                trailers,
                used: pos,
            });
        }
        trailers.push(parse_header_line(&line));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// With a backend, the front serves a static URL itself only once Apache has answered its
/// verification probe for it (frontend/src/route/verify/): the first requests go to Apache. This asks
/// `path` until the front answers it itself (`X-Khttpd-Route: static`; the server must run with
/// `--route-header`), for at most `timeout`, and returns that answer, or `None`.
pub fn until_front_serves(addr: SocketAddr, path: &str, timeout: Duration) -> Option<Response> {
    crate::wait_until(timeout, || {
        let r = get(addr, path);
        (r.header("x-khttpd-route") == Some("static")).then_some(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhelloEXTRA";
        let (r, used) = parse_one(wire).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.version, "HTTP/1.1");
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("content-length"), Some("5"));
        assert_eq!(r.header("x-a"), Some("1"));
        assert_eq!(used, wire.len() - "EXTRA".len());
        assert!(!r.chunked);
    }

    #[test]
    fn incomplete_content_length_body_is_none() {
        assert!(parse_one(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel").is_none());
        assert!(parse_one(b"HTTP/1.1 200 OK\r\nContent-Len").is_none());
    }

    #[test]
    fn chunked_body_is_decoded_with_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let (r, used) = parse_one(wire).unwrap();
        assert_eq!(r.text(), "hello, world");
        assert!(r.chunked);
        assert_eq!(r.trailers, vec![("X-Trailer".into(), "t".into())]);
        assert_eq!(&wire[used..], b"NEXT");
        // Cut anywhere before the end, it is incomplete rather than wrong.
        for cut in 45..used {
            assert!(parse_one(&wire[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn not_modified_has_no_body_despite_content_length() {
        let wire = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n";
        let (r, used) = parse_one(wire).unwrap();
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
        assert_eq!(used, wire.len());
    }

    #[test]
    fn head_response_has_no_body() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
        assert!(
            parse_one(wire).is_none(),
            "as a GET response it is incomplete"
        );
        let (r, used) = parse_one_head(wire).unwrap();
        assert_eq!(r.header("Content-Length"), Some("1234"));
        assert!(r.body.is_empty());
        assert_eq!(used, wire.len());
    }

    #[test]
    fn close_delimited_body_runs_to_the_end() {
        let wire = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
        let (r, used) = parse_one(wire).unwrap();
        assert_eq!(r.body, b"all of it");
        assert_eq!(used, wire.len());
        assert!(parse(wire, false, false).is_none(), "not before EOF");
    }

    #[test]
    fn two_pipelined_responses() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
            HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\
            HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n";
        let all = parse_all(wire, &[false, true, false]);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].body, b"abc");
        assert_eq!(all[1].header("content-length"), Some("3"));
        assert!(all[1].body.is_empty());
        assert_eq!(all[2].status, 404);
        assert_eq!(all[2].body, b"no");
    }

    #[test]
    fn interim_responses_take_no_head_flag() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let all = parse_all(wire, &[false]);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].status, 100);
        assert_eq!(all[1].body, b"ok");
    }

    #[test]
    fn headers_all_and_empty_reason() {
        let wire = b"HTTP/1.1 200 \r\nVary: a\r\nvary: b\r\nContent-Length: 0\r\n\r\n";
        let (r, _) = parse_one(wire).unwrap();
        assert_eq!(r.reason, "");
        assert_eq!(r.headers_all("VARY"), vec!["a", "b"]);
        assert_eq!(r.raw_head.len(), wire.len());
    }

    #[test]
    #[should_panic(expected = "malformed header line")]
    fn folded_header_is_rejected() {
        parse_one(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn build_request_adds_defaults_only_when_missing() {
        let bytes = build_request("POST", "/f.php", &[("Host", "example")], b"a=1", true);
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            "POST /f.php HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\
             Content-Length: 3\r\n\r\na=1"
        );
        let text = String::from_utf8(build_request("GET", "/", &[], b"", false)).unwrap();
        assert_eq!(text, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    }
}
