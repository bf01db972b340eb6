//! A request body on its way to an upstream: read from the client chunk
//! by chunk, with a copy of what was read while it is small, so that it
//! can be sent again to a fresh connection when a pooled one turns out
//! closed before it took the request.

use std::io::{self, Read};

/// Bodies are replayed up to this size.
pub const REPLAY: usize = 64 * 1024;

pub struct Upload<'r> {
    reader: Option<Box<dyn Read + 'r>>,
    /// Some of the body was read from the client.
    pub started: bool,
    /// All of it was (also true when there is none).
    pub ended: bool,
    copy: Option<Vec<u8>>,
    /// Replaying the copy after [`rewind`](Self::rewind): how much of it
    /// was given again.
    replaying: Option<usize>,
}

impl<'r> Upload<'r> {
    /// `None`: no body.
    pub fn new(reader: Option<Box<dyn Read + 'r>>) -> Upload<'r> {
        Upload {
            ended: reader.is_none(),
            reader,
            started: false,
            copy: Some(Vec::new()),
            replaying: None,
        }
    }
    /// What was read so far, if it can all be sent again.
    pub fn replay(&self) -> Option<&[u8]> {
        self.copy.as_deref()
    }
    /// Whether a new connection could be given the body from its start.
    pub fn replayable(&self) -> bool {
        !self.started || self.copy.is_some()
    }
    /// Starts over for a new connection: what was read is given again
    /// first, then the rest as it comes. False when that cannot be (more
    /// than [`REPLAY`] bytes were read).
    pub fn rewind(&mut self) -> bool {
        if !self.started {
            return true;
        }
        if self.copy.is_none() {
            return false;
        }
        self.replaying = Some(0);
        true
    }
    /// The next chunk: the copy again after a rewind, then from the
    /// client; `Ok(0)` at the end.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let (Some(at), Some(copy)) = (self.replaying, self.copy.as_ref()) {
            let n = (copy.len() - at).min(buf.len());
            if n > 0 {
                buf[..n].copy_from_slice(&copy[at..at + n]);
                self.replaying = Some(at + n);
                return Ok(n);
            }
            self.replaying = None;
        }
        let Some(r) = self.reader.as_mut().filter(|_| !self.ended) else {
            return Ok(0);
        };
        let n = loop {
            match r.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.started = true;
        if n == 0 {
            self.ended = true;
        }
        if let Some(copy) = self.copy.as_mut() {
            if copy.len() + n <= REPLAY {
                copy.extend_from_slice(&buf[..n]);
            } else {
                self.copy = None;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_can_be_replayed_big_ones_not() {
        let data = vec![5u8; 1000];
        let mut u = Upload::new(Some(Box::new(&data[..])));
        let mut buf = [0u8; 300];
        while u.read(&mut buf).unwrap() > 0 {}
        assert!(u.started && u.ended);
        assert_eq!(u.replay(), Some(&data[..]));
        // Rewound: the same bytes again, then the end.
        assert!(u.rewind());
        let mut again = Vec::new();
        loop {
            let n = u.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            again.extend_from_slice(&buf[..n]);
        }
        assert_eq!(again, data);
        let big = vec![1u8; REPLAY + 1];
        let mut u = Upload::new(Some(Box::new(&big[..])));
        let mut buf = vec![0u8; 8192];
        while u.read(&mut buf).unwrap() > 0 {}
        assert_eq!(u.replay(), None);
        assert!(!u.rewind());
        let u = Upload::new(None);
        assert!(u.ended && !u.started);
    }
}
