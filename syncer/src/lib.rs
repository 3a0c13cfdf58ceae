//! The syncer: carries session state between the members of a cluster over
//! UDP (multicast or unicast), encrypted and authenticated with the sync key.
//!
//! This process holds the sync socket, its role and its counters, and answers
//! `vpnsyncctl show sync`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vpnsyncd_common::child::Startup;
use vpnsyncd_common::codec::{DecodeError, Reader};
use vpnsyncd_common::ctl::{PeerInfo, SyncInfo};
use vpnsyncd_common::imsg::{Imsg, ImsgBuf};
use vpnsyncd_common::msg::{FdKind, ImsgType, KeyKind, Role};
use vpnsyncd_config::{Config, SyncTransport};

fn bad(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

struct Syncer {
    conf: Config,
    parent: ImsgBuf,
    engine: ImsgBuf,
    _sock: Option<OwnedFd>,
    role: Option<Role>,
    info: SyncInfo,
}

/// The syncer process: runs until the parent goes away.
pub fn main(parent: ImsgBuf, mut st: Startup) -> i32 {
    if let Err(e) = vpnsyncd_common::sandbox::pledge("stdio inet") {
        log::error!("pledge: {e}");
        return 1;
    }
    let conf = match vpnsyncd_config::parse_str("configuration from parent", &st.conf, &[]) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let Some(peer) = st.take_fds(FdKind::Peer).pop() else {
        log::error!("no engine channel from the parent");
        return 1;
    };
    let sock = st.take_fds(FdKind::Sync).pop();
    if conf.sync.is_some() && (sock.is_none() || st.key(KeyKind::Sync).is_none()) {
        log::error!("sync is configured but the parent sent no sync socket or key");
        return 1;
    }
    let mut s = Syncer { info: describe(&conf), conf, parent, engine: ImsgBuf::new(peer), _sock: sock, role: None };
    s.engine.set_maxsize(1 << 20);
    match s.run() {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// The static part of `show sync` for a configuration.
fn describe(conf: &Config) -> SyncInfo {
    let Some(sync) = &conf.sync else {
        return SyncInfo { transport: "standalone (no sync block)".into(), bulk_complete: true, ..SyncInfo::default() };
    };
    let (transport, peers) = match &sync.transport {
        SyncTransport::Multicast { group, port, interface } => {
            (format!("multicast {group}:{port} on {interface}"), Vec::new())
        }
        SyncTransport::Unicast { peers } => (
            "unicast".to_string(),
            peers.iter().map(|p| PeerInfo { address: p.to_string(), last_heard: 0, role: Role::Init }).collect(),
        ),
    };
    SyncInfo { transport, peers, ..SyncInfo::default() }
}

fn read_channel(ibuf: &mut ImsgBuf, name: &str) -> io::Result<Vec<Imsg>> {
    match ibuf.read() {
        Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{name} closed the channel"))),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let mut v = Vec::new();
    while let Some(m) = ibuf.get()? {
        v.push(m);
    }
    Ok(v)
}

impl Syncer {
    fn run(&mut self) -> io::Result<()> {
        loop {
            let flags = |b: &ImsgBuf| {
                if b.queued() > 0 {
                    PollFlags::POLLIN | PollFlags::POLLOUT
                } else {
                    PollFlags::POLLIN
                }
            };
            let mut fds = [
                PollFd::new(self.parent.as_fd(), flags(&self.parent)),
                PollFd::new(self.engine.as_fd(), flags(&self.engine)),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ev: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
            if ev[0].contains(PollFlags::POLLOUT) {
                self.parent.write()?;
            }
            if ev[1].contains(PollFlags::POLLOUT) {
                self.engine.write()?;
            }
            if ev[0].intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
                for m in read_channel(&mut self.parent, "parent")? {
                    self.on_parent(m)?;
                }
            }
            if ev[1].intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
                for m in read_channel(&mut self.engine, "engine")? {
                    self.on_engine(m)?;
                }
            }
        }
    }

    fn on_parent(&mut self, m: Imsg) -> io::Result<()> {
        match ImsgType::from_u32(m.hdr.ty).map_err(bad)? {
            ImsgType::Role => {
                let role = Role::from_u8(Reader::new(&m.data).u8().map_err(bad)?).map_err(bad)?;
                self.role = Some(role);
                log::info!("role {}", role.name());
            }
            ImsgType::Verbose => vpnsyncd_common::log::set_verbose(Reader::new(&m.data).u8().map_err(bad)?),
            ImsgType::KeyMaterial => {}
            ImsgType::Reload => {
                let text = std::str::from_utf8(&m.data).map_err(|_| bad(DecodeError("configuration is not UTF-8")))?;
                self.conf = vpnsyncd_config::parse_str("configuration from parent", text, &[])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            }
            other => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {other:?} from the parent")))
            }
        }
        Ok(())
    }

    fn on_engine(&mut self, m: Imsg) -> io::Result<()> {
        match ImsgType::from_u32(m.hdr.ty).map_err(bad)? {
            ImsgType::CtlShowSync => {
                let info = SyncInfo { role: self.role, ..self.info.clone() };
                self.engine.compose(ImsgType::CtlSync as u32, m.hdr.peerid, None, &info.encode())?;
            }
            other => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {other:?} from the engine")))
            }
        }
        Ok(())
    }
}
