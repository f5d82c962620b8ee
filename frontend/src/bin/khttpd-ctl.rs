//! `khttpd-ctl`: steers a running khttpd-front through its control socket, as writing to
//! /proc/sys/net/khttpd steered kHTTPd.
//!
//! `khttpd-ctl [--control PATH] [--json] COMMAND`: `status`, `stop`, `start`, `unload`, `reload`,
//! `reopen-logs`, `get [KEY]`, `set KEY VALUE`. Exit status 0 when the daemon did it, 1 when it said
//! no or could not be reached (one line on stderr says why), 64 for a usage error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use khttpd_front::control::client::{call_blocking, CallError};
use khttpd_front::control::protocol::{default_socket_path, Reply, Request};
use serde_json::{Map, Value};

/// Exit status for a usage error (EX_USAGE from sysexits.h).
const EX_USAGE: u8 = 64;

/// Controls a running khttpd-front through its control socket.
#[derive(Debug, Parser)]
#[command(name = "khttpd-ctl", version, about, long_about = None)]
struct Cli {
    /// Control socket of the khttpd-front to steer [default: /run/khttpd/ctl.sock when usable,
    /// else $XDG_RUNTIME_DIR/khttpd.sock, else /tmp/khttpd-$UID/ctl.sock].
    #[arg(long, env = "KHTTPD_CONTROL", value_name = "PATH", global = true)]
    control: Option<PathBuf>,

    /// Print the daemon's data as pretty JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,

    /// Seconds to wait for the answer; `stop` and `unload` wait for in-flight requests to drain.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs, global = true)]
    timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// State, uptime, per-daemon stage gauges, counters, cache and backends.
    Status,
    /// Stop accepting and drain in-flight requests; the process stays up (kHTTPd's stop).
    Stop,
    /// Listen and serve again (kHTTPd's start).
    Start,
    /// Stop, then end the process (kHTTPd's unload).
    Unload,
    /// Re-read the configuration file; an invalid one is refused and the old one keeps serving.
    Reload,
    /// Reopen the access log, after logrotate moved it.
    ReopenLogs,
    /// Exit 0 while the main daemons listen, 1 while stopped or draining (or no daemon answers):
    /// for health checks (Docker, systemd, scripts).
    Health,
    /// Drop every verification verdict (after `apachectl graceful`): each static URL is asked of
    /// the backend again before the front serves it.
    Flush,
    /// Show one knob (documentroot, dynamic, maxconnect, logging, …), or all of them.
    Get {
        /// The knob; all of them when left out.
        key: Option<String>,
    },
    /// Change one knob for new requests.
    Set {
        /// The knob, such as maxconnect.
        key: String,
        /// Its new value, such as 500 (or `-` for `set logging -`).
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("expected a number of seconds between 0 and 86400, got {s:?}"))
}

impl Command {
    fn request(self) -> Request {
        match self {
            Command::Status | Command::Health => Request::Status,
            Command::Stop => Request::Stop,
            Command::Start => Request::Start,
            Command::Unload => Request::Unload,
            Command::Reload => Request::Reload,
            Command::ReopenLogs => Request::ReopenLogs,
            Command::Flush => Request::Flush,
            Command::Get { key } => Request::Get { key },
            Command::Set { key, value } => Request::Set { key, value },
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let path = cli.control.unwrap_or_else(default_socket_path);
    let health = matches!(cli.command, Command::Health);
    let req = cli.command.request();
    let result = call_blocking(&path, &req, cli.timeout);
    let outcome = if health {
        health_of(result)
    } else {
        report(&req, result, cli.json)
    };
    // A closed pipe (`khttpd-ctl status | head -1`) is not worth a panic.
    let _ = std::io::stdout()
        .lock()
        .write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr()
        .lock()
        .write_all(outcome.stderr.as_bytes());
    ExitCode::from(outcome.code)
}

/// What to print and the exit status.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    code: u8,
    stdout: String,
    stderr: String,
}

fn report(req: &Request, result: Result<Reply, CallError>, json: bool) -> Outcome {
    let fail = |line: String| Outcome {
        code: 1,
        stdout: String::new(),
        stderr: format!("khttpd-ctl: {line}\n"),
    };
    let reply = match result {
        Ok(r) => r,
        Err(CallError::NoDaemon { path }) => {
            return fail(format!(
                "no khttpd-front is listening on {} (is it running? see --control)",
                path.display()
            ))
        }
        Err(CallError::PermissionDenied { path }) => {
            return fail(format!(
                "permission denied on {} (run as the user that started khttpd-front, or root)",
                path.display()
            ))
        }
        Err(e @ CallError::Timeout { .. }) => {
            return fail(format!(
                "{req}: {e} (it may still be draining; see --timeout)"
            ))
        }
        Err(e) => return fail(format!("{req}: {e}")),
    };
    if !reply.ok {
        let why = one_line(&reply.message);
        return fail(if why.is_empty() {
            format!("{req}: refused")
        } else {
            format!("{req}: {why}")
        });
    }
    let mut stdout = String::new();
    match (&reply.data, json) {
        (Some(data), true) => {
            stdout = serde_json::to_string_pretty(data).unwrap_or_else(|_| data.to_string());
            stdout.push('\n');
        }
        (data, _) => {
            if !reply.message.is_empty() {
                stdout.push_str(&reply.message);
                stdout.push('\n');
            }
            // `get` already says `key = value` in its message, as sysctl does; the data is for --json.
            if let Some(data) = data
                .as_ref()
                .filter(|_| !matches!(req, Request::Get { .. }))
            {
                if matches!(req, Request::Status) && data.get("daemons").is_some() {
                    stdout.push_str(&render_status(data));
                } else {
                    stdout.push_str(&render(data));
                }
            }
        }
    }
    Outcome {
        code: 0,
        stdout,
        stderr: String::new(),
    }
}

/// `health`: the state alone, as an exit status and one word.
fn health_of(result: Result<Reply, CallError>) -> Outcome {
    let state = match &result {
        Ok(r) => r
            .data
            .as_ref()
            .and_then(|d| d["state"].as_str())
            .unwrap_or("unknown")
            .to_owned(),
        Err(e) => format!("unreachable ({e})"),
    };
    let running = state == "running";
    Outcome {
        code: if running { 0 } else { 1 },
        stdout: format!("{state}\n"),
        stderr: String::new(),
    }
}

/// Keeps a daemon's message on the one stderr line that scripts and people expect.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Renders any JSON value for people: an object's scalars as aligned `key: value` lines, nested
/// objects as indented sections, arrays of objects (such as the per-daemon rows) as aligned tables.
/// `status` for people, laid out as nginx's stub_status and Apache's server-status are read: who
/// and where first, then what it is doing now (rate and latency over the last 10 s), then the
/// per-daemon table under kHTTPd's stage names, then the rest as `--json` has it.
fn render_status(v: &Value) -> String {
    let mut out = String::new();
    let num = |x: &Value| x.as_u64().unwrap_or(0);
    let text = |x: &Value| {
        x.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| x.to_string())
    };
    out.push_str(&format!(
        "state:       {} (khttpd-front {}, pid {}, up {})\n",
        text(&v["state"]),
        text(&v["version"]),
        num(&v["pid"]),
        text(&v["uptime"])
    ));
    let mut listening = text(&v["listen"]);
    if let Some(tls) = v["tls_listen"].as_str() {
        listening.push_str(&format!(", TLS {tls}"));
    }
    out.push_str(&format!("listening:   {listening}\n"));
    out.push_str(&format!(
        "connections: {} open (maxconnect {})\n",
        num(&v["connections"]),
        num(&v["maxconnect"])
    ));
    let r = &v["last_10s"];
    let ms = |k: &str| {
        r[k].as_f64()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2} ms"))
    };
    if r.is_object() {
        out.push_str(&format!(
            "last {} s:   {} req/s; front p50 {} p99 {}; backend p50 {} p99 {} (first byte p50 {} p99 {})\n",
            r["seconds"],
            r["requests_per_sec"],
            ms("front_p50_ms"),
            ms("front_p99_ms"),
            ms("backend_p50_ms"),
            ms("backend_p99_ms"),
            ms("upstream_p50_ms"),
            ms("upstream_p99_ms"),
        ));
    }
    let t = &v["totals"];
    let (st, be, er) = (num(&t["static"]), num(&t["backend"]), num(&t["errors"]));
    let all = (st + be + er).max(1) as f64;
    out.push_str(&format!(
        "requests:    {} since start: {:.1}% served by the front ({st}), {:.1}% by the backend ({be}), {:.1}% front errors ({er})\n",
        st + be + er,
        100.0 * st as f64 / all,
        100.0 * be as f64 / all,
        100.0 * er as f64 / all,
    ));
    let c = &v["cache"];
    if c.is_object() {
        let lookups = (num(&c["hits"]) + num(&c["misses"])).max(1) as f64;
        out.push_str(&format!(
            "cache:       {:.1} of {:.1} MiB, {} entries, {:.1}% hits (each answer may look up several representations, so hits can outnumber requests)\n",
            num(&c["bytes"]) as f64 / 1_048_576.0,
            num(&c["capacity"]) as f64 / 1_048_576.0,
            num(&c["entries"]),
            100.0 * num(&c["hits"]) as f64 / lookups,
        ));
    }
    out.push_str("\nmain daemons (kHTTPd's stages now, requests since start):\n");
    // Fixed columns, in kHTTPd's order (a JSON object would sort them by name).
    let columns = [
        ("daemon", "daemon"),
        ("WaitForHeaders", "waiting"),
        ("DataSending", "sending"),
        ("Userspace", "userspace"),
        ("Logging", "logging"),
        ("static", "static"),
        ("backend", "backend"),
        ("errors", "errors"),
        ("offload", "offload"),
    ];
    let mut cells: Vec<Vec<String>> = vec![columns.iter().map(|(h, _)| (*h).to_owned()).collect()];
    for d in v["daemons"].as_array().into_iter().flatten() {
        cells.push(
            columns
                .iter()
                .map(|(_, k)| inline(&d[*k]).unwrap_or_default())
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        out.push_str(&format!("  {}\n", line.join("  ")));
    }
    let shown = [
        "state",
        "version",
        "pid",
        "uptime",
        "uptime_secs",
        "listen",
        "tls_listen",
        "connections",
        "maxconnect",
        "last_10s",
        "latency",
        "daemons",
        "totals",
    ];
    let rest: Map<String, Value> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !shown.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.push('\n');
    let mut more = String::new();
    render_object(&rest, 0, &mut more);
    out.push_str(&more);
    out
}

fn render(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) => render_object(m, 0, &mut out),
        Value::Array(rows) if inline(v).is_none() => render_table(rows, 0, &mut out),
        _ => {
            out.push_str(&inline(v).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

fn render_object(m: &Map<String, Value>, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let lines: Vec<(&String, String)> = m
        .iter()
        .filter_map(|(k, v)| inline(v).map(|s| (k, s)))
        .collect();
    let width = lines
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, s) in &lines {
        let gap = width - k.chars().count();
        out.push_str(&format!("{pad}{k}:{:gap$} {s}\n", ""));
    }
    for (k, v) in m.iter().filter(|(_, v)| inline(v).is_none()) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("{pad}{k}:\n"));
        match v {
            Value::Object(o) => render_object(o, indent + 2, out),
            Value::Array(rows) => render_table(rows, indent + 2, out),
            _ => {}
        }
    }
}

/// A value that fits on one line: scalars, arrays of scalars, empty containers.
fn inline(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("-".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(printable(s)),
        Value::Array(a) if a.is_empty() => Some("(none)".into()),
        Value::Object(o) if o.is_empty() => Some("(none)".into()),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::Array(_) | Value::Object(_) => None,
                _ => inline(x),
            })
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(", ")),
        Value::Object(_) => None,
    }
}

/// A string as shown: control characters escaped so that a value cannot break the layout.
fn printable(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_debug().to_string()
    } else {
        s.to_owned()
    }
}

/// The value of one table cell.
fn cell<'a>(row: &'a Value, col: &str) -> Option<&'a Value> {
    match row {
        Value::Object(o) => o.get(col),
        other if col == "value" => Some(other),
        _ => None,
    }
}

fn render_table(rows: &[Value], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    // Columns in the order they first appear; a row that is not an object goes in a `value` column.
    let mut columns: Vec<&str> = Vec::new();
    for row in rows {
        match row {
            Value::Object(o) => {
                for k in o.keys() {
                    if !columns.contains(&k.as_str()) {
                        columns.push(k);
                    }
                }
            }
            _ if !columns.contains(&"value") => columns.push("value"),
            _ => {}
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| match cell(row, c) {
                    None => "-".to_owned(),
                    Some(v) => inline(v).unwrap_or_else(|| v.to_string()),
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Numbers line up on their last digit, as in `ps` or `df`.
    let numeric: Vec<bool> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .filter_map(|r| cell(r, c))
                .all(|v| v.is_number() || v.is_null())
        })
        .collect();
    let mut line = |fields: &[&str]| {
        let mut s = pad.clone();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let w = widths[i];
            if numeric[i] {
                s.push_str(&format!("{f:>w$}"));
            } else {
                s.push_str(&format!("{f:<w$}"));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&columns);
    for r in &cells {
        let fields: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_commands() {
        let cli = Cli::try_parse_from(["khttpd-ctl", "status", "--json"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.command.request(), Request::Status);
        let cli =
            Cli::try_parse_from(["khttpd-ctl", "--control", "/x.sock", "set", "logging", "-"])
                .unwrap();
        assert_eq!(cli.control, Some(PathBuf::from("/x.sock")));
        assert_eq!(
            cli.command.request(),
            Request::Set {
                key: "logging".into(),
                value: "-".into()
            }
        );
        let cli = Cli::try_parse_from(["khttpd-ctl", "reopen-logs"]).unwrap();
        assert_eq!(cli.command.request(), Request::ReopenLogs);
        let cli = Cli::try_parse_from(["khttpd-ctl", "get"]).unwrap();
        assert_eq!(cli.command.request(), Request::Get { key: None });
        assert_eq!(cli.timeout, Duration::from_secs(60));
        for bad in [
            &["khttpd-ctl"][..],
            &["khttpd-ctl", "explode"],
            &["khttpd-ctl", "set", "maxconnect"],
            &["khttpd-ctl", "--timeout", "0", "status"],
        ] {
            let e = Cli::try_parse_from(bad).unwrap_err();
            assert!(e.use_stderr(), "{bad:?} should be a usage error");
        }
    }

    #[test]
    fn status_renders_as_a_table() {
        // Keys are in sorted order so that the test holds with or without serde_json's
        // preserve_order.
        let status = json!({
            "backends": [
                {"address": "127.0.0.1:8080", "errors": 0, "healthy": true},
            ],
            "cache": {"entries": 12, "hit_ratio": 0.93},
            "daemons": [
                {"id": 0, "logging": 0, "requests": 1500, "sending": 3, "userspace": 1, "waiting": 12},
                {"id": 1, "logging": 2, "requests": 7, "sending": 0, "userspace": 0, "waiting": 4},
            ],
            "state": "running",
            "uptime": "2h 3m",
        });
        let want = "\
state:  running
uptime: 2h 3m

backends:
  address         errors  healthy
  127.0.0.1:8080       0  true

cache:
  entries:   12
  hit_ratio: 0.93

daemons:
  id  logging  requests  sending  userspace  waiting
   0        0      1500        3          1       12
   1        2         7        0          0        4
";
        assert_eq!(render(&status), want);
    }

    #[test]
    fn odd_shapes_still_render() {
        assert_eq!(render(&json!(1000)), "1000\n");
        assert_eq!(render(&json!("a\nb")), "a\\nb\n");
        assert_eq!(
            render(&json!({"dynamic": ["php", "shtml"], "empty": [], "none": null})),
            "dynamic: php, shtml\nempty:   (none)\nnone:    -\n"
        );
        assert_eq!(
            render(&json!([{"a": 1}, {"b": "x"}, 5])),
            "a  b  value\n1  -      -\n-  x      -\n-  -      5\n"
        );
        assert_eq!(
            render(&json!({"rows": [{"nested": {"k": 1}}]})),
            "rows:\n  nested\n  {\"k\":1}\n"
        );
    }

    #[test]
    fn outcomes_and_exit_codes() {
        let set = Request::Set {
            key: "maxconnect".into(),
            value: "x".into(),
        };
        let o = report(
            &set,
            Ok(Reply::error("expected a whole number, got \"x\"")),
            false,
        );
        assert_eq!(o.code, 1);
        assert_eq!(
            o.stderr,
            "khttpd-ctl: set maxconnect: expected a whole number, got \"x\"\n"
        );
        assert!(o.stdout.is_empty());

        let path = PathBuf::from("/run/khttpd/ctl.sock");
        let o = report(
            &Request::Status,
            Err(CallError::NoDaemon { path: path.clone() }),
            false,
        );
        assert_eq!(
            (o.code, o.stderr.as_str()),
            (
                1,
                "khttpd-ctl: no khttpd-front is listening on /run/khttpd/ctl.sock (is it running? see --control)\n"
            )
        );
        let o = report(
            &Request::Stop,
            Err(CallError::PermissionDenied { path }),
            false,
        );
        assert_eq!(
            o.stderr,
            "khttpd-ctl: permission denied on /run/khttpd/ctl.sock (run as the user that started khttpd-front, or root)\n"
        );

        let o = report(&Request::Stop, Ok(Reply::ok("stopped")), false);
        assert_eq!(
            (o.code, o.stdout.as_str(), o.stderr.as_str()),
            (0, "stopped\n", "")
        );

        let status = Reply::ok("running").with_data(json!({"state": "running"}));
        let o = report(&Request::Status, Ok(status.clone()), false);
        assert_eq!(o.stdout, "running\nstate: running\n");
        let o = report(&Request::Status, Ok(status), true);
        assert_eq!(o.stdout, "{\n  \"state\": \"running\"\n}\n");
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["state"], "running");
    }
}
