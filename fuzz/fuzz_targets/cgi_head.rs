//! A CGI script's response header block (RFC 3875 section 6) and what it
//! means (`Status:`, `Location:`): any bytes a script writes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tamada_gateway::cgi_headers::{Scan, interpret, scan};

fuzz_target!(|data: &[u8]| {
    match scan(data) {
        Scan::Done(headers, used) => {
            assert!(used <= data.len());
            let _ = interpret(headers);
        }
        Scan::Incomplete | Scan::Bad(_) => {}
    }
    // Every prefix of a block the scan takes is incomplete or the same.
    if let Scan::Done(_, used) = scan(data) {
        for cut in [used / 2, used.saturating_sub(1)] {
            assert!(!matches!(scan(&data[..cut]), Scan::Done(_, n) if n > cut));
        }
    }
});
