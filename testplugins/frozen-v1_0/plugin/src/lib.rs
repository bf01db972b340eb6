//! A plugin as a 1.0 build made it: written against the frozen 1.0 tables
//! only (no SDK conveniences that might change), with both the main table
//! and the optional lifecycle table. Its log phase counts exchanges so the
//! test can see that hook work too.
use abi_stable::StableAbi;
use abi_stable::std_types::{RResult, RStr, RString, RVec};
use std::sync::atomic::{AtomicU64, Ordering};
use tamada_sdk::abi::*;

static LOGGED: AtomicU64 = AtomicU64::new(0);

extern "C" fn init(_: &'static HostV1) {}

extern "C" fn create(_: RStr<'_>, _: &CreateCtxV1<'_>) -> RResult<Instance, RString> {
    RResult::ROk(Instance(std::ptr::null()))
}

extern "C" fn handle(_: Instance, req: &RequestV1<'_>) -> HandleResultV1 {
    let body = format!(
        "frozen 1.0 plugin: {} {} (logged {})\n",
        req.method.as_str(),
        req.path.as_str(),
        LOGGED.load(Ordering::Relaxed)
    );
    HandleResultV1::Respond(ResponseV1 {
        status: 200,
        headers: RVec::from(vec![OwnedHeaderV1 {
            name: RString::from("content-type"),
            value: RVec::from(b"text/plain".to_vec()),
        }]),
        body: BodyV1::Bytes(RVec::from(body.into_bytes())),
    })
}

extern "C" fn destroy(_: Instance) {}

extern "C" fn log(_: Instance, _: &LogEntryV1<'_>) {
    LOGGED.fetch_add(1, Ordering::Relaxed);
}
extern "C" fn record(_: Instance, _: &RecordV1<'_>) {}
extern "C" fn nothing(_: Instance) {}

static TABLE: PluginV1 = PluginV1 {
    name: RStr::from_str("frozen"),
    version: RStr::from_str("1.0.0"),
    init,
    create,
    handle,
    destroy,
};

static LIFECYCLE: LifecycleV1 = LifecycleV1 {
    log,
    record,
    reopen: nothing,
    flush: nothing,
    shutdown: nothing,
};

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_header() -> PluginHeader {
    PluginHeader { magic: MAGIC, sdk_major: 1, sdk_minor: 0 }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_v1() -> PluginDeclV1 {
    PluginDeclV1 { layout: <PluginV1 as StableAbi>::LAYOUT, table: &TABLE }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_lifecycle_v1() -> LifecycleDeclV1 {
    LifecycleDeclV1 { layout: <LifecycleV1 as StableAbi>::LAYOUT, table: &LIFECYCLE }
}
