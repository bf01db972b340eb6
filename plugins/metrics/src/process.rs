//! `process_start_time_seconds`: when the server process started.
//!
//! Prometheus tells a restart from a counter that merely went down by this
//! value changing. It must be the *process's* start, not the plugin's:
//! the registry lives exactly as long as the process (see `registry.rs`),
//! so the two reset together. Linux records the start in
//! `/proc/self/stat` (clock ticks after boot) and the boot time in
//! `/proc/stat`; the official Go client reads the same two files.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Clock ticks per second as `/proc` counts them (`USER_HZ`). The kernel
/// fixes it at 100 for user space on every architecture tamada runs on;
/// asking `sysconf(_SC_CLK_TCK)` would need `libc` and `unsafe` for the
/// same answer (Prometheus' `procfs` hard-codes 100 too).
const USER_HZ: f64 = 100.0;

/// Seconds since the Unix epoch, read once.
pub fn start_time() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| {
        from_proc().unwrap_or_else(|| {
            // Not Linux, or /proc is not mounted: the first scrape comes
            // soon after start-up, and a stable value is what matters.
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        })
    })
}

fn from_proc() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    Some(boot_time(&boot)? as f64 + start_ticks(&stat)? as f64 / USER_HZ)
}

/// Field 22 (`starttime`) of `/proc/self/stat`. Field 2 is the command
/// name in parentheses and may itself contain spaces and `)`, so count
/// fields from the *last* `)`.
fn start_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: field 22 is the 20th.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The `btime` line of `/proc/stat`: boot time, seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_files() {
        let stat =
            "4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 9 0 123456 1000 10";
        assert_eq!(start_ticks(stat), Some(123456));
        assert_eq!(start_ticks("garbage"), None);
        let boot = "cpu  1 2 3\nintr 5\nbtime 1764100000\nprocesses 99\n";
        assert_eq!(boot_time(boot), Some(1_764_100_000));
        assert_eq!(boot_time("cpu 1\n"), None);
    }

    #[test]
    fn the_start_is_in_the_past_and_stable() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let t = start_time();
        assert!(t > 1e9 && t <= now + 1.0, "{t} vs now {now}");
        assert_eq!(t, start_time());
    }
}
