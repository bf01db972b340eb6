//! Test plugin that claims SDK major 9: the server must refuse it in one line.
use tamada_sdk::abi::{MAGIC, PluginHeader};

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_header() -> PluginHeader {
    PluginHeader {
        magic: MAGIC,
        sdk_major: 9,
        sdk_minor: 3,
    }
}
