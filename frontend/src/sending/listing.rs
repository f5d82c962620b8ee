//! Directory listing rendering: pure functions that turn a list of entries
//! into an HTML5 page or a JSON array, plus the helpers they need (filtering,
//! ordering, Accept negotiation, escaping). No I/O happens here; the caller
//! reads the directory and decides which representation to send.

use std::cmp::Ordering;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// One directory entry as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Raw file name as stored on disk (not necessarily UTF-8).
    pub name: OsString,
    /// Whether the entry is a directory.
    pub is_dir: bool,
    /// Size in bytes (shown only for files in HTML; passed through in JSON).
    pub size: u64,
    /// Last modification time.
    pub mtime: SystemTime,
}

/// Everything but the RFC 3986 unreserved characters is encoded, so an href
/// built from a name can only ever be a relative path segment: no `/`, `?`,
/// `#`, `:` (scheme), `%` (double decoding) or quote survives.
const HREF_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Largest instant httpdate can format (9999-12-31T23:59:59Z); it panics beyond.
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;

/// Whether a name may appear in a listing: dotfiles (".", "..", ".htaccess", ".git", …) never do.
pub(crate) fn visible(name: &OsStr) -> bool {
    // Empty names cannot come from readdir, but hiding them costs nothing.
    matches!(name.as_bytes().first(), Some(&b) if b != b'.')
}

/// The column a listing is sorted by (`?sort=name|size|time`, as lighttpd's and Caddy's
/// listings take it), and whether in descending order (`?order=desc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Order {
    pub by: SortBy,
    pub descending: bool,
}

/// A listing's sort column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) enum SortBy {
    #[default]
    Name,
    Size,
    Time,
}

impl Order {
    /// From a request's query: `sort` and `order`; anything else (or nothing) is by name,
    /// ascending.
    pub(crate) fn from_query(query: Option<&str>) -> Order {
        let mut o = Order::default();
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("sort", "size")) => o.by = SortBy::Size,
                Some(("sort", "time")) => o.by = SortBy::Time,
                Some(("order", "desc")) => o.descending = true,
                _ => {}
            }
        }
        o
    }

    fn query(self) -> &'static str {
        match (self.by, self.descending) {
            (SortBy::Name, false) => "?sort=name&amp;order=asc",
            (SortBy::Name, true) => "?sort=name&amp;order=desc",
            (SortBy::Size, false) => "?sort=size&amp;order=asc",
            (SortBy::Size, true) => "?sort=size&amp;order=desc",
            (SortBy::Time, false) => "?sort=time&amp;order=asc",
            (SortBy::Time, true) => "?sort=time&amp;order=desc",
        }
    }
}

/// Directories first, then by name as people read names: case-insensitively, numbers by value
/// (`file2` before `file10`); equal names by their bytes.
pub(crate) fn sort(entries: &mut [Entry]) {
    sort_by(entries, Order::default());
}

/// [`sort`] by another column, or in descending order (directories stay first).
pub(crate) fn sort_by(entries: &mut [Entry], order: Order) {
    entries.sort_by(|a, b| {
        let by = match order.by {
            SortBy::Name => Ordering::Equal,
            SortBy::Size => a.size.cmp(&b.size),
            SortBy::Time => a.mtime.cmp(&b.mtime),
        }
        .then_with(|| natural_cmp(a.name.as_bytes(), b.name.as_bytes()));
        b.is_dir
            .cmp(&a.is_dir)
            .then(if order.descending { by.reverse() } else { by })
    });
}

/// Case-insensitive order with runs of digits compared by value, then byte order for a tie.
pub(crate) fn natural_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let run = |s: &[u8], mut k: usize| {
                while k < s.len() && s[k] == b'0' {
                    k += 1;
                }
                let start = k;
                while k < s.len() && s[k].is_ascii_digit() {
                    k += 1;
                }
                (start, k)
            };
            let ((sa, ea), (sb, eb)) = (run(a, i), run(b, j));
            let by_value = (ea - sa)
                .cmp(&(eb - sb))
                .then_with(|| a[sa..ea].cmp(&b[sb..eb]));
            if by_value != Ordering::Equal {
                return by_value;
            }
            (i, j) = (ea, eb);
            continue;
        }
        let (x, y) = (a[i].to_ascii_lowercase(), b[j].to_ascii_lowercase());
        if x != y {
            return x.cmp(&y);
        }
        i += 1;
        j += 1;
    }
    (a.len() - i).cmp(&(b.len() - j)).then_with(|| a.cmp(b))
}

/// RFC 9110 §12.5.1: true when the Accept header prefers application/json over text/html (q-values honoured; `*/*` alone → false; absent → false; application/json with q=0 → false).
pub(crate) fn wants_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let ranges = parse_accept(accept);
    let json = quality_for(&ranges, "application", "json");
    let html = quality_for(&ranges, "text", "html");
    // Ties go to HTML: a browser-ish or wildcard client gets the page.
    json > 0 && json > html
}

/// A parsed media range: lower-cased type, subtype and q in thousandths.
struct MediaRange {
    kind: String,
    subtype: String,
    q: u16,
}

/// Splits an Accept value into media ranges, dropping malformed ones rather
/// than failing, because a sloppy header should still get a useful answer.
fn parse_accept(accept: &str) -> Vec<MediaRange> {
    let mut out = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or("").trim();
        let Some((kind, subtype)) = range.split_once('/') else {
            continue;
        };
        let (kind, subtype) = (kind.trim(), subtype.trim());
        if kind.is_empty() || subtype.is_empty() || (kind == "*" && subtype != "*") {
            continue;
        }
        let mut q = Some(1000);
        for param in parts {
            if let Some((name, value)) = param.split_once('=') {
                if name.trim().eq_ignore_ascii_case("q") {
                    q = parse_qvalue(value.trim());
                    // Parameters after q are accept-extensions; stop looking.
                    break;
                }
            }
        }
        let Some(q) = q else {
            continue;
        };
        out.push(MediaRange {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
            q,
        });
    }
    out
}

/// Parses an RFC 9110 qvalue ("0", "0.5", "1.000") into thousandths.
/// Integer arithmetic avoids float comparisons such as 0.9 vs 0.90.
fn parse_qvalue(s: &str) -> Option<u16> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The q the header assigns to `kind/subtype`: the most specific matching
/// range wins (exact over `type/*` over `*/*`); no match means q=0.
fn quality_for(ranges: &[MediaRange], kind: &str, subtype: &str) -> u16 {
    let mut best: Option<(u8, u16)> = None;
    for r in ranges {
        let specificity = if r.kind == kind && r.subtype == subtype {
            2
        } else if r.kind == kind && r.subtype == "*" {
            1
        } else if r.kind == "*" && r.subtype == "*" {
            0
        } else {
            continue;
        };
        best = match best {
            Some((s, q)) => match specificity.cmp(&s) {
                Ordering::Greater => Some((specificity, r.q)),
                Ordering::Equal => Some((s, q.max(r.q))),
                Ordering::Less => Some((s, q)),
            },
            None => Some((specificity, r.q)),
        };
    }
    best.map_or(0, |(_, q)| q)
}

/// An HTML5 page: title and h1 "Index of {path}", a parent link "../" unless path is "/", a table with name, size, last modified; `path` is the decoded request path (may contain any characters, escape it).
///
/// Links are relative, so the page must be served at a URL ending in `/`.
#[cfg(test)]
pub(crate) fn render_html(path: &str, entries: &[Entry]) -> String {
    render_html_sorted(path, entries, Order::default())
}

/// [`render_html`] for entries sorted by `order`: each column's heading links to its sort,
/// the current column's to the other direction.
pub(crate) fn render_html_sorted(path: &str, entries: &[Entry], order: Order) -> String {
    let title = html_escape(path);
    let mut out = String::with_capacity(512 + entries.len() * 160);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    // fmt::Write into a String cannot fail, so the results are ignored.
    let _ = writeln!(out, "<title>Index of {title}</title>");
    out.push_str(
        "<meta name=\"color-scheme\" content=\"light dark\">\n\
         <style>:root{color-scheme:light dark}\
         body{font-family:system-ui,sans-serif;margin:2em}\
         table{border-collapse:collapse}\
         th,td{padding:.2em 1em;text-align:left}\
         td.s{text-align:right}th a{color:inherit}\
         tr:nth-child(even){background:#f4f4f4}\
         @media (prefers-color-scheme:dark){body{background:#16181c;color:#e4e6eb}\
         a{color:#8ab4f8}tr:nth-child(even){background:#22252b}}</style>\n",
    );
    out.push_str("</head>\n<body>\n");
    let _ = writeln!(out, "<h1>Index of {title}</h1>");
    let heading = |by: SortBy, label: &str| {
        let next = Order {
            by,
            descending: order.by == by && !order.descending,
        };
        let mark = match (order.by == by, order.descending) {
            (false, _) => "",
            (true, false) => " \u{2191}",
            (true, true) => " \u{2193}",
        };
        format!("<th><a href=\"{}\">{label}{mark}</a></th>", next.query())
    };
    let _ = writeln!(
        out,
        "<table>\n<thead><tr>{}{}{}</tr></thead>\n<tbody>",
        heading(SortBy::Name, "Name"),
        heading(SortBy::Size, "Size"),
        heading(SortBy::Time, "Last modified")
    );
    if path != "/" {
        out.push_str("<tr><td><a href=\"../\">../</a></td><td class=\"s\">-</td><td></td></tr>\n");
    }
    for e in entries {
        let mut href = percent_encode(e.name.as_bytes(), HREF_SET).to_string();
        let mut shown = html_escape(&e.name.to_string_lossy());
        let size = if e.is_dir {
            href.push('/');
            shown.push('/');
            "-".to_owned()
        } else {
            human_size(e.size)
        };
        let _ = writeln!(
            out,
            "<tr><td><a href=\"{href}\">{shown}</a></td><td class=\"s\">{size}</td><td><time datetime=\"{}\">{} UTC</time></td></tr>",
            iso_date(e.mtime),
            format_date(e.mtime)
        );
    }
    out.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    out
}

/// `[{"name": "...", "url": "<relative href>", "type": "file"|"directory", "size": N|null, "mtime": "<IMF-fixdate>"}]` (serde_json, so any name is escaped correctly; non-UTF-8 names via to_string_lossy).
pub(crate) fn render_json(entries: &[Entry]) -> String {
    let items = entries
        .iter()
        .map(|e| {
            let mut url = percent_encode(e.name.as_bytes(), HREF_SET).to_string();
            if e.is_dir {
                url.push('/');
            }
            serde_json::json!({
                "name": e.name.to_string_lossy(),
                "url": url,
                "type": if e.is_dir { "directory" } else { "file" },
                // As the page shows it: a directory has no size of its own ("-").
                "size": (!e.is_dir).then_some(e.size),
                "mtime": httpdate::fmt_http_date(clamp_for_http_date(e.mtime)),
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Escapes &, <, >, ", ' for HTML text and attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// httpdate panics outside 1970..=9999, and a file's mtime is whatever
/// `touch` said, so out-of-range times are pinned to the nearest end.
fn clamp_for_http_date(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() > MAX_HTTP_DATE_SECS => {
            UNIX_EPOCH + Duration::from_secs(MAX_HTTP_DATE_SECS)
        }
        Ok(_) => t,
        Err(_) => UNIX_EPOCH,
    }
}

/// "512", "1.2K", "34M": one decimal below 10 units, whole units above.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    // Precision loss in the cast is irrelevant at one displayed decimal.
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Bump early so rounding never prints "1024K" instead of "1.0M".
    while v >= 1023.5 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 9.95 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

/// "YYYY-MM-DDTHH:MM:SSZ", for `<time datetime>`.
fn iso_date(t: SystemTime) -> String {
    let secs = clamp_for_http_date(t)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// "YYYY-MM-DD HH:MM" in UTC; times before 1970 are handled, not clamped.
fn format_date(t: SystemTime) -> String {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            // Round towards the past so e.g. -0.5s lands in 1969-12-31 23:59.
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(d.subsec_nanos() > 0)
        }
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day),
/// using the era-based algorithm by Howard Hinnant.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // March-based month, 0..=11
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is 1..=31 and m is 1..=12 by construction, so the casts are lossless.
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn file(name: &str, size: u64) -> Entry {
        Entry {
            name: name.into(),
            is_dir: false,
            size,
            mtime: at(1_700_000_000),
        }
    }

    fn dir(name: &str) -> Entry {
        Entry {
            name: name.into(),
            is_dir: true,
            size: 4096,
            mtime: at(1_700_000_000),
        }
    }

    #[test]
    fn natural_case_insensitive_order() {
        let mut v: Vec<Entry> = ["file10", "File2", "file1", "b", "A", "file02", "z9", "z10"]
            .iter()
            .map(|n| file(n, 1))
            .collect();
        v.push(dir("Zeta"));
        v.push(dir("alpha"));
        sort(&mut v);
        let names: Vec<String> = v.iter().map(|e| e.name.to_string_lossy().into()).collect();
        assert_eq!(
            names,
            ["alpha", "Zeta", "A", "b", "file1", "File2", "file02", "file10", "z9", "z10"]
        );
        assert_eq!(natural_cmp(b"a", b"a"), Ordering::Equal);
        assert_eq!(natural_cmp(b"a01", b"a1"), Ordering::Less, "ties by bytes");
    }

    #[test]
    fn columns_sort_and_headings_link_to_the_other_direction() {
        let mut v = vec![file("small", 1), file("big", 100), dir("d")];
        let order = Order::from_query(Some("sort=size&order=desc"));
        assert_eq!(
            order,
            Order {
                by: SortBy::Size,
                descending: true
            }
        );
        sort_by(&mut v, order);
        let names: Vec<String> = v.iter().map(|e| e.name.to_string_lossy().into()).collect();
        assert_eq!(names, ["d", "big", "small"], "directories stay first");
        let html = render_html_sorted("/x/", &v, order);
        assert!(
            html.contains("href=\"?sort=size&amp;order=asc\">Size \u{2193}"),
            "{html}"
        );
        assert!(
            html.contains("href=\"?sort=name&amp;order=asc\">Name</a>"),
            "{html}"
        );
        assert!(html.contains("prefers-color-scheme:dark"));
        assert!(
            html.contains("<time datetime=\"2023-11-14T22:13:20Z\">2023-11-14 22:13 UTC</time>"),
            "{html}"
        );
        assert_eq!(
            Order::from_query(Some("sort=evil&order=x")),
            Order::default()
        );
    }

    fn href_of(name: &str) -> String {
        percent_encode(name.as_bytes(), HREF_SET).to_string()
    }

    #[test]
    fn escapes_script_quotes_and_ampersand() {
        assert_eq!(
            html_escape("<script>alert('x')</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
        );
        assert_eq!(html_escape(r#"a"b"#), "a&quot;b");
        assert_eq!(html_escape("a&b"), "a&amp;b");
        assert_eq!(html_escape("&amp;"), "&amp;amp;");
        assert_eq!(html_escape("plain 日本"), "plain 日本");
    }

    #[test]
    fn percent_encodes_everything_but_unreserved() {
        assert_eq!(href_of("a b"), "a%20b");
        assert_eq!(href_of("100%"), "100%25");
        assert_eq!(href_of("日本語.txt"), "%E6%97%A5%E6%9C%AC%E8%AA%9E.txt");
        assert_eq!(href_of("a?b"), "a%3Fb");
        assert_eq!(href_of("a#b"), "a%23b");
        assert_eq!(href_of("a/b"), "a%2Fb");
        assert_eq!(href_of("x\"<&'"), "x%22%3C%26%27");
        assert_eq!(href_of("Az09-._~"), "Az09-._~");
        assert_eq!(href_of("javascript:alert(1)"), "javascript%3Aalert%281%29");
    }

    #[test]
    fn html_links_are_encoded_and_names_escaped() {
        let entries = vec![
            dir("sub dir"),
            file("<script>.txt", 10),
            file("javascript:alert(1)", 1),
        ];
        let page = render_html("/files/", &entries);
        assert!(page.contains("<a href=\"sub%20dir/\">sub dir/</a>"));
        assert!(page.contains("<a href=\"%3Cscript%3E.txt\">&lt;script&gt;.txt</a>"));
        assert!(page.contains("href=\"javascript%3Aalert%281%29\""));
        assert!(!page.contains("<script>"));
    }

    #[test]
    fn html_handles_non_utf8_names() {
        let e = Entry {
            name: OsString::from_vec(vec![b'a', 0xff, b'b']),
            is_dir: false,
            size: 3,
            mtime: at(0),
        };
        let page = render_html("/x/", &[e]);
        assert!(page.contains("href=\"a%FFb\""));
        assert!(page.contains(">a\u{FFFD}b</a>"));
    }

    #[test]
    fn html_page_shape() {
        let page = render_html("/a&b/", &[file("f", 1)]);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        assert!(page.contains("<title>Index of /a&amp;b/</title>"));
        assert!(page.contains("<h1>Index of /a&amp;b/</h1>"));
        assert!(page.contains("<style>"));
    }

    #[test]
    fn parent_link_only_below_root() {
        let root = render_html("/", &[file("a", 1)]);
        assert!(!root.contains("href=\"../\""));
        let sub = render_html("/files/", &[file("a", 1)]);
        assert!(sub.contains("<a href=\"../\">../</a>"));
    }

    #[test]
    fn sizes_are_human_readable() {
        assert_eq!(human_size(0), "0");
        assert_eq!(human_size(1023), "1023");
        assert_eq!(human_size(1024), "1.0K");
        assert_eq!(human_size(1229), "1.2K");
        assert_eq!(human_size(3_565_158), "3.4M");
        assert_eq!(human_size(20 * 1024), "20K");
        assert_eq!(human_size(1024 * 1024 - 1), "1.0M");
        assert_eq!(human_size(u64::MAX), "16E");
        let page = render_html("/d/", &[dir("sub"), file("f", 1229)]);
        assert!(page.contains("sub/</a></td><td class=\"s\">-</td>"));
        assert!(page.contains("f</a></td><td class=\"s\">1.2K</td>"));
    }

    #[test]
    fn sorts_directories_first_then_names() {
        let mut v = vec![
            file("b", 1),
            dir("z"),
            file("B", 1),
            dir("a"),
            file("a", 1),
            file("\u{e9}", 1),
        ];
        sort(&mut v);
        let names: Vec<_> = v
            .iter()
            .map(|e| (e.is_dir, e.name.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            names,
            vec![
                (true, "a".to_owned()),
                (true, "z".to_owned()),
                (false, "a".to_owned()),
                (false, "B".to_owned()),
                (false, "b".to_owned()),
                (false, "\u{e9}".to_owned()),
            ]
        );
    }

    #[test]
    fn dotfiles_are_hidden() {
        for hidden in [".", "..", ".htaccess", ".git", ".env", ""] {
            assert!(!visible(OsStr::new(hidden)), "{hidden:?}");
        }
        for shown in ["index.html", "a.b", "日本語.txt", "x."] {
            assert!(visible(OsStr::new(shown)), "{shown:?}");
        }
    }

    #[test]
    fn accept_negotiation_table() {
        let cases: &[(Option<&str>, bool)] = &[
            (None, false),
            (Some(""), false),
            (Some("application/json"), true),
            (Some("text/html,application/json;q=0.9"), false),
            (Some("application/json, text/html;q=0.5"), true),
            (Some("*/*"), false),
            (Some("application/json;q=0"), false),
            (Some("application/json;q=0.0"), false),
            (Some("Application/JSON"), true),
            (Some("application/json;Q=1"), true),
            (Some("application/*"), true),
            (Some("application/json, text/html"), false),
            (Some("application/json, */*;q=0.1"), true),
            (Some("text/*;q=0.5, application/json;q=0.6"), true),
            // The wildcard gives JSON 0.8, which beats HTML at 0.2.
            (Some("text/html;q=0.2, */*;q=0.8"), true),
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                false,
            ),
            (Some("application/json;q=2"), false),
            (Some("garbage, ,;q=x"), false),
        ];
        for &(accept, want) in cases {
            assert_eq!(wants_json(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn qvalues_parse_strictly() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.9"), Some(900));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.1234"), None);
        assert_eq!(parse_qvalue("-0.5"), None);
        assert_eq!(parse_qvalue(""), None);
    }

    #[test]
    fn json_round_trips_with_fields() {
        let entries = vec![
            dir("more"),
            file("quote\"and\\back<slash>.txt", 42),
            Entry {
                name: OsString::from_vec(vec![0xfe, b'x']),
                is_dir: false,
                size: 0,
                mtime: at(0),
            },
        ];
        let text = render_json(&entries);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let arr = v.as_array().expect("top-level array");
        assert_eq!(arr.len(), 3);
        assert_eq!(arr[0]["name"], "more");
        assert_eq!(arr[0]["type"], "directory");
        assert!(
            arr[0]["size"].is_null(),
            "a directory has no size, as on the page"
        );
        assert_eq!(arr[0]["url"], "more/");
        assert_eq!(arr[0]["mtime"], "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(arr[1]["name"], "quote\"and\\back<slash>.txt");
        assert_eq!(arr[1]["type"], "file");
        assert_eq!(arr[1]["size"], 42);
        assert_eq!(arr[2]["name"], "\u{FFFD}x");
        assert_eq!(arr[2]["mtime"], "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(render_json(&[]), "[]");
    }

    #[test]
    fn json_does_not_panic_on_extreme_mtimes() {
        let old = Entry {
            mtime: UNIX_EPOCH - Duration::from_secs(86_400),
            ..file("old", 1)
        };
        let future = Entry {
            mtime: at(MAX_HTTP_DATE_SECS + 1_000_000),
            ..file("future", 1)
        };
        let text = render_json(&[old, future]);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v[0]["mtime"], "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(v[1]["mtime"], "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn dates_format_in_utc() {
        assert_eq!(format_date(at(0)), "1970-01-01 00:00");
        assert_eq!(format_date(at(1_700_000_000)), "2023-11-14 22:13");
        // Leap day and the 2000 (divisible by 400) leap year.
        assert_eq!(format_date(at(951_782_400)), "2000-02-29 00:00");
        assert_eq!(format_date(at(1_709_164_799)), "2024-02-28 23:59");
        assert_eq!(format_date(at(1_795_314_660)), "2026-11-22 02:31");
        assert_eq!(
            format_date(UNIX_EPOCH - Duration::from_secs(60)),
            "1969-12-31 23:59"
        );
        assert_eq!(
            format_date(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31 23:59"
        );
        let page = render_html("/", &[file("f", 1)]);
        assert!(page.contains(
            "<td><time datetime=\"2023-11-14T22:13:20Z\">2023-11-14 22:13 UTC</time></td>"
        ));
    }

    #[test]
    fn civil_from_days_matches_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    }
}
