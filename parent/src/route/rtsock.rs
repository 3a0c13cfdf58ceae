//! OpenBSD: routes through the route socket (route(4)): an `rt_msghdr`
//! (<net/route.h>) followed by the destination, gateway and netmask. The
//! route is an interface route (`route add -net NET -iface ADDR`): static,
//! no RTF_GATEWAY, its gateway the tun device's own address. The layout is
//! built and read here, portable, so that it is tested on every system.

use std::net::Ipv4Addr;

use vpnsyncd_config::Ipv4Net;

pub const RTM_ADD: u8 = 0x1;
pub const RTM_DELETE: u8 = 0x2;
pub const RTM_GET: u8 = 0x4;
const RTM_VERSION: u8 = 5;
const RTF_UP: i32 = 0x1;
const RTF_STATIC: i32 = 0x800;
const RTA_DST: i32 = 0x1;
const RTA_GATEWAY: i32 = 0x2;
const RTA_NETMASK: i32 = 0x4;
const AF_INET: u8 = 2;
/// sizeof(struct rt_msghdr) on OpenBSD's 64-bit systems: 40 bytes of
/// fields, then the 56-byte `rt_metrics`.
pub const HDRLEN: usize = 96;
const SIN_LEN: usize = 16;

/// A `sockaddr_in` as the route socket takes it (with its length byte).
fn sin(a: Ipv4Addr) -> [u8; SIN_LEN] {
    let mut s = [0u8; SIN_LEN];
    s[0] = SIN_LEN as u8;
    s[1] = AF_INET;
    s[4..8].copy_from_slice(&a.octets());
    s
}

/// One request for `net` through the interface whose address is
/// `gateway`: RTM_ADD, RTM_DELETE or RTM_GET (which leaves the gateway out
/// and is answered with the route the kernel has).
pub fn request(ty: u8, seq: i32, net: Ipv4Net, gateway: Ipv4Addr) -> Vec<u8> {
    let get = ty == RTM_GET;
    let addrs = if get { RTA_DST | RTA_NETMASK } else { RTA_DST | RTA_GATEWAY | RTA_NETMASK };
    let mut m = vec![0u8; HDRLEN];
    m[2] = RTM_VERSION;
    m[3] = ty;
    m[4..6].copy_from_slice(&(HDRLEN as u16).to_ne_bytes());
    m[12..16].copy_from_slice(&addrs.to_ne_bytes());
    m[16..20].copy_from_slice(&(RTF_UP | RTF_STATIC).to_ne_bytes());
    m[28..32].copy_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&sin(net.addr));
    if !get {
        m.extend_from_slice(&sin(gateway));
    }
    m.extend_from_slice(&sin(net.netmask()));
    let len = m.len() as u16;
    m[..2].copy_from_slice(&len.to_ne_bytes());
    m
}

/// The gateway of the route RTM_GET found.
#[derive(Debug, PartialEq, Eq)]
pub enum Gateway {
    Inet(Ipv4Addr),
    /// Another kind of address (a link-layer one: a connected route).
    Family(u8),
    None,
}

/// What an answer to our request `seq` from process `pid` says: its errno
/// and gateway; `Ok(None)` for someone else's message (the socket sees
/// every routing change).
pub fn parse(m: &[u8], pid: i32, seq: i32) -> Result<Option<(i32, Gateway)>, &'static str> {
    let int = |at: usize| m.get(at..at + 4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let short = |at: usize| m.get(at..at + 2).map(|b| usize::from(u16::from_ne_bytes([b[0], b[1]])));
    let (len, hdrlen) = (short(0).ok_or("short route message")?, short(4).ok_or("short route message")?);
    if m.get(2) != Some(&RTM_VERSION) || len > m.len() || hdrlen < 40 || hdrlen > len {
        return Err("bad route message");
    }
    if int(24) != Some(pid) || int(28) != Some(seq) {
        return Ok(None);
    }
    let (addrs, errno) = (int(12).unwrap_or(0), int(32).unwrap_or(0));
    let mut at = hdrlen;
    let mut gateway = Gateway::None;
    for bit in [RTA_DST, RTA_GATEWAY] {
        if addrs & bit == 0 {
            continue;
        }
        let sa_len = usize::from(*m.get(at).ok_or("short route message")?);
        let sa = m.get(at..at + sa_len).ok_or("bad address length")?;
        if bit == RTA_GATEWAY {
            gateway = match sa {
                [_, AF_INET, _, _, a, b, c, d, ..] => Gateway::Inet(Ipv4Addr::new(*a, *b, *c, *d)),
                [_, f, ..] => Gateway::Family(*f),
                _ => return Err("bad gateway address"),
            };
        }
        // Each address is padded to a multiple of sizeof(long).
        at += if sa_len == 0 { 8 } else { sa_len.next_multiple_of(8) };
    }
    Ok(Some((errno, gateway)))
}

/// The route socket: one write a request; RTM_GET's answer is read back.
#[cfg(target_os = "openbsd")]
pub mod sys {
    use super::*;
    use crate::route::{failed, Added, Device};
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::sync::atomic::{AtomicI32, Ordering};

    static SEQ: AtomicI32 = AtomicI32::new(1);

    fn socket() -> io::Result<OwnedFd> {
        crate::route::routing_socket(libc::AF_ROUTE, libc::AF_INET)
    }

    /// Writes one request; the kernel refuses it with the write's errno.
    fn write(s: &OwnedFd, m: &[u8]) -> io::Result<()> {
        // SAFETY: write(2) of our buffer.
        if unsafe { libc::write(s.as_raw_fd(), m.as_ptr().cast(), m.len()) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The gateway of the kernel's route to `net`.
    fn lookup(net: Ipv4Net) -> io::Result<Gateway> {
        let s = socket()?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        write(&s, &request(RTM_GET, seq, net, Ipv4Addr::UNSPECIFIED))?;
        // SAFETY: getpid(2) cannot fail.
        let pid = unsafe { libc::getpid() };
        let mut buf = vec![0u8; 2048];
        for _ in 0..64 {
            // SAFETY: read(2) into our buffer of that length.
            let n = unsafe { libc::read(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n == -1 {
                return Err(io::Error::last_os_error());
            }
            match parse(&buf[..n as usize], pid, seq).map_err(io::Error::other)? {
                Some((0, g)) => return Ok(g),
                Some((e, _)) => return Err(io::Error::from_raw_os_error(e)),
                None => {}
            }
        }
        Err(io::Error::other("no answer on the route socket"))
    }

    pub fn add(dev: &Device, net: Ipv4Net) -> io::Result<Added> {
        let s = socket().map_err(|e| failed("add", net, e))?;
        let m = request(RTM_ADD, SEQ.fetch_add(1, Ordering::Relaxed), net, dev.addr);
        match write(&s, &m) {
            Ok(()) => Ok(Added::New),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                Ok(match lookup(net).map_err(|e| failed("look up", net, e))? {
                    Gateway::Inet(a) if a == dev.addr => Added::Existing,
                    Gateway::Inet(a) => Added::Conflict(format!("via {a}")),
                    g => Added::Conflict(format!("via a gateway of another kind ({g:?})")),
                })
            }
            Err(e) => Err(failed("add", net, e)),
        }
    }

    pub fn delete(dev: &Device, net: Ipv4Net) -> io::Result<()> {
        let s = socket()?;
        write(&s, &request(RTM_DELETE, SEQ.fetch_add(1, Ordering::Relaxed), net, dev.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Ipv4Net {
        "192.168.50.0/24".parse().unwrap()
    }

    #[test]
    fn an_add_request() {
        let m = request(RTM_ADD, 3, net(), Ipv4Addr::new(10, 8, 0, 1));
        assert_eq!(m.len(), HDRLEN + 3 * SIN_LEN);
        assert_eq!(u16::from_ne_bytes([m[0], m[1]]) as usize, m.len());
        assert_eq!((m[2], m[3]), (RTM_VERSION, RTM_ADD));
        assert_eq!(i32::from_ne_bytes(m[12..16].try_into().unwrap()), 0x7, "dst, gateway, netmask");
        assert_eq!(i32::from_ne_bytes(m[16..20].try_into().unwrap()), 0x801, "up, static, no RTF_GATEWAY");
        assert_eq!(&m[HDRLEN..HDRLEN + 8], &[16, 2, 0, 0, 192, 168, 50, 0]);
        assert_eq!(&m[HDRLEN + 16..HDRLEN + 24], &[16, 2, 0, 0, 10, 8, 0, 1]);
        assert_eq!(&m[HDRLEN + 32..HDRLEN + 40], &[16, 2, 0, 0, 255, 255, 255, 0]);
        let d = request(RTM_DELETE, 5, net(), Ipv4Addr::new(10, 8, 0, 1));
        assert_eq!((d[3], d.len()), (RTM_DELETE, m.len()));
        assert_eq!(d[HDRLEN..], m[HDRLEN..], "the same route");
    }

    #[test]
    fn a_lookup_has_no_gateway() {
        let m = request(RTM_GET, 4, net(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.len(), HDRLEN + 2 * SIN_LEN);
        assert_eq!(i32::from_ne_bytes(m[12..16].try_into().unwrap()), 0x5);
        assert_eq!(&m[HDRLEN + 16..HDRLEN + 24], &[16, 2, 0, 0, 255, 255, 255, 0]);
    }

    /// The kernel's answer: our request with its pid, errno and gateway.
    fn answer(pid: i32, seq: i32, errno: i32, gw: &[u8]) -> Vec<u8> {
        let mut m = request(RTM_GET, seq, net(), Ipv4Addr::UNSPECIFIED);
        m.truncate(HDRLEN + SIN_LEN);
        m[12..16].copy_from_slice(&(RTA_DST | RTA_GATEWAY).to_ne_bytes());
        m[24..28].copy_from_slice(&pid.to_ne_bytes());
        m[32..36].copy_from_slice(&errno.to_ne_bytes());
        m.extend_from_slice(gw);
        let len = m.len() as u16;
        m[..2].copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn answers() {
        let ours = answer(42, 4, 0, &sin(Ipv4Addr::new(10, 8, 0, 1)));
        assert_eq!(parse(&ours, 42, 4), Ok(Some((0, Gateway::Inet(Ipv4Addr::new(10, 8, 0, 1))))));
        assert_eq!(parse(&ours, 43, 4), Ok(None), "another process's");
        assert_eq!(parse(&ours, 42, 5), Ok(None), "another request's");
        let link = answer(42, 4, 0, &[8, 18, 1, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&link, 42, 4), Ok(Some((0, Gateway::Family(18)))));
        let refused = answer(42, 4, 3, &[]);
        assert!(parse(&refused, 42, 4).is_err(), "announces a gateway it lacks");
    }

    #[test]
    fn odd_answers_are_errors_not_panics() {
        let ours = answer(42, 4, 0, &sin(Ipv4Addr::new(10, 8, 0, 1)));
        assert!(parse(&ours[..3], 42, 4).is_err());
        let mut v = ours.clone();
        v[2] = 4;
        assert!(parse(&v, 42, 4).is_err(), "another version");
        let mut long = ours.clone();
        long[..2].copy_from_slice(&500u16.to_ne_bytes());
        assert!(parse(&long, 42, 4).is_err());
        let mut sa = ours.clone();
        sa[HDRLEN + SIN_LEN] = 200;
        assert!(parse(&sa, 42, 4).is_err());
    }
}
