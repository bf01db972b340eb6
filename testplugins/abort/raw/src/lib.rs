//! A plugin built with `panic = "abort"` that exports its tables by hand,
//! without `export_plugin!` (which refuses to compile then). Its SDK 1.1
//! extension table says it aborts; the server must refuse it.
use abi_stable::std_types::{RResult, RStr, RString};
use tamada_sdk::abi::{
    CreateCtxV1, ExtDeclV1, ExtV1, Instance, OptionErrorV1, PluginDeclV1, PluginHeader, PluginV1,
};
use tamada_sdk::plugin::__private as p;
use tamada_sdk::prelude::*;

struct Never;
impl Handler for Never {}

fn construct(_: &Options) -> Result<Box<dyn Handler>, String> {
    Ok(Box::new(Never))
}

extern "C" fn create(options: RStr<'_>, ctx: &CreateCtxV1<'_>) -> RResult<Instance, RString> {
    p::create(options, ctx, construct)
}

extern "C" fn create_ext(
    options: RStr<'_>,
    ctx: &CreateCtxV1<'_>,
) -> RResult<Instance, OptionErrorV1> {
    p::create_ext(options, ctx, construct)
}

static TABLE: PluginV1 = p::table("abort_raw", "0.1.0", create);
static EXT: ExtV1 = p::ext_table(create_ext, 0);

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_header() -> PluginHeader {
    p::header()
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_v1() -> PluginDeclV1 {
    p::decl(&TABLE)
}

#[unsafe(no_mangle)]
pub extern "C" fn tamada_plugin_ext_v1() -> ExtDeclV1 {
    p::ext_decl(&EXT)
}
