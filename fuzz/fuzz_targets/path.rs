//! Path normalisation and the static plugin's document-root mapping: a
//! normalised path has no dot segment, no NUL and starts at the root, and
//! joined to a root it never names anything outside it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};
use tamada::http::path::normalise;
use tamada_static::resolve::check_components;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = normalise(raw) else {
        return;
    };
    assert!(p.starts_with('/'), "{p:?}");
    assert!(!p.contains('\0'), "{p:?}");
    assert!(!p.split('/').any(|s| s == "." || s == ".."), "{p:?}");
    // Stable: normalising a result again changes nothing, unless it holds
    // a `%` (decoded from `%25`: it would be decoded a second time, which
    // is why the core normalises once).
    if !p.contains('%') {
        assert_eq!(normalise(&p).as_deref(), Ok(p.as_str()));
    }
    let rel = p.trim_start_matches('/');
    if check_components(rel, true).is_ok() {
        let joined = Path::new("/srv/root").join(rel);
        let mut depth: i64 = 0;
        for c in joined.components().skip(3) {
            match c {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                _ => {}
            }
            assert!(depth >= 0, "{p:?} climbs out of the root");
        }
        assert!(joined.starts_with("/srv/root"));
    }
});
