//! Test plugin of the right SDK major whose v1 table has another shape:
//! abi_stable's layout check must refuse it.
use abi_stable::StableAbi;
use abi_stable::std_types::RStr;
use abi_stable::type_layout::TypeLayout;
use tamada_sdk::abi::{MAGIC, PluginHeader, SDK_MAJOR, SDK_MINOR};

#[repr(C)]
#[derive(StableAbi)]
pub struct PluginV1 {
    pub name: RStr<'static>,
    pub version: RStr<'static>,
    pub init: extern "C" fn(u32) -> u32,
}

#[repr(C)]
pub struct Decl {
    pub layout: &'static TypeLayout,
    pub table: &'static PluginV1,
}

extern "C" fn init(x: u32) -> u32 {
    x
}

static TABLE: PluginV1 = PluginV1 {
    name: RStr::from_str("badlayout"),
    version: RStr::from_str("0.0.1"),
    init,
};

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_header() -> PluginHeader {
    PluginHeader {
        magic: MAGIC,
        sdk_major: SDK_MAJOR,
        sdk_minor: SDK_MINOR,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_v1() -> Decl {
    Decl {
        layout: <PluginV1 as StableAbi>::LAYOUT,
        table: &TABLE,
    }
}
