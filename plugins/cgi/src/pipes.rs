//! The script's pipes: feeding stdin, reading the header block (bounded
//! in time and size), and streaming the rest of stdout to the core.
//!
//! Threads, per request with a body: the worker feeds stdin from the
//! request body while a scoped thread reads stdout (the header block, then
//! anything more into a spool), so a script that writes before it has read
//! all its input cannot deadlock against us. Without a body the worker
//! reads the header block itself.

use crate::headers::{self, Headers, MAX_HEAD, Scan};
use crate::process::{LogCtx, Proc};
use crate::spool::{Spool, SpoolReader};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, Signal, kill_process_group};
use std::io::{self, ErrorKind, PipeReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{ChildStdin, ChildStdout};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tamada_sdk::BodyStream;
/// How feeding stdin ended.
pub enum Fed {
    /// All of it.
    Done,
    /// The script closed its stdin early (it need not read it all).
    ChildClosed,
    /// The script read nothing for `stall`.
    Stalled,
    /// Reading the request body failed (client gone, too slow, too large).
    BodyFailed(io::Error),
}

/// Copies `src` to the script's stdin; never blocks longer than `stall` on
/// the pipe.
pub fn feed(stdin: ChildStdin, src: &mut dyn Read, stall: Duration) -> Fed {
    if rustix::io::ioctl_fionbio(&stdin, true).is_err() {
        return Fed::ChildClosed;
    }
    let mut stdin = stdin;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Fed::Done,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Fed::BodyFailed(e),
        };
        let mut off = 0;
        while off < n {
            match stdin.write(&buf[off..n]) {
                Ok(k) => off += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    match wait_ready(&stdin, PollFlags::OUT, Some(stall)) {
                        Ok(true) => {}
                        Ok(false) => return Fed::Stalled,
                        Err(_) => return Fed::ChildClosed,
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Fed::ChildClosed,
            }
        }
    }
}

/// What the script's stdout began with.
pub enum Head {
    /// A complete header block, and the output read past it.
    Ready(Headers, Spool),
    /// Not a header block, or the script ended before completing one.
    Bad(String),
    /// No complete header block within the header timeout.
    TimedOut,
}

/// Reads the header block from `out`. While `wake` is open (the request
/// body is still being fed) there is no deadline and output past the
/// header block is spooled; once `wake` hangs up (or with none) the header
/// timeout runs and the function returns as soon as the block is complete.
/// On a bad or late header block the group is killed at once (so that a
/// worker still feeding stdin stops); the caller still reaps it.
pub fn read_head(
    out: &mut ChildStdout,
    wake: Option<PipeReader>,
    header_timeout: Duration,
    spool_threshold: usize,
    pgid: Pid,
) -> io::Result<Head> {
    let h = read_head_inner(out, wake, header_timeout, spool_threshold);
    if !matches!(h, Ok(Head::Ready(..))) {
        // The leader is not reaped before the caller has this result, so
        // the group id is still the script's.
        let _ = kill_process_group(pgid, Signal::KILL);
    }
    h
}

fn read_head_inner(
    out: &mut ChildStdout,
    mut wake: Option<PipeReader>,
    header_timeout: Duration,
    spool_threshold: usize,
) -> io::Result<Head> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut tmp = vec![0u8; 64 * 1024];
    let mut deadline = wake.is_none().then(|| Instant::now() + header_timeout);
    let mut head: Option<(Headers, Spool)> = None;
    let mut eof = false;
    loop {
        if let Some((h, spool)) = head.take_if(|_| wake.is_none() || eof) {
            return Ok(Head::Ready(h, spool));
        }
        let timeout = match (&head, deadline) {
            (None, Some(d)) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Head::TimedOut);
                }
                Some(left)
            }
            _ => None,
        };
        let (out_ready, wake_ready) = wait_two(&*out, wake.as_ref(), timeout)?;
        if wake_ready {
            // The writer end was dropped: stdin is done.
            wake = None;
            deadline = Some(Instant::now() + header_timeout);
        }
        if !out_ready {
            continue;
        }
        let n = match out.read(&mut tmp) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match &mut head {
            Some((_, spool)) => {
                if n == 0 {
                    eof = true;
                } else {
                    spool.write_all(&tmp[..n])?;
                }
            }
            None => {
                if n == 0 {
                    return Ok(Head::Bad(if buf.is_empty() {
                        "ended without output".into()
                    } else {
                        "ended inside its header block".into()
                    }));
                }
                buf.extend_from_slice(&tmp[..n]);
                match headers::scan(&buf) {
                    Scan::Done(h, used) => {
                        let mut spool = Spool::new(spool_threshold);
                        spool.write_all(&buf[used..])?;
                        head = Some((h, spool));
                    }
                    Scan::Bad(why) => return Ok(Head::Bad(why)),
                    Scan::Incomplete if buf.len() > MAX_HEAD => {
                        return Ok(Head::Bad(format!("header block over {MAX_HEAD} bytes")));
                    }
                    Scan::Incomplete => {}
                }
            }
        }
    }
}

/// The response body: what was read past the header block, then the rest
/// of stdout as it comes.
pub struct CgiStream {
    pub pre: Option<SpoolReader>,
    pub stdout: Option<ChildStdout>,
    pub proc: Option<Proc>,
    pub idle: Duration,
    pub log: Arc<LogCtx>,
}

impl BodyStream for CgiStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(p) = &mut self.pre {
            let n = p.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.pre = None;
        }
        let Some(out) = &mut self.stdout else {
            return Ok(0);
        };
        loop {
            if !wait_ready(&*out, PollFlags::IN, Some(self.idle))? {
                self.log.record(
                    log::Level::Warn,
                    &format!("no output for {:?}: killed", self.idle),
                );
                self.end(true);
                return Err(io::Error::new(ErrorKind::TimedOut, "CGI output stalled"));
            }
            match out.read(buf) {
                Ok(0) => {
                    self.end(false);
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.end(true);
                    return Err(e);
                }
            }
        }
    }

    fn close(&mut self, client_gone: bool) {
        self.end(client_gone);
    }
}

impl CgiStream {
    /// Closes stdout, then kills and reaps (`kill`) or lets the child end.
    fn end(&mut self, kill: bool) {
        self.stdout = None;
        self.pre = None;
        if let Some(mut p) = self.proc.take() {
            if kill {
                p.kill_and_reap();
            } else {
                p.finish(self.idle);
            }
        }
    }
}

/// Waits until `fd` is ready for `flags` (or hung up); false on timeout.
fn wait_ready(fd: impl AsFd, flags: PollFlags, timeout: Option<Duration>) -> io::Result<bool> {
    let (a, _) = wait_fds(fd.as_fd(), flags, None, timeout)?;
    Ok(a)
}

/// Waits for `a` readable or `b` readable/hung up.
fn wait_two(
    a: impl AsFd,
    b: Option<&PipeReader>,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    wait_fds(a.as_fd(), PollFlags::IN, b.map(|b| b.as_fd()), timeout)
}

fn wait_fds(
    a: BorrowedFd,
    flags: PollFlags,
    b: Option<BorrowedFd>,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut fds = Vec::with_capacity(2);
        fds.push(PollFd::from_borrowed_fd(a, flags));
        if let Some(b) = b {
            fds.push(PollFd::from_borrowed_fd(b, PollFlags::IN));
        }
        let ts = match deadline {
            Some(d) => Some(
                Timespec::try_from(d.saturating_duration_since(Instant::now()))
                    .map_err(|_| io::Error::other("timeout too large"))?,
            ),
            None => None,
        };
        match poll(&mut fds, ts.as_ref()) {
            Ok(_) => {
                let ready = |f: &PollFd| {
                    f.revents()
                        .intersects(flags | PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
                };
                let ra = ready(&fds[0]);
                let rb = fds.get(1).is_some_and(ready);
                return Ok((ra, rb));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
