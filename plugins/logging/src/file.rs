//! One buffered writer per log file, shared process-wide.
//!
//! Vhosts that log to the same file (one `log:` folder for several vhosts,
//! or the same `access_log:`) share one [`LogFile`], found in a static map
//! keyed by the file's canonical path. The map holds `Weak`s: the file is
//! flushed and closed when the last instance using it is dropped (after a
//! reload that no longer names it).
//!
//! Lines go into an in-memory buffer under one lock, a whole line at a
//! time, so lines from different threads never interleave. Appending is
//! all the log phase does (it runs on the server's event loops): a full
//! buffer is handed, whole, to the plugin's writer thread, which writes
//! it with one `write` call to a file opened `O_APPEND`, under a lock of
//! its own that no appender ever waits on. `flush` (the host calls it
//! about once a second) and `reopen` go through the same thread, so
//! buffers reach the file in the order they were filled. A failed or slow
//! write never blocks serving: the lines it held, or lines past
//! [`MAX_QUEUED`] bytes waiting for the writer, are counted as dropped
//! and reported (by the caller of [`LogFile::take_report`]) at most once
//! a second.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Past this many buffered bytes a line write flushes the buffer.
const BUFFER: usize = 64 * 1024;
/// Dropped-record reports are at least this far apart.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Bytes handed to the writer thread and not yet written, for all files:
/// past it new full buffers are dropped (and counted) instead of queued.
pub const MAX_QUEUED: usize = 64 << 20;

/// A log file shared by every instance that writes to its path.
pub struct LogFile {
    /// The canonical path: reopened on `reopen` (log rotation).
    path: PathBuf,
    /// Lines appended by the workers. PERF: the write(2) happens under
    /// `state` only, so threads keep appending here while one writes
    /// (writing under the appenders' lock cost about 2% of the requests
    /// per second on the 1 KiB benchmark). Lock order: `pending`, then
    /// `state`.
    pending: Mutex<Vec<u8>>,
    state: Mutex<State>,
    /// Lines dropped because the writer was too far behind.
    dropped_queued: AtomicU64,
}

/// Work for the writer thread.
enum Job {
    Write(Arc<LogFile>, Vec<u8>),
    Flush(Arc<LogFile>, Sender<()>),
    Reopen(Arc<LogFile>, Sender<Result<(), String>>),
}

static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// The writer thread of this plugin, started on first use.
fn writer() -> &'static Sender<Job> {
    static W: OnceLock<Sender<Job>> = OnceLock::new();
    W.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Write(f, buf) => {
                            QUEUED.fetch_sub(buf.len(), Ordering::Relaxed);
                            let mut st = lock(&f.state);
                            st.buf.extend_from_slice(&buf);
                            st.write_out(&f.path);
                        }
                        // The writer lets go of the file before it answers:
                        // the caller may be about to drop the last handle,
                        // whose drop writes what is left.
                        Job::Flush(f, done) => {
                            f.flush_now();
                            drop(f);
                            let _ = done.send(());
                        }
                        Job::Reopen(f, done) => {
                            let r = f.reopen_now();
                            drop(f);
                            let _ = done.send(r);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the log writer thread: {e}");
        }
        tx
    })
}

/// Hands a job to the writer thread; `false` if it is not running.
fn send(job: Job) -> bool {
    writer().send(job).is_ok()
}

struct State {
    /// `None` only when a reopen found no file and could not create one;
    /// every flush retries the open.
    file: Option<File>,
    /// Whole lines waiting to be written.
    buf: Vec<u8>,
    /// A failed write left part of a line in the file: the next write
    /// starts with a newline so the garbage stays on a line of its own.
    broken_line: bool,
    /// Lines lost since the last report.
    dropped: u64,
    /// Lines lost since the start.
    dropped_total: u64,
    /// The last write or open error, for the report.
    last_error: Option<String>,
    last_report: Option<Instant>,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<LogFile>>> {
    static FILES: OnceLock<Mutex<HashMap<PathBuf, Weak<LogFile>>>> = OnceLock::new();
    FILES.get_or_init(Default::default)
}

/// Locks, ignoring poisoning: a panic elsewhere must not stop logging,
/// and no half-done update of `State` can do worse than lose a line.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogFile {
    /// The shared writer of `path`, opening (and creating) the file if no
    /// instance has it open yet.
    pub fn get(path: &Path) -> Result<Arc<LogFile>, String> {
        let mut files = lock(registry());
        // A file already open (a reload keeps naming it) is shared, not
        // opened again: the server may have dropped the privileges it
        // was opened with.
        if let Ok(canonical) = path.canonicalize()
            && let Some(shared) = files.get(&canonical).and_then(Weak::upgrade)
        {
            return Ok(shared);
        }
        // Open before canonicalizing: the file may not exist yet.
        let file = open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // Opened by root before the server becomes its service user: the
        // file is the user's, so that a reload or a binary upgrade (which
        // runs as that user) can open it again. Fails harmlessly when not
        // root.
        if let Some((uid, gid)) = tamada_sdk::host::service_user() {
            let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
        }
        let canonical = path
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
        if let Some(shared) = files.get(&canonical).and_then(Weak::upgrade) {
            return Ok(shared);
        }
        files.retain(|_, w| w.strong_count() > 0);
        let shared = Arc::new(LogFile {
            path: canonical.clone(),
            dropped_queued: AtomicU64::new(0),
            pending: Mutex::new(Vec::with_capacity(BUFFER)),
            state: Mutex::new(State {
                file: Some(file),
                buf: Vec::with_capacity(BUFFER),
                broken_line: false,
                dropped: 0,
                dropped_total: 0,
                last_error: None,
                last_report: None,
            }),
        });
        files.insert(canonical, Arc::downgrade(&shared));
        Ok(shared)
    }

    /// Appends one line (its newline included) to the buffer; a full
    /// buffer goes to the writer thread. Never waits for the file.
    pub fn write_line(self: &Arc<Self>, line: &[u8]) {
        let mut pending = lock(&self.pending);
        pending.extend_from_slice(line);
        if pending.len() < BUFFER {
            return;
        }
        let full = std::mem::replace(&mut *pending, Vec::with_capacity(BUFFER));
        drop(pending);
        let n = full.len();
        if QUEUED.fetch_add(n, Ordering::Relaxed) + n > MAX_QUEUED {
            QUEUED.fetch_sub(n, Ordering::Relaxed);
            let lines = full.iter().filter(|&&b| b == b'\n').count() as u64;
            self.dropped_queued.fetch_add(lines, Ordering::Relaxed);
            return;
        }
        if !send(Job::Write(self.clone(), full)) {
            // No writer thread: write here rather than lose the lines.
            QUEUED.fetch_sub(n, Ordering::Relaxed);
            self.flush_now();
        }
    }

    /// Moves the appended lines to the writer's buffer and returns the
    /// writer, locked before `pending` is released so buffers are written
    /// in the order they were filled.
    fn hand_over(&self, mut pending: MutexGuard<'_, Vec<u8>>) -> MutexGuard<'_, State> {
        let mut st = lock(&self.state);
        if st.buf.is_empty() {
            std::mem::swap(&mut st.buf, &mut *pending);
        } else {
            st.buf.extend_from_slice(&pending);
            pending.clear();
        }
        st
    }

    /// Writes everything appended so far to the file, after the buffers
    /// already queued for the writer (waits for it: not for event loops).
    pub fn flush(self: &Arc<Self>) {
        let (tx, rx) = channel();
        if send(Job::Flush(self.clone(), tx)) {
            let _ = rx.recv();
        } else {
            self.flush_now();
        }
    }

    fn flush_now(&self) {
        self.hand_over(lock(&self.pending)).write_out(&self.path);
    }

    /// Log rotation: writes what is buffered to the file open now, then
    /// opens the path anew if it no longer names that file (it was
    /// renamed or removed). Several instances share the file, so the
    /// second call of one SIGUSR1 finds the new file and does nothing.
    /// On failure the old file is kept, and the error is returned.
    pub fn reopen(self: &Arc<Self>) -> Result<(), String> {
        let (tx, rx) = channel();
        if send(Job::Reopen(self.clone(), tx)) {
            rx.recv()
                .unwrap_or_else(|_| Err("the log writer thread is gone".into()))
        } else {
            self.reopen_now()
        }
    }

    fn reopen_now(&self) -> Result<(), String> {
        let mut st = self.hand_over(lock(&self.pending));
        st.write_out(&self.path);
        let same = match (&st.file, std::fs::metadata(&self.path)) {
            (Some(f), Ok(on_disk)) => f
                .metadata()
                .is_ok_and(|m| m.dev() == on_disk.dev() && m.ino() == on_disk.ino()),
            _ => false,
        };
        if same {
            return Ok(());
        }
        match open(&self.path) {
            Ok(f) => {
                st.file = Some(f);
                Ok(())
            }
            Err(e) => {
                let msg = format!("cannot reopen {}: {e}", self.path.display());
                st.last_error = Some(msg.clone());
                Err(msg)
            }
        }
    }

    /// The text to report about dropped lines, when there are some and
    /// the last report is at least a second old. The caller logs it
    /// (outside the lock: a log record may come back to this file).
    pub fn take_report(&self) -> Option<String> {
        let mut st = lock(&self.state);
        let behind = self.dropped_queued.swap(0, Ordering::Relaxed);
        if behind > 0 {
            st.dropped += behind;
            st.dropped_total += behind;
            st.last_error
                .get_or_insert_with(|| "the disk is too slow: the writer fell behind".into());
        }
        if st.dropped == 0 || st.last_report.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            return None;
        }
        let n = std::mem::take(&mut st.dropped);
        st.last_report = Some(Instant::now());
        Some(format!(
            "{}: {n} log records dropped ({} since start): {}",
            self.path.display(),
            st.dropped_total,
            st.last_error.as_deref().unwrap_or("unknown error")
        ))
    }

    #[cfg(test)]
    fn dropped_total(&self) -> u64 {
        lock(&self.state).dropped_total
    }
}

impl State {
    fn write_out(&mut self, path: &Path) {
        if self.buf.is_empty() {
            return;
        }
        if self.file.is_none() {
            match open(path) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.last_error = Some(format!("cannot open {}: {e}", path.display()));
                }
            }
        }
        let Some(file) = self.file.as_mut() else {
            self.drop_buffered(0);
            return;
        };
        if self.broken_line {
            // Best effort; if it fails the buffer's write fails too.
            if file.write_all(b"\n").is_ok() {
                self.broken_line = false;
            }
        }
        let mut written = 0;
        let err = loop {
            if written == self.buf.len() {
                break None;
            }
            match file.write(&self.buf[written..]) {
                Ok(0) => break Some(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        match err {
            None => {
                self.buf.clear();
            }
            Some(e) => {
                self.last_error = Some(format!("cannot write {}: {e}", path.display()));
                self.drop_buffered(written);
            }
        }
    }

    /// Counts the lines of `buf` past `written` as dropped and empties it.
    fn drop_buffered(&mut self, written: usize) {
        let lost = self.buf[written..].iter().filter(|&&b| b == b'\n').count() as u64;
        if written > 0 && self.buf[written - 1] != b'\n' {
            self.broken_line = true;
        }
        self.dropped += lost;
        self.dropped_total += lost;
        self.buf.clear();
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let path = self.path.clone();
        self.hand_over(lock(&self.pending)).write_out(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_per_path_and_lines_arrive_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let a = LogFile::get(&p).unwrap();
        // Another spelling of the same path shares the writer.
        let b = LogFile::get(&dir.path().join(".").join("a.log")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let f = if t % 2 == 0 { a.clone() } else { b.clone() };
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        f.write_line(
                            format!("thread {t} line {i} {}\n", "x".repeat(50)).as_bytes(),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        a.flush();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 16_000);
        assert!(
            text.lines()
                .all(|l| l.starts_with("thread ") && l.ends_with(&"x".repeat(50)))
        );
    }

    #[test]
    fn appending_never_waits_for_a_stuck_file() {
        // A FIFO whose reader reads nothing: the writer thread's write
        // blocks once the pipe is full; appending must go on regardless.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stuck.log");
        let st = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        use std::os::unix::fs::OpenOptionsExt;
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000) // O_NONBLOCK: no writer yet
            .open(&p)
            .unwrap();
        let f = LogFile::get(&p).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let g = f.clone();
        std::thread::spawn(move || {
            for i in 0..40 * BUFFER / 64 {
                g.write_line(format!("{i:063}\n").as_bytes());
            }
            tx.send(()).unwrap();
        });
        // 40 full buffers against a 64 KiB pipe: only the writer waits.
        rx.recv_timeout(Duration::from_secs(20))
            .expect("write_line waited for the file");
        // Unblock the writer so the thread can end the test cleanly.
        let mut r = reader;
        let mut sink = vec![0u8; 1 << 16];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            use std::io::Read;
            let _ = r.read(&mut sink);
        }
    }

    #[test]
    fn nothing_is_written_before_flush_then_everything() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.log");
        let f = LogFile::get(&p).unwrap();
        f.write_line(b"one\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
        f.flush();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\n");
        f.write_line(b"two\n");
        drop(f);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn reopen_after_rename_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let f = LogFile::get(&p).unwrap();
        f.write_line(b"before\n");
        std::fs::rename(&p, dir.path().join("c.log.1")).unwrap();
        f.write_line(b"between\n");
        f.reopen().unwrap();
        f.reopen().unwrap(); // a second instance's call: same file, kept
        f.write_line(b"after\n");
        f.flush();
        let old = std::fs::read_to_string(dir.path().join("c.log.1")).unwrap();
        assert_eq!(old, "before\nbetween\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "after\n");
    }

    #[test]
    fn full_disk_counts_drops_and_reports_once_a_second() {
        let f = LogFile::get(Path::new("/dev/full")).unwrap();
        assert!(f.take_report().is_none());
        for _ in 0..3 {
            f.write_line(b"lost\n");
        }
        f.flush();
        let r = f.take_report().expect("a report");
        assert!(r.contains("3 log records dropped"), "{r}");
        assert!(r.contains("No space left on device"), "{r}");
        f.write_line(b"lost again\n");
        f.flush();
        assert!(f.take_report().is_none(), "rate limited");
        assert!(f.dropped_total() >= 4);
        // A huge line goes through the full-buffer path, never panics.
        f.write_line(&vec![b'y'; BUFFER * 2]);
    }
}
