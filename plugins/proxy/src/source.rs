//! The request as it goes upstream, framed for the exchange machine
//! (`Source`): the head, then the body whole (the loop's path) or read
//! from the client as it goes (the pool's path, with a copy while small so
//! that a new connection can be given it again), with its length or
//! chunked.

use std::io;
use tamada_gateway::exchange::Source;
use tamada_gateway::upload::Upload;

/// The request as it goes upstream: the head, then the body with its
/// length or chunked.
pub(crate) struct ReqSource<B> {
    pub head: Vec<u8>,
    pub head_given: bool,
    pub body: B,
    pub chunked: bool,
    /// The last chunk was given.
    pub ended: bool,
}

/// A request body as the machine sends it.
pub trait ReqBody {
    /// Appends the next piece, framed; `Ok(false)` at the end.
    fn next(&mut self, out: &mut Vec<u8>, chunked: bool) -> io::Result<bool>;
    /// Starts over; false when what was taken cannot be given again.
    fn rewind(&mut self) -> bool;
    /// Whether a new connection could be given it again.
    fn replayable(&self) -> bool;
}

/// Whole, in memory (the loop's path): none, or the bytes.
pub struct MemBody(pub Option<Vec<u8>>, pub bool);

impl ReqBody for MemBody {
    fn next(&mut self, out: &mut Vec<u8>, _: bool) -> io::Result<bool> {
        match &self.0 {
            Some(data) if !self.1 => {
                self.1 = true;
                out.extend_from_slice(data);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    fn rewind(&mut self) -> bool {
        self.1 = false;
        true
    }
    fn replayable(&self) -> bool {
        true
    }
}

/// Read from the client as it goes (the pool's path), with a copy while
/// it is small enough to send again (`Upload`); `None`: no body.
pub struct ReadBody<'r>(pub Option<Upload<'r>>);

impl ReqBody for ReadBody<'_> {
    fn next(&mut self, out: &mut Vec<u8>, chunked: bool) -> io::Result<bool> {
        let Some(up) = self.0.as_mut() else {
            return Ok(false);
        };
        let mut buf = vec![0u8; 64 * 1024];
        let n = up.read(&mut buf)?;
        if n > 0 {
            frame(out, &buf[..n], chunked);
            return Ok(true);
        }
        Ok(false)
    }
    fn rewind(&mut self) -> bool {
        self.0.as_mut().is_none_or(Upload::rewind)
    }
    fn replayable(&self) -> bool {
        self.0.as_ref().is_none_or(Upload::replayable)
    }
}

impl<B: ReqBody> Source for ReqSource<B> {
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if !self.head_given {
            self.head_given = true;
            out.extend_from_slice(&self.head);
            return Ok(true);
        }
        if self.body.next(out, self.chunked)? {
            return Ok(true);
        }
        if self.chunked && !self.ended {
            self.ended = true;
            out.extend_from_slice(b"0\r\n\r\n");
            return Ok(true);
        }
        Ok(false)
    }

    fn rewind(&mut self) -> bool {
        self.head_given = false;
        self.ended = false;
        self.body.rewind()
    }
}

/// A piece of the body, framed.
fn frame(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if chunked {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}
