//! `tamada`: an HTTP/1.1 server whose request handlers are plugins.
//!
//! Start-up: flags -> conf.d (`config`) -> plugins (`plugins`) -> routes
//! with plugin instances (`runtime`) -> listening sockets -> worker pool
//! and reactor (`reactor`), which hands connections to `conn::serve`; each
//! request is answered in `exchange::run`.

mod body;
mod config;
mod conn;
mod exchange;
mod host;
mod http;
mod output;
mod plugins;
mod queue;
mod reactor;
mod runtime;

use arc_swap::ArcSwap;
use plugins::Registry;
use runtime::Runtime;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What every worker shares.
pub struct Shared {
    /// The running configuration; replaced whole on SIGHUP.
    pub runtime: ArcSwap<Runtime>,
    /// SIGTERM was received: answer with `Connection: close`.
    pub draining: AtomicBool,
}

const USAGE: &str = "\
usage: tamada [options]

  -c, --conf DIR        the conf.d folder (default: ./conf.d)
  -t, --test            check the configuration and plugins, then exit 0 or 1
      --plugin-dir DIR  where plugins are loaded from (default: the binary's folder)
      --plugins         list the plugins found and the files skipped, then exit
  -w, --workers N       worker threads (overrides server.yaml)
  -l, --log-level L     error, warn, info, debug or trace (overrides server.yaml)
  -v, --verbose         more detail (abi_stable's layout reports, debug logs)
  -V, --version         print the version
  -h, --help            this text

Signals: SIGHUP reloads conf.d, SIGUSR1 reopens log files, SIGTERM/SIGINT
stop after the requests in flight.";

#[derive(Default)]
struct Args {
    conf: Option<PathBuf>,
    test: bool,
    plugin_dir: Option<PathBuf>,
    list_plugins: bool,
    workers: Option<usize>,
    log_level: Option<String>,
    verbose: bool,
}

fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args::default();
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Short('c') | Long("conf") => a.conf = Some(p.value()?.into()),
            Short('t') | Long("test") => a.test = true,
            Long("plugin-dir") => a.plugin_dir = Some(p.value()?.into()),
            Long("plugins") => a.list_plugins = true,
            Short('w') | Long("workers") => a.workers = Some(p.value()?.parse()?),
            Short('l') | Long("log-level") => a.log_level = Some(p.value()?.string()?),
            Short('v') | Long("verbose") => a.verbose = true,
            Short('V') | Long("version") => {
                println!("{}", http::SERVER);
                return Ok(None);
            }
            Short('h') | Long("help") => {
                println!("{USAGE}");
                return Ok(None);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tamada: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            // If logging was not set up yet, make sure the message shows.
            if log::max_level() == log::LevelFilter::Off {
                eprintln!("tamada: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str, file: Option<&Path>) -> anyhow::Result<()> {
    let level: log::LevelFilter = level.parse().map_err(|_| {
        anyhow::anyhow!("log_level: `{level}` is not one of error, warn, info, debug, trace")
    })?;
    let d = fern::Dispatch::new()
        .format(|out, msg, rec| {
            out.finish(format_args!(
                "{} [{}] {}",
                httpdate::fmt_http_date(std::time::SystemTime::now()),
                rec.level(),
                msg
            ))
        })
        .level(level);
    let d = match file {
        Some(f) => d.chain(
            fern::log_file(f).map_err(|e| anyhow::anyhow!("log_file {}: {e}", f.display()))?,
        ),
        None => d.chain(std::io::stderr()),
    };
    d.apply()?;
    Ok(())
}

fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(args: Args) -> anyhow::Result<()> {
    let conf_dir = args.conf.clone().unwrap_or_else(|| PathBuf::from("conf.d"));
    let level_flag = args
        .log_level
        .clone()
        .or_else(|| args.verbose.then(|| "debug".to_owned()));

    if args.list_plugins {
        // Needs no conf.d: the folder is the flag, server.yaml's setting
        // if conf.d is readable, or the binary's folder.
        let _ = init_logging(level_flag.as_deref().unwrap_or("warn"), None);
        let dir = args
            .plugin_dir
            .clone()
            .or_else(|| {
                config::load(&conf_dir)
                    .ok()
                    .and_then(|c| c.settings.plugin_dir)
            })
            .unwrap_or_else(exe_dir);
        let registry = Registry::load_dir(&dir, args.verbose)
            .map_err(|e| anyhow::anyhow!("plugin folder {}: {e}", dir.display()))?;
        for p in registry.plugins.values() {
            println!(
                "{}\t{}\tSDK {}.{}\t{}",
                p.name,
                p.version,
                p.sdk.0,
                p.sdk.1,
                p.file.display()
            );
        }
        for s in &registry.skipped {
            println!("skipped\t{s}");
        }
        return Ok(());
    }

    let config = match config::load(&conf_dir) {
        Ok(c) => c,
        Err(errors) => {
            let _ = init_logging(level_flag.as_deref().unwrap_or("info"), None);
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            anyhow::bail!("configuration error:\n{}", text.join("\n"));
        }
    };
    let mut settings = config.settings.clone();
    if let Some(w) = args.workers {
        settings.workers = w.max(1);
    }
    let level = level_flag.unwrap_or_else(|| settings.log_level.clone());
    init_logging(
        &level,
        if args.test {
            None
        } else {
            settings.log_file.as_deref()
        },
    )?;

    let plugin_dir = args
        .plugin_dir
        .clone()
        .or_else(|| settings.plugin_dir.clone())
        .unwrap_or_else(exe_dir);
    let registry = Arc::new(
        Registry::load_dir(&plugin_dir, args.verbose)
            .map_err(|e| anyhow::anyhow!("plugin folder {}: {e}", plugin_dir.display()))?,
    );

    let mut config = config;
    config.settings = settings;
    let rt = Runtime::build(&config, registry.clone()).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("configuration error:\n{}", text.join("\n"))
    })?;
    let vhosts = config.vhosts.len();
    if args.test {
        log::info!(
            "configuration {} is OK: {vhosts} vhosts, {} plugins loaded",
            conf_dir.display(),
            registry.plugins.len()
        );
        println!("tamada: configuration {} is OK", conf_dir.display());
        return Ok(());
    }

    let nofile = raise_open_files_limit();
    // Descriptors are also needed for files being sent, pipes, listeners.
    let cap = (nofile as usize).saturating_sub(256).max(64);
    if rt.settings.max_connections > cap {
        log::warn!(
            "max_connections {} is more than the open-files limit allows ({nofile}): at most {cap} connections",
            rt.settings.max_connections
        );
    }
    reactor::CONNECTION_CAP.store(cap, std::sync::atomic::Ordering::Relaxed);
    let addrs: Vec<_> = rt.sites.keys().copied().collect();
    let listeners = reactor::bind_all(&addrs).map_err(anyhow::Error::msg)?;
    let workers = rt.settings.workers;
    let shared = Arc::new(Shared {
        runtime: ArcSwap::from_pointee(rt),
        draining: AtomicBool::new(false),
    });

    host::set_shared(shared.clone());
    let jobs = Arc::new(queue::Jobs::default());
    let (reload_dir, reload_workers, verbose) = (conf_dir.clone(), args.workers, args.verbose);
    let mut current = registry.clone();
    let joined = |errs: Vec<config::ConfError>| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let reloader: reactor::Reloader = Box::new(move || {
        let mut c = config::load(&reload_dir).map_err(joined)?;
        if let Some(w) = reload_workers {
            c.settings.workers = w;
        }
        // New and replaced plugins in the folder come in with the reload.
        let registry = Arc::new(
            current
                .rescan(verbose)
                .map_err(|e| format!("plugin folder {}: {e}", current.dir.display()))?,
        );
        let rt = Runtime::build(&c, registry.clone()).map_err(joined)?;
        current = registry;
        Ok(rt)
    });
    let reactor = reactor::Reactor::new(listeners, jobs.clone(), shared.clone(), reloader)?;
    reactor::start_workers(workers, jobs, reactor.table.clone(), shared.clone());
    start_flusher(shared.clone());
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    log::info!(
        "tamada ready: listening on {} ({vhosts} vhosts, {workers} workers)",
        list.join(", ")
    );
    reactor.run()?;
    let rt = shared.runtime.load_full();
    for i in rt.instances() {
        i.flush();
        i.shutdown();
    }
    log::info!("stopped");
    Ok(())
}

/// Raises the soft limit of open files to the hard one (every connection,
/// open file and pipe is a descriptor) and returns it.
fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Calls every instance's `flush` hook about once a second.
fn start_flusher(shared: Arc<Shared>) {
    let _ = std::thread::Builder::new()
        .name("flusher".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let rt = shared.runtime.load_full();
                for i in rt.instances() {
                    i.flush();
                }
            }
        });
}
