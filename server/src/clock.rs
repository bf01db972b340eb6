//! The loop's clock: the time as of the event loop's last wake-up, read
//! once per turn (timers, `Date:`, log timestamps).

use std::cell::Cell;
use std::time::{Instant, SystemTime};

thread_local! {
    /// The time as of the event loop's last wake-up (`None` off a loop).
    static NOW: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
}

/// Called by an event loop each time `poll` returns. PERF: a request
/// read, answered and logged in one turn asked the clock eight times;
/// the loop's turns are short, so its wake-up time serves for timers,
/// `Date:` and log timestamps (durations still use the real clock).
pub fn tick() {
    NOW.with(|n| n.set(Some((Instant::now(), SystemTime::now()))));
}

/// Now, as of this loop's last wake-up (the real clock off a loop).
pub fn now() -> Instant {
    NOW.with(|n| n.get()).map_or_else(Instant::now, |(i, _)| i)
}

/// The wall clock, as of this loop's last wake-up.
pub fn wall() -> SystemTime {
    NOW.with(|n| n.get())
        .map_or_else(SystemTime::now, |(_, w)| w)
}

/// A time in microseconds since the Unix epoch.
pub fn unix_us_at(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
