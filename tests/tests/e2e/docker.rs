//! The docker set-up and the operator's documentation, checked where no Docker engine runs.
//!
//! - `docker/compose.yaml`, parsed for real: the two services, the published port, the front's command,
//!   the shared read-only `www/`, the health checks and the start order;
//! - both Dockerfiles: stages, the cached dependency layer, the non-root user, the port, the health check,
//!   and that the backend image is configured by the very file the Apache harness Includes;
//! - the compose topology run natively: the front with the compose file's command and environment, in
//!   front of a real Apache set up as the backend image is (`khttpd-backend.conf` + `docker.conf`); the
//!   sample site's route table checked against the `X-Khttpd-Route` headers it really gets; both health
//!   check commands run as written;
//! - README.md against `--help` and `khttpd-ctl get`, and `packaging/` against the binaries.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use khttpd_tests::apache::{Apache, ApacheOptions};
use khttpd_tests::front::Front;
use khttpd_tests::http;
use regex::Regex;
use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    khttpd_tests::repo_root()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&read("docker/compose.yaml"))
        .unwrap_or_else(|e| panic!("docker/compose.yaml is not valid YAML: {e}"))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let s = &compose["services"][name];
    assert!(s.is_mapping(), "compose.yaml has no service {name:?}");
    s
}

/// A sequence of strings (`command:`, `ports:`, a health check's `test:`).
fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("expected a list, got {v:?}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("expected a string, got {x:?}"))
                .to_owned()
        })
        .collect()
}

/// A service's `environment:`, as a mapping or as `KEY=VALUE` strings.
fn environment(service: &Value) -> Vec<(String, String)> {
    let env = &service["environment"];
    if let Some(map) = env.as_mapping() {
        return map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    other => panic!("environment value {other:?}"),
                };
                (k.as_str().unwrap().to_owned(), value)
            })
            .collect();
    }
    strings(env)
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn env_value(service: &Value, key: &str) -> Option<String> {
    environment(service)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// `SOURCE:TARGET[:MODE]` of a short-syntax volume.
fn volume(spec: &str) -> (String, String, String) {
    let mut parts = spec.splitn(3, ':');
    let source = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mode = parts.next().unwrap_or_default().to_owned();
    (source, target, mode)
}

/// A health check's command and timings: `CMD-SHELL` string, and whether each timing is set.
fn healthcheck(service: &Value, name: &str) -> String {
    let hc = &service["healthcheck"];
    let test = strings(&hc["test"]);
    assert_eq!(
        test.first().map(String::as_str),
        Some("CMD-SHELL"),
        "{name}: {test:?}"
    );
    for key in ["interval", "timeout", "retries", "start_period"] {
        assert!(!hc[key].is_null(), "{name}: healthcheck without {key}");
    }
    test[1].clone()
}

/// A compose path relative to docker/ (where compose.yaml lives), resolved.
fn from_compose_dir(rel: &str) -> PathBuf {
    canonical(&repo().join("docker").join(rel))
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (word, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((word.to_ascii_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

/// The instructions split into build stages, each starting with its FROM.
fn stages(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for (word, args) in instructions(text) {
        if word == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push((word, args));
        }
    }
    stages
}

fn args_of<'a>(stage: &'a [(String, String)], word: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|(w, _)| w == word)
        .map(|(_, a)| a.as_str())
        .collect()
}

/// The docker set-up's front command: `khttpd-front --port 80 --backend backend:8080 --dynamic php,shtml`.
const FRONT_COMMAND: &[&str] = &[
    "khttpd-front",
    "--port",
    "80",
    "--backend",
    "backend:8080",
    "--dynamic",
    "php,shtml",
];

#[test]
fn compose_file_runs_the_front_before_a_healthy_backend() {
    let c = compose();
    let names: BTreeSet<&str> = c["services"]
        .as_mapping()
        .expect("compose.yaml has services")
        .keys()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(names, BTreeSet::from(["backend", "front"]));
    let front = service(&c, "front");
    let backend = service(&c, "backend");

    // Built from docker/Dockerfile with the repository as context.
    assert_eq!(
        from_compose_dir(front["build"]["context"].as_str().unwrap()),
        canonical(&repo())
    );
    assert_eq!(
        front["build"]["dockerfile"].as_str(),
        Some("docker/Dockerfile")
    );
    assert!(repo().join("docker/Dockerfile").is_file());
    let backend_context = from_compose_dir(backend["build"]["context"].as_str().unwrap());
    let backend_dockerfile = backend["build"]["dockerfile"].as_str().unwrap();
    assert!(backend_context.join(backend_dockerfile).is_file());

    assert_eq!(strings(&front["command"]), FRONT_COMMAND);
    assert_eq!(strings(&front["ports"]), ["80:80"]);
    assert!(
        backend["ports"].is_null(),
        "only the front is published; the backend is reached through it"
    );
    assert_eq!(strings(&backend["expose"]), ["8080"]);

    // Started once the backend is healthy, restarted with it.
    let dep = &front["depends_on"]["backend"];
    assert_eq!(dep["condition"].as_str(), Some("service_healthy"));
    assert_eq!(dep["restart"].as_bool(), Some(true));

    // The same www/, read-only, at the same path in both, which is the front's document root.
    let www = canonical(&repo().join("www"));
    let mut targets = Vec::new();
    for (name, s) in [("front", front), ("backend", backend)] {
        let volumes = strings(&s["volumes"]);
        let (source, target, mode) = volumes
            .iter()
            .map(|v| volume(v))
            .find(|(source, _, _)| from_compose_dir(source) == www)
            .unwrap_or_else(|| panic!("{name} does not mount www/: {volumes:?}"));
        assert_eq!(mode, "ro", "{name} mounts {source} writable");
        targets.push(target);
    }
    assert_eq!(targets[0], targets[1], "www/ at different paths");
    assert_eq!(
        env_value(front, "KHTTPD_ROOT").as_deref(),
        Some(targets[0].as_str())
    );
    assert_eq!(
        env_value(front, "KHTTPD_ROUTE_HEADER").as_deref(),
        Some("on")
    );

    // Both have health checks: the front asks its management daemon, the backend Apache on 8080.
    let front_check = healthcheck(front, "front");
    assert!(front_check.contains("khttpd-ctl") && front_check.contains("health"));
    let backend_check = healthcheck(backend, "backend");
    assert!(
        backend_check.contains("http://127.0.0.1:8080/"),
        "{backend_check}"
    );

    // mod_remoteip believes the front's network: the backend's KHTTPD_FRONT_NET is the network's subnet.
    let networks = strings(&front["networks"]);
    assert_eq!(networks, strings(&backend["networks"]));
    let subnet = c["networks"][networks[0].as_str()]["ipam"]["config"][0]["subnet"]
        .as_str()
        .expect("the compose network has a fixed subnet")
        .to_owned();
    assert_eq!(
        env_value(backend, "KHTTPD_FRONT_NET").as_deref(),
        Some(subnet.as_str())
    );
    assert!(read("docker/apache/docker.conf").contains("RemoteIPInternalProxy ${KHTTPD_FRONT_NET}"));

    // Port 80 needs the one capability the front keeps.
    assert_eq!(strings(&front["cap_drop"]), ["ALL"]);
    assert_eq!(strings(&front["cap_add"]), ["NET_BIND_SERVICE"]);
}

#[test]
fn front_dockerfile_builds_deps_once_and_runs_unprivileged() {
    let text = read("docker/Dockerfile");
    let stages = stages(&text);
    assert!(
        stages.len() >= 2,
        "a multi-stage build: {} stage(s)",
        stages.len()
    );
    assert!(
        stages[0][0].1.starts_with("rust:"),
        "built with the rust image: {}",
        stages[0][0].1
    );
    // Issue 17: base images pinned to versions, the toolchain no older than the workspace needs.
    let arg = |name: &str| {
        Regex::new(&format!(r"(?m)^ARG {name}=(\S+)$"))
            .unwrap()
            .captures(&text)
            .map(|c| c[1].to_owned())
            .unwrap_or_else(|| panic!("ARG {name} with a default"))
    };
    let rust = arg("RUST_VERSION");
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert_eq!(
        version(&rust).len(),
        2,
        "RUST_VERSION pinned to 1.NN: {rust}"
    );
    let msrv = Regex::new(r#"(?m)^rust-version = "([0-9.]+)""#)
        .unwrap()
        .captures(&read("Cargo.toml"))
        .map(|c| c[1].to_owned())
        .expect("rust-version");
    assert!(version(&rust) >= version(&msrv), "{rust} < {msrv}");
    assert_eq!(arg("DEBIAN_RELEASE"), "bookworm");
    let runtime = stages.last().unwrap();
    let base = &runtime[0].1;
    assert!(
        base.starts_with("debian:") && base.contains("-slim"),
        "a slim Debian runtime: {base}"
    );

    // The builder: dependencies from the manifests alone, then the sources, then the binaries.
    let builder = stages
        .iter()
        .find(|s| {
            args_of(s, "RUN")
                .iter()
                .any(|r| r.contains("cargo build --release"))
        })
        .expect("a stage runs cargo build --release");
    let position = |pred: &dyn Fn(&(String, String)) -> bool| builder.iter().position(pred);
    let cook = position(&|(w, a)| w == "RUN" && a.contains("cargo chef cook")).expect("cook");
    let sources = position(&|(w, a)| w == "COPY" && a == ". .").expect("COPY . .");
    let build = position(&|(w, a)| w == "RUN" && a.contains("cargo build --release")).unwrap();
    assert!(cook < sources && sources < build, "{builder:?}");
    let build_cmd = &builder[build].1;
    assert!(
        build_cmd.contains("-p khttpd-front") && build_cmd.contains("--bins"),
        "{build_cmd}"
    );

    // The runtime: both binaries, port 80 for a non-root user, the sample site, a health check.
    let copies = args_of(runtime, "COPY").join("\n");
    assert!(copies.contains("--from=builder") && copies.contains("release/khttpd-front"));
    assert!(copies.contains("release/khttpd-ctl"));
    assert!(
        args_of(runtime, "RUN")
            .iter()
            .any(|r| r.contains("setcap cap_net_bind_service=+ep /usr/local/bin/khttpd-front")),
        "port 80 without root needs the file capability"
    );
    let user = args_of(runtime, "USER");
    let user = user.last().expect("the runtime stage sets USER");
    assert!(!["root", "0", "0:0"].contains(user), "USER {user}");
    assert!(args_of(runtime, "EXPOSE")
        .iter()
        .any(|e| e.split_whitespace().any(|p| p == "80")));
    let env = args_of(runtime, "ENV").join(" ");
    assert!(env.contains("KHTTPD_ROOT=/srv/www"), "{env}");
    assert!(copies.contains("www/ /srv/www/"));
    let cmd: Vec<String> =
        serde_json::from_str(args_of(runtime, "CMD").last().expect("a CMD")).expect("CMD [..]");
    assert_eq!(cmd[0], "khttpd-front");

    // Its HEALTHCHECK runs exactly the compose file's front check.
    let hc = args_of(runtime, "HEALTHCHECK");
    let hc = hc.last().expect("the runtime stage has a HEALTHCHECK");
    let command = hc
        .split_once("CMD ")
        .expect("HEALTHCHECK ... CMD ...")
        .1
        .trim();
    assert_eq!(command, healthcheck(service(&compose(), "front"), "front"));

    // The context is the repository: the build must not upload target/.
    let ignore = read("docker/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "**/target"), "{ignore}");
}

#[test]
fn backend_image_is_configured_by_the_file_the_harness_includes() {
    let c = compose();
    let backend = service(&c, "backend");
    let context = from_compose_dir(backend["build"]["context"].as_str().unwrap());
    let dockerfile = context.join(backend["build"]["dockerfile"].as_str().unwrap());
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let stages = stages(&text);
    assert_eq!(stages.len(), 1);
    let stage = &stages[0];
    assert_eq!(stage[0].1, "php:8.3-apache-bookworm", "a pinned version");
    let runs = args_of(stage, "RUN").join("\n");
    let enmod = runs
        .split("a2enmod")
        .nth(1)
        .expect("a2enmod")
        .split("&&")
        .next()
        .unwrap();
    assert!(
        enmod.contains("include") && enmod.contains("remoteip"),
        "{enmod}"
    );
    assert!(runs.contains("Listen 8080"), "Apache moves to 8080");
    assert!(args_of(stage, "EXPOSE").contains(&"8080"));
    assert!(!args_of(stage, "HEALTHCHECK").is_empty());
    // The front's --backend names that port.
    assert!(FRONT_COMMAND.contains(&"backend:8080"));

    // COPY sources, resolved against the build context, by the file name they are enabled as.
    let mut copied = Vec::new();
    for copy in args_of(stage, "COPY") {
        let words: Vec<&str> = copy.split_whitespace().collect();
        assert_eq!(words.len(), 2, "COPY {copy}");
        copied.push((canonical(&context.join(words[0])), words[1].to_owned()));
    }
    let enabled = |conf_name: &str| runs.contains("a2enconf") && runs.contains(conf_name);

    // One source of truth: the harness Includes this very file.
    let empty = tempfile::tempdir().unwrap();
    let apache = Apache::start(empty.path());
    let conf = std::fs::read_to_string(apache.conf_path()).unwrap();
    let included = Regex::new(r#"(?m)^Include "([^"]+khttpd-backend\.conf)""#)
        .unwrap()
        .captures(&conf)
        .map(|c| canonical(Path::new(&c[1])))
        .expect("the harness Includes khttpd-backend.conf");
    let (_, dest) = copied
        .iter()
        .find(|(src, _)| *src == included)
        .unwrap_or_else(|| {
            panic!(
                "the backend image does not COPY {} (copies {copied:?})",
                included.display()
            )
        });
    assert!(dest.starts_with("/etc/apache2/conf-available/"), "{dest}");
    assert!(enabled(
        Path::new(dest).file_stem().unwrap().to_str().unwrap()
    ));

    // docker.conf, the container-only part, is copied and enabled too.
    let docker_conf = canonical(&repo().join("docker/apache/docker.conf"));
    let (_, dest) = copied
        .iter()
        .find(|(src, _)| *src == docker_conf)
        .expect("the backend image copies docker/apache/docker.conf");
    assert!(enabled(
        Path::new(dest).file_stem().unwrap().to_str().unwrap()
    ));
}

/// One request from the loopback address `from`, so the front sees a client other than itself.
fn request_from(from: [u8; 4], to: SocketAddr, request: &[u8]) -> http::Response {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).unwrap();
    http::parse_one(&buf).expect("a complete response").0
}

/// Runs a compose `CMD-SHELL` health check with `sh -c`; true when it passes.
fn run_check(command: &str, env: &[(&str, &str)]) -> bool {
    let bins = khttpd_tests::binary("khttpd-ctl")
        .parent()
        .unwrap()
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bins).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("PATH", path)
        .envs(env.iter().copied())
        .status()
        .expect("running sh")
        .success()
}

#[test]
fn compose_topology_natively_routes_the_sample_site_as_its_first_page_says() {
    let c = compose();
    let front_svc = service(&c, "front");
    let backend_svc = service(&c, "backend");
    let site = tempfile::Builder::new()
        .prefix("khttpd-docker-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(site.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = site.path().join("www");
    khttpd_tests::copy_readable(&repo().join("www"), &root);
    let logs = site.path().join("logs");
    std::fs::create_dir(&logs).unwrap();

    // Apache as the backend image has it: the harness's modules, port and paths, then docker.conf
    // with `Define`s standing in for the container's environment. Belief in X-Forwarded-For comes
    // from docker.conf alone.
    let docker_conf = repo().join("docker/apache/docker.conf");
    let referenced: BTreeSet<String> = Regex::new(r"\$\{([A-Z_]+)\}")
        .unwrap()
        .captures_iter(&read("docker/apache/docker.conf"))
        .map(|c| c[1].to_owned())
        .collect();
    let stand_ins = [
        ("APACHE_LOG_DIR", logs.display().to_string()),
        ("KHTTPD_DOCROOT", root.display().to_string()),
        // The loopback range plays the compose network's subnet.
        ("KHTTPD_FRONT_NET", "127.0.0.0/8".to_owned()),
    ];
    assert_eq!(
        referenced,
        stand_ins.iter().map(|(k, _)| (*k).to_owned()).collect(),
        "docker.conf's variables changed: give the test a stand-in for each"
    );
    assert!(env_value(backend_svc, "KHTTPD_FRONT_NET").is_some());
    let mut extra = String::new();
    for (name, value) in &stand_ins {
        extra.push_str(&format!("Define {name} \"{value}\"\n"));
    }
    extra.push_str(&format!("Include \"{}\"\n", docker_conf.display()));
    let apache = Apache::start_with(
        &root,
        ApacheOptions {
            trusted_proxies: Vec::new(),
            extra,
            ..ApacheOptions::default()
        },
    );

    // The front with the compose file's command and environment; only what names the container's
    // network and paths is replaced: port 80 → a free one, backend:8080 → this Apache, /srv/www → the copy.
    let mut args: Vec<String> = strings(&front_svc["command"]);
    assert_eq!(args.remove(0), "khttpd-front");
    for i in 0..args.len() {
        match args[i].as_str() {
            "--port" => args[i + 1] = "0".into(),
            "--backend" => args[i + 1] = apache.addr.to_string(),
            _ => {}
        }
    }
    args.extend([
        "--root".into(),
        root.display().to_string(),
        "--threads".into(),
        "2".into(),
    ]);
    let env = environment(front_svc);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let front = Front::try_start_with_env(&argv, &env)
        .unwrap_or_else(|(code, stderr)| panic!("front did not start ({code:?}): {stderr}"));

    // Every row of the first page's "Who answered?" table is answered the way it says.
    let index = read("www/index.html");
    let rows: Vec<(String, String)> =
        Regex::new(r#"<tr data-path="([^"]+)" data-expect="([a-z]+)">"#)
            .unwrap()
            .captures_iter(&index)
            .map(|c| (c[1].to_owned(), c[2].to_owned()))
            .collect();
    assert!(rows.iter().any(|(_, e)| e == "static") && rows.iter().any(|(_, e)| e == "backend"));
    for (path, expect) in &rows {
        if expect == "static" {
            // The first requests go to Apache until it has answered the verification probe.
            assert!(
                http::until_front_serves(front.addr, path, Duration::from_secs(5)).is_some(),
                "{path} never verified:\n{}",
                apache.access_log()
            );
        }
        let r = http::request(front.addr, "HEAD", path, &[], b"");
        assert_eq!(
            r.header("x-khttpd-route"),
            Some(expect.as_str()),
            "HEAD {path}: {}",
            r.raw_head
        );
        assert!(
            r.status < 500,
            "HEAD {path}: {} (the backend failed)\n{}",
            r.status,
            apache.error_log()
        );
        let seen = format!("\"HEAD {path} HTTP/");
        if expect == "static" {
            assert!(
                apache.log_lines_matching(&seen).is_empty(),
                "{path} reached Apache"
            );
        } else {
            assert!(
                apache
                    .wait_for_log_line(&seen, Duration::from_secs(5))
                    .is_some(),
                "{path} did not reach Apache:\n{}",
                apache.access_log()
            );
        }
    }

    // The PHP demo end to end from a client at 127.0.0.5: Apache restores that address from
    // X-Forwarded-For because docker.conf trusts the front's network, and logs it with the peer.
    let form = http::get(front.addr, "/demo1.php");
    assert!(
        form.text().contains("action=\"demo2.php\""),
        "{}",
        form.text()
    );
    let body = b"name=Ada";
    let post = format!(
        "POST /demo2.php HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut request = post.into_bytes();
    request.extend_from_slice(body);
    let answer = request_from([127, 0, 0, 5], front.addr, &request);
    assert_eq!(answer.header("x-khttpd-route"), Some("backend"));
    let text = answer.text();
    assert!(text.contains("Hello, <strong>Ada</strong>"), "{text}");
    assert!(
        text.contains("<code>127.0.0.5</code>"),
        "REMOTE_ADDR: {text}"
    );
    let docker_log = khttpd_tests::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(logs.join("access.log"))
            .ok()
            .filter(|log| log.contains("POST /demo2.php"))
    })
    .expect("docker.conf's access log has the POST");
    let line = docker_log
        .lines()
        .find(|l| l.contains("POST /demo2.php"))
        .unwrap();
    assert!(
        line.starts_with("127.0.0.5 ") && line.ends_with("peer=127.0.0.1"),
        "{line}"
    );

    // The health checks, run as written: the front's passes while it serves and fails while stopped.
    let control = front.control.display().to_string();
    let front_check = healthcheck(front_svc, "front");
    let with_control = [("KHTTPD_CONTROL", control.as_str())];
    assert!(run_check(&front_check, &with_control), "{front_check}");
    assert_eq!(front.ctl(&["stop"]).0, 0);
    assert!(
        !run_check(&front_check, &with_control),
        "healthy while stopped"
    );
    assert_eq!(front.ctl(&["start"]).0, 0);
    assert!(run_check(&front_check, &with_control));
    let backend_check =
        healthcheck(backend_svc, "backend").replace("127.0.0.1:8080", &apache.addr.to_string());
    if run_check("command -v curl >/dev/null", &[]) {
        assert!(run_check(&backend_check, &[]), "{backend_check}");
    } else {
        eprintln!("curl is not installed: the backend's health check was not run");
    }
}

/// `(flag, env, default)` for every option of `khttpd-front --help`.
fn help_flags() -> Vec<(String, Option<String>, Option<String>)> {
    let out = Command::new(khttpd_tests::binary("khttpd-front"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let start = Regex::new(r"(?m)^(?: {6}| {2}-[a-zA-Z], )--([a-z][a-z0-9-]*)").unwrap();
    let env = Regex::new(r"\[env: ([A-Z0-9_]+)=").unwrap();
    let default = Regex::new(r"\[default: ([^\]]*)\]").unwrap();
    let starts: Vec<(usize, String)> = start
        .captures_iter(&help)
        .map(|c| (c.get(0).unwrap().start(), c[1].to_owned()))
        .collect();
    let mut flags = Vec::new();
    for (i, (at, flag)) in starts.iter().enumerate() {
        if flag == "help" || flag == "version" {
            continue;
        }
        let end = starts.get(i + 1).map_or(help.len(), |(next, _)| *next);
        let block = &help[*at..end];
        flags.push((
            flag.clone(),
            env.captures(block).map(|c| c[1].to_owned()),
            default.captures(block).map(|c| c[1].to_owned()),
        ));
    }
    assert!(flags.len() > 30, "parsed only {flags:?}");
    flags
}

#[test]
fn readme_documents_every_flag_env_var_default_command_and_knob() {
    let readme = read("README.md");
    assert!(readme.starts_with(
        "# khttpd-front\n\n```sh\ncargo run --release -p khttpd-front -- --port 8080 "
    ));
    assert!(readme.contains("docker compose -f docker/compose.yaml up"));

    for (flag, env, default) in help_flags() {
        let row = readme
            .lines()
            .find(|l| {
                l.strip_prefix(&format!("| `--{flag}"))
                    .is_some_and(|rest| rest.starts_with([' ', '`']))
            })
            .unwrap_or_else(|| panic!("README has no row for --{flag}"));
        if flag == "check-config" {
            // A mode of the command line (nginx's -t), not a setting: no variable, no key.
            assert!(env.is_none() && row.contains("| — |"), "--{flag}: {row}");
            continue;
        }
        let env = env.unwrap_or_else(|| panic!("--{flag} has no env fallback"));
        assert_eq!(
            env,
            format!("KHTTPD_{}", flag.to_uppercase().replace('-', "_"))
        );
        assert!(row.contains(&format!("`{env}`")), "--{flag}: {row}");
        if let Some(default) = default {
            assert!(
                row.contains(&format!("`{default}`")),
                "--{flag}: default {default} missing: {row}"
            );
        }
    }

    let out = Command::new(khttpd_tests::binary("khttpd-ctl"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 8, "{commands:?}");
    for command in commands {
        assert!(
            readme.contains(&format!("| `{command}")),
            "README does not describe khttpd-ctl {command}"
        );
    }
    for option in ["--control PATH", "--json", "--timeout SECS"] {
        assert!(
            readme.contains(&format!("| `{option}`")),
            "khttpd-ctl {option}"
        );
    }

    let front = Front::start(&[
        "--root",
        repo().join("www").to_str().unwrap(),
        "--threads",
        "1",
    ]);
    let (code, knobs, err) = front.ctl(&["get"]);
    assert_eq!(code, 0, "{err}");
    for line in knobs.lines() {
        let knob = line.split(" =").next().unwrap().trim();
        assert!(
            readme.contains(&format!("`{knob}`")),
            "README does not list the knob {knob}"
        );
    }
}

/// The name of the user running the tests, for `--user` (a no-op switch to oneself).
fn current_user() -> Option<String> {
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&uid.to_string()))
        .and_then(|l| l.split(':').next())
        .map(str::to_owned)
}

#[test]
fn sample_config_loads_with_every_key_and_matches_the_unit() {
    let sample = repo().join("packaging/khttpd.toml");
    let text = read("packaging/khttpd.toml");
    let root = repo().join("www");
    let root = root.to_str().unwrap();
    // Container and host paths are replaced by flags, which win over the file.
    let overrides = ["--root", root, "--access-log", "off", "--threads", "1"];

    let mut args = vec!["--config", sample.to_str().unwrap()];
    args.extend(overrides);
    let front = Front::start(&args);
    assert_eq!(
        front.ctl(&["get", "dynamic"]).1.trim(),
        "dynamic = php,shtml,/cgi-bin/"
    );
    assert_eq!(
        front.ctl(&["get", "backend"]).1.trim(),
        "backend = 127.0.0.1:8080"
    );
    drop(front);

    // Every commented key, uncommented, is accepted too, and together they are every flag.
    let setting = Regex::new(r"(?m)^#\s?([a-z][a-z0-9_-]*) = ").unwrap();
    let all = setting.replace_all(&text, "$1 = ");
    let keys: BTreeSet<String> = Regex::new(r"(?m)^([a-z][a-z0-9_-]*) = ")
        .unwrap()
        .captures_iter(&all)
        .map(|c| c[1].replace('_', "-"))
        .collect();
    let flags: BTreeSet<String> = help_flags()
        .into_iter()
        .map(|(f, _, _)| f)
        .filter(|f| f != "config" && f != "check-config")
        .collect();
    assert_eq!(keys, flags, "packaging/khttpd.toml does not show every key");
    let dir = tempfile::tempdir().unwrap();
    let every = dir.path().join("every.toml");
    std::fs::write(&every, all.as_bytes()).unwrap();
    let mut args = vec!["--config", every.to_str().unwrap()];
    args.extend(overrides);
    // The certificate paths are certbot's: a certificate made here stands in for them.
    let pem = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    khttpd_tests::proto::certificate_at(&pem, &key, &["localhost"]);
    let live = dir.path().join("live");
    std::fs::create_dir_all(live.join("example.org")).unwrap();
    khttpd_tests::proto::certificate_at(
        &live.join("example.org/fullchain.pem"),
        &live.join("example.org/privkey.pem"),
        &["example.org"],
    );
    args.extend([
        "--cert",
        pem.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--cert-dir",
        live.to_str().unwrap(),
    ]);
    args.extend(["--tls-port", "0"]);
    let me = current_user();
    if let Some(me) = &me {
        args.extend(["--user", me.as_str()]);
    }
    if let Err((code, stderr)) = Front::try_start(&args) {
        panic!("every key of packaging/khttpd.toml uncommented was refused ({code:?}): {stderr}");
    }

    // The systemd unit starts the server on that file, where the unit's directories are.
    let unit = read("packaging/khttpd-front.service");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
            .collect()
    };
    let exec = value("ExecStart").pop().expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(words[0].ends_with("/khttpd-front"), "{exec}");
    let known: BTreeSet<String> = help_flags().into_iter().map(|(f, ..)| f).collect();
    for w in words.iter().filter(|w| w.starts_with("--")) {
        assert!(
            known.contains(w.trim_start_matches('-')),
            "ExecStart has unknown {w}"
        );
    }
    let config = words[words.iter().position(|w| *w == "--config").unwrap() + 1];
    assert_eq!(value("ConfigurationDirectory"), ["khttpd"]);
    assert_eq!(config, "/etc/khttpd/khttpd.toml");
    // The control socket's default directory is the unit's RuntimeDirectory; reload goes through it.
    assert_eq!(value("RuntimeDirectory"), ["khttpd"]);
    let reload = value("ExecReload").pop().expect("ExecReload");
    assert!(
        reload.contains("khttpd-ctl --control /run/khttpd/ctl.sock reload"),
        "{reload}"
    );
    // The access log is in the unit's LogsDirectory, which logrotate rotates.
    assert_eq!(value("LogsDirectory"), ["khttpd"]);
    assert!(text.contains("\naccess-log = \"/var/log/khttpd/access.log\"\n"));
    let logrotate = read("packaging/khttpd-front.logrotate");
    assert!(logrotate.contains("/var/log/khttpd/*.log {"));
    assert!(logrotate.contains("khttpd-ctl --control /run/khttpd/ctl.sock reopen-logs"));
    // Unprivileged, with port 80, given time to drain (--grace defaults to 30 s).
    assert_eq!(value("AmbientCapabilities"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(value("CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(value("NoNewPrivileges"), ["yes"]);
    assert!(!value("User").is_empty());
    let stop: u64 = value("TimeoutStopSec")[0]
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(stop > 30);

    // systemd's own check, where systemd-analyze exists, with the binaries where they are here.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let front_bin = khttpd_tests::binary("khttpd-front");
        let ctl_bin = khttpd_tests::binary("khttpd-ctl");
        let local = unit
            .replace("/usr/local/bin/khttpd-front", front_bin.to_str().unwrap())
            .replace("/usr/local/bin/khttpd-ctl", ctl_bin.to_str().unwrap());
        let path = dir.path().join("khttpd-front.service");
        std::fs::write(&path, local).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        let complaints: Vec<&str> = said
            .lines()
            .filter(|l| l.contains("khttpd-front.service"))
            .collect();
        assert!(complaints.is_empty(), "systemd-analyze verify: {said}");
    }
}

/// `docker/compose.tls.yaml`, parsed for real and run natively: the front with its command (port
/// numbers replaced by free ones, the backend left out: static files only), the certificates it
/// names in the directory its volume mounts, serving HTTP/2 and redirecting plain HTTP.
#[test]
fn compose_tls_override_serves_https_natively() {
    let tls: Value = serde_yaml_ng::from_str(&read("docker/compose.tls.yaml"))
        .unwrap_or_else(|e| panic!("docker/compose.tls.yaml is not valid YAML: {e}"));
    let front = service(&tls, "front");
    let ports = strings(&front["ports"]);
    assert_eq!(ports, ["443:443"], "published besides compose.yaml's 80:80");
    let mount = strings(&front["volumes"])
        .into_iter()
        .find_map(|v| {
            // SOURCE:TARGET:ro, where SOURCE may hold a `${VAR:-default}` with a colon of its own.
            let parts: Vec<&str> = v.rsplitn(3, ':').collect();
            (parts.len() == 3 && parts[0] == "ro").then(|| parts[1].to_owned())
        })
        .expect("a read-only certificate volume");
    let mut args: Vec<String> = strings(&front["command"]);
    assert_eq!(args.remove(0), "khttpd-front");
    // The base command comes first, unchanged: compose replaces the whole list.
    assert_eq!(&args[..FRONT_COMMAND.len() - 1], &FRONT_COMMAND[1..]);
    let dir = tempfile::tempdir().unwrap();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--port" | "--tls-port" => args[i + 1] = "0".into(),
            "--backend" => {
                args.drain(i..i + 2);
                continue;
            }
            "--cert" | "--key" => {
                let inside = args[i + 1].clone();
                let file = inside
                    .strip_prefix(&format!("{mount}/"))
                    .unwrap_or_else(|| panic!("{inside} is not in the mounted {mount}"));
                args[i + 1] = dir.path().join(file).display().to_string();
            }
            _ => {}
        }
        i += 1;
    }
    let at = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
    let (cert, key) = (at("--cert"), at("--key"));
    khttpd_tests::proto::certificate_at(Path::new(&cert), Path::new(&key), &["localhost"]);
    args.extend(["--root".into(), repo().join("www").display().to_string()]);
    let env = environment(service(&compose(), "front"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let f = Front::try_start_with_env(&argv, &env)
        .unwrap_or_else(|(code, stderr)| panic!("front did not start ({code:?}): {stderr}"));
    let tls_addr: SocketAddr = khttpd_tests::wait_until(Duration::from_secs(5), || {
        f.stdout()
            .lines()
            .find_map(|l| l.strip_prefix("listening for TLS on "))
            .and_then(|a| a.trim().parse().ok())
    })
    .expect("a TLS listener");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--cacert",
            &cert,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .arg(format!("https://127.0.0.1:{}/", tls_addr.port()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = http::get(f.addr, "/");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://127.0.0.1:{}/", tls_addr.port()).as_str())
    );
}
