//! The access log's line formats and targets: Apache's combined line (read by goaccess, awstats
//! and fail2ban), one JSON object per line, or an nginx-like template; standard output or a file.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::logging::log_line::{iso_time, nonempty, push_clf_time, push_escaped, LogRecord};

/// The line format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    /// Apache's combined format, read by goaccess, awstats and fail2ban.
    Combined,
    /// One JSON object per line.
    Json,
    /// A template with nginx's variables (`$remote_addr "$request" $status …`).
    Template(Arc<crate::logging::log_template::Template>),
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "combined" => Ok(LogFormat::Combined),
            "json" => Ok(LogFormat::Json),
            _ if s.contains('$') => crate::logging::log_template::Template::parse(s)
                .map(|t| LogFormat::Template(Arc::new(t))),
            _ => Err(format!(
                "expected combined, json or a template with $variables, got {s:?}"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogFormat::Combined => f.write_str("combined"),
            LogFormat::Json => f.write_str("json"),
            LogFormat::Template(t) => t.fmt(f),
        }
    }
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// No access log; `AccessLog::log` returns at once.
    Off,
    /// Standard output (`-`), for containers.
    Stdout,
    /// A file, opened for appending and created with mode 0640.
    File(PathBuf),
}

impl FromStr for LogTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("expected off, - (standard output) or a file path, got nothing".into()),
            "off" => Ok(LogTarget::Off),
            "-" => Ok(LogTarget::Stdout),
            path => Ok(LogTarget::File(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTarget::Off => f.write_str("off"),
            LogTarget::Stdout => f.write_str("-"),
            LogTarget::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Appends one line (with its `\n`) in Apache's combined format,
/// `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"`:
/// `127.0.0.1 - - [22/Nov/2026:02:31:50 +0000] "GET /x HTTP/1.1" 200 12 "-" "curl/8"`.
pub(crate) fn format_combined(r: &LogRecord, out: &mut Vec<u8>) {
    let client = r.client.to_canonical();
    let _ = write!(out, "{client} - - [");
    push_clf_time(out, r.time);
    out.extend_from_slice(b"] \"");
    // hyper never yields an empty method or target, but a log parser must see three words.
    push_escaped(out, nonempty(&r.method));
    out.push(b' ');
    push_escaped(out, nonempty(&r.target));
    out.push(b' ');
    push_escaped(out, nonempty(r.version));
    let _ = write!(out, "\" {} ", r.status);
    if r.bytes == 0 {
        out.push(b'-');
    } else {
        let _ = write!(out, "{}", r.bytes);
    }
    out.extend_from_slice(b" \"");
    push_escaped(out, r.referer.as_deref().unwrap_or("-"));
    out.extend_from_slice(b"\" \"");
    push_escaped(out, r.user_agent.as_deref().unwrap_or("-"));
    out.extend_from_slice(b"\"\n");
}

/// Appends one JSON line (with its `\n`) with the combined fields plus `duration_ms` and `route`.
pub(crate) fn format_json(r: &LogRecord, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct Line<'a> {
        time: String,
        client: IpAddr,
        method: &'a str,
        target: &'a str,
        version: &'a str,
        status: u16,
        bytes: u64,
        referer: Option<&'a str>,
        user_agent: Option<&'a str>,
        duration_ms: f64,
        route: &'a str,
        host: Option<&'a str>,
        request_id: Option<&'a str>,
        upstream: Option<String>,
        upstream_time_ms: Option<f64>,
    }
    // Milliseconds with microsecond precision: more digits are noise, and they cost log volume.
    let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
    let line = Line {
        time: iso_time(r.time),
        client: r.client.to_canonical(),
        method: &r.method,
        target: &r.target,
        version: r.version,
        status: r.status,
        bytes: r.bytes,
        referer: r.referer.as_deref(),
        user_agent: r.user_agent.as_deref(),
        duration_ms: ms(r.duration),
        route: r.route,
        host: r.host.as_deref(),
        request_id: r.request_id.as_deref(),
        upstream: r.upstream.map(|a| a.to_string()),
        upstream_time_ms: r.upstream_time.map(ms),
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
pub(in crate::logging) mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::UNIX_EPOCH;

    const COMBINED: &str = r#"^(\S+) (\S+) (\S+) \[([\w:/]+\s[+\-]\d{4})\] "(\S+) (.+?) (\S+)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"$"#;

    pub(in crate::logging) fn record() -> LogRecord {
        LogRecord {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            time: UNIX_EPOCH + Duration::from_secs(1_795_314_710),
            method: "GET".into(),
            target: "/x".into(),
            version: "HTTP/1.1",
            status: 200,
            bytes: 12,
            referer: None,
            user_agent: Some("curl/8".into()),
            duration: Duration::from_micros(1500),
            route: "static",
            host: Some("example.test".into()),
            request_id: None,
            upstream: None,
            upstream_time: None,
        }
    }

    fn combined(r: &LogRecord) -> String {
        let mut out = Vec::new();
        format_combined(r, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with('\n'), "{s:?}");
        s.trim_end_matches('\n').to_owned()
    }

    #[test]
    fn combined_matches_apache() {
        assert_eq!(
            combined(&record()),
            r#"127.0.0.1 - - [22/Nov/2026:02:31:50 +0000] "GET /x HTTP/1.1" 200 12 "-" "curl/8""#
        );
    }

    #[test]
    fn combined_parses_for_log_tools_even_with_nasty_input() {
        let re = regex::Regex::new(COMBINED).unwrap();
        let mut nasty = record();
        nasty.client = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        nasty.method = "GE\"T".into();
        nasty.target = "/a b\"c\\d\x01\x7f\u{e9}?q=\"x\"".into();
        nasty.referer = Some("http://e.x/\" \"-\" injected".into());
        nasty.user_agent = Some("Mozilla \"5.0\" \\ \t\r\n\u{1b}[31m 日本語 😀".into());
        nasty.bytes = 0;
        nasty.status = 404;
        for r in [record(), nasty.clone()] {
            let line = combined(&r);
            assert!(line.is_ascii(), "{line}");
            assert!(!line.contains('\n'));
            let caps = re
                .captures(&line)
                .unwrap_or_else(|| panic!("no match: {line}"));
            assert_eq!(&caps[8], r.status.to_string());
        }
        let line = combined(&nasty);
        let caps = re.captures(&line).unwrap();
        assert_eq!(&caps[1], "10.0.0.1");
        assert_eq!(&caps[9], "-");
        assert_eq!(&caps[5], r"GE\x22T");
        assert_eq!(&caps[6], r"/a b\x22c\x5Cd\x01\x7F\xC3\xA9?q=\x22x\x22");
        assert_eq!(&caps[10], r"http://e.x/\x22 \x22-\x22 injected");
        assert_eq!(
            &caps[11],
            r"Mozilla \x225.0\x22 \x5C \x09\x0D\x0A\x1B[31m \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80"
        );
        let mut ipv6 = record();
        ipv6.client = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(re.is_match(&combined(&ipv6)));
    }

    #[test]
    fn json_parses_back() {
        let mut r = record();
        r.user_agent = Some("ua \"q\" \\ \u{1} 日本".into());
        let mut out = Vec::new();
        format_json(&r, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["time"], "2026-11-22T02:31:50.000Z");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["target"], "/x");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "ua \"q\" \\ \u{1} 日本");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["route"], "static");
    }

    #[test]
    fn dates_of_known_timestamps() {
        let clf = |secs: i64| {
            let t = if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            };
            let mut out = Vec::new();
            push_clf_time(&mut out, t);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(clf(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf(951_782_400), "29/Feb/2000:00:00:00 +0000");
        // kHTTPd's date tables stopped here.
        assert_eq!(clf(1_167_609_599), "31/Dec/2006:23:59:59 +0000");
        assert_eq!(clf(2_147_483_648), "19/Jan/2038:03:14:08 +0000");
        assert_eq!(clf(4_107_542_400), "01/Mar/2100:00:00:00 +0000");
        assert_eq!(clf(-1), "31/Dec/1969:23:59:59 +0000");
        assert_eq!(
            iso_time(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
        // Every fifth day or so over three centuries agrees with httpdate's independent calendar.
        let mut secs = 0u64;
        while secs < 10_000_000_000 {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let http = httpdate::fmt_http_date(t); // "Sun, 22 Nov 2026 02:31:50 GMT"
            let p: Vec<&str> = http.split([' ', ',']).filter(|s| !s.is_empty()).collect();
            let expect = format!("{}/{}/{}:{} +0000", p[1], p[2], p[3], p[4]);
            assert_eq!(clf(secs as i64), expect);
            secs += 5 * 86_400 + 3_607;
        }
    }

    #[test]
    fn parses_targets_and_formats() {
        assert_eq!("off".parse::<LogTarget>(), Ok(LogTarget::Off));
        assert_eq!("-".parse::<LogTarget>(), Ok(LogTarget::Stdout));
        assert_eq!(
            "/var/log/khttpd/access.log".parse::<LogTarget>(),
            Ok(LogTarget::File("/var/log/khttpd/access.log".into()))
        );
        assert!("".parse::<LogTarget>().is_err());
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("combined".parse::<LogFormat>(), Ok(LogFormat::Combined));
        assert!("common".parse::<LogFormat>().is_err());
        assert_eq!(LogTarget::Stdout.to_string(), "-");
    }
}
