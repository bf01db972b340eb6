//! The client's side of a connection: its transport and what the loop's
//! readiness events said of it. Readiness is edge-triggered (mio): an
//! edge is remembered until a call would block (or a read comes back
//! short, which drains the socket for this edge).

use super::buf::{Buf, READ_CHUNK};
use crate::transport::{Io, Transport};

pub struct Sock<T> {
    pub io: T,
    pub readable: bool,
    pub writable: bool,
    /// The peer has closed its side (reads go on to the end of stream).
    pub peer_closed: bool,
    /// The end of the client's stream was read (or reading failed).
    pub read_eof: bool,
}

/// What one read brought.
pub enum Read {
    /// Bytes are in the buffer.
    Data,
    /// The client ended its side, or the read failed (`read_eof` is set).
    Eof,
    /// Nothing now: wait for the next edge.
    Blocked,
}

impl<T: Transport> Sock<T> {
    pub fn new(io: T) -> Self {
        Sock {
            io,
            readable: true,
            writable: true,
            peer_closed: false,
            read_eof: false,
        }
    }

    /// A readiness event from the loop.
    pub fn event(&mut self, readable: bool, writable: bool, closed: bool) {
        self.readable |= readable || closed;
        self.peer_closed |= closed;
        self.writable |= writable;
    }

    /// Reads once into `buf`.
    pub fn read(&mut self, buf: &mut Buf) -> Read {
        match buf.fill(&mut self.io) {
            Ok(Io::Ready(0)) | Err(_) => {
                self.read_eof = true;
                self.readable = false;
                Read::Eof
            }
            Ok(Io::Ready(n)) => {
                // A short read drained the socket for this edge, unless the
                // peer has closed: then the end of the stream is still to
                // be read, and no edge follows.
                if n < READ_CHUNK && !self.peer_closed {
                    self.readable = false;
                }
                Read::Data
            }
            Ok(Io::Blocked) => {
                self.readable = false;
                Read::Blocked
            }
        }
    }
}
