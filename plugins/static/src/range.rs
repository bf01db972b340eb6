//! `Range: bytes=...` (RFC 9110 section 14).

/// What a Range header asks of a representation of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// Malformed or not `bytes`: ignore it and send 200.
    Ignore,
    /// No range is satisfiable: 416.
    Unsatisfiable,
    /// Inclusive `(first, last)` pairs, sorted and coalesced.
    Parts(Vec<(u64, u64)>),
}

/// Parses and normalises. Overlapping or nearly adjacent ranges are
/// coalesced (gaps under 80 bytes cost more as part headers than as
/// bytes); more than `max` parts after that is treated as an attack on
/// the server and ignored (200), as RFC 9110 section 14.2 allows.
pub fn parse(header: &str, size: u64, max: usize) -> Ranges {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ranges::Ignore;
    };
    let mut parts = Vec::new();
    let mut any = false;
    for item in spec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        any = true;
        let Some((a, b)) = item.split_once('-') else {
            return Ranges::Ignore;
        };
        let (a, b) = (a.trim(), b.trim());
        let num = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                None
            } else {
                s.parse().ok()
            }
        };
        if a.is_empty() {
            // Suffix: the last n bytes.
            let Some(n) = num(b) else {
                return Ranges::Ignore;
            };
            if n > 0 && size > 0 {
                parts.push((size.saturating_sub(n), size - 1));
            }
        } else {
            let Some(first) = num(a) else {
                return Ranges::Ignore;
            };
            let last = if b.is_empty() {
                u64::MAX
            } else {
                match num(b) {
                    Some(l) => l,
                    None => return Ranges::Ignore,
                }
            };
            if last < first {
                return Ranges::Ignore;
            }
            if first < size {
                parts.push((first, last.min(size - 1)));
            }
        }
    }
    if !any {
        return Ranges::Ignore;
    }
    if parts.is_empty() {
        return Ranges::Unsatisfiable;
    }
    parts.sort();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(parts.len());
    for (a, b) in parts {
        match merged.last_mut() {
            Some((_, pb)) if a <= pb.saturating_add(80) => *pb = (*pb).max(b),
            _ => merged.push((a, b)),
        }
    }
    if merged.len() > max {
        return Ranges::Ignore;
    }
    Ranges::Parts(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("bytes=0-9", 100, 8), Ranges::Parts(vec![(0, 9)]));
        assert_eq!(parse("bytes=90-", 100, 8), Ranges::Parts(vec![(90, 99)]));
        assert_eq!(parse("bytes=-10", 100, 8), Ranges::Parts(vec![(90, 99)]));
        assert_eq!(parse("bytes=-1000", 100, 8), Ranges::Parts(vec![(0, 99)]));
        assert_eq!(
            parse("bytes=50-1000", 100, 8),
            Ranges::Parts(vec![(50, 99)])
        );
        assert_eq!(
            parse("bytes=0-0,-1", 10000, 8),
            Ranges::Parts(vec![(0, 0), (9999, 9999)])
        );
        assert_eq!(parse("bytes=100-", 100, 8), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100, 8), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=5-1", 100, 8), Ranges::Ignore);
        assert_eq!(parse("items=0-1", 100, 8), Ranges::Ignore);
        assert_eq!(parse("bytes=a-b", 100, 8), Ranges::Ignore);
        assert_eq!(parse("bytes=", 100, 8), Ranges::Ignore);
        // Overlaps coalesce.
        assert_eq!(
            parse("bytes=0-10,5-20,500-600", 1000, 8),
            Ranges::Parts(vec![(0, 20), (500, 600)])
        );
        // Too many parts: ignored.
        let many: Vec<String> = (0..20)
            .map(|i| format!("{}-{}", i * 1000, i * 1000 + 1))
            .collect();
        assert_eq!(
            parse(&format!("bytes={}", many.join(",")), 100_000, 8),
            Ranges::Ignore
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A parsed Range never yields bytes outside the file: every part
        /// is inside it, the parts are sorted and apart, at most `max`.
        #[test]
        fn ranges_stay_inside_the_file(
            size in 0u64..100_000,
            specs in prop::collection::vec(
                (prop::option::of(0u64..120_000), prop::option::of(0u64..120_000)),
                1..20,
            ),
            max in 1usize..10,
        ) {
            let items: Vec<String> = specs
                .iter()
                .map(|(a, b)| format!(
                    "{}-{}",
                    a.map(|a| a.to_string()).unwrap_or_default(),
                    b.map(|b| b.to_string()).unwrap_or_default()
                ))
                .collect();
            let header = format!("bytes={}", items.join(", "));
            if let Ranges::Parts(parts) = parse(&header, size, max) {
                prop_assert!(!parts.is_empty() && parts.len() <= max);
                let mut prev: Option<u64> = None;
                for &(a, b) in &parts {
                    prop_assert!(a <= b && b < size, "{}: {:?} of {}", header, parts, size);
                    if let Some(p) = prev {
                        prop_assert!(a > p);
                    }
                    prev = Some(b);
                }
            }
        }
    }
}
