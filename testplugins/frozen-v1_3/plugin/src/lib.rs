//! A plugin as a 1.3 build made it: written against the frozen 1.3 tables
//! only (no SDK conveniences that might change).
//!
//! As a handler (`frozen13`): answers `frozen 1.3: HTTP/MAJOR.MINOR`, the
//! version the protocol view (`HostProtoV1`, added by 1.3) gives for the
//! request, and the 1.0 `version_minor` beside it.
use abi_stable::StableAbi;
use abi_stable::std_types::{RResult, RStr, RString, RVec};
use std::sync::OnceLock;
use tamada_sdk::abi::*;

static PROTO: OnceLock<&'static HostProtoV1> = OnceLock::new();

extern "C" fn init(_: &'static HostV1) {}

extern "C" fn create(_: RStr<'_>, _: &CreateCtxV1<'_>) -> RResult<Instance, RString> {
    RResult::ROk(Instance(std::ptr::null()))
}

extern "C" fn handle(_: Instance, req: &RequestV1<'_>) -> HandleResultV1 {
    let v = PROTO.get().map_or(0, |p| (p.version)());
    let body = format!(
        "frozen 1.3: HTTP/{}.{} (1.0 field: 1.{})\n",
        v >> 8,
        v & 0xff,
        req.version_minor
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

static TABLE: PluginV1 = PluginV1 {
    name: RStr::from_str("frozen13"),
    version: RStr::from_str("1.3.0"),
    init,
    create,
    handle,
    destroy,
};

extern "C" fn proto_init(host: &'static HostProtoV1) {
    let _ = PROTO.set(host);
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_header() -> PluginHeader {
    PluginHeader {
        magic: MAGIC,
        sdk_major: 1,
        sdk_minor: 3,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_v1() -> PluginDeclV1 {
    PluginDeclV1 {
        layout: <PluginV1 as StableAbi>::LAYOUT,
        table: &TABLE,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_proto_v1() -> ProtoDeclV1 {
    ProtoDeclV1 {
        layout: <HostProtoV1 as StableAbi>::LAYOUT,
        init: proto_init,
    }
}
