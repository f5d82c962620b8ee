//! A running `khttpd-front` binary, started and torn down by a test.
//!
//! The server is started with `--bind 127.0.0.1 --port 0` (unless a test
//! says otherwise) so parallel tests never fight over ports; the chosen address is learned from the
//! `listening on ADDR` line the binary prints on stdout once it has bound.
//! stdout and stderr go to files (not pipes) so a chatty server can never
//! block on a full pipe nobody reads, and so failures can quote them.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::http::Response;
use crate::process::{exit_code, send_signal};
use crate::proto::{certificate, Client, Proto};

/// How long the binary gets to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The stdout line announcing the bound address.
const LISTENING_PREFIX: &str = "listening on ";

/// A running `khttpd-front`; killed when dropped.
pub struct Front {
    /// The address the server reported it is listening on.
    pub addr: SocketAddr,
    child: Child,
    /// Still-running-or-not cache: `Some(code)` once the child was reaped.
    exited: Option<i32>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    /// The control socket khttpd-ctl talks to (one per server, in its temp dir unless given).
    pub control: PathBuf,
    dir: TempDir,
    /// Started by [`Front::start_over`] with [`Proto::H2`]: the TLS listener and the certificate
    /// its clients trust (in `_certs`).
    h2: Option<(SocketAddr, PathBuf)>,
    _certs: Option<TempDir>,
}

impl Front {
    /// Starts the server with `args` after the defaults `--bind 127.0.0.1
    /// --port 0` (a `--bind`/`--port` in `args` replaces the default one)
    /// and waits until it listens.
    /// Panics, quoting stderr, if it exits or does not come up in 10 s.
    pub fn start(args: &[&str]) -> Front {
        match Front::try_start(args) {
            Ok(front) => front,
            Err((code, stderr)) => panic!(
                "khttpd-front {args:?} did not start (exit code {code:?}); stderr:\n{stderr}"
            ),
        }
    }

    /// [`Front::start`] for a test that runs over `proto`: with [`Proto::H2`] the front also gets
    /// an HTTPS listener with a certificate made for this test, and [`Front::get`] and
    /// [`Front::request`] speak HTTP/2 to it.
    pub fn start_over(proto: Proto, args: &[&str]) -> Front {
        if proto == Proto::H1 {
            return Front::start(args);
        }
        let certs = tempfile::tempdir().expect("a temp dir for the test certificate");
        let (cert, key) = certificate(certs.path(), "site", &["localhost"]);
        let utf8 = "temp dir paths are UTF-8";
        let (cert_arg, key_arg) = (cert.to_str().expect(utf8), key.to_str().expect(utf8));
        let mut all = vec!["--tls-port", "0", "--cert", cert_arg, "--key", key_arg];
        all.extend_from_slice(args);
        let mut front = Front::start(&all);
        let tls = front
            .tls_addr()
            .unwrap_or_else(|| panic!("no TLS listener: {}", front.stdout()));
        front.h2 = Some((tls, cert));
        front._certs = Some(certs);
        front
    }

    /// The address of the HTTPS listener, once the front announced it (waits up to 5 s).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        crate::wait_until(Duration::from_secs(5), || {
            self.stdout()
                .lines()
                .find_map(|l| l.strip_prefix("listening for TLS on "))
                .and_then(|a| a.trim().parse().ok())
        })
    }

    /// How this test's requests reach the front: HTTP/1.1 on the plain port, or HTTP/2 over TLS
    /// when started with [`Proto::H2`].
    pub fn client(&self) -> Client {
        match &self.h2 {
            None => Client::H1(self.addr),
            Some((addr, ca)) => Client::H2 {
                addr: *addr,
                ca: ca.clone(),
            },
        }
    }

    /// `GET path` over the test's protocol.
    pub fn get(&self, path: &str) -> Response {
        self.client().get(path)
    }

    /// One request over the test's protocol (see [`crate::http::request`]).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.client().request(method, path, headers, body)
    }

    /// [`crate::http::until_front_serves`] over the test's protocol.
    pub fn until_front_serves(&self, path: &str, timeout: Duration) -> Option<Response> {
        crate::wait_until(timeout, || {
            let r = self.get(path);
            (r.header("x-khttpd-route") == Some("static")).then_some(r)
        })
    }

    /// Like [`Front::start`], but a failure to start is returned as the exit
    /// code (`None` if it hung and was killed; `128 + n` if signal `n` killed
    /// it) and the captured stderr, for tests that expect the failure.
    pub fn try_start(args: &[&str]) -> Result<Front, (Option<i32>, String)> {
        Front::try_start_with_env(args, &[])
    }

    /// [`Front::try_start`] with extra environment variables (e.g.
    /// `RUST_LOG`) for the server process.
    pub fn try_start_with_env(
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Front, (Option<i32>, String)> {
        let dir = tempfile::Builder::new()
            .prefix("khttpd-front-")
            .tempdir()
            .expect("creating a temp dir for the server's output");
        let stdout_path = dir.path().join("stdout.log");
        let stderr_path = dir.path().join("stderr.log");
        let stdout = File::create(&stdout_path).expect("creating the stdout capture file");
        let stderr = File::create(&stderr_path).expect("creating the stderr capture file");
        let control = dir.path().join("ctl.sock");
        let mut command = Command::new(crate::binary("khttpd-front"));
        // The server reads KHTTPD_* settings from the environment; a value
        // left in the developer's shell must not change what a test runs.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KHTTPD_") {
                command.env_remove(name);
            }
        }
        let child = command
            // Plain text logs, so tests can search stderr for messages.
            .env("NO_COLOR", "1")
            .args(default_args(args))
            .args(control_arg(args, &control))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawning khttpd-front");
        let stopped = args.contains(&"--stopped");
        let mut front = Front {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            exited: None,
            stdout_path,
            stderr_path,
            control: given_control(args).unwrap_or(control),
            dir,
            h2: None,
            _certs: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // Started with --stopped, the server is up once its control socket answers.
            if stopped && std::os::unix::net::UnixStream::connect(&front.control).is_ok() {
                return Ok(front);
            }
            if let Some(addr) = listening_addr(&front.stdout()) {
                front.addr = addr;
                return Ok(front);
            }
            if let Some(code) = front.try_exit_code() {
                return Err((Some(code), front.stderr()));
            }
            if Instant::now() >= deadline {
                front.kill();
                return Err((None, front.stderr()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Everything the server wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A scratch directory owned by this server instance (holds the output
    /// captures; tests may put config or fixture files here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the real `khttpd-ctl --control <this server's socket> ARGS`: (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(crate::binary("khttpd-ctl"))
            .arg("--control")
            .arg(&self.control)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("running khttpd-ctl");
        (
            crate::process::exit_code(out.status),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `khttpd-ctl status --json`, parsed. Panics when the daemon does not answer.
    pub fn status(&self) -> serde_json::Value {
        let (code, out, err) = self.ctl(&["status", "--json"]);
        assert_eq!(code, 0, "khttpd-ctl status: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status is not JSON ({e}): {out}"))
    }

    /// Waits (at most `timeout`) until no verification probe is running, and returns the status
    /// then; `None` if probes were still running.
    pub fn probes_settled(&self, timeout: Duration) -> Option<serde_json::Value> {
        crate::wait_until(timeout, || {
            let v = self.status();
            (v["verify"]["in_flight"] == 0).then_some(v)
        })
    }

    /// After `khttpd-ctl start`, the address of the latest `listening on` line.
    pub fn refresh_addr(&mut self) -> SocketAddr {
        let out = self.stdout();
        if let Some(addr) = out
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(LISTENING_PREFIX))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            self.addr = addr;
        }
        self.addr
    }

    /// `http://127.0.0.1:PORT` + `path`, for messages and Location checks.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a signal such as `libc::SIGTERM` or `libc::SIGHUP`.
    pub fn signal(&self, signal: libc::c_int) {
        if self.exited.is_none() {
            let pid = i32::try_from(self.child.id()).expect("pid fits in i32");
            send_signal(pid, signal);
        }
    }

    /// Kills the server with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            // An error only means it already exited; wait() tells the rest.
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exited = Some(exit_code(status));
            }
        }
    }

    /// Waits up to `timeout` for the server to exit. Returns its exit code
    /// (`128 + n` if signal `n` killed it), or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        crate::wait_until(timeout, || self.try_exit_code())
    }

    /// The exit code if the server has exited, reaping it; never blocks.
    fn try_exit_code(&mut self) -> Option<i32> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(exit_code(status));
            }
        }
        self.exited
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `--control <temp>/ctl.sock` unless `args` names a control socket, so parallel servers never
/// share one.
fn control_arg(args: &[&str], path: &std::path::Path) -> Vec<std::ffi::OsString> {
    if given_control(args).is_some() {
        return Vec::new();
    }
    vec!["--control".into(), path.as_os_str().to_owned()]
}

fn given_control(args: &[&str]) -> Option<PathBuf> {
    let i = args
        .iter()
        .position(|a| *a == "--control" || a.starts_with("--control="))?;
    match args[i].strip_prefix("--control=") {
        Some(p) => Some(PathBuf::from(p)),
        None => args.get(i + 1).map(PathBuf::from),
    }
}

/// `--bind 127.0.0.1 --port 0`, less the options `args` sets itself: the
/// server (clap) rejects an option given twice, so "later wins" cannot be
/// left to it.
fn default_args(args: &[&str]) -> Vec<&'static str> {
    let given = |option: &str| {
        args.iter()
            .any(|arg| *arg == option || arg.starts_with(&format!("{option}=")))
    };
    let mut defaults = Vec::new();
    if !given("--bind") {
        defaults.extend(["--bind", "127.0.0.1"]);
    }
    if !given("--port") {
        defaults.extend(["--port", "0"]);
    }
    defaults
}

/// The address from the first `listening on ADDR` line of `stdout`, once
/// that line is complete (a half-written line must not be parsed).
fn listening_addr(stdout: &str) -> Option<SocketAddr> {
    stdout
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .find_map(|line| line.trim_end().strip_prefix(LISTENING_PREFIX))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_line_among_others() {
        let out = "khttpd-front 0.1.0\nlistening on 127.0.0.1:43210\nready\n";
        assert_eq!(
            listening_addr(out),
            Some("127.0.0.1:43210".parse().unwrap())
        );
    }

    #[test]
    fn explicit_bind_or_port_replaces_the_default() {
        assert_eq!(
            default_args(&["--root", "/x"]),
            ["--bind", "127.0.0.1", "--port", "0"]
        );
        assert_eq!(default_args(&["--port", "8080"]), ["--bind", "127.0.0.1"]);
        assert_eq!(default_args(&["--bind=::1"]), ["--port", "0"]);
    }

    #[test]
    fn ignores_an_unfinished_line() {
        assert_eq!(listening_addr("listening on 127.0.0.1:4321"), None);
        assert_eq!(listening_addr("starting\n"), None);
    }
}
