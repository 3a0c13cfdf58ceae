//! Which packet ids a member may send under a data key that several
//! members hold. This is the one place where invariant (a) of docs/SYNC.md
//! ("no (data key, packet id) pair is ever sent twice by the cluster") is
//! enforced; every send counter of the server goes through it.
//!
//! The 32-bit packet id space of a key is cut into blocks of 2^20 ids.
//! Block 0 (ids 1 to 2^20 - 1) belongs to the member that created the key
//! (its TLS handshake ran there). Every other block `j` belongs to member
//! `(j - 1) mod 8 + 1`; the 8 blocks `8r + 1 ..= 8r + 8` are round `r`. A
//! member only ever sends ids of its own blocks: when its counter leaves
//! one of its blocks it jumps to its block of the next round, and when it
//! takes a key over it starts in its block of a round above every id it
//! knows of. Two members therefore never send the same id under one key,
//! whatever the sync link lost or delayed, however many members promote at
//! once and however long a split brain lasts: their id sets are disjoint
//! by construction. That a member never repeats its *own* ids follows from
//! its counters only moving forward (see [`crate::data::DataKey`]).
//!
//! Safety needs nothing more. The client, though, refuses ids below its
//! replay window, so a new master should also start above whatever a
//! member it never heard of sent (a short-lived master whose reports were
//! lost): a takeover skips one round per [`ROUND_EVERY`] that passed since
//! the last report it holds. Of two takeovers that far apart or more, the
//! later one starts higher, whatever their member numbers. This is only
//! about liveness: time plays no part in invariant (a).
//!
//! The client accepts any higher id (its replay window moves up), so a jump
//! costs nothing. A key holds 510 rounds before the renegotiation trigger:
//! a takeover two minutes after the last report (a master reports every
//! session at least every 3 s) still has room; past that the key is not
//! used for sending and is replaced at once.

use std::time::Duration;

use crate::packet_id::PacketIdSend;

/// log2 of the block size.
const BLOCK_BITS: u32 = 20;
/// The member numbers: 1 to this (vpnsyncd.conf `member`).
pub const MEMBERS: u8 = vpnsyncd_config::MAX_MEMBERS;
/// Blocks per round: one per member.
const ROUND: u32 = MEMBERS as u32;
/// A takeover skips a round per this long since its last report.
pub const ROUND_EVERY: Duration = Duration::from_millis(250);

/// Who may use which ids of one data key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SendSpace {
    /// Every id: the client side of tests, which is never replicated.
    #[default]
    Any,
    /// The blocks of `member`, and block 0 when it created the key.
    Member { member: u8, creator: bool },
}

impl SendSpace {
    fn owns(self, block: u32) -> bool {
        match self {
            SendSpace::Any => true,
            SendSpace::Member { creator, .. } if block == 0 => creator,
            SendSpace::Member { member, .. } => (block - 1) % u32::from(MEMBERS) + 1 == u32::from(member),
        }
    }

    /// The first id of our first block at or after `block`; `None` when
    /// no such block starts below the renegotiation trigger.
    fn first_owned_from(self, block: u32) -> Option<u32> {
        let last_block = PacketIdSend::REKEY_TRIGGER >> BLOCK_BITS;
        (block..last_block).find(|&b| self.owns(b)).map(|b| (b << BLOCK_BITS).max(1))
    }

    /// The id to send after `last` (0: none sent yet), or `None` when this
    /// member has no ids left under the key.
    pub fn next(self, last: u32) -> Option<u32> {
        let n = last.checked_add(1)?;
        if self == SendSpace::Any || self.owns(n >> BLOCK_BITS) {
            return Some(n);
        }
        self.first_owned_from(n >> BLOCK_BITS)
    }

    /// The counter value ("last id sent") a member starts from when it
    /// takes over a key of which `known` is the highest id it knows to be
    /// used: just below its block in the round after `known`'s, skipping
    /// `rounds` more. `None` when none is left: the key must not be used
    /// for sending.
    pub fn takeover_counter(self, known: u32, rounds: u32) -> Option<u32> {
        let block = known >> BLOCK_BITS;
        let next_round = if block == 0 { 0 } else { (block - 1) / ROUND + 1 };
        let from = next_round.checked_add(rounds)?.checked_mul(ROUND)?.checked_add(1)?;
        self.first_owned_from(from).map(|first| first - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(m: u8) -> SendSpace {
        SendSpace::Member { member: m, creator: false }
    }

    /// The block an id falls in.
    fn block(id: u32) -> u32 {
        id >> BLOCK_BITS
    }

    const B: u32 = 1 << BLOCK_BITS;

    #[test]
    fn the_creator_counts_from_one_then_moves_to_its_blocks() {
        let s = SendSpace::Member { member: 3, creator: true };
        assert_eq!(s.next(0), Some(1));
        assert_eq!(s.next(41), Some(42));
        // Block 0 used up: member 3's first block is block 3.
        assert_eq!(s.next(B - 1), Some(3 * B));
        // The end of block 3: member 3's block of the next round is 11.
        assert_eq!(s.next(4 * B - 1), Some(11 * B));
        assert_eq!(SendSpace::Any.next(u32::MAX), None);
    }

    #[test]
    fn takeover_starts_in_the_next_round_and_skips_rounds_for_the_reports_age() {
        assert_eq!(member(2).takeover_counter(5000, 0), Some(2 * B - 1));
        assert_eq!(member(1).takeover_counter(5000, 0), Some(B - 1));
        // Known inside round 0 (block 7, member 7's): round 1 for everyone.
        assert_eq!(member(1).takeover_counter(7 * B + 9, 0), Some(9 * B - 1));
        assert_eq!(member(8).takeover_counter(7 * B + 9, 0), Some(16 * B - 1));
        // Three seconds since the last report: three rounds further.
        assert_eq!(member(1).takeover_counter(7 * B + 9, 3), Some(33 * B - 1));
        // Nothing left below the renegotiation trigger.
        assert_eq!(member(8).takeover_counter(PacketIdSend::REKEY_TRIGGER - 1, 0), None);
        assert_eq!(member(1).takeover_counter(5000, 600), None);
        assert_eq!(member(1).takeover_counter(5000, u32::MAX), None);
    }

    /// Liveness: of two takeovers a second apart the later starts higher,
    /// whichever member numbers they have.
    #[test]
    fn a_later_takeover_starts_above_an_earlier_one() {
        for known in [1, 5000, 9 * B + 3, 100 * B] {
            for early in 1..=MEMBERS {
                for late in 1..=MEMBERS {
                    let a = member(early).takeover_counter(known, 0).unwrap();
                    let b = member(late).takeover_counter(known, 1).unwrap();
                    assert!(b >= a + B, "member {late} a second later must pass member {early}'s block");
                }
            }
        }
    }

    /// Invariant (a) in its pure form: whatever each member knows and
    /// however far each one sends, the ids of two members never meet.
    #[test]
    fn members_never_share_an_id_under_random_schedules() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..2000 {
            let creator = (rand() % 8) as u8 + 1;
            // Each member: where it starts (creator from 0, others from a
            // random "known" id, possibly stale) and how many ids it sends.
            let mut runs: Vec<(u8, Vec<(u32, u32)>)> = Vec::new();
            for m in 1..=MEMBERS {
                let mut ranges = Vec::new();
                let space = SendSpace::Member { member: m, creator: m == creator };
                let mut last = if m == creator { 0 } else { (rand() % 0x2000_0000) as u32 };
                if m != creator {
                    let Some(l) = space.takeover_counter(last, (rand() % 4) as u32) else { continue };
                    last = l;
                }
                let count = rand() % (3 << BLOCK_BITS);
                let mut start = None;
                for _ in 0..4 {
                    // Walk block by block: ids inside one block are consecutive.
                    let Some(first) = space.next(last) else { break };
                    let room = ((block(first) + 1) << BLOCK_BITS) - first;
                    let take = (count as u32 / 4).min(room).max(1);
                    start.get_or_insert(first);
                    ranges.push((first, first + take - 1));
                    last = first + take - 1;
                    assert!(space.owns(block(first)) && space.owns(block(last)));
                }
                runs.push((m, ranges));
            }
            for (i, (m1, r1)) in runs.iter().enumerate() {
                for (m2, r2) in &runs[i + 1..] {
                    for a in r1 {
                        for b in r2 {
                            assert!(a.1 < b.0 || b.1 < a.0, "members {m1} and {m2} share ids: {a:?} {b:?}");
                        }
                    }
                }
            }
        }
    }
}
