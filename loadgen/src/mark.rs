//! The marked instant of `--mark-file` (a failover bench writes the Unix
//! time of its power cut there) and what the clients saw after it: per
//! client, the time from the mark to its first echo answered after it
//! (`--ping-interval`), and the renegotiations per second after it (the
//! new master's rekeys of copied keys over `rekey-window`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::probe::Probe;

/// Waits for the mark file and turns its Unix time into an instant.
pub struct Mark {
    file: PathBuf,
    pub at: Option<Instant>,
}

impl Mark {
    pub fn new(file: PathBuf) -> Mark {
        Mark { file, at: None }
    }

    /// Looks for the file; true once, when the mark is set. A file that
    /// exists must hold a Unix time (write it elsewhere and rename it, so
    /// that it is never read half written).
    pub fn poll(&mut self) -> Result<bool, String> {
        if self.at.is_some() {
            return Ok(false);
        }
        let text = match std::fs::read_to_string(&self.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(format!("{}: {e}", self.file.display())),
        };
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.at = Some(instant_of(&text, unix, Instant::now()).map_err(|e| format!("{}: {e}", self.file.display()))?);
        Ok(true)
    }
}

/// The instant of the Unix time in `text`, given the Unix time `unix` of
/// the instant `now`.
fn instant_of(text: &str, unix: f64, now: Instant) -> Result<Instant, String> {
    let t: f64 = match text.trim().parse() {
        Ok(t) if t > 0.0 && f64::is_finite(t) => t,
        _ => return Err(format!("not a Unix time: \"{}\"", text.trim())),
    };
    let ago = Duration::try_from_secs_f64((unix - t).abs()).map_err(|e| e.to_string())?;
    let at = if t <= unix { now.checked_sub(ago) } else { now.checked_add(ago) };
    at.ok_or_else(|| format!("Unix time {t} is out of range"))
}

/// What the clients saw after the mark.
pub struct AfterMark {
    at: Instant,
    /// Renegotiations completed in each second after the mark, bounded by
    /// the run's duration (one counter a second).
    rekeys: Vec<usize>,
    all_said: bool,
}

impl AfterMark {
    pub fn new(at: Instant, duration: Duration) -> AfterMark {
        AfterMark { at, rekeys: vec![0; duration.as_secs() as usize + 1], all_said: false }
    }

    /// A client's data went out under a new key: a renegotiation.
    pub fn rekeyed(&mut self, now: Instant) {
        let s = now.saturating_duration_since(self.at).as_secs() as usize;
        if let Some(n) = self.rekeys.get_mut(s) {
            *n += 1;
        }
    }

    /// When every client measured has resumed, says so at once (a bench
    /// waits for that line).
    pub fn check_all(&mut self, probes: &[Probe]) {
        if self.all_said || probes.iter().any(|p| p.armed && p.resumed.is_none()) {
            return;
        }
        self.all_said = true;
        let last = probes.iter().filter_map(|p| p.resumed).max().unwrap_or(self.at);
        println!("all_resumed_seconds {:.3}", last.saturating_duration_since(self.at).as_secs_f64());
        let _ = std::io::stdout().flush();
    }

    /// Prints the report lines, and into `resume_file` every measured
    /// client's time to resume in ms ("never" if it did not).
    pub fn finish(&self, probes: &[Probe], resume_file: Option<&Path>) -> Result<(), String> {
        let resume: Vec<Option<Duration>> = probes
            .iter()
            .filter(|p| p.armed)
            .map(|p| p.resumed.map(|r| r.saturating_duration_since(self.at)))
            .collect();
        let mut done: Vec<Duration> = resume.iter().flatten().copied().collect();
        done.sort();
        let ms = |q: f64| {
            done.get(((done.len() as f64 * q) as usize).min(done.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!("mark_clients {}", resume.len());
        println!("resumed {}", done.len());
        println!("resume_median_ms {:.0}", ms(0.5));
        println!("resume_p99_ms {:.0}", ms(0.99));
        println!("resume_max_ms {:.0}", done.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0));
        let used = self.rekeys.iter().rposition(|&n| n > 0).map_or(0, |i| i + 1);
        let per_s: Vec<String> = self.rekeys[..used].iter().map(usize::to_string).collect();
        println!("rekeys_after_mark {}", self.rekeys.iter().sum::<usize>());
        println!("rekeys_per_second {}", per_s.join(","));
        if let Some(path) = resume_file {
            let lines: String = resume
                .iter()
                .map(|r| r.map_or("never\n".to_string(), |d| format!("{:.0}\n", d.as_secs_f64() * 1000.0)))
                .collect();
            std::fs::write(path, lines).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_time_becomes_the_instant_it_names() {
        let now = Instant::now() + Duration::from_secs(100);
        assert_eq!(instant_of("1000.5\n", 1002.0, now).unwrap(), now - Duration::from_millis(1500));
        assert_eq!(instant_of("1003", 1002.0, now).unwrap(), now + Duration::from_secs(1));
        for bad in ["", "soon", "-5", "inf", "NaN"] {
            let e = instant_of(bad, 1002.0, now).unwrap_err();
            assert!(e.contains("not a Unix time"), "{bad}: {e}");
        }
    }

    #[test]
    fn resumes_and_rekeys_are_counted_after_the_mark() {
        let at = Instant::now();
        let mut after = AfterMark::new(at, Duration::from_secs(5));
        let mut probes: Vec<Probe> = (0..3).map(|_| Probe::new()).collect();
        probes[0].armed = true;
        probes[1].armed = true;
        probes[0].resumed = Some(at + Duration::from_millis(700));
        after.check_all(&probes);
        assert!(!after.all_said, "client 1 has not resumed");
        probes[1].resumed = Some(at + Duration::from_millis(900));
        after.check_all(&probes);
        assert!(after.all_said, "client 2 is not measured: it was not up at the mark");
        after.rekeyed(at + Duration::from_millis(1200));
        after.rekeyed(at + Duration::from_millis(1900));
        after.rekeyed(at + Duration::from_secs(3600));
        assert_eq!(after.rekeys[..3], [0, 2, 0]);
        assert_eq!(after.rekeys.iter().sum::<usize>(), 2, "beyond the run's duration is not counted");
        let file = std::env::temp_dir().join(format!("loadgen-resume-{}", std::process::id()));
        probes[1].resumed = None;
        after.finish(&probes, Some(&file)).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "700\nnever\n");
        let _ = std::fs::remove_file(file);
    }
}
