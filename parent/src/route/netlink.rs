//! Linux: routes through rtnetlink (<linux/netlink.h>, <linux/rtnetlink.h>).
//! The messages are built and read here by hand (a header, an `rtmsg`, a
//! few attributes): that keeps the layout portable and unit-tested, and
//! the parent free of a netlink stack for three requests.

use std::net::Ipv4Addr;

use vpnsyncd_config::Ipv4Net;

pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
/// The route was set by an administrator (what `ip route add` says).
const RTPROT_STATIC: u8 = 4;
/// Directly on the link: the tun device is point to point.
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_PREFSRC: u16 = 7;
/// RTM_GETROUTE: answer with the table entry that matches, not a route
/// cache entry for the host (Linux 4.13).
const RTM_F_FIB_MATCH: u32 = 0x2000;
const HDR: usize = 16;
const RTMSG: usize = 12;

/// One request for `net`: RTM_NEWROUTE (fails with EEXIST if a route to
/// it is there; the server's own packets to `net` leave from `src`, the
/// tun address, which the client routes back), RTM_DELROUTE (of our route
/// to interface `oif`) or RTM_GETROUTE (the table entry holding `net`'s
/// address).
pub fn request(ty: u16, seq: u32, net: Ipv4Net, oif: u32, src: Ipv4Addr) -> Vec<u8> {
    let (flags, dst_len, rtm_flags) = match ty {
        RTM_NEWROUTE => (NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, net.prefix, 0),
        RTM_GETROUTE => (NLM_F_REQUEST, 32, RTM_F_FIB_MATCH),
        _ => (NLM_F_REQUEST | NLM_F_ACK, net.prefix, 0),
    };
    let mut m = Vec::with_capacity(HDR + RTMSG + 16);
    m.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    m.extend_from_slice(&[AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_LINK, RTN_UNICAST]);
    m.extend_from_slice(&rtm_flags.to_ne_bytes());
    attr(&mut m, RTA_DST, &net.addr.octets());
    if ty != RTM_GETROUTE {
        attr(&mut m, RTA_OIF, &oif.to_ne_bytes());
    }
    if ty == RTM_NEWROUTE {
        attr(&mut m, RTA_PREFSRC, &src.octets());
    }
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// Appends one attribute (4-byte aligned; our payloads are 4 bytes).
fn attr(m: &mut Vec<u8>, ty: u16, data: &[u8]) {
    m.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(data);
    m.resize(m.len().next_multiple_of(4), 0);
}

/// The kernel's answer to request `seq`.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Done (an acknowledgement).
    Ack,
    /// Refused with this errno.
    Errno(i32),
    /// RTM_GETROUTE's answer: the prefix length and interface of the
    /// matching route.
    Route { dst: Option<Ipv4Addr>, dst_len: u8, oif: Option<u32> },
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Finds the answer to `seq` in what one recv returned (other messages are
/// skipped); `None` if it holds none. Never panics on a short or odd buffer.
pub fn parse(mut buf: &[u8], seq: u32) -> Result<Option<Reply>, &'static str> {
    while buf.len() >= HDR {
        let len = u32_at(buf, 0).ok_or("short netlink header")? as usize;
        if len < HDR || len > buf.len() {
            return Err("bad netlink message length");
        }
        let (msg, rest) = buf.split_at(len);
        buf = rest.get(len.next_multiple_of(4) - len..).unwrap_or(&[]);
        if u32_at(msg, 8) != Some(seq) {
            continue;
        }
        match u16_at(msg, 4) {
            Some(NLMSG_ERROR) => {
                let e = u32_at(msg, HDR).ok_or("short netlink error")? as i32;
                return Ok(Some(if e == 0 { Reply::Ack } else { Reply::Errno(-e) }));
            }
            Some(RTM_NEWROUTE) => return route(msg).map(Some),
            _ => return Err("unexpected netlink message"),
        }
    }
    Ok(None)
}

/// The destination and interface of an RTM_NEWROUTE message.
fn route(msg: &[u8]) -> Result<Reply, &'static str> {
    let dst_len = *msg.get(HDR + 1).ok_or("short rtmsg")?;
    let (mut dst, mut oif) = (None, None);
    let mut at = HDR + RTMSG;
    while let (Some(len), Some(ty)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
        let len = usize::from(len);
        if len < 4 {
            return Err("bad route attribute length");
        }
        let data = msg.get(at + 4..at + len).ok_or("bad route attribute length")?;
        match (ty, data.len()) {
            (RTA_DST, 4) => dst = Some(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (RTA_OIF, 4) => oif = u32_at(data, 0),
            _ => {}
        }
        at += len.next_multiple_of(4);
    }
    Ok(Reply::Route { dst, dst_len, oif })
}

/// The netlink socket: one request at a time, answered in a bounded wait.
#[cfg(target_os = "linux")]
pub mod sys {
    use super::*;
    use crate::route::{failed, Added, Device};
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::sync::atomic::{AtomicU32, Ordering};

    static SEQ: AtomicU32 = AtomicU32::new(1);

    fn index(name: &str) -> io::Result<u32> {
        let c = std::ffi::CString::new(name).map_err(|_| io::Error::other("NUL in name"))?;
        // SAFETY: if_nametoindex on a valid C string.
        match unsafe { libc::if_nametoindex(c.as_ptr()) } {
            0 => Err(io::Error::last_os_error()),
            i => Ok(i),
        }
    }

    fn name_of(index: u32) -> String {
        let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
        // SAFETY: the buffer holds IFNAMSIZ bytes, as if_indextoname needs.
        if unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) }.is_null() {
            return format!("interface #{index}");
        }
        // SAFETY: if_indextoname wrote a NUL-terminated name.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    }

    fn socket() -> io::Result<OwnedFd> {
        crate::route::routing_socket(libc::AF_NETLINK, libc::NETLINK_ROUTE)
    }

    /// Sends one request and waits (2 s at most a read) for its answer.
    fn ask(ty: u16, net: Ipv4Net, dev: &Device, oif: u32) -> io::Result<Reply> {
        let s = socket()?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let m = request(ty, seq, net, oif, dev.addr);
        // SAFETY: send(2) of our buffer; the kernel is the default peer.
        if unsafe { libc::send(s.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 16384];
        for _ in 0..8 {
            // SAFETY: recv(2) into our buffer of that length.
            let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n == -1 {
                return Err(io::Error::last_os_error());
            }
            if let Some(r) = parse(&buf[..n as usize], seq).map_err(io::Error::other)? {
                return Ok(r);
            }
        }
        Err(io::Error::other("no netlink answer"))
    }

    pub fn add(dev: &Device, net: Ipv4Net) -> io::Result<Added> {
        let oif = index(&dev.name)?;
        match ask(RTM_NEWROUTE, net, dev, oif).map_err(|e| failed("add", net, e))? {
            Reply::Ack => Ok(Added::New),
            Reply::Errno(libc::EEXIST) => {
                Ok(match ask(RTM_GETROUTE, net, dev, oif).map_err(|e| failed("look up", net, e))? {
                    Reply::Route { dst_len, oif: Some(o), .. } if dst_len == net.prefix && o == oif => Added::Existing,
                    Reply::Route { dst, dst_len, oif } => {
                        let dev = oif.map_or_else(|| "?".into(), name_of);
                        Added::Conflict(match dst {
                            Some(d) if d == net.addr && dst_len == net.prefix => format!("dev {dev}"),
                            d => format!("as {}/{dst_len} dev {dev}", d.unwrap_or(Ipv4Addr::UNSPECIFIED)),
                        })
                    }
                    r => Added::Conflict(format!("(its look-up answered {r:?})")),
                })
            }
            Reply::Errno(e) => Err(failed("add", net, io::Error::from_raw_os_error(e))),
            r => Err(failed("add", net, io::Error::other(format!("unexpected answer {r:?}")))),
        }
    }

    pub fn delete(dev: &Device, net: Ipv4Net) -> io::Result<()> {
        let oif = index(&dev.name)?;
        match ask(RTM_DELROUTE, net, dev, oif)? {
            Reply::Ack => Ok(()),
            Reply::Errno(e) => Err(io::Error::from_raw_os_error(e)),
            r => Err(io::Error::other(format!("unexpected answer {r:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);

    fn net() -> Ipv4Net {
        "192.168.50.0/24".parse().unwrap()
    }

    #[test]
    fn a_new_route_request() {
        let m = request(RTM_NEWROUTE, 7, net(), 3, SRC);
        assert_eq!(m.len(), HDR + RTMSG + 3 * 8);
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWROUTE));
        assert_eq!(u16_at(&m, 6), Some(0x605), "request, ack, create, excl");
        assert_eq!(u32_at(&m, 8), Some(7));
        assert_eq!(&m[16..24], &[2, 24, 0, 0, 254, 4, 253, 1]);
        assert_eq!((u16_at(&m, 28), u16_at(&m, 30)), (Some(8), Some(RTA_DST)));
        assert_eq!(&m[32..36], &[192, 168, 50, 0]);
        assert_eq!(u16_at(&m, 38), Some(RTA_OIF));
        assert_eq!(u32_at(&m, 40), Some(3));
        assert_eq!(u16_at(&m, 46), Some(RTA_PREFSRC));
        assert_eq!(&m[48..52], &[10, 8, 0, 1]);
    }

    #[test]
    fn delete_and_lookup_requests() {
        let d = request(RTM_DELROUTE, 1, net(), 3, SRC);
        assert_eq!(u16_at(&d, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(d[17], 24);
        assert_eq!(d.len(), HDR + RTMSG + 2 * 8, "no source in a deletion");
        let g = request(RTM_GETROUTE, 2, net(), 3, SRC);
        assert_eq!(u16_at(&g, 6), Some(NLM_F_REQUEST));
        assert_eq!(g[17], 32, "a look-up of the network's address");
        assert_eq!(u32_at(&g, 24), Some(RTM_F_FIB_MATCH));
        assert_eq!(g.len(), HDR + RTMSG + 8, "no interface in a look-up");
    }

    fn error(seq: u32, errno: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&(-errno).to_ne_bytes());
        m.extend_from_slice(&[0; 16]); // the request's header
        m
    }

    #[test]
    fn answers() {
        assert_eq!(parse(&error(5, 0), 5), Ok(Some(Reply::Ack)));
        assert_eq!(parse(&error(5, libc::EEXIST), 5), Ok(Some(Reply::Errno(libc::EEXIST))));
        assert_eq!(parse(&error(4, 0), 5), Ok(None), "another request's answer");
        let two = [error(4, 0), error(5, libc::EPERM)].concat();
        assert_eq!(parse(&two, 5), Ok(Some(Reply::Errno(libc::EPERM))));
        // A route answer is an RTM_NEWROUTE with the request's fields.
        let mut r = request(RTM_NEWROUTE, 9, net(), 12, SRC);
        r[4..6].copy_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        assert_eq!(
            parse(&r, 9),
            Ok(Some(Reply::Route { dst: Some(Ipv4Addr::new(192, 168, 50, 0)), dst_len: 24, oif: Some(12) }))
        );
    }

    #[test]
    fn odd_answers_are_errors_not_panics() {
        let e = error(5, 0);
        assert_eq!(parse(&e[..10], 5), Ok(None));
        let mut bad = e.clone();
        bad[..4].copy_from_slice(&200u32.to_ne_bytes());
        assert!(parse(&bad, 5).is_err());
        let mut short = e.clone();
        short[..4].copy_from_slice(&18u32.to_ne_bytes());
        assert!(parse(&short[..18], 5).is_err());
        let mut r = request(RTM_NEWROUTE, 9, net(), 12, SRC);
        r[4..6].copy_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        r[28..30].copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse(&r, 9).is_err());
        r[28..30].copy_from_slice(&0u16.to_ne_bytes());
        assert!(parse(&r, 9).is_err());
        let mut other = error(5, 0);
        other[4..6].copy_from_slice(&99u16.to_ne_bytes());
        assert!(parse(&other, 5).is_err());
    }
}
