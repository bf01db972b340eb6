//! One body's compressor: zstd, brotli or gzip behind one streaming
//! interface (bytes in, compressed bytes out as they are ready, a flush
//! for a live stream, a finish), made on the first bytes so that a HEAD
//! or a declined body never allocates one.

use crate::Levels;
use std::io::Write;
use tamada_coding::Coding;

enum Inner {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// A compressor for one body.
pub struct Encoder {
    coding: Coding,
    level: u32,
    /// The body's length when known: smaller tables for small bodies.
    size: Option<u64>,
    inner: Option<Inner>,
}

/// brotli's window (log2): 1 MiB for bodies that long, smaller for
/// shorter ones (its memory follows it).
fn br_window(size: Option<u64>) -> u32 {
    match size {
        Some(n) => (64 - n.max(1).leading_zeros()).clamp(16, 20),
        None => 20,
    }
}

impl Encoder {
    pub fn new(coding: Coding, levels: &Levels, size: Option<u64>) -> Self {
        Encoder {
            coding,
            level: levels.of(coding),
            size,
            inner: None,
        }
    }

    fn inner(&mut self) -> Result<&mut Inner, String> {
        if self.inner.is_none() {
            let out = Vec::with_capacity(16 * 1024);
            self.inner = Some(match self.coding {
                Coding::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                    out,
                    flate2::Compression::new(self.level),
                )),
                Coding::Br => Inner::Br(Box::new(brotli::CompressorWriter::new(
                    out,
                    16 * 1024,
                    self.level,
                    br_window(self.size),
                ))),
                Coding::Zstd => {
                    let mut e = zstd::stream::write::Encoder::new(out, self.level as i32)
                        .map_err(|e| format!("zstd: {e}"))?;
                    if let Some(n) = self.size {
                        e.set_pledged_src_size(Some(n))
                            .map_err(|e| format!("zstd: {e}"))?;
                    }
                    Inner::Zstd(e)
                }
            });
        }
        Ok(self.inner.as_mut().expect("made above"))
    }

    /// Compresses `input`; what is ready is moved to `out`.
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let r = match self.inner()? {
            Inner::Gzip(e) => e.write_all(input).map(|_| take(e.get_mut(), out)),
            Inner::Br(e) => e.write_all(input).map(|_| take(e.get_mut(), out)),
            Inner::Zstd(e) => e.write_all(input).map(|_| take(e.get_mut(), out)),
        };
        r.map_err(|e| format!("{}: {e}", self.coding.token()))
    }

    /// Everything given so far comes out now (a live stream's chunk).
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let r = match inner {
            Inner::Gzip(e) => e.flush().map(|_| take(e.get_mut(), out)),
            Inner::Br(e) => e.flush().map(|_| take(e.get_mut(), out)),
            Inner::Zstd(e) => e.flush().map(|_| take(e.get_mut(), out)),
        };
        r.map_err(|e| format!("{}: {e}", self.coding.token()))
    }

    /// Ends the compressed stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        self.inner()?;
        let token = self.coding.token();
        let v = match self.inner.take().expect("made above") {
            Inner::Gzip(e) => e.finish().map_err(|e| format!("{token}: {e}"))?,
            Inner::Br(e) => e.into_inner(),
            Inner::Zstd(e) => e.finish().map_err(|e| format!("{token}: {e}"))?,
        };
        out.extend_from_slice(&v);
        Ok(())
    }
}

/// Moves what the compressor wrote to `out` (the compressor's buffer
/// keeps its capacity).
fn take(buf: &mut Vec<u8>, out: &mut Vec<u8>) {
    if out.is_empty() {
        std::mem::swap(buf, out);
    } else {
        out.extend_from_slice(buf);
        buf.clear();
    }
}
