//! The writer: a connection's output queue, written without blocking and
//! without ever calling a plugin. It holds the heads and small bodies of
//! responses gathered into one buffer (pipelined responses go out in one
//! write), then at most one large body (bytes, a file by `sendfile`,
//! segments, or a stream's bytes taken from its pipe). `write` goes until
//! the socket would block, the queue is empty, or a stream has nothing
//! ready yet, and remembers where it stopped; a file resumes its
//! `sendfile` from the offset reached.
//!
//! Every queued response has a [`Mark`]: where its bytes start and end in
//! the connection's output, so that the log phase runs for each response
//! once its last byte is out (or with what was sent, when it failed).

use super::head::{OutBody, Response};
use crate::exchange::Exchange;
use crate::exchange::stream::Piece;
use crate::transport::{Io, Transport};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;

/// Bodies larger than this get `Transport::large_body`.
const BIG_BODY: u64 = 1 << 20;
/// Past this many queued bytes no more requests are answered until the
/// client reads (a client that pipelines without reading).
const GATHER_LIMIT: usize = 64 * 1024;
/// Body bytes one connection writes per turn of its loop: the loop's
/// connections take turns, and one large download does not delay the
/// others' requests.
const TURN_BYTES: u64 = 256 * 1024;

/// A response in the queue, for its log phase.
pub struct Mark {
    /// Offset of its first byte in the connection's output.
    pub start: u64,
    /// Bytes of status line and headers.
    pub head_len: u64,
    /// Offset after its last byte; `None` while its large body is going.
    pub end: Option<u64>,
    pub status: u16,
    /// What the log phase needs (`None` for responses no vhost sees).
    pub exchange: Option<Box<Exchange>>,
}

impl Mark {
    /// Body bytes and all bytes of it sent, when `sent` bytes of the
    /// connection's output are out.
    pub fn sent(&self, sent: u64) -> (u64, u64) {
        let total = self
            .end
            .unwrap_or(sent)
            .min(sent)
            .saturating_sub(self.start);
        (total.saturating_sub(self.head_len), total)
    }
}

/// What `write` got to.
#[derive(Debug)]
pub enum Progress {
    /// The queue is empty.
    Done,
    /// The socket would block.
    Blocked,
    /// A stream's next bytes are not there yet (its pipe wakes the loop).
    Starved,
    /// Wrote its share for this turn: the other connections go first.
    Yield,
    Failed(String),
}

#[derive(Default)]
pub struct Out {
    buf: Vec<u8>,
    pos: usize,
    /// The large body after `buf`, boxed: an idle connection keeps only
    /// the pointer (memory per idle connection is a target).
    large: Option<Box<Large>>,
    /// Bytes written on the connection so far.
    pub sent: u64,
    marks: VecDeque<Mark>,
}

/// A large body being written, and where it stands.
struct Large {
    body: OutBody,
    /// Progress inside the bytes body or the front segment.
    seg_pos: u64,
    /// The stream piece being written.
    piece: Vec<u8>,
    piece_pos: usize,
    big_buffer: bool,
}

/// What one call on a large body did.
enum Step {
    Wrote(usize),
    Blocked,
    Starved,
    Finished,
}

impl Out {
    /// Nothing queued.
    pub fn is_idle(&self) -> bool {
        self.pos >= self.buf.len() && self.large.is_none()
    }

    /// Whether another response may be queued now (no large body is in
    /// the way, and the client keeps reading).
    pub fn can_gather(&self) -> bool {
        self.large.is_none() && self.buf.len() - self.pos < GATHER_LIMIT
    }

    /// Queues a response; its log phase runs when its last byte is out.
    pub fn push(&mut self, r: Response, exchange: Option<Box<Exchange>>) {
        let start = self.sent + (self.buf.len() - self.pos) as u64;
        let len = r.head.len() as u64;
        if self.pos >= self.buf.len() {
            // PERF: no copy when nothing else is queued.
            self.buf = r.head;
            self.pos = 0;
        } else {
            self.buf.extend_from_slice(&r.head);
        }
        let end = match r.body {
            OutBody::None => Some(start + len),
            body => {
                self.large = Some(Box::new(Large {
                    body,
                    seg_pos: 0,
                    piece: Vec::new(),
                    piece_pos: 0,
                    big_buffer: false,
                }));
                None
            }
        };
        self.marks.push_back(Mark {
            start,
            head_len: r.head_len as u64,
            end,
            status: r.status,
            exchange,
        });
    }

    /// Queues bytes that are no response (`100 Continue`).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The responses whose last byte is out.
    pub fn finished(&mut self) -> Option<Mark> {
        match self.marks.front() {
            Some(m) if m.end.is_some_and(|e| e <= self.sent) => self.marks.pop_front(),
            _ => None,
        }
    }

    /// Gives up: the responses still queued, for their log phase. A
    /// stream being sent is abandoned (closed on the pool).
    pub fn abandon(&mut self) -> Vec<Mark> {
        if let Some(l) = self.large.take()
            && let OutBody::Stream(p) = &l.body
        {
            p.abandon();
        }
        self.buf = Vec::new();
        self.pos = 0;
        self.marks.drain(..).collect()
    }

    fn body_done(&mut self) {
        self.large = None;
        if let Some(m) = self.marks.back_mut()
            && m.end.is_none()
        {
            m.end = Some(self.sent);
        }
    }

    /// Writes until done, blocked or starved.
    pub fn write(&mut self, io: &mut impl Transport) -> Progress {
        match self.write_inner(io) {
            Ok(p) => p,
            Err(e) => Progress::Failed(e.to_string()),
        }
    }

    fn write_inner(&mut self, io: &mut impl Transport) -> io::Result<Progress> {
        let turn_end = self.sent + TURN_BYTES;
        loop {
            if self.pos < self.buf.len() {
                // PERF: with file bytes next, MSG_MORE lets the kernel put
                // the head and the first file bytes in one segment. Only
                // when bytes do follow: a head held back with nothing
                // after it would wait for the kernel's cork timer.
                let more = self
                    .large
                    .as_ref()
                    .is_some_and(|l| l.body.starts_with_file());
                match io.write(&self.buf[self.pos..], more)? {
                    Io::Ready(n) => {
                        self.pos += n;
                        self.sent += n as u64;
                        continue;
                    }
                    Io::Blocked => return Ok(Progress::Blocked),
                }
            }
            if !self.buf.is_empty() {
                // Free the buffer: an idle connection costs no memory.
                self.buf = Vec::new();
                self.pos = 0;
            }
            let Some(large) = self.large.as_mut() else {
                return Ok(Progress::Done);
            };
            if self.sent >= turn_end {
                return Ok(Progress::Yield);
            }
            match large.write_some(io, turn_end - self.sent)? {
                Step::Wrote(n) => self.sent += n as u64,
                Step::Finished => self.body_done(),
                Step::Blocked => return Ok(Progress::Blocked),
                Step::Starved => return Ok(Progress::Starved),
            }
        }
    }
}

impl Large {
    /// One write of the body (at most `left` bytes of a file).
    fn write_some(&mut self, io: &mut impl Transport, left: u64) -> io::Result<Step> {
        let r = match &mut self.body {
            OutBody::None => return Ok(Step::Finished),
            OutBody::Shared(shared) => {
                let data = shared.as_slice();
                let at = (self.seg_pos as usize).min(data.len());
                if at == data.len() {
                    return Ok(Step::Finished);
                }
                let r = io.write(&data[at..], false)?;
                if let Io::Ready(n) = r {
                    self.seg_pos += n as u64;
                }
                r
            }
            OutBody::Bytes(data) => {
                let at = (self.seg_pos as usize).min(data.len());
                if at == data.len() {
                    return Ok(Step::Finished);
                }
                let r = io.write(&data[at..], false)?;
                if let Io::Ready(n) = r {
                    self.seg_pos += n as u64;
                }
                r
            }
            OutBody::File { fd, off, end } => {
                if *off >= *end {
                    return Ok(Step::Finished);
                }
                if !self.big_buffer && *end - *off > BIG_BODY {
                    self.big_buffer = true;
                    io.large_body();
                }
                let len = (*end - *off).min(left.max(1));
                io.sendfile(fd.as_fd(), off, len)?
            }
            OutBody::Segments { files, segs } => {
                let Some(front) = segs.front() else {
                    return Ok(Step::Finished);
                };
                if front.file < 0 {
                    let at = self.seg_pos as usize;
                    if at >= front.bytes.len() {
                        segs.pop_front();
                        self.seg_pos = 0;
                        return Ok(Step::Wrote(0));
                    }
                    let more = segs.get(1).is_some_and(|s| s.file >= 0);
                    let r = io.write(&front.bytes[at..], more)?;
                    if let Io::Ready(n) = r {
                        self.seg_pos += n as u64;
                    }
                    r
                } else {
                    if self.seg_pos >= front.len {
                        segs.pop_front();
                        self.seg_pos = 0;
                        return Ok(Step::Wrote(0));
                    }
                    let fd = files.get(front.file as usize).ok_or_else(|| {
                        io::Error::other("segment names a file the body does not hold")
                    })?;
                    let mut off = front.offset + self.seg_pos;
                    let r = io.sendfile(fd.as_fd(), &mut off, front.len - self.seg_pos)?;
                    if let Io::Ready(n) = r {
                        self.seg_pos += n as u64;
                    }
                    r
                }
            }
            OutBody::Stream(pipe) => {
                if self.piece_pos >= self.piece.len() {
                    return Ok(match pipe.take() {
                        Piece::Data(d) => {
                            self.piece = d;
                            self.piece_pos = 0;
                            Step::Wrote(0)
                        }
                        Piece::Pending => Step::Starved,
                        Piece::End => Step::Finished,
                        Piece::Failed(e) => return Err(io::Error::other(e)),
                    });
                }
                let r = io.write(&self.piece[self.piece_pos..], false)?;
                if let Io::Ready(n) = r {
                    self.piece_pos += n;
                }
                r
            }
        };
        Ok(match r {
            Io::Ready(n) => Step::Wrote(n),
            Io::Blocked => Step::Blocked,
        })
    }
}
