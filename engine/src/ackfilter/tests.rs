use super::*;

/// A TCP segment's description; `build` makes its bytes.
#[derive(Clone)]
struct Seg {
    v6: bool,
    sport: u16,
    ack: u32,
    flags: u8,
    /// TCP options (a multiple of 4 bytes).
    opts: Vec<u8>,
    payload: usize,
    ecn: u8,
}

fn ack(v: u32) -> Seg {
    Seg { v6: false, sport: 50000, ack: v, flags: TCP_ACK, opts: ts(v.wrapping_add(1000), 77), payload: 0, ecn: 0 }
}

/// NOP NOP timestamps, as Linux sends them.
fn ts(val: u32, ecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&val.to_be_bytes());
    o.extend_from_slice(&ecr.to_be_bytes());
    o
}

impl Seg {
    fn v6(mut self) -> Self {
        self.v6 = true;
        self
    }
    fn port(mut self, p: u16) -> Self {
        self.sport = p;
        self
    }
    fn flags(mut self, f: u8) -> Self {
        self.flags = f;
        self
    }
    fn opts(mut self, o: Vec<u8>) -> Self {
        self.opts = o;
        self
    }

    fn build(&self) -> Vec<u8> {
        let l3 = if self.v6 { 40 } else { 20 };
        let tcp = 20 + self.opts.len();
        let total = l3 + tcp + self.payload;
        let mut p = vec![0u8; total];
        if self.v6 {
            crate::offload::tests::ipv6_tcp_header(&mut p);
            p[1] = self.ecn << 4;
        } else {
            p[0] = 0x45;
            p[1] = self.ecn;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = PROTO_TCP;
            p[12..16].copy_from_slice(&[10, 8, 0, 2]);
            p[16..20].copy_from_slice(&[198, 19, 0, 10]);
        }
        let t = &mut p[l3..];
        t[0..2].copy_from_slice(&self.sport.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&12345u32.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = ((tcp / 4) as u8) << 4;
        t[13] = self.flags;
        t[14..16].copy_from_slice(&1000u16.to_be_bytes());
        t[20..tcp].copy_from_slice(&self.opts);
        p
    }
}

/// Runs `segs` through `f` as one batch; the indices kept.
fn run_with(f: &mut AckFilter, segs: &[Seg]) -> Vec<usize> {
    let bytes: Vec<Vec<u8>> = segs.iter().map(Seg::build).collect();
    let mut batch: Vec<Option<&[u8]>> = bytes.iter().map(|b| Some(&b[..])).collect();
    let dropped = f.filter(&mut batch);
    let kept: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].is_some()).collect();
    assert_eq!(kept.len() + dropped, segs.len());
    for &i in &kept {
        assert_eq!(batch[i], Some(&bytes[i][..]), "a kept packet is unchanged");
    }
    kept
}

/// A filter that already saw ACK `prev` of the first segment's flow (so
/// the batch's first ACK is known not to be a duplicate), then `segs`.
fn run(prev: u32, segs: &[Seg]) -> Vec<usize> {
    let mut f = AckFilter::new();
    run_with(&mut f, &[Seg { ack: prev, ..segs[0].clone() }]);
    run_with(&mut f, segs)
}

#[test]
fn a_run_of_acks_keeps_the_last() {
    assert_eq!(run(100, &[ack(200), ack(300), ack(400)]), [2]);
    assert_eq!(run(100, &[ack(200).v6(), ack(300).v6()]), [1], "IPv6");
}

#[test]
fn the_first_ack_of_an_unknown_flow_is_kept() {
    let mut f = AckFilter::new();
    assert_eq!(run_with(&mut f, &[ack(200), ack(300), ack(400)]), [0, 2], "200 may repeat an ACK not seen");
    assert_eq!(run_with(&mut f, &[ack(500), ack(600)]), [1], "now 400 is known");
    assert_eq!(f.dropped(), 2);
}

#[test]
fn duplicate_acks_are_kept() {
    assert_eq!(run(100, &[ack(200), ack(200), ack(200)]), [0, 1, 2]);
    assert_eq!(run(100, &[ack(200), ack(200), ack(300)]), [0, 1, 2], "the second 200 is a dup");
    assert_eq!(run(200, &[ack(200), ack(300)]), [0, 1], "a dup of the previous batch's last ACK");
    assert_eq!(run(100, &[ack(200), ack(300), ack(300)]), [1, 2]);
}

#[test]
fn an_older_ack_is_not_superseded_by_an_earlier_number() {
    assert_eq!(run(100, &[ack(300), ack(200)]), [0, 1]);
}

#[test]
fn sack_and_other_options_are_kept() {
    let mut sack = ts(2000, 77);
    sack.extend_from_slice(&[1, 1, 5, 10, 0, 0, 1, 0, 0, 0, 2, 0]);
    assert_eq!(run(100, &[ack(200).opts(sack.clone()), ack(300)]), [0, 1], "SACK kept");
    assert_eq!(run(100, &[ack(200), ack(300).opts(sack)]), [0, 1], "superseded only by a pure ACK");
    let mss = vec![2, 4, 5, 0xb4];
    assert_eq!(run(100, &[ack(200).opts(mss), ack(300)]), [0, 1], "unknown option");
    assert_eq!(run(100, &[ack(200).opts(vec![]), ack(300).opts(vec![])]), [1], "no options");
    assert_eq!(run(100, &[ack(200).opts(vec![1, 0, 0, 0]), ack(300)]), [1], "NOP, EOL and padding");
    let short = vec![1, 1, 8, 9, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(run(100, &[ack(200).opts(short), ack(300)]), [0, 1], "a malformed timestamp");
}

#[test]
fn flags_other_than_ack_are_kept() {
    for f in [0x01, 0x02, 0x04, 0x08, 0x20, 0x40, 0x80] {
        let a = ack(200).flags(TCP_ACK | f);
        assert_eq!(run(100, &[a.clone(), ack(300)]), [0, 1], "flag {f:#x} on the earlier");
        assert_eq!(run(100, &[ack(200), a.flags(TCP_ACK | f)]), [0, 1], "flag {f:#x} on the later");
    }
    let mut ae = ack(200).build();
    ae[20 + 12] |= 1;
    let later = ack(300).build();
    let mut batch = [Some(&ae[..]), Some(&later[..])];
    let mut f = AckFilter::new();
    run_with(&mut f, &[ack(100)]);
    assert_eq!(f.filter(&mut batch), 0, "the AE (reserved) bit");
}

#[test]
fn ce_marked_is_kept() {
    let mut a = ack(200);
    a.ecn = 3;
    assert_eq!(run(100, &[a.clone(), ack(300)]), [0, 1]);
    assert_eq!(run(100, &[a.v6(), ack(300).v6()]), [0, 1], "IPv6");
    let mut ect = ack(200);
    ect.ecn = 2;
    assert_eq!(run(100, &[ect, ack(300)]), [1], "ECT(0) alone is no signal");
}

#[test]
fn data_is_kept_and_stands_between() {
    let mut d = ack(250);
    d.payload = 100;
    assert_eq!(run(100, &[ack(200), d.clone(), ack(300)]), [0, 1, 2], "the next packet of the flow is data");
    assert_eq!(run(100, &[d, ack(300)]), [0, 1]);
}

#[test]
fn different_flows_are_kept() {
    let mut f = AckFilter::new();
    run_with(&mut f, &[ack(100), ack(100).port(50001), ack(100).v6()]);
    let b = [ack(200), ack(200).port(50001), ack(300).v6(), ack(300).port(50001), ack(400), ack(400).v6()];
    assert_eq!(run_with(&mut f, &b), [3, 4, 5]);
}

#[test]
fn ack_numbers_wrap() {
    assert_eq!(run(u32::MAX - 100, &[ack(u32::MAX - 10), ack(5), ack(20)]), [2]);
    assert_eq!(run(100, &[ack(5), ack(u32::MAX - 10)]), [0, 1], "u32::MAX - 10 is before 5");
}

#[test]
fn timestamps_do_not_go_back() {
    let old = ack(300).opts(ts(500, 77));
    assert_eq!(run(100, &[ack(200), old.clone()]), [0, 1], "the later one's TSval is older");
    let ecr = ack(300).opts(ts(2000, 10));
    assert_eq!(run(100, &[ack(200), ecr]), [0, 1], "its TSecr is older");
    assert_eq!(run(100, &[ack(200), ack(300).opts(vec![])]), [0, 1], "it has none");
    assert_eq!(run(100, &[ack(200).opts(vec![]), ack(300)]), [1], "the earlier has none");
}

#[test]
fn what_does_not_parse_is_kept_unchanged() {
    let mut f = AckFilter::new();
    run_with(&mut f, &[ack(100)]);
    let mut bad_len = ack(200).build();
    bad_len[3] += 1;
    let frag = {
        let mut p = ack(200).build();
        p[6] = 0x20;
        p
    };
    let short = ack(200).build()[..30].to_vec();
    let later = ack(300).build();
    for p in [&bad_len, &frag, &short, &vec![], &vec![0x45; 3]] {
        let mut batch = [Some(&p[..]), Some(&later[..]), None];
        assert_eq!(f.filter(&mut batch), 0);
        assert_eq!(batch, [Some(&p[..]), Some(&later[..]), None]);
    }
}

#[test]
fn the_flow_memory_is_bounded() {
    let mut f = AckFilter::new();
    for p in 0..(FLOWS as u16 + 10) {
        run_with(&mut f, &[ack(100).port(p)]);
    }
    assert_eq!(f.last.len(), FLOWS);
    assert_eq!(run_with(&mut f, &[ack(200).port(0), ack(300).port(0)]), [0, 1], "forgotten: kept");
    let last = FLOWS as u16 + 9;
    assert_eq!(run_with(&mut f, &[ack(200).port(last), ack(300).port(last)]), [1], "remembered");
}
