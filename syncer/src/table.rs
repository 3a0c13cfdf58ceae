//! The session table every member keeps, whatever its role, so that any
//! complete member can answer a bulk request (the master may be the one
//! that is restarting).
//!
//! Every entry carries the generation of its record (engine/src/replication.rs):
//! an update is applied only if it is newer, so delayed, duplicated or
//! reordered datagrams never move an entry back. A deleted session leaves
//! a tombstone for [`TOMBSTONE_LIFE`], so that a late upsert cannot bring
//! it back. Entries that nobody refreshes expire (see [`Table::expire`]),
//! and the table keeps a digest of (id, generation) pairs that members
//! compare in their heartbeats.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::proto::{Msg, Packer, SessionId, TooLarge};

/// How long a delete is remembered against late upserts.
pub const TOMBSTONE_LIFE: Duration = Duration::from_secs(60);

/// One session: its last full record and the latest progress after it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    gen: u64,
    record: Vec<u8>,
    progress: Option<Vec<u8>>,
    refreshed: Instant,
    /// From our own engine: a session this member serves.
    own: bool,
}

/// Where an update comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Our engine, about sessions it serves.
    Engine,
    /// A peer; `master` tells whether we are master now, when our own
    /// sessions' entries are not the peer's to change. What a peer that is
    /// master too (a split brain) says of them is not even for our engine:
    /// both would pass each other's counters and generations for ever.
    Peer { master: bool, from_master: bool },
}

/// What an update did to the table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The part of the update that changed the table (for the engine).
    pub changed: Option<Msg>,
    /// Sessions whose record we lack or hold in an older generation than
    /// their progress: to ask for again.
    pub wanted: Vec<SessionId>,
    /// A new session did not fit ([`Table::new`]'s limit).
    pub full: bool,
}

#[derive(Debug)]
pub struct Table {
    entries: BTreeMap<SessionId, Entry>,
    /// Deleted sessions: the generation deleted and until when.
    tombstones: BTreeMap<SessionId, (u64, Instant)>,
    digest: u64,
    limit: usize,
}

/// An entry's share of the digest (splitmix64 of id and generation).
fn mix(id: SessionId, gen: u64) -> u64 {
    let mut z = id ^ gen.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Table {
    /// A table of at most `limit` sessions (new ones beyond are refused).
    pub fn new(limit: usize) -> Table {
        Table { entries: BTreeMap::new(), tombstones: BTreeMap::new(), digest: 0, limit }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// XOR of every entry's (id, generation) share: equal tables have
    /// equal digests, and one missing, extra or older entry changes it.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    fn remove(&mut self, id: SessionId) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        self.digest ^= mix(id, e.gen);
        Some(e)
    }

    /// Applies an update at `now`; see [`Applied`].
    pub fn apply(&mut self, msg: Msg, src: Source, now: Instant) -> Applied {
        let mut out = Applied::default();
        let own = src == Source::Engine;
        let guarded = |e: &Entry| matches!(src, Source::Peer { master: true, .. }) && e.own;
        let deaf = |e: &Entry| guarded(e) && src == Source::Peer { master: true, from_master: true };
        match msg {
            Msg::Upsert { id, gen, record } => {
                let buried = self.tombstones.get(&id).is_some_and(|(g, _)| *g >= gen);
                match self.entries.get(&id) {
                    // Our engine decides what a newer record of a session
                    // it serves means (crate::replication, Offer::Live).
                    // Our engine takes a key the other agreed with the
                    // client (Session::adopt), whatever the generation.
                    Some(e) if guarded(e) => out.changed = Some(Msg::Upsert { id, gen, record }),
                    _ if buried && !own => {}
                    Some(e) if e.gen >= gen => {}
                    None if self.entries.len() >= self.limit => out.full = true,
                    _ => {
                        self.remove(id);
                        self.tombstones.remove(&id);
                        self.digest ^= mix(id, gen);
                        self.entries
                            .insert(id, Entry { gen, record: record.clone(), progress: None, refreshed: now, own });
                        out.changed = Some(Msg::Upsert { id, gen, record });
                    }
                }
            }
            Msg::Progress(entries) => {
                let mut known = Vec::new();
                for (id, gen, bytes) in entries {
                    let buried = self.tombstones.get(&id).is_some_and(|(g, _)| *g >= gen);
                    match self.entries.get_mut(&id) {
                        // Not ours to store, but our engine must see how
                        // far the other sender got (Session::overtake).
                        Some(e) if deaf(e) => {}
                        Some(e) if guarded(e) => known.push((id, gen, bytes)),
                        Some(e) if e.gen == gen => {
                            e.progress = Some(bytes.clone());
                            e.refreshed = now;
                            known.push((id, gen, bytes));
                        }
                        // Our engine tells the master how far it got under
                        // the master's session (Session::report_back): for
                        // the peers, not for the table.
                        Some(_) if own => known.push((id, gen, bytes)),
                        Some(e) if e.gen < gen => out.wanted.push(id),
                        // Older than ours: not for the table, but our
                        // engine tells that master what it missed
                        // (Session::report_back).
                        Some(_) => known.push((id, gen, bytes)),
                        None if !buried => out.wanted.push(id),
                        _ => {}
                    }
                }
                out.changed = (!known.is_empty()).then_some(Msg::Progress(known));
            }
            Msg::Delete { id, gen } => {
                if self.tombstones.get(&id).is_none_or(|(g, _)| *g < gen) {
                    self.tombstones.insert(id, (gen, now + TOMBSTONE_LIFE));
                }
                if self.entries.get(&id).is_some_and(|e| e.gen <= gen && !guarded(e)) {
                    self.remove(id);
                    out.changed = Some(Msg::Delete { id, gen });
                }
            }
            _ => {}
        }
        out
    }

    /// We stopped being master: our sessions' entries take any record from
    /// the new master (the engine's ghosts do the same, `Gen::YIELDED`).
    pub fn yield_own(&mut self) {
        let own: Vec<SessionId> = self.entries.iter().filter(|(_, e)| e.own).map(|(id, _)| *id).collect();
        for id in own {
            if let Some(e) = self.entries.get_mut(&id) {
                let yielded = 0;
                self.digest ^= mix(id, e.gen) ^ mix(id, yielded);
                e.gen = yielded;
                e.own = false;
            }
        }
    }

    /// Drops entries nobody refreshed for `lifetime` (their master stopped
    /// reporting them: a lost delete, a master that died) and tombstones
    /// past their time. Returns the deletes, for the engine.
    pub fn expire(&mut self, now: Instant, lifetime: Duration) -> Vec<Msg> {
        self.tombstones.retain(|_, (_, until)| *until > now);
        let old: Vec<(SessionId, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.refreshed) >= lifetime)
            .map(|(id, e)| (*id, e.gen))
            .collect();
        old.into_iter()
            .map(|(id, gen)| {
                self.remove(id);
                Msg::Delete { id, gen }
            })
            .collect()
    }

    /// Drops the sessions not in `keep` (a resync found them gone on the
    /// master). Returns the deletes, for the engine.
    pub fn retain(&mut self, keep: &std::collections::HashSet<SessionId>) -> Vec<Msg> {
        let gone: Vec<SessionId> = self.entries.keys().filter(|id| !keep.contains(id)).copied().collect();
        gone.into_iter().filter_map(|id| self.remove(id).map(|e| Msg::Delete { id, gen: e.gen })).collect()
    }

    /// Packs one session's record and progress.
    pub fn pack(&self, id: SessionId, p: &mut Packer) -> bool {
        let Some(e) = self.entries.get(&id) else { return false };
        let packed = p
            .push(&Msg::Upsert { id, gen: e.gen, record: e.record.clone() })
            .and_then(|()| e.progress.as_ref().map_or(Ok(()), |b| p.progress(id, e.gen, b)));
        match packed {
            Ok(()) => true,
            Err(err) => {
                log_too_large(id, err);
                false
            }
        }
    }

    /// The ids after `after` (all from the start when `None`), `n` at most:
    /// a paced bulk answer walks the table with this.
    pub fn ids_after(&self, after: Option<SessionId>, n: usize) -> Vec<SessionId> {
        let range = match after {
            Some(SessionId::MAX) => return Vec::new(),
            Some(a) => self.entries.range(a + 1..),
            None => self.entries.range(..),
        };
        range.take(n).map(|(id, _)| *id).collect()
    }
}

/// Logs a session the peer protocol cannot carry.
pub fn log_too_large(id: SessionId, e: TooLarge) {
    log::error!("session {id:016x} not synced: {e}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode;

    const PEER: Source = Source::Peer { master: false, from_master: true };

    fn up(id: u64, gen: u64, r: &[u8]) -> Msg {
        Msg::Upsert { id, gen, record: r.to_vec() }
    }

    #[test]
    fn apply_and_pack() {
        let t0 = Instant::now();
        let mut t = Table::new(10);
        assert_eq!(t.apply(up(1, 1, b"a"), PEER, t0).changed, Some(up(1, 1, b"a")));
        assert_eq!(t.apply(up(2, 1, b"b"), PEER, t0).changed, Some(up(2, 1, b"b")));
        let a = t.apply(Msg::Progress(vec![(2, 1, b"p".to_vec()), (9, 1, b"x".to_vec())]), PEER, t0);
        assert_eq!(a.changed, Some(Msg::Progress(vec![(2, 1, b"p".to_vec())])));
        assert_eq!(a.wanted, vec![9], "progress of a session we lack: ask for it");
        assert_eq!(t.apply(Msg::Delete { id: 1, gen: 1 }, PEER, t0).changed, Some(Msg::Delete { id: 1, gen: 1 }));
        assert_eq!(t.apply(Msg::Delete { id: 1, gen: 1 }, PEER, t0).changed, None);
        assert_eq!(t.apply(Msg::BulkRequest, PEER, t0), Applied::default());
        let mut p = Packer::default();
        assert!(t.pack(2, &mut p));
        assert!(!t.pack(1, &mut p));
        let plain = p.finish();
        assert_eq!(decode(&plain[0]), Ok(vec![up(2, 1, b"b"), Msg::Progress(vec![(2, 1, b"p".to_vec())])]));
        t.apply(up(3, 1, &vec![0; 70000]), PEER, t0);
        assert!(!t.pack(3, &mut Packer::default()), "the oversized record is left out");
    }

    /// Finding 4: delayed, reordered and duplicated updates never move an
    /// entry back, and a late upsert does not bring back a deleted session.
    #[test]
    fn only_newer_generations_apply() {
        let t0 = Instant::now();
        let mut t = Table::new(10);
        t.apply(up(1, 5, b"new"), PEER, t0);
        assert_eq!(t.apply(up(1, 4, b"old"), PEER, t0).changed, None);
        assert_eq!(t.apply(up(1, 5, b"dup"), PEER, t0).changed, None);
        let a = t.apply(Msg::Progress(vec![(1, 4, b"old".to_vec())]), PEER, t0);
        assert_eq!(a.wanted, Vec::<u64>::new());
        assert_eq!(a.changed, Some(Msg::Progress(vec![(1, 4, b"old".to_vec())])), "for the engine only");
        let mut p = Packer::default();
        t.pack(1, &mut p);
        assert_eq!(decode(&p.finish()[0]).unwrap().len(), 1, "the table kept no progress of an older record");
        let a = t.apply(Msg::Progress(vec![(1, 6, b"p".to_vec())]), PEER, t0);
        assert_eq!(a.wanted, vec![1], "progress of a newer record: we missed that record");
        assert_eq!(t.apply(Msg::Delete { id: 1, gen: 4 }, PEER, t0).changed, None, "a delete of an older record");
        assert!(t.apply(Msg::Delete { id: 1, gen: 5 }, PEER, t0).changed.is_some());
        assert_eq!(t.apply(up(1, 5, b"late"), PEER, t0).changed, None, "the tombstone holds");
        assert!(t.apply(up(1, 6, b"reconnected"), PEER, t0).changed.is_some(), "a newer generation is a new life");
        assert_eq!(t.apply(up(2, 1, b"x"), PEER, t0 + TOMBSTONE_LIFE).wanted, vec![]);
    }

    /// A peer never changes the entry of a session our engine serves while
    /// we are master (a split brain); a newer record still reaches the
    /// engine, which supersedes it. Once we yield, the peer's records apply.
    #[test]
    fn a_masters_own_sessions_are_its_engines_to_change() {
        let t0 = Instant::now();
        let mut t = Table::new(10);
        let gen = (2u64 << 40) | (1 << 32) | 3;
        t.apply(up(1, gen, b"mine"), Source::Engine, t0);
        let master = Source::Peer { master: true, from_master: false };
        assert_eq!(t.apply(Msg::Delete { id: 1, gen: gen + 5 }, master, t0).changed, None);
        assert!(t.apply(up(1, gen + 9, b"theirs"), master, t0).changed.is_some(), "for the engine to judge");
        let p = Msg::Progress(vec![(1, gen + 9, b"p".to_vec())]);
        assert_eq!(t.apply(p.clone(), master, t0).changed, Some(p), "for the engine, not the table");
        let split = Source::Peer { master: true, from_master: true };
        let p = Msg::Progress(vec![(1, gen + 20, b"other master".to_vec())]);
        assert_eq!(t.apply(p, split, t0), Applied::default(), "another master's counters: not even for the engine");
        assert_eq!(t.len(), 1);
        let mut p = Packer::default();
        t.pack(1, &mut p);
        assert_eq!(decode(&p.finish()[0]).unwrap()[0], up(1, gen, b"mine"));
        t.yield_own();
        let theirs = (2u64 << 40) | (3 << 32) | 1;
        assert!(t.apply(up(1, theirs, b"theirs"), PEER, t0).changed.is_some(), "the new master's record");
    }

    #[test]
    fn digest_tracks_ids_and_generations() {
        let t0 = Instant::now();
        let (mut a, mut b) = (Table::new(10), Table::new(10));
        assert_eq!(a.digest(), b.digest());
        a.apply(up(1, 1, b"x"), PEER, t0);
        assert_ne!(a.digest(), b.digest());
        b.apply(up(1, 1, b"y"), PEER, t0);
        assert_eq!(a.digest(), b.digest(), "the record bytes do not matter, the generation does");
        a.apply(up(1, 2, b"x"), PEER, t0);
        assert_ne!(a.digest(), b.digest());
        a.apply(Msg::Delete { id: 1, gen: 2 }, PEER, t0);
        assert_eq!(a.digest(), 0);
    }

    #[test]
    fn entries_expire_and_the_table_is_bounded() {
        let t0 = Instant::now();
        let mut t = Table::new(2);
        t.apply(up(1, 1, b"a"), PEER, t0);
        t.apply(up(2, 1, b"b"), PEER, t0);
        assert!(t.apply(up(3, 1, b"c"), PEER, t0).full);
        assert!(t.apply(up(2, 2, b"b2"), PEER, t0).changed.is_some(), "a newer record of a known session still fits");
        let s = Duration::from_secs(1);
        t.apply(Msg::Progress(vec![(2, 2, b"p".to_vec())]), PEER, t0 + 15 * s);
        assert_eq!(t.expire(t0 + 20 * s, 20 * s), vec![Msg::Delete { id: 1, gen: 1 }]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.ids_after(None, 5), vec![2]);
        assert_eq!(t.ids_after(Some(2), 5), Vec::<u64>::new());
    }
}
