//! Mapping a request path to an open file under the root, safely.
//!
//! The core already percent-decoded the path and removed dot segments; this
//! module still proves containment on the file system: every open goes
//! through `openat2(RESOLVE_BENEATH)` from the root's descriptor, so the
//! kernel refuses `..` and any symlink that leads outside the root. (With
//! `symlinks: follow` symlinks may leave the root, as nginx's
//! `disable_symlinks off`.) On kernels without openat2 the fallback is
//! `canonicalize` plus a prefix check.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Why a path did not resolve to something servable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Nothing there (or refused without saying why: outside the root).
    NotFound,
    /// There, but not readable.
    Forbidden,
}

/// Checks the relative path's components: no `..`, no NUL, and no
/// dotfiles unless allowed (`.well-known` at the top is always allowed).
pub fn check_components(rel: &str, allow_dotfiles: bool) -> Result<(), Miss> {
    for (i, seg) in rel.split('/').filter(|s| !s.is_empty()).enumerate() {
        if seg == ".." || seg == "." || seg.contains('\0') {
            return Err(Miss::NotFound);
        }
        if seg.starts_with('.') && !allow_dotfiles && !(i == 0 && seg == ".well-known") {
            return Err(Miss::NotFound);
        }
    }
    Ok(())
}

fn miss(e: Errno) -> Miss {
    if e == Errno::ACCESS || e == Errno::PERM {
        Miss::Forbidden
    } else {
        Miss::NotFound
    }
}

/// How long an open root descriptor is reused before the root path is
/// resolved again (a deploy that swaps a `current -> release-N` symlink
/// is seen within this time, as with nginx's `open_file_cache_valid`).
const ROOT_TTL: Duration = Duration::from_secs(1);

/// Open descriptors of roots, by path, reused for [`ROOT_TTL`].
#[derive(Default)]
pub struct Roots {
    map: RwLock<HashMap<PathBuf, (Arc<OwnedFd>, Instant)>>,
}

impl Roots {
    /// The root's descriptor (`O_PATH`), opened at most once per TTL.
    pub fn get(&self, root: &Path) -> Result<Arc<OwnedFd>, Miss> {
        let now = Instant::now();
        if let Ok(m) = self.map.read()
            && let Some((fd, at)) = m.get(root)
            && now.duration_since(*at) < ROOT_TTL
        {
            return Ok(fd.clone());
        }
        let fd = Arc::new(
            rustix::fs::open(
                root,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(miss)?,
        );
        if let Ok(mut m) = self.map.write() {
            m.insert(root.to_owned(), (fd.clone(), now));
        }
        Ok(fd)
    }
}

/// Opens `rel` (relative, no leading `/`) under `root`.
pub fn open_beneath(
    roots: &Roots,
    root: &Path,
    rel: &str,
    follow_outside: bool,
) -> Result<File, Miss> {
    let rel = rel.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let dir = roots.get(root)?;
    // O_NONBLOCK: opening a FIFO planted in the tree must not hang a
    // worker; it changes nothing for regular files (sendfile, read).
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let resolve = if follow_outside {
        ResolveFlags::empty()
    } else {
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
    };
    match rustix::fs::openat2(&*dir, rel, flags, Mode::empty(), resolve) {
        Ok(fd) => Ok(File::from(fd)),
        Err(e) if e == Errno::NOSYS => open_fallback(root, rel, follow_outside),
        Err(e) => Err(miss(e)),
    }
}

/// Without openat2: resolve every symlink and check the prefix.
fn open_fallback(root: &Path, rel: &str, follow_outside: bool) -> Result<File, Miss> {
    let joined: PathBuf = root.join(rel);
    if joined
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(Miss::NotFound);
    }
    let real = joined.canonicalize().map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Miss::Forbidden
        } else {
            Miss::NotFound
        }
    })?;
    let real_root = root.canonicalize().map_err(|_| Miss::NotFound)?;
    if !follow_outside && !real.starts_with(&real_root) {
        return Err(Miss::NotFound);
    }
    File::open(&real).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Miss::Forbidden
        } else {
            Miss::NotFound
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        assert!(check_components("a/b.txt", false).is_ok());
        assert!(check_components(".well-known/x", false).is_ok());
        assert_eq!(check_components(".git/config", false), Err(Miss::NotFound));
        assert_eq!(check_components("a/.env", false), Err(Miss::NotFound));
        assert!(check_components("a/.env", true).is_ok());
        assert_eq!(check_components("a/../b", true), Err(Miss::NotFound));
        assert_eq!(
            check_components("a/.well-known/x", false),
            Err(Miss::NotFound)
        );
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(d.path().join("secret"), "s").unwrap();
        std::fs::write(root.join("ok"), "o").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("ok", root.join("in")).unwrap();
        let r = Roots::default();
        assert!(open_beneath(&r, &root, "ok", false).is_ok());
        assert!(open_beneath(&r, &root, "in", false).is_ok());
        assert_eq!(
            open_beneath(&r, &root, "out", false).err(),
            Some(Miss::NotFound)
        );
        assert!(open_beneath(&r, &root, "out", true).is_ok());
        assert_eq!(
            open_beneath(&r, &root, "../secret", false).err(),
            Some(Miss::NotFound)
        );
        assert_eq!(
            open_beneath(&r, &root, "nope", false).err(),
            Some(Miss::NotFound)
        );
    }
}
