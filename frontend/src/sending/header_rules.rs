//! Response fields by path for the answers the front serves itself (nginx's `add_header` and
//! `expires` in a `location`): `--add-header '/assets/*=Cache-Control: public, max-age=31536000,
//! immutable'`, `--add-header '*.html=X-Frame-Options: SAMEORIGIN'`. A pattern starting with `/`
//! is matched against the whole path (`*` spans `/` too), any other against the last segment. A
//! field a rule sets replaces the front's own of that name (`Cache-Control: no-cache` by default).
//! Answers from the backend are Apache's business and are left as Apache sent them.

use http::{HeaderName, HeaderValue};

/// One `--add-header` rule.
#[derive(Debug, Clone)]
pub struct HeaderRule {
    pattern: String,
    name: HeaderName,
    value: HeaderValue,
}

impl HeaderRule {
    /// Parses `PATTERN=NAME: VALUE`.
    pub fn parse(spec: &str) -> Result<HeaderRule, String> {
        let (pattern, field) = spec.split_once('=').ok_or(
            "expected PATTERN=NAME: VALUE, e.g. /assets/*=Cache-Control: max-age=31536000",
        )?;
        let (name, value) = field
            .split_once(':')
            .ok_or("expected PATTERN=NAME: VALUE (no ':' after the field name)")?;
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err("empty PATTERN".into());
        }
        let name = HeaderName::try_from(name.trim()).map_err(|e| format!("field name: {e}"))?;
        // Framing and the front's validators are not the operator's to override.
        const RESERVED: [&str; 8] = [
            "content-length",
            "transfer-encoding",
            "connection",
            "content-encoding",
            "content-type",
            "etag",
            "last-modified",
            "content-range",
        ];
        if RESERVED.contains(&name.as_str()) {
            return Err(format!("{name} is set by the front itself"));
        }
        let value = HeaderValue::from_str(value.trim()).map_err(|e| format!("field value: {e}"))?;
        Ok(HeaderRule {
            pattern: pattern.to_owned(),
            name,
            value,
        })
    }

    /// Whether the rule applies to the request path `path` (without the query).
    pub fn matches(&self, path: &str) -> bool {
        if self.pattern.starts_with('/') {
            glob(self.pattern.as_bytes(), path.as_bytes())
        } else {
            let last = path.rsplit('/').next().unwrap_or(path);
            glob(self.pattern.as_bytes(), last.as_bytes())
        }
    }

    /// The field's name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The field's value.
    pub fn value(&self) -> &HeaderValue {
        &self.value
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of bytes and `?` any one byte
/// (iterative, linear in practice: the classic star-backtracking match).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The rules that apply to `path`, in the order given; of several setting the same field, the
/// last one given wins.
pub(crate) fn effective<'a>(rules: &'a [HeaderRule], path: &str) -> Vec<&'a HeaderRule> {
    let mut out: Vec<&HeaderRule> = Vec::new();
    for r in rules.iter().filter(|r| r.matches(path)) {
        out.retain(|kept| kept.name != r.name);
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let r = HeaderRule::parse("/assets/*=Cache-Control: public, max-age=31536000, immutable")
            .unwrap();
        assert_eq!(r.name(), "cache-control");
        assert_eq!(r.value(), "public, max-age=31536000, immutable");
        assert!(r.matches("/assets/app.js"));
        assert!(r.matches("/assets/img/logo.svg"));
        assert!(!r.matches("/index.html"));
        assert!(!r.matches("/x/assets/app.js"));
        let css = HeaderRule::parse("*.css=X-Test: 1").unwrap();
        assert!(css.matches("/a/b/style.css"));
        assert!(!css.matches("/a/b/style.css.map"));
        let q = HeaderRule::parse("/f?le.txt=X-Test: 1").unwrap();
        assert!(q.matches("/file.txt") && !q.matches("/fiile.txt"));
        assert!(glob(b"*a*b*c*", b"xxaxxbxxcxx"));
        assert!(!glob(b"*a*b*c", b"xxaxxbxxcxx"));
        // A long path against many stars stays quick (no exponential backtracking).
        let long = "a".repeat(5000);
        assert!(!glob(b"*a*a*a*a*a*a*a*a*b", long.as_bytes()));
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "nofield",
            "/x=NoColon",
            "=X: 1",
            "/x=Bad Name: 1",
            "/x=Content-Length: 5",
            "/x=X: a\nb",
        ] {
            assert!(HeaderRule::parse(bad).is_err(), "{bad}");
        }
    }
}
