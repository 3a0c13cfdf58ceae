//! The ACK filter (`ack-filter`, vpnsyncd.conf(5)): in one receive batch of
//! a listener, a client's pure TCP ACK that a later pure ACK of the same
//! flow in the same batch makes redundant is not written to the tun.
//!
//! Why: on a download the client's ACKs are most of what goes to the tun,
//! one write each (GRO does not merge pure ACKs), and every write runs the
//! inside host's `tcp_ack` and `tcp_write_xmit` in the engine's context
//! (docs/DATAPATH.md). An ACK whose cumulative ack number a later one of
//! the batch passes tells the sender nothing that the later one does not.
//!
//! The rules are those of sch_cake's `ack-filter`, narrowed: where cake
//! weighs SACK blocks or ECN flags against each other, the packet is
//! simply kept here.
//! - Both the ACK dropped and the one that supersedes it are "pure": IPv4
//!   (options allowed, no fragment) or IPv6 without extension headers, not
//!   CE-marked, TCP flags exactly ACK (no SYN/FIN/RST/PSH/URG/ECE/CWR, no
//!   reserved or AE bit), no payload, options only NOP, EOL and one
//!   timestamp. SACK (and any other option) keeps a packet: it carries
//!   loss information a later ACK may not repeat.
//! - The later one is the next packet of the same flow (addresses, ports)
//!   in the batch, and its ack number is strictly greater (serial number
//!   arithmetic, so across the 2^32 wrap too); its timestamps, when the
//!   earlier one has them, are not older (cake's rule; a sender's PAWS and
//!   RTT sampling then see nothing go backwards).
//! - A duplicate ACK (same ack number as the flow's packet before it, in
//!   this batch or as the last one of an earlier batch) is never dropped:
//!   the sender counts them to detect loss. An ACK of a flow that is not
//!   remembered (first seen, or forgotten past [`FLOWS`]) may be one, so it
//!   is kept too.
//! - The window is not compared, as in cake: an ACK that advances the ack
//!   number always updates the sender's window (RFC 9293 SND.WL2), so the
//!   later ACK's window is what the sender ends up with either way.
//!
//! Nothing is reordered (what is kept keeps its order) and nothing is held
//! past its batch. Checksums are not verified (the kernel does on
//! delivery); a packet that does not parse cleanly is kept as it is.

use crate::offload::{self, PROTO_TCP, TCP_ACK};

/// Flows whose last ack number is remembered across batches (the oldest
/// is forgotten first).
pub const FLOWS: usize = 64;
/// Packets of one batch the filter looks at; later ones are kept as they are.
pub const MAX_BATCH: usize = crate::batch::BATCH;

const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_TIMESTAMP: u8 = 8;
const TIMESTAMP_LEN: usize = 10;

/// A flow: IP version, addresses (IPv4 zero-padded) and ports.
type Key = [u8; 37];

/// What the filter needs of one TCP packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Tcp {
    key: Key,
    ack: u32,
    /// A pure ACK (the module's rules): the only kind that is dropped or
    /// that supersedes another.
    pure: bool,
    /// The timestamp option's (TSval, TSecr).
    ts: Option<(u32, u32)>,
}

/// `a` is after `b` in sequence space (RFC 1982).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses a TCP packet; `None` for anything else, or an IP header that
/// does not parse (kept as it is, and no flow's).
fn parse(pkt: &[u8]) -> Option<Tcp> {
    let l3 = offload::ip(pkt).ok()?;
    if l3.proto != PROTO_TCP {
        return None;
    }
    let (addrs, ports) = l3.tuple(pkt)?;
    let mut key = [0; 37];
    key[0] = u8::from(l3.v6);
    key[1..1 + addrs.len()].copy_from_slice(addrs);
    key[33..].copy_from_slice(ports);
    let tcp = &pkt[l3.hlen..];
    let mut t = Tcp { key, ack: 0, pure: false, ts: None };
    if tcp.len() < 20 {
        return Some(t);
    }
    t.ack = be32(&tcp[8..12]);
    let doff = usize::from(tcp[12] >> 4) * 4;
    let ce = if l3.v6 { (pkt[1] >> 4) & 3 == 3 } else { pkt[1] & 3 == 3 };
    if doff < 20 || doff != tcp.len() || tcp[12] & 0x0f != 0 || tcp[13] != TCP_ACK || ce {
        return Some(t);
    }
    if let Some(ts) = options(&tcp[20..doff]) {
        t.pure = true;
        t.ts = ts;
    }
    Some(t)
}

/// The timestamps of an option list of only NOP, EOL and one timestamp;
/// `None` when it has anything else (SACK above all).
fn options(mut o: &[u8]) -> Option<Option<(u32, u32)>> {
    let mut ts = None;
    while let Some(&kind) = o.first() {
        match kind {
            OPT_EOL => break,
            OPT_NOP => o = &o[1..],
            OPT_TIMESTAMP if ts.is_none() && o.len() >= TIMESTAMP_LEN && usize::from(o[1]) == TIMESTAMP_LEN => {
                ts = Some((be32(&o[2..6]), be32(&o[6..10])));
                o = &o[TIMESTAMP_LEN..];
            }
            _ => return None,
        }
    }
    Some(ts)
}

/// Whether pure ACK `later` makes the earlier pure ACK `a` redundant.
fn supersedes(later: &Tcp, a: &Tcp) -> bool {
    let ts = match (a.ts, later.ts) {
        (None, _) => true,
        (Some((va, ea)), Some((vl, el))) => !after(va, vl) && !after(ea, el),
        (Some(_), None) => false,
    };
    later.pure && after(later.ack, a.ack) && ts
}

/// The filter and what it remembers between batches: each recent flow's
/// last ack number (to tell a duplicate ACK at the start of a batch) and
/// how many ACKs it dropped.
#[derive(Default)]
pub struct AckFilter {
    /// (flow, last ack number), oldest first; at most [`FLOWS`].
    last: Vec<(Key, u32)>,
    dropped: u64,
}

impl AckFilter {
    pub fn new() -> Self {
        AckFilter { last: Vec::with_capacity(FLOWS), dropped: 0 }
    }

    /// ACKs dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Takes the decrypted packets of one receive batch in order (`None`
    /// where a datagram gave no packet) and sets to `None` each pure ACK
    /// to drop. Returns how many it dropped.
    pub fn filter(&mut self, batch: &mut [Option<&[u8]>]) -> usize {
        let n = batch.len().min(MAX_BATCH);
        let mut tcp = [None; MAX_BATCH];
        for (t, p) in tcp.iter_mut().zip(&batch[..n]) {
            *t = p.and_then(parse);
        }
        let mut dropped = 0;
        for i in 0..n {
            let Some(a) = tcp[i] else { continue };
            let same = |t: &Option<Tcp>| t.filter(|t| t.key == a.key);
            let next = tcp[i + 1..n].iter().find_map(same);
            let Some(next) = next else {
                self.remember(a.key, a.ack);
                continue;
            };
            if !a.pure || !supersedes(&next, &a) {
                continue;
            }
            let prev = tcp[..i].iter().rev().find_map(same).map(|p| p.ack).or_else(|| self.recall(&a.key));
            if prev.is_some_and(|p| p != a.ack) {
                batch[i] = None;
                dropped += 1;
            }
        }
        self.dropped += dropped as u64;
        dropped
    }

    fn recall(&self, key: &Key) -> Option<u32> {
        self.last.iter().find(|(k, _)| k == key).map(|&(_, ack)| ack)
    }

    fn remember(&mut self, key: Key, ack: u32) {
        if let Some(i) = self.last.iter().position(|(k, _)| *k == key) {
            self.last.remove(i);
        } else if self.last.len() == FLOWS {
            self.last.remove(0);
        }
        self.last.push((key, ack));
    }
}

#[cfg(test)]
mod tests;
