//! A real Apache 2.4 + mod_php backend, private to one test.
//!
//! Each instance gets a free loopback port and a temp directory holding a
//! generated `httpd.conf`, the logs, the pid file and the runtime files, so
//! any number of instances run side by side. The generated config only does
//! what is specific to a throwaway test server (modules, port, paths, the
//! DocumentRoot, trusted proxies); everything about how the backend
//! *behaves* comes from `docker/apache/khttpd-backend.conf`, which the
//! docker image Includes too, so the tests exercise the production settings.
//!
//! Apache runs in the foreground (`-DFOREGROUND`) as a child of the test,
//! in a process group of its own: when prefork shuts down it SIGTERMs its
//! whole process group, which would otherwise be the test runner's. A
//! [`DeathWatch`] stops it if the test process dies without dropping it.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{has_terminated, send_signal, DeathWatch};

/// How long Apache gets to bind and report it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a clean stop may take before the process group is SIGKILLed.
/// Apache itself escalates to SIGKILL for its children after ~3 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(8);

/// Logged once the parent has bound its port and started its children
/// ("AH00163: Apache/2.4.x (Debian) configured -- resuming normal
/// operations"). Notices are logged whatever the LogLevel.
const READY_MARKER: &str = "resuming normal operations";

/// The access log line format. `%a` is the client address *after*
/// mod_remoteip (X-Forwarded-For or PROXY header applied), `%{c}a` the TCP
/// peer, so a test can tell both "this reached Apache" and "as whom".
/// X-Forwarded-For is logged after mod_remoteip consumed trusted entries
/// from it (a fully consumed header logs as "-"); Via as received.
pub const LOG_FORMAT: &str = r#"%a %{c}a \"%r\" %>s %b \"%{X-Forwarded-For}i\" \"%{Via}i\""#;

/// Per-instance choices that differ between tests.
#[derive(Debug, Clone)]
pub struct ApacheOptions {
    /// Require a PROXY protocol (v1 or v2) header on every connection
    /// (`RemoteIPProxyProtocol On`); connections without one are dropped.
    pub proxy_protocol: bool,
    /// Peers whose X-Forwarded-For / PROXY header is believed
    /// (`RemoteIPInternalProxy`). Default `["127.0.0.0/8"]`. Empty means
    /// mod_remoteip believes every peer.
    pub trusted_proxies: Vec<String>,
    /// Raw configuration appended at the end of the generated httpd.conf.
    pub extra: String,
}

impl Default for ApacheOptions {
    fn default() -> Self {
        ApacheOptions {
            proxy_protocol: false,
            trusted_proxies: vec!["127.0.0.0/8".to_owned()],
            extra: String::new(),
        }
    }
}

/// A running Apache; stopped (with all its children) when dropped.
pub struct Apache {
    pub port: u16,
    /// `127.0.0.1:port`.
    pub addr: SocketAddr,
    /// Holds httpd.conf, access.log, error.log, the pid file, run/.
    pub dir: TempDir,
    docroot: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
    watch: Option<DeathWatch>,
}

impl Apache {
    /// Starts Apache serving `docroot` with default options.
    pub fn start(docroot: &Path) -> Apache {
        Apache::start_with(docroot, ApacheOptions::default())
    }

    /// Starts Apache serving `docroot` and waits until it is ready.
    /// Panics with the error log if it does not come up within 10 s.
    ///
    /// When the tests run as root the workers run as `www-data`, so this
    /// makes `docroot` (and its ancestors inside the temp directory)
    /// world-readable/searchable.
    pub fn start_with(docroot: &Path, options: ApacheOptions) -> Apache {
        let dir = tempfile::Builder::new()
            .prefix("khttpd-apache-")
            .tempdir()
            .expect("creating a temp dir for Apache");
        let docroot = docroot
            .canonicalize()
            .unwrap_or_else(|e| panic!("docroot {}: {e}", docroot.display()));
        let user = worker_user();
        if user.is_some() {
            // Apache's workers drop to www-data, which must be able to
            // reach the instance directory and read the docroot.
            make_reachable(dir.path());
            make_reachable(&docroot);
        }
        std::fs::create_dir(dir.path().join("run")).expect("creating Apache's run dir");
        let conf = dir.path().join("httpd.conf");
        let mut apache = Apache {
            port: 0,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            docroot,
            conf,
            child: None,
            watch: None,
        };
        // A port that was free a moment ago may be taken by another
        // process before Apache binds it: then simply pick another.
        for attempt in 1.. {
            let port = crate::free_port();
            apache.port = port;
            apache.addr = SocketAddr::from(([127, 0, 0, 1], port));
            let text = render_conf(apache.dir.path(), port, &apache.docroot, &options, user);
            std::fs::write(&apache.conf, text).expect("writing httpd.conf");
            match apache.spawn_and_wait() {
                Ok(()) => return apache,
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!(
                    "Apache did not start on port {port} (config {}):\n{log}",
                    apache.conf.display()
                ),
            }
        }
        unreachable!("the retry loop returns or panics")
    }

    /// The DocumentRoot (canonicalised).
    pub fn docroot(&self) -> &Path {
        &self.docroot
    }

    /// The generated httpd.conf.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The access log so far, one request per line in [`LOG_FORMAT`].
    /// Apache writes a line after the response is sent: a client that read
    /// to EOF on a `Connection: close` request will find it; after a
    /// keep-alive response use [`Apache::wait_for_log_line`].
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The error log so far (plus anything Apache printed on
    /// stdout/stderr before its error log was open).
    pub fn error_log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// Access log lines containing `needle`.
    pub fn log_lines_matching(&self, needle: &str) -> Vec<String> {
        self.access_log()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits up to `timeout` for an access log line containing `needle`.
    pub fn wait_for_log_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        crate::wait_until(timeout, || {
            self.log_lines_matching(needle).into_iter().next()
        })
    }

    /// The parent process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops Apache and all its children; the port then refuses
    /// connections. Idempotent.
    pub fn stop(&mut self) {
        self.watch = None;
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = i32::try_from(child.id()).expect("pid fits in i32");
        // SIGTERM is Apache's "stop now": it kills its workers, waits for
        // them (escalating to SIGKILL itself) and removes its pid file.
        // Unlike graceful-stop it does not wait for keep-alive
        // connections, which tests leave open.
        send_signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !has_terminated(child.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The parent has exited (a zombie, not reaped yet) or is stuck.
        // Either way its pid, and so the process group id, cannot have
        // been reused, so SIGKILLing the group can only hit Apache's own
        // stragglers.
        send_signal(-pid, libc::SIGKILL);
        let _ = child.wait();
    }

    /// Starts the same configuration (same port, logs appended) again after
    /// [`Apache::stop`]. Panics with the error log if it does not come up.
    pub fn start_again(&mut self) {
        self.stop();
        if let Err(log) = self.spawn_and_wait() {
            panic!(
                "Apache did not start again on port {} (config {}):\n{log}",
                self.port,
                self.conf.display()
            );
        }
    }

    /// Whether the Apache parent is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Spawns Apache on the current config and waits for its ready notice.
    /// On failure, stops what is left and returns the logs.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let error_log = self.dir.path().join("error.log");
        let log_offset = std::fs::metadata(&error_log).map_or(0, |m| m.len());
        let output = |name: &str| -> File {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .expect("opening Apache's stdout/stderr capture file")
        };
        let child = Command::new(apache_binary())
            .arg("-f")
            .arg(&self.conf)
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(output("stdout.log"))
            .stderr(output("stderr.log"))
            // prefork's shutdown SIGTERMs its process group: not ours.
            .process_group(0)
            .spawn()
            .expect("spawning apache2");
        self.watch = Some(DeathWatch::new(child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = std::fs::read(&error_log).unwrap_or_default();
            let fresh = log.get(log_offset as usize..).unwrap_or_default();
            if String::from_utf8_lossy(fresh).contains(READY_MARKER) {
                return Ok(());
            }
            if !self.is_running() || Instant::now() >= deadline {
                self.stop();
                return Err(self.error_log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The httpd.conf of one instance.
fn render_conf(
    dir: &Path,
    port: u16,
    docroot: &Path,
    options: &ApacheOptions,
    user: Option<&str>,
) -> String {
    let dir = dir.display();
    let modules = modules_dir();
    let mut conf = format!(
        "# Generated by khttpd-tests (tests/src/apache.rs) for one test.\n\
         ServerRoot \"{dir}\"\n\
         ServerName 127.0.0.1\n\
         Listen 127.0.0.1:{port}\n\
         PidFile \"{dir}/httpd.pid\"\n\
         DefaultRuntimeDir \"{dir}/run\"\n\
         ErrorLog \"{dir}/error.log\"\n\
         LogLevel warn\n\n"
    );
    // Builds differ in which of these are compiled in (Debian: unixd,
    // log_config); the guards load only what is missing, so the error log
    // has no "already loaded" warnings to wade through.
    for name in [
        "mpm_prefork",
        "unixd",
        "authz_core",
        "authz_host",
        "authz_user",
        "authn_core",
        "authn_file",
        "auth_basic",
        "access_compat",
        "dir",
        "mime",
        "log_config",
        "env",
        "setenvif",
        "headers",
        "rewrite",
        "include",
        "filter",
        "remoteip",
        "alias",
        "autoindex",
    ] {
        conf.push_str(&format!(
            "<IfModule !{name}_module>\n    LoadModule {name}_module \"{}/mod_{name}.so\"\n</IfModule>\n",
            modules.display()
        ));
    }
    conf.push_str(&format!(
        "LoadModule php_module \"{}\"\n\n",
        php_module(&modules).display()
    ));
    let types = Path::new("/etc/mime.types");
    if types.is_file() {
        conf.push_str("TypesConfig /etc/mime.types\n");
    } else {
        // mod_mime refuses to start without a types file; the shared conf
        // and the tests only need the types they set themselves.
        let empty = format!("{dir}/mime.types");
        std::fs::write(&empty, "").expect("writing an empty mime.types");
        conf.push_str(&format!("TypesConfig \"{empty}\"\n"));
    }
    if let Some(user) = user {
        // Apache refuses to run workers as root.
        conf.push_str(&format!("User {user}\nGroup {user}\n"));
    }
    conf.push_str(&format!(
        "\n# Small, but enough workers for tests that send concurrent requests.\n\
         StartServers 2\n\
         MinSpareServers 2\n\
         MaxSpareServers 6\n\
         ServerLimit 16\n\
         MaxRequestWorkers 16\n\
         KeepAlive On\n\
         KeepAliveTimeout 5\n\
         # A stuck request must not outlive a test run.\n\
         Timeout 30\n\
         GracefulShutdownTimeout 3\n\n\
         LogFormat \"{LOG_FORMAT}\" khttpd\n\
         CustomLog \"{dir}/access.log\" khttpd\n\n\
         # The production behaviour, shared with the docker image.\n\
         Include \"{}\"\n\n",
        crate::repo_root()
            .join("docker/apache/khttpd-backend.conf")
            .display()
    ));
    for proxy in &options.trusted_proxies {
        conf.push_str(&format!("RemoteIPInternalProxy {proxy}\n"));
    }
    if options.proxy_protocol {
        // Applies to every connection on this Listen address.
        conf.push_str("RemoteIPProxyProtocol On\n");
    }
    let docroot = docroot.display();
    conf.push_str(&format!(
        "\n# As in Debian's defaults: nothing outside the DocumentRoot is served, and\n\
         # directories without an index file are listed (Debian's `Options Indexes`).\n\
         <Directory />\n    Options FollowSymLinks\n    AllowOverride None\n    Require all denied\n</Directory>\n\
         DocumentRoot \"{docroot}\"\n\
         # SSI is enabled by the shared conf, for .shtml files only.\n\
         <Directory \"{docroot}\">\n    Options +FollowSymLinks +Indexes\n    AllowOverride All\n    Require all granted\n</Directory>\n\n"
    ));
    conf.push_str(&options.extra);
    conf.push('\n');
    conf
}

/// The Apache executable: `KHTTPD_APACHE_BIN`, else `apache2` (Debian) or
/// `httpd` from PATH or the usual sbin directories.
fn apache_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KHTTPD_APACHE_BIN") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/apache2/bin"].map(PathBuf::from))
        .collect();
    ["apache2", "httpd"]
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .expect("no apache2/httpd binary found (apt-get install apache2, or set KHTTPD_APACHE_BIN)")
}

/// Where the module `.so` files live: `KHTTPD_APACHE_MODULES`, else the
/// first known layout that has the prefork MPM.
fn modules_dir() -> PathBuf {
    if let Some(path) = std::env::var_os("KHTTPD_APACHE_MODULES") {
        return PathBuf::from(path);
    }
    [
        "/usr/lib/apache2/modules",
        "/usr/lib64/httpd/modules",
        "/usr/lib/httpd/modules",
        "/usr/local/apache2/modules",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|dir| dir.join("mod_mpm_prefork.so").is_file())
    .expect("no Apache modules directory with mod_mpm_prefork.so (set KHTTPD_APACHE_MODULES)")
}

/// The mod_php library (`libphp*.so`; the newest by name if several).
fn php_module(modules: &Path) -> PathBuf {
    let entries =
        std::fs::read_dir(modules).unwrap_or_else(|e| panic!("listing {}: {e}", modules.display()));
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libphp") && n.ends_with(".so"))
        })
        .collect();
    candidates.sort();
    candidates.pop().unwrap_or_else(|| {
        panic!(
            "no libphp*.so in {} (apt-get install libapache2-mod-php)",
            modules.display()
        )
    })
}

/// The user Apache's workers must switch to: only when running as root
/// (otherwise they stay the current user and User/Group are ignored).
fn worker_user() -> Option<&'static str> {
    // /proc/self is owned by the effective uid; no unsafe geteuid() needed.
    let euid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if passwd.lines().any(|line| line.starts_with("www-data:")) {
        Some("www-data")
    } else {
        Some("nobody")
    }
}

/// Lets other users (Apache's workers) read `path` and search its
/// directories. Temp dirs are created 0700, so ancestors inside the system
/// temp directory get o+x too; an unreachable ancestor elsewhere is not
/// touched (that would change the machine, not the test) but reported.
fn make_reachable(path: &Path) {
    let add_mode = |p: &Path, bits: u32| {
        let mode = std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode();
        if mode & bits != bits {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | bits))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
        }
    };
    add_mode(path, 0o755);
    let temp = std::env::temp_dir()
        .canonicalize()
        .unwrap_or_else(|_| std::env::temp_dir());
    for ancestor in path.ancestors().skip(1) {
        if ancestor.starts_with(&temp) && ancestor != temp {
            add_mode(ancestor, 0o001);
        } else {
            let mode = std::fs::metadata(ancestor).map_or(0o777, |m| m.permissions().mode());
            assert!(
                mode & 0o001 != 0,
                "Apache's workers (www-data) cannot reach {}: {} is mode {:o}; \
                 use a docroot they can reach (e.g. copy it into a temp dir)",
                path.display(),
                ancestor.display(),
                mode & 0o7777
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_includes_the_shared_file_and_options() {
        let options = ApacheOptions {
            proxy_protocol: true,
            trusted_proxies: vec!["10.0.0.0/8".into(), "127.0.0.1".into()],
            extra: "Header set X-Extra yes".into(),
        };
        let conf = render_conf(Path::new("/t"), 4242, Path::new("/srv/www"), &options, None);
        assert!(conf.contains("Listen 127.0.0.1:4242\n"));
        assert!(conf.contains("khttpd-backend.conf\""));
        assert!(
            conf.contains("RemoteIPInternalProxy 10.0.0.0/8\nRemoteIPInternalProxy 127.0.0.1\n")
        );
        assert!(conf.contains("RemoteIPProxyProtocol On\n"));
        assert!(conf.contains("DocumentRoot \"/srv/www\"\n"));
        assert!(conf.trim_end().ends_with("Header set X-Extra yes"));
        assert!(!conf.contains("User "));
    }
}
