//! The sockets the parent opens for its children: client listeners, the
//! control socket, the sync socket and the route-event socket.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::socket::{setsockopt, sockopt};

fn ctx<T>(what: impl std::fmt::Display, r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// The engine's client sockets: for each of the engine's `threads`
/// (`data-threads`), one socket per `listen` address, thread by thread
/// (the engine's order, engine/src/shard.rs). Several threads share each
/// address with SO_REUSEPORT, with which Linux hands each client's
/// datagrams (by their addresses' hash) to one of the sockets.
pub fn listeners(addrs: &[SocketAddr], threads: usize) -> io::Result<Vec<OwnedFd>> {
    let shared = threads > 1;
    let all: Vec<OwnedFd> =
        (0..threads).flat_map(|_| addrs.iter().map(move |a| listener(*a, shared))).collect::<io::Result<_>>()?;
    if shared {
        for (fd, a) in all.iter().zip(addrs.iter().cycle()) {
            ctx(format!("listen on {a}: SO_ATTACH_REUSEPORT_CBPF"), steer(fd, threads))?;
        }
    }
    Ok(all)
}

/// Hands each address's datagrams to the socket of the thread that serves
/// their session (vpnsyncd_common::steer), instead of by the hash of the
/// client's addresses. Sockets join their address's group in bind order,
/// thread by thread, so the program's answer is the thread.
#[cfg(target_os = "linux")]
fn steer(fd: &OwnedFd, threads: usize) -> io::Result<()> {
    let mut prog: Vec<libc::sock_filter> = vpnsyncd_common::steer::reuseport_program(threads)
        .into_iter()
        .map(|(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
        .collect();
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    setsockopt(fd, sockopt::AttachReusePortCbpf, &fprog)?;
    Ok(())
}

/// `data-threads` above 1 is refused off Linux (vpnsyncd.conf(5)).
#[cfg(not(target_os = "linux"))]
fn steer(_: &OwnedFd, _: usize) -> io::Result<()> {
    Ok(())
}

/// A bound, non-blocking UDP socket for OpenVPN clients; `shared`: one of
/// several on the address.
fn listener(addr: SocketAddr, shared: bool) -> io::Result<OwnedFd> {
    let what = format!("listen on {addr}");
    let fd = ctx(&what, bind_any(addr, shared))?;
    let s = UdpSocket::from(fd);
    s.set_nonblocking(true)?;
    let fd = OwnedFd::from(s);
    grow_buffers(&fd, &what, LISTENER_RCVBUF, LISTENER_SNDBUF);
    Ok(fd)
}

/// A client listener's receive buffer: room for a datagram of each of
/// 10,000 clients (a small datagram is accounted at some 800 bytes), the
/// burst a new master meets when every waiting client's retry arrives at
/// once, and for bursts of handshakes while the engine is busy.
const LISTENER_RCVBUF: usize = 8 << 20;
/// Its send buffer: room for the engine's send batches to many clients.
const LISTENER_SNDBUF: usize = 4 << 20;

/// Asks for `rcv` and `snd` bytes of socket buffer. On Linux the parent
/// (root) forces them past net.core.rmem_max/wmem_max, which would
/// otherwise cap them at some 200 KiB; elsewhere (OpenBSD caps SO_RCVBUF at
/// its socket buffer limit), or unforced, the largest the system allows,
/// halving from the goal down to [`BUFFER_MIN`]. A receive buffer short of
/// the goal is logged with the fix; `what` names the socket.
fn grow_buffers(fd: &impl AsFd, what: &str, rcv: usize, snd: usize) {
    #[cfg(target_os = "linux")]
    let forced =
        setsockopt(fd, sockopt::RcvBufForce, &rcv).is_ok() && setsockopt(fd, sockopt::SndBufForce, &snd).is_ok();
    #[cfg(not(target_os = "linux"))]
    let forced = false;
    if !forced {
        let largest = |goal: usize, set: &dyn Fn(usize) -> bool| {
            let _ = std::iter::successors(Some(goal), |n| (*n > BUFFER_MIN).then_some(n / 2)).find(|&n| set(n));
        };
        largest(rcv, &|n| setsockopt(fd, sockopt::RcvBuf, &n).is_ok());
        largest(snd, &|n| setsockopt(fd, sockopt::SndBuf, &n).is_ok());
    }
    // Linux reports twice what was set (its bookkeeping share included).
    match nix::sys::socket::getsockopt(fd, sockopt::RcvBuf) {
        Ok(n) if n < rcv => log::warn!(
            "{what}: receive buffer {n} bytes, {rcv} wanted: a burst of datagrams may be dropped (run the \
             parent as root, or raise the system's socket buffer limit, net.core.rmem_max on Linux)"
        ),
        Ok(_) => {}
        Err(e) => log::warn!("{what}: cannot read the receive buffer size: {e}"),
    }
}

/// Below this a smaller buffer is not tried: the system's default stays.
const BUFFER_MIN: usize = 64 << 10;

/// A UDP socket bound to `addr` even when this machine does not hold the
/// address yet: backups listen on the virtual IP before CARP/VRRP gives it
/// to them (Linux IP_FREEBIND; OpenBSD SO_BINDANY).
fn bind_any(addr: SocketAddr, shared: bool) -> io::Result<OwnedFd> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if shared {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    #[cfg(target_os = "linux")]
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    #[cfg(target_os = "openbsd")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: `on` is a live c_int of the size we pass.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDANY,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    Ok(fd)
}

/// The control socket: root-only (0600). An existing socket that answers
/// means another vpnsyncd runs, which is an error; a stale one is replaced.
pub fn control(path: &Path) -> io::Result<OwnedFd> {
    unix_listener(path, None)
}

/// The management socket (`management`): 0600 root, or 0660 root:`group`
/// so that a monitoring user of that group may connect too.
pub fn management(m: &vpnsyncd_config::Management) -> io::Result<OwnedFd> {
    let gid = match &m.group {
        None => None,
        Some(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid),
            Ok(None) => return Err(io::Error::other(format!("management group \"{name}\": no such group"))),
            Err(e) => return Err(io::Error::other(format!("management group \"{name}\": {e}"))),
        },
    };
    unix_listener(&m.path, gid)
}

/// A listening, non-blocking unix socket at `path`, mode 0600, or 0660
/// with group `gid`. A socket there that answers means another vpnsyncd
/// runs (an error); a stale one is replaced.
fn unix_listener(path: &Path, gid: Option<nix::unistd::Gid>) -> io::Result<OwnedFd> {
    use std::os::unix::fs::PermissionsExt;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{}: another vpnsyncd is running (stop it first)", path.display()),
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return ctx(path.display(), Err(e)),
        _ => {}
    }
    // SAFETY: umask(2) cannot fail; restored right after bind.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = ctx(path.display(), l)?;
    let mode = match gid {
        None => 0o600,
        Some(g) => {
            ctx(path.display(), nix::unistd::chown(path, None, Some(g)).map_err(io::Error::from))?;
            0o660
        }
    };
    ctx(path.display(), std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))?;
    l.set_nonblocking(true)?;
    Ok(OwnedFd::from(l))
}

/// What the sync socket's buffers are asked to hold. A joining member
/// receives the whole table (10,000 sessions are some 10,000 datagrams), and
/// a new master sends a record for every session it promotes in one go;
/// with Linux's default 208 KiB (about 90 datagrams) the receiver's kernel
/// dropped part of both (docs/BENCHMARKS.md, issue 10).
const SYNC_BUFFER: usize = 8 << 20;

/// The sync socket: bound to `port`; for multicast, joined to `group` on
/// `interface` with TTL 1 and no loopback of our own datagrams.
pub fn sync(port: u16, multicast: Option<(Ipv4Addr, &str)>) -> io::Result<OwnedFd> {
    let what = format!("sync socket port {port}");
    let s = ctx(&what, UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))?;
    s.set_nonblocking(true)?;
    grow_buffers(&s, &what, SYNC_BUFFER, SYNC_BUFFER);
    if let Some((group, ifname)) = multicast {
        let ifindex =
            ctx(format!("sync interface {ifname}"), nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from))?;
        let local = interface_ipv4(ifname)?;
        join_group(&s, group, ifindex, local)
            .map_err(|e| io::Error::new(e.kind(), format!("join {group} on {ifname}: {e}")))?;
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(false)?;
    }
    Ok(OwnedFd::from(s))
}

/// Joins `group` and makes `ifindex`/`local` the outgoing multicast interface.
#[cfg(target_os = "linux")]
fn join_group(s: &UdpSocket, group: Ipv4Addr, ifindex: u32, local: Ipv4Addr) -> io::Result<()> {
    let req = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: u32::from(group).to_be() },
        imr_address: libc::in_addr { s_addr: u32::from(local).to_be() },
        imr_ifindex: ifindex as i32,
    };
    raw_setsockopt(s, libc::IP_ADD_MEMBERSHIP, &req)?;
    raw_setsockopt(s, libc::IP_MULTICAST_IF, &req)
}

/// Joins `group` and makes `local` the outgoing multicast interface (BSD
/// sockets name the interface by its address).
#[cfg(not(target_os = "linux"))]
fn join_group(s: &UdpSocket, group: Ipv4Addr, _ifindex: u32, local: Ipv4Addr) -> io::Result<()> {
    s.join_multicast_v4(&group, &local)?;
    let ifaddr = libc::in_addr { s_addr: u32::from(local).to_be() };
    raw_setsockopt(s, libc::IP_MULTICAST_IF, &ifaddr)
}

fn raw_setsockopt<T>(s: &UdpSocket, opt: libc::c_int, v: &T) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: v points to a live T of the size we pass.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            opt,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The first IPv4 address of an interface (the source of our multicast).
fn interface_ipv4(ifname: &str) -> io::Result<Ipv4Addr> {
    let addrs = nix::ifaddrs::getifaddrs()?;
    for a in addrs {
        if a.interface_name != ifname {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Ok(sin.ip());
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("sync interface {ifname} has no IPv4 address")))
}

/// The socket carpwatch reads role changes from: NETLINK_ROUTE subscribed to
/// address changes (Linux).
#[cfg(target_os = "linux")]
pub fn route_events() -> io::Result<OwnedFd> {
    use nix::sys::socket::{bind, socket, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType};
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkRoute,
    )?;
    let groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR | libc::RTMGRP_LINK) as u32;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

/// The socket carpwatch reads role changes from: PF_ROUTE (OpenBSD).
#[cfg(target_os = "openbsd")]
pub fn route_events() -> io::Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    Ok(socket(AddressFamily::Route, SockType::Raw, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10: the sync socket holds a whole bulk window, past Linux's
    /// rmem_max when we are root (the lab and the daemon are).
    #[test]
    fn the_sync_socket_gets_large_buffers() {
        let fd = sync(0, None).unwrap();
        let rcv = nix::sys::socket::getsockopt(&fd, sockopt::RcvBuf).unwrap();
        if nix::unistd::geteuid().is_root() && cfg!(target_os = "linux") {
            // Linux reports twice what was set (its bookkeeping share).
            assert_eq!(rcv, 2 * SYNC_BUFFER);
            assert_eq!(nix::sys::socket::getsockopt(&fd, sockopt::SndBuf).unwrap(), 2 * SYNC_BUFFER);
        } else {
            assert!(rcv > 0, "{rcv}");
        }
    }

    #[test]
    fn control_socket_is_root_only_and_exclusive() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vpnsyncd-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let fd = control(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let e = control(&path).unwrap_err();
        assert!(e.to_string().contains("another vpnsyncd is running"), "{e}");
        drop(fd);
        // A stale socket (nobody listening) is replaced.
        control(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `management ... group G`: 0660 with group G (our own group here, so
    /// the test needs no root); without a group 0600; an unknown group is
    /// an error naming it.
    #[test]
    fn management_socket_mode_and_group() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = std::env::temp_dir().join(format!("vpnsyncd-mgmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mgmt.sock");
        let gid = nix::unistd::getegid();
        let group = nix::unistd::Group::from_gid(gid).unwrap().expect("our group has a name").name;
        let m = vpnsyncd_config::Management { path: path.clone(), group: Some(group) };
        let fd = management(&m).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.permissions().mode() & 0o777, meta.gid()), (0o660, gid.as_raw()));
        drop(fd);
        let fd = management(&vpnsyncd_config::Management { path: path.clone(), group: None }).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        drop(fd);
        let m = vpnsyncd_config::Management { path, group: Some("no-such-group-vpnsyncd".into()) };
        let e = management(&m).unwrap_err();
        assert_eq!(e.to_string(), "management group \"no-such-group-vpnsyncd\": no such group");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listener_errors_name_the_address() {
        let a = listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let port = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrIn>(std::os::fd::AsRawFd::as_raw_fd(&a))
            .unwrap()
            .port();
        let e = listeners(&[SocketAddr::from(([127, 0, 0, 1], port))], 1).unwrap_err();
        assert!(e.to_string().starts_with(&format!("listen on 127.0.0.1:{port}: ")), "{e}");
    }

    /// Several data threads: each gets a socket of every address, in the
    /// engine's order, all bound to the same port.
    #[test]
    fn data_threads_share_each_address() {
        let probe = listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let port = |fd: &OwnedFd| {
            nix::sys::socket::getsockname::<nix::sys::socket::SockaddrIn>(std::os::fd::AsRawFd::as_raw_fd(fd))
                .unwrap()
                .port()
        };
        let free = port(&probe);
        drop(probe);
        let addrs = [SocketAddr::from(([127, 0, 0, 1], free)), SocketAddr::from(([127, 0, 0, 2], free))];
        let fds = listeners(&addrs, 3).unwrap();
        assert_eq!(fds.len(), 6);
        assert!(fds.iter().all(|f| port(f) == free));
        let ip = |fd: &OwnedFd| {
            nix::sys::socket::getsockname::<nix::sys::socket::SockaddrIn>(std::os::fd::AsRawFd::as_raw_fd(fd))
                .unwrap()
                .ip()
        };
        let ips: Vec<_> = fds.iter().map(ip).collect();
        assert_eq!(ips[0], ips[2]);
        assert_eq!(ips[1], ips[5]);
        assert_ne!(ips[0], ips[1]);
    }

    /// The kernel runs the steering program: each P_DATA_V2 datagram
    /// reaches the socket of its peer-id's thread, from whatever source
    /// port, and the control channel reaches the main thread's.
    #[cfg(target_os = "linux")]
    #[test]
    fn datagrams_reach_the_thread_of_their_peer_id() {
        use vpnsyncd_common::steer::{shard_of, DATA_V2};
        let probe = listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr: SocketAddr = UdpSocket::from(probe).local_addr().unwrap();
        let threads = 3;
        let socks: Vec<UdpSocket> = listeners(&[addr], threads).unwrap().into_iter().map(UdpSocket::from).collect();
        let senders: Vec<UdpSocket> = (0..4).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let mut sent = Vec::new();
        for peer_id in 0..48u32 {
            let mut p = vec![DATA_V2 << 3 | 1];
            p.extend_from_slice(&peer_id.to_be_bytes()[1..]);
            p.extend_from_slice(b"payload");
            senders[peer_id as usize % senders.len()].send_to(&p, addr).unwrap();
            sent.push((p, shard_of(peer_id, threads)));
        }
        let control = [7u8 << 3, 1, 2, 3, 4, 5, 6, 7, 8];
        senders[1].send_to(&control, addr).unwrap();
        sent.push((control.to_vec(), 0));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for (i, s) in socks.iter().enumerate() {
            while let Ok(n) = s.recv(&mut buf) {
                got.push((buf[..n].to_vec(), i));
            }
        }
        sent.sort();
        got.sort();
        assert_eq!(got, sent);
        assert!((0..threads).all(|t| got.iter().any(|(_, i)| *i == t)), "every thread gets some");
    }
}
