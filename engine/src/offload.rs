//! Tun offloads, the portable part: the `virtio_net_hdr` that a Linux tun
//! opened with `IFF_VNET_HDR` puts before every packet, Internet checksums,
//! splitting a TSO/USO super-packet read from the tun into plain segments
//! (tun -> UDP), and coalescing decrypted TCP segments of one flow into one
//! GSO super-packet written once to the tun (UDP -> tun), the way Linux GRO
//! does. One tun write or read then moves up to 64 KB instead of one
//! packet, which is what the data path's CPU per GB is made of.
//!
//! Packets from the tun and from clients are outside input: everything here
//! refuses what it does not understand (the caller drops it or writes it
//! as a plain packet) and never panics; every buffer has a fixed bound.
//! Coalescing runs after decryption and the replay check, and segmentation
//! before encryption, so packet ids and replay windows never see a
//! super-packet.

use std::fmt;

/// Size of `struct virtio_net_hdr` (the tun default, TUNSETVNETHDRSZ unset).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at csum_start+csum_offset
/// holds only the pseudo-header sum; the rest is to be summed.
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into gso_type.
const GSO_ECN: u8 = 0x80;
/// Largest super-packet built or accepted (the IPv4 total length's limit).
pub const MAX_SUPER: usize = 65535;
/// Open flows the coalescer holds at once; a new flow beyond them flushes
/// the oldest one first.
pub const MAX_FLOWS: usize = 8;

pub(crate) const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
pub(crate) const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// Why a packet was not handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// `struct virtio_net_hdr`, in the host's byte order (a legacy tun's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn decode(b: &[u8]) -> Result<Self, Refused> {
        let b: &[u8; VNET_HDR_LEN] =
            b.get(..VNET_HDR_LEN).and_then(|b| b.try_into().ok()).ok_or(Refused("short virtio_net_hdr"))?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr { flags: b[0], gso_type: b[1], hdr_len: u(2), gso_size: u(4), csum_start: u(6), csum_offset: u(8) })
    }

    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [self.hdr_len, self.gso_size, self.csum_start, self.csum_offset].into_iter().enumerate() {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }
}

/// Adds `data` as big-endian 16-bit words to a ones'-complement sum
/// (unfolded; 64 bits cannot overflow for any packet we handle).
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut rest = words.remainder().chunks_exact(2);
    for w in &mut rest {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = rest.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The IP layer of a packet: where its transport header starts, and the
/// addresses the pseudo-header sums.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ip {
    pub(crate) v6: bool,
    pub(crate) hlen: usize,
    pub(crate) proto: u8,
}

/// Parses an IPv4 (no fragment) or IPv6 (no extension header) header whose
/// length field matches `pkt` exactly.
pub(crate) fn ip(pkt: &[u8]) -> Result<Ip, Refused> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let hlen = usize::from(pkt[0] & 0x0f) * 4;
            if hlen < 20 || pkt.len() < hlen {
                return Err(Refused("short IPv4 header"));
            }
            if usize::from(u16::from_be_bytes([pkt[2], pkt[3]])) != pkt.len() {
                return Err(Refused("IPv4 total length does not match the packet"));
            }
            if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
                return Err(Refused("IPv4 fragment"));
            }
            Ok(Ip { v6: false, hlen, proto: pkt[9] })
        }
        Some(6) => {
            if pkt.len() < 40 {
                return Err(Refused("short IPv6 header"));
            }
            if usize::from(u16::from_be_bytes([pkt[4], pkt[5]])) + 40 != pkt.len() {
                return Err(Refused("IPv6 payload length does not match the packet"));
            }
            Ok(Ip { v6: true, hlen: 40, proto: pkt[6] })
        }
        _ => Err(Refused("not an IP packet")),
    }
}

impl Ip {
    /// The addresses and the ports (TCP or UDP) of `pkt`.
    pub(crate) fn tuple<'a>(&self, pkt: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let addrs = if self.v6 { pkt.get(8..40)? } else { pkt.get(12..20)? };
        Some((addrs, pkt.get(self.hlen..self.hlen + 4)?))
    }

    /// The pseudo-header sum for a transport segment of `len` bytes.
    fn pseudo(&self, pkt: &[u8], len: usize) -> u64 {
        let addrs = if self.v6 { &pkt[8..40] } else { &pkt[12..20] };
        sum(addrs, u64::from(self.proto) + len as u64)
    }

    /// Sets the length field for a packet of `total` bytes and, for IPv4,
    /// the id and the header checksum.
    fn finish(&self, pkt: &mut [u8], total: usize, id: Option<u16>) {
        if self.v6 {
            pkt[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            return;
        }
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        if let Some(id) = id {
            pkt[4..6].copy_from_slice(&id.to_be_bytes());
        }
        pkt[10..12].fill(0);
        let c = !fold(sum(&pkt[..self.hlen], 0));
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// Completes a `F_NEEDS_CSUM` checksum in place, as the kernel's
/// skb_checksum_help does: the field holds the pseudo-header sum.
fn complete_csum(hdr: &VnetHdr, pkt: &mut [u8]) -> Result<(), Refused> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > pkt.len() {
        return Err(Refused("checksum offset beyond the packet"));
    }
    let c = match !fold(sum(&pkt[start..], 0)) {
        0 => 0xffff,
        c => c,
    };
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// One plain IP packet of what a tun read returned, not copied anywhere
/// yet: the caller chooses where it goes (crate::io: where it is encrypted,
/// in the datagram that carries it) and [`Piece::write`] puts it there,
/// headers fixed up and checksums complete. That write is the only copy of
/// a packet between the tun read and the UDP send.
pub struct Piece<'a> {
    /// The packet as read, or a super-packet's headers.
    head: &'a [u8],
    /// A segment's payload (empty for a packet as read).
    chunk: &'a [u8],
    /// How a segment's headers differ from the super-packet's.
    fix: Option<Fix>,
}

/// Segment `i` of a super-packet: what its headers get.
#[derive(Clone, Copy)]
struct Fix {
    l3: Ip,
    tcp: bool,
    id: u16,
    seq: u32,
    /// Not the last segment: FIN and PSH go.
    more: bool,
    /// Not the first segment: CWR goes.
    later: bool,
}

impl<'a> Piece<'a> {
    /// A plain packet, as it is.
    pub fn whole(pkt: &'a [u8]) -> Self {
        Piece { head: pkt, chunk: &[], fix: None }
    }

    /// The packet's length.
    pub fn size(&self) -> usize {
        self.head.len() + self.chunk.len()
    }

    /// The start of the packet: its IP header as read (a segment's
    /// addresses are the super-packet's), which is what routing reads.
    pub fn head(&self) -> &[u8] {
        self.head
    }

    /// Writes the packet into `out`, exactly [`Piece::size`] bytes.
    pub fn write(&self, out: &mut [u8]) {
        let hlen = self.head.len();
        out[..hlen].copy_from_slice(self.head);
        out[hlen..].copy_from_slice(self.chunk);
        let Some(f) = self.fix else { return };
        let (l3, l4, total) = (f.l3, f.l3.hlen, out.len());
        l3.finish(out, total, Some(f.id));
        let csum_at = if f.tcp {
            out[l4 + 4..l4 + 8].copy_from_slice(&f.seq.to_be_bytes());
            if f.more {
                out[l4 + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if f.later {
                out[l4 + 13] &= !TCP_CWR;
            }
            l4 + 16
        } else {
            out[l4 + 4..l4 + 6].copy_from_slice(&((total - l4) as u16).to_be_bytes());
            l4 + 6
        };
        out[csum_at..csum_at + 2].fill(0);
        let c = !fold(sum(&out[l4..], l3.pseudo(out, total - l4)));
        let c = if c == 0 && !f.tcp { 0xffff } else { c };
        out[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Splits what one tun read returned (`pkt`, after its header `hdr`) into
/// plain IP packets, each handed to `emit` as a [`Piece`] to be written
/// where the caller wants it. A segment longer than `max` bytes is refused
/// (the whole read). Returns the number of packets emitted.
pub fn segment(hdr: &VnetHdr, pkt: &mut [u8], max: usize, emit: &mut dyn FnMut(&Piece)) -> Result<usize, Refused> {
    let gso = hdr.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_csum(hdr, pkt)?;
        }
        emit(&Piece::whole(pkt));
        return Ok(1);
    }
    // Bounded by the 16-bit length fields, which must match the packet.
    let l3 = ip(pkt)?;
    let (tcp, want_v6) = match gso {
        GSO_TCPV4 => (true, Some(false)),
        GSO_TCPV6 => (true, Some(true)),
        GSO_UDP_L4 => (false, None),
        _ => return Err(Refused("unsupported gso_type")),
    };
    if want_v6.is_some_and(|v6| v6 != l3.v6) || l3.proto != if tcp { PROTO_TCP } else { PROTO_UDP } {
        return Err(Refused("gso_type does not match the packet"));
    }
    let l4 = l3.hlen;
    let hlen = if tcp {
        let doff = pkt.get(l4 + 12).map(|b| usize::from(b >> 4) * 4).ok_or(Refused("short TCP header"))?;
        if doff < 20 {
            return Err(Refused("bad TCP data offset"));
        }
        l4 + doff
    } else {
        l4 + 8
    };
    let mss = usize::from(hdr.gso_size);
    if hlen > pkt.len() || mss == 0 {
        return Err(Refused("bad GSO header or size"));
    }
    if hlen + mss > max {
        return Err(Refused("GSO segment larger than a datagram can carry"));
    }
    let (head, payload) = pkt.split_at(hlen);
    let seq0 = if tcp { u32::from_be_bytes([head[l4 + 4], head[l4 + 5], head[l4 + 6], head[l4 + 7]]) } else { 0 };
    let id0 = if l3.v6 { 0 } else { u16::from_be_bytes([head[4], head[5]]) };
    let count = payload.len().div_ceil(mss).max(1);
    for (i, chunk) in payload.chunks(mss).chain(payload.is_empty().then_some(&[][..])).enumerate() {
        let fix = Fix {
            l3,
            tcp,
            id: id0.wrapping_add(i as u16),
            seq: seq0.wrapping_add((i * mss) as u32),
            more: i + 1 < count,
            later: i > 0,
        };
        emit(&Piece { head, chunk, fix: Some(fix) });
    }
    Ok(count)
}

/// A TCP segment that may join a super-packet.
#[derive(Clone, Copy)]
struct Seg {
    l3: Ip,
    /// IP plus TCP header length.
    hlen: usize,
    seq: u32,
    flags: u8,
}

/// A pure ACK or ACK+PSH segment with data and no IP options. Its TCP
/// checksum is not read: the packet was just decrypted and authenticated
/// (every data-channel cipher is an AEAD or encrypt-then-MAC), so it is
/// byte for byte what the peer's tun gave its OpenVPN, and the kernel
/// computes the super-packet's checksum itself (`F_NEEDS_CSUM`). Summing
/// every payload byte again was 4 % of the engine's CPU on the upload path;
/// Linux's WireGuard trusts its decrypted packets the same way
/// (CHECKSUM_UNNECESSARY).
fn candidate(pkt: &[u8]) -> Option<Seg> {
    let l3 = ip(pkt).ok()?;
    if l3.proto != PROTO_TCP || (!l3.v6 && l3.hlen != 20) {
        return None;
    }
    let l4 = l3.hlen;
    let doff = usize::from(pkt.get(l4 + 12)? >> 4) * 4;
    if doff < 20 || l4 + doff >= pkt.len() {
        return None;
    }
    let flags = pkt[l4 + 13];
    if flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    let seq = u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]]);
    Some(Seg { l3, hlen: l4 + doff, seq, flags })
}

/// The addresses and ports of a TCP packet (any flags), to keep a flow's
/// packets in order when one of them cannot be coalesced.
fn tuple(pkt: &[u8]) -> Option<(&[u8], &[u8])> {
    let l3 = ip(pkt).ok()?;
    if l3.proto != PROTO_TCP {
        return None;
    }
    l3.tuple(pkt)
}

/// Most segments one super-packet joins: its tun write has one iovec per
/// segment (a receive batch holds fewer datagrams anyway, crate::batch).
pub const MAX_PARTS: usize = 64;
/// Longest IP and TCP headers of a candidate: IPv6 (IPv4 has no options
/// here) and a TCP header full of options.
const MAX_HDR: usize = 40 + 60;

/// One super-packet being built: the first segment, and the payload of
/// every other one, where they lie in the receive batch (nothing is copied
/// until the tun write).
struct Flow<'a> {
    first: &'a [u8],
    seg: Seg,
    /// The payloads of the segments after the first.
    rest: [&'a [u8]; MAX_PARTS],
    /// How many of `rest` are used.
    parts: usize,
    /// Length of the super-packet.
    len: usize,
    /// Payload size of the first segment: every one but the last has it.
    mss: usize,
    next_seq: u32,
    next_id: u16,
    /// A segment that joined had PSH (the super-packet gets it).
    psh: u8,
    /// A short segment or a PSH ended the flow: nothing more joins it.
    closed: bool,
}

impl<'a> Flow<'a> {
    fn tuple(&self) -> Option<(&'a [u8], &'a [u8])> {
        self.seg.l3.tuple(self.first)
    }

    /// Whether `pkt` (segment `s`) continues this flow: same headers but
    /// for lengths, ids, checksums, sequence number and PSH, contiguous,
    /// no larger than the first, and the result stays within 64 KB.
    fn takes(&self, pkt: &[u8], s: &Seg) -> bool {
        if self.closed || s.l3.v6 != self.seg.l3.v6 || s.hlen != self.seg.hlen || s.seq != self.next_seq {
            return false;
        }
        let payload = pkt.len() - s.hlen;
        if payload > self.mss || self.len + payload > MAX_SUPER || self.parts == MAX_PARTS {
            return false;
        }
        let (a, b) = (self.first, pkt);
        let ip_same = if s.l3.v6 {
            a[..4] == b[..4] && a[6..40] == b[6..40]
        } else {
            a[..2] == b[..2] && a[6..10] == b[6..10] && a[12..20] == b[12..20] && b[4..6] == self.next_id.to_be_bytes()
        };
        let l4 = s.l3.hlen;
        // Ports, ack, data offset, window, urgent pointer and options equal;
        // flags equal but for PSH.
        ip_same
            && a[l4..l4 + 4] == b[l4..l4 + 4]
            && a[l4 + 8..l4 + 13] == b[l4 + 8..l4 + 13]
            && (a[l4 + 13] ^ b[l4 + 13]) & !TCP_PSH == 0
            && a[l4 + 14..l4 + 16] == b[l4 + 14..l4 + 16]
            && a[l4 + 18..s.hlen] == b[l4 + 18..s.hlen]
    }

    fn append(&mut self, pkt: &'a [u8], s: &Seg) {
        let payload = &pkt[s.hlen..];
        self.rest[self.parts] = payload;
        self.parts += 1;
        self.len += payload.len();
        self.next_seq = self.next_seq.wrapping_add(payload.len() as u32);
        self.next_id = self.next_id.wrapping_add(1);
        self.psh |= s.flags & TCP_PSH;
        self.closed = payload.len() < self.mss || s.flags & TCP_PSH != 0;
    }

    /// Hands the flow to `write`: one segment unchanged, several as a TSO
    /// packet whose headers are the first segment's, fixed up in `hdr`
    /// (lengths, IPv4 checksum, PSH if any had it, and the TCP checksum
    /// field holding the pseudo-header sum, `F_NEEDS_CSUM`), followed by
    /// every payload where it lies.
    fn write(&self, write: &mut Write<'_>) {
        if self.parts == 0 {
            return write(&VnetHdr::default(), &[self.first]);
        }
        let s = self.seg;
        let mut buf = [0u8; MAX_HDR];
        let hdr = &mut buf[..s.hlen];
        hdr.copy_from_slice(&self.first[..s.hlen]);
        s.l3.finish(hdr, self.len, None);
        let l4 = s.l3.hlen;
        hdr[l4 + 13] |= self.psh;
        let ps = fold(s.l3.pseudo(hdr, self.len - l4));
        hdr[l4 + 16..l4 + 18].copy_from_slice(&ps.to_be_bytes());
        let mut parts: [&[u8]; MAX_PARTS + 2] = [&[]; MAX_PARTS + 2];
        parts[0] = hdr;
        parts[1] = &self.first[s.hlen..];
        parts[2..2 + self.parts].copy_from_slice(&self.rest[..self.parts]);
        let vnet = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if s.l3.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: s.hlen as u16,
            gso_size: self.mss as u16,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        write(&vnet, &parts[..2 + self.parts]);
    }
}

/// Where coalesced and plain packets go: (header, the IP packet in parts,
/// back to back: one writev).
pub type Write<'w> = dyn FnMut(&VnetHdr, &[&[u8]]) + 'w;

/// Writes the decrypted packets of one receive batch with `write`, TCP
/// segments of a flow that continue each other joined into one
/// super-packet, everything else as it is (after the open super-packet of
/// its own flow). The super-packets refer to the packets where they lie:
/// everything is written before this returns, while the batch's buffers
/// still hold them. Returns how many TCP data segments were held to be
/// merged (what receive moderation waits for, crate::moderate).
pub fn coalesce<'a>(pkts: impl IntoIterator<Item = &'a [u8]>, write: &mut Write<'_>) -> usize {
    let mut c = Coalescer::default();
    let held = pkts.into_iter().filter(|p| c.push(p, write)).count();
    c.flush(write);
    held
}

/// The open flows of one receive batch, oldest first.
#[derive(Default)]
struct Coalescer<'a> {
    flows: [Option<Flow<'a>>; MAX_FLOWS],
    /// How many of `flows` are open (the first ones).
    open: usize,
}

impl<'a> Coalescer<'a> {
    /// Takes one decrypted IP packet. True when it is a TCP data segment,
    /// held to be merged; false when it was written as it is.
    fn push(&mut self, pkt: &'a [u8], write: &mut Write<'_>) -> bool {
        let found = tuple(pkt)
            .and_then(|t| self.flows[..self.open].iter().position(|f| f.as_ref().and_then(Flow::tuple) == Some(t)));
        let seg = candidate(pkt);
        if let (Some(i), Some(s)) = (found, &seg) {
            if let Some(f) = self.flows[i].as_mut().filter(|f| f.takes(pkt, s)) {
                f.append(pkt, s);
                return true;
            }
        }
        if let Some(i) = found {
            self.flush_one(i, write);
        }
        let Some(s) = seg else {
            write(&VnetHdr::default(), &[pkt]);
            return false;
        };
        if self.open == MAX_FLOWS {
            self.flush_one(0, write);
        }
        let payload = pkt.len() - s.hlen;
        let id = if s.l3.v6 { 0 } else { u16::from_be_bytes([pkt[4], pkt[5]]) };
        self.flows[self.open] = Some(Flow {
            first: pkt,
            seg: s,
            rest: [&[]; MAX_PARTS],
            parts: 0,
            len: pkt.len(),
            mss: payload,
            next_seq: s.seq.wrapping_add(payload as u32),
            next_id: id.wrapping_add(1),
            psh: 0,
            closed: s.flags & TCP_PSH != 0,
        });
        self.open += 1;
        true
    }

    /// Writes flow `i` and closes the gap it leaves (the order stays).
    fn flush_one(&mut self, i: usize, write: &mut Write<'_>) {
        if let Some(f) = self.flows[i].take() {
            f.write(write);
        }
        self.flows[i..self.open].rotate_left(1);
        self.open -= 1;
    }

    /// Writes every open flow, oldest first.
    fn flush(&mut self, write: &mut Write<'_>) {
        for f in self.flows[..self.open].iter_mut() {
            if let Some(f) = f.take() {
                f.write(write);
            }
        }
        self.open = 0;
    }
}

#[cfg(test)]
pub(crate) mod tests;
