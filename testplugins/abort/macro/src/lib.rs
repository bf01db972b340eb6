//! Must not compile: `export_plugin!` under `panic = "abort"`.
use tamada_sdk::prelude::*;

struct Never;
impl Handler for Never {}

tamada_sdk::export_plugin!(name: "abort_macro", new: |_o: &Options| Ok(Never));
