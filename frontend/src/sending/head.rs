//! The caching fields of an answer the front serves itself (a file or a listing, on 200, 206 and
//! 304 alike), one list for both encoders: the fast path writes it as HTTP/1.1 bytes, the hyper
//! pipeline inserts it into the answer's `HeaderMap`. Decided here once, so the two transports
//! cannot drift apart field by field.

use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, ETAG, LAST_MODIFIED, VARY};
use http::HeaderMap;

use crate::config::Config;
use crate::sending::header_rules;

/// What one answer's caching fields are made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caching<'a> {
    /// The representation's strong ETag.
    pub(crate) etag: Option<&'a HeaderValue>,
    /// `Last-Modified`.
    pub(crate) last_modified: Option<&'a HeaderValue>,
    /// The request field the representation was chosen by (`Accept-Encoding`, `Accept`).
    pub(crate) vary: Option<&'static str>,
}

/// Calls `put` for each field, in the order both encoders write them: `ETag`, `Last-Modified`,
/// the front's default `Cache-Control`, `Vary`, then the operator's rules for `path`
/// (`--add-header`, `[[headers]]`). A field of the front's that a rule names is left out, so the
/// rule's value is the only one on the wire; but `Vary` is a list both keep (a rule's `Vary:
/// Origin` must not hide from caches that a file's body varies with `Accept-Encoding`).
pub(crate) fn caching_fields(
    c: &Caching<'_>,
    cfg: &Config,
    path: &str,
    mut put: impl FnMut(&HeaderName, &HeaderValue),
) {
    let rules = if cfg.header_rules.is_empty() {
        Vec::new()
    } else {
        header_rules::effective(&cfg.header_rules, path)
    };
    let ruled = |name: &HeaderName| *name != VARY && rules.iter().any(|r| r.name() == name);
    let vary = c.vary.map(HeaderValue::from_static);
    let own = [
        (ETAG, c.etag),
        (LAST_MODIFIED, c.last_modified),
        (CACHE_CONTROL, cfg.cache_control_value.as_ref()),
        (VARY, vary.as_ref()),
    ];
    for (name, value) in own {
        if let Some(value) = value.filter(|_| !ruled(&name)) {
            put(&name, value);
        }
    }
    for rule in rules {
        put(rule.name(), rule.value());
    }
}

/// [`caching_fields`] into a header map (the hyper pipeline's encoder).
pub(crate) fn insert_caching_fields(h: &mut HeaderMap, c: &Caching<'_>, cfg: &Config, path: &str) {
    caching_fields(c, cfg, path, |name, value| {
        if *name == VARY {
            h.append(name.clone(), value.clone());
        } else {
            h.insert(name.clone(), value.clone());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(extra: &[&str]) -> Config {
        let root = std::env::temp_dir();
        let mut args = vec!["khttpd-front", "--root", root.to_str().unwrap()];
        args.extend_from_slice(extra);
        Config::try_from(crate::config::args::Args::try_parse_from(args).unwrap()).unwrap()
    }

    fn lines(c: &Caching<'_>, cfg: &Config, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        caching_fields(c, cfg, path, |n, v| {
            out.push(format!("{n}: {}", v.to_str().unwrap()))
        });
        out
    }

    #[test]
    fn one_list_in_one_order_and_rules_replace_all_but_vary() {
        let etag = HeaderValue::from_static("\"e\"");
        let lm = HeaderValue::from_static("Sat, 01 Jan 2000 00:00:00 GMT");
        let c = Caching {
            etag: Some(&etag),
            last_modified: Some(&lm),
            vary: Some("Accept-Encoding"),
        };
        assert_eq!(
            lines(&c, &config(&[]), "/a.css"),
            [
                "etag: \"e\"",
                "last-modified: Sat, 01 Jan 2000 00:00:00 GMT",
                "cache-control: no-cache",
                "vary: Accept-Encoding",
            ]
        );
        let cfg = config(&[
            "--add-header",
            "/assets/*=Cache-Control: public, max-age=60",
            "--add-header",
            "*.css=Vary: Origin",
            "--add-header",
            "*.css=X-Frame-Options: DENY",
        ]);
        assert_eq!(
            lines(&c, &cfg, "/assets/a.css"),
            [
                "etag: \"e\"",
                "last-modified: Sat, 01 Jan 2000 00:00:00 GMT",
                "vary: Accept-Encoding",
                "cache-control: public, max-age=60",
                "vary: Origin",
                "x-frame-options: DENY",
            ]
        );
        // Both encoders: the map keeps both Vary values and one Cache-Control.
        let mut h = HeaderMap::new();
        insert_caching_fields(&mut h, &c, &cfg, "/assets/a.css");
        assert_eq!(h.get_all(VARY).iter().count(), 2);
        assert_eq!(h[CACHE_CONTROL], "public, max-age=60");
    }
}
