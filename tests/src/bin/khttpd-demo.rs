//! `scripts/demo`: the whole sample site on this machine, PHP and SSI pages included.
//!
//! Starts a real Apache 2.4 + mod_php on a free loopback port (the test harness's instance, configured
//! by `docker/apache/khttpd-backend.conf` as in Docker), then `khttpd-front` before it on `--port`
//! (default 8080), in the foreground with its access log on standard output. Ctrl-C reaches the front,
//! which drains and exits; then Apache is stopped too.
//!
//! Usage: `bash scripts/demo [--port N] [--root DIR] [extra khttpd-front flags…]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use khttpd_tests::apache::Apache;

fn main() -> ExitCode {
    let mut port: u16 = 8080;
    let mut root = khttpd_tests::repo_root().join("www");
    let mut extra = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "--root" => {
                let Some(value) = args.next() else {
                    eprintln!("khttpd-demo: {arg} needs a value");
                    return ExitCode::from(64);
                };
                if arg == "--port" {
                    let Ok(p) = value.parse() else {
                        eprintln!("khttpd-demo: --port {value:?} is not a port number");
                        return ExitCode::from(64);
                    };
                    port = p;
                } else {
                    root = PathBuf::from(value);
                }
            }
            "-h" | "--help" => {
                println!("usage: bash scripts/demo [--port N] [--root DIR] [khttpd-front flags…]");
                return ExitCode::SUCCESS;
            }
            _ => extra.push(arg),
        }
    }
    // Ctrl-C goes to the whole foreground group: the front drains and exits on it, and this process
    // outlives it to stop Apache (which runs in a group of its own) instead of dying first.
    if let Err(e) = ctrlc::set_handler(|| {}) {
        eprintln!("khttpd-demo: cannot handle Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }

    let apache = Apache::start(&root);
    let dir = tempfile::Builder::new()
        .prefix("khttpd-demo-")
        .tempdir()
        .expect("creating a temp dir for the control socket");
    let control = dir.path().join("ctl.sock");
    let front_bin = khttpd_tests::binary("khttpd-front");
    let ctl_bin = front_bin.with_file_name("khttpd-ctl");
    let mut front = match Command::new(&front_bin)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--root")
        .arg(&root)
        .args(["--backend", &apache.addr.to_string()])
        .args(["--access-log", "-", "--route-header"])
        .arg("--control")
        .arg(&control)
        .args(&extra)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("khttpd-demo: starting khttpd-front: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if khttpd_tests::wait_for_port(addr, Duration::from_secs(10)) {
        println!();
        println!("backend (Apache + mod_php): http://{}/", apache.addr);
        println!("front (khttpd-front):       http://{addr}/   <- open this; try /demo1.php");
        println!(
            "status: {} --control {} status",
            ctl_bin.display(),
            control.display()
        );
        println!("Ctrl-C stops both.");
        println!();
    }
    let status = front.wait();
    drop(apache);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("khttpd-demo: khttpd-front ended: {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("khttpd-demo: waiting for khttpd-front: {e}");
            ExitCode::FAILURE
        }
    }
}
