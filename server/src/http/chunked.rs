//! An incremental decoder for `Transfer-Encoding: chunked` request bodies
//! (RFC 9112 section 7.1): bytes in, body bytes out, any split allowed.
//! Chunk extensions are skipped; trailer fields are read and dropped.

/// Longest chunk-size line or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most bytes of trailer fields accepted (they are read and dropped).
const MAX_TRAILERS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer lines, up to the empty line.
    Trailers,
    Done,
}

/// Decoder state.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// A partial line (size line or trailer) carried between calls.
    line: Vec<u8>,
    /// Trailer bytes seen so far.
    trailer_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }
}

/// Malformed chunked framing.
#[derive(Debug, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl Decoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input` into `out`. Returns (bytes of input consumed,
    /// bytes written to out). Stops when `out` is full, the input is used
    /// up, or the body ends (`is_done`).
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), ChunkError> {
        let mut i = 0;
        let mut o = 0;
        loop {
            match self.state {
                State::Done => return Ok((i, o)),
                State::Data(rem) => {
                    if o == out.len() || i == input.len() {
                        return Ok((i, o));
                    }
                    let n = (rem.min((input.len() - i) as u64) as usize).min(out.len() - o);
                    out[o..o + n].copy_from_slice(&input[i..i + n]);
                    i += n;
                    o += n;
                    let left = rem - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::Size | State::DataEnd | State::Trailers => {
                    // Collect one line.
                    let Some(nl) = input[i..].iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(&input[i..]);
                        if self.line.len() > MAX_LINE {
                            return Err(ChunkError("chunk line too long"));
                        }
                        return Ok((input.len(), o));
                    };
                    self.line.extend_from_slice(&input[i..i + nl]);
                    i += nl + 1;
                    if self.line.len() > MAX_LINE {
                        return Err(ChunkError("chunk line too long"));
                    }
                    let mut line = std::mem::take(&mut self.line);
                    // SECURITY: chunk framing lines end in CRLF, strictly:
                    // a bare LF accepted here but not by a proxy in front
                    // (or the reverse) is a request-smuggling vector.
                    if line.pop() != Some(b'\r') {
                        return Err(ChunkError("chunk line not ended by CRLF"));
                    }
                    if self.state == State::Trailers {
                        self.trailer_bytes += line.len() + 2;
                        if self.trailer_bytes > MAX_TRAILERS {
                            return Err(ChunkError("trailer section too large"));
                        }
                    }
                    match self.state {
                        State::DataEnd => {
                            if !line.is_empty() {
                                return Err(ChunkError("chunk data longer than its size"));
                            }
                            self.state = State::Size;
                        }
                        State::Size => {
                            let size = parse_size(&line)?;
                            self.state = if size == 0 {
                                State::Trailers
                            } else {
                                State::Data(size)
                            };
                        }
                        _ => {
                            if line.is_empty() {
                                self.state = State::Done;
                            } else if !field_line(&line) {
                                // SECURITY: a trailer is a field line (RFC
                                // 9112 section 7.1.2) or the body is bad: a
                                // bare CR or a line with no colon swallowed
                                // here may be a second request to a proxy
                                // in front that ends lines differently.
                                return Err(ChunkError("a trailer line is not a header field"));
                            }
                        }
                    }
                    self.line = line;
                    self.line.clear();
                }
            }
        }
    }
}

/// Whether a trailer line is `field-name ":" OWS field-value OWS` (RFC
/// 9110 section 5): a token for the name, no whitespace before the
/// colon, and no control character but HTAB in the value.
fn field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&b| is_tchar(b))
        && value
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// RFC 9110 section 5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let end = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let hex = &line[..end];
    // What follows the size: nothing, or (optional BWS) `;` and chunk
    // extensions without control characters. `5 6` or `5x` is refused.
    let rest = &line[end..];
    let ext = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map(|i| &rest[i..]);
    match ext {
        None if rest.is_empty() => {}
        Some(e) if e[0] == b';' => {
            if e.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(ChunkError("bad chunk extension"));
            }
        }
        _ => return Err(ChunkError("bad chunk size")),
    }
    if hex.is_empty() || hex.len() > 15 {
        return Err(ChunkError("bad chunk size"));
    }
    let mut n: u64 = 0;
    for &b in hex {
        let d = (b as char)
            .to_digit(16)
            .ok_or(ChunkError("bad chunk size"))?;
        n = n * 16 + d as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<Vec<u8>, ChunkError> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        for piece in [&input[..split], &input[split..]] {
            let mut p = piece;
            loop {
                let (c, n) = d.decode(p, &mut buf)?;
                out.extend_from_slice(&buf[..n]);
                p = &p[c..];
                if p.is_empty() && n == 0 || d.is_done() {
                    break;
                }
            }
        }
        assert!(d.is_done());
        Ok(out)
    }

    #[test]
    fn decodes_at_every_split() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        for s in 0..=body.len() {
            assert_eq!(decode_all(body, s).unwrap(), b"hello world", "split {s}");
        }
    }

    #[test]
    fn framing_is_strict() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5 6\r\nhello\r\n0\r\n\r\n",
            b"5x\r\nhello\r\n0\r\n\r\n",
            b"5;a\x01b\r\nhello\r\n0\r\n\r\n",
        ] {
            let mut d = Decoder::default();
            let mut out = [0u8; 64];
            let mut input = bad;
            let mut failed = false;
            for _ in 0..10 {
                match d.decode(input, &mut out) {
                    Ok((c, _)) => input = &input[c..],
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "{:?} was accepted", String::from_utf8_lossy(bad));
        }
        let mut d = Decoder::default();
        let mut long = b"0\r\n".to_vec();
        for _ in 0..1000 {
            long.extend_from_slice(b"X-T: aaaaaaaaaaaaaaaa\r\n");
        }
        assert!(d.decode(&long, &mut [0u8; 8]).is_err(), "endless trailers");
    }

    #[test]
    fn trailers_are_field_lines_or_the_body_is_bad() {
        // Issue 16, defect 5: a bare CR and a line with no colon were
        // swallowed as trailers (a smuggled request behind a front proxy).
        for bad in [
            &b"0\r\n\rGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"0\r\nno colon here\r\n\r\n",
            b"0\r\nX-A : 1\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nX-A: a\rb\r\n\r\n",
            b"0\r\nX-A: a\x00b\r\n\r\n",
            b"0\r\n X-Folded: 1\r\n\r\n",
        ] {
            let mut d = Decoder::default();
            assert!(
                d.decode(bad, &mut [0u8; 8]).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"0\r\nX-A: 1\r\nX-B:\t2 \r\nX-Empty:\r\n\r\n"[..],
            b"0\r\n\r\n",
        ] {
            let mut d = Decoder::default();
            let (used, _) = d.decode(good, &mut [0u8; 8]).expect("valid trailers");
            assert!(d.is_done() && used == good.len());
        }
    }

    #[test]
    fn rejects_garbage() {
        let mut d = Decoder::default();
        assert!(d.decode(b"zz\r\n", &mut [0; 8]).is_err());
        let mut d = Decoder::default();
        assert!(d.decode(b"2\r\nabc\r\n", &mut [0; 8]).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Encodes `body` in chunks of the given sizes, with extensions and
    /// trailers as a sender may write them.
    fn encode(body: &[u8], sizes: &[usize], ext: bool, trailers: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            i += 1;
            out.extend_from_slice(format!("{n:X}").as_bytes());
            if ext {
                out.extend_from_slice(b";name=\"v a\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n");
        for (k, v) in trailers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        /// Chunked encode then decode is the identity, whatever the chunk
        /// sizes and however the wire bytes are split into reads.
        #[test]
        fn encode_then_decode_is_the_identity(
            body in prop::collection::vec(any::<u8>(), 0..3000),
            sizes in prop::collection::vec(1usize..700, 0..12),
            ext in any::<bool>(),
            trailers in prop::collection::vec(("[A-Za-z-]{1,8}", "[ -~]{0,12}"), 0..3),
            split in 1usize..64,
            out_len in 1usize..100,
        ) {
            let trailers: Vec<(String, String)> = trailers
                .into_iter()
                .map(|(k, v)| (k, v.trim().to_owned()))
                .collect();
            let wire = encode(&body, &sizes, ext, &trailers);
            let mut d = Decoder::default();
            let mut got = Vec::new();
            let mut out = vec![0u8; out_len];
            let mut used_all = 0;
            for piece in wire.chunks(split) {
                let mut p = piece;
                loop {
                    let (used, n) = d.decode(p, &mut out).expect("valid framing");
                    got.extend_from_slice(&out[..n]);
                    p = &p[used..];
                    used_all += used;
                    if p.is_empty() || d.is_done() {
                        break;
                    }
                }
            }
            prop_assert!(d.is_done());
            prop_assert_eq!(used_all, wire.len());
            prop_assert_eq!(got, body);
        }
    }
}
