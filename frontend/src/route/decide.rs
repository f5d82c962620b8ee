//! The routing decision (kHTTPd's WaitForHeaders verdict), a pure function of the request, the
//! configuration and a [`Fs`] view, in the order of DESIGN.md:
//!
//! 1. method not GET/HEAD → backend;
//! 2. path decoded and sanitized → 400 on anything suspicious, 414 when too deep or too long;
//! 3. dynamic extension or prefix → backend (executable extensions whatever the list says);
//! 4. hidden segment → backend;
//! 5. `.htaccess` at or above → backend;
//! 6. missing → backend;
//! 7. directory → redirect, index or listing;
//! 8. not a regular file → 403 by the front; refused by the permission bits → backend;
//! 9. symlinks only inside the root;
//! 10. unknown type → backend unless sloppy;
//! 11. static.
//!
//! Backend routes without a configured backend become errors in [`Route::without_backend`].

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use http::{Method, StatusCode};
use khttpd_mime::MimeInfo;

use crate::config::Config;
use crate::route::fs::{Fs, Kind, Meta};
use crate::route::path::{self, DecodedPath, PathError};

/// Why a request goes to the backend (kHTTPd's Userspace queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendReason {
    /// Any method but GET and HEAD.
    Method,
    /// A dynamic extension or prefix.
    Dynamic,
    /// A dotfile or dot-directory.
    Hidden,
    /// A directory at or above the target holds `.htaccess` (without a backend only: with one,
    /// verification decides).
    Htaccess,
    /// A static candidate Apache has not (yet, or not currently) shown it serves as it is.
    Unverified,
    /// Nothing at that path (front controllers rely on this).
    Missing,
    /// A directory whose index file is dynamic (`index.php`).
    DynamicIndex,
    /// Not world-readable, or an execute, setuid, setgid or sticky bit.
    Permission,
    /// No known MIME type and `sloppymime` off.
    UnknownType,
}

impl BackendReason {
    /// Short name for logs and counters.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackendReason::Method => "method",
            BackendReason::Dynamic => "dynamic",
            BackendReason::Hidden => "hidden",
            BackendReason::Htaccess => "htaccess",
            BackendReason::Unverified => "unverified",
            BackendReason::Missing => "missing",
            BackendReason::DynamicIndex => "dynamic-index",
            BackendReason::Permission => "permission",
            BackendReason::UnknownType => "unknown-type",
        }
    }
}

/// A file the front serves itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StaticFile {
    /// Canonical path inside the root.
    pub path: PathBuf,
    /// Its metadata at routing time (the opener checks it is still the same file).
    pub meta: Meta,
    /// Type and compressibility.
    pub mime: MimeInfo,
    /// The `.htaccess` files from the root down to the file's directory, as one hash of their
    /// identities (0 when there are none): part of the evidence a verdict is bound to.
    pub guards: u64,
    /// The request path in its canonical spelling ([`DecodedPath::canonical`]): what verification
    /// asks Apache and keys its verdict by, so other spellings cannot multiply probes or verdicts.
    pub url: String,
}

/// A directory to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListingDir {
    /// Canonical directory path inside the root.
    pub path: PathBuf,
    /// The decoded request path, shown as the title.
    pub display: String,
    /// Its metadata at routing time.
    pub meta: Meta,
    /// The `.htaccess` chain down to it, hashed (see [`StaticFile::guards`]).
    pub guards: u64,
    /// The canonical request path (see [`StaticFile::url`]).
    pub url: String,
}

/// The verdict for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Served by the front (DataSending).
    Static(StaticFile),
    /// A rendered directory listing.
    Listing(ListingDir),
    /// 308 to the directory with its trailing slash (query kept).
    Redirect(String),
    /// Handed to the backend (Userspace).
    Backend(BackendReason),
    /// Answered with an error by the front.
    Reject(Reject),
}

/// Errors routing answers itself, with who is to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Reject {
    /// The client sent a path we refuse (400).
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    /// The target exists but the front will not serve it (403).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Nothing to serve (404).
    #[error("not found")]
    NotFound,
    /// The path is deeper or longer than the front routes (414), refused before any file is looked at.
    #[error("request path too deep or too long")]
    PathTooLong,
    /// The file system failed in an unexpected way (500).
    #[error("file system error: {0}")]
    Internal(String),
}

impl Reject {
    /// The status this rejection is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Reject::BadPath(_) => StatusCode::BAD_REQUEST,
            Reject::Forbidden(_) => StatusCode::FORBIDDEN,
            Reject::NotFound => StatusCode::NOT_FOUND,
            Reject::PathTooLong => StatusCode::URI_TOO_LONG,
            Reject::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// How a backend route is answered when no backend is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoBackend {
    /// 405 with `Allow: GET, HEAD`.
    MethodNotAllowed,
    /// A plain error status with a reason for the page.
    Status(StatusCode, &'static str),
}

impl NoBackend {
    /// The status the client gets.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            NoBackend::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NoBackend::Status(status, _) => status,
        }
    }

    /// Why, for the log.
    pub(crate) fn why(self) -> &'static str {
        match self {
            NoBackend::MethodNotAllowed => "a method other than GET or HEAD",
            NoBackend::Status(_, why) => why,
        }
    }
}

impl Route {
    /// The answer for a backend route when no backend is configured: never the file itself.
    pub(crate) fn without_backend(reason: BackendReason) -> NoBackend {
        use BackendReason::*;
        match reason {
            Method => NoBackend::MethodNotAllowed,
            Missing => NoBackend::Status(StatusCode::NOT_FOUND, "not found"),
            Dynamic | DynamicIndex => NoBackend::Status(
                StatusCode::BAD_GATEWAY,
                "dynamic content, but no backend configured",
            ),
            Hidden | Htaccess | Unverified | Permission | UnknownType => NoBackend::Status(
                StatusCode::FORBIDDEN,
                "not served by the front, and no backend configured",
            ),
        }
    }
}

/// Routes one request. `path` is the raw (still percent-encoded) path; `query` is kept for redirects.
pub(crate) fn route(
    method: &Method,
    path: &str,
    query: Option<&str>,
    cfg: &Config,
    fs: &dyn Fs,
) -> Route {
    // 1. kHTTPd handed every non-GET to userspace; HEAD is ours since HTTP/1.1.
    if method != Method::GET && method != Method::HEAD {
        return Route::Backend(BackendReason::Method);
    }
    // 2. Decode once; refuse anything that could leave the root.
    let decoded = match path::decode(path) {
        Ok(d) => d,
        Err(e) => return Route::Reject(Reject::BadPath(e)),
    };
    // Each level costs a stat and an `.htaccess` look-up: bound them before touching the disk.
    let length: usize = decoded.segments.iter().map(|s| s.len() + 1).sum();
    if decoded.segments.len() > cfg.max_path_depth || length > cfg.max_path_length {
        return Route::Reject(Reject::PathTooLong);
    }
    // 3. Dynamic extensions on any segment (so `index.php/extra` path-info) and dynamic prefixes.
    if is_dynamic(&decoded, cfg) {
        return Route::Backend(BackendReason::Dynamic);
    }
    // 4. Dotfiles never leave the front; Apache decides what they mean. `/.well-known/` is public.
    if has_hidden_segment(&decoded.segments) {
        return Route::Backend(BackendReason::Hidden);
    }
    // 5. Apache may apply auth or rewrites from an `.htaccess` at or above the target. With a
    // backend that is evidence for verification to weigh (the answer is Apache's until it has
    // shown what it serves there); without one, the front cannot know: 403.
    let lexical = cfg.root.join(decoded.relative());
    let verifying = !cfg.backends.is_empty();
    let mut guards = htaccess_chain(&cfg.root, &lexical, fs);
    if guards != 0 && !verifying {
        return Route::Backend(BackendReason::Htaccess);
    }
    // 6. and 9. Resolve symlinks; the result must stay inside the canonical root.
    let canonical = match resolve_inside(&cfg.root, &lexical, fs) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if canonical != lexical {
        guards = mix(guards, htaccess_chain(&cfg.root, &canonical, fs));
        if guards != 0 && !verifying {
            return Route::Backend(BackendReason::Htaccess);
        }
    }
    let meta = match fs.stat(&canonical) {
        Ok(m) => m,
        Err(e) => return io_route(&e),
    };
    // 7. Directories: trailing slash, then index files, then a listing.
    if meta.kind == Kind::Dir {
        if !decoded.trailing_slash {
            return Route::Redirect(slash_redirect(path, query));
        }
        return route_directory(&decoded, canonical, meta, guards, cfg, fs);
    }
    let name = decoded.file_name().unwrap_or_default();
    route_file(name, canonical, meta, guards, decoded.canonical(), cfg)
}

fn is_dynamic(d: &DecodedPath, cfg: &Config) -> bool {
    if d.segments.iter().any(|s| cfg.dynamic.is_dynamic_name(s)) {
        return true;
    }
    if cfg.dynamic.prefixes.is_empty() {
        return false;
    }
    // Compare with a trailing slash so `/cgi-bin` matches the prefix `/cgi-bin/` too.
    let mut shown = d.display();
    if !shown.ends_with('/') {
        shown.push('/');
    }
    cfg.dynamic
        .prefixes
        .iter()
        .any(|p| shown.starts_with(p.as_str()))
}

fn has_hidden_segment(segments: &[Vec<u8>]) -> bool {
    segments
        .iter()
        .enumerate()
        .any(|(i, s)| s.first() == Some(&b'.') && !(i == 0 && s.as_slice() == b".well-known"))
}

/// The `.htaccess` files from the root down to the target itself (`file/.htaccess` simply does
/// not exist), hashed by name and identity; 0 when there is none. A changed, added or removed
/// `.htaccess` changes the hash, so a verdict bound to it no longer applies.
fn htaccess_chain(root: &Path, target: &Path, fs: &dyn Fs) -> u64 {
    let Ok(rel) = target.strip_prefix(root) else {
        return 0;
    };
    let mut dir = root.to_path_buf();
    let mut chain = 0;
    let look = |dir: &Path, chain: &mut u64| {
        let file = dir.join(".htaccess");
        if fs.exists(&file) {
            // A dangling or unreadable one still counts: Apache refuses the request then.
            let id = fs.stat(&file).ok().map(|m| (m.dev, m.ino, m.len, m.mtime));
            *chain = mix(*chain, hash_of(&(file, id)));
        }
    };
    look(&dir, &mut chain);
    for c in rel.components() {
        dir.push(c);
        // Below a name that does not exist nothing does: stop there, so a missing path of
        // thousands of segments costs one look-up per existing level, not one per segment.
        if !fs.exists(&dir) {
            break;
        }
        look(&dir, &mut chain);
    }
    chain
}

fn hash_of<T: std::hash::Hash>(value: &T) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

/// Combines two chain hashes; 0 (no `.htaccess`) is neutral.
fn mix(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => hash_of(&(a, b)),
    }
}

/// Canonicalizes `target` and checks it is inside `root` and that the resolved name is not hidden
/// (a symlink `a.txt -> .env` must not expose it); a dynamic resolved name is caught by
/// `route_file`. The error is the route to answer with instead (boxed: it is the rare case).
fn resolve_inside(root: &Path, target: &Path, fs: &dyn Fs) -> Result<PathBuf, Box<Route>> {
    let canonical = fs
        .canonicalize(target)
        .map_err(|e| Box::new(io_route(&e)))?;
    let Ok(rel) = canonical.strip_prefix(root) else {
        return Err(Box::new(Route::Reject(Reject::Forbidden(
            "symlink leads outside the document root",
        ))));
    };
    if canonical != target {
        let segs: Vec<Vec<u8>> = rel.iter().map(|s| s.as_bytes().to_vec()).collect();
        if has_hidden_segment(&segs) {
            return Err(Box::new(Route::Backend(BackendReason::Hidden)));
        }
    }
    Ok(canonical)
}

fn io_route(e: &io::Error) -> Route {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            Route::Backend(BackendReason::Missing)
        }
        io::ErrorKind::InvalidFilename => Route::Backend(BackendReason::Missing),
        // A loop of symlinks cannot name a servable file either.
        _ if e.raw_os_error() == Some(libc::ELOOP) => Route::Backend(BackendReason::Missing),
        io::ErrorKind::PermissionDenied => Route::Reject(Reject::Forbidden("permission denied")),
        _ => Route::Reject(Reject::Internal(e.to_string())),
    }
}

/// `Location` for a directory requested without its slash: the raw path as sent, so nothing is
/// re-encoded, with leading slashes collapsed so `//evil.example` cannot become a protocol-relative URL.
pub(crate) fn slash_redirect(raw_path: &str, query: Option<&str>) -> String {
    let trimmed = raw_path.trim_start_matches('/');
    let mut loc = String::with_capacity(raw_path.len() + 2 + query.map_or(0, |q| q.len() + 1));
    loc.push('/');
    loc.push_str(trimmed);
    loc.push('/');
    if let Some(q) = query {
        loc.push('?');
        loc.push_str(q);
    }
    loc
}

fn route_directory(
    d: &DecodedPath,
    dir: PathBuf,
    meta: Meta,
    guards: u64,
    cfg: &Config,
    fs: &dyn Fs,
) -> Route {
    for index in &cfg.index {
        let candidate = dir.join(index);
        if !fs.exists(&candidate) {
            continue;
        }
        if cfg.dynamic.is_dynamic_name(index.as_bytes()) {
            return Route::Backend(BackendReason::DynamicIndex);
        }
        let canonical = match resolve_inside(&cfg.root, &candidate, fs) {
            Ok(p) => p,
            // A dangling index symlink is as good as no index.
            Err(r) if *r == Route::Backend(BackendReason::Missing) => continue,
            Err(r) => return *r,
        };
        return match fs.stat(&canonical) {
            Ok(m) if m.kind == Kind::Dir => continue,
            Ok(m) => route_file(index.as_bytes(), canonical, m, guards, d.canonical(), cfg),
            Err(e) => io_route(&e),
        };
    }
    if !cfg.listing {
        return Route::Reject(Reject::Forbidden("directory listing is off"));
    }
    if meta.mode & cfg.perm_required == 0 {
        return Route::Reject(Reject::Forbidden("directory is not world-readable"));
    }
    Route::Listing(ListingDir {
        path: dir,
        display: d.display(),
        meta,
        guards,
        url: d.canonical(),
    })
}

fn route_file(
    name: &[u8],
    path: PathBuf,
    meta: Meta,
    guards: u64,
    url: String,
    cfg: &Config,
) -> Route {
    // 8. A FIFO, socket or device is never opened, and never handed on either: Apache's worker
    // would block in open() on a FIFO forever. The front answers it.
    if meta.kind != Kind::File {
        return Route::Reject(Reject::Forbidden("not a regular file"));
    }
    // kHTTPd's permission rules: at least one perm_required bit, none of perm_forbid (with a
    // backend, execute bits are left to verification).
    if meta.mode & cfg.perm_required == 0 || meta.mode & cfg.forbidden_bits() != 0 {
        return Route::Backend(BackendReason::Permission);
    }
    // A symlink may name a dynamic file under a harmless name; judge the file actually served too.
    if let Some(real) = path.file_name() {
        if cfg.dynamic.is_dynamic_name(real.as_bytes()) {
            return Route::Backend(BackendReason::Dynamic);
        }
    }
    // 10. Unknown types belong to the backend unless sloppymime, or unless there is none to ask.
    let mime = match khttpd_mime::lookup(Path::new(OsStr::from_bytes(name))) {
        Some(m) => m,
        None if cfg.sloppy_mime || cfg.backends.is_empty() => {
            khttpd_mime::lookup_or_octet(Path::new(""))
        }
        None => return Route::Backend(BackendReason::UnknownType),
    };
    Route::Static(StaticFile {
        path,
        meta,
        mime,
        guards,
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::args::Args;
    use crate::route::fs::RealFs;
    use clap::Parser;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    struct Site {
        dir: tempfile::TempDir,
        cfg: Config,
    }

    impl Site {
        fn new(extra: &[&str]) -> Site {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("www");
            fs::create_dir(&root).unwrap();
            let mut args = vec!["khttpd-front", "--root", root.to_str().unwrap()];
            args.extend_from_slice(extra);
            let cfg = Config::try_from(Args::try_parse_from(args).unwrap()).unwrap();
            Site { dir, cfg }
        }
        fn file(&self, rel: &str, mode: u32) -> &Self {
            let p = self.cfg.root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"hello").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            self
        }
        fn dir(&self, rel: &str) -> &Self {
            fs::create_dir_all(self.cfg.root.join(rel)).unwrap();
            self
        }
        fn get(&self, path: &str) -> Route {
            let (p, q) = path
                .split_once('?')
                .map_or((path, None), |(p, q)| (p, Some(q)));
            route(&Method::GET, p, q, &self.cfg, &RealFs)
        }
    }

    fn is_static(r: &Route) -> bool {
        matches!(r, Route::Static(_))
    }

    #[test]
    fn rule1_methods() {
        let s = Site::new(&[]);
        s.file("a.html", 0o644);
        assert_eq!(
            route(&Method::POST, "/a.html", None, &s.cfg, &RealFs),
            Route::Backend(BackendReason::Method)
        );
        assert_eq!(
            route(&Method::DELETE, "/a.html", None, &s.cfg, &RealFs),
            Route::Backend(BackendReason::Method)
        );
        assert!(is_static(&route(
            &Method::HEAD,
            "/a.html",
            None,
            &s.cfg,
            &RealFs
        )));
    }

    #[test]
    fn rule2_bad_paths() {
        let s = Site::new(&[]);
        for p in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/a%00",
            "/a%2fb",
            "/%zz",
            "x",
        ] {
            assert!(matches!(s.get(p), Route::Reject(Reject::BadPath(_))), "{p}");
        }
    }

    #[test]
    fn rule3_dynamic() {
        let s = Site::new(&[]);
        s.file("x.php", 0o644)
            .file("X.PHP", 0o644)
            .file("p.shtml", 0o644);
        assert_eq!(s.get("/x.php"), Route::Backend(BackendReason::Dynamic));
        assert_eq!(s.get("/X.PHP"), Route::Backend(BackendReason::Dynamic));
        assert_eq!(s.get("/x.ph%70"), Route::Backend(BackendReason::Dynamic));
        assert_eq!(s.get("/p.shtml"), Route::Backend(BackendReason::Dynamic));
        assert_eq!(
            s.get("/index.php/extra/info"),
            Route::Backend(BackendReason::Dynamic)
        );
        assert_eq!(
            s.get("/cgi-bin/x.sh"),
            Route::Backend(BackendReason::Dynamic)
        );
        assert_eq!(s.get("/cgi-bin"), Route::Backend(BackendReason::Dynamic));
        assert_eq!(
            s.get("/nothere.php?x=1"),
            Route::Backend(BackendReason::Dynamic)
        );
    }

    #[test]
    fn rule4_hidden() {
        let s = Site::new(&[]);
        s.file(".env", 0o644)
            .file(".git/config", 0o644)
            .file(".well-known/acme", 0o644);
        s.file("a/.hidden/b.txt", 0o644);
        assert_eq!(s.get("/.env"), Route::Backend(BackendReason::Hidden));
        assert_eq!(s.get("/.git/config"), Route::Backend(BackendReason::Hidden));
        assert_eq!(
            s.get("/a/.hidden/b.txt"),
            Route::Backend(BackendReason::Hidden)
        );
        assert_eq!(
            s.get("/.well-known/.x"),
            Route::Backend(BackendReason::Hidden)
        );
        // acme has no extension: unknown type, served as octet-stream without a backend.
        assert!(is_static(&s.get("/.well-known/acme")));
    }

    #[test]
    fn rule5_htaccess() {
        let s = Site::new(&[]);
        s.file("priv/.htaccess", 0o644)
            .file("priv/sub/a.html", 0o644)
            .file("pub/a.html", 0o644);
        assert_eq!(
            s.get("/priv/sub/a.html"),
            Route::Backend(BackendReason::Htaccess)
        );
        assert_eq!(s.get("/priv/"), Route::Backend(BackendReason::Htaccess));
        assert!(is_static(&s.get("/pub/a.html")));
        // Through a symlink into the guarded directory.
        symlink(
            s.cfg.root.join("priv/sub/a.html"),
            s.cfg.root.join("pub/link.html"),
        )
        .unwrap();
        assert_eq!(
            s.get("/pub/link.html"),
            Route::Backend(BackendReason::Htaccess)
        );
    }

    /// Issue 15: with a backend, an `.htaccess` no longer sends a subtree to it by itself, and
    /// execute bits alone do not either; verification decides, bound to the `.htaccess` chain.
    #[test]
    fn with_a_backend_htaccess_and_execute_bits_are_evidence_not_verdicts() {
        let s = Site::new(&["--backend", "127.0.0.1:9"]);
        s.file(".htaccess", 0o644)
            .file("a.html", 0o644)
            .file("x.js", 0o755)
            .file("sub/b.html", 0o644)
            .file("suid.html", 0o4755)
            .file("private.html", 0o640);
        let guards = |r: Route| match r {
            Route::Static(f) => f.guards,
            other => panic!("not static: {other:?}"),
        };
        let root_only = guards(s.get("/a.html"));
        assert_ne!(root_only, 0);
        assert_eq!(
            guards(s.get("/x.js")),
            root_only,
            "execute bits: verification decides"
        );
        assert_eq!(guards(s.get("/sub/b.html")), root_only);
        s.file("sub/.htaccess", 0o644);
        let deeper = guards(s.get("/sub/b.html"));
        assert_ne!(deeper, root_only, "a new .htaccess changes the evidence");
        assert_eq!(
            s.get("/suid.html"),
            Route::Backend(BackendReason::Permission)
        );
        assert_eq!(
            s.get("/private.html"),
            Route::Backend(BackendReason::Permission)
        );
        assert_eq!(s.get("/.htaccess"), Route::Backend(BackendReason::Hidden));
    }

    #[test]
    fn rule6_missing() {
        let s = Site::new(&[]);
        s.file("a.html", 0o644);
        assert_eq!(s.get("/nope.html"), Route::Backend(BackendReason::Missing));
        assert_eq!(s.get("/a.html/x"), Route::Backend(BackendReason::Missing));
        assert_eq!(s.get("/pretty/url"), Route::Backend(BackendReason::Missing));
    }

    #[test]
    fn rule7_directories() {
        let s = Site::new(&[]);
        s.dir("d")
            .file("withindex/index.html", 0o644)
            .file("phpindex/index.php", 0o644);
        assert_eq!(s.get("/d?x=1&y"), Route::Redirect("/d/?x=1&y".into()));
        assert_eq!(s.get("//d"), Route::Redirect("/d/".into()));
        assert!(matches!(s.get("/d/"), Route::Listing(_)));
        match s.get("/withindex/") {
            Route::Static(f) => assert!(f.path.ends_with("withindex/index.html")),
            r => panic!("{r:?}"),
        }
        assert_eq!(
            s.get("/phpindex/"),
            Route::Backend(BackendReason::DynamicIndex)
        );
        let off = Site::new(&["--listing", "off"]);
        off.dir("d");
        assert_eq!(
            off.get("/d/"),
            Route::Reject(Reject::Forbidden("directory listing is off"))
        );
    }

    #[test]
    fn rule8_permissions_and_kinds() {
        let s = Site::new(&[]);
        s.file("private.html", 0o600)
            .file("exec.html", 0o755)
            .file("suid.html", 0o4644);
        s.file("sticky.html", 0o1644).file("ok.html", 0o644);
        assert_eq!(
            s.get("/private.html"),
            Route::Backend(BackendReason::Permission)
        );
        assert_eq!(
            s.get("/exec.html"),
            Route::Backend(BackendReason::Permission)
        );
        assert_eq!(
            s.get("/suid.html"),
            Route::Backend(BackendReason::Permission)
        );
        assert_eq!(
            s.get("/sticky.html"),
            Route::Backend(BackendReason::Permission)
        );
        assert!(is_static(&s.get("/ok.html")));
        let fifo = s.cfg.root.join("pipe.html");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // Issue 15: answered by the front, never handed to Apache (whose worker would block in
        // open() on the FIFO).
        let not_regular = Route::Reject(Reject::Forbidden("not a regular file"));
        assert_eq!(s.get("/pipe.html"), not_regular);
        let _socket = std::os::unix::net::UnixListener::bind(s.cfg.root.join("sock.html")).unwrap();
        assert_eq!(s.get("/sock.html"), not_regular);
        assert_eq!(
            s.get("/dev-null.txt"),
            Route::Backend(BackendReason::Missing)
        );
        std::os::unix::fs::symlink("/dev/null", s.cfg.root.join("null.txt")).unwrap();
        assert!(
            matches!(s.get("/null.txt"), Route::Reject(_)),
            "outside the root anyway"
        );
    }

    /// Issue 16: depth and length are bounded before the disk is touched, and the `.htaccess` walk
    /// stops at the first missing level.
    #[test]
    fn deep_or_long_paths_are_refused_and_missing_levels_end_the_walk() {
        let s = Site::new(&["--max-path-depth", "8", "--max-path-length", "64"]);
        s.file("a/b/c.html", 0o644);
        assert!(is_static(&s.get("/a/b/c.html")));
        assert_eq!(s.get(&"/a".repeat(9)), Route::Reject(Reject::PathTooLong));
        assert_eq!(
            s.get(&"/a".repeat(8)),
            Route::Backend(BackendReason::Missing)
        );
        assert_eq!(
            s.get(&format!("/{}", "x".repeat(64))),
            Route::Reject(Reject::PathTooLong)
        );
        // Counts the look-ups a missing path of 7 levels makes: one per existing level, not one
        // per segment.
        struct Counting(std::cell::Cell<usize>);
        impl Fs for Counting {
            fn exists(&self, p: &Path) -> bool {
                self.0.set(self.0.get() + 1);
                RealFs.exists(p)
            }
            fn stat(&self, p: &Path) -> io::Result<Meta> {
                RealFs.stat(p)
            }
            fn canonicalize(&self, p: &Path) -> io::Result<PathBuf> {
                RealFs.canonicalize(p)
            }
        }
        let fs = Counting(std::cell::Cell::new(0));
        let deep = format!("/a{}", "/zz".repeat(6));
        assert_eq!(
            route(&Method::GET, &deep, None, &s.cfg, &fs),
            Route::Backend(BackendReason::Missing)
        );
        assert!(fs.0.get() <= 6, "{} look-ups", fs.0.get());
    }

    #[test]
    fn rule9_symlinks() {
        let s = Site::new(&[]);
        s.file("real.html", 0o644).file("secret.php", 0o644);
        fs::write(s.dir.path().join("outside.html"), b"secret").unwrap();
        symlink(
            s.dir.path().join("outside.html"),
            s.cfg.root.join("out.html"),
        )
        .unwrap();
        symlink(s.dir.path(), s.cfg.root.join("outdir")).unwrap();
        symlink(s.cfg.root.join("real.html"), s.cfg.root.join("in.html")).unwrap();
        symlink(
            s.cfg.root.join("secret.php"),
            s.cfg.root.join("innocent.txt"),
        )
        .unwrap();
        symlink("nowhere", s.cfg.root.join("dangling.html")).unwrap();
        let escape = Route::Reject(Reject::Forbidden("symlink leads outside the document root"));
        assert_eq!(s.get("/out.html"), escape);
        assert_eq!(s.get("/outdir/outside.html"), escape);
        assert!(is_static(&s.get("/in.html")));
        assert_eq!(
            s.get("/innocent.txt"),
            Route::Backend(BackendReason::Dynamic)
        );
        assert_eq!(
            s.get("/dangling.html"),
            Route::Backend(BackendReason::Missing)
        );
    }

    #[test]
    fn rule10_unknown_types() {
        let with_backend = Site::new(&["--backend", "127.0.0.1:9"]);
        with_backend.file("x.unknownext", 0o644);
        assert_eq!(
            with_backend.get("/x.unknownext"),
            Route::Backend(BackendReason::UnknownType)
        );
        let sloppy = Site::new(&["--backend", "127.0.0.1:9", "--sloppy-mime"]);
        sloppy.file("x.unknownext", 0o644);
        match sloppy.get("/x.unknownext") {
            Route::Static(f) => assert_eq!(f.mime.content_type, "application/octet-stream"),
            r => panic!("{r:?}"),
        }
        let none = Site::new(&[]);
        none.file("x.unknownext", 0o644);
        assert!(is_static(&none.get("/x.unknownext")));
    }

    #[test]
    fn rule11_static_and_query() {
        let s = Site::new(&[]);
        s.file("style.css", 0o644);
        match s.get("/style.css?v=3") {
            Route::Static(f) => assert_eq!(f.mime.content_type, "text/css; charset=utf-8"),
            r => panic!("{r:?}"),
        }
    }

    proptest::proptest! {
        /// For any request path, the resolver's answer is inside the canonical root or not a file
        /// at all (an error, a redirect or the backend), whatever symlinks the site holds.
        #[test]
        fn resolved_paths_stay_inside_the_root(
            segs in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("..".to_owned()),
                    proptest::strategy::Just("%2e%2e".to_owned()),
                    proptest::strategy::Just("out".to_owned()),
                    proptest::strategy::Just("in".to_owned()),
                    proptest::strategy::Just("a.html".to_owned()),
                    proptest::strategy::Just("%2f".to_owned()),
                    proptest::strategy::Just(".".to_owned()),
                    proptest::strategy::Just("".to_owned()),
                    "[a-z%./\\\\]{0,6}",
                ],
                0..6,
            ),
            slash in proptest::bool::ANY,
        ) {
            let s = fixture();
            let mut raw = String::from("/");
            raw.push_str(&segs.join("/"));
            if slash { raw.push('/'); }
            match s.get(&raw) {
                Route::Static(f) => proptest::prop_assert!(f.path.starts_with(&s.cfg.root), "{raw} -> {:?}", f.path),
                Route::Listing(d) => proptest::prop_assert!(d.path.starts_with(&s.cfg.root), "{raw} -> {:?}", d.path),
                _ => {}
            }
        }
    }

    /// One site for the property test: symlinks out of the root and back in, built once.
    fn fixture() -> &'static Site {
        static SITE: std::sync::OnceLock<Site> = std::sync::OnceLock::new();
        SITE.get_or_init(|| {
            let s = Site::new(&[]);
            s.file("a.html", 0o644).file("in/a.html", 0o644);
            fs::write(s.dir.path().join("a.html"), b"outside").unwrap();
            symlink(s.dir.path(), s.cfg.root.join("out")).unwrap();
            symlink(s.cfg.root.join("in"), s.cfg.root.join("in/in")).unwrap_or(());
            s
        })
    }

    #[test]
    fn without_backend_never_serves() {
        use BackendReason::*;
        assert_eq!(Route::without_backend(Method), NoBackend::MethodNotAllowed);
        assert!(matches!(
            Route::without_backend(Missing),
            NoBackend::Status(StatusCode::NOT_FOUND, _)
        ));
        assert!(matches!(
            Route::without_backend(Dynamic),
            NoBackend::Status(StatusCode::BAD_GATEWAY, _)
        ));
        for r in [Hidden, Htaccess, Permission] {
            assert!(matches!(
                Route::without_backend(r),
                NoBackend::Status(StatusCode::FORBIDDEN, _)
            ));
        }
    }
}
