//! The fixture document root shared by the static and wire tests: awkward names, a dotfile, a symlink
//! out of the root, an executable, a private file, an unknown extension, an empty file and directory,
//! a `.gz` sibling only, an `.htaccess` directory, a FIFO and a large file.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// Names that must survive listing, escaping and percent-encoding.
pub(crate) const AWKWARD: &[&str] = &[
    "with space.txt",
    "100%.txt",
    "日本語.txt",
    "<script>alert(1)<script>.txt",
    "quote\"d'.txt",
    "a&b.txt",
];

/// A temporary site; `root` is the document root, with a secret file beside it (outside).
pub(crate) struct Site {
    _dir: TempDir,
    /// The document root.
    pub root: PathBuf,
    /// A file outside the root that must never be served.
    pub secret: PathBuf,
}

/// The contents of the large file: 3 MiB + 17 bytes of a repeating, position-dependent pattern.
pub(crate) fn big_content() -> Vec<u8> {
    (0..(3 << 20) + 17).map(|i: u32| (i % 251) as u8).collect()
}

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("building the fixture site"))
        .expect("building the fixture site");
    fs::write(&p, data).expect("building the fixture site");
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("building the fixture site");
}

impl Site {
    /// Builds the fixture.
    pub(crate) fn new() -> Site {
        let dir = tempfile::Builder::new()
            .prefix("khttpd-site-")
            .tempdir()
            .expect("building the fixture site");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("building the fixture site");
        let root = dir.path().join("www");
        fs::create_dir(&root).expect("building the fixture site");
        let secret = dir.path().join("secret.txt");
        fs::write(&secret, b"TOP-SECRET outside the root").expect("building the fixture site");

        write(
            &root,
            "index.html",
            b"<!DOCTYPE html><title>home</title>hello\n",
            0o644,
        );
        write(&root, "style.css", b"body { color: red }\n", 0o644);
        write(&root, "app.js", b"console.log('hi');\n", 0o644);
        write(&root, "alphabet.txt", b"abcdefghijklmnopqrstuvwxyz", 0o644);
        write(&root, "empty.txt", b"", 0o644);
        fs::create_dir(root.join("emptydir")).expect("building the fixture site");
        write(&root, "big.bin", &big_content(), 0o644);
        write(&root, "data.unknownext", b"opaque", 0o644);
        write(&root, "private.html", b"PRIVATE 0600", 0o600);
        write(&root, "run.html", b"EXECUTABLE", 0o755);
        write(
            &root,
            "page.php",
            b"<?php echo 'PHP-SOURCE-LEAK'; ?>",
            0o644,
        );
        write(
            &root,
            "ssi.shtml",
            b"<!--#echo var=\"SSI-SOURCE-LEAK\" -->",
            0o644,
        );
        write(&root, ".env", b"DB_PASSWORD=DOTFILE-LEAK", 0o644);
        write(&root, ".git/config", b"GIT-LEAK", 0o644);
        write(
            &root,
            ".well-known/security.txt",
            b"Contact: mailto:sec@example.org\n",
            0o644,
        );
        write(&root, "guarded/.htaccess", b"Require all denied\n", 0o644);
        write(&root, "guarded/inside.html", b"GUARDED-LEAK", 0o644);
        write(&root, "only-gz/app.js.gz", b"\x1f\x8b fake gzip", 0o644);
        write(&root, "sub/page.html", b"<p>sub page</p>", 0o644);
        for name in AWKWARD {
            write(&root, &format!("awkward/{name}"), name.as_bytes(), 0o644);
        }
        write(&root, "awkward/.hidden", b"hidden", 0o644);
        fs::create_dir(root.join("awkward/dir <x>")).expect("building the fixture site");
        symlink(&secret, root.join("escape.txt")).expect("building the fixture site");
        symlink(dir.path(), root.join("escape-dir")).expect("building the fixture site");
        symlink(root.join("alphabet.txt"), root.join("inside-link.txt"))
            .expect("building the fixture site");
        symlink(root.join("page.php"), root.join("innocent.txt"))
            .expect("building the fixture site");
        let fifo = root.join("pipe.txt");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("building the fixture site")
            .success());
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o644))
            .expect("building the fixture site");
        Site {
            _dir: dir,
            root,
            secret,
        }
    }

    /// `--root` argument.
    pub(crate) fn root_arg(&self) -> &str {
        self.root.to_str().expect("temp paths are UTF-8")
    }
}

/// Every marker a leaked file would carry; no answer may contain any of them.
pub(crate) const LEAK_MARKERS: &[&str] = &[
    "TOP-SECRET",
    "PRIVATE 0600",
    "EXECUTABLE",
    "PHP-SOURCE-LEAK",
    "SSI-SOURCE-LEAK",
    "DOTFILE-LEAK",
    "GIT-LEAK",
    "GUARDED-LEAK",
    "root:x:0:0",
];

/// Panics if `body` carries any leak marker.
pub(crate) fn assert_no_leak(what: &str, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    for m in LEAK_MARKERS {
        assert!(!text.contains(m), "{what}: answer leaked {m:?}: {text}");
    }
}
