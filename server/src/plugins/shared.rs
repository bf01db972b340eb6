//! Shared bytes (SDK 1.2): a plugin's body of bytes it shares with other
//! responses comes as a 1.0 stream whose `read` is the plugin's shared
//! reader (`tamada_plugin_shared_v1`). The readers of every loaded plugin
//! are registered here at load; `exchange/response.rs` asks whether a
//! stream is one, and then sends its bytes where they are.

use std::sync::atomic::{AtomicUsize, Ordering};
use tamada_sdk::abi::{SharedV1, StreamV1};

/// Plugins with a shared-bytes table, at most (more are read as streams).
const MAX: usize = 256;

static TABLES: [AtomicUsize; MAX] = [const { AtomicUsize::new(0) }; MAX];
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Registers a plugin's table (once per library; never removed: libraries
/// are never unloaded).
pub fn register(t: &'static SharedV1) {
    let addr = t as *const SharedV1 as usize;
    let n = COUNT.load(Ordering::Acquire);
    if (0..n).any(|i| TABLES[i].load(Ordering::Acquire) == addr) || n >= MAX {
        return;
    }
    // Only the thread that loads plugins (start-up, SIGHUP) registers.
    TABLES[n].store(addr, Ordering::Release);
    COUNT.store(n + 1, Ordering::Release);
}

/// The bytes of a shared-bytes stream, or `None` for any other stream.
/// They stay valid until the stream is closed.
pub fn bytes(s: &StreamV1) -> Option<&'static [u8]> {
    let n = COUNT.load(Ordering::Acquire);
    for slot in &TABLES[..n] {
        let addr = slot.load(Ordering::Acquire);
        // SAFETY: every address stored is a `&'static SharedV1` (above).
        let t = unsafe { &*(addr as *const SharedV1) };
        if t.read as usize == s.read as usize {
            return Some((t.bytes)(s.ctx).as_slice());
        }
    }
    None
}

/// A plugin's shared bytes: the bytes its stream
/// holds, borrowed until the stream is closed, which dropping this does.
pub struct SharedBody {
    stream: StreamV1,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the bytes are immutable and owned by the stream's state, which
// is `Send` (the SDK makes it from an `Arc<[u8]>`); one owner at a time.
unsafe impl Send for SharedBody {}

impl SharedBody {
    /// The stream's bytes when it is a shared-bytes stream; else the
    /// stream back.
    pub fn of(stream: StreamV1) -> Result<SharedBody, StreamV1> {
        match bytes(&stream) {
            Some(b) => Ok(SharedBody {
                ptr: b.as_ptr(),
                len: b.len(),
                stream,
            }),
            None => Err(stream),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` and `len` are the slice the plugin's table gave
        // for this stream, valid until its close (in `drop`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for SharedBody {
    fn drop(&mut self) {
        // Closing drops an `Arc`: no blocking, any thread.
        (self.stream.close)(self.stream.ctx, false);
    }
}
