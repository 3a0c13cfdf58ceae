//! The tun device: created and addressed by the parent, whose descriptor the
//! engine receives. The device is not persistent, so it (and the connected
//! route of the client network) disappears when the last descriptor closes,
//! i.e. when the daemon exits, even after a crash.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

/// The tun MTU; 1500 matches the stock client's default tun-mtu.
pub const TUN_MTU: i32 = 1500;

/// Creates (Linux) or opens (OpenBSD) the tun device `name`, gives it
/// `addr/prefix`, sets the MTU and brings it up. The flag says whether
/// every read and write carries a virtio_net_hdr (Linux `IFF_VNET_HDR`,
/// with the offloads of [`sys::create`]): the engine then moves 64 KB
/// super-packets (engine/src/offload.rs). `queues` descriptors, one per
/// data thread: more than one is a Linux multi-queue device
/// (`IFF_MULTI_QUEUE`), which hands each flow's packets to the queue that
/// last wrote one of the flow (the kernel's flow table), so a session's
/// traffic is read by the thread that serves it (engine/src/shard.rs).
pub fn open(name: &str, addr: Ipv4Addr, prefix: u8, queues: usize) -> io::Result<(Vec<OwnedFd>, bool)> {
    let (fds, vnet) = sys::create(name, queues)?;
    sys::configure(name, addr, prefix).map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
    Ok((fds, vnet))
}

/// The netmask of a prefix length.
pub fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0))
}

pub(crate) fn ifname(name: &str) -> io::Result<[libc::c_char; libc::IFNAMSIZ]> {
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name \"{name}\"")));
    }
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() },
        sin_zero: [0; 8],
        #[cfg(target_os = "openbsd")]
        sin_len: std::mem::size_of::<libc::sockaddr_in>() as u8,
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; we copy bytes.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Runs one interface ioctl on a throwaway AF_INET socket.
fn ifioctl<T>(req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    family_ioctl(libc::AF_INET, req, arg)
}

/// Runs one interface ioctl on a throwaway socket of `family` (IPv6
/// addresses are set through an AF_INET6 one: crate::tun6).
pub(crate) fn family_ioctl<T>(family: libc::c_int, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let s = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is a fresh descriptor we own.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: the callers pass the structure each request takes.
    #[allow(clippy::useless_conversion)]
    if unsafe { libc::ioctl(s.as_raw_fd(), req.try_into().unwrap_or_default(), arg as *mut T) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(target_os = "linux")]
mod sys {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd};

    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

    fn ifreq(name: &str) -> io::Result<libc::ifreq> {
        // SAFETY: ifreq is plain old data; all-zero is valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name = ifname(name)?;
        Ok(ifr)
    }

    /// _IOW('T', 208, unsigned int) from <linux/if_tun.h>.
    const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
    const IFF_VNET_HDR: libc::c_int = 0x4000;
    const TUN_F_CSUM: libc::c_ulong = 0x01;
    const TUN_F_TSO4: libc::c_ulong = 0x02;
    const TUN_F_TSO6: libc::c_ulong = 0x04;
    /// UDP segmentation offload, Linux 6.2 and later.
    const TUN_F_USO4: libc::c_ulong = 0x20;
    const TUN_F_USO6: libc::c_ulong = 0x40;

    /// `IFF_MULTI_QUEUE` from <linux/if_tun.h>.
    const IFF_MULTI_QUEUE: libc::c_int = 0x0100;

    /// Opens the device with a virtio_net_hdr on every packet, falling
    /// back to plain packets if the kernel refuses `IFF_VNET_HDR`; with
    /// `queues` > 1, as that many queues of one multi-queue device.
    pub fn create(name: &str, queues: usize) -> io::Result<(Vec<OwnedFd>, bool)> {
        let multi = if queues > 1 { IFF_MULTI_QUEUE } else { 0 };
        let plain = libc::IFF_TUN | libc::IFF_NO_PI | multi;
        let first = open_queue(name, plain | IFF_VNET_HDR);
        let (first, vnet) = match first {
            Ok(fd) => (fd, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::info!("{name}: no IFF_VNET_HDR ({e}): one packet per tun read and write");
                (open_queue(name, plain).map_err(|e| busy(name, e))?, false)
            }
            Err(e) => return Err(busy(name, e)),
        };
        let flags = if vnet { plain | IFF_VNET_HDR } else { plain };
        let mut fds = vec![first];
        for _ in 1..queues {
            fds.push(open_queue(name, flags).map_err(|e| {
                io::Error::new(e.kind(), format!("{name}: queue {} of {queues} (data-threads): {e}", fds.len() + 1))
            })?);
        }
        if vnet {
            offload(&fds[0], name);
        }
        Ok((fds, vnet))
    }

    fn busy(name: &str, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{name}: TUNSETIFF: {e} (is {name} in use by another program?)"))
    }

    /// One descriptor of the device, attached with `flags`.
    fn open_queue(name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
        // SAFETY: open(2) with a static path.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd == -1 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("/dev/net/tun: {e} (is the tun module loaded?)")));
        }
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ifr = ifreq(name)?;
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF takes an ifreq.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// Lets the kernel hand over unfinished checksums and TCP (and, where
    /// it can, UDP) super-packets. A kernel that refuses still exchanges
    /// plain packets behind the header.
    fn offload(fd: &OwnedFd, name: &str) {
        let tcp = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        for (flags, what) in [(tcp | TUN_F_USO4 | TUN_F_USO6, "csum tso4 tso6 uso4 uso6"), (tcp, "csum tso4 tso6")] {
            // SAFETY: TUNSETOFFLOAD takes the flags as its argument.
            if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, flags) } == 0 {
                log::info!("{name}: offloads {what}");
                return;
            }
        }
        log::info!("{name}: no offloads ({})", io::Error::last_os_error());
    }

    pub fn configure(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut ifr = ifreq(name)?;
        ifr.ifr_ifru.ifru_addr = sockaddr_in(addr);
        ifioctl(libc::SIOCSIFADDR, &mut ifr)?;
        let mut ifr = ifreq(name)?;
        ifr.ifr_ifru.ifru_netmask = sockaddr_in(netmask(prefix));
        ifioctl(libc::SIOCSIFNETMASK, &mut ifr)?;
        let mut ifr = ifreq(name)?;
        ifr.ifr_ifru.ifru_mtu = TUN_MTU;
        ifioctl(libc::SIOCSIFMTU, &mut ifr)?;
        let mut ifr = ifreq(name)?;
        ifioctl(libc::SIOCGIFFLAGS, &mut ifr)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        ifioctl(libc::SIOCSIFFLAGS, &mut ifr)
    }
}

/// OpenBSD: /dev/tunN exists already; the address is set with SIOCAIFADDR
/// (which also brings the interface up), the MTU with SIOCSIFMTU.
/// Not compiled on Linux: keep it small.
#[cfg(target_os = "openbsd")]
mod sys {
    use super::*;
    use std::os::fd::FromRawFd;

    /// One queue only: `data-threads` above 1 is refused off Linux.
    pub fn create(name: &str, _queues: usize) -> io::Result<(Vec<OwnedFd>, bool)> {
        let path = std::ffi::CString::new(format!("/dev/{name}")).map_err(|_| io::Error::other("NUL in name"))?;
        // SAFETY: open(2) on a valid C string.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        Ok((vec![unsafe { OwnedFd::from_raw_fd(fd) }], false))
    }

    pub fn configure(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        #[repr(C)]
        struct InAliasreq {
            name: [libc::c_char; libc::IFNAMSIZ],
            addr: libc::sockaddr,
            dstaddr: libc::sockaddr,
            mask: libc::sockaddr,
        }
        // _IOW('i', 26, struct in_aliasreq) from <sys/sockio.h>
        const SIOCAIFADDR: libc::c_ulong = 0x8040_691a;
        const _: () = assert!(std::mem::size_of::<InAliasreq>() == 0x40, "SIOCAIFADDR encodes a 64-byte request");
        let mut req = InAliasreq {
            name: ifname(name)?,
            addr: sockaddr_in(addr),
            dstaddr: sockaddr_in(addr),
            mask: sockaddr_in(netmask(prefix)),
        };
        // SIOCAIFADDR takes an in_aliasreq; layout as in <netinet/in_var.h>.
        ifioctl(SIOCAIFADDR, &mut req)?;
        // _IOW('i', 127, struct ifreq); ifr_mtu overlays ifru_metric (<net/if.h>).
        const SIOCSIFMTU: libc::c_ulong = 0x8020_697f;
        const _: () = assert!(std::mem::size_of::<libc::ifreq>() == 32, "SIOCSIFMTU encodes a 32-byte ifreq");
        // SAFETY: ifreq is plain old data; all-zero is valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name = ifname(name)?;
        ifr.ifr_ifru.ifru_metric = TUN_MTU;
        ifioctl(SIOCSIFMTU, &mut ifr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(17), Ipv4Addr::new(255, 255, 128, 0));
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(ifname("tun0").is_ok());
        assert!(ifname("").is_err());
        assert!(ifname("a-name-that-is-far-too-long").is_err());
    }
}
