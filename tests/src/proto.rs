//! The protocol a test's requests travel over, so one test body checks HTTP/1.1 and HTTP/2 alike.
//!
//! HTTP/1.1 goes through the raw client in [`crate::http`]; HTTP/2 through curl (a real client,
//! over TLS with ALPN `h2`, as browsers speak it), against a front started with a certificate made
//! for the test. Both give back the same [`Response`], so assertions need no change; the few that
//! are about HTTP/1.1 framing (`Connection`, chunking, the raw head) ask [`Proto::is_h1`].

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::http::{self, Response};

/// The protocol a test runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 over plain TCP, through the raw client.
    H1,
    /// HTTP/2 over TLS, through curl.
    H2,
}

impl Proto {
    pub fn is_h1(self) -> bool {
        self == Proto::H1
    }
}

/// Where and how a test's requests go.
#[derive(Clone, Debug)]
pub enum Client {
    H1(SocketAddr),
    /// The TLS listener and the certificate to trust.
    H2 {
        addr: SocketAddr,
        ca: PathBuf,
    },
}

/// Request fields HTTP/2 has no place for (RFC 9113 §8.2.2); curl would refuse or drop them.
const CONNECTION_SPECIFIC: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

impl Client {
    /// `GET path`.
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// One request on a fresh connection; the final (non-1xx) response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        match self {
            Client::H1(addr) => http::request(*addr, method, path, headers, body),
            Client::H2 { addr, ca } => curl_h2(*addr, ca, method, path, headers, body),
        }
    }
}

fn curl_h2(
    addr: SocketAddr,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let dir = tempfile::tempdir().expect("a temp dir for curl's output");
    let (head_file, body_file, upload) = (
        dir.path().join("head"),
        dir.path().join("body"),
        dir.path().join("upload"),
    );
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "--http2",
        "--path-as-is",
        "--globoff",
    ])
    .arg("--cacert")
    .arg(ca)
    .arg("-D")
    .arg(&head_file)
    .arg("-o")
    .arg(&body_file)
    // curl's own defaults would differ from what the HTTP/1.1 client sends.
    .args(["-H", "Accept:", "-H", "User-Agent:"]);
    let head = method.eq_ignore_ascii_case("HEAD");
    if head {
        // curl writes the head into the output file with `--head` (and with `-X HEAD` waits for
        // the Content-Length bytes): a HEAD's body is read as empty.
        cmd.arg("--head");
    } else {
        cmd.args(["-X", method]);
    }
    // The authority the HTTP/1.1 client names, so both ask the same site (curl makes `:authority`
    // of it).
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        cmd.args(["-H", "Host: 127.0.0.1"]);
    }
    for (name, value) in headers {
        if CONNECTION_SPECIFIC.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        // `Name;` is curl's way of sending a field with an empty value.
        let line = if value.is_empty() {
            format!("{name};")
        } else {
            format!("{name}: {value}")
        };
        cmd.arg("-H").arg(line);
    }
    if !body.is_empty() {
        std::fs::write(&upload, body).expect("writing the request body");
        cmd.arg("--data-binary")
            .arg(format!("@{}", upload.display()));
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{}{path}", addr.port()))
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl --http2 {method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw_head = std::fs::read_to_string(&head_file).expect("curl's header dump");
    let (version, status, headers, last) = curl_head(&raw_head);
    assert_eq!(version, "HTTP/2", "ALPN chose HTTP/2: {last}");
    Response {
        version,
        status,
        reason: String::new(),
        headers,
        body: if head {
            Vec::new()
        } else {
            std::fs::read(&body_file).unwrap_or_default()
        },
        trailers: Vec::new(),
        chunked: false,
        raw_head: format!("{last}\r\n\r\n"),
    }
}

/// The final head in a header dump of curl's `-D`: (version, status, fields in order, the head).
/// With interim answers (100, 103) the dump holds several heads; the last is the final one.
pub fn curl_head(dump: &str) -> (String, u16, Vec<(String, String)>, String) {
    let last = dump
        .trim_end()
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut lines = last.lines();
    let mut status_line = lines.next().unwrap_or_default().split_whitespace();
    let version = status_line.next().unwrap_or_default().to_owned();
    let status = status_line
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {dump:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    (version, status, headers, last)
}

/// A self-signed certificate for `names` (the first is its CN), valid for 127.0.0.1 too, made with
/// `openssl req` in `dir`: returns (certificate, key), the key readable by its owner only.
pub fn certificate(dir: &Path, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{file}.pem"));
    let key = dir.join(format!("{file}.key"));
    certificate_at(&cert, &key, names);
    (cert, key)
}

/// [`certificate`] written where a configuration expects its files.
pub fn certificate_at(cert: &Path, key: &Path, names: &[&str]) {
    let mut san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    san.push("IP:127.0.0.1".into());
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={}", names[0]))
        .arg("-addext")
        .arg(format!("subjectAltName={}", san.join(",")))
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("running openssl req");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
        .expect("restricting the key");
}
