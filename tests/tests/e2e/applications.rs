//! Issue 15 with real PHP applications from Debian's packages, behind a real Apache + mod_php +
//! mod_rewrite with `AllowOverride All`: WordPress (with the standard permalink `.htaccess` at the
//! root, which used to send every request to Apache) and DokuWiki (whose own `.htaccess` files deny
//! `inc/`, `bin/`, `vendor/` and its README and VERSION files).
//!
//! A differential crawler asks every directory and a bounded, evenly spread sample of the files of
//! the tree (plus the pages `/` links to), once from Apache alone and, after one warm-up pass,
//! through the front: the same status for every URL, the same bytes for every file the front
//! answers itself, and the front answering at least 95% of the static files Apache sends as they
//! are on disk. `scripts/deps` installs the packages.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use khttpd_tests::apache::{Apache, ApacheOptions};
use khttpd_tests::front::Front;
use khttpd_tests::http;

/// The standard WordPress permalink rules (Settings → Permalinks writes exactly these).
const WP_HTACCESS: &str = "# BEGIN WordPress\n<IfModule mod_rewrite.c>\nRewriteEngine On\n\
RewriteBase /\nRewriteRule ^index\\.php$ - [L]\nRewriteCond %{REQUEST_FILENAME} !-f\n\
RewriteCond %{REQUEST_FILENAME} !-d\nRewriteRule . /index.php [L]\n</IfModule>\n# END WordPress\n";

/// At most this many non-PHP files, PHP files and directories are crawled per application, evenly
/// spread over the tree, so the test stays within seconds.
const MAX_STATIC: usize = 1200;
const MAX_PHP: usize = 60;
const MAX_DIRS: usize = 250;

/// Copies `from` into `to` with symlinks resolved (Debian's packages link into /etc and
/// /var/lib), directories 0755 and files 0644 so Apache's workers read them; dangling links and
/// what cannot be read are left out.
fn copy_resolved(from: &Path, to: &Path, depth: usize) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let src = e.path();
        let dest = to.join(e.file_name());
        let Ok(meta) = std::fs::metadata(&src) else {
            continue;
        };
        if meta.is_dir() && depth < 24 {
            copy_resolved(&src, &dest, depth + 1);
        } else if meta.is_file() && std::fs::copy(&src, &dest).is_ok() {
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Every file and directory under `root`, as URL paths (directories with their slash).
fn tree(root: &Path) -> (Vec<String>, Vec<String>) {
    let (mut files, mut dirs) = (Vec::new(), vec!["/".to_owned()]);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let path = rel.join(e.file_name());
            let Some(url) = path.to_str().map(|p| format!("/{}", encode(p))) else {
                continue;
            };
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(format!("{url}/"));
                stack.push(path);
            } else {
                files.push(url);
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

/// Percent-encodes what a URL path cannot carry as it is.
fn encode(p: &str) -> String {
    p.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// At most `n` of `items`, evenly spread.
fn spread(items: &[String], n: usize) -> Vec<String> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n].clone()).collect()
}

/// Same-site links (`href`/`src`) of a page.
fn links(html: &str) -> Vec<String> {
    let re = regex::Regex::new(r#"(?:href|src)="(/[^"/][^"]*)""#).unwrap();
    re.captures_iter(html)
        .map(|c| c[1].split(['?', '#']).next().unwrap_or("/").to_owned())
        .collect()
}

struct Outcome {
    urls: usize,
    as_is: usize,
    by_front: usize,
}

/// Crawls `root` through Apache alone and through the front; returns the counts and panics on the
/// first URL whose answers differ.
fn crawl(name: &str, root: &Path) -> Outcome {
    let a = Apache::start_with(root, ApacheOptions::default());
    let backend = a.addr.to_string();
    let f = Front::start(&[
        "--root",
        root.to_str().unwrap(),
        "--backend",
        &backend,
        "--route-header",
        "--threads",
        "2",
    ]);
    let (files, dirs) = tree(root);
    let (php, other): (Vec<String>, Vec<String>) = files
        .into_iter()
        .partition(|u| u.to_ascii_lowercase().ends_with(".php"));
    let mut urls: BTreeSet<String> = spread(&other, MAX_STATIC).into_iter().collect();
    urls.extend(spread(&php, MAX_PHP));
    urls.extend(spread(&dirs, MAX_DIRS));
    urls.extend(links(&http::get(a.addr, "/").text()));
    let urls: Vec<String> = urls.into_iter().collect();

    let alone: Vec<http::Response> = urls.iter().map(|u| http::get(a.addr, u)).collect();
    // One warm-up pass: each URL's first request goes to Apache and starts its probe.
    for u in &urls {
        http::get(f.addr, u);
    }
    khttpd_tests::wait_until(Duration::from_secs(30), || {
        let (_, out, _) = f.ctl(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (v["verify"]["in_flight"] == 0).then_some(())
    })
    .expect("verification probes end");

    let (mut as_is, mut by_front) = (0, 0);
    let mut missed = Vec::new();
    let started = Instant::now();
    for (u, alone) in urls.iter().zip(&alone) {
        let front = http::get(f.addr, u);
        let route = front.header("x-khttpd-route").unwrap_or("-").to_owned();
        assert_eq!(
            front.status, alone.status,
            "{name} {u}: the front answered {} ({route}), Apache alone {}",
            front.status, alone.status
        );
        if route == "static" && !u.ends_with('/') {
            assert!(
                front.body == alone.body,
                "{name} {u}: other bytes than Apache's"
            );
        }
        assert!(
            !(u.ends_with(".php") && route == "static"),
            "{name} {u}: PHP served as a file"
        );
        let on_disk = (!u.ends_with('/'))
            .then(|| std::fs::read(root.join(decode(&u[1..]))).ok())
            .flatten();
        if alone.status == 200 && on_disk.as_deref() == Some(alone.body.as_slice()) {
            as_is += 1;
            if route == "static" {
                by_front += 1;
            } else {
                missed.push(u.as_str());
            }
        }
    }
    eprintln!(
        "{name}: {} URLs, {as_is} files Apache sends as they are, {by_front} of them answered by \
         the front ({:.1}%), measured pass {:?}",
        urls.len(),
        100.0 * by_front as f64 / as_is.max(1) as f64,
        started.elapsed()
    );
    eprintln!("{name}: left with Apache: {missed:?}");
    Outcome {
        urls: urls.len(),
        as_is,
        by_front,
    }
}

fn decode(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&p[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn application(installed: &Path) -> (tempfile::TempDir, PathBuf) {
    assert!(
        installed.is_dir(),
        "{} is missing: bash scripts/deps installs it",
        installed.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("khttpd-app-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("www");
    copy_resolved(installed, &root, 0);
    let root = root.canonicalize().unwrap();
    (dir, root)
}

#[test]
fn wordpress_static_files_are_the_fronts_and_every_answer_is_apaches() {
    let (_dir, root) = application(Path::new("/usr/share/wordpress"));
    std::fs::write(root.join(".htaccess"), WP_HTACCESS).unwrap();
    let o = crawl("WordPress", &root);
    assert!(
        o.urls > 1000 && o.as_is > 800,
        "{} URLs, {} as is",
        o.urls,
        o.as_is
    );
    assert!(
        o.by_front * 100 >= o.as_is * 95,
        "the front answered {} of {} static files",
        o.by_front,
        o.as_is
    );
}

#[test]
fn dokuwiki_static_files_are_the_fronts_and_its_denials_hold() {
    let (_dir, root) = application(Path::new("/usr/share/dokuwiki"));
    let o = crawl("DokuWiki", &root);
    assert!(
        o.urls > 1000 && o.as_is > 300,
        "{} URLs, {} as is",
        o.urls,
        o.as_is
    );
    assert!(
        o.by_front * 100 >= o.as_is * 95,
        "the front answered {} of {} static files",
        o.by_front,
        o.as_is
    );
}
