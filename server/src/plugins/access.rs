//! An access plugin's instances (one per `access:` rule): made from the
//! rule's options with the plugin's SDK 1.2 access table, and called
//! before routing (`exchange/access.rs` decides what each verdict does).

use super::Plugin;
use super::call;
use super::instance::OptionError;
use std::sync::Arc;
use tamada_sdk::abi::{AccessCallV1, AccessResultV1, AccessV1, Instance, RequestV1, VhostV1};

/// A live access rule's instance.
pub struct AccessInstance {
    pub plugin: Arc<Plugin>,
    table: &'static AccessV1,
    inst: Instance,
    /// The plugin's name, for tagging records.
    pub tag: &'static str,
    /// It wants `finish` when a passed exchange ends.
    pub finishes: bool,
}

impl AccessInstance {
    /// Builds a rule's instance; `None` when the plugin has no access
    /// table (it cannot be named in `access:`).
    pub fn create(
        plugin: &Arc<Plugin>,
        options_yaml: &str,
        vhost: VhostV1<'_>,
        path: &str,
    ) -> Option<Result<AccessInstance, OptionError>> {
        let table = plugin.access?;
        let made = super::instance::create_with(table.create, options_yaml, vhost, path);
        Some(made.map(|inst| AccessInstance {
            plugin: plugin.clone(),
            table,
            inst,
            tag: plugin.table.name.as_str(),
            finishes: (table.finishes)(inst),
        }))
    }

    /// Checks a request (`inline`: on an event loop; `delayed`: after the
    /// delay this check asked for).
    pub fn check(&self, req: &RequestV1<'_>, inline: bool, delayed: bool) -> AccessResultV1 {
        super::instance::watched(self.tag, || {
            (self.table.check)(self.inst, req, &AccessCallV1 { inline, delayed })
        })
    }
}

impl AccessInstance {
    /// Releases what a passing check counted (the exchange ended).
    pub fn finish(&self, req: &RequestV1<'_>) {
        call::named(self.tag, || (self.table.finish)(self.inst, req))
    }
}

impl Drop for AccessInstance {
    /// Destroyed off the loops, as handlers are (a plugin's drop may
    /// block).
    fn drop(&mut self) {
        let (destroy, inst) = (self.table.destroy, self.inst);
        super::instance::off_loop(move || destroy(inst));
    }
}
