//! Life under systemd (issue 17), with what systemd itself would do played by the test: a
//! `NOTIFY_SOCKET` datagram socket that receives `READY=1`, `RELOADING=1` and `STOPPING=1`, and a
//! listening socket passed as descriptor 3 with `LISTEN_FDS`/`LISTEN_PID` (socket activation), on
//! which a client that connected before the server started is answered.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use khttpd_tests::front::Front;

/// The next notification, within 10 s.
fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn readiness_reload_and_stop_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let www = khttpd_tests::repo_root().join("www");
    let mut f = Front::try_start_with_env(
        &["--root", www.to_str().unwrap()],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    )
    .unwrap();
    let ready = next(&sock);
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=listening on {}", f.addr)),
        "{ready}"
    );

    let (code, out, err) = f.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(next(&sock).contains("RELOADING=1"));
    let after = next(&sock);
    assert!(
        after.contains("READY=1") && after.contains("reloaded"),
        "{after}"
    );

    f.signal(libc::SIGTERM);
    assert!(next(&sock).contains("STOPPING=1"));
    assert_eq!(f.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Socket activation: a listening socket made before the server starts (as systemd's `.socket`
/// unit does) is the one it serves on, and a client queued on it before the start is answered.
#[test]
fn an_inherited_socket_is_served_and_queued_clients_are_answered() {
    let www = khttpd_tests::repo_root().join("www");
    let front = khttpd_tests::binary("khttpd-front");
    // Python plays systemd: bind and listen, say the port, wait for the go, then exec the server
    // with the socket as descriptor 3 and LISTEN_PID set to the (unchanged) process id.
    let script = r#"
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(128)
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ.pop("LISTEN_FDNAMES", None)
os.execv(sys.argv[1], sys.argv[1:])
"#;
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("ctl.sock");
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(&front)
        .args([
            "--root",
            www.to_str().unwrap(),
            "--port",
            "1",
            "--threads",
            "2",
            "--control",
        ])
        .arg(&control)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();

    // A client connects while nothing serves yet: the kernel queues it on the socket.
    let mut early = TcpStream::connect(("127.0.0.1", port)).unwrap();
    early
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    early
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();

    let mut listening = String::new();
    while !listening.starts_with("listening on ") {
        listening.clear();
        assert!(
            stdout.read_line(&mut listening).unwrap() > 0,
            "the server printed no listening line"
        );
    }
    assert_eq!(
        listening.trim(),
        format!("listening on 127.0.0.1:{port}"),
        "not the inherited socket (--port 1 was given)"
    );
    let mut answer = String::new();
    early.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // stop and start again reuse the inherited socket.
    let ctl = |args: &[&str]| {
        Command::new(khttpd_tests::binary("khttpd-ctl"))
            .arg("--control")
            .arg(&control)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(ctl(&["stop"]).status.success());
    assert!(ctl(&["start"]).status.success());
    let r = khttpd_tests::http::get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(r.status, 200);
    assert!(ctl(&["unload"]).status.success());
    let _ = child.wait();
}
