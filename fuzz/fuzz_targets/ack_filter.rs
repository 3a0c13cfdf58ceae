//! A receive batch of packets (each a 2-byte big-endian length and its
//! bytes), filtered twice through one ACK filter, as two batches in a
//! row: nothing panics, what is kept is unchanged and in order, the count
//! is the number dropped, only an IPv4 or IPv6 TCP packet of exactly a
//! TCP header's length is dropped, and never the last packet of a batch
//! (nothing can supersede it).
#![no_main]

use vpnsyncd_engine::ackfilter::{AckFilter, MAX_BATCH};

fn packets(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < MAX_BATCH {
        let n = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
        out.push(&data[2..2 + n]);
        data = &data[2 + n..];
    }
    out
}

/// Whether `p` is TCP over IPv4 or IPv6 with no payload past a TCP header.
fn bare_tcp(p: &[u8]) -> bool {
    let l4 = match p.first().map(|b| b >> 4) {
        Some(4) if p.len() > 9 && p[9] == 6 => usize::from(p[0] & 0x0f) * 4,
        Some(6) if p.len() > 6 && p[6] == 6 => 40,
        _ => return false,
    };
    p.get(l4 + 12).is_some_and(|&d| usize::from(d >> 4) * 4 == p.len() - l4)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let pkts = packets(data);
    let mut f = AckFilter::new();
    for round in 0..2 {
        let mut batch: Vec<Option<&[u8]>> = pkts.iter().map(|p| Some(*p)).collect();
        let dropped = f.filter(&mut batch);
        assert_eq!(dropped, batch.iter().filter(|p| p.is_none()).count(), "round {round}");
        for (kept, orig) in batch.iter().zip(&pkts) {
            match kept {
                Some(k) => assert_eq!(k, orig, "a kept packet is unchanged"),
                None => assert!(bare_tcp(orig), "only a bare TCP header is dropped"),
            }
        }
        assert!(batch.last().is_none_or(|p| p.is_some()), "the last packet is kept");
    }
});
