//! IPv4 networks written `a.b.c.d/len`, for the client network and pushed
//! routes.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network. `addr` has no host bits set (the parser refuses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    /// The mask as a number; `prefix` is at most 32.
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.addr)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| format!("\"{s}\" is not a network: write it as a.b.c.d/len"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("\"{a}\" is not an IPv4 address"))?;
        let prefix: u8 = match p.parse() {
            Ok(n) if n <= 32 => n,
            _ => return Err(format!("\"{p}\" is not a prefix length (0 to 32)")),
        };
        let net = Ipv4Net { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            let fixed = Ipv4Net { addr: Ipv4Addr::from(u32::from(addr) & net.mask()), prefix };
            return Err(format!("{s} has host bits set; did you mean {fixed}?"));
        }
        Ok(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let n: Ipv4Net = "10.8.0.0/24".parse().unwrap();
        assert_eq!(n.to_string(), "10.8.0.0/24");
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 8, 0, 255));
        assert!(n.contains(Ipv4Addr::new(10, 8, 0, 77)));
        assert!(!n.contains(Ipv4Addr::new(10, 8, 1, 0)));
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
    }

    #[test]
    fn refuses_bad_networks() {
        assert_eq!(
            "10.8.0.1/24".parse::<Ipv4Net>().unwrap_err(),
            "10.8.0.1/24 has host bits set; did you mean 10.8.0.0/24?"
        );
        assert!("10.8.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.8.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.8.0/24".parse::<Ipv4Net>().is_err());
    }
}
