//! The compressed-file cache: a static file is compressed once per
//! coding and level into a folder, and later answers for it are that
//! file, sent with `sendfile`. An entry is named by what identifies one
//! version of one file (device, inode, size, modification time in
//! nanoseconds), the coding and the level, never by its ETag alone (the
//! static plugin may have `etag: off`): a changed file has another name,
//! so a stale entry is never served; old entries age out.
//!
//! The folder is bounded by `max_size`: the least recently used entries
//! are deleted past it. Entries are written to a temporary file and
//! renamed into place when whole, so a reader never sees half of one.
//! One index per folder per process, shared by every filter naming it.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tamada_coding::Coding;

/// What identifies one version of one file's compressed form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub coding: Coding,
    pub level: u32,
}

impl Key {
    pub fn of(md: &fs::Metadata, coding: Coding, level: u32) -> Key {
        Key {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            coding,
            level,
        }
    }

    /// The key an entry's file name stands for (entries found at start).
    pub fn parse(name: &str) -> Option<Key> {
        let (stem, ext) = name.rsplit_once('.')?;
        let coding = tamada_coding::Coding::ALL
            .into_iter()
            .find(|c| c.extension() == ext)?;
        let mut it = stem.split('-');
        let mut hex = || u64::from_str_radix(it.next()?, 16).ok();
        let (dev, ino, size) = (hex()?, hex()?, hex()?);
        let mtime_ns = i128::from_str_radix(it.next()?, 16).ok()?;
        let level = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(Key {
            dev,
            ino,
            size,
            mtime_ns,
            coding,
            level,
        })
    }

    /// The entry's file name.
    pub fn name(&self) -> String {
        format!(
            "{:x}-{:x}-{:x}-{:x}-{}.{}",
            self.dev,
            self.ino,
            self.size,
            self.mtime_ns,
            self.level,
            self.coding.extension()
        )
    }
}

struct Entry {
    size: u64,
    /// When it was last used (a counter, larger is later).
    used: u64,
    /// The entry kept open once asked for (each answer gets a duplicate:
    /// cheaper than finding the file by name again), for up to
    /// [`OPEN_FILES`] entries.
    file: Option<Arc<File>>,
}

/// Entries kept open per cache folder.
const OPEN_FILES: usize = 1024;

struct Index {
    entries: HashMap<Key, Entry>,
    total: u64,
    clock: u64,
    /// Entries with `file` set.
    open: usize,
}

/// One cache folder.
pub struct Cache {
    dir: PathBuf,
    max_size: u64,
    index: Mutex<Index>,
    /// Entries written since start (the tests read it through the log).
    pub stored: AtomicU64,
    /// Answers served from the cache since start.
    pub hits: AtomicU64,
}

fn lock(m: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

static CACHES: OnceLock<Mutex<HashMap<PathBuf, Arc<Cache>>>> = OnceLock::new();

/// The cache of folder `dir` (made 0700 if missing; the entries already
/// there are indexed, oldest first, and temporary files left by a crash
/// removed). `max_size` of the first caller wins for a folder.
pub fn open(dir: &Path, max_size: u64) -> Result<Arc<Cache>, String> {
    let mut all = CACHES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = all.get(dir) {
        return Ok(c.clone());
    }
    if tamada_sdk::host::dry_run() {
        // `tamada -t` creates no files: a folder that is there must be a
        // folder; one that is not is made at start (and an error there
        // names it).
        if dir.exists() && !dir.is_dir() {
            return Err(format!("cache folder {}: not a folder", dir.display()));
        }
        return Ok(Arc::new(Cache {
            dir: dir.to_owned(),
            max_size,
            index: Mutex::new(Index {
                entries: HashMap::new(),
                total: 0,
                clock: 0,
                open: 0,
            }),
            stored: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }));
    }
    // Parents as any folder (0755: the service user must pass through
    // them), the cache itself 0700 and the service user's: the server
    // makes it as root and writes to it after dropping privileges.
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cache folder {}: {e}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cache folder {}: {e}", dir.display())),
    }
    let owner = tamada_sdk::host::service_user();
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
            format!(
                "cache folder {}: cannot give it to the service user: {e}",
                dir.display()
            )
        })?;
    }
    // Writable? (a read-only folder would fail every store, silently.)
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    File::create(&probe).map_err(|e| format!("cache folder {}: {e}", dir.display()))?;
    let _ = fs::remove_file(&probe);
    let mut found = Vec::new();
    for e in fs::read_dir(dir)
        .map_err(|e| format!("cache folder {}: {e}", dir.display()))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(md) = e.metadata() else { continue };
        let Some(key) = Key::parse(&name) else {
            // A temporary file left by a crash (an hour old: a running
            // server's, during a binary upgrade or beside `-t`, is
            // younger), unless this is only a check.
            let stale = md
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
            if name.starts_with(".tmp-") && stale {
                let _ = fs::remove_file(e.path());
            }
            continue;
        };
        if md.is_file() {
            if let Some((uid, gid)) = owner {
                let _ = std::os::unix::fs::chown(e.path(), Some(uid), Some(gid));
            }
            found.push((md.mtime(), key, md.len()));
        }
    }
    found.sort_by_key(|(t, _, _)| *t);
    let mut index = Index {
        entries: HashMap::new(),
        total: 0,
        clock: 0,
        open: 0,
    };
    for (_, key, size) in found {
        index.clock += 1;
        index.total += size;
        let used = index.clock;
        index.entries.insert(
            key,
            Entry {
                size,
                used,
                file: None,
            },
        );
    }
    let c = Arc::new(Cache {
        dir: dir.to_owned(),
        max_size,
        index: Mutex::new(index),
        stored: AtomicU64::new(0),
        hits: AtomicU64::new(0),
    });
    c.evict();
    all.insert(dir.to_owned(), c.clone());
    Ok(c)
}

impl Cache {
    /// The entry for `key`, opened, when the cache has it.
    pub fn get(&self, key: &Key) -> Option<(File, u64)> {
        let (len, kept) = {
            let mut g = lock(&self.index);
            g.clock += 1;
            let now = g.clock;
            let e = g.entries.get_mut(key)?;
            e.used = now;
            (e.size, e.file.clone())
        };
        // (an entry is never rewritten in place: its size is the index's)
        if let Some(f) = kept
            && let Ok(dup) = f.try_clone()
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some((dup, len));
        }
        match File::open(self.dir.join(key.name())) {
            Ok(f) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                let mut g = lock(&self.index);
                if g.open < OPEN_FILES
                    && let Ok(keep) = f.try_clone()
                    && let Some(e) = g.entries.get_mut(key)
                    && e.file.is_none()
                {
                    e.file = Some(Arc::new(keep));
                    g.open += 1;
                }
                Some((f, len))
            }
            Err(_) => {
                // Removed behind our back: forget it.
                let mut g = lock(&self.index);
                if let Some(e) = g.entries.remove(key) {
                    g.total -= e.size;
                    g.open -= e.file.is_some() as usize;
                }
                None
            }
        }
    }

    /// A new entry for `key`, written as the body is compressed.
    pub fn writer(self: &Arc<Self>, key: Key) -> Option<Writer> {
        if key.size > self.max_size / 4 {
            // One file may not push out a quarter of the cache.
            return None;
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| log::warn!("cannot write to the cache: {}: {e}", tmp.display()))
            .ok()?;
        Some(Writer {
            cache: self.clone(),
            key,
            tmp,
            file: Some(file),
            written: 0,
        })
    }

    /// Deletes the least recently used entries while the folder is over
    /// its size.
    fn evict(&self) {
        let mut g = lock(&self.index);
        if g.total <= self.max_size {
            return;
        }
        let mut by_age: Vec<(u64, Key)> =
            g.entries.iter().map(|(k, e)| (e.used, k.clone())).collect();
        by_age.sort_by_key(|(used, _)| *used);
        // Down to 90%, so that the next store does not evict again.
        let target = self.max_size / 10 * 9;
        let mut gone = Vec::new();
        for (_, key) in by_age {
            if g.total <= target {
                break;
            }
            if let Some(e) = g.entries.remove(&key) {
                g.total -= e.size;
                g.open -= e.file.is_some() as usize;
                gone.push(key);
            }
        }
        drop(g);
        // Unlinked with the index free: answers go on meanwhile (one being
        // sent from an entry keeps its open descriptor).
        for key in gone {
            let _ = fs::remove_file(self.dir.join(key.name()));
        }
    }

    fn insert(&self, key: Key, size: u64) {
        {
            let mut g = lock(&self.index);
            g.clock += 1;
            let used = g.clock;
            let e = Entry {
                size,
                used,
                file: None,
            };
            if let Some(old) = g.entries.insert(key, e) {
                g.total -= old.size;
                g.open -= old.file.is_some() as usize;
            }
            g.total += size;
        }
        self.stored.fetch_add(1, Ordering::Relaxed);
        self.evict();
    }
}

/// An entry being written; renamed into place by [`Writer::commit`],
/// removed when dropped before.
pub struct Writer {
    cache: Arc<Cache>,
    key: Key,
    tmp: PathBuf,
    file: Option<File>,
    written: u64,
}

impl Writer {
    /// Appends compressed bytes; a failure (a full disk) gives the entry
    /// up, never the response.
    pub fn write(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.file {
            if let Err(e) = f.write_all(data) {
                log::warn!("cannot write to the cache: {}: {e}", self.tmp.display());
                self.file = None;
            } else {
                self.written += data.len() as u64;
            }
        }
    }

    /// The body is whole: the entry is put in place. Returns its name.
    pub fn commit(mut self) -> Option<String> {
        // On disk before it has its name: after a crash an entry is whole
        // or absent, never a truncated body served as the real one.
        if let Err(e) = self.file.take()?.sync_all() {
            log::warn!("cannot write to the cache: {}: {e}", self.tmp.display());
            return None;
        }
        let name = self.key.name();
        match fs::rename(&self.tmp, self.cache.dir.join(&name)) {
            Ok(()) => {
                self.cache.insert(self.key.clone(), self.written);
                Some(name)
            }
            Err(e) => {
                log::warn!("cannot write to the cache: {}: {e}", self.tmp.display());
                None
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // (after a commit it has another name: nothing to remove)
        let _ = fs::remove_file(&self.tmp);
    }
}
