//! `logging`: each vhost's access log and error log.
//!
//! A logger instance is built per vhost (`loggers:`, or by default for a
//! vhost with a `log:` folder). Its `log` phase appends one access line per
//! finished exchange; its `record` phase gets the log records the host
//! routes to the vhost (plugin errors and panics, CGI stderr) and appends
//! them to the error log through a fern `Dispatch` (used via `into_log()`;
//! the SDK owns this cdylib's global logger). Both go to shared, buffered
//! [`file::LogFile`]s, flushed by the host's `flush` calls (about once a
//! second) and at shutdown, and reopened on `reopen` (SIGUSR1).
//!
//! Options (all optional):
//! - `format`: `combined` (default), `common` or `json`
//! - `access_log`: a file, or `off` (default `access.log` in the `log:` folder)
//! - `error_log`: a file, or `off` (default `error.log` in the `log:` folder)
//! - `error_level`: least severe record kept in the error log (default `info`)
//!
//! This plugin installs no signal handler and contains no `unsafe`.

mod file;
mod format;

use file::LogFile;
use format::{Format, Stamp, access_line, escape_message_into};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tamada_sdk::prelude::*;

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    format: Format,
    access_log: Option<String>,
    error_log: Option<String>,
    error_level: Option<String>,
}

/// The error log: a fern dispatch that formats and filters records and
/// hands each finished line to the shared file.
struct ErrorLog {
    level: log::LevelFilter,
    logger: Box<dyn log::Log>,
    file: Arc<LogFile>,
}

/// A vhost's logger.
pub struct Logging {
    /// Names the vhost in JSON lines and in records that lack one.
    vhost: String,
    format: Format,
    access: Option<Arc<LogFile>>,
    errors: Option<ErrorLog>,
}

/// Where a log goes: the option's path (`off` for none; relative paths
/// resolve against the vhost file's folder, like every path in conf.d),
/// else `default_name` in the vhost's `log:` folder, else nowhere.
fn destination(
    option: Option<&str>,
    options: &Options,
    default_name: &str,
) -> Result<Option<PathBuf>, String> {
    match option {
        Some("off") => Ok(None),
        Some("") => Err("an empty path; write `off` to turn the log off".into()),
        Some(p) => {
            let p = Path::new(p);
            let base = options.vhost().config_file().parent();
            Ok(Some(match base {
                Some(base) if p.is_relative() => base.join(p),
                _ => p.to_owned(),
            }))
        }
        None => Ok(options.vhost().log_dir().map(|d| d.join(default_name))),
    }
}

fn error_log(file: Arc<LogFile>, level: log::LevelFilter) -> ErrorLog {
    let out = file.clone();
    let (level, logger) = fern::Dispatch::new()
        .level(level)
        .format(|out, message, rec| {
            // `time`, `client` and `vhost` travel as key-values (see
            // `Logging::record`); the source is the record's target.
            let kv = rec.key_values();
            let get = |k: &str| {
                kv.get(log::kv::Key::from_str(k))
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into())
            };
            let mut vhost = String::new();
            escape_message_into(&mut vhost, &get("vhost"));
            let mut source = String::new();
            escape_message_into(&mut source, rec.target());
            let mut msg = String::new();
            escape_message_into(&mut msg, &message.to_string());
            out.finish(format_args!(
                "{} [{}] [client {}] [vhost {vhost}] {source}: {msg}",
                get("time"),
                rec.level().as_str().to_ascii_lowercase(),
                get("client"),
            ))
        })
        .chain(fern::Output::call(move |rec| {
            out.write_line(format!("{}\n", rec.args()).as_bytes())
        }))
        .into_log();
    ErrorLog {
        level,
        logger,
        file,
    }
}

/// Builds the logger from its options.
pub fn new(options: &Options) -> Result<Logging, String> {
    if options.role() != Role::Logger {
        return Err("`logging` is a logger: name it under `loggers:`, not in `routes:`".into());
    }
    let c: Config = options.parse()?;
    let level = match c.error_level.as_deref() {
        None => log::LevelFilter::Info,
        Some(l) => match l.parse::<log::Level>() {
            Ok(l) => l.to_level_filter(),
            Err(_) => {
                return Err(format!(
                    "error_level: `{l}` is not one of error, warn, info, debug, trace"
                ));
            }
        },
    };
    let access = destination(c.access_log.as_deref(), options, "access.log")
        .map_err(|e| format!("access_log: {e}"))?;
    let error = destination(c.error_log.as_deref(), options, "error.log")
        .map_err(|e| format!("error_log: {e}"))?;
    if access.is_none() && error.is_none() && c.access_log.is_none() && c.error_log.is_none() {
        return Err(format!(
            "nothing to log to: vhost `{}` has no `log:` folder and neither `access_log` nor `error_log` is set",
            options.vhost().name()
        ));
    }
    if tamada_sdk::host::dry_run() {
        // `tamada -t` creates no files (run as root by a unit's
        // ExecReload, it would leave them owned by root): check only.
        for (what, p) in [("access_log", &access), ("error_log", &error)] {
            if let Some(p) = p {
                writable(p).map_err(|e| format!("{what}: {e}"))?;
            }
        }
        return Ok(Logging {
            vhost: options.vhost().name().to_owned(),
            format: c.format,
            access: None,
            errors: None,
        });
    }
    let access = access
        .map(|p| LogFile::get(&p))
        .transpose()
        .map_err(|e| format!("access_log: {e}"))?;
    let errors = error
        .map(|p| LogFile::get(&p))
        .transpose()
        .map_err(|e| format!("error_log: {e}"))?
        .map(|f| error_log(f, level));
    Ok(Logging {
        vhost: options.vhost().name().to_owned(),
        format: c.format,
        access,
        errors,
    })
}

/// Whether `p` could be appended to, without creating it.
fn writable(p: &Path) -> Result<(), String> {
    if p.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(p)
            .map(drop)
            .map_err(|e| format!("cannot open {}: {e}", p.display()))
    } else {
        match p.parent() {
            Some(d) if d.is_dir() => Ok(()),
            _ => Err(format!(
                "cannot create {}: its folder does not exist",
                p.display()
            )),
        }
    }
}

impl Logging {
    fn files(&self) -> impl Iterator<Item = &Arc<LogFile>> {
        self.access
            .iter()
            .chain(self.errors.as_ref().map(|e| &e.file))
    }

    /// Flushes both files and reports dropped lines (rate-limited per
    /// file). The report goes through `log`, so the host writes it to its
    /// own log: flush runs outside any request.
    fn flush_and_report(&self) {
        for f in self.files() {
            f.flush();
            if let Some(report) = f.take_report() {
                log::error!("{report}");
            }
        }
    }
}

impl Handler for Logging {
    /// The log and record phases only append to a buffer (SDK 1.1): they
    /// run on the event loop.
    fn placement(&self) -> Placement {
        Placement::Inline
    }
    fn log(&self, entry: &LogEntry) {
        if let Some(f) = &self.access {
            f.write_line(access_line(self.format, &self.vhost, entry).as_bytes());
        }
    }

    fn record(&self, rec: &Record) {
        let Some(el) = &self.errors else {
            return;
        };
        if rec.level() > el.level {
            return;
        }
        let time = Stamp::new(rec.time()).iso();
        let client = rec
            .peer()
            .map(|p| p.ip().to_string())
            .unwrap_or_else(|| "-".into());
        let vhost = rec.vhost().unwrap_or(&self.vhost);
        let kvs = [
            ("time", time.as_str()),
            ("client", client.as_str()),
            ("vhost", vhost),
        ];
        el.logger.log(
            &log::Record::builder()
                .level(rec.level())
                .target(rec.source())
                .args(format_args!("{}", rec.message()))
                .key_values(&kvs)
                .build(),
        );
    }

    fn reopen(&self) {
        for f in self.files() {
            if let Err(e) = f.reopen() {
                log::error!("{e}");
            }
        }
    }

    fn flush(&self) {
        self.flush_and_report();
    }

    fn shutdown(&self) {
        self.flush_and_report();
    }
}

tamada_sdk::export_plugin!(
    name: "logging",
    new: new,
    roles: [Logger],
    schema: |_| tamada_sdk::schema::of::<Config>(),
);

#[cfg(test)]
mod tests;
