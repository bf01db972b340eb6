//! The running configuration: vhosts with their routes and loggers as
//! plugin instances, grouped by the socket they are served on. Built from
//! `config::Config` and the plugin registry at start-up and on SIGHUP, then
//! swapped in whole (`arc_swap`), so a request sees one configuration from
//! start to end.

use crate::config::{ConfError, Config, Settings, VhostConf};
use crate::plugins::{PluginInstance, Registry};
use abi_stable::std_types::RStr;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tamada_sdk::abi::{RoleV1, VhostV1};

/// A route: a path prefix and the handler instance behind it.
#[derive(Clone)]
pub struct Route {
    pub prefix: String,
    pub max_body: u64,
    /// Collect the body whole before the handler runs (`request_buffering`).
    pub buffering: bool,
    pub handler: Arc<PluginInstance>,
    /// `max_in_flight`, and the requests its handler serves now.
    pub in_flight: Option<(usize, Arc<std::sync::atomic::AtomicUsize>)>,
    /// The route's own `filters:` (replacing the vhost's).
    pub filters: Option<Filters>,
    /// The route's own threads (`pool: N`), instead of the shared pool.
    pub pool: Option<Arc<crate::pool::Owned>>,
}

/// A list of response filters, in order.
pub type Filters = Arc<[Arc<crate::plugins::filter::FilterInstance>]>;

/// One access rule (`access:`), in file order.
#[derive(Clone)]
pub struct AccessRule {
    pub prefix: String,
    /// The group of `satisfy: any` rules it belongs to: the index of the
    /// group's first rule (its own index when it is alone).
    pub group: usize,
    /// The group's last rule's index.
    pub group_end: usize,
    pub rule: Arc<crate::plugins::access::AccessInstance>,
}

impl AccessRule {
    /// Whether `path` is under this prefix on a segment boundary.
    pub fn matches(&self, path: &str) -> bool {
        prefix_matches(&self.prefix, path)
    }
}

/// Whether `path` is under `p` on a segment boundary.
fn prefix_matches(p: &str, path: &str) -> bool {
    path.starts_with(p)
        && (p.ends_with('/') || path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
}

impl Route {
    /// Whether `path` is under this prefix on a segment boundary.
    pub fn matches(&self, path: &str) -> bool {
        prefix_matches(&self.prefix, path)
    }
    /// The part of `path` after the prefix (starting with `/`, or empty).
    pub fn rest<'a>(&self, path: &'a str) -> &'a str {
        let n = self.prefix.trim_end_matches('/').len();
        &path[n.min(path.len())..]
    }
}

/// A vhost ready to serve.
#[derive(Clone)]
pub struct Vhost {
    pub name: String,
    pub file: PathBuf,
    pub document_root: String,
    pub cgi_bin: String,
    pub log_dir: String,
    pub config_file: String,
    pub max_body: u64,
    /// The HTTPS port, when the vhost has one (`https_redirect`).
    pub tls_port: Option<u16>,
    /// Plain-HTTP requests get 308 to HTTPS.
    pub https_redirect: bool,
    /// `Strict-Transport-Security` for HTTPS answers.
    pub hsts: Option<String>,
    /// Longest prefix first; equal prefixes keep file order.
    pub routes: Vec<Route>,
    pub loggers: Vec<Arc<PluginInstance>>,
    /// Some loggers run on the pool (1.0 plugins, or not declared inline).
    pub pool_loggers: bool,
    /// Access rules, in file order.
    pub access: Vec<AccessRule>,
    /// Response filters (`filters:`), unless a route has its own.
    pub filters: Filters,
}

impl Vhost {
    pub fn raw(&self) -> VhostV1<'_> {
        VhostV1 {
            name: RStr::from_str(&self.name),
            document_root: RStr::from_str(&self.document_root),
            cgi_bin: RStr::from_str(&self.cgi_bin),
            log_dir: RStr::from_str(&self.log_dir),
            config_file: RStr::from_str(&self.config_file),
        }
    }
    /// The largest body any route may accept: a Content-Length above it is
    /// refused before routing.
    pub fn max_body_for(&self, path: &str) -> u64 {
        self.routes
            .iter()
            .find(|r| r.matches(path))
            .map(|r| r.max_body)
            .unwrap_or(self.max_body)
    }
    /// The pool a request for `path` runs on when it leaves the loop: the
    /// first matching route's own (`pool: N`), else `None` (the shared
    /// one).
    pub fn pool_for(&self, path: &str) -> Option<&Arc<crate::pool::Pool>> {
        self.routes
            .iter()
            .find(|r| r.matches(path))
            .and_then(|r| r.pool.as_ref())
            .map(|p| &p.0)
    }
    /// The response filters of a request for `path`: the first matching
    /// route's own list, else the vhost's.
    pub fn filters_for(&self, path: &str) -> &Filters {
        self.routes
            .iter()
            .find(|r| r.matches(path))
            .and_then(|r| r.filters.as_ref())
            .unwrap_or(&self.filters)
    }
    /// Whether the body of a request for `path` is collected whole before
    /// its handler runs (the first route that matches says).
    pub fn buffering_for(&self, path: &str) -> bool {
        self.routes
            .iter()
            .find(|r| r.matches(path))
            .is_none_or(|r| r.buffering)
    }
}

impl crate::plugins::host::RecordSink for Vhost {
    fn vhost_name(&self) -> &str {
        &self.name
    }
    fn has_loggers(&self) -> bool {
        !self.loggers.is_empty()
    }
    fn deliver(&self, rec: &tamada_sdk::abi::RecordV1<'_>, on_loop: bool) {
        for l in self.loggers.iter().filter(|l| l.inline || !on_loop) {
            l.record(rec);
        }
        if on_loop && self.pool_loggers {
            // A logger that may block gets the record on the pool.
            let loggers: Vec<_> = self.loggers.iter().filter(|l| !l.inline).cloned().collect();
            let (name, source, msg) = (
                self.name.clone(),
                rec.source.as_str().to_owned(),
                rec.message.as_str().to_owned(),
            );
            let (level, peer, unix_us) = (rec.level, rec.peer, rec.unix_us);
            crate::pool::global().submit(Box::new(move || {
                let rec = tamada_sdk::abi::RecordV1 {
                    level,
                    source: RStr::from_str(&source),
                    message: RStr::from_str(&msg),
                    vhost: RStr::from_str(&name),
                    peer,
                    unix_us,
                };
                crate::plugins::host::delivering(|| {
                    for l in &loggers {
                        l.record(&rec);
                    }
                });
            }));
        }
    }
}

/// The vhosts configured for one address on a port.
#[derive(Default, Clone)]
pub struct Group {
    pub vhosts: Vec<Arc<Vhost>>,
    pub names: HashMap<String, usize>,
    pub default: usize,
    /// A vhost said `default: true` (else the first file is the default).
    pub explicit_default: bool,
}

/// Everything served on one listening socket.
#[derive(Default, Clone)]
pub struct Site {
    /// By configured IP (a wildcard IP is the unspecified address).
    pub groups: BTreeMap<IpAddr, Group>,
    /// Connections start with a PROXY protocol header (`realip.rs`).
    pub proxy_protocol: bool,
    /// A plain socket that takes HTTP/2 with prior knowledge (h2c).
    pub h2c: bool,
    /// An HTTPS socket: its vhosts' TLS, chosen by SNI.
    pub tls: Option<Arc<crate::config::tls::SiteTls>>,
}

impl Site {
    /// The vhost for a request that reached `local` asking for `host`.
    pub fn pick(&self, local: IpAddr, host: &str) -> Option<&Arc<Vhost>> {
        let local = canonical(local);
        let group = self.groups.get(&local).or_else(|| {
            self.groups
                .iter()
                .find(|(ip, _)| ip.is_unspecified() && ip.is_ipv4() == local.is_ipv4())
                .or_else(|| self.groups.iter().find(|(ip, _)| ip.is_unspecified()))
                .map(|(_, g)| g)
        })?;
        let i = group.names.get(host).copied().unwrap_or(group.default);
        group.vhosts.get(i)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The whole running configuration.
pub struct Runtime {
    pub settings: Settings,
    /// Listening socket address -> what it serves.
    pub sites: BTreeMap<SocketAddr, Site>,
    pub registry: Arc<Registry>,
}

impl Runtime {
    /// The vhost for a connection (by the socket it came in on, or failing
    /// that by its local port, after a reload moved listeners) and a Host.
    pub fn vhost_for(
        &self,
        bind: SocketAddr,
        local: SocketAddr,
        host: &str,
    ) -> Option<&Arc<Vhost>> {
        let site = self.sites.get(&bind).or_else(|| {
            self.sites
                .iter()
                .find(|(a, _)| a.port() == local.port())
                .map(|(_, s)| s)
        })?;
        site.pick(local.ip(), host)
    }

    /// A copy for one event loop: the same plugin instances, but vhosts of
    /// its own, so the reference counts a loop bumps per request live in
    /// cache lines no other loop writes (PERF: no bouncing between cores).
    pub fn fork(&self) -> Runtime {
        let sites = self
            .sites
            .iter()
            .map(|(a, s)| {
                let mut s = s.clone();
                for g in s.groups.values_mut() {
                    for v in g.vhosts.iter_mut() {
                        *v = Arc::new((**v).clone());
                    }
                }
                (*a, s)
            })
            .collect();
        Runtime {
            settings: self.settings.clone(),
            sites,
            registry: self.registry.clone(),
        }
    }

    /// The vhost of this name, in any site (records from outside a
    /// request, addressed by name).
    pub fn vhost_named(&self, name: &str) -> Option<&Arc<Vhost>> {
        self.sites
            .values()
            .flat_map(|s| s.groups.values())
            .flat_map(|g| g.vhosts.iter())
            .find(|v| v.name == name)
    }

    /// Per listening socket and configured address, the vhost that
    /// answers a Host no vhost names: `addr -> (name, chosen)` where
    /// `chosen` is false when it is only the first file by name.
    pub fn defaults(&self) -> BTreeMap<String, (String, bool)> {
        let mut out = BTreeMap::new();
        for (bind, site) in &self.sites {
            for (ip, g) in &site.groups {
                let Some(v) = g.vhosts.get(g.default) else {
                    continue;
                };
                let at = if *ip == bind.ip() {
                    bind.to_string()
                } else {
                    format!("{bind} (address {ip})")
                };
                out.insert(at, (v.name.clone(), g.explicit_default));
            }
        }
        out
    }

    /// Logs each socket's default vhost (at start), or those that changed
    /// from `before` (on a reload): a new file must not become the
    /// default without a word.
    pub fn log_defaults(&self, before: Option<&BTreeMap<String, (String, bool)>>) {
        for (at, (name, chosen)) in self.defaults() {
            let was = before.and_then(|b| b.get(&at)).map(|(n, _)| n.as_str());
            if before.is_some() && was == Some(name.as_str()) {
                continue;
            }
            let how = if chosen {
                "(default: true)"
            } else {
                "(the first file by name on it; mark one `default: true` to choose)"
            };
            match was {
                Some(w) => log::warn!("{at}: the default vhost is now {name} {how}, was {w}"),
                None => log::info!("{at}: default vhost {name} {how}"),
            }
        }
    }

    /// Every plugin instance, once (for lifecycle hooks): a vhost with a
    /// plain and an HTTPS port is in two sites.
    pub fn instances(&self) -> impl Iterator<Item = &PluginInstance> {
        let mut seen = std::collections::HashSet::new();
        self.sites
            .values()
            .flat_map(|s| s.groups.values())
            .flat_map(|g| g.vhosts.iter())
            .flat_map(|v| {
                v.routes
                    .iter()
                    .map(|r| &*r.handler)
                    .chain(v.loggers.iter().map(|l| &**l))
            })
            .filter(move |i| seen.insert(*i as *const PluginInstance))
    }

    /// Builds every route's and logger's instance. Errors name the file,
    /// the line of the route, and the plugin's message.
    pub fn build(config: &Config, registry: Arc<Registry>) -> Result<Runtime, Vec<ConfError>> {
        let mut errors = Vec::new();
        let binds = crate::config::bind_addresses(&config.vhosts);
        let mut sites: BTreeMap<SocketAddr, Site> = BTreeMap::new();
        // Per HTTPS socket: its vhosts' TLS, and which one is the default.
        let mut tls: BTreeMap<SocketAddr, crate::config::tls::SiteTls> = BTreeMap::new();
        for vc in &config.vhosts {
            let v = match build_vhost(vc, &registry) {
                Ok(v) => Arc::new(v),
                Err(mut e) => {
                    errors.append(&mut e);
                    continue;
                }
            };
            // Keys are read here: at start-up before the privilege drop.
            let vt = match &vc.tls {
                Some(t) => match crate::config::tls::build(
                    &vc.name,
                    t,
                    config.settings.ticket_key_file.as_deref(),
                    vc.http2,
                    t.acme.then(|| {
                        crate::acme::resolver(&config.settings.acme, &vc.name)
                            as Arc<dyn rustls::server::ResolvesServerCert>
                    }),
                ) {
                    Ok(vt) => Some(Arc::new(vt)),
                    Err(e) => {
                        errors.push(vc.error_at("tls", 0, format!("tls: {e}")));
                        continue;
                    }
                },
                None => None,
            };
            for l in &vc.listens {
                let bind = binds[&l.addr];
                let site = sites.entry(bind).or_default();
                // config.rs has checked that the vhosts agree.
                site.proxy_protocol |= vc.proxy_protocol;
                site.h2c |= vc.h2c && !l.tls;
                let group = site.groups.entry(l.addr.ip()).or_default();
                let idx = group.vhosts.len();
                for n in std::iter::once(&vc.name).chain(&vc.aliases) {
                    group.names.insert(n.clone(), idx);
                }
                if vc.default {
                    group.default = idx;
                    group.explicit_default = true;
                }
                group.vhosts.push(v.clone());
                if l.tls
                    && let Some(vt) = &vt
                {
                    let st = tls.entry(bind).or_default();
                    for n in std::iter::once(&vc.name).chain(&vc.aliases) {
                        st.by_name.insert(n.clone(), vt.clone());
                    }
                    if vc.default || st.default.is_none() {
                        st.default = Some(vt.clone());
                    }
                }
            }
        }
        for (bind, st) in tls {
            if let Some(site) = sites.get_mut(&bind) {
                site.tls = Some(Arc::new(st));
            }
        }
        if errors.is_empty() {
            Ok(Runtime {
                settings: config.settings.clone(),
                sites,
                registry,
            })
        } else {
            Err(errors)
        }
    }
}

fn build_vhost(vc: &VhostConf, registry: &Registry) -> Result<Vhost, Vec<ConfError>> {
    let s = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut v = Vhost {
        name: vc.name.clone(),
        file: vc.file.clone(),
        document_root: vc.document_root.to_string_lossy().into_owned(),
        cgi_bin: s(&vc.cgi_bin),
        log_dir: s(&vc.log),
        // Absolute, as every path the SDK hands out (`-c conf.d` gives
        // relative file names, kept for messages).
        config_file: std::path::absolute(&vc.file)
            .unwrap_or_else(|_| vc.file.clone())
            .to_string_lossy()
            .into_owned(),
        max_body: vc.max_body,
        tls_port: vc.tls_port,
        https_redirect: vc.https_redirect,
        hsts: vc.hsts.clone(),
        routes: Vec::new(),
        loggers: Vec::new(),
        pool_loggers: false,
        access: Vec::new(),
        filters: Arc::new([]),
    };
    let mut errors = Vec::new();
    v.access = build_access(vc, registry, &v, &mut errors);
    v.filters = build_filters(vc, registry, &v, &vc.filters, "", "filters", &mut errors);
    let mut routes = Vec::new();
    for (i, r) in vc.routes.iter().enumerate() {
        let Some(plugin) = registry.plugins.get(&r.handler) else {
            errors.push(vc.route_error(
                "handler",
                i,
                format!("routes[{i}] ({}): {}", r.path, registry.missing(&r.handler)),
            ));
            continue;
        };
        if let Some(why) = plugin.refuses(RoleV1::Handler) {
            errors.push(vc.route_error("handler", i, format!("routes[{i}] ({}): {why}", r.path)));
            continue;
        }
        let yaml = options_yaml(&r.options);
        let filters = r.filters.as_ref().map(|f| {
            build_filters(
                vc,
                registry,
                &v,
                f,
                &r.path,
                &format!("routes[{i}].filters"),
                &mut errors,
            )
        });
        match PluginInstance::create(plugin, &yaml, RoleV1::Handler, v.raw(), &r.path) {
            Ok(inst) => routes.push(Route {
                filters,
                pool: r
                    .pool
                    .map(|n| crate::pool::route_pool(&vc.name, &r.path, n)),
                prefix: r.path.clone(),
                max_body: r.max_body.map(|m| m.0).unwrap_or(vc.max_body),
                buffering: r.request_buffering.unwrap_or(vc.request_buffering),
                handler: Arc::new(inst),
                in_flight: r.max_in_flight.map(|m| (m, Arc::default())),
            }),
            Err(e) => {
                let msg = format!(
                    "routes[{i}] ({}): plugin `{}` refused its options: {e}",
                    r.path, r.handler
                );
                errors.push(option_error(
                    vc,
                    &format!("routes[{i}].options"),
                    &e,
                    msg,
                    || vc.route_error("path", i, String::new()),
                ));
            }
        }
    }
    // Stable sort: equal prefixes keep their file order.
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    v.routes = routes;
    let mut loggers = Vec::new();
    for (i, l) in vc.loggers.iter().enumerate() {
        let Some(plugin) = registry.plugins.get(&l.handler) else {
            errors.push(vc.error_at(
                "loggers",
                0,
                format!("loggers[{i}]: {}", registry.missing(&l.handler)),
            ));
            continue;
        };
        if let Some(why) = plugin.refuses(RoleV1::Logger) {
            errors.push(vc.error_at("loggers", 0, format!("loggers[{i}]: {why}")));
            continue;
        }
        let yaml = options_yaml(&l.options);
        match PluginInstance::create(plugin, &yaml, RoleV1::Logger, v.raw(), "") {
            Ok(inst) => loggers.push(Arc::new(inst)),
            Err(e) => {
                let msg = format!(
                    "loggers[{i}]: plugin `{}` refused its options: {e}",
                    l.handler
                );
                errors.push(option_error(
                    vc,
                    &format!("loggers[{i}].options"),
                    &e,
                    msg,
                    || vc.error_at("loggers", 0, String::new()),
                ));
            }
        }
    }
    v.pool_loggers = loggers.iter().any(|l| !l.inline);
    v.loggers = loggers;
    if errors.is_empty() {
        Ok(v)
    } else {
        Err(errors)
    }
}

/// A vhost's access rules; consecutive `satisfy: any` rules of the same
/// path make one group.
fn build_access(
    vc: &VhostConf,
    registry: &Registry,
    v: &Vhost,
    errors: &mut Vec<ConfError>,
) -> Vec<AccessRule> {
    let mut rules: Vec<AccessRule> = Vec::new();
    for (i, a) in vc.access.iter().enumerate() {
        let Some(plugin) = registry.plugins.get(&a.handler) else {
            errors.push(vc.error_at(
                "access",
                0,
                format!("access[{i}] ({}): {}", a.path, registry.missing(&a.handler)),
            ));
            continue;
        };
        let yaml = options_yaml(&a.options);
        match crate::plugins::access::AccessInstance::create(plugin, &yaml, v.raw(), &a.path) {
            None => errors.push(vc.error_at(
                "access",
                0,
                format!(
                    "access[{i}] ({}): plugin `{}` is not an access plugin (it has no SDK 1.2 access table); name it under `routes:`",
                    a.path, a.handler
                ),
            )),
            Some(Ok(rule)) => {
                let n = rules.len();
                let group = match rules.last() {
                    Some(prev)
                        if a.satisfy == crate::config::Satisfy::Any
                            && vc.access[i - 1].satisfy == crate::config::Satisfy::Any
                            && prev.prefix == a.path =>
                    {
                        prev.group
                    }
                    _ => n,
                };
                for r in rules.iter_mut().filter(|r| r.group == group) {
                    r.group_end = n;
                }
                rules.push(AccessRule {
                    prefix: a.path.clone(),
                    group,
                    group_end: n,
                    rule: Arc::new(rule),
                });
            }
            Some(Err(e)) => {
                let msg = format!(
                    "access[{i}] ({}): plugin `{}` refused its options: {e}",
                    a.path, a.handler
                );
                errors.push(option_error(
                    vc,
                    &format!("access[{i}].options"),
                    &e,
                    msg,
                    || vc.error_at("access", 0, String::new()),
                ));
            }
        }
    }
    rules
}

/// A list of response filters (`at`: its place in the file,
/// `filters` or `routes[2].filters`).
fn build_filters(
    vc: &VhostConf,
    registry: &Registry,
    v: &Vhost,
    list: &[crate::config::FilterConf],
    path: &str,
    at: &str,
    errors: &mut Vec<ConfError>,
) -> Filters {
    let mut out = Vec::new();
    let here = |key: String, message: String| {
        let (line, column) =
            crate::config::yamlpos::locate(&vc.text, &crate::config::yamlpos::parse_path(&key))
                .unwrap_or((0, 0));
        ConfError {
            file: vc.file.clone(),
            line,
            column,
            message,
        }
    };
    for (i, f) in list.iter().enumerate() {
        let Some(plugin) = registry.plugins.get(&f.handler) else {
            errors.push(here(
                format!("{at}[{i}].handler"),
                format!("{at}[{i}]: {}", registry.missing(&f.handler)),
            ));
            continue;
        };
        let yaml = options_yaml(&f.options);
        match crate::plugins::filter::FilterInstance::create(plugin, &yaml, v.raw(), path) {
            None => errors.push(here(
                format!("{at}[{i}].handler"),
                format!(
                    "{at}[{i}]: plugin `{}` is not a filter plugin (it has no SDK 1.2 filter table)",
                    f.handler
                ),
            )),
            Some(Ok(inst)) => out.push(Arc::new(inst)),
            Some(Err(e)) => {
                let msg = format!(
                    "{at}[{i}]: plugin `{}` refused its options: {e}",
                    f.handler
                );
                errors.push(option_error(
                    vc,
                    &format!("{at}[{i}].options"),
                    &e,
                    msg,
                    || here(format!("{at}[{i}]"), String::new()),
                ));
            }
        }
    }
    out.into()
}

/// An option error at the conf.d file's own line: where the plugin said
/// it lies under `base`, else the entry's own line (`fallback`).
fn option_error(
    vc: &VhostConf,
    base: &str,
    e: &crate::plugins::OptionError,
    message: String,
    fallback: impl FnOnce() -> ConfError,
) -> ConfError {
    let mut path = crate::config::yamlpos::parse_path(base);
    if let Some(p) = &e.path {
        path.extend(crate::config::yamlpos::parse_path(p));
    }
    // The deepest node the file has on that path (a key may come from a
    // default, not from the file).
    while !path.is_empty() {
        if let Some((line, column)) = crate::config::yamlpos::locate(&vc.text, &path) {
            return ConfError {
                file: vc.file.clone(),
                line,
                column,
                message,
            };
        }
        path.pop();
    }
    ConfError {
        message,
        ..fallback()
    }
}

fn options_yaml(v: &serde_yaml::Value) -> String {
    if v.is_null() {
        return String::new();
    }
    serde_yaml::to_string(v).unwrap_or_default()
}
