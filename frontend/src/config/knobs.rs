//! Where the configuration comes from, and kHTTPd's /proc/sys/net/khttpd knobs at run time.
//!
//! Precedence is flags > environment > config file > defaults. Every source is turned into command-line
//! words and parsed by the same clap definition, then validated by the same `Config::try_from`, so a
//! value set by `khttpd-ctl set`, found in the file or typed as a flag is checked exactly alike, and a
//! bad one changes nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches};

use crate::config::args::Args;
use crate::config::{Config, ConfigError};

/// The knobs `khttpd-ctl get/set` knows: kHTTPd's name, our flag's id, and whether it applies at run
/// time (the rest need a restart).
pub const KNOBS: &[(&str, &str, bool)] = &[
    ("documentroot", "root", true),
    ("dynamic", "dynamic", true),
    ("sloppymime", "sloppy_mime", true),
    ("maxconnect", "maxconnect", true),
    ("perm_required", "perm_required", true),
    ("perm_forbid", "perm_forbid", true),
    ("logging", "access_log", true),
    ("log_format", "log_format", true),
    ("backend", "backend", true),
    ("clientport", "backend", true),
    ("index", "index", true),
    ("listing", "listing", true),
    ("listing_max", "listing_max", true),
    ("header_timeout", "header_timeout", true),
    ("keepalive_timeout", "keepalive_timeout", true),
    ("body_timeout", "body_timeout", true),
    ("send_timeout", "send_timeout", true),
    ("cache_control", "cache_control", true),
    ("max_ranges", "max_ranges", true),
    ("grace", "grace", true),
    ("backend_timeout", "backend_timeout", true),
    ("backend_max_conns", "backend_max_conns", true),
    ("backend_queue_timeout", "backend_queue_timeout", true),
    ("backend_idle_timeout", "backend_idle_timeout", true),
    ("backend_cooldown", "backend_cooldown", true),
    ("proxy_protocol", "proxy_protocol", true),
    ("trusted_proxy", "trusted_proxy", true),
    ("verify_ttl", "verify_ttl", true),
    ("route_header", "route_header", true),
    ("sendfile", "sendfile", true),
    ("serverport", "port", false),
    ("port", "port", false),
    ("bind", "bind", false),
    ("threads", "threads", false),
    ("backlog", "backlog", false),
    ("defer_accept", "defer_accept", false),
    ("max_head_size", "max_head_size", false),
    ("verify_max", "verify_max", false),
    ("verify_probes", "verify_probes", false),
    ("cache_size", "cache_size", false),
    ("cache_max_file", "cache_max_file", false),
    ("compress_min", "compress_min", false),
    ("compress_wait", "compress_wait", false),
    ("compress_threads", "compress_threads", false),
    ("compress_queue", "compress_queue", false),
    ("cache_revalidate", "cache_revalidate", false),
    ("chunk_size", "chunk_size", false),
    ("control", "control", false),
    ("user", "user", false),
    ("config", "config", false),
];

/// Finds a knob by kHTTPd name or flag name (`-` and `_` alike).
pub fn knob(key: &str) -> Option<(&'static str, &'static str, bool)> {
    let k = key.trim().to_ascii_lowercase().replace('-', "_");
    KNOBS
        .iter()
        .copied()
        .find(|(name, id, _)| *name == k || *id == k)
}

/// The sources of the configuration, kept so it can be rebuilt (reload) or changed (set).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The command line as given, program name first.
    argv: Vec<OsString>,
    /// Flag words added by `khttpd-ctl set`, applied after everything else.
    overrides: Vec<OsString>,
}

impl Settings {
    /// From a command line (program name first).
    pub fn new(argv: Vec<OsString>) -> Settings {
        Settings {
            argv,
            overrides: Vec::new(),
        }
    }

    /// Reads the config file (if any) and builds the validated configuration.
    pub fn load(&self) -> Result<(Args, Config), LoadError> {
        let cmd = Args::command().args_override_self(true);
        let given = cmd
            .clone()
            .try_get_matches_from(&self.argv)
            .map_err(LoadError::Usage)?;
        let from_cli = Args::from_arg_matches(&given).map_err(LoadError::Usage)?;
        let mut words: Vec<OsString> = vec![self
            .argv
            .first()
            .cloned()
            .unwrap_or_else(|| "khttpd-front".into())];
        let mut earlier = Vec::new();
        if let Some(file) = &from_cli.config {
            earlier.extend(file_words(file, &given)?);
        }
        earlier.extend(self.argv.iter().skip(1).cloned());
        // A repeatable flag set at run time replaces its earlier values instead of adding to them.
        let replaced: Vec<&OsString> = self
            .overrides
            .iter()
            .filter(|w| w.to_string_lossy().starts_with("--"))
            .collect();
        words.extend(without_flags(&earlier, &replaced));
        words.extend(self.overrides.iter().cloned());
        let m = cmd.try_get_matches_from(&words).map_err(LoadError::Usage)?;
        let args = Args::from_arg_matches(&m).map_err(LoadError::Usage)?;
        let config = Config::try_from(args.clone()).map_err(LoadError::Invalid)?;
        Ok((args, config))
    }

    /// These settings with `key` set to `value`, validated: the result loads, or the error says why.
    pub fn with_set(&self, key: &str, value: &str) -> Result<(Settings, Args, Config), String> {
        let (name, id, runtime) = knob(key)
            .ok_or_else(|| format!("unknown knob {key:?}; `khttpd-ctl get` lists them"))?;
        if !runtime {
            return Err(format!("{name} cannot change while running; change it in the config file or on the command line and restart"));
        }
        let cmd = Args::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == id)
            .ok_or_else(|| format!("{name}: no such flag"))?;
        let long = format!("--{}", arg.get_long().unwrap_or(id));
        let mut next = self.clone();
        // Repeatable flags are replaced as a whole: `set backend a,b` means exactly a and b.
        if matches!(arg.get_action(), ArgAction::Append) {
            let values: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() {
                // `set backend ''` empties the list: an empty value still replaces the earlier
                // ones (and the environment's), and validation drops it.
                next.overrides.push(format!("{long}=").into());
            }
            for v in values {
                next.overrides.push(long.clone().into());
                next.overrides.push(v.into());
            }
        } else {
            next.overrides.push(format!("{long}={value}").into());
        }
        match next.load() {
            Ok((args, config)) => Ok((next, args, config)),
            Err(LoadError::Usage(e)) => Err(first_line(&e.to_string())),
            Err(LoadError::Invalid(e)) => Err(e.0),
            Err(LoadError::File(e)) => Err(e),
        }
    }

    /// The same sources without the run-time overrides (what `reload` starts from).
    pub fn without_overrides(&self) -> Settings {
        Settings::new(self.argv.clone())
    }
}

/// Values of the knobs in `args` as JSON: all of them, or the one named.
pub fn get(args: &Args, key: Option<&str>) -> Result<serde_json::Value, String> {
    let all = serde_json::to_value(args).map_err(|e| e.to_string())?;
    let value_of = |id: &str| match id {
        // Mode bits read and written in octal, as chmod and kHTTPd's sysctl spell them.
        "perm_required" => serde_json::Value::String(format!("{:o}", args.perm_required)),
        "perm_forbid" => serde_json::Value::String(format!("{:o}", args.perm_forbid)),
        _ => all.get(id).cloned().unwrap_or(serde_json::Value::Null),
    };
    match key {
        Some(k) => {
            let (name, id, _) = knob(k).ok_or_else(|| format!("unknown knob {k:?}"))?;
            Ok(serde_json::json!({ name: value_of(id) }))
        }
        None => {
            let mut map = serde_json::Map::new();
            for (name, id, _) in KNOBS {
                if *name != "clientport" && *name != "serverport" {
                    map.insert((*name).to_owned(), value_of(id));
                }
            }
            Ok(serde_json::Value::Object(map))
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad flags or values (clap's message; `--help` and `--version` come this way too).
    #[error("{0}")]
    Usage(clap::Error),
    /// Values that parse but do not hold together (missing root, bad backend, …).
    #[error("{0}")]
    Invalid(ConfigError),
    /// The config file cannot be read or has unknown keys.
    #[error("{0}")]
    File(String),
}

/// `words` without the occurrences (`--flag v` or `--flag=v`) of the given flags.
fn without_flags(words: &[OsString], flags: &[&OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(words.len());
    let mut skip_next = false;
    for w in words {
        if skip_next {
            skip_next = false;
            continue;
        }
        let text = w.to_string_lossy();
        let hit = flags.iter().any(|f| {
            let f = f.to_string_lossy();
            let name = f.split('=').next().unwrap_or("");
            text == name || text.starts_with(&format!("{name}="))
        });
        if hit {
            skip_next = !text.contains('=');
            continue;
        }
        out.push(w.clone());
    }
    out
}

/// A TOML syntax error as one line that keeps what is wrong: `line 3, column 9: expected …`.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().lines().next().unwrap_or("invalid TOML").trim();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {what}")
        }
        None => what.to_owned(),
    }
}

/// The known key nearest to an unknown one, when it is near enough to be a typo.
fn nearest_key(key: &str) -> Option<String> {
    let key = key.replace('_', "-");
    Args::command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "config" && *l != "help" && *l != "version")
        .map(|l| (strsim::levenshtein(&key, l), l))
        .filter(|(d, l)| *d <= 2.max(l.len() / 4))
        .min()
        .map(|(_, l)| l.to_owned())
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid value")
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
}

/// The config file as flag words, leaving out every key the command line or the environment set.
fn file_words(path: &Path, given: &clap::ArgMatches) -> Result<Vec<OsString>, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::File(format!("config file {}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        LoadError::File(format!(
            "config file {}: {}",
            path.display(),
            toml_error(&text, &e)
        ))
    })?;
    let cmd = Args::command();
    let mut words = Vec::new();
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        if let Some(first) = seen.insert(id.clone(), key) {
            return Err(LoadError::File(format!(
                "config file {}: {first:?} and {key:?} are the same key; keep one",
                path.display()
            )));
        }
        if id == "headers" {
            if !matches!(
                given.value_source("add_header"),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                words.extend(header_tables(value).map_err(|e| {
                    LoadError::File(format!("config file {}: {e}", path.display()))
                })?);
            }
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == id.as_str() && a.get_long().is_some())
            .ok_or_else(|| {
                let hint = nearest_key(key)
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                LoadError::File(format!(
                    "config file {}: unknown key {key:?}{hint}",
                    path.display()
                ))
            })?;
        if id == "check_config" {
            return Err(LoadError::File(format!(
                "config file {}: `check-config` is a command-line switch, not a setting",
                path.display()
            )));
        }
        if id == "config" {
            return Err(LoadError::File(format!(
                "config file {}: `config` cannot name another file",
                path.display()
            )));
        }
        if matches!(
            given.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = format!("--{}", arg.get_long().unwrap_or(&id));
        let bad = || {
            LoadError::File(format!(
                "config file {}: {key}: unsupported value {value}",
                path.display()
            ))
        };
        let scalar = |v: &toml::Value| -> Option<String> {
            match v {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Integer(i) => Some(i.to_string()),
                toml::Value::Float(f) => Some(f.to_string()),
                toml::Value::Boolean(b) => Some(if *b { "on" } else { "off" }.to_owned()),
                _ => None,
            }
        };
        match (value, arg.get_action()) {
            (toml::Value::Boolean(b), ArgAction::SetTrue) => {
                if *b {
                    words.push(long.into());
                }
            }
            (toml::Value::Array(items), ArgAction::Append) => {
                for item in items {
                    words.push(long.clone().into());
                    words.push(scalar(item).ok_or_else(bad)?.into());
                }
            }
            (toml::Value::Array(items), _) => {
                let joined: Option<Vec<String>> = items.iter().map(scalar).collect();
                words.push(format!("{long}={}", joined.ok_or_else(bad)?.join(",")).into());
            }
            (v, _) => words.push(format!("{long}={}", scalar(v).ok_or_else(bad)?).into()),
        }
    }
    Ok(words)
}

/// `[[headers]]` tables as `--add-header` words: `path` (a glob such as `/assets/*`, an extension
/// pattern such as `*.html`, or a list of them) and `set` (a table of field names and values, or a
/// list of `Name: value` lines), nginx's `add_header` by location:
///
/// ```toml
/// [[headers]]
/// path = "/assets/*"
/// set = { Cache-Control = "public, max-age=31536000, immutable" }
/// ```
fn header_tables(value: &toml::Value) -> Result<Vec<OsString>, String> {
    let tables = value
        .as_array()
        .filter(|a| a.iter().all(toml::Value::is_table))
        .ok_or("headers: expected [[headers]] tables with path and set")?;
    let mut words = Vec::new();
    for (i, t) in tables.iter().filter_map(toml::Value::as_table).enumerate() {
        let at = |what: &str| format!("[[headers]] number {}: {what}", i + 1);
        if let Some(k) = t.keys().find(|k| *k != "path" && *k != "set") {
            return Err(at(&format!("unknown key {k:?} (path and set are known)")));
        }
        let paths: Vec<&str> = match t.get("path") {
            Some(toml::Value::String(p)) => vec![p.as_str()],
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().ok_or_else(|| at("path must be strings")))
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(at(
                    "path (a glob such as \"/assets/*\" or \"*.html\") is missing",
                ))
            }
        };
        let lines: Vec<String> = match t.get("set") {
            Some(toml::Value::Table(fields)) => fields
                .iter()
                .map(|(name, v)| {
                    v.as_str()
                        .map(|v| format!("{name}: {v}"))
                        .ok_or_else(|| at(&format!("set: the value of {name} must be a string")))
                })
                .collect::<Result<_, _>>()?,
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| at("set must be \"Name: value\" strings"))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(at("set (fields and values) is missing")),
        };
        for path in &paths {
            for line in &lines {
                words.push("--add-header".into());
                words.push(format!("{path}={line}").into());
            }
        }
    }
    Ok(words)
}

/// The config file named by the command line, for messages.
pub fn config_path(args: &Args) -> Option<PathBuf> {
    args.config.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, extra: &[&str]) -> Settings {
        let mut v: Vec<OsString> = vec![
            "khttpd-front".into(),
            "--root".into(),
            dir.as_os_str().into(),
        ];
        v.extend(extra.iter().map(OsString::from));
        Settings::new(v)
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("khttpd.toml");
        std::fs::write(
            &file,
            "maxconnect = 77\nsloppy-mime = true\ndynamic = [\"php\", \"/cgi-bin/\"]\nbackend = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\nport = 9999\nheader_timeout = 2.5\n",
        )
        .unwrap();
        let s = settings(
            dir.path(),
            &["--config", file.to_str().unwrap(), "--port", "1234"],
        );
        let (args, cfg) = s.load().unwrap();
        assert_eq!(cfg.maxconnect, 77);
        assert!(cfg.sloppy_mime);
        assert_eq!(cfg.dynamic.prefixes, vec!["/cgi-bin/"]);
        assert_eq!(cfg.backends.len(), 2);
        assert_eq!(args.port, 1234, "the flag wins over the file");
        assert_eq!(cfg.header_timeout, std::time::Duration::from_millis(2500));
    }

    #[test]
    fn header_tables_become_rules() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("khttpd.toml");
        std::fs::write(
            &file,
            r#"maxconnect = 77

[[headers]]
path = "/assets/*"
set = { Cache-Control = "public, max-age=31536000, immutable" }

[[headers]]
path = ["*.html", "*.htm"]
set = ["X-Frame-Options: SAMEORIGIN", "X-Content-Type-Options: nosniff"]
"#,
        )
        .unwrap();
        let (_, cfg) = settings(dir.path(), &["--config", file.to_str().unwrap()])
            .load()
            .unwrap();
        let fields = |path: &str| -> Vec<String> {
            crate::sending::header_rules::effective(&cfg.header_rules, path)
                .iter()
                .map(|r| format!("{}: {}", r.name(), r.value().to_str().unwrap()))
                .collect()
        };
        assert_eq!(
            fields("/assets/app.js"),
            ["cache-control: public, max-age=31536000, immutable"]
        );
        assert_eq!(
            fields("/a/b.htm"),
            [
                "x-frame-options: SAMEORIGIN",
                "x-content-type-options: nosniff"
            ]
        );
        assert!(fields("/a.txt").is_empty());
        for (text, needle) in [
            ("[[headers]]\nset = [\"X: y\"]\n", "path"),
            ("[[headers]]\npath = \"/x\"\n", "set"),
            (
                "[[headers]]\npath = \"/x\"\nset = [\"X: y\"]\nwhere = 1\n",
                "unknown key",
            ),
            (
                "[[headers]]\npath = \"/x\"\nset = { Content-Length = \"1\" }\n",
                "add-header",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = settings(dir.path(), &["--config", file.to_str().unwrap()])
                .load()
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        for (text, needle) in [
            ("no_such_knob = 1\n", "unknown key"),
            ("maxconnect = \"lots\"\n", "lots"),
            ("port = [\n", "config file"),
            ("perm_forbid = \"99\"\n", "octal"),
            ("backend = [\"nohostport\"]\n", "HOST:PORT"),
            // Issue 17: what is wrong survives, with where; typos get a suggestion; one key
            // spelled twice is refused.
            (
                "port = 80 extra\n",
                "line 1, column 8: string values must be quoted",
            ),
            ("max_heads_size = 9000\n", "did you mean \"max-head-size\"?"),
            (
                "max_head_size = 9000\nmax-head-size = 9000\n",
                "are the same key",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = settings(dir.path(), &["--config", file.to_str().unwrap()])
                .load()
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn set_validates_and_applies() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), &[]);
        let (s2, _, cfg) = s.with_set("maxconnect", "12").unwrap();
        assert_eq!(cfg.maxconnect, 12);
        let (_, _, cfg) = s2.with_set("sloppymime", "1").unwrap();
        assert!(cfg.sloppy_mime);
        assert!(s.with_set("maxconnect", "x").unwrap_err().contains("x"));
        assert!(s
            .with_set("documentroot", "/nonexistent/k")
            .unwrap_err()
            .contains("document root"));
        assert!(s.with_set("threads", "4").unwrap_err().contains("restart"));
        assert!(s
            .with_set("nonsense", "1")
            .unwrap_err()
            .contains("unknown knob"));
        let with_one = settings(dir.path(), &["--backend", "127.0.0.1:9"]);
        let (_, _, cfg) = with_one
            .with_set("backend", "127.0.0.1:1,127.0.0.1:2")
            .unwrap();
        assert_eq!(cfg.backends.len(), 2, "set replaces the list");
        // Issue 15: an empty value empties the list (it used to change nothing).
        let (_, _, cfg) = with_one.with_set("backend", "").unwrap();
        assert!(cfg.backends.is_empty());
        let proxied = settings(dir.path(), &["--trusted-proxy", "10.0.0.0/8"]);
        let (_, _, cfg) = proxied.with_set("trusted_proxy", " ").unwrap();
        assert!(cfg.bridge.trusted_proxies.is_empty());
        let (_, _, cfg) = s.with_set("perm_forbid", "0111").unwrap();
        assert_eq!(cfg.perm_forbid, 0o111);
    }

    #[test]
    fn get_reports_knobs() {
        let dir = tempfile::tempdir().unwrap();
        let (args, _) = settings(dir.path(), &["--maxconnect", "5"]).load().unwrap();
        assert_eq!(get(&args, Some("maxconnect")).unwrap()["maxconnect"], 5);
        let all = get(&args, None).unwrap();
        assert!(all.get("documentroot").is_some() && all.get("perm_forbid").is_some());
        assert!(get(&args, Some("bogus")).is_err());
        assert_eq!(
            get(&args, Some("perm_forbid")).unwrap()["perm_forbid"],
            "7111",
            "octal, as set takes it"
        );
    }
}
