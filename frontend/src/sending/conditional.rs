//! Conditional requests (RFC 9110 §13): entity-tag comparison (§8.8.3.2) and
//! evaluation of If-Match, If-None-Match, If-Modified-Since and
//! If-Unmodified-Since in the precedence order of §13.2.2. If-Range (step 5 of
//! that order) lives in `range.rs`. Pure functions: no I/O, no clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// The validators of the selected representation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validators<'a> {
    /// Strong entity-tag including quotes, e.g. `"1a-2b-3c"`.
    pub etag: &'a str,
    /// Last modification time; compared at one-second resolution.
    pub last_modified: SystemTime,
}

/// The conditional request headers, as raw values (None when absent). Several header lines of If-Match/If-None-Match are joined with ", " by the caller.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Conditions<'a> {
    /// Raw If-Match value.
    pub if_match: Option<&'a str>,
    /// Raw If-None-Match value.
    pub if_none_match: Option<&'a str>,
    /// Raw If-Modified-Since value.
    pub if_modified_since: Option<&'a str>,
    /// Raw If-Unmodified-Since value.
    pub if_unmodified_since: Option<&'a str>,
}

/// Result of evaluating the preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Perform the method (then consider If-Range / Range).
    Proceed,
    /// Respond 304 Not Modified.
    NotModified,
    /// Respond 412 Precondition Failed.
    Failed,
}

/// RFC 9110 §13.2.2 evaluation order; `safe` is true for GET and HEAD.
///
/// §13.2.1: only call this when the response without conditions would be 2xx
/// or 412 (e.g. not for 404s or redirects).
pub(crate) fn evaluate(c: &Conditions<'_>, v: &Validators<'_>, safe: bool) -> Precondition {
    let modified = unix_seconds(v.last_modified);

    // Step 1. §13.1.1: "An origin server MUST use the strong comparison function
    // when comparing entity tags for If-Match", and "*" is true whenever a
    // current representation exists — which it does, since we have validators.
    if let Some(value) = c.if_match {
        if !list_matches(value, v.etag, strong_eq) {
            return Precondition::Failed;
        }
    } else if let Some(date) = c.if_unmodified_since.and_then(parse_date) {
        // Step 2, only without If-Match (§13.1.4: "A recipient MUST ignore
        // If-Unmodified-Since if the request contains an If-Match header field").
        // Invalid dates are ignored, as §13.1.4 requires.
        if modified > date {
            return Precondition::Failed;
        }
    }

    // Step 3. §13.1.2: "A recipient MUST use the weak comparison function when
    // comparing entity tags for If-None-Match"; a match means "false", which is
    // 304 for GET/HEAD and 412 for anything else.
    if let Some(value) = c.if_none_match {
        if list_matches(value, v.etag, weak_eq) {
            return if safe {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if safe {
        // Step 4. §13.1.3: "A recipient MUST ignore If-Modified-Since if the
        // request contains an If-None-Match header field", and also when the
        // value is not a valid HTTP-date or the method is neither GET nor HEAD.
        // A date in the future still yields 304: §13.1.3 has no rule rejecting
        // dates later than the server's clock (RFC 2616 §14.25 had one), and
        // this module has no clock anyway.
        if let Some(date) = c.if_modified_since.and_then(parse_date) {
            if modified <= date {
                return Precondition::NotModified;
            }
        }
    }

    // Step 6 (step 5, If-Range, is the caller's business via range.rs).
    Precondition::Proceed
}

/// Strong comparison of two single entity-tags (§8.8.3.2): both strong, opaque-tags equal.
pub(crate) fn strong_eq(a: &str, b: &str) -> bool {
    match (parse_single(a), parse_single(b)) {
        (Some(x), Some(y)) => !x.weak && !y.weak && x.opaque == y.opaque,
        _ => false,
    }
}

/// Weak comparison of two single entity-tags (§8.8.3.2): opaque-tags equal, weakness ignored.
pub(crate) fn weak_eq(a: &str, b: &str) -> bool {
    match (parse_single(a), parse_single(b)) {
        (Some(x), Some(y)) => x.opaque == y.opaque,
        _ => false,
    }
}

/// A parsed entity-tag; `opaque` is the text between the quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag<'a> {
    weak: bool,
    opaque: &'a str,
}

/// Whether a `"*" / #entity-tag` field value contains a tag equal to `current`
/// under `eq`. An unparseable value matches nothing.
fn list_matches(value: &str, current: &str, eq: fn(&str, &str) -> bool) -> bool {
    let value = trim_ows(value);
    if value == "*" {
        return true;
    }
    // The list is validated as a whole first: a half-valid list is garbage, and
    // matching a prefix of garbage would be guessing.
    match split_list(value) {
        Some(tags) => tags.into_iter().any(|t| eq(t, current)),
        None => false,
    }
}

/// Splits `#entity-tag` into the raw text of each tag. Commas are legal inside
/// opaque-tags (etagc includes %x2C), so this cannot be a plain `split(',')`.
fn split_list(value: &str) -> Option<Vec<&str>> {
    let b = value.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    loop {
        // §5.6.1: skip OWS and empty list elements.
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let (tag, _) = take_tag(&value[i..])?;
        tags.push(tag);
        i += tag.len();
        // After a tag: OWS, then a comma or the end. Anything else is garbage.
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i < b.len() && b[i] != b',' {
            return None;
        }
    }
    Some(tags)
}

/// Takes one entity-tag off the front of `s`: returns (tag text, remainder).
fn take_tag(s: &str) -> Option<(&str, &str)> {
    // §8.8.3: weak = %s"W/" — case-sensitive, so "w/" is not a weak marker.
    let start = if s.starts_with("W/") { 2 } else { 0 };
    let b = s.as_bytes();
    if b.get(start) != Some(&b'"') {
        return None;
    }
    // etagc = %x21 / %x23-7E / obs-text; closing DQUOTE ends the tag.
    for (j, &c) in b.iter().enumerate().skip(start + 1) {
        match c {
            b'"' => return Some(s.split_at(j + 1)),
            0x21 | 0x23..=0x7e | 0x80..=0xff => {}
            _ => return None,
        }
    }
    None
}

/// Parses exactly one entity-tag (surrounding OWS allowed).
fn parse_single(s: &str) -> Option<Tag<'_>> {
    let s = trim_ows(s);
    let (tag, rest) = take_tag(s)?;
    if !rest.is_empty() {
        return None;
    }
    let weak = tag.starts_with("W/");
    let quoted = if weak { &tag[2..] } else { tag };
    Some(Tag {
        weak,
        opaque: &quoted[1..quoted.len() - 1],
    })
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// An HTTP-date (any of the three §5.6.7 formats) as whole epoch seconds.
fn parse_date(s: &str) -> Option<i128> {
    httpdate::parse_http_date(trim_ows(s))
        .ok()
        .map(unix_seconds)
}

/// Whole seconds since the epoch, floored: Last-Modified was sent at one-second
/// resolution, so a file's sub-second mtime must not make it look newer than
/// the date the client echoes back.
pub(crate) fn unix_seconds(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::from(d.as_secs()),
        Err(e) => {
            let d = e.duration();
            let s = -i128::from(d.as_secs());
            if d.subsec_nanos() > 0 {
                s - 1
            } else {
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use Precondition::{Failed, NotModified, Proceed};

    const ETAG: &str = "\"1a-2b-3c\"";
    // Sun, 06 Nov 1994 08:49:37 GMT, plus half a second to exercise truncation.
    const LM_SECS: u64 = 784_111_777;
    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const EARLIER: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const FUTURE: &str = "Fri, 01 Jan 2100 00:00:00 GMT";

    fn v() -> Validators<'static> {
        Validators {
            etag: ETAG,
            last_modified: UNIX_EPOCH + Duration::from_millis(LM_SECS * 1000 + 500),
        }
    }

    fn eval(c: Conditions<'_>, safe: bool) -> Precondition {
        evaluate(&c, &v(), safe)
    }

    #[test]
    fn test_date_constant() {
        assert_eq!(
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(LM_SECS)),
            DATE
        );
    }

    #[test]
    fn no_conditions() {
        assert_eq!(eval(Conditions::default(), true), Proceed);
        assert_eq!(eval(Conditions::default(), false), Proceed);
    }

    #[test]
    fn step1_if_match() {
        let im = |s| Conditions {
            if_match: Some(s),
            ..Default::default()
        };
        assert_eq!(eval(im("*"), false), Proceed);
        assert_eq!(eval(im(ETAG), false), Proceed);
        assert_eq!(eval(im("\"x\", \"1a-2b-3c\""), false), Proceed);
        assert_eq!(eval(im("\"x\""), true), Failed);
        // Strong comparison: a weak tag never satisfies If-Match.
        assert_eq!(eval(im("W/\"1a-2b-3c\""), true), Failed);
        assert_eq!(eval(im("garbage"), true), Failed);
        assert_eq!(eval(im("\"1a-2b-3c\" junk"), true), Failed);
        assert_eq!(eval(im(""), true), Failed);
    }

    #[test]
    fn step2_if_unmodified_since() {
        let ius = |s| Conditions {
            if_unmodified_since: Some(s),
            ..Default::default()
        };
        assert_eq!(eval(ius(DATE), false), Proceed);
        assert_eq!(eval(ius(FUTURE), false), Proceed);
        assert_eq!(eval(ius(EARLIER), false), Failed);
        assert_eq!(eval(ius("not a date"), false), Proceed);
        assert_eq!(
            eval(
                ius("Sun, 06 Nov 1994 08:49:36 GMT, Sun, 06 Nov 1994 08:49:36 GMT"),
                false
            ),
            Proceed
        );
        // Ignored when If-Match is present (and passes).
        let both = Conditions {
            if_match: Some(ETAG),
            if_unmodified_since: Some(EARLIER),
            ..Default::default()
        };
        assert_eq!(eval(both, false), Proceed);
    }

    #[test]
    fn step3_if_none_match() {
        let inm = |s| Conditions {
            if_none_match: Some(s),
            ..Default::default()
        };
        assert_eq!(eval(inm(ETAG), true), NotModified);
        assert_eq!(eval(inm(ETAG), false), Failed);
        assert_eq!(eval(inm("*"), true), NotModified);
        assert_eq!(eval(inm("*"), false), Failed);
        // Weak comparison: a weak tag matches our strong one.
        assert_eq!(eval(inm("W/\"1a-2b-3c\""), true), NotModified);
        assert_eq!(
            eval(inm("\"a,b\", W/\"c\" ,\t\"1a-2b-3c\""), true),
            NotModified
        );
        assert_eq!(eval(inm("\"a,b\", W/\"c\""), true), Proceed);
        assert_eq!(eval(inm("\"1a-2b-3c"), true), Proceed);
        assert_eq!(eval(inm("1a-2b-3c"), true), Proceed);
        assert_eq!(eval(inm("w/\"1a-2b-3c\""), true), Proceed);
    }

    #[test]
    fn step4_if_modified_since() {
        let ims = |s| Conditions {
            if_modified_since: Some(s),
            ..Default::default()
        };
        assert_eq!(eval(ims(DATE), true), NotModified);
        assert_eq!(eval(ims(EARLIER), true), Proceed);
        assert_eq!(eval(ims(FUTURE), true), NotModified);
        assert_eq!(eval(ims(DATE), false), Proceed);
        assert_eq!(eval(ims("yesterday"), true), Proceed);
        // asctime and RFC 850 formats (§5.6.7 obsolete forms).
        assert_eq!(eval(ims("Sun Nov  6 08:49:37 1994"), true), NotModified);
        assert_eq!(
            eval(ims("Sunday, 06-Nov-94 08:49:37 GMT"), true),
            NotModified
        );
        assert_eq!(eval(ims("Sunday, 06-Nov-94 08:49:36 GMT"), true), Proceed);
    }

    #[test]
    fn precedence() {
        // A failing If-Match beats a matching If-None-Match.
        let c = Conditions {
            if_match: Some("\"x\""),
            if_none_match: Some(ETAG),
            ..Default::default()
        };
        assert_eq!(eval(c, true), Failed);
        // If-None-Match present (not matching) makes If-Modified-Since ignored.
        let c = Conditions {
            if_none_match: Some("\"x\""),
            if_modified_since: Some(DATE),
            ..Default::default()
        };
        assert_eq!(eval(c, true), Proceed);
        // A passing If-Match still lets If-None-Match produce 304.
        let c = Conditions {
            if_match: Some("*"),
            if_none_match: Some("*"),
            ..Default::default()
        };
        assert_eq!(eval(c, true), NotModified);
        // A failing If-Unmodified-Since beats a matching If-None-Match.
        let c = Conditions {
            if_unmodified_since: Some(EARLIER),
            if_none_match: Some(ETAG),
            ..Default::default()
        };
        assert_eq!(eval(c, true), Failed);
    }

    #[test]
    fn tag_comparison() {
        // The §8.8.3.2 example table.
        assert!(!strong_eq("W/\"1\"", "W/\"1\""));
        assert!(weak_eq("W/\"1\"", "W/\"1\""));
        assert!(!strong_eq("W/\"1\"", "W/\"2\""));
        assert!(!weak_eq("W/\"1\"", "W/\"2\""));
        assert!(!strong_eq("W/\"1\"", "\"1\""));
        assert!(weak_eq("W/\"1\"", "\"1\""));
        assert!(strong_eq("\"1\"", "\"1\""));
        assert!(weak_eq("\"1\"", "\"1\""));
        assert!(strong_eq(" \"\" ", "\"\""));
        assert!(strong_eq("\"a,b\"", "\"a,b\""));
        for bad in [
            "",
            "1",
            "\"",
            "W/",
            "W/1",
            "\"a\"b",
            "\"a b\"",
            "\"1\",\"1\"",
        ] {
            assert!(!weak_eq(bad, bad), "{bad:?}");
            assert!(!strong_eq(bad, bad), "{bad:?}");
        }
    }

    #[test]
    fn list_parsing() {
        assert_eq!(split_list("\"a\", W/\"b\""), Some(vec!["\"a\"", "W/\"b\""]));
        assert_eq!(split_list(" , \"a,b\" ,, "), Some(vec!["\"a,b\""]));
        assert_eq!(split_list("\"a\" \"b\""), None);
        assert_eq!(split_list("\"é\""), Some(vec!["\"é\""]));
        assert_eq!(split_list("*, \"a\""), None);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(a in ".*", b in "[ \t,W/\"a-z*]{0,30}", safe in any::<bool>()) {
                let _ = strong_eq(&a, &b);
                let _ = weak_eq(&b, &a);
                let c = Conditions { if_match: Some(&b), if_none_match: Some(&a), if_modified_since: Some(&a), if_unmodified_since: Some(&b) };
                let v = Validators { etag: "\"x\"", last_modified: std::time::UNIX_EPOCH };
                let _ = evaluate(&c, &v, safe);
            }
        }
    }
}
