//! A shared library that is no tamada plugin.
#[unsafe(no_mangle)]
pub extern "C" fn something_else() -> u32 {
    42
}
