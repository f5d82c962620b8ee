//! Issue 13: the README's quick start, as a newcomer runs it on a fresh clone.
//!
//! The commands come out of README.md, never from a copy here: change the README and these tests run
//! the new text. Both tests build the release binary (the README's command does), so `scripts/test`
//! runs them after the rest of the suite, one at a time, where a fat-LTO link cannot slow the timed
//! tests down.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use khttpd_tests::http;
use khttpd_tests::process::{exit_code, has_terminated, send_signal};
use khttpd_tests::readme::{copy_files, quick_start, tracked_files, without_comment};
use khttpd_tests::{free_port, repo_root, wait_until};

/// A release build with fat LTO on a 2-core machine, dependencies included on a fresh one.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// A clean stop drains in-flight requests; none are left, so this is generous.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("reading README.md")
}

/// The workspace's target directory, so a copy of the tree reuses the compiled dependencies (only
/// the workspace's own crates are built again for the copy).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "target"))
        .map_or_else(|| repo_root().join("target"), Path::to_path_buf)
}

/// A shell command line run in a process group of its own, killed with its group when dropped.
struct Shell {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Shell {
    fn spawn(line: &str, dir: &Path, logs: &Path) -> Shell {
        let stdout = logs.join("stdout.log");
        let stderr = logs.join("stderr.log");
        let mut command = Command::new("bash");
        command.arg("-c").arg(line).current_dir(dir);
        // A newcomer's shell has no KHTTPD_* settings; neither does this run.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KHTTPD_") {
                command.env_remove(name);
            }
        }
        let child = command
            .env("CARGO_TARGET_DIR", target_dir())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("creating stdout.log"))
            .stderr(File::create(&stderr).expect("creating stderr.log"))
            // Ctrl-C reaches a terminal's whole foreground group; the test sends its signals the same way.
            .process_group(0)
            .spawn()
            .expect("spawning bash");
        Shell {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "stdout:\n{}\nstderr (last 4 KB):\n{}",
            read(&self.stdout),
            tail(&read(&self.stderr), 4096)
        )
    }

    fn exited(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().map(exit_code)
    }

    /// Sends `signal` to the whole group (as a terminal's Ctrl-C does) and waits for the shell to end.
    fn stop(&mut self, signal: libc::c_int) -> Option<i32> {
        let group = i32::try_from(self.child.id()).expect("pid fits in i32");
        send_signal(-group, signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(code) = self.exited() {
                return Some(code);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if !has_terminated(self.child.id()) {
            let group = i32::try_from(self.child.id()).expect("pid fits in i32");
            send_signal(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The number after `--port` in a command line.
fn port_of(command: &str) -> u16 {
    let words: Vec<&str> = without_comment(command).split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "--port")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or_else(|| panic!("no --port N in the README's command {command:?}"))
}

/// Waits until `addr` answers `GET /` or the shell ends; panics with its output on failure.
fn wait_until_serving(shell: &mut Shell, addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Some(code) = shell.exited() {
            panic!(
                "the command ended (exit {code}) before serving:\n{}",
                shell.output()
            );
        }
        assert!(
            Instant::now() < deadline,
            "not serving on {addr} after {timeout:?}:\n{}",
            shell.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn readme_test_command_is_what_ci_runs() {
    let quick = quick_start(&readme()).unwrap_or_else(|e| panic!("{e}"));
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).expect("reading .ci/run");
    let test = without_comment(&quick.test);
    assert!(
        ci.lines().any(|line| line.trim() == test),
        ".ci/run must run the README's test command {test:?} as one of its lines:\n{ci}"
    );
}

#[test]
fn readme_first_command_serves_the_sample_site_from_a_clean_copy() {
    let readme = readme();
    let quick = quick_start(&readme).unwrap_or_else(|e| panic!("{e}"));
    let port = port_of(&quick.serve);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // The command binds every address on the port: someone else on it would answer instead.
    drop(TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| {
        panic!("port {port} is taken ({e}); the README's command needs it free for this test")
    }));

    let work = tempfile::Builder::new()
        .prefix("khttpd-readme-")
        .tempdir()
        .expect("creating a temp dir");
    let clone = work.path().join("clone");
    copy_files(&repo_root(), &clone, &tracked_files(&repo_root()));
    assert!(
        !clone.join("target").exists(),
        "the copy must start without build output"
    );

    let mut shell = Shell::spawn(&quick.serve, &clone, work.path());
    wait_until_serving(&mut shell, addr, BUILD_TIMEOUT);

    let index = http::get(addr, "/");
    assert_eq!(index.status, 200, "GET /:\n{}", index.raw_head);
    assert!(
        index.text().contains("khttpd-front"),
        "the sample site's first page"
    );
    let css = http::get(addr, "/assets/style.css");
    assert_eq!(css.status, 200, "GET /assets/style.css:\n{}", css.raw_head);
    assert!(css
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/css")));
    let listing = http::get(addr, "/files/");
    assert_eq!(listing.status, 200, "GET /files/:\n{}", listing.raw_head);
    assert!(
        listing.text().contains("data.json") && listing.text().contains("more/"),
        "a listing of www/files/:\n{}",
        listing.text()
    );
    // The README says, next to the command, what the PHP and SSI pages answer without a backend.
    for page in ["/demo1.php", "/ssi.shtml"] {
        let status = http::get(addr, page).status;
        assert!(
            readme.contains(&format!("answer {status}")),
            "GET {page} answered {status}; the line beside the README's command must say so"
        );
    }

    let code = shell.stop(libc::SIGINT);
    assert_eq!(
        code,
        Some(0),
        "Ctrl-C must stop the server cleanly:\n{}",
        shell.output()
    );
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "nothing listens on {addr} after the stop"
    );
}

/// `scripts/demo`, which the README names beside the first command: Apache + mod_php on a free
/// loopback port, the front before it, the URL printed, Ctrl-C stops both.
#[test]
fn readme_demo_serves_the_php_pages_through_the_front() {
    let readme = readme();
    assert!(
        readme.contains("bash scripts/demo"),
        "the README names scripts/demo"
    );
    let work = tempfile::Builder::new()
        .prefix("khttpd-demo-")
        .tempdir()
        .expect("creating a temp dir");
    let port = free_port();
    let mut shell = Shell::spawn(
        &format!("bash scripts/demo --port {port}"),
        &repo_root(),
        work.path(),
    );
    let url = format!("http://127.0.0.1:{port}/");
    let printed = wait_until(BUILD_TIMEOUT, || {
        let out = std::fs::read_to_string(work.path().join("stdout.log")).unwrap_or_default();
        if out.contains(&url) {
            return Some(out);
        }
        if let Some(code) = shell.exited() {
            panic!("scripts/demo ended (exit {code}):\n{}", shell.output());
        }
        None
    })
    .unwrap_or_else(|| panic!("scripts/demo printed no {url}:\n{}", shell.output()));
    let apache_port = backend_port(&printed);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let form = http::get(addr, "/demo1.php");
    assert_eq!(form.status, 200, "{}", form.raw_head);
    assert!(form
        .text()
        .contains("<form method=\"post\" action=\"demo2.php\">"));
    assert!(!form.text().contains("<?php"), "PHP ran: {}", form.text());
    let hello = http::request(
        addr,
        "POST",
        "/demo2.php",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=Ada+%26+Bob",
    );
    assert_eq!(hello.status, 200, "{}", hello.raw_head);
    assert!(
        hello
            .text()
            .contains("Hello, <strong>Ada &amp; Bob</strong>!"),
        "{}",
        hello.text()
    );
    // Apache saw the client's address (X-Forwarded-For believed), not only the front's.
    assert!(hello.text().contains("<code>127.0.0.1</code>"));
    let css = http::get(addr, "/assets/style.css");
    assert_eq!(css.status, 200);

    let code = shell.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "Ctrl-C stops the demo:\n{}", shell.output());
    for p in [port, apache_port] {
        let a = SocketAddr::from(([127, 0, 0, 1], p));
        assert!(
            wait_until(STOP_TIMEOUT, || {
                std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200))
                    .is_err()
                    .then_some(())
            })
            .is_some(),
            "port {p} still answers after Ctrl-C"
        );
    }
}

/// The Apache port from the demo's `backend: http://127.0.0.1:PORT/` line.
fn backend_port(printed: &str) -> u16 {
    BufReader::new(printed.as_bytes())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let rest = line
                .trim()
                .strip_prefix("backend (Apache + mod_php): http://127.0.0.1:")?;
            rest.trim_end_matches('/').parse().ok()
        })
        .unwrap_or_else(|| panic!("no backend line in the demo's output:\n{printed}"))
}
