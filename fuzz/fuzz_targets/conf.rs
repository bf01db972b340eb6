//! conf.d loading: any text as `server.yaml` and as a vhost file gives a
//! configuration or an error naming the file, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tamada::config::{parse_settings, parse_vhost};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/nonexistent/conf.d/site.yaml");
    if let Err(e) = parse_settings(Path::new("/nonexistent/conf.d/server.yaml"), text) {
        assert!(e.to_string().contains("server.yaml"));
    }
    if let Err(e) = parse_vhost(file, text.to_owned()) {
        assert!(e.to_string().contains("site.yaml"));
    }
});
