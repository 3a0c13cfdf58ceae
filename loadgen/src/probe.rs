//! The per-client probe of `--ping-interval`: an ICMP echo request through
//! the tunnel, from the client's pushed address to `--ping-to` (the
//! server's tunnel address, which its kernel answers). OpenVPN keepalive
//! pings are not answered, each side sends its own when idle, so they
//! cannot tell when a client's data path works again after a failover; an
//! echo answered through the tunnel does, at the interval's resolution;
//! `--ping-fast` refines it where it matters: after the mark, a client
//! whose answers have not resumed yet sends one every `--ping-fast`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Bytes of the echo's payload after the ICMP header.
const PAYLOAD: usize = 8;

/// One client's echo schedule and what its answers showed.
pub struct Probe {
    next: Option<Instant>,
    /// When the last echo went out.
    last: Option<Instant>,
    seq: u16,
    /// The client's session was up when the mark came (it is measured).
    pub armed: bool,
    /// The first echo answered at or after the mark.
    pub resumed: Option<Instant>,
    /// The key id data went out under last (a change is a renegotiation).
    pub key_id: Option<u8>,
}

impl Probe {
    pub fn new() -> Probe {
        Probe { next: None, last: None, seq: 0, armed: false, resumed: None, key_id: None }
    }

    /// The echo to send now, if one is due: the first one `interval` after
    /// the session came up (its handshake time spreads the clients), then
    /// one every `interval`; with `fast`, also one `fast` after the last.
    pub fn due(
        &mut self,
        now: Instant,
        interval: Duration,
        fast: Option<Duration>,
        id: u16,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Option<Vec<u8>> {
        let next = *self.next.get_or_insert(now + interval);
        let fast_due = matches!((fast, self.last), (Some(f), Some(l)) if now >= l + f);
        if now < next && !fast_due {
            return None;
        }
        if now >= next {
            // On time keeps the phase; a whole interval late (a slow loop) is
            // one echo now and the next an interval on, not a burst.
            self.next = Some(if now < next + interval { next + interval } else { now + interval });
        }
        self.last = Some(now);
        self.seq = self.seq.wrapping_add(1);
        Some(echo_request(src, dst, id, self.seq))
    }

    /// The session started over: no echo until it is up again.
    pub fn reset(&mut self) {
        self.next = None;
        self.last = None;
        self.key_id = None;
    }
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo request from `src` to `dst`.
pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    let len = 20 + 8 + PAYLOAD;
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64; // TTL
    p[9] = 1; // ICMP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[20] = 8; // echo request
    p[24..26].copy_from_slice(&id.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p[28..].copy_from_slice(b"vpnsyncd");
    let icmp_sum = checksum(&p[20..]);
    p[22..24].copy_from_slice(&icmp_sum.to_be_bytes());
    p
}

/// `packet` (a payload out of the tunnel) is an ICMP echo reply from `from`.
pub fn is_echo_reply(packet: &[u8], from: Ipv4Addr) -> bool {
    let Some(&vihl) = packet.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    vihl >> 4 == 4
        && ihl >= 20
        && packet.len() > ihl
        && packet[9] == 1
        && packet[12..16] == from.octets()
        && packet[ihl] == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);

    #[test]
    fn the_echo_request_has_valid_checksums() {
        let p = echo_request(SRC, DST, 7, 1);
        assert_eq!(p.len(), 36);
        // A header with its checksum in place sums to zero.
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(checksum(&p[20..]), 0);
        assert_eq!((p[20], &p[24..28]), (8, &[0, 7, 0, 1][..]));
    }

    #[test]
    fn only_an_echo_reply_from_the_target_counts() {
        let mut reply = echo_request(DST, SRC, 7, 1);
        reply[20] = 0;
        assert!(is_echo_reply(&reply, DST));
        assert!(!is_echo_reply(&reply, SRC), "from another address");
        assert!(!is_echo_reply(&echo_request(DST, SRC, 7, 1), DST), "a request is no answer");
        assert!(!is_echo_reply(&reply[..20], DST), "truncated");
        assert!(!is_echo_reply(&[], DST));
        let mut v6 = reply.clone();
        v6[0] = 0x60;
        assert!(!is_echo_reply(&v6, DST));
    }

    #[test]
    fn echoes_come_every_interval_without_a_burst_after_a_stall() {
        let t0 = Instant::now();
        let i = Duration::from_secs(1);
        let mut p = Probe::new();
        assert!(p.due(t0, i, None, 1, SRC, DST).is_none(), "the first one waits an interval");
        assert!(p.due(t0 + i, i, None, 1, SRC, DST).is_some());
        assert!(p.due(t0 + i, i, None, 1, SRC, DST).is_none());
        // Five intervals late: one echo, then the next a full interval on.
        assert!(p.due(t0 + i * 7, i, None, 1, SRC, DST).is_some());
        assert!(p.due(t0 + i * 7 + i / 2, i, None, 1, SRC, DST).is_none());
        assert!(p.due(t0 + i * 8, i, None, 1, SRC, DST).is_some());
        p.reset();
        assert!(p.due(t0 + i * 9, i, None, 1, SRC, DST).is_none(), "after a restart it waits again");
    }

    #[test]
    fn fast_echoes_come_between_the_regular_ones() {
        let t0 = Instant::now();
        let (i, f) = (Duration::from_secs(1), Some(Duration::from_millis(100)));
        let mut p = Probe::new();
        assert!(p.due(t0, i, f, 1, SRC, DST).is_none());
        assert!(p.due(t0 + i, i, f, 1, SRC, DST).is_some());
        let ms = |n| t0 + i + Duration::from_millis(n);
        assert!(p.due(ms(50), i, f, 1, SRC, DST).is_none());
        assert!(p.due(ms(100), i, f, 1, SRC, DST).is_some());
        assert!(p.due(ms(150), i, None, 1, SRC, DST).is_none(), "back to the interval");
        assert!(p.due(ms(250), i, None, 1, SRC, DST).is_none());
        assert!(p.due(ms(1000), i, None, 1, SRC, DST).is_some(), "the phase is kept");
    }
}
