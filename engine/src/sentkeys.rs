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

/// How often expired entries are swept at most: a sweep visits every
/// entry, and a burst of retiring keys (a renegotiation wave, a failover)
/// would otherwise make each note cost the whole table. A life is hours,
/// so an entry kept a second too long changes nothing.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Fingerprint -> (last id this run sent, when that was noted).
#[derive(Debug)]
pub struct SentKeys {
    map: HashMap<u64, (u32, Instant)>,
    /// Entries at most (every session's keys fit).
    limit: usize,
    /// How long a key can matter: longer than any key lives.
    life: Duration,
    /// When expired entries were last swept out.
    pruned: Option<Instant>,
}

impl SentKeys {
    pub fn new(limit: usize, life: Duration) -> SentKeys {
        SentKeys { map: HashMap::new(), limit, life, pruned: None }
    }

    /// Sweeps expired entries out, at most once per [`PRUNE_EVERY`] unless
    /// the table is full (then an expired entry must go before a live one).
    fn prune(&mut self, now: Instant) {
        let due = self.pruned.is_none_or(|t| now.saturating_duration_since(t) >= PRUNE_EVERY);
        if !due && self.map.len() < self.limit {
            return;
        }
        let life = self.life;
        self.map.retain(|_, (_, at)| now.saturating_duration_since(*at) < life);
        self.pruned = Some(now);
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
        self.prune(now);
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

    #[test]
    fn expired_keys_are_swept_once_a_second_not_on_every_note() {
        let t0 = Instant::now();
        let life = Duration::from_secs(10);
        let ms = Duration::from_millis;
        let mut s = SentKeys::new(10_000, life);
        for i in 0..1000u64 {
            s.note(i, 1, t0);
        }
        s.note(1000, 1, t0 + ms(1000));
        assert_eq!(s.map.len(), 1001);
        // Past the life of the first thousand: the next note sweeps them.
        s.note(1001, 1, t0 + life + ms(500));
        assert_eq!(s.map.len(), 2, "the expired keys are forgotten");
        assert_eq!((s.get(3), s.get(1000)), (None, Some(1)));
        // Key 1000 expires now, but the last sweep was 0.7 s ago: kept...
        s.note(1002, 1, t0 + life + ms(1200));
        assert_eq!(s.map.len(), 3, "no sweep within PRUNE_EVERY");
        // ...until the next sweep, a second after the last.
        s.note(1003, 1, t0 + life + ms(1600));
        assert_eq!((s.get(1000), s.get(1001), s.get(1003)), (None, Some(1), Some(1)));
        assert_eq!(s.map.len(), 3);
    }

    #[test]
    fn a_full_table_sweeps_before_it_evicts_a_live_key() {
        let t0 = Instant::now();
        let mut s = SentKeys::new(3, Duration::from_secs(10));
        s.note(1, 1, t0);
        s.note(2, 2, t0);
        s.note(3, 3, t0 + Duration::from_millis(9500));
        // Within a second of the last sweep, but full: it sweeps keys 1 and
        // 2 (expired) instead of evicting one of them and keeping the other.
        s.note(4, 4, t0 + Duration::from_millis(10_100));
        assert_eq!(s.map.len(), 2);
        assert_eq!((s.get(1), s.get(2), s.get(3), s.get(4)), (None, None, Some(3), Some(4)));
    }
}
