//! The request's records as the exchange machine sends them
//! (`Source`): BEGIN_REQUEST and PARAMS, then the body as STDIN records
//! (whole on the loop's path; read as it goes on the pool's, with a copy
//! while small so that a new connection can be given it again), then the
//! empty STDIN record that ends it.

use crate::record;
use std::io;
use tamada_gateway::exchange::Source;
use tamada_gateway::upload::Upload;

/// The request's records: the head, then STDIN, then STDIN's end.
pub(crate) struct FcgiSource<B> {
    pub pre: Vec<u8>,
    pub pre_given: bool,
    pub body: B,
    pub ended: bool,
}

/// A request body as STDIN records.
pub trait StdinBody {
    /// Appends the next STDIN record(s); `Ok(false)` at the body's end.
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<bool>;
    /// Starts over; false when what was taken cannot be given again.
    fn rewind(&mut self) -> bool;
}

/// Whole, in memory (the loop's path).
pub struct MemBody(pub Vec<u8>, pub bool);

impl StdinBody for MemBody {
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if self.1 || self.0.is_empty() {
            return Ok(false);
        }
        self.1 = true;
        for piece in self.0.chunks(32 * 1024) {
            record::push_stream(out, record::STDIN, piece);
        }
        Ok(true)
    }
    fn rewind(&mut self) -> bool {
        self.1 = false;
        true
    }
}

/// Read as it goes (the pool's path), with a copy while small
/// (`Upload`).
pub struct ReadBody<'r>(pub Upload<'r>);

impl StdinBody for ReadBody<'_> {
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        let mut buf = vec![0u8; 32 * 1024];
        let n = self.0.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        record::push_stream(out, record::STDIN, &buf[..n]);
        Ok(true)
    }
    fn rewind(&mut self) -> bool {
        self.0.rewind()
    }
}

impl<B: StdinBody> Source for FcgiSource<B> {
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if !self.pre_given {
            self.pre_given = true;
            out.extend_from_slice(&self.pre);
            return Ok(true);
        }
        if self.body.next(out)? {
            return Ok(true);
        }
        if !self.ended {
            self.ended = true;
            record::push_stream(out, record::STDIN, &[]);
            return Ok(true);
        }
        Ok(false)
    }
    fn rewind(&mut self) -> bool {
        self.pre_given = false;
        self.ended = false;
        self.body.rewind()
    }
}
