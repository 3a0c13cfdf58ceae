//! The role decision of the Linux VIP watcher, kept apart from the netlink
//! I/O so that it is tested on its own.

use std::collections::BTreeSet;
use std::net::IpAddr;

use vpnsyncd_common::msg::Role;

/// What we know of the watched interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VipState {
    /// Interface index of the watched interface, once seen.
    pub ifindex: Option<u32>,
    /// Addresses currently on that interface.
    pub addrs: BTreeSet<IpAddr>,
}

impl VipState {
    /// MASTER while the VIP is on the interface, BACKUP while the interface
    /// exists without it, INIT while the interface does not exist.
    pub fn role(&self, vip: IpAddr) -> Role {
        match self.ifindex {
            None => Role::Init,
            Some(_) if self.addrs.contains(&vip) => Role::Master,
            Some(_) => Role::Backup,
        }
    }

    /// A link appeared or was renamed.
    pub fn link_new(&mut self, index: u32, name: &str, watched: &str) {
        if name == watched {
            if self.ifindex != Some(index) {
                self.addrs.clear();
            }
            self.ifindex = Some(index);
        } else if self.ifindex == Some(index) {
            // Our interface was renamed away.
            *self = VipState::default();
        }
    }

    /// A link disappeared.
    pub fn link_del(&mut self, index: u32) {
        if self.ifindex == Some(index) {
            *self = VipState::default();
        }
    }

    /// An address was added (`add`) or removed on interface `index`.
    pub fn addr(&mut self, index: u32, a: IpAddr, add: bool) {
        if self.ifindex != Some(index) {
            return;
        }
        if add {
            self.addrs.insert(a);
        } else {
            self.addrs.remove(&a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_comes_and_goes() {
        let vip: IpAddr = "198.18.0.10".parse().unwrap();
        let mut s = VipState::default();
        assert_eq!(s.role(vip), Role::Init);
        s.addr(2, vip, true); // before the link is known: ignored
        assert_eq!(s.role(vip), Role::Init);
        s.link_new(2, "eth0", "eth0");
        assert_eq!(s.role(vip), Role::Backup);
        s.addr(2, "198.18.0.2".parse().unwrap(), true);
        assert_eq!(s.role(vip), Role::Backup);
        s.addr(3, vip, true); // another interface
        assert_eq!(s.role(vip), Role::Backup);
        s.addr(2, vip, true);
        assert_eq!(s.role(vip), Role::Master);
        s.addr(2, vip, false);
        assert_eq!(s.role(vip), Role::Backup);
        s.addr(2, vip, true);
        s.link_del(2);
        assert_eq!(s.role(vip), Role::Init);
    }

    #[test]
    fn renames_and_new_index() {
        let vip: IpAddr = "198.18.0.10".parse().unwrap();
        let mut s = VipState::default();
        s.link_new(2, "eth0", "eth0");
        s.addr(2, vip, true);
        s.link_new(2, "eth9", "eth0");
        assert_eq!(s.role(vip), Role::Init);
        s.link_new(5, "eth0", "eth0");
        assert_eq!(s.role(vip), Role::Backup, "a new interface starts without addresses");
    }
}
