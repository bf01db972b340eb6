//! The route's `options:`: parsed once with serde, checked, and turned
//! into the per-route constants the handler uses on every request.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tamada_sdk::units::{Secs, Size};

/// The options as written in YAML.
#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Folder of scripts (default: the vhost's `cgi_bin`).
    pub dir: Option<PathBuf>,
    /// One program for the whole route prefix (ScriptAlias).
    pub script: Option<PathBuf>,
    /// Extension (".php") -> interpreter, for files under document_root.
    pub interpreters: Option<BTreeMap<String, PathBuf>>,
    /// PATH given to scripts.
    pub path: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Pass `Authorization` on as HTTP_AUTHORIZATION.
    #[serde(default)]
    pub pass_authorization: bool,
    /// Set AUTH_TYPE/REMOTE_USER from an `Authorization: Basic` header.
    /// The password is not checked by tamada: the name is the client's
    /// claim, and git-http-backend allows pushes whenever REMOTE_USER is
    /// set. Off by default (RFC 3875 sets them only when the server
    /// authenticated the user).
    #[serde(default)]
    pub basic_remote_user: bool,
    /// Stream a chunked request body to stdin without CONTENT_LENGTH.
    #[serde(default)]
    pub stream_chunked: bool,
    /// Spooled bodies stay in memory up to this size, then go to a file.
    pub spool_threshold: Option<Size>,
    /// Longest wait for the script's complete header block.
    pub header_timeout: Option<Secs>,
    /// Longest stall of the script's output once the response has started.
    pub idle_timeout: Option<Secs>,
    /// Scripts running at once on this route; more get 503.
    pub max_processes: Option<usize>,
    /// Run scripts even when the server serves as root (no `user:` in
    /// server.yaml). Off: such requests get 500 and the error log says why.
    #[serde(default)]
    pub run_as_root: bool,
}

/// Which way a request maps to a program.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `dir/<script>/<path info>`: the first regular file on the way.
    Folder { root: PathBuf },
    /// One program; the whole rest of the path is PATH_INFO.
    Script { program: PathBuf },
    /// Files under `root` run by the interpreter of their extension.
    Interpreters {
        root: PathBuf,
        by_ext: Vec<(String, PathBuf)>,
        /// `root` is the `dir` option: it stands for the route prefix (the
        /// rest of the path is looked up in it); else it is the document
        /// root, and the whole path is.
        under_route: bool,
    },
}

/// Checked options.
pub struct Settings {
    pub mode: Mode,
    pub path: String,
    pub env: Vec<(String, String)>,
    pub pass_authorization: bool,
    pub basic_remote_user: bool,
    pub stream_chunked: bool,
    pub spool_threshold: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_processes: usize,
    pub run_as_root: bool,
}

impl Settings {
    /// `base` is the folder of the vhost file (relative paths resolve
    /// against it); `document_root` and `cgi_bin` are the vhost's.
    pub fn from_config(
        c: Config,
        base: &Path,
        document_root: &Path,
        cgi_bin: Option<&Path>,
    ) -> Result<Settings, String> {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let canon = |what: &str, p: &Path| {
            std::fs::canonicalize(p).map_err(|e| format!("{what} `{}`: {e}", p.display()))
        };
        let mode = match (&c.script, &c.interpreters) {
            (Some(_), Some(_)) => {
                return Err("`script` and `interpreters` exclude each other".into());
            }
            (Some(s), None) => {
                if c.dir.is_some() {
                    return Err("`script` and `dir` exclude each other".into());
                }
                let program = canon("script", &abs(s))?;
                if !program.is_file() {
                    return Err(format!("script `{}` is not a file", program.display()));
                }
                rustix::fs::access(&program, rustix::fs::Access::EXEC_OK).map_err(|e| {
                    format!("script `{}` is not executable: {e}", program.display())
                })?;
                Mode::Script { program }
            }
            (None, Some(map)) => {
                let root = match &c.dir {
                    Some(d) => canon("dir", &abs(d))?,
                    None => canon("document_root", document_root)?,
                };
                let mut by_ext = Vec::new();
                for (ext, prog) in map {
                    if !ext.starts_with('.') || ext.len() < 2 || ext[1..].contains(['.', '/']) {
                        return Err(format!(
                            "interpreters: `{ext}` is not an extension like `.php`"
                        ));
                    }
                    let prog = abs(prog);
                    if !prog.is_file() {
                        return Err(format!(
                            "interpreters: `{}` for `{ext}` is not a file",
                            prog.display()
                        ));
                    }
                    by_ext.push((ext.to_ascii_lowercase(), prog));
                }
                Mode::Interpreters {
                    root,
                    by_ext,
                    under_route: c.dir.is_some(),
                }
            }
            (None, None) => {
                let dir = match (&c.dir, cgi_bin) {
                    (Some(d), _) => abs(d),
                    (None, Some(d)) => d.to_owned(),
                    (None, None) => {
                        return Err(
                            "no scripts: set the vhost's `cgi_bin`, or `dir`, `script` or `interpreters`"
                                .into(),
                        );
                    }
                };
                Mode::Folder {
                    root: canon("dir", &dir)?,
                }
            }
        };
        for k in c.env.keys() {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(format!("env: `{k}` is not a variable name"));
            }
        }
        let dur = |v: &Option<Secs>, default: u64| -> Result<Duration, String> {
            Ok(v.map_or(Duration::from_secs(default), |s| s.0))
        };
        let spool_threshold = c.spool_threshold.map_or(1 << 20, |s| s.0 as usize);
        let max_processes = c.max_processes.unwrap_or(64);
        if max_processes == 0 {
            return Err("max_processes: must be at least 1".into());
        }
        Ok(Settings {
            mode,
            path: c
                .path
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            env: c.env.into_iter().collect(),
            pass_authorization: c.pass_authorization,
            basic_remote_user: c.basic_remote_user,
            stream_chunked: c.stream_chunked,
            spool_threshold,
            header_timeout: dur(&c.header_timeout, 30)?,
            idle_timeout: dur(&c.idle_timeout, 60)?,
            max_processes,
            run_as_root: c.run_as_root,
        })
    }
}
