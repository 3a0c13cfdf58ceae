//! Rate limits for log lines that outside input triggers once per packet
//! (a refused first packet, a full server): a flood of datagrams must not
//! become a flood of log lines. One line per reason per second goes out,
//! with the count of lines it stands for; the total is in `show summary`.

use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(1);

/// Per-packet events of one kind: counted always, logged at most once per
/// second.
#[derive(Debug, Default)]
pub struct Quiet {
    last: Option<Instant>,
    /// Events since the last line that went out.
    held: u64,
    /// Every event, for `show summary`.
    pub total: u64,
}

impl Quiet {
    /// Counts an event; returns the number of events the caller's log
    /// line stands for (this one and those held back since the last line),
    /// or `None` when the line must be left out.
    pub fn event(&mut self, now: Instant) -> Option<u64> {
        self.total += 1;
        self.held += 1;
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// " (and N more like it)" for a line that stands for `n` events.
pub fn more(n: u64) -> String {
    if n > 1 {
        format!(" (and {} more like it in the last second)", n - 1)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second_with_the_count() {
        let t0 = Instant::now();
        let mut q = Quiet::default();
        assert_eq!(q.event(t0), Some(1));
        let lines: Vec<_> = (1..=1000u64).filter_map(|i| q.event(t0 + Duration::from_millis(i))).collect();
        assert_eq!(lines, vec![1000], "999 held back, then one line for them all at 1 s");
        assert_eq!(q.total, 1001);
        assert_eq!(more(1), "");
        assert_eq!(more(3), " (and 2 more like it in the last second)");
    }
}
