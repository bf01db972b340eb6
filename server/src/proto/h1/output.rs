//! What an HTTP/1.1 connection sends: the writer's queue as the socket
//! allows, the log phase of each response once its last byte is out, the
//! end of the connection (a lingering close), and the turns of a relay.

use super::writer::Progress;
use super::{Buf, Conn, LINGER_BYTES, LINGER_TIME, Next, State, log_mark, tunnel};
use crate::net::cx::Cx;
use crate::transport::Transport;
use std::time::Instant;

impl<T: Transport> Conn<T> {
    /// Writes the queue; `Some` when the connection must close.
    pub(super) fn flush(&mut self, cx: &mut Cx<'_>) -> Option<Next> {
        if !self.sock.writable {
            return None;
        }
        if self.out.is_idle() {
            return self.flush_transport(cx);
        }
        let before = self.out.sent;
        let p = self.out.write(&mut self.sock.io);
        if self.out.sent > before {
            self.last_write = crate::clock::now();
        }
        match p {
            Progress::Done => {}
            // Waiting for a plugin's stream is not the client's fault: the
            // send timeout counts from when there is something to send.
            Progress::Starved => self.last_write = crate::clock::now(),
            Progress::Yield => {
                self.finish_logs();
                return Some(Next::Again);
            }
            Progress::Blocked => self.sock.writable = false,
            Progress::Failed(e) => {
                // Responses wholly sent before the failure are complete.
                self.finish_logs();
                return Some(self.close(cx, &e));
            }
        }
        self.finish_logs();
        if self.out.is_idle() && self.sock.writable {
            return self.flush_transport(cx);
        }
        None
    }

    /// Sends the records the transport holds back (TLS) once the queue is
    /// empty; the socket is full until they are out.
    fn flush_transport(&mut self, cx: &mut Cx<'_>) -> Option<Next> {
        if !self.sock.io.pending() {
            return None;
        }
        match self.sock.io.flush() {
            Ok(true) => {
                self.last_write = crate::clock::now();
                None
            }
            Ok(false) => {
                self.sock.writable = false;
                None
            }
            Err(e) => Some(self.close(cx, &e.to_string())),
        }
    }

    /// Runs the log phase of the responses whose last byte is out.
    fn finish_logs(&mut self) {
        while let Some(m) = self.out.finished() {
            self.served += 1;
            log_mark(m, self.out.sent, true, None);
        }
        if self.out.is_idle() {
            self.idle_since = crate::clock::now();
        }
    }

    /// The last response is out: close, lingering if input may follow.
    pub(super) fn end(&mut self) -> Next {
        if !self.closing.linger || self.sock.read_eof {
            return Next::Close;
        }
        self.sock.io.shutdown_write();
        self.buf = Buf::default();
        self.state = State::Linger(Box::new((Instant::now() + LINGER_TIME, 0)));
        self.linger_read()
    }

    pub(super) fn linger_read(&mut self) -> Next {
        let State::Linger(l) = &mut self.state else {
            return Next::Close;
        };
        let (until, dropped) = &mut **l;
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if Instant::now() >= *until || *dropped > LINGER_BYTES {
                return Next::Close;
            }
            match self.sock.io.read(&mut scratch) {
                Ok(crate::transport::Io::Ready(0)) | Err(_) => return Next::Close,
                Ok(crate::transport::Io::Ready(n)) => *dropped += n as u64,
                Ok(crate::transport::Io::Blocked) => {
                    self.sock.readable = false;
                    return Next::Wait;
                }
            }
        }
    }

    /// A turn of the relay, once the 101 is out.
    pub(super) fn tunnel_step(&mut self, cx: &mut Cx<'_>) -> Next {
        if !self.sent_all() {
            if let Some(n) = self.flush(cx) {
                return n;
            }
            if !self.out.is_idle() {
                return Next::Wait;
            }
        }
        let State::Tunnel(t) = &mut self.state else {
            return Next::Close;
        };
        if let Some(fd) = t.take_unregistered()
            && let Err(e) = cx.register_relay(fd)
        {
            t.fail(&format!("cannot watch the relay's socket: {e}"));
            return Next::Close;
        }
        let s = &mut self.sock;
        match t.turn(&mut s.io, &mut s.readable, &mut s.writable) {
            tunnel::Turn::Wait => Next::Wait,
            tunnel::Turn::Again => Next::Again,
            tunnel::Turn::Done => Next::Close,
            tunnel::Turn::Failed(e) => {
                log::debug!("relay for {}: {e}", self.peer);
                t.fail(&e);
                Next::Close
            }
        }
    }
}
