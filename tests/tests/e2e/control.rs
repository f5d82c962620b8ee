//! The management daemon through the real `khttpd-ctl`: every command, stop while a download is in
//! flight, start, unload, set/get validation, reload with a good and a bad file, the socket's mode,
//! two servers side by side, and signals.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use khttpd_tests::front::Front;
use khttpd_tests::http;

use crate::site::{big_content, Site};

fn start(site: &Site, extra: &[&str]) -> Front {
    let mut args = vec!["--root", site.root_arg(), "--threads", "2"];
    args.extend_from_slice(extra);
    Front::start(&args)
}

fn refused(addr: std::net::SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

#[test]
fn status_get_and_socket_mode() {
    let site = Site::new();
    let f = start(&site, &[]);
    assert_eq!(http::get(f.addr, "/alphabet.txt").status, 200);
    let mode = std::fs::metadata(&f.control).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");
    let (code, out, err) = f.ctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("running"), "{out}");
    // Laid out for people: state and listeners first, the stages under kHTTPd's names.
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].starts_with("state:") && lines[1].contains("running"),
        "{out}"
    );
    assert!(lines[2].starts_with("listening:"), "{out}");
    assert!(out.contains("req/s") && out.contains("p99"), "{out}");
    for stage in ["WaitForHeaders", "DataSending", "Userspace", "Logging"] {
        assert!(out.contains(stage), "{stage}: {out}");
    }
    let (code, out, _) = f.ctl(&["status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(v["daemons"].as_array().unwrap().len(), 2);
    assert!(v["totals"]["static"].as_u64().unwrap() >= 1);
    let (code, out, _) = f.ctl(&["get", "maxconnect"]);
    assert_eq!((code, out.trim()), (0, "maxconnect = 16384"));
    let (code, out, _) = f.ctl(&["get"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("documentroot") && out.contains("perm_forbid"),
        "{out}"
    );
}

#[test]
fn set_validates_and_applies_atomically() {
    let site = Site::new();
    let f = start(&site, &[]);
    let (code, _, err) = f.ctl(&["set", "maxconnect", "lots"]);
    assert_eq!(code, 1);
    assert!(err.contains("lots") && err.lines().count() == 1, "{err}");
    let (code, _, err) = f.ctl(&["set", "threads", "8"]);
    assert_eq!(code, 1);
    assert!(err.contains("restart"), "{err}");
    let (code, _, err) = f.ctl(&["set", "documentroot", "/nonexistent/khttpd"]);
    assert_eq!(code, 1);
    assert!(err.contains("document root"), "{err}");
    assert_eq!(
        http::get(f.addr, "/alphabet.txt").status,
        200,
        "a refused set changes nothing"
    );
    let (code, _, err) = f.ctl(&["set", "nosuchknob", "1"]);
    assert_eq!(code, 1, "{err}");

    // sloppymime off: unknown types with no backend are still served; listing off takes effect at once.
    let (code, _, err) = f.ctl(&["set", "listing", "off"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(http::get(f.addr, "/awkward/").status, 403);
    let (code, out, _) = f.ctl(&["get", "listing"]);
    assert_eq!((code, out.trim()), (0, "listing = false"));
    // documentroot to another directory.
    let other = Site::new();
    std::fs::write(other.root.join("only-here.txt"), b"other root").unwrap();
    let (code, _, err) = f.ctl(&["set", "documentroot", other.root_arg()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(http::get(f.addr, "/only-here.txt").body, b"other root");
}

#[test]
fn stop_drains_a_download_then_start_serves_again() {
    let site = Site::new();
    let mut f = start(&site, &[]);
    let addr = f.addr;
    // A download the client reads slowly: it is in flight when stop arrives.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    s.read_exact(&mut first).unwrap();
    let ctl = std::thread::spawn({
        let control = f.control.clone();
        move || {
            let out = std::process::Command::new(khttpd_tests::binary("khttpd-ctl"))
                .arg("--control")
                .arg(control)
                .arg("stop")
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    });
    // Listeners close at once while the download continues.
    let closed = khttpd_tests::wait_until(Duration::from_secs(5), || refused(addr).then_some(()));
    assert!(closed.is_some(), "the port refuses connections after stop");
    std::thread::sleep(Duration::from_millis(300));
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
    }
    let mut all = first.to_vec();
    all.extend_from_slice(&rest);
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        all[head_end..] == big_content()[..],
        "the in-flight download completed intact"
    );
    let (code, out) = ctl.join().unwrap();
    assert_eq!(code, Some(0), "{out}");
    let (_, out, _) = f.ctl(&["status"]);
    assert!(out.contains("stopped"), "{out}");

    let (code, out, err) = f.ctl(&["start"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("listening"), "{out}");
    let addr = f.refresh_addr();
    assert_eq!(http::get(addr, "/alphabet.txt").status, 200);
}

#[test]
fn started_stopped_waits_for_start_and_unload_exits_zero() {
    let site = Site::new();
    let mut f = Front::start(&["--root", site.root_arg(), "--stopped", "--threads", "1"]);
    assert!(
        !f.stdout().contains("listening on"),
        "no listener before start"
    );
    let (code, _, err) = f.ctl(&["start"]);
    assert_eq!(code, 0, "{err}");
    let addr = f.refresh_addr();
    assert_eq!(http::get(addr, "/alphabet.txt").status, 200);
    let (code, out, err) = f.ctl(&["unload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        f.wait_exit(Duration::from_secs(10)),
        Some(0),
        "unload exits 0"
    );
    assert!(!f.control.exists(), "the socket file is removed");
    let (code, _, err) = f.ctl(&["status"]);
    assert_eq!(code, 1);
    assert!(err.contains("no khttpd-front is listening"), "{err}");
}

#[test]
fn reload_takes_a_good_file_and_refuses_a_bad_one() {
    let site = Site::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("khttpd.toml");
    std::fs::write(&file, "maxconnect = 100\n").unwrap();
    let f = start(&site, &["--config", file.to_str().unwrap()]);
    assert_eq!(f.ctl(&["get", "maxconnect"]).1.trim(), "maxconnect = 100");
    std::fs::write(&file, "maxconnect = 200\nlisting = \"off\"\n").unwrap();
    let (code, _, err) = f.ctl(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(f.ctl(&["get", "maxconnect"]).1.trim(), "maxconnect = 200");
    assert_eq!(http::get(f.addr, "/awkward/").status, 403);
    std::fs::write(&file, "maxconnect = \"many\"\n").unwrap();
    let (code, _, err) = f.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("previous configuration"), "{err}");
    assert_eq!(
        f.ctl(&["get", "maxconnect"]).1.trim(),
        "maxconnect = 200",
        "the running config stays"
    );
    assert_eq!(http::get(f.addr, "/alphabet.txt").status, 200);
    // SIGHUP reloads too.
    std::fs::write(&file, "maxconnect = 300\n").unwrap();
    f.signal(libc::SIGHUP);
    let seen = khttpd_tests::wait_until(Duration::from_secs(5), || {
        (f.ctl(&["get", "maxconnect"]).1.trim() == "maxconnect = 300").then_some(())
    });
    assert!(seen.is_some(), "SIGHUP reloaded the file");
}

#[test]
fn two_servers_side_by_side() {
    let site = Site::new();
    let a = start(&site, &[]);
    let b = start(&site, &[]);
    assert_ne!(a.control, b.control);
    assert_eq!(a.ctl(&["set", "maxconnect", "11"]).0, 0);
    assert_eq!(b.ctl(&["get", "maxconnect"]).1.trim(), "maxconnect = 16384");
    assert_eq!(a.ctl(&["get", "maxconnect"]).1.trim(), "maxconnect = 11");
    // A second server on the same control socket refuses to start.
    let clash = Front::try_start(&[
        "--root",
        site.root_arg(),
        "--control",
        a.control.to_str().unwrap(),
    ]);
    let (code, err) = clash.err().expect("second server on a live socket");
    assert_eq!(code, Some(1));
    assert!(err.contains("already running"), "{err}");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let site = Site::new();
    let mut f = start(&site, &[]);
    let mut s = TcpStream::connect(f.addr).unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    s.read_exact(&mut first).unwrap();
    let started = Instant::now();
    f.signal(libc::SIGTERM);
    let mut all = first.to_vec();
    s.read_to_end(&mut all).unwrap();
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        all[head_end..] == big_content()[..],
        "the in-flight download completed intact"
    );
    assert_eq!(f.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn ctl_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(khttpd_tests::binary("khttpd-ctl"))
        .arg("--control")
        .arg(dir.path().join("nothing.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no khttpd-front is listening"), "{err}");
}

/// Issue 15: `set backend ''` and `set trusted_proxy ''` take effect (they printed success and
/// changed nothing), and `set dynamic ''` or `set sloppymime 1` never make PHP a download.
#[test]
fn emptying_lists_takes_effect_and_no_knob_serves_php_source() {
    let site = Site::new();
    std::fs::write(
        site.root.join("secret.php"),
        "<?php $db_password = 'hunter2';",
    )
    .unwrap();
    std::fs::write(site.root.join("x.phtml"), "<?php echo 1;").unwrap();
    // A backend that is never reached in this test: 127.0.0.1:9 refuses.
    let f = start(
        &site,
        &["--backend", "127.0.0.1:9", "--trusted-proxy", "10.0.0.0/8"],
    );
    assert_eq!(
        http::get(f.addr, "/secret.php").status,
        502,
        "refused backend"
    );
    for (knob, value) in [
        ("backend", ""),
        ("trusted_proxy", ""),
        ("dynamic", ""),
        ("sloppymime", "1"),
    ] {
        let (code, _, err) = f.ctl(&["set", knob, value]);
        assert_eq!(code, 0, "set {knob} {value:?}: {err}");
    }
    let (_, out, _) = f.ctl(&["get", "backend"]);
    assert!(
        out.starts_with("backend") && !out.contains("127.0.0.1:9"),
        "backend emptied: {out}"
    );
    let (_, out, _) = f.ctl(&["get", "trusted_proxy"]);
    assert!(
        out.starts_with("trusted_proxy") && !out.contains("10.0.0.0"),
        "trusted_proxy emptied: {out}"
    );
    for page in ["/secret.php", "/x.phtml", "/x.PHP", "/index.php/extra"] {
        let r = http::get(f.addr, page);
        assert!(
            !r.text().contains("hunter2") && !r.text().contains("<?php"),
            "{page}: {}",
            r.text()
        );
        assert!(
            matches!(r.status, 404 | 502),
            "{page}: no backend now: {}",
            r.status
        );
    }
}

/// Issue 17: the admin listener serves `/healthz` (200 while listening, 503 while stopped) and
/// `/metrics`, which Prometheus' own OpenMetrics parser (the official Python client's) reads; only
/// loopback addresses are accepted for it.
#[test]
fn admin_listener_serves_health_and_metrics_that_prometheus_parses() {
    let site = Site::new();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", khttpd_tests::free_port())
        .parse()
        .unwrap();
    let f = start(&site, &["--admin-listen", &admin.to_string()]);
    for _ in 0..3 {
        assert_eq!(http::get(f.addr, "/alphabet.txt").status, 200);
    }
    let h = http::get(admin, "/healthz");
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    let m = http::get(admin, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = [[s.name, s.labels, s.value] for s in fam.samples]
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/deps installs prometheus-client)");
    child.stdin.take().unwrap().write_all(&m.body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Prometheus' parser refused /metrics: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.text()
    );
    let families: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let static_requests: f64 = families["khttpd_requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[1]["route"] == "static")
        .map(|s| s[2].as_f64().unwrap())
        .sum();
    assert!(static_requests >= 3.0, "{families}");
    for name in [
        "khttpd_up",
        "khttpd_stage_requests",
        "khttpd_responses",
        "khttpd_cache_hits",
        "khttpd_verify_probes",
        "khttpd_access_log_dropped",
        "khttpd_request_duration_seconds",
        "khttpd_backend_response_head_seconds",
    ] {
        assert!(families.get(name).is_some(), "{name} missing: {families}");
    }
    // The duration histogram counted the three static answers, in buckets Prometheus accepts.
    let front_count: f64 = families["khttpd_request_duration_seconds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == "khttpd_request_duration_seconds_count" && s[1]["route"] == "front")
        .map(|s| s[2].as_f64().unwrap())
        .sum();
    assert!(
        front_count >= 3.0,
        "{}",
        families["khttpd_request_duration_seconds"]
    );
    let inf = families["khttpd_request_duration_seconds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[1]["le"] == "+Inf" && s[1]["route"] == "front")
        .map(|s| s[2].as_f64().unwrap());
    assert_eq!(inf, Some(front_count));

    assert_eq!(f.ctl(&["stop"]).0, 0);
    assert_eq!(http::get(admin, "/healthz").status, 503, "stopped");
    assert_eq!(f.ctl(&["start"]).0, 0);
    assert_eq!(http::get(admin, "/healthz").status, 200);

    let (code, err) =
        Front::try_start(&["--root", site.root_arg(), "--admin-listen", "0.0.0.0:9180"])
            .err()
            .unwrap();
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("loopback"), "{err}");
}

/// Issue 17: a reload that changes the port says a restart is needed, and `get port` keeps showing
/// the port in force, not the file's new value. (Run without the harness, which would pin the port
/// with a flag that outranks the file.)
#[test]
fn reload_that_changes_the_port_says_so_and_get_shows_the_port_in_force() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("k.toml");
    let control = dir.path().join("ctl.sock");
    let (p1, p2) = (khttpd_tests::free_port(), khttpd_tests::free_port());
    let www = khttpd_tests::repo_root().join("www");
    let write = |port: u16| {
        std::fs::write(
            &conf,
            format!(
                "port = {port}\nbind = \"127.0.0.1\"\nroot = {:?}\n",
                www.to_str().unwrap()
            ),
        )
        .unwrap()
    };
    write(p1);
    let mut child = std::process::Command::new(khttpd_tests::binary("khttpd-front"))
        .arg("--config")
        .arg(&conf)
        .arg("--control")
        .arg(&control)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("listening on 127.0.0.1:{p1}"));
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(khttpd_tests::binary("khttpd-ctl"))
            .arg("--control")
            .arg(&control)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    write(p2);
    let said = ctl(&["reload"]);
    assert!(said.contains("next restart"), "{said}");
    assert_eq!(ctl(&["get", "port"]), format!("serverport = {p1}"));
    assert_eq!(
        http::get(format!("127.0.0.1:{p1}").parse().unwrap(), "/").status,
        200
    );
    assert_eq!(ctl(&["unload"]), "unloaded");
    let _ = child.wait();
}
