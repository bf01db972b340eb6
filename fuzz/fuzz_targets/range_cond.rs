//! `Range` and the conditional headers: parsed ranges lie inside the file,
//! sorted and apart; no header makes the evaluation panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};
use tamada_static::cond::{Conditions, evaluate};
use tamada_static::range::{Ranges, parse};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[8] % 64);
    let Ok(text) = std::str::from_utf8(&data[9..]) else {
        return;
    };
    if let Ranges::Parts(parts) = parse(text, size, 16) {
        assert!(!parts.is_empty() && parts.len() <= 16);
        let mut prev: Option<u64> = None;
        for &(a, b) in &parts {
            assert!(a <= b && b < size, "{a}-{b} of {size}: {text:?}");
            if let Some(p) = prev {
                assert!(a > p, "{parts:?}");
            }
            prev = Some(b);
        }
    }
    let mut fields = text.split('\n');
    let mut next = || fields.next();
    let c = Conditions {
        if_match: next(),
        if_none_match: next(),
        if_modified_since: next(),
        if_unmodified_since: next(),
        if_range: next(),
        has_range: data[8] & 1 == 1,
        get_or_head: data[8] & 2 == 2,
    };
    let etag = next();
    let _ = evaluate(&c, etag, UNIX_EPOCH + Duration::from_secs(size % (1 << 40)));
});
