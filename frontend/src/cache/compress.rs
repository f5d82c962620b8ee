//! Compress-once encoders for cached bodies: brotli, zstd and gzip at high levels.
//!
//! A body is compressed once per file version and then served from memory many times, so the slow,
//! small settings pay: brotli quality 11, zstd level 19, gzip level 9. The work is CPU-bound and can
//! take seconds for a few megabytes at brotli 11, so [`compress`] blocks and callers run it on the
//! blocking pool under a concurrency limit (see [`crate::cache::store`]).

use std::io::Write;

use bytes::Bytes;

use crate::cache::negotiate::Encoding;

/// Brotli quality: 11 is the slowest and smallest, right for compress-once.
const BROTLI_QUALITY: i32 = 11;
/// Above this size brotli 11 costs too much for one request's first miss: 4.2 s of CPU and 34 MiB
/// for 2 MB of text (0.9 s and 17 MiB for 490 KB). Larger bodies get [`BROTLI_QUALITY_LARGE`].
const BROTLI_Q11_MAX: usize = 512 << 10;
/// Quality for bodies above [`BROTLI_Q11_MAX`]: 2 MB of text in 0.17 s and 13 MiB, 6 % larger
/// than quality 11 (a precompressed `.br` sibling made offline gets the best of both).
const BROTLI_QUALITY_LARGE: i32 = 5;
/// Brotli window (log2 bytes): 22 = 4 MiB, the largest every browser decodes with the default window
/// (large-window brotli is not a registered HTTP coding).
const BROTLI_LGWIN: i32 = 22;
/// The smallest window brotli's quality 10 and 11 use.
const BROTLI_MIN_LGWIN: i32 = 16;
/// zstd level 19: the strongest level that keeps the window at 8 MiB.
const ZSTD_LEVEL: i32 = 19;
/// Above [`BROTLI_Q11_MAX`], zstd's level 19 tables grow with the input: 2 MB of text takes
/// 34 MiB and 1.2 s at 19, 3.5 MiB and 52 ms at 6 (7 % larger; level 12 was larger and slower).
const ZSTD_LEVEL_LARGE: i32 = 6;
/// RFC 9659 §3: "the window size limit of 8 MB" for the `zstd` content coding; 2^23 bytes.
const ZSTD_WINDOW_LOG: i32 = 23;
/// gzip (deflate) level 9: best compression.
const GZIP_LEVEL: u32 = 9;
/// Least absolute saving, in bytes, for a compressed variant to be kept: below it the client
/// decodes for nothing and the cache holds a second copy for nothing.
const MIN_SAVING_BYTES: usize = 16;
/// Least relative saving, as a divisor of the identity size (1/32 ≈ 3 %), for the same reason.
const MIN_SAVING_DIVISOR: usize = 32;

/// Whether compressing a body of this type and size is worth trying: the type is compressible (the
/// caller passes `khttpd_mime`'s flag: text, JSON, SVG…, not JPEG or zip) and `len >= min_len`
/// (below a few hundred bytes the coding's headers eat the saving).
pub(crate) fn worth_compressing(compressible: bool, len: u64, min_len: u64) -> bool {
    compressible && len >= min_len
}

/// Compresses `data` with `enc` at a high, compress-once level (brotli quality 11 up to 512 KiB and
/// 5 above, its window fitted to the input; zstd level 19 up to 512 KiB and 6 above; gzip level
/// 9). Blocking and CPU-heavy: call it on a blocking thread. Returns `None`
/// when `enc` is identity, when encoding fails, or when the result does not save at least 16 bytes
/// and 1/32 of the input.
pub(crate) fn compress(data: &[u8], enc: Encoding) -> Option<Bytes> {
    let mut out = match enc {
        Encoding::Identity => return None,
        Encoding::Br => brotli(data)?,
        Encoding::Zstd => zstd(data)?,
        Encoding::Gzip => gzip(data)?,
    };
    let saving = MIN_SAVING_BYTES.max(data.len() / MIN_SAVING_DIVISOR);
    if out.len().saturating_add(saving) > data.len() {
        return None;
    }
    // The cache weighs a body by its length, so the buffer must not hold spare capacity.
    out.shrink_to_fit();
    Some(Bytes::from(out))
}

/// The window for `len` bytes: the smallest that holds the whole input (a larger one finds
/// nothing more), at most [`BROTLI_LGWIN`]. Quality 11's match finder keeps two 32-bit entries
/// per window position, so the window is most of an encoder's memory: 32 MiB at lgwin 22 against
/// 4 MiB at 19 for a 490 KB file (two such compressions at once took 62 MiB of RSS, 46 MiB once
/// fitted).
fn brotli_lgwin(len: usize) -> i32 {
    // A window of 2^w bytes holds 2^w - 16 of history.
    let need = (len + 16).next_power_of_two().trailing_zeros() as i32;
    need.clamp(BROTLI_MIN_LGWIN, BROTLI_LGWIN)
}

fn brotli(data: &[u8]) -> Option<Vec<u8>> {
    let quality = if data.len() <= BROTLI_Q11_MAX {
        BROTLI_QUALITY
    } else {
        BROTLI_QUALITY_LARGE
    };
    let params = brotli::enc::BrotliEncoderParams {
        quality,
        lgwin: brotli_lgwin(data.len()),
        size_hint: data.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    let mut input = data;
    brotli::BrotliCompress(&mut input, &mut out, &params).ok()?;
    Some(out)
}

fn zstd(data: &[u8]) -> Option<Vec<u8>> {
    let level = if data.len() <= BROTLI_Q11_MAX {
        ZSTD_LEVEL
    } else {
        ZSTD_LEVEL_LARGE
    };
    let mut c = zstd::bulk::Compressor::new(level).ok()?;
    // zstd shrinks the window to the input size on its own (the content size is known), so this
    // only caps inputs above 8 MiB, which browsers would otherwise refuse to decode.
    c.set_parameter(zstd::zstd_safe::CParameter::WindowLog(
        ZSTD_WINDOW_LOG as u32,
    ))
    .ok()?;
    c.compress(data).ok()
}

fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    let out = Vec::with_capacity(data.len() / 3 + 64);
    let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
    e.write_all(data).ok()?;
    e.finish().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Text that compresses well but is not trivially repetitive.
    fn text(n: usize) -> Vec<u8> {
        let words = [
            "static ",
            "files ",
            "kHTTPd ",
            "served ",
            "from ",
            "memory, ",
            "<div class=\"x\">",
            "</div>\n",
            "Apache ",
            "backend ",
            "compressed ",
            "once; ",
        ];
        let mut v = Vec::with_capacity(n + 32);
        let mut i = 7usize;
        while v.len() < n {
            i = i.wrapping_mul(1103515245).wrapping_add(12345);
            v.extend_from_slice(words[(i >> 16) % words.len()].as_bytes());
        }
        v.truncate(n);
        v
    }

    /// xorshift noise: incompressible.
    fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn decode(enc: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match enc {
            Encoding::Br => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Zstd => out = zstd::stream::decode_all(data).unwrap(),
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Identity => out = data.to_vec(),
        }
        out
    }

    #[test]
    fn each_encoding_round_trips() {
        let data = text(30_000);
        for enc in Encoding::COMPRESSED {
            let c = compress(&data, enc).unwrap_or_else(|| panic!("{enc:?} should pay"));
            assert!(c.len() < data.len() / 2, "{enc:?}: {} bytes", c.len());
            assert_eq!(decode(enc, &c), data, "{enc:?} round trip");
        }
    }

    #[test]
    fn empty_and_odd_sizes_round_trip_or_decline() {
        for n in [0, 1, 300, 4097, 20_001] {
            let data = text(n);
            for enc in Encoding::COMPRESSED {
                if let Some(c) = compress(&data, enc) {
                    assert_eq!(decode(enc, &c), data, "{enc:?} at {n} bytes");
                }
            }
        }
    }

    #[test]
    fn incompressible_data_is_declined() {
        let data = noise(64 * 1024);
        for enc in Encoding::COMPRESSED {
            assert!(compress(&data, enc).is_none(), "{enc:?} on noise");
        }
    }

    #[test]
    fn tiny_input_is_declined() {
        for enc in Encoding::COMPRESSED {
            assert!(compress(b"hello", enc).is_none(), "{enc:?}");
            assert!(compress(b"", enc).is_none(), "{enc:?}");
        }
    }

    #[test]
    fn brotli_window_fits_the_input() {
        assert_eq!(brotli_lgwin(0), BROTLI_MIN_LGWIN);
        assert_eq!(brotli_lgwin(490_000), 19);
        assert_eq!(brotli_lgwin((1 << 19) - 16), 19);
        assert_eq!(brotli_lgwin((1 << 19) - 15), 20);
        assert_eq!(brotli_lgwin(100 << 20), BROTLI_LGWIN);
        // Same bytes back whatever the window.
        for n in [1000, 70_000, 600_000] {
            let data = text(n);
            let out = compress(&data, Encoding::Br).unwrap();
            assert_eq!(decode(Encoding::Br, &out), data);
        }
    }

    #[test]
    fn identity_is_never_compressed() {
        assert!(compress(&text(10_000), Encoding::Identity).is_none());
    }

    #[test]
    fn worth_compressing_needs_type_and_size() {
        assert!(worth_compressing(true, 256, 256));
        assert!(!worth_compressing(true, 255, 256));
        assert!(!worth_compressing(false, 1 << 20, 256));
    }
}
