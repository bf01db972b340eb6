//! From a request path to the program to run: the three modes (a folder
//! of scripts, one program for a prefix, interpreters by extension), with
//! the checks that keep a request inside its folder.

use crate::config::Mode;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// A program ready to run for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What to execute.
    pub program: PathBuf,
    /// The script handed to an interpreter as its argument.
    pub arg: Option<PathBuf>,
    /// SCRIPT_FILENAME: the script's file (canonical).
    pub script_filename: PathBuf,
    /// SCRIPT_NAME: the URL path that names the script.
    pub script_name: String,
    /// PATH_INFO: what follows the script in the URL path (decoded).
    pub path_info: String,
    /// The script's folder, the child's working directory.
    pub cwd: PathBuf,
    /// The script's file name, for `cgi:<name>` log records.
    pub label: String,
}

impl Target {
    /// What the CGI meta-variables say of it.
    pub fn script(&self) -> crate::env::Script<'_> {
        crate::env::Script {
            name: &self.script_name,
            filename: &self.script_filename,
            path_info: &self.path_info,
        }
    }
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Mapped {
    Run(Target),
    /// Not ours (interpreters mode: no interpreter for that file).
    Decline,
    /// Refuse with this status (404, 403).
    Refuse(u16, &'static str),
}

/// Maps a request. `route` is the route prefix, `rest` the path after it,
/// `path` the whole normalised path.
pub fn map(mode: &Mode, route: &str, rest: &str, path: &str) -> Mapped {
    match mode {
        Mode::Script { program } => {
            let cwd = program.parent().unwrap_or(Path::new("/")).to_owned();
            Mapped::Run(Target {
                program: program.clone(),
                arg: None,
                script_filename: program.clone(),
                script_name: route.trim_end_matches('/').to_owned(),
                path_info: rest.to_owned(),
                cwd,
                label: file_name(program),
            })
        }
        Mode::Folder { root } => {
            let found = match walk(root, route.trim_end_matches('/'), rest) {
                Ok(f) => f,
                Err(Miss::Missing) => return Mapped::Refuse(404, "no such script"),
                Err(Miss::Directory) => return Mapped::Refuse(403, "a folder is not a script"),
                Err(Miss::Refused(why)) => return Mapped::Refuse(403, why),
            };
            // SECURITY: only files with an execute bit for us run.
            if rustix::fs::access(&found.file, rustix::fs::Access::EXEC_OK).is_err() {
                return Mapped::Refuse(403, "script is not executable");
            }
            let program = found.file.clone();
            Mapped::Run(found.into_target(program, None))
        }
        Mode::Interpreters {
            root,
            by_ext,
            under_route,
        } => {
            let interp = |name: &str| {
                let lower = name.to_ascii_lowercase();
                by_ext
                    .iter()
                    .find(|(ext, _)| lower.ends_with(ext.as_str()) && lower.len() > ext.len())
                    .map(|(_, p)| p.clone())
            };
            let (base, rel) = if *under_route {
                (route.trim_end_matches('/'), rest)
            } else {
                ("", path)
            };
            match walk(root, base, rel) {
                Ok(found) => {
                    let Some(program) = interp(&found.label) else {
                        return Mapped::Decline;
                    };
                    if rustix::fs::access(&found.file, rustix::fs::Access::READ_OK).is_err() {
                        return Mapped::Refuse(403, "script is not readable");
                    }
                    let arg = Some(found.file.clone());
                    Mapped::Run(found.into_target(program, arg))
                }
                Err(Miss::Missing) => {
                    let last = rel.rsplit('/').next().unwrap_or("");
                    if interp(last).is_some() {
                        Mapped::Refuse(404, "no such script")
                    } else {
                        Mapped::Decline
                    }
                }
                Err(Miss::Directory) => Mapped::Decline,
                Err(Miss::Refused(why)) => Mapped::Refuse(403, why),
            }
        }
    }
}

struct Found {
    file: PathBuf,
    script_name: String,
    path_info: String,
    label: String,
}

impl Found {
    fn into_target(self, program: PathBuf, arg: Option<PathBuf>) -> Target {
        let cwd = self.file.parent().unwrap_or(Path::new("/")).to_owned();
        Target {
            program,
            arg,
            script_filename: self.file,
            script_name: self.script_name,
            path_info: self.path_info,
            cwd,
            label: self.label,
        }
    }
}

enum Miss {
    Missing,
    Directory,
    Refused(&'static str),
}

/// Walks `rel` (a path starting with `/`, or empty) segment by segment under
/// `root` (canonical) to the first regular file. `url_base` is the URL path
/// that `root` stands for.
fn walk(root: &Path, url_base: &str, rel: &str) -> Result<Found, Miss> {
    if !rel.is_empty() && !rel.starts_with('/') {
        return Err(Miss::Missing);
    }
    let mut cur = root.to_owned();
    let mut pos = 0;
    let bytes = rel.as_bytes();
    while pos < bytes.len() {
        // `rel[pos]` is '/'; the segment runs to the next '/'.
        let start = pos + 1;
        let end = rel[start..].find('/').map_or(rel.len(), |i| start + i);
        let seg = &rel[start..end];
        pos = end;
        if seg.is_empty() {
            continue;
        }
        // SECURITY: the core removes dot segments; refuse them anyway, and
        // refuse dotfiles (.htaccess, .git) on the way to the script.
        if seg.starts_with('.') {
            return Err(Miss::Refused("dot segment or dotfile"));
        }
        cur.push(seg);
        let meta = match std::fs::metadata(&cur) {
            Ok(m) => m,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Err(Miss::Missing);
            }
            Err(_) => return Err(Miss::Refused("cannot stat the script")),
        };
        if meta.is_dir() {
            continue;
        }
        if !meta.is_file() {
            return Err(Miss::Refused("not a regular file"));
        }
        // SECURITY: a symlink may point out of the folder.
        let file = std::fs::canonicalize(&cur).map_err(|_| Miss::Missing)?;
        if !file.starts_with(root) {
            return Err(Miss::Refused("script resolves outside its folder"));
        }
        return Ok(Found {
            label: seg.to_owned(),
            file,
            script_name: format!("{url_base}{}", &rel[..end]),
            path_info: rel[end..].to_owned(),
        });
    }
    Err(Miss::Directory)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
