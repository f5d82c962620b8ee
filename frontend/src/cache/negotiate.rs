//! Content-coding negotiation (pure): which of `br`, `zstd`, `gzip` or `identity` to send.
//!
//! RFC 9110 §12.5.3 Accept-Encoding:
//!
//! ```text
//! Accept-Encoding  = #( codings [ weight ] )
//! codings          = content-coding / "identity" / "*"
//! weight           = OWS ";" OWS "q=" qvalue
//! qvalue           = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
//! ```
//!
//! The server's preference on equal q is br, then zstd, then gzip, then identity: the smallest body
//! wins when the client does not care. When the client refuses everything we have, we still send
//! identity instead of a 406: a readable page beats an error, and the RFC allows it ("the origin
//! server SHOULD send a response without any content coding").

/// A content coding the front can send (RFC 9110 §8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Encoding {
    /// No transformation.
    Identity,
    /// Brotli (RFC 7932).
    Br,
    /// Zstandard (RFC 8878, HTTP use in RFC 9659).
    Zstd,
    /// gzip (RFC 1952).
    Gzip,
}

impl Encoding {
    /// The compressed codings in server preference order (smallest output first).
    pub(crate) const COMPRESSED: [Encoding; 3] = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];

    /// The content-coding token, as sent in `Content-Encoding` (`zstd`, not `zst`).
    pub(crate) fn token(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }

    /// What this coding adds inside the file version's ETag, so each representation has its own.
    pub(crate) fn etag_suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Br => "-br",
            Encoding::Zstd => "-zstd",
            Encoding::Gzip => "-gzip",
        }
    }

    /// The extension of a precompressed sibling file (`app.js.br`), if this coding has one.
    pub(crate) fn sibling_ext(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Br => Some(".br"),
            Encoding::Zstd => Some(".zst"),
            Encoding::Gzip => Some(".gz"),
        }
    }

    /// The ETag of this representation given the file version's tag: the suffix goes inside the
    /// quotes. RFC 9110 §8.8.3: a strong entity tag differs between representations of the same
    /// resource, and a gzip body is a different representation from the identity one.
    pub(crate) fn etag(self, base: &str) -> String {
        let suffix = self.etag_suffix();
        match base.strip_suffix('"') {
            Some(open) if !suffix.is_empty() && !open.is_empty() => {
                let mut s = String::with_capacity(base.len() + suffix.len());
                s.push_str(open);
                s.push_str(suffix);
                s.push('"');
                s
            }
            _ => base.to_owned(),
        }
    }

    /// Server preference rank: lower wins on equal q.
    fn rank(self) -> u8 {
        match self {
            Encoding::Br => 0,
            Encoding::Zstd => 1,
            Encoding::Gzip => 2,
            Encoding::Identity => 3,
        }
    }
}

/// q-values in thousandths: `q=0.5` is 500, `q=1` is 1000.
type Quality = u16;

/// What the header says about each coding we know, `None` where it says nothing.
#[derive(Debug, Default)]
struct Prefs {
    br: Option<Quality>,
    zstd: Option<Quality>,
    gzip: Option<Quality>,
    identity: Option<Quality>,
    star: Option<Quality>,
}

impl Prefs {
    fn parse(value: &str) -> Prefs {
        let mut p = Prefs::default();
        for element in value.split(',') {
            let Some((coding, q)) = parse_element(element) else {
                continue;
            };
            let slot = if coding.eq_ignore_ascii_case("br") {
                &mut p.br
            } else if coding.eq_ignore_ascii_case("zstd") {
                &mut p.zstd
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                // RFC 9110 §8.4.1.3: a recipient SHOULD consider "x-gzip" to be equivalent to "gzip".
                &mut p.gzip
            } else if coding.eq_ignore_ascii_case("identity") {
                &mut p.identity
            } else if coding == "*" {
                &mut p.star
            } else {
                continue;
            };
            // A coding listed twice with different weights is contradictory; honour the lower, so
            // a refusal (q=0) anywhere stands.
            *slot = Some(slot.map_or(q, |old| old.min(q)));
        }
        p
    }

    /// The client's weight for `enc`. RFC 9110 §12.5.3: `*` matches any available coding not
    /// listed; identity is acceptable by default "unless specifically excluded by the
    /// Accept-Encoding header field stating either identity;q=0 or *;q=0 without a more specific
    /// entry for identity". The RFC gives that default no weight; we make it the least positive
    /// one, so `br;q=0.5, gzip;q=0.4` gets br: a client that lists codings wants one of them.
    fn quality(&self, enc: Encoding) -> Quality {
        let listed = match enc {
            Encoding::Br => self.br,
            Encoding::Zstd => self.zstd,
            Encoding::Gzip => self.gzip,
            Encoding::Identity => self.identity,
        };
        match (listed, self.star, enc) {
            (Some(q), _, _) => q,
            (None, Some(q), _) => q,
            (None, None, Encoding::Identity) => 1,
            (None, None, _) => 0,
        }
    }
}

/// Splits one list element into its coding token and weight; `None` for anything malformed, so a
/// broken element is ignored rather than guessed at.
fn parse_element(element: &str) -> Option<(&str, Quality)> {
    let mut parts = element.split(';');
    let coding = parts.next()?.trim_matches([' ', '\t']);
    if coding.is_empty() || !coding.bytes().all(is_tchar) {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        let param = param.trim_matches([' ', '\t']);
        let (name, value) = param.split_once('=')?;
        // The grammar has no whitespace around "=", but being lenient here costs nothing.
        if name.trim_end().eq_ignore_ascii_case("q") {
            q = parse_qvalue(value.trim_start())?;
        }
        // Other parameters are not defined for Accept-Encoding; they are ignored.
    }
    Some((coding, q))
}

/// RFC 9110 §12.4.2 qvalue: `0`, `0.`, `0.5`, `0.125`, `1`, `1.000`; at most three decimals.
fn parse_qvalue(s: &str) -> Option<Quality> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: Quality = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += Quality::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §12.5.3: picks the best of `available` (in server preference order br, zstd, gzip) for
/// an Accept-Encoding value. No header → identity (clients that send none rarely decode anything);
/// an empty value means "no coding". q-values, `*` (matches codings not listed), `identity;q=0`
/// and `*;q=0`, case-insensitive tokens and `x-gzip` are honoured. On equal q: br, zstd, gzip,
/// identity. When everything is refused, identity is still what we send (never a 406).
pub(crate) fn negotiate(accept_encoding: Option<&str>, available: &[Encoding]) -> Encoding {
    let Some(value) = accept_encoding else {
        return Encoding::Identity;
    };
    let prefs = Prefs::parse(value);
    let mut best = Encoding::Identity;
    let mut best_q = prefs.quality(Encoding::Identity);
    for &enc in Encoding::COMPRESSED
        .iter()
        .filter(|e| available.contains(e))
    {
        let q = prefs.quality(enc);
        if q > 0 && (q > best_q || (q == best_q && enc.rank() < best.rank())) {
            best = enc;
            best_q = q;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::Encoding::{Br, Gzip, Identity, Zstd};
    use super::*;

    const ALL: &[Encoding] = &[Br, Zstd, Gzip];

    #[test]
    fn negotiation_table() {
        let cases: &[(Option<&str>, &[Encoding], Encoding)] = &[
            (None, ALL, Identity),
            (Some(""), ALL, Identity),
            (Some("gzip"), ALL, Gzip),
            (Some("GZIP"), ALL, Gzip),
            (Some("x-gzip"), ALL, Gzip),
            (Some("gzip;q=0"), ALL, Identity),
            (Some("br;q=0.5, gzip"), ALL, Gzip),
            (Some("br;q=0.5, gzip;q=0.4"), ALL, Br),
            (Some("br, zstd, gzip"), ALL, Br),
            (Some("gzip, zstd, br"), ALL, Br),
            (Some("gzip, deflate, br, zstd"), &[Zstd, Gzip], Zstd),
            (Some("zstd, gzip;q=0.9"), ALL, Zstd),
            (Some("zstd;q=0.9, gzip"), ALL, Gzip),
            (Some("deflate"), ALL, Identity),
            (Some("compress, deflate"), ALL, Identity),
            (Some("*"), ALL, Br),
            (Some("*"), &[], Identity),
            (Some("*;q=0"), ALL, Identity),
            (Some("*;q=0, gzip"), ALL, Gzip),
            (Some("*;q=0.5, br;q=0"), ALL, Zstd),
            (Some("identity;q=0"), ALL, Identity),
            (Some("identity;q=0, gzip;q=0.1"), ALL, Gzip),
            (Some("identity, gzip;q=0.999"), ALL, Identity),
            (Some("identity;q=0.5, gzip;q=0.5"), ALL, Gzip),
            (Some("gzip;q=0.001"), ALL, Gzip),
            (Some("gzip;q=0.001, identity;q=0.002"), ALL, Identity),
            (Some("identity;q=0, gzip;q=0.001"), ALL, Gzip),
            (Some("br;q=0.125, gzip;q=0.124, identity;q=0"), ALL, Br),
            (Some("br;q=0.1234, gzip"), ALL, Gzip),
            (Some("gzip;q=1.5"), ALL, Identity),
            (Some("gzip;q=abc"), ALL, Identity),
            (Some("gzip;q="), ALL, Identity),
            (Some("gzip;q=-1"), ALL, Identity),
            (Some("gzip;q=1.000"), ALL, Gzip),
            (Some("gzip;q=0."), ALL, Identity),
            (Some("gzip;Q=0.5"), ALL, Gzip),
            (Some("  br ;  q=0.8 ,\tgzip ; q=0.9 "), ALL, Gzip),
            (Some("gzip;level=1"), ALL, Gzip),
            (Some(",,, gzip ,,"), ALL, Gzip),
            (Some("@@@ garbage ¿"), ALL, Identity),
            (Some("g zip"), ALL, Identity),
            (Some("br"), &[Zstd, Gzip], Identity),
            (Some("br, gzip"), &[Gzip], Gzip),
            (Some("gzip;q=0, gzip"), ALL, Identity),
            (Some("Br, ZSTD"), ALL, Br),
            (Some("zstd"), &[Br, Gzip, Zstd], Zstd),
            (Some("gzip"), &[Identity], Identity),
        ];
        for (header, available, want) in cases {
            assert_eq!(
                negotiate(*header, available),
                *want,
                "Accept-Encoding {header:?} with {available:?}"
            );
        }
    }

    #[test]
    fn qvalue_grammar() {
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0.999"), Some(999));
        assert_eq!(parse_qvalue("1."), Some(1000));
        assert_eq!(parse_qvalue("1.001"), None);
        assert_eq!(parse_qvalue("0.1234"), None);
        assert_eq!(parse_qvalue("2"), None);
        assert_eq!(parse_qvalue(".5"), None);
        assert_eq!(parse_qvalue("00.5"), None);
        assert_eq!(parse_qvalue("0.+5"), None);
    }

    #[test]
    fn tokens_suffixes_and_siblings() {
        assert_eq!(Zstd.token(), "zstd");
        assert_eq!(Br.token(), "br");
        assert_eq!(Gzip.token(), "gzip");
        assert_eq!(Identity.token(), "identity");
        assert_eq!(Zstd.sibling_ext(), Some(".zst"));
        assert_eq!(Gzip.sibling_ext(), Some(".gz"));
        assert_eq!(Br.sibling_ext(), Some(".br"));
        assert_eq!(Identity.sibling_ext(), None);
        assert_eq!(Identity.etag_suffix(), "");
        assert_eq!(Zstd.etag_suffix(), "-zstd");
    }

    #[test]
    fn etag_suffix_goes_inside_the_quotes() {
        assert_eq!(Gzip.etag("\"1a-2b\""), "\"1a-2b-gzip\"");
        assert_eq!(Br.etag("W/\"x\""), "W/\"x-br\"");
        assert_eq!(Identity.etag("\"x\""), "\"x\"");
        assert_eq!(Zstd.etag("unquoted"), "unquoted");
        assert_eq!(Zstd.etag("\""), "\"");
    }
}
