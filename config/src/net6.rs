//! The IPv6 client network (`client network6 NET/len`) and how addresses in
//! it are chosen: the server takes host 1 and a client the same host part
//! as its IPv4 address has in the IPv4 client network. One pool table (the
//! IPv4 one) thus decides both addresses, and a client's IPv6 address is as
//! stable as its IPv4 lease, across reconnects and failovers alike.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::Ipv4Net;

/// An IPv6 network. `addr` has no host bits set (the parser refuses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Net {
    fn mask(&self) -> u128 {
        u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0)
    }

    pub fn contains(&self, a: Ipv6Addr) -> bool {
        u128::from(a) & self.mask() == u128::from(self.addr)
    }

    /// The server's own address: host 1, like the IPv4 side.
    pub fn server(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) | 1)
    }

    /// The address of the client that holds `v4` in `net4`: the same host
    /// part. The configuration checks that every host part of `net4` fits.
    pub fn client(&self, net4: &Ipv4Net, v4: Ipv4Addr) -> Ipv6Addr {
        let host = u32::from(v4).wrapping_sub(u32::from(net4.addr));
        Ipv6Addr::from(u128::from(self.addr) | (u128::from(host) & !self.mask()))
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv6Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("\"{s}\" is not an IPv6 network: write it as addr/len, e.g. fd00:8::/64"))?;
        let addr: Ipv6Addr = a.parse().map_err(|_| format!("\"{a}\" is not an IPv6 address"))?;
        let prefix: u8 = match p.parse() {
            Ok(n) if n <= 128 => n,
            _ => return Err(format!("\"{p}\" is not a prefix length (0 to 128)")),
        };
        let net = Ipv6Net { addr, prefix };
        if u128::from(addr) & !net.mask() != 0 {
            let fixed = Ipv6Net { addr: Ipv6Addr::from(u128::from(addr) & net.mask()), prefix };
            return Err(format!("{s} has host bits set; did you mean {fixed}?"));
        }
        Ok(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_ipv4_host_part() {
        let n: Ipv6Net = "fd00:8::/64".parse().unwrap();
        let n4: Ipv4Net = "10.8.0.0/24".parse().unwrap();
        assert_eq!(n.to_string(), "fd00:8::/64");
        assert_eq!(n.server(), "fd00:8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(n.client(&n4, Ipv4Addr::new(10, 8, 0, 6)), "fd00:8::6".parse::<Ipv6Addr>().unwrap());
        let n4: Ipv4Net = "10.9.0.0/16".parse().unwrap();
        assert_eq!(n.client(&n4, Ipv4Addr::new(10, 9, 1, 2)), "fd00:8::102".parse::<Ipv6Addr>().unwrap());
        assert!(n.contains("fd00:8::ffff".parse().unwrap()));
        assert!(!n.contains("fd00:9::1".parse().unwrap()));
    }

    #[test]
    fn refuses_bad_networks() {
        assert_eq!(
            "fd00:8::1/64".parse::<Ipv6Net>().unwrap_err(),
            "fd00:8::1/64 has host bits set; did you mean fd00:8::/64?"
        );
        assert!("fd00::/129".parse::<Ipv6Net>().is_err());
        assert!("fd00::".parse::<Ipv6Net>().is_err());
        assert!("10.8.0.0/24".parse::<Ipv6Net>().is_err());
    }
}
