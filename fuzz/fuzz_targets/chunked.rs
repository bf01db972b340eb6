//! The core's chunked decoder, fed in pieces whose sizes come from the
//! input: it never makes more body than it was given bytes, never reads
//! past its input, and gives the same body whatever the split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tamada::http::chunked::Decoder;

fn decode(input: &[u8], step: usize, out_len: usize) -> Result<(Vec<u8>, bool), ()> {
    let mut d = Decoder::default();
    let mut body = Vec::new();
    let mut out = vec![0u8; out_len];
    let mut at = 0;
    while at < input.len() && !d.is_done() {
        let end = (at + step).min(input.len());
        let mut piece = &input[at..end];
        loop {
            let (used, n) = d.decode(piece, &mut out).map_err(|_| ())?;
            assert!(used <= piece.len() && n <= out.len());
            body.extend_from_slice(&out[..n]);
            piece = &piece[used..];
            at += used;
            if d.is_done() || (used == 0 && n == 0) || piece.is_empty() {
                break;
            }
        }
        if !piece.is_empty() && !d.is_done() {
            // Stuck on a piece it did not take: it must be waiting for
            // more after it, so give it the rest at once.
            at = end;
        }
    }
    Ok((body, d.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, input)) = data.split_first() else {
        return;
    };
    let step = 1 + (k as usize % 17);
    let out_len = 1 + (k as usize / 17 % 9);
    let whole = decode(input, input.len().max(1), 4096);
    let split = decode(input, step, out_len);
    if let (Ok((a, true)), Ok((b, true))) = (&whole, &split) {
        assert_eq!(a, b);
    }
    if let Ok((body, _)) = &whole {
        assert!(body.len() <= input.len());
    }
});
