//! `cgi`: runs CGI/1.1 programs (RFC 3875) for a route.
//!
//! A request is mapped to a program one of three ways (see [`config`]):
//! a folder of scripts (`/cgi-bin/tool.py/extra?q` runs `tool.py` with
//! PATH_INFO `/extra`), one program for a whole prefix (`script:`, like
//! Apache's ScriptAlias: git-http-backend), or interpreters by extension
//! for files under the document root (`interpreters: {.php: php-cgi}`,
//! like lighttpd's cgi.assign; other files are declined to the next route).
//!
//! The life of a request, in [`Cgi::handle`]: map the path ([`map`]), take
//! one of `max_processes` slots, settle the body (a chunked one is spooled
//! to learn its length, unless `stream_chunked`), build the environment
//! ([`env`]), spawn ([`process`]), feed stdin while reading the header
//! block ([`pipes`]), interpret it ([`headers`]) and hand the rest of stdout to
//! the core as a stream. Every path out of here reaps the child.

pub mod config;
pub mod map;
pub mod pipes;
pub mod process;

pub use tamada_gateway::cgi_env as env;
pub use tamada_gateway::cgi_headers as headers;
pub use tamada_gateway::spool;

use config::{Config, Settings};
use headers::Reply;
use map::Mapped;
use pipes::{CgiStream, Fed, Head};
use process::{LogCtx, Slot};
use spool::{Spool, SpoolReader};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use tamada_sdk::prelude::*;

/// A route's CGI handler.
pub struct Cgi {
    s: Settings,
    /// Environment entries that are the same for every request.
    base_env: Vec<(String, Vec<u8>)>,
    /// Children running for this route (for `max_processes`).
    running: Arc<AtomicUsize>,
}

/// Builds the handler from its options.
pub fn new(options: &Options) -> Result<Cgi, String> {
    let c: Config = options.parse()?;
    let vhost = options.vhost();
    let base = vhost.config_file().parent().unwrap_or(Path::new("."));
    let s = Settings::from_config(c, base, vhost.document_root(), vhost.cgi_bin())?;
    if tamada_sdk::host::serves_as_root() && !s.run_as_root {
        log::warn!(
            "route {}: the server serves as root (no `user:` in server.yaml): its scripts will be refused (500) unless `run_as_root: true`",
            options.route()
        );
    }
    let base_env = env::base(&s.path, vhost.document_root(), &s.env);
    Ok(Cgi {
        s,
        base_env,
        running: Arc::new(AtomicUsize::new(0)),
    })
}

/// The request body as the script will get it.
enum Input<'r> {
    None,
    Live(tamada_sdk::BodyReader<'r>),
    Spooled(SpoolReader),
}

impl Handler for Cgi {
    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        let target = match map::map(&self.s.mode, req.route(), req.rest(), req.path()) {
            Mapped::Run(t) => t,
            Mapped::Decline => return Outcome::Decline,
            Mapped::Refuse(code, why) => {
                log::debug!("{} {}: {why}", req.method(), req.path());
                return page(res, code, why);
            }
        };
        // SECURITY: a script started by a server that never dropped root
        // would run as root.
        if tamada_sdk::host::serves_as_root() && !self.s.run_as_root {
            log::error!(
                "refusing to run {} as root: set `user:` in server.yaml, or `run_as_root: true` in this route's options",
                target.label
            );
            return page(res, 500, "the server is not allowed to run scripts as root");
        }
        let Some(slot) = Slot::take(&self.running, self.s.max_processes) else {
            log::warn!(
                "{} scripts already running (max_processes): 503",
                self.s.max_processes
            );
            res.header("retry-after", "1");
            return page(res, 503, "too many scripts running, try again");
        };
        let log = Arc::new(LogCtx {
            vhost: req.vhost().name().to_owned(),
            peer: req.peer_addr(),
            source: format!("cgi:{}", target.label),
        });

        let (input, content_length) = match req.content_length() {
            Some(0) => (Input::None, None),
            Some(n) => (Input::Live(req.body()), Some(n)),
            None if self.s.stream_chunked => (Input::Live(req.body()), None),
            None => {
                // CONTENT_LENGTH must be known: spool the chunked body.
                let mut spool = Spool::new(self.s.spool_threshold);
                if let Err(e) = spool.fill_from(&mut req.body()) {
                    return bad_body(res, &log, e);
                }
                let n = spool.len();
                match spool.into_reader() {
                    Ok(r) if n > 0 => (Input::Spooled(r), Some(n)),
                    Ok(_) => (Input::None, Some(0)),
                    Err(e) => return Outcome::Error(format!("spooling the request body: {e}")),
                }
            }
        };
        let env = env::build(
            &self.base_env,
            req,
            &env::PerRequest {
                script: target.script(),
                path_root: None,
                content_length,
                pass_authorization: self.s.pass_authorization,
                basic_remote_user: self.s.basic_remote_user,
            },
        );
        let with_stdin = !matches!(input, Input::None);
        let sp = match process::spawn(&target, &env, with_stdin, log.clone(), slot) {
            Ok(sp) => sp,
            Err(e) => {
                return Outcome::Error(format!("cannot run `{}`: {e}", target.program.display()));
            }
        };
        let process::Spawned {
            mut proc,
            stdin,
            mut stdout,
        } = sp;
        let pgid = proc.pgid();
        let (ht, thr, idle) = (
            self.s.header_timeout,
            self.s.spool_threshold,
            self.s.idle_timeout,
        );

        let head = match (stdin, input) {
            (Some(stdin), input) if with_stdin => {
                let (wake_r, wake_w) = match std::io::pipe() {
                    Ok(p) => p,
                    Err(e) => return Outcome::Error(format!("pipe: {e}")),
                };
                let out = &mut stdout;
                let (fed, head) = std::thread::scope(|scope| {
                    let reader =
                        scope.spawn(move || pipes::read_head(out, Some(wake_r), ht, thr, pgid));
                    let fed = match input {
                        Input::Live(mut body) => pipes::feed(stdin, &mut body, idle),
                        Input::Spooled(mut r) => pipes::feed(stdin, &mut r as &mut dyn Read, idle),
                        Input::None => Fed::Done,
                    };
                    // Hang up the wake pipe: stdin is done (or given up).
                    drop(wake_w);
                    (fed, reader.join())
                });
                match fed {
                    Fed::BodyFailed(e) => {
                        proc.kill_and_reap();
                        return bad_body(res, &log, e);
                    }
                    Fed::Stalled => log.record(
                        log::Level::Warn,
                        &format!("read none of its input for {idle:?}: stdin closed"),
                    ),
                    Fed::Done | Fed::ChildClosed => {}
                }
                match head {
                    Ok(h) => h,
                    Err(_) => {
                        proc.kill_and_reap();
                        return Outcome::Error("the stdout reader panicked".into());
                    }
                }
            }
            _ => pipes::read_head(&mut stdout, None, ht, thr, pgid),
        };

        let (headers, spool) = match head {
            Ok(Head::Ready(h, s)) => (h, s),
            Ok(Head::TimedOut) => {
                proc.kill_and_reap();
                log.record(
                    log::Level::Error,
                    &format!("no complete header block within {ht:?}: killed"),
                );
                return page(res, 504, "the script did not answer in time");
            }
            Ok(Head::Bad(why)) => {
                proc.kill_and_reap();
                log.record(log::Level::Error, &format!("bad response: {why}"));
                return page(res, 502, "the script sent no valid response");
            }
            Err(e) => {
                proc.kill_and_reap();
                return Outcome::Error(format!("reading the script's output: {e}"));
            }
        };
        match headers::interpret(headers) {
            Reply::Bad(why) => {
                proc.kill_and_reap();
                log.record(log::Level::Error, &format!("bad response: {why}"));
                page(res, 502, "the script sent no valid response")
            }
            Reply::Local(location) => {
                drop(stdout);
                proc.finish(idle);
                Outcome::Redirect(location)
            }
            Reply::Respond(status, hs) => {
                res.status(status);
                for (n, v) in &hs {
                    res.header(n, v);
                }
                let pre = match spool.into_reader() {
                    Ok(r) => r,
                    Err(e) => {
                        proc.kill_and_reap();
                        return Outcome::Error(format!("reading spooled output: {e}"));
                    }
                };
                res.body(Body::Stream(Box::new(CgiStream {
                    pre: Some(pre),
                    stdout: Some(stdout),
                    proc: Some(proc),
                    idle,
                    log,
                })));
                Outcome::Done
            }
        }
    }
}

/// A small page of our own (errors, refusals).
fn page(res: &mut ResponseBuilder, code: u16, text: &str) -> Outcome {
    res.status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .body(format!("{code} {text}\n"));
    Outcome::Done
}

/// The request body could not be read: the client is gone, too slow or
/// over `max_body` (the core then answers 413 itself).
fn bad_body(res: &mut ResponseBuilder, log: &LogCtx, e: std::io::Error) -> Outcome {
    log.record(
        log::Level::Warn,
        &format!("request body could not be read: {e}"),
    );
    page(res, 400, "the request body could not be read")
}

tamada_sdk::export_plugin!(
    name: "cgi",
    new: new,
    roles: [Handler],
    schema: |_| tamada_sdk::schema::of::<config::Config>(),
);

#[cfg(test)]
mod tests;
