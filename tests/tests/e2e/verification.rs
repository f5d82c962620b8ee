//! Issue 15: Apache is the authority on what a URL means. Restrictions and handlers in Apache's main
//! configuration and in `.htaccess` files, each checked the same way: every URL asked from Apache
//! alone and through the front (after a warm-up, so verification has run), and the front may give
//! no answer that Apache alone would not give. Files Apache sends as they are must end up served by
//! the front itself.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use khttpd_tests::apache::{Apache, ApacheOptions};
use khttpd_tests::front::Front;
use khttpd_tests::http::{self, Conn};
use khttpd_tests::Proto;

const PHP_SECRET: &str = "<?php $db_password = 'hunter2'; echo 'php ran'; ?>\n";

/// `(path, contents, mode)` of the corpus' files.
const FILES: &[(&str, &str, u32)] = &[
    ("plain.html", "<p>plain</p>\n", 0o644),
    ("exec.js", "console.log('chmod -R 755');\n", 0o755),
    ("private/x.html", "PRIVATE\n", 0o644),
    ("secret.txt", "SECRET\n", 0o644),
    ("admin.html", "ADMIN\n", 0o644),
    ("internal/a.css", "INTERNAL{}\n", 0o644),
    ("hidden1/a.css", "HIDDEN{}\n", 0o644),
    ("members/a.html", "MEMBERS\n", 0o644),
    ("noindex/b.txt", "b\n", 0o644),
    ("listed/c.txt", "c\n", 0o644),
    ("both/index.php", "<?php echo 'php index';\n", 0o644),
    ("both/index.html", "HTML INDEX\n", 0o644),
    ("moved.html", "MOVED\n", 0o644),
    ("legacy/page.html", PHP_SECRET, 0o644),
    ("uploads/evil.jpg", PHP_SECRET, 0o644),
    ("typed.txt", PHP_SECRET, 0o644),
    ("ssi/page.html", "<p><!--#echo var=\"DOCUMENT_NAME\" --></p>\n", 0o644),
    ("cookie.html", "COOKIE\n", 0o644),
    ("vary.html", "VARY\n", 0o644),
    ("htdeny/.htaccess", "Require all denied\n", 0o644),
    ("htdeny/x.html", "HTDENY\n", 0o644),
    (
        "htrewrite/.htaccess",
        "RewriteEngine On\nRewriteRule ^x\\.html$ /plain.html [R=302,L]\n",
        0o644,
    ),
    ("htrewrite/x.html", "HTREWRITE\n", 0o644),
    (
        "htauth/.htaccess",
        "AuthType Basic\nAuthName \"members\"\nAuthUserFile /dev/null\nRequire valid-user\n",
        0o644,
    ),
    ("htauth/x.css", "HTAUTH{}\n", 0o644),
    (
        "htphp/.htaccess",
        "<Files \"x.html\">\nSetHandler application/x-httpd-php\n</Files>\n",
        0o644,
    ),
    ("htphp/x.html", PHP_SECRET, 0o644),
    (
        "app/.htaccess",
        "RewriteEngine On\nRewriteCond %{REQUEST_FILENAME} !-f\nRewriteCond %{REQUEST_FILENAME} !-d\nRewriteRule . /app/index.php [L]\n",
        0o644,
    ),
    ("app/index.php", "<?php echo 'front controller';\n", 0o644),
    ("app/a.css", "APP{}\n", 0o644),
];

/// URLs the front must leave with Apache, whatever it finds on disk.
const APACHES: &[&str] = &[
    "/private/x.html",
    "/secret.txt",
    "/admin.html",
    "/internal/a.css",
    "/hidden1/a.css",
    "/members/a.html",
    "/noindex/",
    "/both/",
    "/moved.html",
    "/legacy/page.html",
    "/uploads/evil.jpg",
    "/typed.txt",
    "/ssi/page.html",
    "/cookie.html",
    "/vary.html",
    "/htdeny/x.html",
    "/htrewrite/x.html",
    "/htauth/x.css",
    "/htphp/x.html",
    "/listed",
];

/// URLs Apache sends as they are: the front's once verified.
const FRONTS: &[&str] = &[
    "/plain.html",
    "/exec.js",
    "/listed/",
    "/listed/c.txt",
    "/app/a.css",
];

fn main_config(root: &Path) -> String {
    let r = root.display();
    format!(
        r#"
<Directory "{r}/private">
    Require all denied
</Directory>
<Files "secret.txt">
    Require all denied
</Files>
<Location "/admin.html">
    Require ip 10.0.0.0/8
</Location>
<LocationMatch "^/internal/">
    Require all denied
</LocationMatch>
<DirectoryMatch "/hidden[0-9]+">
    Require all denied
</DirectoryMatch>
<Directory "{r}/members">
    AuthType Basic
    AuthName "members"
    AuthUserFile /dev/null
    Require valid-user
</Directory>
<Directory "{r}/noindex">
    Options -Indexes
</Directory>
RewriteEngine On
RewriteRule "^/moved\.html$" "/plain.html" [R=301,L]
<Directory "{r}/legacy">
    AddType application/x-httpd-php .html
</Directory>
<Directory "{r}/uploads">
    <FilesMatch "\.jpg$">
        SetHandler application/x-httpd-php
    </FilesMatch>
</Directory>
<Files "typed.txt">
    ForceType application/x-httpd-php
</Files>
<Directory "{r}/ssi">
    Options +Includes
    AddOutputFilter INCLUDES .html
</Directory>
<Location "/cookie.html">
    Header set Set-Cookie "session=1"
</Location>
<Location "/vary.html">
    Header set Vary "Cookie"
</Location>
"#
    )
}

fn apache_alone(a: &Apache, path: &str) -> http::Response {
    http::get(a.addr, path)
}

// Issue 18: over HTTP/1.1 and over HTTP/2 (TLS, curl).
over_h1_and_h2!(no_answer_from_the_front_that_apache_alone_would_not_give);

fn no_answer_from_the_front_that_apache_alone_would_not_give(p: Proto) {
    let dir = tempfile::Builder::new()
        .prefix("khttpd-corpus-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("www");
    for (rel, text, mode) in FILES {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let root = root.canonicalize().unwrap();
    let a = Apache::start_with(
        &root,
        ApacheOptions {
            extra: main_config(&root),
            ..ApacheOptions::default()
        },
    );
    let backend = a.addr.to_string();
    let f = Front::start_over(
        p,
        &[
            "--root",
            root.to_str().unwrap(),
            "--backend",
            &backend,
            "--route-header",
            "--threads",
            "2",
        ],
    );

    let all: Vec<&str> = APACHES.iter().chain(FRONTS).copied().collect();
    // Warm-up: the first request of each URL goes to Apache and starts its probe.
    for path in &all {
        f.get(path);
    }
    for path in FRONTS {
        assert!(
            f.until_front_serves(path, Duration::from_secs(5)).is_some(),
            "{path}: Apache sends it as it is, yet the front never took it over:\n{}",
            a.access_log()
        );
    }
    // Every probe has ended (so a refused verdict is in place, not pending).
    let settled = f
        .probes_settled(Duration::from_secs(5))
        .expect("probes end");
    assert!(
        settled["verify"]["refused"].as_u64().unwrap() >= 10,
        "{settled}"
    );

    // Over HTTP/1.1 on one keep-alive connection (the fast path's ground); HTTP/2 asks afresh.
    let mut conn = p.is_h1().then(|| Conn::open(f.addr));
    let mut ask = |path: &str| match conn.as_mut() {
        Some(c) => c.request("GET", path, &[], b""),
        None => f.get(path),
    };
    for path in &all {
        let alone = apache_alone(&a, path);
        for _ in 0..2 {
            let front = ask(path);
            assert_eq!(front.status, alone.status, "{path}: {}", front.raw_head);
            let route = front.header("x-khttpd-route").unwrap_or("-");
            if APACHES.contains(path) {
                assert_ne!(route, "static", "{path}: the front answered itself");
            } else {
                assert_eq!(route, "static", "{path}");
            }
            // Byte for byte, except a directory Apache lists (the front shows its own listing).
            if !path.ends_with('/') {
                assert_eq!(front.body, alone.body, "{path}");
            }
            assert!(!front.text().contains("hunter2"), "{path}: source served");
        }
    }

    // Another spelling of a verified name is the same URL: no new probe, no new verdict.
    let verify = |f: &Front| {
        let v = f.status();
        (
            v["verify"]["probes"].as_u64().unwrap(),
            v["verify"]["entries"].as_u64().unwrap(),
        )
    };
    let before = verify(&f);
    for spelling in ["/plain%2Ehtml", "/%70lain.html", "//plain.html"] {
        let r = f.get(spelling);
        assert_eq!(r.header("x-khttpd-route"), Some("static"), "{spelling}");
    }
    assert_eq!(verify(&f), before, "spellings share one verdict");

    // After `apachectl graceful` with a new configuration, `khttpd-ctl flush` drops every verdict:
    // each URL is Apache's again until it has been asked anew.
    let (code, out, _) = f.ctl(&["flush"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdicts dropped"), "{out}");
    let r = f.get("/plain.html");
    assert_eq!(
        r.header("x-khttpd-route"),
        Some("backend"),
        "asked again after a flush"
    );
    assert!(f
        .until_front_serves("/plain.html", Duration::from_secs(5))
        .is_some());
    // A changed file is a new version: Apache is asked again before the front serves it.
    std::fs::write(root.join("plain.html"), "<p>plain, changed</p>\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let r = f.get("/plain.html");
    assert_eq!(
        (r.text().as_str(), r.header("x-khttpd-route")),
        ("<p>plain, changed</p>\n", Some("backend"))
    );
}
