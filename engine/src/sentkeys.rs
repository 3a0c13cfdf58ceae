//! What this run of the member sent under each data key, remembered past
//! the key state itself. A member drops key states (a lame duck expires, a
//! ghost is removed, a newer record lacks the key) and a later record may
//! bring the same key back; without this memory it would count that key's
//! ids from the record again and could repeat its own. Part of invariant
//! (a) of docs/SYNC.md: the key states consult it when they are built from a
//! record (`KeyState::copied`), and report to it when they go.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Names a data key: the first 8 bytes of the SHA-256 of its key block.
pub fn fingerprint(key2: &[u8; 256]) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA256, key2);
    u64::from_be_bytes(d.as_ref()[..8].try_into().expect("32 bytes"))
}

/// How long the memory must last: longer than any key lives (a
/// renegotiation every `reneg_sec`, an hour when the server never starts
/// one, plus the hand and transition windows).
pub fn life(reneg_sec: u32) -> Duration {
    Duration::from_secs(2 * u64::from(reneg_sec.max(3600)) + 600)
}

/// Fingerprint -> (last id this run sent, when that was noted).
#[derive(Debug)]
pub struct SentKeys {
    map: HashMap<u64, (u32, Instant)>,
    /// Entries at most (every session's keys fit).
    limit: usize,
    /// How long a key can matter: longer than any key lives.
    life: Duration,
}

impl SentKeys {
    pub fn new(limit: usize, life: Duration) -> SentKeys {
        SentKeys { map: HashMap::new(), limit, life }
    }

    /// The last id this run sent under the key, if it did.
    pub fn get(&self, fp: u64) -> Option<u32> {
        self.map.get(&fp).map(|(id, _)| *id)
    }

    /// What a session reports of its retired keys (`Session::take_sent`).
    pub fn note_all(&mut self, sent: Vec<(u64, u32)>, now: Instant) {
        for (fp, last) in sent {
            self.note(fp, last, now);
        }
    }

    /// A key state that sent up to `last` is going away.
    pub fn note(&mut self, fp: u64, last: u32, now: Instant) {
        let life = self.life;
        self.map.retain(|_, (_, at)| now.saturating_duration_since(*at) < life);
        if self.map.len() >= self.limit && !self.map.contains_key(&fp) {
            // Full even of live entries: the oldest goes (its key is the
            // likeliest to be gone from the cluster).
            if let Some(old) = self.map.iter().min_by_key(|(_, (_, at))| *at).map(|(fp, _)| *fp) {
                self.map.remove(&old);
            }
        }
        let e = self.map.entry(fp).or_insert((last, now));
        *e = (e.0.max(last), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_highest_id_for_its_life_and_within_its_limit() {
        let t0 = Instant::now();
        let mut s = SentKeys::new(2, Duration::from_secs(10));
        let (a, b, c) = (fingerprint(&[1; 256]), fingerprint(&[2; 256]), fingerprint(&[3; 256]));
        assert_ne!(a, b);
        s.note(a, 50, t0);
        s.note(a, 40, t0);
        assert_eq!(s.get(a), Some(50), "never lower");
        s.note(b, 7, t0 + Duration::from_secs(1));
        s.note(c, 9, t0 + Duration::from_secs(2));
        assert_eq!((s.get(a), s.get(b), s.get(c)), (None, Some(7), Some(9)), "the oldest went");
        s.note(c, 10, t0 + Duration::from_secs(12));
        assert_eq!(s.get(b), None, "past its life");
    }
}
