//! Kernel routes for the client-config-dir's iroutes: every iroute network
//! of every file is routed to the tun device, so that the kernel hands the
//! engine the packets for the networks behind site-to-site clients (the
//! engine then picks the client with its longest-prefix iroute table).
//!
//! The routes are installed on every member, backups included: a route to
//! the tun device only draws traffic that reaches this machine, and only the
//! master holds the VIPs the inside hosts route through, so a backup's
//! routes are idle until it takes over; then they are already there and
//! the new master forwards from its first packet, with no work on the role
//! change. They are set at start, brought in line with the directory at
//! every reload and removed at exit. A route that is already there and
//! identical (to our device) is left alone and not removed at exit, since it
//! is not ours; one to somewhere else is logged with the fix and left.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;

use vpnsyncd_config::Ipv4Net;

#[cfg(any(test, target_os = "linux"))]
mod netlink;
#[cfg(any(test, target_os = "openbsd"))]
mod rtsock;

#[cfg(target_os = "linux")]
use netlink::sys;
#[cfg(target_os = "openbsd")]
use rtsock::sys;

/// What adding a route found.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// The route is ours now (removed at exit).
    New,
    /// The same route (to our device) was there already: not ours.
    Existing,
    /// A route to `net` exists to somewhere else; the text says where.
    Conflict(String),
}

/// The tun device the routes go to.
#[derive(Clone, Debug)]
pub struct Device {
    pub name: String,
    /// Its address: the gateway of an OpenBSD interface route, the
    /// preferred source of a Linux one.
    pub addr: Ipv4Addr,
}

/// The iroute routes this daemon added.
#[derive(Debug)]
pub struct Routes {
    dev: Device,
    ours: BTreeSet<Ipv4Net>,
}

impl Routes {
    pub fn new(dev: Device) -> Routes {
        Routes { dev, ours: BTreeSet::new() }
    }

    /// Brings the kernel in line with `wanted`: adds what is missing,
    /// removes ours that are no longer wanted. Each failure is logged (a
    /// route is no reason to stop serving the other clients).
    pub fn apply(&mut self, wanted: &BTreeSet<Ipv4Net>) {
        let (add, remove) = plan(&self.ours, wanted);
        for net in remove {
            self.remove(net);
        }
        for net in add {
            match sys::add(&self.dev, net) {
                Ok(Added::New) => {
                    log::info!("route {net} dev {} added for an iroute", self.dev.name);
                    self.ours.insert(net);
                }
                Ok(Added::Existing) => log::info!("route {net} dev {} was there already", self.dev.name),
                Ok(Added::Conflict(other)) => log::error!(
                    "iroute {net}: the kernel already routes it {other}: packets to it will not reach the \
                     client; remove that route or the iroute, then reload"
                ),
                Err(e) => log::error!("iroute {net}: cannot add the route to {}: {e}", self.dev.name),
            }
        }
    }

    /// Removes every route we added (at exit).
    pub fn clear(&mut self) {
        for net in std::mem::take(&mut self.ours) {
            self.remove(net);
        }
    }

    fn remove(&mut self, net: Ipv4Net) {
        self.ours.remove(&net);
        match sys::delete(&self.dev, net) {
            Ok(()) => log::info!("route {net} dev {} removed", self.dev.name),
            // Gone with the device (the engine closed it first) or by hand.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) || e.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => log::error!("route {net} dev {}: cannot remove it: {e}", self.dev.name),
        }
    }
}

/// The networks to add (wanted, not ours) and to remove (ours, no longer
/// wanted).
fn plan(ours: &BTreeSet<Ipv4Net>, wanted: &BTreeSet<Ipv4Net>) -> (Vec<Ipv4Net>, Vec<Ipv4Net>) {
    (wanted.difference(ours).copied().collect(), ours.difference(wanted).copied().collect())
}

/// A raw routing socket (`domain`, `protocol`) whose reads give up after
/// 2 s: a kernel that never answers does not hang the parent.
#[cfg(any(target_os = "linux", target_os = "openbsd"))]
fn routing_socket(domain: libc::c_int, protocol: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let s = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if s == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is a fresh descriptor we own.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
    // SAFETY: SO_RCVTIMEO takes a timeval of this size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

/// An error of the route socket, with what was asked.
fn failed(what: &str, net: Ipv4Net, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {net}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> BTreeSet<Ipv4Net> {
        nets.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn a_reload_adds_the_new_and_removes_the_gone() {
        let ours = set(&["192.168.50.0/24", "192.168.60.0/24"]);
        let wanted = set(&["192.168.60.0/24", "172.16.0.0/12"]);
        let (add, remove) = plan(&ours, &wanted);
        assert_eq!(add, vec!["172.16.0.0/12".parse().unwrap()]);
        assert_eq!(remove, vec!["192.168.50.0/24".parse().unwrap()]);
        assert_eq!(plan(&wanted, &wanted), (vec![], vec![]));
        assert_eq!(plan(&wanted, &BTreeSet::new()).1.len(), 2);
    }

    #[test]
    fn errors_name_the_route() {
        let e = failed("add", "10.9.0.0/16".parse().unwrap(), io::Error::from_raw_os_error(libc::EPERM));
        assert!(e.to_string().starts_with("add 10.9.0.0/16: "), "{e}");
    }
}
