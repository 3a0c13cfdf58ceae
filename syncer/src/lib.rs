//! The syncer: carries session state between the members of a cluster over
//! UDP (multicast or unicast), encrypted and authenticated with the sync key.
//!
//! This process holds the sync socket, its role and its counters, and answers
//! `vpnsyncctl show sync`. The protocol lives in the sans-IO [`core::Core`]
//! (over [`proto`]); this file is only the poll(2) loop around it.

pub mod core;
mod imsgs;
pub mod key;
mod peers;
pub mod proto;
mod replay;
mod table;

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vpnsyncd_common::backpressure::Pause;
use vpnsyncd_common::child::Startup;
use vpnsyncd_common::codec::{DecodeError, Reader};
use vpnsyncd_common::heartbeat::ParentWatch;
use vpnsyncd_common::imsg::{Imsg, ImsgBuf};
use vpnsyncd_common::msg::{FdKind, ImsgType, KeyKind, Role};
use vpnsyncd_config::Config;

use crate::core::{Core, Output, Params, Transport};
use crate::key::SyncKey;

/// Datagrams read per loop iteration at most, so that a flood on the sync
/// socket cannot starve the engine channel.
const RECV_BURST: usize = 256;
/// Datagrams kept while the socket buffer is full (a bulk answer is a
/// burst). The policy when full: the new datagram is dropped like any lost
/// datagram, and the protocol repairs it: a delete goes out again with the
/// next `DELETE_REPEATS` heartbeats, and a backup whose table digest
/// differs from the master's for `DIVERGED_AFTER` resyncs (core.rs; the
/// sim tests a_lost_delete_heals_through_the_digest and
/// a_lost_upsert_is_asked_for_by_the_backup).
const MAX_BACKLOG: usize = 8192;

fn bad(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

struct Syncer {
    conf: Config,
    parent: ImsgBuf,
    engine: ImsgBuf,
    sock: Option<UdpSocket>,
    /// Datagrams the socket did not take yet, sent when it is writable.
    backlog: VecDeque<(SocketAddr, Vec<u8>)>,
    core: Core,
    /// When a failed send was last logged (one line per second at most).
    send_error_logged: Option<Instant>,
    /// The parent's heartbeats: we exit when they stop.
    watch: ParentWatch,
    /// What the sync socket brings goes to the engine: while the engine
    /// channel is over its high-water mark, the socket is not read.
    engine_pause: Pause,
}

/// The syncer process: runs until the parent goes away.
pub fn main(parent: ImsgBuf, mut st: Startup) -> i32 {
    // The parent joined the multicast group and set TTL and loopback on the
    // socket: sending and receiving need no "mcast" promise.
    if let Err(e) = vpnsyncd_common::sandbox::pledge("stdio inet") {
        log::error!("pledge: {e}");
        return 1;
    }
    let conf = match vpnsyncd_config::from_parent(&st.conf) {
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
    let sync = match (&conf.sync, &sock, st.key(KeyKind::Sync)) {
        (None, _, _) => None,
        (Some(sync), Some(_), Some(key)) => match SyncKey::parse(key) {
            Ok(key) => Some((Transport::new(&sync.transport), key)),
            Err(e) => {
                log::error!("{e}");
                return 1;
            }
        },
        (Some(_), _, _) => {
            log::error!("sync is configured but the parent sent no sync socket or key");
            return 1;
        }
    };
    // The parsed key is all we keep; the received file is zeroized now.
    st.keys.clear();
    let mut random = [0u8; 7];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).is_err() {
        log::error!("no randomness for the sync boot id");
        return 1;
    }
    let start_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let params = Params {
        member: conf.sync.as_ref().map_or(1, |s| s.member),
        lifetime: Duration::from_secs(2 * u64::from(conf.keepalive.1)),
        limit: conf.max_clients as usize * usize::from(vpnsyncd_config::MAX_MEMBERS),
    };
    let boot = proto::boot_id(params.member, start_ms, random);
    let mut s = Syncer {
        core: Core::new(sync, params, boot, Instant::now(), unix_now()),
        watch: ParentWatch::new(conf.watchdog, Instant::now()),
        engine_pause: Pause::new("engine channel", "the sync socket"),
        conf,
        parent,
        engine: ImsgBuf::new(peer),
        sock: sock.map(UdpSocket::from),
        backlog: VecDeque::new(),
        send_error_logged: None,
    };
    s.engine.set_maxsize(1 << 20);
    match s.run() {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Logs a lost datagram, one line per second at most (`logged` is when the
/// last line went out).
fn send_failed(logged: &mut Option<Instant>, to: SocketAddr, e: &io::Error) {
    let now = Instant::now();
    if logged.is_none_or(|t| now - t >= Duration::from_secs(1)) {
        log::debug!("sync send to {to}: {e}");
        *logged = Some(now);
    }
}

/// Queues a datagram for the sync socket; false (and dropped) when the
/// backlog holds [`MAX_BACKLOG`] already.
fn enqueue(backlog: &mut VecDeque<(SocketAddr, Vec<u8>)>, to: SocketAddr, bytes: Vec<u8>) -> bool {
    if backlog.len() >= MAX_BACKLOG {
        return false;
    }
    backlog.push_back((to, bytes));
    true
}

/// What the sync socket is polled for: writable while datagrams wait in
/// the backlog; readable unless `paused` (the engine channel is over its
/// high-water mark), so that a flood of records waits in the kernel, which
/// drops beyond its buffer like any lost datagram. Empty: the socket is
/// left out of the poll set (else its errors would wake us in a loop).
fn sock_events(backlog_empty: bool, paused: bool) -> PollFlags {
    let mut ev = PollFlags::empty();
    if !paused {
        ev |= PollFlags::POLLIN;
    }
    if !backlog_empty {
        ev |= PollFlags::POLLOUT;
    }
    ev
}

fn read_channel(ibuf: &mut ImsgBuf, name: &str) -> io::Result<Vec<Imsg>> {
    match ibuf.read() {
        Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{name} closed the channel"))),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    ibuf.buffered()
}

impl Syncer {
    /// One iteration: timers, then what the core produced (so datagrams
    /// for the engine's updates of the previous wake-up leave before we
    /// sleep), then poll, then the events.
    fn run(&mut self) -> io::Result<()> {
        // What came with the start-up messages (a role), then the current
        // role in case it was sent before we were started.
        for m in self.parent.buffered()? {
            self.on_parent(m)?;
        }
        self.parent.compose(ImsgType::RoleRequest as u32, 0, None, &[])?;
        loop {
            self.core.tick(Instant::now());
            self.dispatch()?;
            let flags = |b: &ImsgBuf| {
                if b.queued() > 0 {
                    PollFlags::POLLIN | PollFlags::POLLOUT
                } else {
                    PollFlags::POLLIN
                }
            };
            let mut fds = vec![
                PollFd::new(self.parent.as_fd(), flags(&self.parent)),
                PollFd::new(self.engine.as_fd(), flags(&self.engine)),
            ];
            let paused = self.engine_pause.update(self.engine.over_high_water());
            let sock_ev = sock_events(self.backlog.is_empty(), paused);
            if let Some(s) = self.sock.as_ref().filter(|_| !sock_ev.is_empty()) {
                fds.push(PollFd::new(s.as_fd(), sock_ev));
            }
            let tick = PollTimeout::try_from(self.core.next_tick(Instant::now())).expect("1 s at most fits");
            match poll(&mut fds, tick) {
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
            if ev.get(2).is_some_and(|e| e.contains(PollFlags::POLLOUT)) {
                self.send_backlog();
            }
            let readable = PollFlags::POLLIN | PollFlags::POLLERR;
            if !paused && ev.get(2).is_some_and(|e| e.intersects(readable)) {
                self.receive();
            }
            // After the parent's messages, so a heartbeat that arrived
            // with this wake-up counts.
            self.watch.check(Instant::now())?;
        }
    }

    /// Reads the datagrams waiting on the sync socket.
    fn receive(&mut self) {
        let Some(sock) = &self.sock else {
            return;
        };
        let mut buf = vec![0u8; 65536];
        for _ in 0..RECV_BURST {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => self.core.on_datagram(from, &buf[..n], Instant::now()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // An ICMP error for an earlier send (a unicast peer down).
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    log::debug!("sync socket: {e}");
                    return;
                }
            }
        }
    }

    /// Carries out the core's output.
    fn dispatch(&mut self) -> io::Result<()> {
        for out in self.core.take_output() {
            match out {
                Output::Send { to, bytes } => {
                    if !enqueue(&mut self.backlog, to, bytes) {
                        send_failed(&mut self.send_error_logged, to, &io::ErrorKind::WouldBlock.into());
                    }
                }
                Output::Engine { ty, data } => self.engine.compose(ty as u32, 0, None, &data)?,
                Output::Parent { ty, data } => self.parent.compose(ty as u32, 0, None, &data)?,
            }
        }
        self.send_backlog();
        Ok(())
    }

    /// Sends queued datagrams until the socket is full. A datagram that
    /// fails otherwise is lost like any other: the protocol repeats what
    /// matters (heartbeats, bulk requests, the next progress flush).
    fn send_backlog(&mut self) {
        let Some(sock) = &self.sock else {
            self.backlog.clear();
            return;
        };
        while let Some((to, bytes)) = self.backlog.front() {
            let to = *to;
            match sock.send_to(bytes, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => send_failed(&mut self.send_error_logged, to, &e),
                Ok(_) => {}
            }
            self.backlog.pop_front();
        }
    }

    fn on_parent(&mut self, m: Imsg) -> io::Result<()> {
        match ImsgType::from_u32(m.hdr.ty).map_err(bad)? {
            ImsgType::Role => {
                let role = Role::from_u8(Reader::new(&m.data).u8().map_err(bad)?).map_err(bad)?;
                self.core.set_role(role);
            }
            // What it says of the other children is for the engine.
            ImsgType::Heartbeat => self.watch.on_heartbeat(&mut self.parent, Instant::now())?,
            ImsgType::Verbose => vpnsyncd_common::child::on_verbose(Reader::new(&m.data).u8().map_err(bad)?),
            ImsgType::KeyMaterial => {
                let mut r = Reader::new(&m.data);
                if KeyKind::from_u8(r.u8().map_err(bad)?).map_err(bad)? == KeyKind::Sync {
                    // A bad key on reload keeps the running one: dropping
                    // out of the cluster would be worse.
                    match SyncKey::parse(r.rest()) {
                        Ok(key) => self.core.set_key(key),
                        Err(e) => log::error!("reload: {e}; keeping the running sync key"),
                    }
                }
            }
            ImsgType::Reload => {
                let text = std::str::from_utf8(&m.data).map_err(|_| bad(DecodeError("configuration is not UTF-8")))?;
                self.conf = vpnsyncd_config::from_parent(text)
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
                let info = self.core.info(Instant::now());
                self.engine.compose(ImsgType::CtlSync as u32, m.hdr.peerid, None, &info.encode())?;
            }
            ty @ (ImsgType::SyncUpsert | ImsgType::SyncProgress | ImsgType::SyncDelete) => {
                self.core.on_engine(ty, &m.data, Instant::now()).map_err(bad)?
            }
            other => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {other:?} from the engine")))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod sim;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_bounded_and_keeps_what_it_has() {
        let to: SocketAddr = "198.19.0.12:1195".parse().unwrap();
        let mut b = VecDeque::new();
        for i in 0..MAX_BACKLOG {
            assert!(enqueue(&mut b, to, (i as u32).to_be_bytes().to_vec()));
        }
        assert!(!enqueue(&mut b, to, vec![0xff]));
        assert_eq!(b.len(), MAX_BACKLOG);
        assert_eq!(b.front().unwrap().1, 0u32.to_be_bytes());
        assert_eq!(b.back().unwrap().1, (MAX_BACKLOG as u32 - 1).to_be_bytes());
    }

    #[test]
    fn the_sync_socket_is_not_read_while_the_engine_channel_is_over() {
        assert_eq!(sock_events(true, false), PollFlags::POLLIN);
        assert_eq!(sock_events(false, false), PollFlags::POLLIN | PollFlags::POLLOUT);
        // Paused: the backlog still leaves, nothing is read.
        assert_eq!(sock_events(false, true), PollFlags::POLLOUT);
        assert!(sock_events(true, true).is_empty());
    }

    /// The engine channel passes its mark when the engine does not read,
    /// and the pause ends once it has read.
    #[test]
    fn an_unread_engine_channel_pauses_the_socket() {
        let (a, b) = vpnsyncd_common::imsg::socketpair().unwrap();
        let (mut syncer, mut engine) = (ImsgBuf::new(a), ImsgBuf::new(b));
        let mut pause = Pause::new("engine channel", "the sync socket");
        let record = vec![1u8; 8000];
        while !pause.update(syncer.over_high_water()) {
            syncer.compose(ImsgType::SyncUpsert as u32, 0, None, &record).unwrap();
            syncer.write().unwrap();
        }
        assert!(sock_events(true, pause.paused()).is_empty());
        while syncer.queued() > 0 {
            let _ = engine.read();
            engine.buffered().unwrap();
            syncer.write().unwrap();
        }
        assert!(!pause.update(syncer.over_high_water()));
        assert_eq!(sock_events(true, pause.paused()), PollFlags::POLLIN);
    }
}
