//! What the load generator measures: per client, when its session came
//! up and the longest silence of the server after that; in all, the
//! handshakes, refusals, replays and restarts.

use std::io::Write;
use std::time::{Duration, Instant};

use vpnsyncd_engine::client::Client;

/// One client and what was seen of it.
pub struct Slot {
    pub client: Client,
    started: Instant,
    up_at: Option<Instant>,
    last_answer: Instant,
    /// The longest time between two datagrams of the server while up.
    max_gap: Duration,
    /// Control messages already looked at.
    seen: usize,
    /// AUTH_FAILED or RESTART: the session is over.
    ended: bool,
}

impl Slot {
    pub fn new(client: Client, now: Instant) -> Slot {
        Slot { client, started: now, up_at: None, last_answer: now, max_gap: Duration::ZERO, seen: 0, ended: false }
    }

    /// Its session came up (and has not ended).
    pub fn is_up(&self) -> bool {
        self.up_at.is_some() && !self.ended
    }

    /// A datagram of the server arrived.
    pub fn answered(&mut self, now: Instant) {
        if self.up_at.is_some() {
            self.max_gap = self.max_gap.max(now.duration_since(self.last_answer));
        }
        self.last_answer = now;
    }

    /// Looks at what the client learned; true once when its session is up.
    pub fn note_progress(&mut self, now: Instant, report: &mut Report) -> bool {
        for m in &self.client.messages[self.seen..] {
            if m.starts_with("AUTH_FAILED") {
                report.refusals += 1;
                self.ended = true;
            } else if m.starts_with("RESTART") {
                self.ended = true;
            }
        }
        self.seen = self.client.messages.len();
        if self.up_at.is_none() && self.client.connected() {
            self.up_at = Some(now);
            self.last_answer = now;
            return true;
        }
        false
    }

    /// A stock client would start over: its handshake took longer than
    /// `hand_window`, the server fell silent for its `ping-restart`, or
    /// the server ended the session.
    pub fn must_restart(&self, now: Instant, hand_window: Duration, default_restart: Duration) -> bool {
        let silence = now.duration_since(self.last_answer);
        match self.up_at {
            _ if self.ended => true,
            None => now.duration_since(self.started) > hand_window,
            Some(_) => silence > self.ping_restart().unwrap_or(default_restart),
        }
    }

    fn ping_restart(&self) -> Option<Duration> {
        let options = &self.client.pushed.as_ref()?.options;
        options.iter().find_map(|o| o.strip_prefix("ping-restart ")?.parse().ok().map(Duration::from_secs))
    }

    pub fn restart(&mut self, client: Client, now: Instant, report: &mut Report) {
        report.restarts += 1;
        report.add_counters(&self.client);
        report.longest_gap(self.final_gap(now));
        *self = Slot::new(client, now);
    }

    /// The longest silence, the one still going on included.
    fn final_gap(&self, now: Instant) -> Option<Duration> {
        self.up_at.map(|_| self.max_gap.max(now.duration_since(self.last_answer)))
    }
}

pub struct Report {
    clients: usize,
    handshakes: usize,
    last_handshake: Duration,
    refusals: usize,
    control_rejected: usize,
    data_rejected: usize,
    replays: usize,
    restarts: usize,
    /// Per client (and per ended session of one), the longest gap.
    gaps: Vec<Duration>,
}

impl Report {
    pub fn new(clients: usize) -> Report {
        Report {
            clients,
            handshakes: 0,
            last_handshake: Duration::ZERO,
            refusals: 0,
            control_rejected: 0,
            data_rejected: 0,
            replays: 0,
            restarts: 0,
            gaps: Vec::new(),
        }
    }

    /// A session came up `at` after the start. When all are up, says so
    /// at once, with the Unix time (a benchmark waits for that line to
    /// measure the idle server, or the sync of the last session).
    pub fn up(&mut self, at: Duration) {
        self.handshakes += 1;
        self.last_handshake = at;
        if self.handshakes == self.clients {
            println!("all_up_seconds {:.3}", at.as_secs_f64());
            // The wall clock too: a bench measures from the last handshake.
            let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            println!("all_up_unix {:.3}", unix.as_secs_f64());
            let _ = std::io::stdout().flush();
        }
    }

    /// Once a second: `progress SECONDS SESSIONS-UP-SO-FAR`, so a benchmark
    /// sees when the handshakes stop coming.
    pub fn progress(&self, at: Duration) {
        println!("progress {:.1} {}", at.as_secs_f64(), self.handshakes);
        let _ = std::io::stdout().flush();
    }

    fn add_counters(&mut self, c: &Client) {
        self.control_rejected += c.control_rejected;
        self.data_rejected += c.data_rejected;
        self.replays += c.replays;
    }

    fn longest_gap(&mut self, gap: Option<Duration>) {
        self.gaps.extend(gap);
    }

    /// Prints the report.
    pub fn finish(mut self, slots: &[Slot], elapsed: Duration) {
        let now = Instant::now();
        let up = slots.iter().filter(|s| s.up_at.is_some() && !s.ended).count();
        for s in slots {
            self.add_counters(&s.client);
            self.longest_gap(s.final_gap(now));
        }
        self.gaps.sort();
        let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let secs = self.last_handshake.as_secs_f64();
        println!("clients {}", self.clients);
        println!("sessions_up {up}");
        println!("handshakes {}", self.handshakes);
        println!("handshake_seconds {secs:.3}");
        println!("handshakes_per_second {:.1}", if secs > 0.0 { self.handshakes as f64 / secs } else { 0.0 });
        println!("gap_max_ms {:.0}", ms(self.gaps.last()));
        println!("gap_median_ms {:.0}", ms(self.gaps.get(self.gaps.len() / 2)));
        println!("refusals {}", self.refusals);
        println!("control_rejected {}", self.control_rejected);
        println!("data_rejected {}", self.data_rejected);
        println!("replays {}", self.replays);
        println!("restarts {}", self.restarts);
        println!("elapsed_seconds {:.1}", elapsed.as_secs_f64());
        println!("cpu_seconds {:.2}", cpu_seconds());
    }
}

/// User and system CPU time of this process.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
