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
use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// Why a path did not resolve to something servable.
#[derive(Debug, PartialEq, Eq)]
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

/// Opens `rel` (relative, no leading `/`) under `root`.
pub fn open_beneath(root: &Path, rel: &str, follow_outside: bool) -> Result<File, Miss> {
    let rel = rel.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(miss)?;
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let resolve = if follow_outside {
        ResolveFlags::empty()
    } else {
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
    };
    match rustix::fs::openat2(&dir, rel, flags, Mode::empty(), resolve) {
        Ok(fd) => {
            let f = File::from(fd);
            // Reads never block on regular files; drop O_NONBLOCK (it was
            // only there so that opening a FIFO does not hang).
            let _ = rustix::fs::fcntl_setfl(&f, OFlags::empty());
            Ok(f)
        }
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
        assert!(open_beneath(&root, "ok", false).is_ok());
        assert!(open_beneath(&root, "in", false).is_ok());
        assert_eq!(
            open_beneath(&root, "out", false).err(),
            Some(Miss::NotFound)
        );
        assert!(open_beneath(&root, "out", true).is_ok());
        assert_eq!(
            open_beneath(&root, "../secret", false).err(),
            Some(Miss::NotFound)
        );
        assert_eq!(
            open_beneath(&root, "nope", false).err(),
            Some(Miss::NotFound)
        );
    }
}
