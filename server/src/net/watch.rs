//! The descriptors waiting handlers watch on one loop (SDK 1.1 `Wait`):
//! a raw `epoll_ctl` registry beside mio's, one-shot and edge-triggered.

use slab::Slab;
use std::io;

/// `epoll_ctl` for a waiting handler's descriptor: edge-triggered and
/// one-shot, so a registration left behind (the socket went back to an
/// idle pool, into a stream pulled on the pool, or to another loop)
/// reports at most once until a wait re-arms it.
pub(crate) fn oneshot_ctl(
    epfd: std::os::fd::RawFd,
    op: libc::c_int,
    fd: std::os::fd::RawFd,
    token: usize,
    read: bool,
    write: bool,
) -> io::Result<()> {
    let mut events = libc::EPOLLET | libc::EPOLLONESHOT | libc::EPOLLRDHUP;
    if read || !write {
        events |= libc::EPOLLIN;
    }
    if write {
        events |= libc::EPOLLOUT;
    }
    let mut ev = libc::epoll_event {
        events: events as u32,
        u64: token as u64,
    };
    // SAFETY: `epfd` is the loop's epoll descriptor (its Poll outlives the
    // call) and `ev` is a valid epoll_event for the duration of the call;
    // `fd` is only named, never dereferenced (a bad one is an error).
    let r = unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The descriptors waiting handlers have watched on this loop. One stays
/// registered (disarmed: one-shot) after its wait (a pooled upstream
/// connection is waited on again and again: re-arming it is one
/// `epoll_ctl` where adding and removing it each time were two); each has a slot, whose number is its
/// token, and the connection that waits on it now, if any.
///
/// A slot may outlive its descriptor: closing a socket takes it out of
/// the epoll set, and the next wait on that number finds no registration
/// to re-arm (ENOENT) and adds it again. One may also stay registered
/// here while another loop uses it (a pooled connection moves): being
/// one-shot, it reports at most once, finds no owner and is ignored, and
/// no `epoll_ctl` is ever made for a descriptor nobody here waits on.
#[derive(Default)]
pub struct Watched {
    pub(crate) by_fd: std::collections::HashMap<std::os::fd::RawFd, usize>,
    pub(crate) slots: Slab<WatchSlot>,
}

impl Watched {
    /// Forgets `fd`'s slot (its registration is the caller's business).
    pub(crate) fn forget(&mut self, fd: std::os::fd::RawFd) {
        if let Some(slot) = self.by_fd.remove(&fd) {
            self.slots.remove(slot);
        }
    }
}

pub(crate) struct WatchSlot {
    pub(crate) fd: std::os::fd::RawFd,
    /// The key of the connection parked on it.
    pub(crate) owner: Option<usize>,
    /// The last re-arm found the descriptor closed since (a handler that
    /// opens a new socket per request): the next wait adds first.
    pub(crate) add_first: bool,
}
