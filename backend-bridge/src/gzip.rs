//! gzip on the way through, as nginx's `gzip_proxied any`: a text answer the backend sent
//! uncompressed is compressed at a fast level as it passes, so PHP pages reach clients as small as
//! static ones without Apache's mod_deflate. Each piece is sync-flushed, so the client gets what the
//! backend has sent so far (a page that flushes early still renders early).

use std::io::{self, Write};

use bytes::{BufMut, Bytes, BytesMut};
use flate2::write::GzEncoder;
use flate2::Compression;

/// The gzip level of answers compressed on the way: fast, most of the gain (nginx's default is 1).
pub const LEVEL: u32 = 1;

/// A streaming gzip encoder over an answer's payload.
pub struct GzipStream {
    enc: GzEncoder<Vec<u8>>,
}

impl std::fmt::Debug for GzipStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipStream").finish_non_exhaustive()
    }
}

impl Default for GzipStream {
    fn default() -> Self {
        GzipStream::new(LEVEL)
    }
}

impl GzipStream {
    /// An encoder at `level` (1-9).
    pub fn new(level: u32) -> GzipStream {
        GzipStream {
            enc: GzEncoder::new(
                Vec::with_capacity(8 * 1024),
                Compression::new(level.clamp(1, 9)),
            ),
        }
    }

    /// Compresses `data` and returns the compressed bytes ready so far.
    pub fn push(&mut self, data: &[u8]) -> io::Result<Bytes> {
        self.enc.write_all(data)?;
        self.enc.flush()?;
        Ok(Bytes::from(std::mem::take(self.enc.get_mut())))
    }

    /// Ends the stream: the last compressed bytes and the gzip trailer.
    pub fn finish(self) -> io::Result<Bytes> {
        self.enc.finish().map(Bytes::from)
    }
}

/// `data` as one HTTP/1.1 chunk (empty data gives nothing: an empty chunk would end the body).
pub fn chunk(data: &[u8]) -> Bytes {
    if data.is_empty() {
        return Bytes::new();
    }
    let mut out = BytesMut::with_capacity(data.len() + 12);
    out.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.put_slice(data);
    out.put_slice(b"\r\n");
    out.freeze()
}

/// The end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn pieces_decompress_to_the_whole() {
        let text: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut gz = GzipStream::default();
        let mut out = Vec::new();
        for piece in text.chunks(7_000) {
            let got = gz.push(piece).unwrap();
            assert!(!got.is_empty(), "each piece is flushed");
            out.extend_from_slice(&got);
        }
        out.extend_from_slice(&gz.finish().unwrap());
        assert!(
            out.len() < text.len() / 3,
            "{} of {}",
            out.len(),
            text.len()
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn chunks_are_framed() {
        assert_eq!(&chunk(b"hello")[..], b"5\r\nhello\r\n");
        assert!(chunk(b"").is_empty());
    }
}
