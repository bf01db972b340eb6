//! An upstream's response heads, interim ones first: any bytes an
//! upstream sends. What is consumed never passes the input, and the
//! framing of a final head is one the core can pass on.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tamada_proxy::response::{Framing, Parsed, parse};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let upgrade = flags & 2 == 2;
    for _ in 0..32 {
        match parse(rest, head_request, upgrade) {
            Ok(Parsed::Interim(n)) => {
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
            }
            Ok(Parsed::Final(n, h)) => {
                assert!(n <= rest.len());
                assert!((200..1000).contains(&h.status) || h.status == 101);
                if head_request || h.status == 204 || h.status == 304 {
                    assert_eq!(h.framing, Framing::Length(0));
                }
                for (name, _) in &h.headers {
                    let l = name.to_ascii_lowercase();
                    assert!(l != "transfer-encoding" && l != "connection", "{name}");
                }
                return;
            }
            Ok(Parsed::Partial) | Err(_) => return,
        }
    }
});
