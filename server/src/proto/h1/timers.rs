//! The timers of an HTTP/1.1 connection: when it is due (header, idle,
//! send, body and wait timeouts, a lingering close, an idle relay), and
//! what happens when it is.

use super::{Conn, Next, State};
use crate::net::cx::Cx;
use crate::transport::Transport;
use std::time::Instant;

impl<T: Transport> Conn<T> {
    pub(super) fn compute_deadline(&self, cx: &Cx<'_>) -> Option<Instant> {
        let s = cx.settings();
        if let State::Linger(l) = &self.state {
            return Some(l.0);
        }
        if let State::Tunnel(t) = &self.state
            && self.out.is_idle()
        {
            return Some(t.last + t.idle);
        }
        // A waiting handler's or a collected body's own deadline.
        let request = self.request_deadline(cx);
        if !self.sent_all() && !self.sock.writable {
            let send = self.last_write + s.send_timeout.0;
            return Some(request.map_or(send, |r| r.min(send)));
        }
        if request.is_some() {
            return request;
        }
        match self.state {
            State::Pool(_) => None,
            _ if !self.sent_all() => None,
            _ => Some(match self.head_started {
                Some(t) if !self.buf.is_empty() => t + s.header_timeout.0,
                _ if self.served == 0 => self.idle_since + s.header_timeout.0,
                _ => self.idle_since + s.idle_timeout.0,
            }),
        }
    }

    /// When a waiting handler's wait, or the collection of a body, is up.
    fn request_deadline(&self, cx: &Cx<'_>) -> Option<Instant> {
        match &self.state {
            State::Parked(p) => Some(p.parked.until),
            State::Collect(c) => Some(c.deadline(cx.settings(), self.buf.data().len())),
            _ => None,
        }
    }

    /// The deadline passed.
    pub fn timed_out(&mut self, cx: &mut Cx<'_>) -> Next {
        let send_timed_out = !self.sent_all()
            && !self.sock.writable
            && crate::clock::now() >= self.last_write + cx.settings().send_timeout.0;
        if !send_timed_out && let Some(due) = self.request_deadline(cx) {
            if crate::clock::now() < due {
                // Nothing is due yet: the next sweep looks again.
                return Next::Wait;
            }
            if let State::Collect(_) = self.state {
                self.collect_timed_out(cx);
            }
            // A waiting handler hears of it (a 504, say); a collected
            // body's 408 goes out.
            return self.drive(cx);
        }
        let why = match self.state {
            State::Linger(_) => return Next::Close,
            State::Tunnel(_) if self.out.is_idle() => "relay idle",
            _ if !self.sent_all() => "send timeout",
            _ if !self.buf.is_empty() => "header timeout",
            _ => "idle",
        };
        self.close(cx, why)
    }
}
