//! A filter plugin's instances (one per entry of a `filters:` list): made
//! from the entry's options with the plugin's SDK 1.2 filter table, and
//! called around the handler (`exchange/filter.rs` decides what each
//! result does). A body transform a filter returns is a [`Transform`],
//! freed exactly once whatever becomes of the response.

use super::Plugin;
use super::call;
use super::instance::OptionError;
use abi_stable::std_types::RVec;
use std::sync::Arc;
use tamada_sdk::abi::{
    BodyFilterV1, FilterHeadV1, FilterResultV1, FilterV1, HeaderEditV1, Instance, RequestV1,
    VhostV1,
};

/// A live filter's instance.
pub struct FilterInstance {
    pub plugin: Arc<Plugin>,
    table: &'static FilterV1,
    inst: Instance,
    /// The plugin's name, for tagging records.
    pub tag: &'static str,
}

impl FilterInstance {
    /// Builds an entry's instance; `None` when the plugin has no filter
    /// table (it cannot be named in `filters:`).
    pub fn create(
        plugin: &Arc<Plugin>,
        options_yaml: &str,
        vhost: VhostV1<'_>,
        path: &str,
    ) -> Option<Result<FilterInstance, OptionError>> {
        let table = plugin.filter?;
        let made = super::instance::create_with(table.create, options_yaml, vhost, path);
        Some(made.map(|inst| FilterInstance {
            plugin: plugin.clone(),
            table,
            inst,
            tag: plugin.table.name.as_str(),
        }))
    }

    /// The request side: the header edits it asks for.
    pub fn request(&self, req: &RequestV1<'_>) -> RVec<HeaderEditV1> {
        let mut edits = RVec::new();
        self.watched(|| (self.table.request)(self.inst, req, &mut edits));
        edits
    }

    /// The response side.
    pub fn response(&self, req: &RequestV1<'_>, head: &mut FilterHeadV1) -> FilterResultV1 {
        self.watched(|| (self.table.response)(self.inst, req, head))
    }

    fn watched<R>(&self, f: impl FnOnce() -> R) -> R {
        super::instance::watched(self.tag, f)
    }
}

impl Drop for FilterInstance {
    /// Destroyed off the loops, as handlers are (a plugin's drop may
    /// block).
    fn drop(&mut self) {
        let (destroy, inst) = (self.table.destroy, self.inst);
        super::instance::off_loop(move || destroy(inst));
    }
}

/// A filter's body transform, owned by the core; its plugin stays loaded
/// (libraries are never unloaded) and its state is freed on drop.
pub struct Transform {
    raw: BodyFilterV1,
    pub tag: &'static str,
}

impl Transform {
    pub fn new(raw: BodyFilterV1, tag: &'static str) -> Self {
        Transform { raw, tag }
    }

    /// Transforms `input` (`flush`: the handler flushed here), appending
    /// to `out`.
    pub fn data(&mut self, input: &[u8], flush: bool, out: &mut RVec<u8>) -> Result<(), String> {
        let raw = &self.raw;
        call::named(self.tag, || {
            (raw.data)(raw.ctx, input.into(), flush, out).into_result()
        })
        .map_err(|e| format!("filter `{}` failed: {e}", self.tag))
    }

    /// The body ended: its last bytes.
    pub fn finish(&mut self, out: &mut RVec<u8>) -> Result<(), String> {
        let raw = &self.raw;
        call::named(self.tag, || (raw.finish)(raw.ctx, out).into_result())
            .map_err(|e| format!("filter `{}` failed: {e}", self.tag))
    }
}

impl Drop for Transform {
    fn drop(&mut self) {
        let raw = &self.raw;
        call::named(self.tag, || (raw.drop)(raw.ctx));
    }
}
