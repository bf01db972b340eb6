//! The chunked body of an upstream's response (RFC 9112 section 7.1),
//! decoded with no I/O: bytes in, body bytes out, any split allowed. The
//! chunk-size line is httparse's (`parse_chunk_size`: size and
//! extensions); the CRLF after each chunk and the trailer section are
//! checked here, trailers as header field lines, bounded, and dropped (the
//! core sends none). One decoder for the proxy whatever path reads the
//! body; the core keeps its own stricter one for clients' request bodies
//! (`server/src/http/chunked.rs`: a smuggling front, fuzzed).

/// Most bytes of trailer fields accepted.
const MAX_TRAILERS: usize = 16 * 1024;
/// Longest line looked for (a chunk-size line, or a trailer).
const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// Where a chunked body stands.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked { state: State::Size }
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input` into `out`: (input bytes used, body bytes
    /// made). `(0, 0)` before the end: more input is needed.
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), String> {
        let mut i = 0;
        let mut o = 0;
        loop {
            let rest = &input[i..];
            match self.state {
                State::Done => return Ok((i, o)),
                State::Data(left) => {
                    if rest.is_empty() || o == out.len() {
                        return Ok((i, o));
                    }
                    let n = (left.min(rest.len() as u64) as usize).min(out.len() - o);
                    out[o..o + n].copy_from_slice(&rest[..n]);
                    i += n;
                    o += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        i += used;
                        self.state = if size == 0 {
                            State::Trailers(0)
                        } else {
                            State::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if rest.len() > MAX_LINE => {
                        return Err("a chunk-size line over 8 KiB".into());
                    }
                    Ok(httparse::Status::Partial) => return Ok((i, o)),
                    Err(_) => {
                        let line = &rest[..rest.len().min(40)];
                        return Err(format!(
                            "a bad chunk size `{}`",
                            String::from_utf8_lossy(line).trim_end()
                        ));
                    }
                },
                State::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&b| b != b'\r') {
                            return Err("a chunk longer than its size".into());
                        }
                        return Ok((i, o));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err("a chunk longer than its size".into());
                    }
                    i += 2;
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if seen + rest.len() > MAX_TRAILERS {
                            return Err("trailers over 16 KiB".into());
                        }
                        return Ok((i, o));
                    };
                    let line = &rest[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    i += nl + 1;
                    if line.is_empty() {
                        self.state = State::Done;
                        continue;
                    }
                    let seen = seen + nl + 1;
                    if seen > MAX_TRAILERS {
                        return Err("trailers over 16 KiB".into());
                    }
                    if !field_line(line) {
                        return Err("a trailer that is not a header field".into());
                    }
                    self.state = State::Trailers(seen);
                }
            }
        }
    }
}

/// `name ":" value`, a token for the name, no control character but HTAB
/// in the value.
fn field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split(input: &[u8], step: usize) -> Result<Vec<u8>, String> {
        let mut d = Chunked::default();
        let mut body = Vec::new();
        let mut have: Vec<u8> = Vec::new();
        let mut out = [0u8; 7];
        for piece in input.chunks(step) {
            have.extend_from_slice(piece);
            loop {
                let (used, n) = d.decode(&have, &mut out)?;
                body.extend_from_slice(&out[..n]);
                have.drain(..used);
                if (used == 0 && n == 0) || d.is_done() {
                    break;
                }
            }
        }
        assert!(d.is_done(), "not done");
        Ok(body)
    }

    #[test]
    fn decodes_at_every_split() {
        let wire = b"5;ext=\"a b\"\r\nhello\r\n7\r\n, world\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..wire.len() {
            assert_eq!(
                decode_split(wire, step).unwrap(),
                b"hello, world",
                "step {step}"
            );
        }
    }

    #[test]
    fn bad_framing_is_an_error() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello!\r\n0\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\nX-A: a\x01\r\n\r\n",
        ] {
            assert!(
                decode_split(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
