//! What a tun with a virtio_net_hdr reads (header, then a packet): the
//! segmentation refuses, never panics, and says how many packets it made;
//! those packets and the raw input then go through the receive-side
//! coalescer, whose every super-packet must split again, into exactly as
//! many packets as went in.
#![no_main]

use vpnsyncd_engine::offload::{coalesce, segment, Piece, VnetHdr, GSO_NONE, VNET_HDR_LEN};

/// The packets `segment` hands out, each written whole.
fn split(h: &VnetHdr, pkt: &mut [u8], max: usize) -> Result<Vec<Vec<u8>>, vpnsyncd_engine::offload::Refused> {
    let mut out = Vec::new();
    let n = segment(h, pkt, max, &mut |p: &Piece| {
        let mut b = vec![0u8; p.size()];
        p.write(&mut b);
        out.push(b);
    })?;
    assert_eq!(n, out.len());
    Ok(out)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(h) = VnetHdr::decode(data) else { return };
    let raw = &data[VNET_HDR_LEN..];
    let mut segs = split(&h, &mut raw.to_vec(), 2048).unwrap_or_default();
    segs.push(raw.to_vec());
    let mut outs = Vec::new();
    coalesce(segs.iter().map(Vec::as_slice), &mut |h, parts| outs.push((*h, parts.concat())));
    let mut back = 0;
    for (h, mut p) in outs {
        if h.gso_type == GSO_NONE {
            assert_eq!(h, VnetHdr::default(), "a plain packet has a zero header");
            back += 1;
        } else {
            back += split(&h, &mut p, 65535).expect("a coalesced packet splits").len();
        }
    }
    assert_eq!(back, segs.len());
});
