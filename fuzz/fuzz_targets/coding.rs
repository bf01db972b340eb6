//! `Accept-Encoding` (q-values, `*`, `identity`), as the static and
//! compress plugins negotiate it, and entity-tag lists (`If-None-Match`)
//! with the suffixes of compressed representations.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tamada_coding::{Accept, Coding, is_coded_tag, tag_for, tags, untag};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (ae, list) = text.split_once('\n').unwrap_or((text, text));
    let a = Accept::parse(Some(ae));
    for order in [&Coding::ALL[..], &[Coding::Gzip][..], &[Coding::Br, Coding::Zstd][..]] {
        let pref = a.preference(order);
        // Only offered codings, each once, each with a weight above 0.
        assert!(pref.iter().all(|c| order.contains(c) && a.weight(*c) > 0));
        assert!(pref.windows(2).all(|w| a.weight(w[0]) >= a.weight(w[1])));
        assert_eq!(a.choose(order), pref.first().copied());
    }
    let _ = a.refuses_identity();
    for t in tags(list) {
        assert!(!t.is_empty() && t.trim() == t);
        for c in Coding::ALL {
            if let Some(tagged) = tag_for(t, c) {
                // A tag made for a coding is that coding's, and comes back.
                assert!(is_coded_tag(&tagged));
                assert_eq!(untag(&tagged, c).as_deref(), Some(t));
            }
        }
    }
});
