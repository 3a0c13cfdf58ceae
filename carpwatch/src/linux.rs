//! Linux: the VIP watcher over NETLINK_ROUTE. The parent opened the socket
//! subscribed to link and address events; we dump links and addresses once,
//! then follow the events.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use vpnsyncd_common::msg::Role;

use crate::role::VipState;
use crate::Watcher;

pub struct VipWatcher {
    sock: OwnedFd,
    vip: IpAddr,
    interface: String,
    state: VipState,
    /// Dump requests not yet answered (a dump must finish before the next).
    pending_dumps: Vec<RouteNetlinkMessage>,
    dumping: bool,
    seq: u32,
}

impl VipWatcher {
    pub fn new(sock: OwnedFd, vip: IpAddr, interface: &str) -> io::Result<Self> {
        let mut w = VipWatcher {
            sock,
            vip,
            interface: interface.to_string(),
            state: VipState::default(),
            pending_dumps: vec![
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
            ],
            dumping: false,
            seq: 0,
        };
        w.next_dump()?;
        // Block until both dumps are complete, so the first role is right.
        while w.dumping {
            vpnsyncd_common::poll::wait_readable(w.sock.as_fd())?;
            w.read()?;
        }
        Ok(w)
    }

    fn next_dump(&mut self) -> io::Result<()> {
        let Some(req) = self.pending_dumps.pop() else {
            self.dumping = false;
            return Ok(());
        };
        self.seq += 1;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        hdr.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(hdr, NetlinkPayload::from(req));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        nix::sys::socket::send(self.sock.as_raw_fd(), &buf, nix::sys::socket::MsgFlags::empty())?;
        self.dumping = true;
        Ok(())
    }

    /// Applies one datagram of netlink messages to the state.
    fn apply(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}")))?;
            let len = (msg.header.length as usize).max(16);
            buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
            match msg.payload {
                NetlinkPayload::Done(_) => self.next_dump()?,
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("netlink error: {e:?}")));
                }
                NetlinkPayload::InnerMessage(m) => self.route_message(m),
                _ => {}
            }
        }
        Ok(())
    }

    fn route_message(&mut self, m: RouteNetlinkMessage) {
        match m {
            RouteNetlinkMessage::NewLink(l) => {
                let name = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.as_str()),
                    _ => None,
                });
                if let Some(name) = name {
                    self.state.link_new(l.header.index, name, &self.interface);
                }
            }
            RouteNetlinkMessage::DelLink(l) => self.state.link_del(l.header.index),
            RouteNetlinkMessage::NewAddress(a) => {
                if let Some(ip) = message_address(&a) {
                    self.state.addr(a.header.index, ip, true);
                }
            }
            RouteNetlinkMessage::DelAddress(a) => {
                if let Some(ip) = message_address(&a) {
                    self.state.addr(a.header.index, ip, false);
                }
            }
            _ => {}
        }
    }
}

impl Watcher for VipWatcher {
    fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    fn read(&mut self) -> io::Result<Role> {
        let mut buf = vec![0u8; 65536];
        loop {
            match nix::sys::socket::recv(self.sock.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => self.apply(&buf[..n])?,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                // The kernel dropped events: start over with a fresh dump.
                Err(nix::errno::Errno::ENOBUFS) => {
                    log::warn!("netlink overrun; re-reading links and addresses");
                    self.state = VipState::default();
                    self.pending_dumps = vec![
                        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                        RouteNetlinkMessage::GetLink(LinkMessage::default()),
                    ];
                    self.next_dump()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.state.role(self.vip))
    }
}

/// The address an address message is about (IFA_LOCAL, else IFA_ADDRESS).
pub fn message_address(a: &AddressMessage) -> Option<IpAddr> {
    let local = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}
