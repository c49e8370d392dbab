//! Opens an object's bytes for reading: sniffs gzip by its magic bytes (never by the key's
//! extension), decodes every member of a multi-member stream, and refuses decompression bombs
//! early with a byte cap and a ratio cap, in bounded memory.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::bufread::MultiGzDecoder;
use sha2::{Digest, Sha256};

/// Caps on decompression.
#[derive(Debug, Clone, Copy)]
pub struct DecompressLimits {
    /// Most bytes one object may decompress to.
    pub max_bytes: u64,
    /// Most decompressed bytes per compressed byte, checked once `ratio_after` bytes are out.
    /// CloudTrail JSON compresses 10-30x; a bomb of zeros compresses ~1000x.
    pub max_ratio: u64,
    pub ratio_after: u64,
}

impl Default for DecompressLimits {
    fn default() -> Self {
        DecompressLimits { max_bytes: 16 << 30, max_ratio: 200, ratio_after: 8 << 20 }
    }
}

/// Why decompression stopped: carried inside an `io::Error` so it crosses the `Read` chain.
#[derive(Debug)]
pub struct BombError(pub String);

impl std::fmt::Display for BombError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BombError {}

/// Counts and hashes the raw (compressed) bytes as they are read: the hash names the object's
/// lake files when there is no ETag.
struct Tap<R> {
    inner: R,
    count: Arc<AtomicU64>,
    hash: Option<Sha256>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

struct Capped<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    out: u64,
    limits: DecompressLimits,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        if self.out > self.limits.max_bytes {
            return Err(io::Error::other(BombError(format!(
                "decompressed size exceeds the cap of {} bytes",
                self.limits.max_bytes
            ))));
        }
        let inp = self.compressed.load(Ordering::Relaxed).max(1);
        if self.out > self.limits.ratio_after && self.out / inp > self.limits.max_ratio {
            return Err(io::Error::other(BombError(format!(
                "compression ratio over {}:1 ({} bytes from {inp}): refused as a decompression bomb",
                self.limits.max_ratio, self.out
            ))));
        }
        Ok(n)
    }
}

/// What the first bytes said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Empty,
    Gzip,
    Plain,
}

/// A decoded object being read.
pub struct Opened<'a> {
    pub reader: Box<dyn BufRead + 'a>,
    pub encoding: Encoding,
    pub hash: ContentHash,
}

/// The SHA-256 of an object's raw bytes, available once the reader reached the end.
pub struct ContentHash(Option<Arc<std::sync::Mutex<Option<Sha256>>>>);

impl ContentHash {
    /// Lowercase hex, or `None` when hashing was off or the stream was not read to its end.
    pub fn finish(self) -> Option<String> {
        let h = self.0?.lock().ok()?.take()?;
        Some(trailwatch_core::lake::hex(&h.finalize()))
    }
}

/// Wraps a raw object stream: sniffs, decodes, caps, and (with `hash_content`) hashes it.
pub fn open<'a>(raw: impl Read + 'a, limits: DecompressLimits, hash_content: bool) -> io::Result<Opened<'a>> {
    let count = Arc::new(AtomicU64::new(0));
    let hasher = Arc::new(std::sync::Mutex::new(None::<Sha256>));
    let tap = HashTap {
        inner: Tap { inner: raw, count: count.clone(), hash: hash_content.then(Sha256::new) },
        out: hasher.clone(),
    };
    let mut buffered = BufReader::with_capacity(64 << 10, tap);
    let head = loop {
        match buffered.fill_buf() {
            Ok(b) => break b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    let encoding = match head {
        [] => Encoding::Empty,
        [0x1f, 0x8b, ..] => Encoding::Gzip,
        _ => Encoding::Plain,
    };
    let reader: Box<dyn BufRead + 'a> = match encoding {
        Encoding::Gzip => {
            let capped = Capped { inner: MultiGzDecoder::new(buffered), compressed: count, out: 0, limits };
            Box::new(BufReader::with_capacity(256 << 10, capped))
        }
        _ => Box::new(buffered),
    };
    Ok(Opened { reader, encoding, hash: ContentHash(hash_content.then_some(hasher)) })
}

/// Publishes the finished hash when the stream ends, so [`Opened::content_hash`] can read it
/// after the reader chain (which owns the tap) is done.
struct HashTap<R> {
    inner: Tap<R>,
    out: Arc<std::sync::Mutex<Option<Sha256>>>,
}

impl<R: Read> Read for HashTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(h) = self.inner.hash.take() {
                *self.out.lock().expect("hash lock") = Some(h);
            }
        }
        Ok(n)
    }
}

/// True when `e` is the bomb guard's refusal.
pub fn is_bomb(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<BombError>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_all(bytes: &[u8], limits: DecompressLimits) -> io::Result<(Encoding, Vec<u8>, Option<String>)> {
        let Opened { mut reader, encoding, hash } = open(bytes, limits, true)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        drop(reader);
        Ok((encoding, out, hash.finish()))
    }

    #[test]
    fn multi_member_gzip_reads_every_member() {
        let mut data = gz(b"{\"Records\":[{\"a\":1}]}");
        data.extend(gz(b"{\"Records\":[{\"a\":2}]}"));
        let (enc, out, hash) = read_all(&data, DecompressLimits::default()).unwrap();
        assert_eq!(enc, Encoding::Gzip);
        assert_eq!(out, b"{\"Records\":[{\"a\":1}]}{\"Records\":[{\"a\":2}]}");
        assert_eq!(hash.unwrap(), trailwatch_core::lake::hex(&Sha256::digest(&data)));
    }

    #[test]
    fn plain_and_empty() {
        assert_eq!(read_all(b"", DecompressLimits::default()).unwrap().0, Encoding::Empty);
        let (enc, out, _) = read_all(b"[1]", DecompressLimits::default()).unwrap();
        assert_eq!((enc, out.as_slice()), (Encoding::Plain, &b"[1]"[..]));
    }

    #[test]
    fn truncated_and_corrupt_gzip_fail() {
        let data = gz(&vec![b'x'; 100_000]);
        let err = read_all(&data[..data.len() / 2], DecompressLimits::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut bad = data.clone();
        bad[20] ^= 0xff;
        bad[21] ^= 0xff;
        assert!(read_all(&bad, DecompressLimits::default()).is_err());
    }

    #[test]
    fn bombs_are_refused_early() {
        let data = gz(&vec![0u8; 64 << 20]);
        let limits = DecompressLimits { max_bytes: 1 << 40, max_ratio: 100, ratio_after: 1 << 20 };
        let err = read_all(&data, limits).unwrap_err();
        assert!(is_bomb(&err), "{err}");
        let limits = DecompressLimits { max_bytes: 1 << 20, max_ratio: 1 << 20, ratio_after: 1 << 40 };
        assert!(is_bomb(&read_all(&data, limits).unwrap_err()));
    }
}
