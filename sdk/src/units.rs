//! Sizes and durations as conf.d writes them, for plugin options too:
//! `4096`, `512KiB`, `10MB`, `1GiB`; `5` (seconds), `5s`, `500ms`, `2m`.
//!
//! ```
//! use serde::Deserialize;
//! use tamada_sdk::units::{Secs, Size};
//!
//! #[derive(Deserialize)]
//! struct Opts { buffer: Size, timeout: Secs }
//!
//! let o: Opts = serde_yaml::from_str("{ buffer: 64KiB, timeout: 250ms }").unwrap();
//! assert_eq!(o.buffer.0, 64 << 10);
//! assert_eq!(o.timeout.0, std::time::Duration::from_millis(250));
//! ```

use serde::Deserialize;
use std::time::Duration;

/// A size in bytes, written `1048576`, `512KiB`, `10MB`, `1GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(
    /// Bytes.
    pub u64,
);

const SIZE_HINT: &str = "use 4096, 512KiB, 10MB, 1GiB";
const DURATION_HINT: &str = "use 5, 5s, 500ms, 2m, 1h, 365d";

struct SizeVisitor;

impl<'de> serde::de::Visitor<'de> for SizeVisitor {
    type Value = Size;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a size ({SIZE_HINT})")
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Size, E> {
        Ok(Size(n))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Size, E> {
        u64::try_from(n)
            .map(Size)
            .map_err(|_| E::custom(format!("`{n}` is not a size: {SIZE_HINT}")))
    }
    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Size, E> {
        Err(E::custom(format!("`{f}` is not a size: {SIZE_HINT}")))
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Size, E> {
        parse_size(s).map(Size).map_err(E::custom)
    }
    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Size, E> {
        Err(E::custom(format!("`{b}` is not a size: {SIZE_HINT}")))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Size, A::Error> {
        Err(serde::de::Error::custom(format!(
            "a list is not a size: {SIZE_HINT}"
        )))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Size, A::Error> {
        Err(serde::de::Error::custom(format!(
            "a map is not a size: {SIZE_HINT}"
        )))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Size, E> {
        Err(E::custom(format!(
            "an empty value is not a size: {SIZE_HINT}"
        )))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

/// Parses a size: `4096`, `512KiB`, `10MB`, `1GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: {SIZE_HINT}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => {
            return Err(format!(
                "unknown size unit `{u}` in `{s}` (use B, KB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

/// Parses a duration: `5` (seconds), `5s`, `500ms`, `2m`, `1h`, `365d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration: {DURATION_HINT}");
    let t = s.trim();
    let (num, mult_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1u64)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000)
    } else if let Some(n) = t.strip_suffix('d') {
        (n, 86_400_000)
    } else {
        (t, 1000)
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    Ok(Duration::from_millis(n.saturating_mul(mult_ms)))
}

/// A duration, written `5` (seconds), `5s`, `500ms`, `2m`, `1h`, `365d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(
    /// The duration.
    pub Duration,
);

struct SecsVisitor;

impl<'de> serde::de::Visitor<'de> for SecsVisitor {
    type Value = Secs;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a duration ({DURATION_HINT})")
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Secs, E> {
        Ok(Secs(Duration::from_secs(n)))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Secs, E> {
        u64::try_from(n)
            .map(|n| Secs(Duration::from_secs(n)))
            .map_err(|_| E::custom(format!("`{n}` is not a duration: {DURATION_HINT}")))
    }
    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Secs, E> {
        if f.is_finite() && f >= 0.0 {
            Ok(Secs(Duration::from_secs_f64(f)))
        } else {
            Err(E::custom(format!(
                "`{f}` is not a duration: {DURATION_HINT}"
            )))
        }
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Secs, E> {
        parse_duration(s).map(Secs).map_err(E::custom)
    }
    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Secs, E> {
        Err(E::custom(format!(
            "`{b}` is not a duration: {DURATION_HINT}"
        )))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Secs, A::Error> {
        Err(serde::de::Error::custom(format!(
            "a list is not a duration: {DURATION_HINT}"
        )))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Secs, A::Error> {
        Err(serde::de::Error::custom(format!(
            "a map is not a duration: {DURATION_HINT}"
        )))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Secs, E> {
        Err(E::custom(format!(
            "an empty value is not a duration: {DURATION_HINT}"
        )))
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecsVisitor)
    }
}

/// Written back as conf.d would write it (`64KiB`, `1GiB`, or bytes):
/// a schema shows an option's default this way.
impl serde::Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0;
        for (unit, suffix) in [
            (1u64 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ] {
            if n >= unit && n.is_multiple_of(unit) {
                return s.serialize_str(&format!("{}{suffix}", n / unit));
            }
        }
        s.serialize_u64(n)
    }
}

/// Written back as conf.d would write it (`30s`, `250ms`, `2m`, `1h`,
/// `7d`): a schema shows an option's default this way.
impl serde::Serialize for Secs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        for (unit, suffix) in [
            (86_400_000u128, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ] {
            if ms >= unit && ms.is_multiple_of(unit) {
                return s.serialize_str(&format!("{}{suffix}", ms / unit));
            }
        }
        s.serialize_str(&format!("{ms}ms"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_back_as_conf_d_writes_them() {
        let size = |n| serde_yaml::to_string(&Size(n)).unwrap();
        assert_eq!(size(64 << 10), "64KiB\n");
        assert_eq!(size(3 << 30), "3GiB\n");
        assert_eq!(size(1000), "1000\n");
        assert_eq!(size(0), "0\n");
        let secs = |d| serde_yaml::to_string(&Secs(d)).unwrap();
        assert_eq!(secs(Duration::from_secs(30)), "30s\n");
        assert_eq!(secs(Duration::from_millis(250)), "250ms\n");
        assert_eq!(secs(Duration::from_secs(7 * 86_400)), "7d\n");
        assert_eq!(secs(Duration::from_secs(90)), "90s\n");
        assert_eq!(secs(Duration::ZERO), "0ms\n");
        // And they read back.
        let back: Size = serde_yaml::from_str("64KiB").unwrap();
        assert_eq!(back, Size(64 << 10));
        let back: Secs = serde_yaml::from_str("7d").unwrap();
        assert_eq!(back.0, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(
            parse_duration("365d").unwrap(),
            Duration::from_secs(365 * 86_400)
        );
        assert!(parse_duration("soon").is_err());
    }

    /// Regression: `-5` and `[2]` were "data did not match any variant of
    /// untagged enum Raw".
    #[test]
    fn wrong_values_say_what_was_expected() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct O {
            size: Option<Size>,
            delay: Option<Secs>,
        }
        let err = |y: &str| serde_yaml::from_str::<O>(y).unwrap_err().to_string();
        let e = err("size: -5");
        assert!(
            e.starts_with("size: `-5` is not a size: use 4096, 512KiB, 10MB, 1GiB"),
            "{e}"
        );
        let e = err("delay: [2]");
        assert!(
            e.starts_with("delay: a list is not a duration: use 5, 5s, 500ms, 2m"),
            "{e}"
        );
        let e = err("delay: soon");
        assert!(e.contains("`soon` is not a duration"), "{e}");
        let e = err("size: 12 parsecs");
        assert!(e.contains("unknown size unit `parsecs`"), "{e}");
        assert!(!err("size: true").contains("variant"));
    }
}
