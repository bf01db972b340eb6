//! The open-file cache, like nginx's `open_file_cache`: what a path
//! resolved to (a file with its metadata, a folder, or nothing) is kept
//! for `valid`, after which the path is opened and checked again, so a
//! file replaced on disk is seen within that time. Small files are kept
//! in memory and answered as bytes (the head and the body then leave in
//! one write, with no `openat`, `statx`, `sendfile` or `close`). Larger
//! files are opened for each request and sent with `sendfile`: keeping
//! their descriptors open (a `dup` per response) measured no faster for
//! 100 KiB files, and would keep deleted files open.
//!
//! PERF: one cache per event-loop thread (a `thread_local`), so the hot
//! path takes no lock and shares no cache line with the other loops; the
//! pool's threads do not cache. Each thread's cache is bounded by entry
//! count and by bytes.

use crate::resolve::Miss;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the static plugin needs to know about a file or folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub is_dir: bool,
}

impl Meta {
    pub fn of(md: &std::fs::Metadata) -> Meta {
        Meta {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
            is_dir: md.is_dir(),
        }
    }
    pub fn modified(&self) -> SystemTime {
        if self.mtime >= 0 {
            UNIX_EPOCH + Duration::new(self.mtime as u64, self.mtime_nsec as u32)
        } else {
            UNIX_EPOCH
        }
    }
    pub fn mtime_ns(&self) -> i128 {
        self.mtime as i128 * 1_000_000_000 + self.mtime_nsec as i128
    }
}

/// Where a file's bytes come from.
pub enum Src {
    /// An open file (the caller's own descriptor).
    Fd(File),
    /// The whole file, in memory (a folder: empty).
    Mem(Rc<MemFile>),
}

/// A small file kept in memory, with the headers made for it the first
/// time it was served (PERF: no ETag, date or type formatting per request).
pub struct MemFile {
    /// Shared with the responses that send it (SDK 1.2: no copy).
    pub bytes: std::sync::Arc<[u8]>,
    pub prepared: OnceCell<Rc<Prepared>>,
}

/// The validators and type of a file, as header values.
pub struct Prepared {
    /// The name the type was chosen by (a precompressed sibling is served
    /// under the original's name).
    pub type_name: Box<str>,
    pub etag: Option<String>,
    pub last_modified: String,
    pub content_type: String,
}

/// The cache's settings (the `cache:` option).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub valid: Duration,
    pub entries: usize,
    pub max_file_size: u64,
    /// Bytes of file content one thread's cache holds at most.
    pub max_bytes: u64,
}

enum Kind {
    /// A small file, in memory.
    File(Meta, Rc<MemFile>),
    Dir(Meta),
    Missing(Miss),
}

struct Entry {
    checked: Instant,
    kind: Kind,
}

#[derive(Default)]
struct Cache {
    /// Instance id -> path -> entry (two levels: a lookup borrows the path).
    map: HashMap<u64, HashMap<Box<str>, Entry>>,
    entries: usize,
    bytes: u64,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

fn empty() -> Rc<MemFile> {
    Rc::new(MemFile {
        bytes: std::sync::Arc::new([]),
        prepared: OnceCell::new(),
    })
}

fn to_result(kind: &Kind) -> Result<(Src, Meta), Miss> {
    match kind {
        Kind::Missing(m) => Err(*m),
        Kind::Dir(md) => Ok((Src::Mem(empty()), *md)),
        Kind::File(md, bytes) => Ok((Src::Mem(bytes.clone()), *md)),
    }
}

/// Opens `rel` through the cache of instance `id`; `open` does the real
/// work on a miss or when an entry is due for a check.
pub fn open(
    id: u64,
    rel: &str,
    limits: &Limits,
    open: impl FnOnce() -> Result<(File, std::fs::Metadata), Miss>,
) -> Result<(Src, Meta), Miss> {
    let now = Instant::now();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(e) = c.map.get(&id).and_then(|m| m.get(rel))
            && now.duration_since(e.checked) < limits.valid
        {
            return to_result(&e.kind);
        }
        let fresh = open();
        let old = c.map.get_mut(&id).and_then(|m| m.remove(rel));
        if old.is_some() {
            c.entries -= 1;
        }
        if let Some(Entry {
            kind: Kind::File(_, b),
            ..
        }) = &old
        {
            c.bytes -= b.bytes.len() as u64;
        }
        let kind = match fresh {
            Err(m) => Kind::Missing(m),
            Ok((f, md)) => {
                let meta = Meta::of(&md);
                if meta.is_dir {
                    Kind::Dir(meta)
                } else {
                    // The same file as before: keep its bytes.
                    let kept = match old {
                        Some(Entry {
                            kind: Kind::File(m, b),
                            ..
                        }) if m == meta => Some(b),
                        _ => None,
                    };
                    let bytes = kept.or_else(|| {
                        (meta.size <= limits.max_file_size
                            && c.bytes + meta.size <= limits.max_bytes)
                            .then(|| read_all(&f, meta.size))
                            .flatten()
                    });
                    match bytes {
                        Some(b) => {
                            c.bytes += b.bytes.len() as u64;
                            Kind::File(meta, b)
                        }
                        // Too large to keep: sent from this descriptor.
                        None => return Ok((Src::Fd(f), meta)),
                    }
                }
            }
        };
        let r = to_result(&kind);
        if c.entries >= limits.entries {
            evict(&mut c);
        }
        c.entries += 1;
        c.map
            .entry(id)
            .or_default()
            .insert(Box::from(rel), Entry { checked: now, kind });
        r
    })
}

/// Drops about a quarter of the entries (the hash order is arbitrary).
fn evict(c: &mut Cache) {
    let mut left = (c.entries / 4).max(1);
    let mut freed = 0;
    let mut removed = 0;
    for m in c.map.values_mut() {
        let keys: Vec<Box<str>> = m.keys().take(left).cloned().collect();
        for k in keys {
            if let Some(e) = m.remove(&k) {
                removed += 1;
                left -= 1;
                if let Kind::File(_, b) = e.kind {
                    freed += b.bytes.len() as u64;
                }
            }
        }
        if left == 0 {
            break;
        }
    }
    c.map.retain(|_, m| !m.is_empty());
    c.entries -= removed;
    c.bytes -= freed;
}

/// The whole file, if it still has the size its metadata said.
fn read_all(f: &File, size: u64) -> Option<Rc<MemFile>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(size as usize);
    f.take(size + 1).read_to_end(&mut buf).ok()?;
    (buf.len() as u64 == size).then(|| {
        Rc::new(MemFile {
            bytes: buf.into(),
            prepared: OnceCell::new(),
        })
    })
}

/// Instance ids: never reused, so a cache entry of a dropped instance can
/// never be taken for a new one's.
pub fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}
