use super::*;

const SRC4: [u8; 4] = [10, 8, 0, 2];
const DST4: [u8; 4] = [198, 19, 0, 10];

/// A TCP/IPv4 segment with valid checksums (timestamps option, so the
/// options are compared too).
fn tcp4(seq: u32, id: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 32 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = PROTO_TCP;
    p[12..16].copy_from_slice(&SRC4);
    p[16..20].copy_from_slice(&DST4);
    tcp_fill(&mut p, 20, seq, flags, payload);
    let c = !fold(sum(&p[..20], 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn tcp6(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let total = 40 + 32 + payload.len();
    let mut p = vec![0u8; total];
    ipv6_tcp_header(&mut p);
    tcp_fill(&mut p, 40, seq, flags, payload);
    p
}

/// The fixed IPv6 header of a TCP packet fd00::2 -> fd00::10 that fills
/// `p` (hop limit 64), for this module's tests and crate::ackfilter's.
pub(crate) fn ipv6_tcp_header(p: &mut [u8]) {
    let payload_len = (p.len() - 40) as u16;
    p[0] = 0x60;
    p[4..6].copy_from_slice(&payload_len.to_be_bytes());
    p[6] = PROTO_TCP;
    p[7] = 64;
    p[8] = 0xfd;
    p[23] = 2;
    p[24] = 0xfd;
    p[39] = 10;
}

fn tcp_fill(p: &mut [u8], l4: usize, seq: u32, flags: u8, payload: &[u8]) {
    p[l4..l4 + 4].copy_from_slice(&[0xc3, 0x50, 0x14, 0x51]);
    p[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
    p[l4 + 8..l4 + 12].copy_from_slice(&7u32.to_be_bytes());
    p[l4 + 12] = 8 << 4;
    p[l4 + 13] = flags;
    p[l4 + 14..l4 + 16].copy_from_slice(&502u16.to_be_bytes());
    p[l4 + 20..l4 + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
    p[l4 + 32..].copy_from_slice(payload);
    let c = !fold(sum(&p[l4..], Ip { v6: l4 == 40, hlen: l4, proto: PROTO_TCP }.pseudo(p, p.len() - l4)));
    p[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

fn data(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
}

/// Coalesces `pkts` as one batch and returns what was written, each
/// write's parts joined.
fn coalesced(pkts: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
    let mut out = Vec::new();
    coalesce(pkts.iter().map(Vec::as_slice), &mut |h, parts| out.push((*h, parts.concat())));
    out
}

/// Each packet of `p` (read with `h`), written by [`Piece::write`].
fn split(h: &VnetHdr, p: &[u8]) -> Result<Vec<Vec<u8>>, Refused> {
    let mut out = Vec::new();
    segment(h, &mut p.to_vec(), 2048, &mut |s| {
        let mut v = vec![0xa5; s.size()];
        s.write(&mut v);
        out.push(v)
    })?;
    Ok(out)
}

/// A flow of `n` full segments and a short one with PSH.
fn flow4(n: usize, mss: usize) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> =
        (0..n).map(|i| tcp4(1000 + (i * mss) as u32, 40 + i as u16, TCP_ACK, &data(mss, i as u8))).collect();
    v.push(tcp4(1000 + (n * mss) as u32, 40 + n as u16, TCP_ACK | TCP_PSH, &data(100, 0xee)));
    v
}

#[test]
fn vnet_header_layout() {
    let h = VnetHdr { flags: 1, gso_type: GSO_TCPV4, hdr_len: 52, gso_size: 1448, csum_start: 20, csum_offset: 16 };
    let b = h.encode();
    assert_eq!(b[0], 1);
    assert_eq!(b[1], 1);
    assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 1448);
    assert_eq!(u16::from_ne_bytes([b[8], b[9]]), 16);
    assert_eq!(VnetHdr::decode(&b), Ok(h));
    assert!(VnetHdr::decode(&b[..9]).is_err());
}

#[test]
fn checksum_of_a_known_header() {
    // The IPv4 header example of RFC 1071's usual illustration: b861.
    let h = [0x45, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0, 0xc7];
    assert_eq!(!fold(sum(&h, 0)), 0xb861);
    assert_eq!(fold(sum(&[0xff], 0)), 0xff00, "an odd byte is the high half of a word");
}

#[test]
fn a_flow_becomes_one_tso_packet_and_splits_back() {
    let pkts = flow4(20, 1348);
    let out = coalesced(&pkts);
    assert_eq!(out.len(), 1);
    let (h, sup) = &out[0];
    assert_eq!(h.gso_type, GSO_TCPV4);
    assert_eq!(h.flags, F_NEEDS_CSUM);
    assert_eq!((h.gso_size, h.hdr_len, h.csum_start, h.csum_offset), (1348, 52, 20, 16));
    assert_eq!(sup.len(), 52 + 20 * 1348 + 100);
    assert_eq!(u16::from_be_bytes([sup[2], sup[3]]) as usize, sup.len());
    assert_eq!(fold(sum(&sup[..20], 0)), 0xffff, "IPv4 header checksum redone");
    assert_eq!(sup[20 + 13], TCP_ACK | TCP_PSH, "the last segment's PSH is kept");
    // The TCP checksum field holds the pseudo-header sum, as the kernel
    // expects of F_NEEDS_CSUM: completing it gives a valid checksum.
    let mut done = sup.clone();
    complete_csum(h, &mut done).unwrap();
    assert_eq!(
        fold(sum(&done[20..], Ip { v6: false, hlen: 20, proto: PROTO_TCP }.pseudo(&done, done.len() - 20))),
        0xffff
    );
    assert_eq!(split(h, sup).unwrap(), pkts, "segmentation gives back the very packets");
}

#[test]
fn ipv6_flows_coalesce_too() {
    let pkts: Vec<Vec<u8>> = (0..5).map(|i| tcp6(77 + i * 1200, TCP_ACK, &data(1200, i as u8))).collect();
    let out = coalesced(&pkts);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.gso_type, GSO_TCPV6);
    assert_eq!(out[0].0.csum_start, 40);
    assert_eq!(split(&out[0].0, &out[0].1).unwrap(), pkts);
}

#[test]
fn one_segment_goes_out_unchanged() {
    let p = tcp4(5, 1, TCP_ACK, &data(500, 1));
    assert_eq!(coalesced(std::slice::from_ref(&p)), vec![(VnetHdr::default(), p)]);
}

#[test]
fn push_says_which_packets_it_holds() {
    let mut udp = tcp4(1, 4, TCP_ACK, &data(100, 3));
    udp[9] = 17;
    let pkts =
        [tcp4(1, 1, TCP_ACK, &data(1000, 1)), tcp4(1001, 2, TCP_ACK, &data(1000, 2)), tcp4(7, 3, TCP_ACK, &[]), udp];
    let mut c = Coalescer::default();
    let mut written = 0;
    let mut w = |_: &VnetHdr, _: &[&[u8]]| written += 1;
    assert!(c.push(&pkts[0], &mut w), "a data segment opens a flow");
    assert!(c.push(&pkts[1], &mut w), "and the next joins it");
    assert!(!c.push(&pkts[2], &mut w), "a pure ACK is written as it is");
    assert!(!c.push(&pkts[3], &mut w), "not TCP");
    c.flush(&mut w);
    assert_eq!(written, 3, "the pure ACK (after the flow it belongs to), the UDP packet, the super-packet");
    assert_eq!(coalesce(pkts.iter().map(Vec::as_slice), &mut |_, _| {}), 2, "the segments held");
}

#[test]
fn what_breaks_a_flow() {
    let base = flow4(3, 1000);
    // A gap in the sequence numbers.
    let mut gap = base.clone();
    gap[2] = tcp4(1000 + 2000 + 1, 42, TCP_ACK, &data(1000, 2));
    assert_eq!(coalesced(&gap).len(), 3, "before the gap, the odd one, and the next which follows neither");
    // A segment after the PSH one starts a new super-packet.
    let mut after_psh = base.clone();
    after_psh.push(tcp4(1000 + 3000 + 100, 44, TCP_ACK, &data(1000, 4)));
    assert_eq!(coalesced(&after_psh).len(), 2);
    // A larger segment than the first, and a short one followed by more.
    let grow = vec![tcp4(0, 1, TCP_ACK, &data(500, 0)), tcp4(500, 2, TCP_ACK, &data(600, 0))];
    assert_eq!(coalesced(&grow).len(), 2);
    let short = vec![
        tcp4(0, 1, TCP_ACK, &data(500, 0)),
        tcp4(500, 2, TCP_ACK, &data(100, 0)),
        tcp4(600, 3, TCP_ACK, &data(500, 0)),
    ];
    assert_eq!(coalesced(&short).len(), 2);
    // IP ids that do not follow each other.
    let ids = vec![tcp4(0, 1, TCP_ACK, &data(500, 0)), tcp4(500, 9, TCP_ACK, &data(500, 0))];
    assert_eq!(coalesced(&ids).len(), 2);
    // A different window (other header bytes) splits.
    let mut win = tcp4(500, 2, TCP_ACK, &data(500, 0));
    win[20 + 15] ^= 1;
    let c = !fold(sum(&win[20..], Ip { v6: false, hlen: 20, proto: PROTO_TCP }.pseudo(&win, win.len() - 20)));
    win[36..38].fill(0);
    let c2 = !fold(sum(&win[20..], Ip { v6: false, hlen: 20, proto: PROTO_TCP }.pseudo(&win, win.len() - 20)));
    assert_ne!(c, c2);
    win[36..38].copy_from_slice(&c2.to_be_bytes());
    assert_eq!(coalesced(&[tcp4(0, 1, TCP_ACK, &data(500, 0)), win]).len(), 2);
}

#[test]
fn a_segment_that_cannot_join_stays_alone_and_in_order() {
    let mut pkts = flow4(3, 1000);
    let last = pkts.len() - 1;
    pkts[1][20 + 13] |= TCP_FIN; // not ACK or ACK+PSH: no candidate
    let out = coalesced(&pkts);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].1, pkts[0], "the flow before it is flushed first");
    assert_eq!(out[1], (VnetHdr::default(), pkts[1].clone()));
    assert_eq!(out[2].1.len(), 52 + 1000 + 100, "segments 2 and 3 join after it");
    assert_eq!(split(&out[2].0, &out[2].1).unwrap(), pkts[2..=last].to_vec());
}

#[test]
fn a_segment_checksum_is_not_read_but_rewritten() {
    // Decrypted data is authenticated: a wrong TCP checksum (which a peer
    // can only put there on purpose) does not keep a segment out, and the
    // super-packet's checksum is the kernel's to compute.
    let mut pkts = flow4(3, 1000);
    pkts[1][60] ^= 0x55;
    let out = coalesced(&pkts);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.flags, F_NEEDS_CSUM);
    let segs = split(&out[0].0, &out[0].1).unwrap();
    assert_eq!(segs.len(), pkts.len());
    assert_eq!((&segs[0], &segs[2..]), (&pkts[0], &pkts[2..]));
    assert_eq!(segs[1][..36], pkts[1][..36]);
    assert_eq!(segs[1][38..], pkts[1][38..], "the payload is carried as it came");
    assert_ne!(segs[1][36..38], pkts[1][36..38]);
    assert_eq!(
        fold(sum(&segs[1][20..], Ip { v6: false, hlen: 20, proto: PROTO_TCP }.pseudo(&segs[1], segs[1].len() - 20))),
        0xffff
    );
}

#[test]
fn other_packets_pass_plain_and_flows_interleave() {
    let a = flow4(2, 800);
    let mut b: Vec<Vec<u8>> = (0..3).map(|i| tcp4(9000 + i * 700, 7 + i as u16, TCP_ACK, &data(700, 9))).collect();
    for p in &mut b {
        p[20..22].copy_from_slice(&[0xc3, 0x51]); // another source port
        p[36..38].fill(0);
        let c = !fold(sum(&p[20..], Ip { v6: false, hlen: 20, proto: PROTO_TCP }.pseudo(p, p.len() - 20)));
        p[36..38].copy_from_slice(&c.to_be_bytes());
    }
    let mut udp = tcp4(0, 1, TCP_ACK, &data(10, 0));
    udp[9] = PROTO_UDP;
    let batch = vec![a[0].clone(), b[0].clone(), udp.clone(), a[1].clone(), b[1].clone(), a[2].clone(), b[2].clone()];
    let out = coalesced(&batch);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], (VnetHdr::default(), udp));
    assert_eq!(split(&out[1].0, &out[1].1).unwrap(), a);
    assert_eq!(split(&out[2].0, &out[2].1).unwrap(), b);
}

#[test]
fn flows_and_size_are_bounded() {
    // More flows than MAX_FLOWS: the oldest is written early, nothing lost.
    let pkts: Vec<Vec<u8>> = (0..MAX_FLOWS + 3)
        .map(|i| {
            let mut p = tcp4(0, 1, TCP_ACK, &data(100, 0));
            p[16..20].copy_from_slice(&[198, 19, 0, 20 + i as u8]);
            p[10..12].fill(0);
            let c = !fold(sum(&p[..20], 0));
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p[36..38].fill(0);
            let c = !fold(sum(&p[20..], Ip { v6: false, hlen: 20, proto: PROTO_TCP }.pseudo(&p, p.len() - 20)));
            p[36..38].copy_from_slice(&c.to_be_bytes());
            p
        })
        .collect();
    let mut c = Coalescer::default();
    let mut early = 0;
    for p in &pkts {
        c.push(p, &mut |_, _| early += 1);
        assert!(c.open <= MAX_FLOWS);
    }
    assert_eq!(early, 3);
    let mut rest = 0;
    c.flush(&mut |_, _| rest += 1);
    assert_eq!(rest, MAX_FLOWS);
    // 60 segments of 1400 bytes: no super-packet over 64 KB.
    let big: Vec<Vec<u8>> = (0..60).map(|i| tcp4(i * 1400, i as u16, TCP_ACK, &data(1400, 1))).collect();
    let out = coalesced(&big);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(_, p)| p.len() <= MAX_SUPER));
    let back: Vec<Vec<u8>> = out.iter().flat_map(|(h, p)| split(h, p).unwrap()).collect();
    assert_eq!(back, big);
}

#[test]
fn a_partial_checksum_is_completed() {
    let good = tcp4(1, 2, TCP_ACK | TCP_PSH, &data(333, 3));
    let mut partial = good.clone();
    let ps = fold(Ip { v6: false, hlen: 20, proto: PROTO_TCP }.pseudo(&good, good.len() - 20));
    partial[36..38].copy_from_slice(&ps.to_be_bytes());
    let h = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 20, csum_offset: 16, ..VnetHdr::default() };
    assert_eq!(split(&h, &partial).unwrap(), vec![good.clone()]);
    assert_eq!(split(&VnetHdr::default(), &good).unwrap(), vec![good.clone()], "no flag: untouched");
    let far = VnetHdr { csum_start: good.len() as u16, ..h };
    assert!(split(&far, &good).is_err());
}

#[test]
fn udp_super_packets_split_with_checksums() {
    let payload = data(3000, 5);
    let mut p = vec![0u8; 20 + 8 + payload.len()];
    p[0] = 0x45;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = PROTO_UDP;
    p[12..16].copy_from_slice(&DST4);
    p[16..20].copy_from_slice(&SRC4);
    p[20..24].copy_from_slice(&[0x13, 0x89, 0x9c, 0x40]);
    p[28..].copy_from_slice(&payload);
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_UDP_L4,
        gso_size: 1200,
        csum_start: 20,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    let segs = split(&h, &p).unwrap();
    assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), vec![1228, 1228, 628]);
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(fold(sum(&s[..20], 0)), 0xffff);
        assert_eq!(u16::from_be_bytes([s[4], s[5]]), i as u16, "ids follow each other");
        assert_eq!(u16::from_be_bytes([s[24], s[25]]) as usize, s.len() - 20);
        assert_eq!(fold(sum(&s[20..], Ip { v6: false, hlen: 20, proto: PROTO_UDP }.pseudo(s, s.len() - 20))), 0xffff);
        assert_eq!(&s[28..], &payload[i * 1200..(i * 1200 + 1200).min(3000)]);
    }
}

#[test]
fn bad_super_packets_are_refused() {
    let sup = tcp4(0, 0, TCP_ACK, &data(4000, 0));
    let tso = VnetHdr { gso_type: GSO_TCPV4, gso_size: 1000, ..VnetHdr::default() };
    assert_eq!(split(&tso, &sup).unwrap().len(), 4);
    assert!(split(&VnetHdr { gso_type: GSO_TCPV6, ..tso }, &sup).is_err(), "IPv4 packet, IPv6 type");
    assert!(split(&VnetHdr { gso_type: GSO_UDP_L4, ..tso }, &sup).is_err(), "TCP packet, UDP type");
    assert!(split(&VnetHdr { gso_type: 3, ..tso }, &sup).is_err(), "UFO is not offered");
    assert!(split(&VnetHdr { gso_size: 0, ..tso }, &sup).is_err());
    assert!(split(&VnetHdr { gso_size: 3000, ..tso }, &sup).is_err(), "larger than the buffer");
    let mut lying = sup.clone();
    lying[2..4].copy_from_slice(&100u16.to_be_bytes());
    assert!(split(&tso, &lying).is_err(), "length field does not match");
}

#[test]
fn truncated_and_mangled_input_never_panics() {
    let sup = tcp4(0, 0, TCP_ACK, &data(3000, 0));
    let v6 = tcp6(0, TCP_ACK, &data(300, 0));
    for gso in [GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, 0x81, 200] {
        for cut in 0..=sup.len().min(200) {
            for p in [&sup[..cut], &v6[..cut.min(v6.len())]] {
                let h = VnetHdr {
                    flags: F_NEEDS_CSUM,
                    gso_type: gso,
                    gso_size: 536,
                    csum_start: 20,
                    csum_offset: 16,
                    hdr_len: 0,
                };
                let _ = split(&h, p);
                coalesce([p, p], &mut |_, _| {});
            }
        }
    }
    let mut odd = sup.clone();
    odd[20 + 12] = 0xf0; // data offset 60, beyond a short packet
    let _ = coalesced(&[odd[..70].to_vec(), odd.clone()]);
}
