//! Log lines that an attacker can cause by the thousand (a refused PROXY
//! protocol connection) are summarised: the first of each second is
//! written, the rest are counted, and the count goes out with the next
//! line, or from the loops' sweep once the second is over.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one kind of line is written at most.
const WINDOW: Duration = Duration::from_secs(1);

/// One kind of line.
pub struct RateLog {
    /// When the last line was written, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for RateLog {
    fn default() -> Self {
        RateLog::new()
    }
}

impl RateLog {
    pub const fn new() -> RateLog {
        RateLog {
            state: Mutex::new((None, 0)),
        }
    }

    /// Another occurrence: `Some(held)` when it is to be written now
    /// (with the number held back since the last line), else `None`.
    pub fn hit(&self, now: Instant) -> Option<u64> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match g.0 {
            Some(t) if now.duration_since(t) < WINDOW => {
                g.1 += 1;
                None
            }
            _ => {
                let held = std::mem::take(&mut g.1);
                g.0 = Some(now);
                Some(held)
            }
        }
    }

    /// The number held back, once their second is over (then reset).
    pub fn overdue(&self, now: Instant) -> Option<u64> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match g.0 {
            Some(t) if g.1 > 0 && now.duration_since(t) >= WINDOW => {
                g.0 = None;
                Some(std::mem::take(&mut g.1))
            }
            _ => None,
        }
    }
}

/// Connections refused on a PROXY protocol listener (from an untrusted
/// address, or without a valid header).
pub static PROXY_REFUSED: RateLog = RateLog::new();

/// Logs a refused PROXY protocol connection, at most one line a second.
pub fn proxy_refused(line: impl FnOnce() -> String) {
    if let Some(held) = PROXY_REFUSED.hit(Instant::now()) {
        if held > 0 {
            log::warn!("{} ({held} more refused in the second before)", line());
        } else {
            log::warn!("{}", line());
        }
    }
}

/// From the loops' sweep: the count of lines held back, once due.
pub fn flush() {
    if let Some(n) = PROXY_REFUSED.overdue(Instant::now()) {
        log::warn!("{n} more connection(s) refused on PROXY protocol listeners in the last second");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_the_rest_counted() {
        let r = RateLog::new();
        let t = Instant::now();
        assert_eq!(r.hit(t), Some(0));
        for i in 0..1999 {
            assert_eq!(r.hit(t + Duration::from_micros(i)), None);
        }
        assert_eq!(r.overdue(t + Duration::from_millis(500)), None);
        assert_eq!(r.hit(t + Duration::from_millis(1001)), Some(1999));
        assert_eq!(r.hit(t + Duration::from_millis(1002)), None);
        assert_eq!(r.overdue(t + Duration::from_millis(2100)), Some(1));
        assert_eq!(r.overdue(t + Duration::from_millis(2200)), None);
        assert_eq!(r.hit(t + Duration::from_millis(2300)), Some(0));
    }
}
