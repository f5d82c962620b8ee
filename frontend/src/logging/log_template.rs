//! `--log-format` templates with nginx's variable names (`log_format`), for those whose tools want
//! another line than Apache's combined one or JSON:
//!
//! ```text
//! --log-format '$remote_addr [$time_local] "$request" $status $body_bytes_sent $request_time $upstream_response_time'
//! ```
//!
//! A template is parsed once, when the configuration is read; an unknown variable refuses it.
//! Values are escaped as in the combined format (`"`, `\`, control and non-ASCII bytes as
//! `\xHH`, nginx's `escape=default`), so a client cannot forge a line or a field.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use crate::logging::log_line::{iso_time, push_clf_time, push_escaped, LogRecord};

/// The variables a template may name.
const VARIABLES: &[(&str, Var)] = &[
    ("remote_addr", Var::RemoteAddr),
    ("time_local", Var::TimeLocal),
    ("time_iso8601", Var::TimeIso8601),
    ("request", Var::Request),
    ("request_method", Var::Method),
    ("request_uri", Var::Uri),
    ("server_protocol", Var::Protocol),
    ("status", Var::Status),
    ("body_bytes_sent", Var::BodyBytes),
    ("bytes_sent", Var::BodyBytes),
    ("http_referer", Var::Referer),
    ("http_user_agent", Var::UserAgent),
    ("request_time", Var::RequestTime),
    ("host", Var::Host),
    ("request_id", Var::RequestId),
    ("upstream_addr", Var::UpstreamAddr),
    ("upstream_response_time", Var::UpstreamTime),
    ("khttpd_route", Var::Route),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    RemoteAddr,
    TimeLocal,
    TimeIso8601,
    Request,
    Method,
    Uri,
    Protocol,
    Status,
    BodyBytes,
    Referer,
    UserAgent,
    RequestTime,
    Host,
    RequestId,
    UpstreamAddr,
    UpstreamTime,
    Route,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `$name` and `${name}` variables; everything else is kept as it is.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(at) = rest.find('$') {
            text.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed ${{ in {source:?}"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() && !after.starts_with('{') {
                text.push('$');
                rest = after;
                continue;
            }
            let var = VARIABLES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let known: Vec<&str> = VARIABLES.iter().map(|(n, _)| *n).collect();
                    format!("unknown variable ${name}; known: ${}", known.join(", $"))
                })?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Var(var));
            rest = tail;
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Var(_))) {
            return Err(format!(
                "{source:?} names no variable (combined, json, or a template such as '$remote_addr \"$request\" $status')"
            ));
        }
        if source.contains(['\n', '\r']) {
            return Err("a template cannot span lines".into());
        }
        Ok(Template {
            source: source.to_owned(),
            pieces,
        })
    }

    /// Appends `r`'s line, with its `\n`.
    pub fn write(&self, r: &LogRecord, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                Piece::Var(v) => value(*v, r, out),
            }
        }
        out.push(b'\n');
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Seconds with milliseconds, as nginx writes `$request_time`.
fn seconds(out: &mut Vec<u8>, d: Duration) {
    let _ = write!(out, "{}.{:03}", d.as_secs(), d.subsec_millis());
}

fn value(v: Var, r: &LogRecord, out: &mut Vec<u8>) {
    let text = |out: &mut Vec<u8>, s: Option<&str>| match s {
        Some(s) if !s.is_empty() => push_escaped(out, s),
        _ => out.push(b'-'),
    };
    match v {
        Var::RemoteAddr => {
            let _ = write!(out, "{}", r.client.to_canonical());
        }
        Var::TimeLocal => push_clf_time(out, r.time),
        Var::TimeIso8601 => out.extend_from_slice(iso_time(r.time).as_bytes()),
        Var::Request => {
            text(out, Some(&r.method));
            out.push(b' ');
            text(out, Some(&r.target));
            out.push(b' ');
            text(out, Some(r.version));
        }
        Var::Method => text(out, Some(&r.method)),
        Var::Uri => text(out, Some(&r.target)),
        Var::Protocol => text(out, Some(r.version)),
        Var::Status => {
            let _ = write!(out, "{}", r.status);
        }
        Var::BodyBytes => {
            let _ = write!(out, "{}", r.bytes);
        }
        Var::Referer => text(out, r.referer.as_deref()),
        Var::UserAgent => text(out, r.user_agent.as_deref()),
        Var::RequestTime => seconds(out, r.duration),
        Var::Host => text(out, r.host.as_deref()),
        Var::RequestId => text(out, r.request_id.as_deref()),
        Var::UpstreamAddr => match r.upstream {
            Some(a) => {
                let _ = write!(out, "{a}");
            }
            None => out.push(b'-'),
        },
        Var::UpstreamTime => match r.upstream_time {
            Some(d) => seconds(out, d),
            None => out.push(b'-'),
        },
        Var::Route => out.extend_from_slice(r.route.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::UNIX_EPOCH;

    fn record() -> LogRecord {
        LogRecord {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            time: UNIX_EPOCH + Duration::from_secs(1_795_314_710),
            method: "GET".into(),
            target: "/x?a=\"b\"".into(),
            version: "HTTP/1.1",
            status: 200,
            bytes: 12,
            referer: None,
            user_agent: Some("curl/8\n\"forged\"".into()),
            duration: Duration::from_micros(2_500),
            route: "backend",
            host: Some("example.test".into()),
            request_id: Some("abc".into()),
            upstream: Some("127.0.0.1:8080".parse().unwrap()),
            upstream_time: Some(Duration::from_millis(1)),
        }
    }

    fn line(t: &str) -> String {
        let mut out = Vec::new();
        Template::parse(t).unwrap().write(&record(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn variables_escaped_as_in_combined() {
        assert_eq!(
            line(r#"$remote_addr [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time"#),
            "127.0.0.1 [22/Nov/2026:02:31:50 +0000] \"GET /x?a=\\x22b\\x22 HTTP/1.1\" 200 12 \"-\" \"curl/8\\x0A\\x22forged\\x22\" 0.002\n"
        );
        assert_eq!(
            line("${host}|$upstream_addr|$upstream_response_time|$request_id|$khttpd_route|$time_iso8601"),
            "example.test|127.0.0.1:8080|0.001|abc|backend|2026-11-22T02:31:50.000Z\n"
        );
        // A `$` that starts no name is itself.
        assert_eq!(line("$ $status"), "$ 200\n");
    }

    #[test]
    fn unknown_or_empty_templates_are_refused() {
        let e = Template::parse("$remote_addr $nope").unwrap_err();
        assert!(e.contains("$nope") && e.contains("$remote_addr"), "{e}");
        assert!(Template::parse("plain text").is_err());
        assert!(Template::parse("${status").is_err());
    }
}
