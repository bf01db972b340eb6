//! The request head parser and the body framing decision: any bytes a
//! client sends. The head never claims more bytes than it was given, its
//! path is normalised, and the body after it decodes within its framing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tamada::http::Limits;
use tamada::http::request::{Framing, parse};
use tamada::proto::h1::body::BodyState;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_request_line: 8192,
        max_header_size: 32 * 1024,
        max_headers: 100,
    };
    let Ok(Some(head)) = parse(data, &limits) else {
        return;
    };
    assert!(head.head_len <= data.len());
    assert!(
        head.path.starts_with('/') || head.path == "*",
        "{}",
        head.path
    );
    assert!(!head.path.contains('\0'));
    assert!(
        !head.path.split('/').any(|s| s == ".." || s == "."),
        "{}",
        head.path
    );
    // The framing decision, then the body that follows it.
    let mut state = BodyState::new(head.framing, 1 << 20, head.expect_continue);
    let mut rest = &data[head.head_len..];
    let mut out = [0u8; 512];
    let mut made = 0u64;
    while !state.done {
        match state.take(rest, &mut out) {
            Ok((0, 0)) | Err(_) => break,
            Ok((used, n)) => {
                assert!(used <= rest.len() && n <= out.len());
                rest = &rest[used..];
                made += n as u64;
            }
        }
    }
    if let Framing::Length(n) = head.framing {
        assert!(made <= n);
    }
});
