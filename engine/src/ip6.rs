//! IPv6 inside the tunnel (`client network6`): the addresses of a packet,
//! read as the session table needs them to route and to check a client's
//! source.

use std::net::Ipv6Addr;

/// The fixed IPv6 header is 40 bytes; source at 8, destination at 24.
const HEADER: usize = 40;

fn addr_at(p: &[u8], at: usize) -> Option<Ipv6Addr> {
    if p.len() < HEADER || p[0] >> 4 != 6 {
        return None;
    }
    let a: [u8; 16] = p[at..at + 16].try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

/// The source address of an IPv6 packet; `None` for anything else.
pub fn src(p: &[u8]) -> Option<Ipv6Addr> {
    addr_at(p, 8)
}

/// The destination address of an IPv6 packet; `None` for anything else.
pub fn dst(p: &[u8]) -> Option<Ipv6Addr> {
    addr_at(p, 24)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal IPv6 packet (header only, no next header) from `s` to `d`.
    pub fn packet(s: Ipv6Addr, d: Ipv6Addr) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 59, 64];
        p.extend_from_slice(&s.octets());
        p.extend_from_slice(&d.octets());
        p
    }

    #[test]
    fn reads_both_addresses_and_refuses_the_rest() {
        let (s, d) = ("fd00:8::2".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let p = packet(s, d);
        assert_eq!((src(&p), dst(&p)), (Some(s), Some(d)));
        assert_eq!(src(&p[..39]), None, "truncated");
        let mut v4 = p.clone();
        v4[0] = 0x45;
        assert_eq!(dst(&v4), None, "not IPv6");
        assert_eq!(src(&[]), None);
    }
}
