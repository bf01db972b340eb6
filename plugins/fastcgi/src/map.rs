//! Which script a request runs: a path naming a script file (the part up
//! to the extension; the rest is PATH_INFO), a folder's `index`, or the
//! front controller for paths that name nothing. Files that exist and are
//! not scripts are declined (the next route serves them: static files).

use std::path::{Path, PathBuf};

/// A script to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub name: String,
    pub filename: PathBuf,
    pub path_info: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    Run(Script),
    /// Not ours (a plain file or folder, or nothing and no front
    /// controller): the next route.
    Decline,
    /// A script path whose file does not exist: 404.
    NotFound,
}

/// The script file for `name` (`/a/b.php`), if it is a regular file
/// inside `root` (symlinks may not leave it).
fn script_file(root: &Path, name: &str) -> Option<PathBuf> {
    let p = root.join(name.trim_start_matches('/'));
    let real = p.canonicalize().ok()?;
    (real.starts_with(root) && real.is_file()).then_some(real)
}

pub fn map(root: &Path, path: &str, index: &str, ext: &str, front: Option<&str>) -> Mapped {
    let run = |name: &str, path_info: &str| {
        script_file(root, name).map(|filename| {
            Mapped::Run(Script {
                name: name.to_owned(),
                filename,
                path_info: path_info.to_owned(),
            })
        })
    };
    let fallback = || match front {
        Some(f) => run(f, "").unwrap_or(Mapped::NotFound),
        None => Mapped::Decline,
    };
    // `/x.php` or `/x.php/more`: the first segment that ends with ext.
    let mut end = 0;
    for seg in path.split_inclusive('/') {
        end += seg.len();
        let name = seg.trim_end_matches('/');
        if name.len() > ext.len() && name.ends_with(ext) {
            let script_end = end - (seg.len() - name.len());
            let (name, info) = path.split_at(script_end);
            return run(name, info).unwrap_or_else(|| {
                // nginx's try_files falls back for a missing script too.
                match front {
                    Some(f) => run(f, "").unwrap_or(Mapped::NotFound),
                    None => Mapped::NotFound,
                }
            });
        }
    }
    let on_disk = root.join(path.trim_start_matches('/'));
    if path.ends_with('/') {
        let candidate = format!("{path}{index}");
        if let Some(m) = run(&candidate, "") {
            return m;
        }
        if on_disk.is_dir() {
            return Mapped::Decline;
        }
        return fallback();
    }
    if on_disk.exists() {
        // A file (static) or a folder (static redirects to the slash).
        return Mapped::Decline;
    }
    fallback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        for f in [
            "index.php",
            "app.php",
            "sub/index.php",
            "style.css",
            "plain/x.txt",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "<?php\n").unwrap();
        }
        (d, root)
    }

    fn name(m: Mapped) -> (String, String) {
        match m {
            Mapped::Run(s) => (s.name, s.path_info),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scripts_indexes_and_path_info() {
        let (_d, r) = tree();
        let m = |p| map(&r, p, "index.php", ".php", None);
        assert_eq!(name(m("/app.php")), ("/app.php".into(), "".into()));
        assert_eq!(
            name(m("/app.php/users/7")),
            ("/app.php".into(), "/users/7".into())
        );
        assert_eq!(name(m("/")), ("/index.php".into(), "".into()));
        assert_eq!(name(m("/sub/")), ("/sub/index.php".into(), "".into()));
        assert_eq!(m("/missing.php"), Mapped::NotFound);
        assert_eq!(m("/style.css"), Mapped::Decline);
        assert_eq!(m("/plain/"), Mapped::Decline);
        assert_eq!(m("/sub"), Mapped::Decline);
        assert_eq!(m("/nothing"), Mapped::Decline);
        // A folder named like a script is not a script.
        assert_eq!(m("/.php"), Mapped::Decline);
    }

    #[test]
    fn the_front_controller_takes_what_names_nothing() {
        let (_d, r) = tree();
        let m = |p| map(&r, p, "index.php", ".php", Some("/index.php"));
        assert_eq!(
            name(m("/blog/2024/hello")),
            ("/index.php".into(), "".into())
        );
        assert_eq!(name(m("/missing.php")), ("/index.php".into(), "".into()));
        assert_eq!(name(m("/plain/nothing/")), ("/index.php".into(), "".into()));
        assert_eq!(m("/style.css"), Mapped::Decline);
    }

    #[test]
    fn symlinks_out_of_the_root_are_not_run() {
        let (_d, r) = tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("evil.php"), "<?php").unwrap();
        std::os::unix::fs::symlink(outside.path().join("evil.php"), r.join("evil.php")).unwrap();
        assert_eq!(
            map(&r, "/evil.php", "index.php", ".php", None),
            Mapped::NotFound
        );
    }
}
