//! What the servers of a fleet share through `state_dir`: the lock an
//! order is made under ([`Lock`]: a lease, taken over from a server that
//! died), and the challenges any of them may be asked to answer
//! ([`Syncer`]: each server's own, and those others published, kept in
//! the loops' in-memory store once a second).

use super::store::{self, Pending};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often the thread looks at `state_dir` (fleet challenges, picked
/// up certificates) and at what is due.
pub const TICK: Duration = Duration::from_secs(1);
/// A lock not refreshed for this long belongs to a server that died.
pub const LEASE: Duration = Duration::from_secs(120);

/// Keeps the loops' challenge store in step with this server's own
/// challenges and those other servers of a fleet published in
/// `state_dir`: once a second on the "acme-sync" thread, whatever the
/// ACME thread is waiting for (a CA's answer may take 30 s), and at once
/// when this server publishes or withdraws one.
pub struct Syncer {
    state: Mutex<SyncState>,
}

#[derive(Default)]
pub struct SyncState {
    challenges_dir: PathBuf,
    /// This server's challenges, with the file each was published in.
    pub own: Vec<(String, Pending)>,
    answered: Vec<Pending>,
}

impl Syncer {
    pub fn start(challenges_dir: PathBuf) -> Arc<Syncer> {
        let s = Arc::new(Syncer {
            state: Mutex::new(SyncState {
                challenges_dir,
                ..SyncState::default()
            }),
        });
        let weak = Arc::downgrade(&s);
        let spawned = std::thread::Builder::new()
            .name("acme-sync".into())
            .spawn(move || {
                while let Some(s) = weak.upgrade() {
                    if let Err(e) = s.sync() {
                        log::error!("ACME: a fleet challenge: {e}");
                    }
                    drop(s);
                    std::thread::sleep(TICK);
                }
            });
        if let Err(e) = spawned {
            log::error!("ACME: cannot start the challenge thread: {e}");
        }
        s
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_dir(&self, d: PathBuf) {
        self.lock().challenges_dir = d;
    }

    /// This server's challenges first (they win a name both have), then
    /// the fleet's files not older than 10 minutes.
    pub fn sync(&self) -> Result<(), String> {
        let mut st = self.lock();
        let mut all: Vec<Pending> = st.own.iter().map(|(_, p)| p.clone()).collect();
        let mut others = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&st.challenges_dir) {
            let now = SystemTime::now();
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_none_or(|x| x != "json") {
                    continue;
                }
                let Some(t) = e.metadata().and_then(|m| m.modified()).ok() else {
                    continue;
                };
                if now.duration_since(t).unwrap_or_default() >= Duration::from_secs(600) {
                    continue;
                }
                if let Ok(text) = std::fs::read(&p)
                    && let Ok(c) = serde_json::from_slice::<Pending>(&text)
                    && !all.contains(&c)
                {
                    others.push((t, c));
                }
            }
        }
        // The newest first: a stale file loses to a new challenge.
        others.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.token.cmp(&b.1.token)));
        for (_, c) in others {
            if !all.contains(&c) {
                all.push(c);
            }
        }
        if all != st.answered {
            // Stored even when an entry was bad (the others are answered;
            // the error is reported once per change, not every second).
            let r = store::set_pending(&all);
            st.answered = all;
            r?;
        }
        Ok(())
    }
}

/// A lock file in `state_dir/<ca>/locks/`, taken with `O_EXCL` (which
/// NFS honours, unlike `flock`). It holds the holder's [`identity`]; its
/// modified time (set by the file server at each write) is the lease.
pub struct Lock {
    pub path: PathBuf,
    me: String,
}

impl Lock {
    /// `Ok(None)`: another live server holds it.
    pub fn take(dir: &Path, name: &str, me: &str) -> std::io::Result<Option<Lock>> {
        store::make_dir(dir)?;
        let path = dir.join(format!("{name}.lock"));
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(me.as_bytes())?;
                    return Ok(Some(Lock {
                        path,
                        me: me.to_owned(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let Ok(seen) = lock_state(&path) else {
                        continue; // released meanwhile
                    };
                    let age = SystemTime::now().duration_since(seen.1).unwrap_or_default();
                    if age < LEASE && !dead_here(&seen.0, me) {
                        return Ok(None);
                    }
                    // Expired: moved aside (one server wins the rename),
                    // and checked to be the lock that was seen expired,
                    // not one another server has just taken anew.
                    let aside = dir.join(format!(".{name}.stale.{}", unique()));
                    if std::fs::rename(&path, &aside).is_err() {
                        continue;
                    }
                    match lock_state(&aside) {
                        Ok(s) if s == seen => {
                            log::warn!(
                                "ACME: took over the lock {} of {}, which expired or no longer runs",
                                path.display(),
                                seen.0
                            );
                            let _ = std::fs::remove_file(&aside);
                        }
                        _ => {
                            // Not ours to break: put back (unless a third
                            // server took the lock meanwhile).
                            let _ = std::fs::hard_link(&aside, &path);
                            let _ = std::fs::remove_file(&aside);
                            return Ok(None);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Renews the lease; `Err` when the lock is no longer this server's
    /// (it was taken over as expired): the order stops.
    pub fn refresh(&self) -> Result<(), String> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) if s == self.me => {
                // A write, so that the file server stamps the time; never
                // a create (a lock moved aside meanwhile stays gone).
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&self.path)
                    .and_then(|mut f| f.write_all(self.me.as_bytes()))
                    .map_err(|e| format!("{}: {e}", self.path.display()))
            }
            _ => Err(format!(
                "{}: the lock was taken over by another server (this one was too slow)",
                self.path.display()
            )),
        }
    }

    pub fn release(self) {
        if std::fs::read_to_string(&self.path).is_ok_and(|s| s == self.me) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A name no other process of any server uses: this process's identity
/// hashed, and random bytes.
fn unique() -> String {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let h = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, identity().as_bytes());
    let hex = |x: &[u8]| x.iter().map(|c| format!("{c:02x}")).collect::<String>();
    format!("{}{}", hex(&h.as_ref()[..8]), hex(&b))
}

/// A lock file's holder and modified time.
fn lock_state(p: &Path) -> std::io::Result<(String, SystemTime)> {
    let holder = std::fs::read_to_string(p)?;
    let t = std::fs::metadata(p)?.modified()?;
    Ok((holder, t))
}

/// Who this process is in lock files: host name, boot, PID namespace
/// and PID (`host|boot|pidns|pid`), so that a lock of a process that no
/// longer runs is known for one without waiting for its lease, and only
/// by a process that sees the same PIDs.
pub fn identity() -> String {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    let host = read("/proc/sys/kernel/hostname").unwrap_or_default();
    let boot = read("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{host}|{boot}|{ns}|{}", std::process::id())
}

/// Whether a lock's holder is a process of this host, boot and PID
/// namespace that no longer runs (it crashed or was killed while
/// ordering).
fn dead_here(holder: &str, me: &str) -> bool {
    let (Some((h, hp)), Some((m, _))) = (holder.rsplit_once('|'), me.rsplit_once('|')) else {
        return false;
    };
    if h != m || h.split('|').any(str::is_empty) {
        return false;
    }
    match hp.trim().parse::<u32>() {
        Ok(p) => p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_held_until_released_or_expired() {
        let d = tempfile::tempdir().unwrap();
        let l = Lock::take(d.path(), "v", "a").unwrap().unwrap();
        assert!(Lock::take(d.path(), "v", "b").unwrap().is_none());
        assert!(l.refresh().is_ok());
        l.release();
        let l = Lock::take(d.path(), "v", "b").unwrap().unwrap();
        // Expired: older than the lease.
        let f = std::fs::File::options().write(true).open(&l.path).unwrap();
        f.set_modified(SystemTime::now() - LEASE - Duration::from_secs(1))
            .unwrap();
        let l2 = Lock::take(d.path(), "v", "c").unwrap().unwrap();
        // The old holder knows it lost the lock, and its release does not
        // remove the new one.
        assert!(l.refresh().is_err());
        l.release();
        assert!(l2.path.exists());
        l2.release();
        assert!(!d.path().join("v.lock").exists());
        // A holder of this host, boot and PID namespace that no longer
        // runs: taken at once; one of another host waits for its lease.
        let me = identity();
        let (base, _) = me.rsplit_once('|').unwrap();
        std::fs::write(d.path().join("v.lock"), format!("{base}|4000000000")).unwrap();
        assert!(Lock::take(d.path(), "v", &me).unwrap().is_some());
        std::fs::write(d.path().join("w.lock"), "other|b|n|4000000000").unwrap();
        assert!(Lock::take(d.path(), "w", &me).unwrap().is_none());
    }
}
