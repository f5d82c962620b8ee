//! One access-log line's facts ([`LogRecord`]) and the text pieces every format writes them with:
//! nginx's escaping and the two time formats. The formats themselves are `access_log`'s (combined,
//! JSON) and `log_template`'s.

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Everything one line needs, filled by the request handler.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// The client's address (an IPv4-mapped IPv6 address is logged as IPv4).
    pub client: IpAddr,
    /// When the request started.
    pub time: SystemTime,
    /// The request method.
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// The protocol as on the request line: `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'static str,
    /// The response status.
    pub status: u16,
    /// Body bytes sent; 0 is logged as `-` in the combined format, as Apache's `%b` does.
    pub bytes: u64,
    /// The Referer header, if any.
    pub referer: Option<String>,
    /// The User-Agent header, if any.
    pub user_agent: Option<String>,
    /// Time from the request start to the response.
    pub duration: Duration,
    /// Where the request went: `static`, `backend` or `error`.
    pub route: &'static str,
    /// The Host the client named (HTTP/2: its authority).
    pub host: Option<String>,
    /// The request's id (see [`crate::userspace::request_id`]): the client's, or the one the backend got.
    pub request_id: Option<String>,
    /// The backend that answered, when one did.
    pub upstream: Option<khttpd_bridge::BackendAddr>,
    /// Time from sending the request to the backend to its response head.
    pub upstream_time: Option<Duration>,
}

pub(crate) fn nonempty(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// nginx's access-log escaping: `"`, `\` and every byte outside printable ASCII (UTF-8 included)
/// become `\xHH`, so a line is one line of ASCII whose quoted fields never contain a `"`.
/// Apache's `\"` looks similar but breaks the `"([^"]*)"` patterns that goaccess, awstats and
/// fail2ban use, so one client-chosen quote in a User-Agent would hide the line from them.
pub(crate) fn push_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'"' | b'\\' | ..=0x1f | 0x7f.. => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            _ => out.push(b),
        }
    }
}

/// Seconds since the epoch (negative before it) and the milliseconds within the second.
fn unix_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_millis(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_millis() {
                0 => (secs, 0),
                ms => (secs - 1, 1000 - ms),
            }
        }
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), valid for any year, unlike kHTTPd's tables that ended in 2006.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both are in range by construction: day 1..=31, month 1..=12.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Date and time of day in UTC: (year, month, day, hour, minute, second).
fn civil_time(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    // rem_euclid keeps it in 0..86400, so the casts cannot truncate.
    let sod = secs.rem_euclid(86_400) as u32;
    (y, m, d, sod / 3600, sod / 60 % 60, sod % 60)
}

/// Apache's `%t` body in UTC: `22/Nov/2026:02:31:50 +0000`.
pub(crate) fn push_clf_time(out: &mut Vec<u8>, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = civil_time(unix_time(t).0);
    let month = MONTHS[(mo as usize).saturating_sub(1) % 12];
    let _ = write!(out, "{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000");
}

/// RFC 3339 in UTC with milliseconds: `2026-11-22T02:31:50.123Z`.
pub(crate) fn iso_time(t: SystemTime) -> String {
    let (secs, ms) = unix_time(t);
    let (y, mo, d, h, mi, s) = civil_time(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}
