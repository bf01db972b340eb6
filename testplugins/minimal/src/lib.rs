//! Test plugin built on the raw ABI that exports only the required tables
//! (header and v1), not the optional lifecycle table: it must still load
//! and serve, with its log and lifecycle hooks absent. It also claims a
//! newer minor SDK version than the server's: a plugin of a newer minor
//! loads when the tables it needs exist.
use abi_stable::StableAbi;
use abi_stable::std_types::{RResult, RStr, RString, RVec};
use tamada_sdk::abi::*;

extern "C" fn init(_: &'static HostV1) {}

extern "C" fn create(_: RStr<'_>, _: &CreateCtxV1<'_>) -> RResult<Instance, RString> {
    RResult::ROk(Instance(std::ptr::null()))
}

extern "C" fn handle(_: Instance, req: &RequestV1<'_>) -> HandleResultV1 {
    let body = format!("minimal plugin saw {}\n", req.path.as_str());
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
    name: RStr::from_str("minimal"),
    version: RStr::from_str("0.0.1"),
    init,
    create,
    handle,
    destroy,
};

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_header() -> PluginHeader {
    PluginHeader {
        magic: MAGIC,
        sdk_major: SDK_MAJOR,
        sdk_minor: SDK_MINOR + 7,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_v1() -> PluginDeclV1 {
    PluginDeclV1 {
        layout: <PluginV1 as StableAbi>::LAYOUT,
        table: &TABLE,
    }
}
