//! An access plugin's instances (one per `access:` rule): made from the
//! rule's options with the plugin's SDK 1.2 access table, and called
//! before routing (`exchange/access.rs` decides what each verdict does).

use super::Plugin;
use super::call;
use super::instance::OptionError;
use abi_stable::std_types::RStr;
use std::sync::Arc;
use tamada_sdk::abi::{
    AccessCallV1, AccessResultV1, AccessV1, CreateCtxV1, Instance, RequestV1, RoleV1, VhostV1,
};

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
        let ctx = CreateCtxV1 {
            role: RoleV1::Handler,
            vhost,
            route: RStr::from_str(path),
        };
        let made = (table.create)(RStr::from_str(options_yaml), &ctx)
            .into_result()
            .map_err(|e| OptionError {
                path: Some(e.path.into_string()).filter(|p| !p.is_empty()),
                message: e.message.into_string(),
            });
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
        let (r, stall) = super::watchdog::around(|| {
            call::named(self.tag, || {
                (self.table.check)(self.inst, req, &AccessCallV1 { inline, delayed })
            })
        });
        if let Some(held) = stall {
            super::instance::stalled(self.tag, held);
        }
        r
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
        let end = move || destroy(inst);
        if call::on_loop() {
            crate::pool::global().submit(Box::new(end));
        } else {
            end();
        }
    }
}
