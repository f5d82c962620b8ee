//! kHTTPd had no timeouts, so idle clients used up maxconnect. These tests hold the real binary to
//! each deadline: slowloris heads, idle keep-alive, stalled bodies and clients that stop reading.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use khttpd_tests::front::Front;
use khttpd_tests::http::{self, Conn};

use crate::site::Site;

fn start(site: &Site, extra: &[&str]) -> Front {
    let mut args = vec!["--root", site.root_arg(), "--threads", "1"];
    args.extend_from_slice(extra);
    Front::start(&args)
}

/// Reads until EOF or error; returns how long that took and what arrived.
fn wait_closed(s: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (started.elapsed(), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn slowloris_trickle_is_cut_at_the_header_timeout() {
    let site = Site::new();
    let f = start(
        &site,
        &["--header-timeout", "1", "--keepalive-timeout", "30"],
    );
    let mut s = TcpStream::connect(f.addr).unwrap();
    let started = Instant::now();
    // One byte every 200 ms never completes a head; each byte is "progress", but the deadline is absolute.
    let mut closed_after = None;
    for b in b"GET /alphabet.txt HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let elapsed = closed_after
        .unwrap_or_else(|| wait_closed(&mut s, Duration::from_secs(5)).0 + started.elapsed());
    assert!(
        elapsed < Duration::from_secs(4),
        "trickling client kept for {elapsed:?}"
    );
    assert_eq!(http::get(f.addr, "/alphabet.txt").status, 200);
}

#[test]
fn idle_keep_alive_is_closed_at_the_keepalive_timeout() {
    let site = Site::new();
    let f = start(
        &site,
        &["--keepalive-timeout", "1", "--header-timeout", "30"],
    );
    let mut c = Conn::open(f.addr);
    assert_eq!(c.request("GET", "/alphabet.txt", &[], b"").status, 200);
    let started = Instant::now();
    assert!(
        c.is_closed_within(Duration::from_secs(4)),
        "idle keep-alive connection stays open"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let site = Site::new();
    let f = start(&site, &["--send-timeout", "1"]);
    let mut s = TcpStream::connect(f.addr).unwrap();
    // Ask for the 3 MiB file many times over and read nothing: socket buffers fill, writes stall.
    let mut req = Vec::new();
    for _ in 0..8 {
        req.extend_from_slice(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n");
    }
    s.write_all(&req).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let (_, got) = wait_closed(&mut s, Duration::from_secs(5));
    let total = 8 * crate::site::big_content().len();
    assert!(
        got.len() < total,
        "the server kept sending to a client that stopped reading"
    );
    assert_eq!(
        http::get(f.addr, "/alphabet.txt").status,
        200,
        "others are still served"
    );
}

#[test]
fn maxconnect_turns_extra_connections_away_at_once() {
    let site = Site::new();
    let f = start(&site, &["--maxconnect", "2", "--threads", "2"]);
    let mut a = Conn::open(f.addr);
    let mut b = Conn::open(f.addr);
    assert_eq!(a.request("GET", "/alphabet.txt", &[], b"").status, 200);
    assert_eq!(b.request("GET", "/alphabet.txt", &[], b"").status, 200);
    for _ in 0..3 {
        let started = Instant::now();
        let raw = http::raw(f.addr, b"GET /alphabet.txt HTTP/1.1\r\nHost: a\r\n\r\n");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("Retry-After: 1"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "turned away at once, not hung"
        );
    }
    drop(a);
    // The freed slot is taken again (the close is seen by the server shortly after).
    let served = khttpd_tests::wait_until(Duration::from_secs(3), || {
        let r = http::get(f.addr, "/alphabet.txt");
        (r.status == 200).then_some(())
    });
    assert!(
        served.is_some(),
        "a slot was freed by the closed connection"
    );
    assert_eq!(b.request("GET", "/style.css", &[], b"").status, 200);
}

/// Open connections as the server counts them (`khttpd-ctl status`).
fn open_connections(f: &Front) -> u64 {
    let (code, out, err) = f.ctl(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["connections"].as_u64().unwrap()
}

#[test]
fn a_silent_connection_waits_in_the_kernel_until_its_request_starts() {
    let site = Site::new();
    let f = start(&site, &[]);
    let mut c = Conn::open(f.addr);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        open_connections(&f),
        0,
        "a connection that sent nothing is not handed over yet (TCP_DEFER_ACCEPT)"
    );
    c.send(b"GET /alphabet.txt HTTP/1.1\r\n");
    let counted = khttpd_tests::wait_until(Duration::from_secs(3), || {
        (open_connections(&f) == 1).then_some(())
    });
    assert!(counted.is_some(), "its first bytes bring it in");
    c.send(b"Host: a\r\n\r\n");
    assert_eq!(c.read_response(false).status, 200);

    // --defer-accept off: every connection is taken at once.
    let g = start(&site, &["--defer-accept", "off"]);
    let _silent = TcpStream::connect(g.addr).unwrap();
    let counted = khttpd_tests::wait_until(Duration::from_secs(3), || {
        (open_connections(&g) == 1).then_some(())
    });
    assert!(counted.is_some(), "taken at once with --defer-accept off");
}

#[test]
fn running_out_of_descriptors_backs_off_instead_of_spinning() {
    // A hard limit of 48 descriptors: the server cannot raise it, and accept() hits EMFILE.
    if !std::path::Path::new("/usr/bin/prlimit").exists() {
        eprintln!("skipped: needs prlimit");
        return;
    }
    let site = Site::new();
    let bin = khttpd_tests::binary("khttpd-front");
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("prlimit")
        .args(["--nofile=48:48", "--"])
        .arg(&bin)
        .args([
            "--root",
            site.root_arg(),
            "--threads",
            "1",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .arg("--control")
        .arg(dir.path().join("ctl.sock"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(") ")
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    // Far more connections than descriptors. Each sends a first byte, so the kernel hands it over
    // at once rather than holding it back (TCP_DEFER_ACCEPT).
    let hogs: Vec<TcpStream> = (0..80)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            s.write_all(b"G").ok()?;
            Some(s)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu(child.id()) - before;
    assert!(
        used < 50,
        "{used} ticks of CPU in 2 s while out of descriptors: spinning"
    );
    drop(hogs);
    let served = khttpd_tests::wait_until(Duration::from_secs(5), || {
        let ok = TcpStream::connect(addr).is_ok() && http::get(addr, "/alphabet.txt").status == 200;
        ok.then_some(())
    });
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        alive,
        "the server survived running out of descriptors: {}",
        stderr()
    );
    assert!(
        served.is_some(),
        "serves again once descriptors are free: {}",
        stderr()
    );
}
