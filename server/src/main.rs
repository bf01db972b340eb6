//! `tamada`: an HTTP/1.1 and HTTP/2 server whose request handlers are plugins. The
//! binary is start-up: flags, logging, conf.d, plugins, listeners, the
//! pool and the loops; the core itself is the library (`lib.rs`).

use arc_swap::ArcSwap;
use plugins::Registry;
use runtime::Runtime;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use tamada::config::{runtime, schema};
use tamada::net::{control, evloop, listen, privileges, upgrade};
use tamada::plugins::host;
use tamada::{Shared, config, notify, plugins, pool};

/// PERF: mimalloc for the server's own allocations (plugins keep theirs:
/// what crosses the ABI is freed by whoever allocated it, through
/// abi_stable's vtables). malloc and free were 15% of an HTTP/2 request's
/// CPU with glibc's allocator (bench/README.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIGNALS: &str = "\
Signals: SIGHUP reloads conf.d (checked first; a broken file keeps the
running configuration), SIGUSR1 reopens log files, SIGTERM/SIGINT stop
after the requests in flight.

Configuration: one YAML file per virtual host in conf.d, plus server.yaml
for the server-wide settings; see the README.";

// The flags, `--help` and the man page (`--man`) come from this one
// definition.
/// An HTTP/1.1 and HTTP/2 server whose request handlers are plugins.
///
/// tamada loads every plugin (`lib*.so`) in its plugin folder, reads conf.d
/// (one file per virtual host, and server.yaml), binds its listeners and
/// serves: one event loop per CPU, handlers that may block on a pool.
#[derive(clap::Parser)]
#[command(name = "tamada", version, about, long_about, after_help = SIGNALS, args_override_self = true)]
struct Args {
    /// The conf.d folder.
    #[arg(
        short = 'c',
        long = "conf",
        value_name = "DIR",
        default_value = "conf.d"
    )]
    conf: PathBuf,
    /// Check the configuration and plugins as start-up would, without
    /// binding or creating files; exit 0 or 1.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Where plugins are loaded from (default: server.yaml's plugin_dir,
    /// else the binary's folder).
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// List the plugins found and the files skipped (with why), then exit.
    #[arg(long = "plugins")]
    list_plugins: bool,
    /// Blocking-pool threads (overrides server.yaml's workers).
    #[arg(short = 'w', long = "workers", value_name = "N")]
    workers: Option<usize>,
    /// Event-loop threads, 0 for one per CPU (overrides server.yaml's loops).
    #[arg(long = "loops", value_name = "N")]
    loops: Option<usize>,
    /// The server's own log level: error, warn, info, debug or trace
    /// (overrides server.yaml's log_level).
    #[arg(short = 'l', long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// More detail: debug logs, and abi_stable's full layout report for a
    /// refused plugin.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Print the JSON Schema of conf.d (server.yaml, vhost files, and the
    /// options of the plugins loaded), for editors, then exit.
    #[arg(long = "schema")]
    schema: bool,
    /// List the certificates managed by ACME (`tls: { acme: true }`):
    /// names, issuer, expiry, next renewal, last renewal and last error,
    /// read from acme.state_dir; then exit.
    #[arg(long = "certs")]
    certs: bool,
    /// Print the man page (roff) and exit.
    #[arg(long = "man", hide = true)]
    man: bool,
}

/// The binary and arguments this process was started with, recorded
/// before anything can replace the file (a binary upgrade runs them).
static STARTED_AS: OnceLock<(PathBuf, Vec<std::ffi::OsString>)> = OnceLock::new();

fn main() -> ExitCode {
    use clap::{CommandFactory, Parser};
    if let Ok(exe) = std::env::current_exe() {
        let _ = STARTED_AS.set((exe, std::env::args_os().skip(1).collect()));
    }
    // Bad flags: clap's message, the usage, exit 2.
    let args = Args::parse();
    if args.man {
        let man = clap_mangen::Man::new(Args::command()).section("8");
        return match man.render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tamada: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
        // One write(2) per line: after a binary upgrade two processes share
        // this stderr (a pipe, the journal), and fern's own stderr output
        // writes a line in pieces that the other process can split.
        None => d.chain(fern::Output::call(|rec| {
            use std::io::Write;
            let line = format!("{}\n", rec.args());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        })),
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
    let conf_dir = args.conf.clone();
    let level_flag = args
        .log_level
        .clone()
        .or_else(|| args.verbose.then(|| "debug".to_owned()));

    if args.list_plugins || args.schema {
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
        if args.schema {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{:#}", schema::build(&registry));
            return Ok(());
        }
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
    if args.certs {
        print!(
            "{}",
            tamada::acme::report(&config.settings.acme, &config.vhosts)
        );
        return Ok(());
    }
    let mut settings = config.settings.clone();
    if let Some(w) = args.workers {
        settings.workers = w.max(1);
    }
    if let Some(n) = args.loops {
        settings.loops = n;
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

    // Who will serve: checked by -t too (the user must exist).
    let account = match &settings.user {
        Some(u) => Some(
            privileges::lookup(u, settings.group.as_deref())
                .map_err(|e| anyhow::anyhow!("{}: {e}", conf_dir.join("server.yaml").display()))?,
        ),
        None if settings.group.is_some() => anyhow::bail!(
            "{}: group: set `user:` too (a group alone is not dropped to)",
            conf_dir.join("server.yaml").display()
        ),
        None => None,
    };
    host::DRY_RUN.store(args.test, std::sync::atomic::Ordering::Relaxed);
    if let Some(a) = &account {
        let _ = host::SERVICE_USER.set((a.uid, a.gid));
    }
    host::SERVES_AS_ROOT.store(
        privileges::is_root() && account.is_none(),
        std::sync::atomic::Ordering::Relaxed,
    );
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
    let groups = account.as_ref().map(privileges::groups);
    let serve_as = account
        .as_ref()
        .zip(groups.as_deref())
        .map(|(a, g)| (a.uid, g));
    config::tls::warn_all(&config.vhosts, serve_as);
    let acme_wants = tamada::acme::manager::Want::all(&config.vhosts);
    if !acme_wants.is_empty() {
        let acme = &config.settings.acme;
        config::acme::check_writable(&acme.state_dir, serve_as).map_err(|e| {
            anyhow::anyhow!(
                "{}: acme.state_dir: {e}",
                conf_dir.join("server.yaml").display()
            )
        })?;
    }
    rt.log_defaults(None);
    let rt_defaults = rt.defaults();
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
    tamada::net::cx::CONNECTION_CAP.store(cap, std::sync::atomic::Ordering::Relaxed);
    let loops = match rt.settings.loops {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let addrs: Vec<_> = rt.sites.keys().copied().collect();
    let inherited = upgrade::inherited();
    let listeners =
        listen::bind_all_inheriting(&addrs, loops, inherited).map_err(anyhow::Error::msg)?;
    // Every listening socket, kept for a binary upgrade to hand over.
    let handover = listen::handover(&listeners);
    let mut dealt = listen::deal(listeners, loops).into_iter();
    // ACME's folder exists before the drop, and belongs to the serving
    // user (who writes in it).
    if !acme_wants.is_empty() {
        tamada::acme::prepare_state_dir(
            &config.settings.acme,
            account.as_ref().map(|a| (a.uid, a.gid)),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", conf_dir.join("server.yaml").display()))?;
    }
    // Listeners bound, plugins loaded, log files open: now become the
    // service user, before any request is read.
    if let Some(a) = &account {
        if privileges::is_root() {
            privileges::drop_to(a).map_err(anyhow::Error::msg)?;
            log::info!(
                "serving as user `{}` (uid {}), group `{}` (gid {})",
                a.name,
                a.uid,
                a.group,
                a.gid
            );
        } else if upgrade::is_upgrade() {
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            log::info!(
                "serving as uid {uid}, as the process that started this one (binary upgrade)"
            );
        } else {
            log::warn!(
                "user: `{}` is ignored: the server was not started as root",
                a.name
            );
        }
    } else if privileges::is_root() {
        log::warn!("serving as root: set `user:` in server.yaml to drop privileges");
    }
    let workers = rt.settings.workers;
    pool::start_global(workers);
    let pool = pool::global().clone();
    // Signals before any thread starts: one that comes early is not lost.
    let signals = control::Control::signals()?;
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    for i in 0..loops {
        let mut ev = evloop::EventLoop::new(Arc::new(rt.fork()), pool.clone())?;
        for (a, s) in dealt.next().unwrap_or_default() {
            ev.add_listener(a, s)?;
        }
        handles.push(ev.handle());
        threads.push(
            std::thread::Builder::new()
                .name(format!("loop-{i}"))
                .spawn(move || ev.run())?,
        );
    }
    let shared = Arc::new(Shared {
        runtime: ArcSwap::from_pointee(rt),
        draining: AtomicBool::new(false),
    });
    {
        let (s1, s2) = (shared.clone(), shared.clone());
        host::install(host::Hooks {
            draining: Box::new(move || s1.draining.load(std::sync::atomic::Ordering::Relaxed)),
            vhost: Box::new(move |name| {
                let v = s2.runtime.load().vhost_named(name).cloned()?;
                Some(v as host::Sink)
            }),
        });
    }

    let (reload_dir, verbose) = (conf_dir.clone(), args.verbose);
    let (reload_workers, reload_loops) = (args.workers, args.loops);
    let mut current = registry.clone();
    let joined = |errs: Vec<config::ConfError>| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let reloader: control::Reloader = Box::new(move || {
        let mut c = config::load(&reload_dir).map_err(joined)?;
        if let Some(w) = reload_workers {
            c.settings.workers = w;
        }
        if let Some(n) = reload_loops {
            c.settings.loops = n;
        }
        // New and replaced plugins in the folder come in with the reload.
        let registry = Arc::new(
            current
                .rescan(verbose)
                .map_err(|e| format!("plugin folder {}: {e}", current.dir.display()))?,
        );
        let rt = Runtime::build(&c, registry.clone()).map_err(joined)?;
        // As the serving user now: who may read the keys is what matters.
        config::tls::warn_all(&c.vhosts, None);
        // New names get their certificates ordered (ACME turned on by
        // this reload: its folder made and checked as the serving user).
        let wants = tamada::acme::manager::Want::all(&c.vhosts);
        if !wants.is_empty() {
            let yaml = reload_dir.join("server.yaml");
            tamada::acme::prepare_state_dir(&c.settings.acme, None)
                .map_err(|e| format!("{}: {e}", yaml.display()))?;
            config::acme::check_writable(&c.settings.acme.state_dir, None)
                .map_err(|e| format!("{}: acme.state_dir: {e}", yaml.display()))?;
        }
        tamada::acme::manager::update(&c.settings.acme, wants);
        current = registry;
        Ok(rt)
    });
    let control = control::Control {
        signals,
        loops: handles,
        shared: shared.clone(),
        reload: reloader,
        addrs: addrs.iter().copied().collect(),
        handover,
        started_as: STARTED_AS.get().cloned(),
        defaults: rt_defaults,
    };
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || control.run())?;
    start_flusher(shared.clone());
    // The loops run (they answer the challenges): certificates next, on
    // the ACME thread, as the serving user.
    tamada::acme::manager::update(&config.settings.acme, acme_wants);
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    log::info!(
        "tamada ready: listening on {} ({vhosts} vhosts, {loops} loops, {workers} pool threads)",
        list.join(", ")
    );
    // systemd (Type=notify): every listener is bound and every loop runs.
    let pid_file = shared.runtime.load().settings.pid_file.clone();
    if let Some(p) = &pid_file
        && let Err(e) = std::fs::write(p, format!("{}\n", std::process::id()))
    {
        log::warn!("pid_file {}: {e}", p.display());
    }
    if upgrade::is_upgrade() {
        // The old process stops accepting once it reads this; systemd
        // follows the new main process (NotifyAccess=all).
        upgrade::signal_ready();
        notify(&[
            sd_notify::NotifyState::MainPid(std::process::id()),
            sd_notify::NotifyState::Ready,
        ]);
        log::info!(
            "binary upgrade: this process ({}) now serves",
            std::process::id()
        );
    } else {
        notify(&[sd_notify::NotifyState::Ready]);
    }
    let mut clean = true;
    for t in threads {
        clean &= t.join().unwrap_or(false);
    }
    // The last log phases and stream closes run on the pool: let them end
    // before the plugins are flushed and shut down.
    let t = shared.runtime.load().settings.shutdown_timeout.0;
    let deadline = std::time::Instant::now() + t.min(std::time::Duration::from_secs(5));
    clean &= pool.quiesce(deadline);
    clean &= pool::quiesce_routes(deadline);
    if clean {
        log::info!("all requests finished; stopping");
    }
    // The pid file is this process's only while it names it (after a
    // binary upgrade it names the new one).
    if let Some(p) = &pid_file
        && std::fs::read_to_string(p).is_ok_and(|s| s.trim() == std::process::id().to_string())
    {
        let _ = std::fs::remove_file(p);
    }
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
