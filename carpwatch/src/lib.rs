//! carpwatch: tells the parent whether this machine is MASTER, BACKUP or
//! INIT, from the kernel's own events (no polling).
//!
//! OpenBSD: the link state of the carp interface (routing socket RTM_IFINFO,
//! as sasyncd's carp.c). Linux: whether the virtual IP is configured on the
//! interface (NETLINK_ROUTE address events), which is what keepalived and
//! ucarp do when they take or give up the VIP. Without a sync block the
//! machine is standalone and always MASTER.

#[cfg(target_os = "linux")]
mod linux;
pub mod openbsd;
pub mod role;

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vpnsyncd_common::child::Startup;
use vpnsyncd_common::codec::Reader;
use vpnsyncd_common::heartbeat::ParentWatch;
use vpnsyncd_common::imsg::ImsgBuf;
use vpnsyncd_common::msg::{FdKind, ImsgType, Role};
use vpnsyncd_config::RoleSource;

/// A source of role changes driven by a readable descriptor.
pub trait Watcher {
    /// The descriptor to poll.
    fn fd(&self) -> std::os::fd::BorrowedFd<'_>;
    /// Reads pending events; returns the role they leave us in.
    fn read(&mut self) -> io::Result<Role>;
}

fn send_role(parent: &mut ImsgBuf, role: Role) -> io::Result<()> {
    parent.compose(ImsgType::Role as u32, 0, None, &[role as u8])
}

/// The carpwatch process: runs until the parent goes away.
pub fn main(mut parent: ImsgBuf, mut st: Startup) -> i32 {
    match run(&mut parent, &mut st) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

fn run(parent: &mut ImsgBuf, st: &mut Startup) -> io::Result<()> {
    let conf = vpnsyncd_config::from_parent(&st.conf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let route = st.take_fds(FdKind::Route).pop();
    let mut watcher: Option<Box<dyn Watcher>> = match (conf.sync.as_ref().map(|s| &s.role), route) {
        (None, _) => None,
        (Some(source), Some(fd)) => Some(new_watcher(source, fd)?),
        (Some(_), None) => return Err(io::Error::other("no route socket from the parent")),
    };
    vpnsyncd_common::sandbox::pledge("stdio route")?;
    let mut role = match &mut watcher {
        None => Role::Master,
        Some(w) => w.read()?,
    };
    log::info!("role {}", role.name());
    send_role(parent, role)?;
    let mut watch = ParentWatch::new(conf.watchdog, Instant::now());
    loop {
        let flags = if parent.queued() > 0 { PollFlags::POLLIN | PollFlags::POLLOUT } else { PollFlags::POLLIN };
        let mut fds = vec![PollFd::new(parent.as_fd(), flags)];
        if let Some(w) = &watcher {
            fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
        }
        let wait = PollTimeout::try_from(watch.next_check(Instant::now())).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, wait) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ev: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
        drop(fds);
        if ev[0].contains(PollFlags::POLLOUT) {
            parent.write()?;
        }
        if ev[0].intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            match parent.read() {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "parent closed the channel")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            while let Some(m) = parent.get()? {
                match ImsgType::from_u32(m.hdr.ty) {
                    Ok(ImsgType::Heartbeat) => watch.on_heartbeat(parent, Instant::now())?,
                    Ok(ImsgType::Verbose) => {
                        let v = Reader::new(&m.data).u8().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        vpnsyncd_common::child::on_verbose(v);
                    }
                    // The role source is fixed at start; a reload that changes
                    // it is reported by the parent as needing a restart.
                    Ok(ImsgType::Reload) | Ok(ImsgType::KeyMaterial) => {}
                    _ => return Err(io::Error::other(format!("unexpected imsg type {} from the parent", m.hdr.ty))),
                }
            }
        }
        if let (Some(w), Some(e)) = (&mut watcher, ev.get(1)) {
            if !e.is_empty() {
                let now = w.read()?;
                if now != role {
                    log::info!("role {} -> {}", role.name(), now.name());
                    role = now;
                    send_role(parent, role)?;
                }
            }
        }
        // After the parent's messages, so a heartbeat that arrived with
        // this wake-up counts.
        watch.check(Instant::now())?;
    }
}

#[cfg(target_os = "linux")]
fn new_watcher(source: &RoleSource, fd: std::os::fd::OwnedFd) -> io::Result<Box<dyn Watcher>> {
    match source {
        RoleSource::Vip { address, interface } => Ok(Box::new(linux::VipWatcher::new(fd, *address, interface)?)),
        RoleSource::Carp { interface } => Err(io::Error::other(format!(
            "carp interface {interface}: carp(4) exists on OpenBSD only; on Linux use `vip ADDRESS interface NAME` in the sync block"
        ))),
    }
}

#[cfg(target_os = "openbsd")]
fn new_watcher(source: &RoleSource, fd: std::os::fd::OwnedFd) -> io::Result<Box<dyn Watcher>> {
    match source {
        RoleSource::Carp { interface } => Ok(Box::new(openbsd::CarpWatcher::new(fd, interface)?)),
        RoleSource::Vip { .. } => {
            Err(io::Error::other("`vip` role source is for Linux; on OpenBSD use `carp interface carpN`"))
        }
    }
}
