//! FastCGI records from an application (php-fpm or anything listening):
//! split one by one, STDOUT gathered and scanned as a CGI header block.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tamada_fastcgi::record::split;
use tamada_gateway::cgi_headers::scan;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut stdout = Vec::new();
    while let Ok(Some((h, whole))) = split(rest) {
        assert!(whole >= 8 && whole <= rest.len());
        assert_eq!(whole, 8 + h.len + h.pad);
        if h.ty == 6 {
            stdout.extend_from_slice(&rest[8..8 + h.len]);
        }
        rest = &rest[whole..];
    }
    let _ = scan(&stdout);
});
