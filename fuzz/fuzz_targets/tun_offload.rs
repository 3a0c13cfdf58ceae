//! What a tun with a virtio_net_hdr reads (header, then a packet): the
//! segmentation refuses, never panics, and says how many packets it made;
//! those packets and the raw input then go through the receive-side
//! coalescer, whose every super-packet must split again, into exactly as
//! many packets as went in.
#![no_main]

use vpnsyncd_engine::offload::{segment, Coalescer, VnetHdr, GSO_NONE, VNET_HDR_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(h) = VnetHdr::decode(data) else { return };
    let raw = &data[VNET_HDR_LEN..];
    let mut scratch = vec![0u8; 2048];
    let mut segs = Vec::new();
    if let Ok(n) = segment(&h, &mut raw.to_vec(), &mut scratch, &mut |s| segs.push(s.to_vec())) {
        assert_eq!(n, segs.len());
    }
    segs.push(raw.to_vec());
    let mut outs = Vec::new();
    let mut c = Coalescer::new();
    for s in &segs {
        let before = outs.len();
        let held = c.push(s, &mut |h, p| outs.push((*h, p.to_vec())));
        // A packet not held was written at once, as the last write.
        assert!(held || outs.last().is_some_and(|(_, p)| p == s) && outs.len() > before, "not held, not written");
    }
    c.flush(&mut |h, p| outs.push((*h, p.to_vec())));
    let mut big = vec![0u8; 65535];
    let mut back = 0;
    for (h, mut p) in outs {
        if h.gso_type == GSO_NONE {
            assert_eq!(h, VnetHdr::default(), "a plain packet has a zero header");
            back += 1;
        } else {
            back += segment(&h, &mut p, &mut big, &mut |_| {}).expect("a coalesced packet splits");
        }
    }
    assert_eq!(back, segs.len());
});
