//! A connection's read buffer: bytes from the client not parsed yet.

use crate::transport::{Io, Transport};

/// How much one read asks for.
pub const READ_CHUNK: usize = 16 * 1024;

/// The read buffer: unparsed bytes from the client.
#[derive(Default)]
pub struct Buf {
    data: Vec<u8>,
    start: usize,
}

impl Buf {
    pub fn data(&self) -> &[u8] {
        &self.data[self.start..]
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }
    /// Frees the memory of an empty buffer (idle connections cost little).
    pub fn shrink(&mut self) {
        if self.is_empty() {
            self.data = Vec::new();
            self.start = 0;
        }
    }
    /// One read from `io`. `Ready(0)` is the end of the stream.
    ///
    /// PERF: the read goes into a scratch buffer of the thread, and only
    /// the bytes that came are copied into the connection's own buffer:
    /// no 16 KiB zeroed per read, and an idle connection's buffer is
    /// freed without making the next read pay for a new one.
    pub fn fill(&mut self, io: &mut impl Transport) -> std::io::Result<Io> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
        }
        if self.start > 0 {
            self.data.drain(..self.start);
            self.start = 0;
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let r = io.read(&mut s[..]);
            if let Ok(Io::Ready(n)) = &r {
                self.data.extend_from_slice(&s[..*n]);
            }
            r
        })
    }
}
