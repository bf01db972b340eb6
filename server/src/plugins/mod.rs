//! Loading plugin `.so` files and making instances of them.
//!
//! Every `lib*.so` in the plugin folder is opened on its own with
//! libloading (never through abi_stable's per-type module cache, which
//! would hand back the first plugin for every file). A file is checked in
//! this order, and the first failure skips it with one line:
//! 1. it exports `tamada_plugin_header` with the tamada magic (else: not a
//!    tamada plugin);
//! 2. its SDK major equals ours;
//! 3. it exports `tamada_plugin_v1`, whose table layout abi_stable finds
//!    compatible with ours;
//! 4. its name is not taken by an earlier file.
//!
//! Libraries are never unloaded: their code may be running on any thread.

pub mod access;
pub mod call;
pub mod filter;
pub mod host;
mod instance;
pub mod shared;
pub mod watchdog;

pub use instance::{
    DECLINE_WATCH, Handled, OptionError, PluginInstance, Relay, Resume, Wait, WaitState,
};

use crate::plugins::host::{HOST_EXT_V1, HOST_V1};
use abi_stable::StableAbi;
use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tamada_sdk::abi::{
    EXT_V1_SYMBOL, ExtDeclV1, ExtV1, HEADER_SYMBOL, LIFECYCLE_V1_SYMBOL, LifecycleDeclV1,
    LifecycleV1, MAGIC, PluginDeclV1, PluginHeader, PluginV1, ROLE_HANDLER, ROLE_LOGGER, RoleV1,
    SDK_MAJOR, SDK_MINOR, V1_SYMBOL,
};

/// A loaded plugin.
pub struct Plugin {
    pub name: String,
    pub version: String,
    pub sdk: (u16, u16),
    pub file: PathBuf,
    pub table: &'static PluginV1,
    /// The optional lifecycle table; without it those hooks are no-ops.
    pub lifecycle: Option<&'static LifecycleV1>,
    /// The optional SDK 1.1 table; without it the plugin runs on the pool.
    pub ext: Option<&'static ExtV1>,
    /// The SDK 1.2 TLS view's `init`, when the plugin has it.
    pub tls_init: Option<extern "C" fn(&'static tamada_sdk::abi::HostTlsV1)>,
    /// The SDK 1.2 user view's `init`, when the plugin has it.
    pub user_init: Option<extern "C" fn(&'static tamada_sdk::abi::HostAccessV1)>,
    /// The SDK 1.3 protocol table's init, when the plugin has one.
    pub proto_init: Option<extern "C" fn(&'static tamada_sdk::abi::HostProtoV1)>,
    /// The SDK 1.2 access table: the plugin may be named in `access:`.
    pub access: Option<&'static tamada_sdk::abi::AccessV1>,
    /// The SDK 1.2 filter table: the plugin may be named in `filters:`.
    pub filter: Option<&'static tamada_sdk::abi::FilterV1>,
}

impl Plugin {
    /// The JSON Schema of its options as `role`, if it gives one.
    pub fn options_schema(&self, role: RoleV1) -> Option<serde_json::Value> {
        let text = (self.ext?.options_schema)(role);
        serde_json::from_str(text.as_str()).ok()
    }

    /// Why it cannot serve as `role`, if it says so (SDK 1.1 plugins
    /// declare their roles; others may be anything).
    pub fn refuses(&self, role: RoleV1) -> Option<String> {
        let roles = self.ext.map_or(0, |x| x.roles);
        let (bit, what, other) = match role {
            RoleV1::Handler => (
                ROLE_HANDLER,
                "no handler",
                "a logger: name it under `loggers:`",
            ),
            RoleV1::Logger => (
                ROLE_LOGGER,
                "no logger",
                "a handler: name it under `routes:`",
            ),
        };
        (roles != 0 && roles & bit == 0)
            .then(|| format!("plugin `{}` declares {what}, it is {other}", self.name))
    }
}

/// A file that was not loaded, and why (one line).
#[derive(Debug, Clone)]
pub struct Skipped {
    pub file: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

/// What identifies a file's content on disk: a replaced file (`mv` over
/// it) has another inode; one rewritten in place has another mtime.
type FileId = (u64, u64, u64, i64, i64);

fn file_id(p: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Every plugin loaded from one folder.
#[derive(Default)]
pub struct Registry {
    pub dir: PathBuf,
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    pub skipped: Vec<Skipped>,
    /// What each file was when it was looked at, with its outcome, so a
    /// rescan loads only new or replaced files.
    seen: BTreeMap<PathBuf, Seen>,
}

/// A file's identity when it was loaded, and the outcome.
type Seen = (Option<FileId>, Result<Arc<Plugin>, String>);

impl Registry {
    /// Loads every `lib*.so` in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path, verbose: bool) -> std::io::Result<Registry> {
        Registry::default().rescan_dir(dir, verbose)
    }

    /// SIGHUP: a new registry for the same folder. Unchanged files keep
    /// their loaded plugin; new and replaced files are loaded (each from a
    /// private copy, so the dynamic loader cannot hand back the old
    /// library); removed files drop out. Old plugins stay mapped for the
    /// instances still using them.
    pub fn rescan(&self, verbose: bool) -> std::io::Result<Registry> {
        self.rescan_dir(&self.dir, verbose)
    }

    fn rescan_dir(&self, dir: &Path, verbose: bool) -> std::io::Result<Registry> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("lib") && n.ends_with(".so"))
            })
            .collect();
        files.sort();
        let mut reg = Registry {
            dir: dir.to_owned(),
            ..Registry::default()
        };
        for file in files {
            let id = file_id(&file);
            let outcome = match self.seen.get(&file) {
                Some((old_id, outcome)) if *old_id == id && id.is_some() => outcome.clone(),
                previous => {
                    let loaded = load_file(&file, verbose).map(|p| {
                        (p.table.init)(&HOST_V1);
                        if let Some(x) = p.ext {
                            (x.init)(&HOST_EXT_V1);
                        }
                        if let Some(init) = p.tls_init {
                            init(&crate::plugins::host::HOST_TLS_V1);
                        }
                        if let Some(init) = p.user_init {
                            init(&crate::plugins::host::HOST_ACCESS_V1);
                        }
                        if let Some(init) = p.proto_init {
                            init(&crate::plugins::host::HOST_PROTO_V1);
                        }
                        log::info!(
                            "{} plugin `{}` {} (SDK {}.{}) from {}",
                            if previous.is_some() {
                                "reloaded"
                            } else {
                                "loaded"
                            },
                            p.name,
                            p.version,
                            p.sdk.0,
                            p.sdk.1,
                            file.display()
                        );
                        Arc::new(p)
                    });
                    if let Err(reason) = &loaded {
                        log::warn!("skipped plugin {}: {reason}", file.display());
                    }
                    loaded
                }
            };
            reg.seen.insert(file.clone(), (id, outcome.clone()));
            match outcome {
                Ok(p) => {
                    if let Some(prev) = reg.plugins.get(&p.name) {
                        let reason = format!(
                            "plugin name `{}` is already taken by {}",
                            p.name,
                            prev.file.display()
                        );
                        log::warn!("skipped plugin {}: {reason}", file.display());
                        reg.skipped.push(Skipped { file, reason });
                        continue;
                    }
                    reg.plugins.insert(p.name.clone(), p);
                }
                Err(reason) => {
                    reg.skipped.push(Skipped { file, reason });
                }
            }
        }
        Ok(reg)
    }

    /// The message for a route naming a plugin that is not loaded.
    pub fn missing(&self, name: &str) -> String {
        let mut m = format!(
            "no plugin named `{name}` is loaded from {}",
            self.dir.display()
        );
        let loaded: Vec<&str> = self.plugins.keys().map(|s| s.as_str()).collect();
        m.push_str(&format!(
            " (loaded: {})",
            if loaded.is_empty() {
                "none".to_owned()
            } else {
                loaded.join(", ")
            }
        ));
        for s in &self.skipped {
            m.push_str(&format!("\n  skipped {s}"));
        }
        m
    }
}

/// Copies `file` to a private folder under a name never used before.
/// dlopen returns the already-loaded library for a path (and for the same
/// file under another name), so a replaced plugin must come from a copy.
fn private_copy(file: &Path) -> Option<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    // One folder per user: after the privilege drop, a SIGHUP that loads a
    // new plugin cannot write to the folder root made at start-up.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let dir = std::env::temp_dir().join(format!("tamada-{}-{euid}-plugins", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let name = file.file_name()?.to_string_lossy().into_owned();
    let copy = dir.join(format!("{}-{name}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::copy(file, &copy).ok()?;
    Some(copy)
}

fn load_file(file: &Path, verbose: bool) -> Result<Plugin, String> {
    let copy = private_copy(file);
    let path = copy.as_deref().unwrap_or(file);
    // SAFETY: loading a library runs its initialisers. The plugin folder is
    // trusted code by the admin's choice, like nginx's modules folder.
    let lib = unsafe { libloading::Library::new(path) };
    if let Some(c) = &copy {
        // The mapping outlives the name: nothing is left behind on disk.
        let _ = std::fs::remove_file(c);
    }
    // libloading says only "dlopen failed": the loader's own reason
    // (`Permission denied`, a missing symbol) is in the error's source.
    let lib = lib.map_err(|e| {
        let mut why = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            why.push_str(": ");
            why.push_str(&s.to_string());
            src = s.source();
        }
        format!("cannot load: {why}")
    })?;
    // SAFETY: the symbol's type is the frozen bootstrap signature; a plugin
    // that exports this name promises it.
    let header: PluginHeader = unsafe {
        let f = lib
            .get::<extern "C" fn() -> PluginHeader>(HEADER_SYMBOL)
            .map_err(|_| "not a tamada plugin (no `tamada_plugin_header` export)".to_owned())?;
        f()
    };
    if header.magic != MAGIC {
        return Err("not a tamada plugin (bad magic in its header)".into());
    }
    if header.sdk_major != SDK_MAJOR {
        return Err(format!(
            "built for tamada SDK {}.{}, this server speaks SDK {}.{}: rebuild it against tamada-sdk {}.x",
            header.sdk_major, header.sdk_minor, SDK_MAJOR, SDK_MINOR, SDK_MAJOR
        ));
    }
    // SAFETY: same-major plugins export this symbol with this signature;
    // the table it returns is checked below before anything in it is used.
    let decl: PluginDeclV1 = unsafe {
        let f = lib
            .get::<extern "C" fn() -> PluginDeclV1>(V1_SYMBOL)
            .map_err(|_| {
                format!(
                    "SDK {}.{} plugin without the `tamada_plugin_v1` export it needs",
                    header.sdk_major, header.sdk_minor
                )
            })?;
        f()
    };
    if let Err(e) = check_layout_compatibility(<PluginV1 as StableAbi>::LAYOUT, decl.layout) {
        if verbose {
            log::warn!("{}: layout check:\n{e}", file.display());
        }
        return Err(format!(
            "its plugin table (SDK {}.{}) does not match this server's (SDK {}.{}): {}; rebuild it against this server's tamada-sdk (-v shows abi_stable's full report)",
            header.sdk_major,
            header.sdk_minor,
            SDK_MAJOR,
            SDK_MINOR,
            summarise(&e)
        ));
    }
    let table = decl.table;
    // Optional tables: probed by name; absent means the ability is absent.
    // SAFETY: a plugin exporting this name promises this signature; the
    // table is layout-checked before use.
    let lifecycle = match unsafe {
        lib.get::<extern "C" fn() -> LifecycleDeclV1>(LIFECYCLE_V1_SYMBOL)
    } {
        Ok(f) => {
            let d = f();
            if let Err(e) = check_layout_compatibility(<LifecycleV1 as StableAbi>::LAYOUT, d.layout)
            {
                if verbose {
                    log::warn!("{}: lifecycle layout check:\n{e}", file.display());
                }
                return Err(format!(
                    "its lifecycle table does not match this server's (SDK {SDK_MAJOR}.{SDK_MINOR}): {}",
                    summarise(&e)
                ));
            }
            Some(d.table)
        }
        Err(_) => None,
    };
    // SAFETY: as for the lifecycle table.
    let ext = match unsafe { lib.get::<extern "C" fn() -> ExtDeclV1>(EXT_V1_SYMBOL) } {
        Ok(f) => {
            let d = f();
            if let Err(e) = check_layout_compatibility(<ExtV1 as StableAbi>::LAYOUT, d.layout) {
                if verbose {
                    log::warn!("{}: extension layout check:\n{e}", file.display());
                }
                return Err(format!(
                    "its SDK 1.1 extension table does not match this server's: {}; rebuild it against this server's tamada-sdk",
                    summarise(&e)
                ));
            }
            if !d.table.unwinds {
                return Err(
                    "built with `panic = \"abort\"`: its first panic would end the server; rebuild it with `panic = \"unwind\"` (the default)".into(),
                );
            }
            Some(d.table)
        }
        Err(_) => None,
    };
    // SAFETY: as for the lifecycle table.
    let tls_init = match unsafe {
        lib.get::<extern "C" fn() -> tamada_sdk::abi::TlsDeclV1>(tamada_sdk::abi::TLS_V1_SYMBOL)
    } {
        Ok(f) => {
            let d = f();
            if let Err(e) = check_layout_compatibility(
                <tamada_sdk::abi::HostTlsV1 as StableAbi>::LAYOUT,
                d.layout,
            ) {
                if verbose {
                    log::warn!("{}: TLS table layout check:\n{e}", file.display());
                }
                return Err(format!(
                    "its SDK 1.2 TLS table does not match this server's: {}; rebuild it against this server's tamada-sdk",
                    summarise(&e)
                ));
            }
            Some(d.init)
        }
        Err(_) => None,
    };
    // SAFETY: as for the lifecycle table.
    let user_init = match unsafe {
        lib.get::<extern "C" fn() -> tamada_sdk::abi::UserDeclV1>(tamada_sdk::abi::USER_V1_SYMBOL)
    } {
        Ok(f) => {
            let d = f();
            if let Err(e) = check_layout_compatibility(
                <tamada_sdk::abi::HostAccessV1 as StableAbi>::LAYOUT,
                d.layout,
            ) {
                return Err(format!(
                    "its SDK 1.2 user table does not match this server's: {}; rebuild it against this server's tamada-sdk",
                    summarise(&e)
                ));
            }
            Some(d.init)
        }
        Err(_) => None,
    };
    // SAFETY: as for the lifecycle table.
    let proto_init = match unsafe {
        lib.get::<extern "C" fn() -> tamada_sdk::abi::ProtoDeclV1>(tamada_sdk::abi::PROTO_V1_SYMBOL)
    } {
        Ok(f) => {
            let d = f();
            if let Err(e) = check_layout_compatibility(
                <tamada_sdk::abi::HostProtoV1 as StableAbi>::LAYOUT,
                d.layout,
            ) {
                return Err(format!(
                    "its SDK 1.3 protocol table does not match this server's: {}; rebuild it against this server's tamada-sdk",
                    summarise(&e)
                ));
            }
            Some(d.init)
        }
        Err(_) => None,
    };
    // SAFETY: as for the lifecycle table.
    let access = match unsafe {
        lib.get::<extern "C" fn() -> tamada_sdk::abi::AccessDeclV1>(
            tamada_sdk::abi::ACCESS_V1_SYMBOL,
        )
    } {
        Ok(f) => {
            let d = f();
            if let Err(e) = check_layout_compatibility(
                <tamada_sdk::abi::AccessV1 as StableAbi>::LAYOUT,
                d.layout,
            ) {
                return Err(format!(
                    "its SDK 1.2 access table does not match this server's: {}; rebuild it against this server's tamada-sdk",
                    summarise(&e)
                ));
            }
            Some(d.table)
        }
        Err(_) => None,
    };
    // SAFETY: as for the lifecycle table.
    let filter = match unsafe {
        lib.get::<extern "C" fn() -> tamada_sdk::abi::FilterDeclV1>(
            tamada_sdk::abi::FILTER_V1_SYMBOL,
        )
    } {
        Ok(f) => {
            let d = f();
            if let Err(e) = check_layout_compatibility(
                <tamada_sdk::abi::FilterV1 as StableAbi>::LAYOUT,
                d.layout,
            ) {
                return Err(format!(
                    "its SDK 1.2 filter table does not match this server's: {}; rebuild it against this server's tamada-sdk",
                    summarise(&e)
                ));
            }
            Some(d.table)
        }
        Err(_) => None,
    };
    // SAFETY: as for the lifecycle table.
    let shared_table = if let Ok(f) = unsafe {
        lib.get::<extern "C" fn() -> tamada_sdk::abi::SharedDeclV1>(
            tamada_sdk::abi::SHARED_V1_SYMBOL,
        )
    } {
        let d = f();
        if let Err(e) =
            check_layout_compatibility(<tamada_sdk::abi::SharedV1 as StableAbi>::LAYOUT, d.layout)
        {
            return Err(format!(
                "its SDK 1.2 shared-bytes table does not match this server's: {}; rebuild it against this server's tamada-sdk",
                summarise(&e)
            ));
        }
        Some(d.table)
    } else {
        None
    };
    let plugin = Plugin {
        name: table.name.as_str().to_owned(),
        version: table.version.as_str().to_owned(),
        sdk: (header.sdk_major, header.sdk_minor),
        file: file.to_owned(),
        table,
        lifecycle,
        ext,
        tls_init,
        user_init,
        proto_init,
        access,
        filter,
    };
    if plugin.name.is_empty() {
        return Err("the plugin declares an empty name".into());
    }
    // Never unloaded (docs/ARCHITECTURE.md): the table and code stay mapped for good.
    std::mem::forget(lib);
    // Only now: a table registered before a refusal above would outlive
    // its library.
    if let Some(t) = shared_table {
        shared::register(t);
    }
    Ok(plugin)
}

/// One line out of abi_stable's long layout report.
fn summarise(e: &abi_stable::abi_stability::abi_checking::AbiInstabilityErrors) -> String {
    use abi_stable::abi_stability::abi_checking::AbiInstability as A;
    let Some(first) = e.errors.first() else {
        return "layouts differ".into();
    };
    let at: Vec<String> = first
        .stack_trace
        .iter()
        .map(|ef| match &ef.expected {
            abi_stable::type_layout::TLFieldOrFunction::Field(f) => f.name().to_owned(),
            abi_stable::type_layout::TLFieldOrFunction::Function(f) => format!("{f}"),
        })
        .collect();
    let at = if at.is_empty() {
        String::new()
    } else {
        format!(" at `{}`", at.join("."))
    };
    let what = match first.errs.first() {
        Some(A::FieldCountMismatch(x)) => {
            format!("{} fields where {} are expected", x.found, x.expected)
        }
        Some(A::UnexpectedField(x)) => format!(
            "field `{}` where `{}` is expected",
            x.found.name(),
            x.expected.name()
        ),
        Some(A::Package(x)) => format!(
            "a table declared in package `{}` where `{}` is expected",
            x.found, x.expected
        ),
        Some(A::Size(x)) => format!("{} bytes where {} are expected", x.found, x.expected),
        Some(A::Alignment(x)) => format!("alignment {} where {} is expected", x.found, x.expected),
        Some(A::Name(x)) => format!("type `{}` where `{}` is expected", x.found, x.expected),
        Some(other) => {
            let d = format!("{other:?}");
            d.split(['(', ' ', '{'])
                .next()
                .unwrap_or("layouts differ")
                .to_owned()
        }
        None => "layouts differ".to_owned(),
    };
    format!("{what}{at}")
}
