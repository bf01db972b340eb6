//! Test plugin that declares the name `echo` a second time.
use tamada_sdk::prelude::*;

struct Dup;
impl Handler for Dup {}

tamada_sdk::export_plugin!(name: "echo", new: |_o: &Options| Ok(Dup));
