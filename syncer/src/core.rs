//! The syncer's state machine, sans-IO: fed the time, datagrams and engine
//! messages; returns datagrams to send and imsgs for the engine and the
//! parent ([`Core::take_output`]). It never touches a socket or a clock, so
//! a whole cluster runs in a test with a virtual clock.
//!
//! Timing, and why:
//! - session records and deletes leave in the loop iteration they arrive,
//!   because a backup without a fresh record cannot take over the session;
//! - progress (counters) is coalesced per session and flushed every
//!   [`PROGRESS_EVERY`], so the datagram rate depends on the number of
//!   sessions, not on the data packet rate (the 2017 design sent one
//!   datagram per data packet);
//! - a joining member asks for the whole table every [`BULK_RETRY`] until a
//!   complete member answers, or decides it is alone after [`ALONE_AFTER`]
//!   without hearing one; only then does it send `SyncReady`, which lets the
//!   parent lift the CARP demotion.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vpnsyncd_common::codec::DecodeError;
use vpnsyncd_common::ctl::SyncInfo;
use vpnsyncd_common::msg::{ImsgType, Role};
use vpnsyncd_config::SyncTransport;

use crate::imsgs;
use crate::key::SyncKey;
use crate::peers::Peers;
use crate::proto::{BootId, Msg, Opener, Packer, Reject, Sealer, SessionId};
use crate::table::{log_too_large, Table};

pub const HEARTBEAT: Duration = Duration::from_secs(1);
pub const BULK_RETRY: Duration = Duration::from_secs(1);
pub const ALONE_AFTER: Duration = Duration::from_secs(3);
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// At most one debug line per reason per this long: a flood of forged
/// datagrams must not become a flood of log lines.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Where our datagrams go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The parent joined the group on the interface; we only send to it.
    Multicast { group: SocketAddr, interface: String },
    /// Every datagram goes to each configured peer.
    Unicast(Vec<SocketAddr>),
}

impl Transport {
    pub fn new(t: &SyncTransport) -> Transport {
        match t {
            SyncTransport::Multicast { group, port, interface } => {
                Transport::Multicast { group: SocketAddr::from((*group, *port)), interface: interface.clone() }
            }
            SyncTransport::Unicast { peers } => Transport::Unicast(peers.clone()),
        }
    }

    /// The one line `show sync` prints.
    pub fn describe(&self) -> String {
        match self {
            Transport::Multicast { group, interface } => {
                format!("multicast {group} on {interface}")
            }
            Transport::Unicast(_) => "unicast".to_string(),
        }
    }

    fn dests(&self) -> &[SocketAddr] {
        match self {
            Transport::Multicast { group, .. } => std::slice::from_ref(group),
            Transport::Unicast(peers) => peers,
        }
    }

    fn configured_peers(&self) -> &[SocketAddr] {
        match self {
            Transport::Multicast { .. } => &[],
            Transport::Unicast(peers) => peers,
        }
    }
}

/// Something for the I/O shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send { to: SocketAddr, bytes: Vec<u8> },
    Engine { ty: ImsgType, data: Vec<u8> },
    Parent { ty: ImsgType, data: Vec<u8> },
}

/// The sync socket's side: absent when standalone.
struct Link {
    transport: Transport,
    key: SyncKey,
    boot: BootId,
    sealer: Sealer,
    opener: Opener,
}

#[derive(Debug, Default)]
struct Counters {
    sent: u64,
    received: u64,
    auth: u64,
    replay: u64,
    version: u64,
    malformed: u64,
}

/// Lets one log line per key through per [`LOG_EVERY`].
#[derive(Default)]
struct Throttle(Vec<(&'static str, Instant)>);

impl Throttle {
    fn allow(&mut self, key: &'static str, now: Instant) -> bool {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, last)) if now.saturating_duration_since(*last) < LOG_EVERY => false,
            Some((_, last)) => {
                *last = now;
                true
            }
            None => {
                self.0.push((key, now));
                true
            }
        }
    }
}

pub struct Core {
    link: Option<Link>,
    role: Option<Role>,
    table: Table,
    peers: Peers,
    /// The table holds what the cluster holds (bulk received, or alone).
    complete: bool,
    started: Instant,
    unix_at_start: u64,
    next_heartbeat: Instant,
    next_bulk_request: Instant,
    last_progress_flush: Option<Instant>,
    /// The engine's latest progress per session, not sent yet.
    pending_progress: BTreeMap<SessionId, Vec<u8>>,
    /// Messages for every peer, sent at the next [`Core::take_output`].
    urgent: Vec<Msg>,
    /// Last datagram from a peer whose heartbeat said MASTER.
    last_master: Option<Instant>,
    counters: Counters,
    quiet: Throttle,
    out: Vec<Output>,
}

impl Core {
    /// `sync` is `None` when the configuration has no sync block: then the
    /// table is complete at once and `SyncReady` is the first output.
    /// `boot` must be random per process run (see [`crate::proto`]); `unix`
    /// is the wall clock at `now`, for `show sync`.
    pub fn new(sync: Option<(Transport, SyncKey)>, boot: BootId, now: Instant, unix: u64) -> Core {
        let link = sync.map(|(transport, key)| Link {
            sealer: Sealer::new(&key, boot),
            opener: Opener::new(key.clone(), boot),
            transport,
            key,
            boot,
        });
        let mut core = Core {
            peers: Peers::new(link.as_ref().map_or(&[], |l| l.transport.configured_peers())),
            link,
            role: None,
            table: Table::default(),
            complete: false,
            started: now,
            unix_at_start: unix,
            next_heartbeat: now,
            next_bulk_request: now,
            last_progress_flush: None,
            pending_progress: BTreeMap::new(),
            urgent: Vec::new(),
            last_master: None,
            counters: Counters::default(),
            quiet: Throttle::default(),
            out: Vec::new(),
        };
        if core.link.is_none() {
            core.ready();
        }
        core
    }

    /// A new role from the parent (carpwatch). Peers learn it at once
    /// through a heartbeat, so that their lag measures the right member.
    pub fn set_role(&mut self, role: Role) {
        match self.role {
            Some(old) if old == role => return,
            Some(old) => log::info!("role {} -> {}", old.name(), role.name()),
            None => log::info!("role {}", role.name()),
        }
        self.role = Some(role);
        self.urgent.push(self.heartbeat());
    }

    /// A sync key from a reload. The same key keeps the replay windows
    /// (resetting them would let old datagrams in again).
    pub fn set_key(&mut self, key: SyncKey) {
        if let Some(l) = &mut self.link {
            if l.key != key {
                log::info!("sync key changed");
                l.sealer = Sealer::new(&key, l.boot);
                l.opener = Opener::new(key.clone(), l.boot);
                l.key = key;
            }
        }
    }

    /// A `Sync*` message from the engine: its sessions' state, sent while
    /// it serves. We send it whatever our own role: the engine knows best
    /// whether it serves, and our role may lag behind its own by a message.
    pub fn on_engine(&mut self, ty: ImsgType, data: &[u8]) -> Result<(), DecodeError> {
        let Some(changed) = self.table.apply(imsgs::from_engine(ty, data)?) else {
            return Ok(());
        };
        match changed {
            Msg::Progress(entries) => self.pending_progress.extend(entries),
            Msg::Upsert { id, .. } | Msg::Delete { id } => {
                // What was pending is older than this.
                self.pending_progress.remove(&id);
                self.urgent.push(changed);
            }
            _ => {}
        }
        Ok(())
    }

    /// A datagram received on the sync socket.
    pub fn on_datagram(&mut self, from: SocketAddr, d: &[u8], now: Instant) {
        let Some(link) = &mut self.link else {
            return;
        };
        let msgs = match link.opener.open(d) {
            Ok(msgs) => msgs,
            Err(r) => return self.reject(from, r, now),
        };
        self.counters.received += 1;
        self.peers.heard(from, now, self.unix(now));
        for m in msgs {
            self.on_peer_msg(from, m, now);
        }
        if self.peers.role(from) == Some(Role::Master) {
            self.last_master = Some(now);
        }
    }

    fn on_peer_msg(&mut self, from: SocketAddr, m: Msg, now: Instant) {
        match m {
            Msg::Heartbeat { role, complete, .. } => self.peers.heartbeat(from, role, complete),
            Msg::BulkRequest => self.answer_bulk(from),
            Msg::BulkEnd { count } if !self.complete => {
                // Fewer sessions than announced: part of the burst was lost
                // (socket buffers); the next request gets it all again.
                let have = self.table.len();
                if have < count as usize {
                    log::debug!("bulk from {from}: {have} of {count} sessions, asking again");
                } else {
                    log::info!("session table complete: {have} sessions from {from}");
                    self.ready();
                }
            }
            Msg::BulkEnd { .. } => {}
            Msg::Want(ids) => {
                let mut p = Packer::default();
                self.table.pack_some(&ids, &mut p);
                log::debug!("resending {} session record(s) to {from}", ids.len());
                self.send(Some(from), p);
            }
            _ if self.role == Some(Role::Master) => {
                // Split brain, or a peer that has not seen the takeover yet:
                // our engine's sessions are the truth now. (Never log the
                // message itself: records hold keys.)
                if self.quiet.allow("ignored", now) {
                    log::debug!("master: ignoring session updates from {from}");
                }
            }
            update => {
                let missing = self.table.unknown(&update);
                if !missing.is_empty() && self.quiet.allow("want", now) {
                    let mut p = Packer::default();
                    if p.push(&Msg::Want(missing)).is_ok() {
                        self.send(Some(from), p);
                    }
                }
                if let Some((ty, data)) = self.table.apply(update).as_ref().and_then(imsgs::to_engine) {
                    self.out.push(Output::Engine { ty, data });
                }
            }
        }
    }

    /// Sends the whole table to a joining member, to it alone. Only a
    /// complete table is offered: an incomplete one would end the joiner's
    /// bulk with sessions missing.
    fn answer_bulk(&mut self, to: SocketAddr) {
        if !self.complete {
            return;
        }
        let mut p = Packer::default();
        let n = self.table.pack_all(&mut p);
        p.push(&Msg::BulkEnd { count: n }).expect("a BulkEnd is small");
        log::debug!("bulk answer of {n} sessions to {to}");
        self.send(Some(to), p);
    }

    /// Runs the timers; call it at least every [`PROGRESS_EVERY`].
    pub fn tick(&mut self, now: Instant) {
        if self.link.is_none() {
            return;
        }
        if now >= self.next_heartbeat {
            self.urgent.push(self.heartbeat());
            self.next_heartbeat = now + HEARTBEAT;
        }
        if !self.complete {
            let waited = now.saturating_duration_since(self.started);
            if waited >= ALONE_AFTER && !self.peers.complete_heard(now, ALONE_AFTER) {
                log::info!("no peer answered: alone in the cluster");
                self.ready();
            } else if now >= self.next_bulk_request {
                self.urgent.push(Msg::BulkRequest);
                self.next_bulk_request = now + BULK_RETRY;
            }
        }
        let due = self.last_progress_flush.is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_EVERY);
        if due && !self.pending_progress.is_empty() {
            let mut p = Packer::default();
            for (id, bytes) in std::mem::take(&mut self.pending_progress) {
                if let Err(e) = p.progress(id, &bytes) {
                    log_too_large(id, e);
                }
            }
            self.send(None, p);
            self.last_progress_flush = Some(now);
        }
    }

    /// Everything to do now; urgent messages are packed into datagrams here,
    /// so that all updates of one loop iteration share datagrams.
    pub fn take_output(&mut self) -> Vec<Output> {
        if !self.urgent.is_empty() {
            let mut p = Packer::default();
            for m in std::mem::take(&mut self.urgent) {
                if let (Err(e), Msg::Upsert { id, .. }) = (p.push(&m), &m) {
                    log_too_large(*id, e);
                }
            }
            self.send(None, p);
        }
        std::mem::take(&mut self.out)
    }

    /// `show sync`. `lag_ms` is 0 when we are master or have not heard a
    /// master yet.
    pub fn info(&self, now: Instant) -> SyncInfo {
        let lag = match (self.role, self.last_master) {
            (Some(Role::Master), _) | (_, None) => 0,
            (_, Some(t)) => now.saturating_duration_since(t).as_millis(),
        };
        let c = &self.counters;
        SyncInfo {
            role: self.role,
            transport: self.link.as_ref().map_or("standalone (no sync block)".into(), |l| l.transport.describe()),
            peers: self.peers.info(now),
            sessions: self.table.len() as u32,
            lag_ms: lag.min(u32::MAX as u128) as u32,
            bulk_complete: self.complete,
            sent: c.sent,
            received: c.received,
            rejected_auth: c.auth,
            rejected_replay: c.replay,
            rejected_version: c.version,
            rejected_malformed: c.malformed,
        }
    }

    fn heartbeat(&self) -> Msg {
        Msg::Heartbeat {
            role: self.role.unwrap_or(Role::Init),
            sessions: self.table.len() as u32,
            complete: self.complete,
        }
    }

    /// The table is complete: tell the parent (lift the demotion) and the
    /// engine, once.
    fn ready(&mut self) {
        self.complete = true;
        for out in [
            Output::Parent { ty: ImsgType::SyncReady, data: Vec::new() },
            Output::Engine { ty: ImsgType::SyncReady, data: Vec::new() },
        ] {
            self.out.push(out);
        }
    }

    fn reject(&mut self, from: SocketAddr, r: Reject, now: Instant) {
        let c = &mut self.counters;
        *match r {
            Reject::Version => &mut c.version,
            Reject::Auth => &mut c.auth,
            Reject::Replay => &mut c.replay,
            Reject::Malformed => &mut c.malformed,
        } += 1;
        if self.quiet.allow(r.reason(), now) {
            log::debug!("sync datagram from {from} rejected: {}", r.reason());
        }
    }

    /// Seals the packed datagrams and sends each to `to`, or to every
    /// destination of the transport.
    fn send(&mut self, to: Option<SocketAddr>, p: Packer) {
        let Some(link) = &mut self.link else {
            return;
        };
        let dests = match &to {
            Some(a) => std::slice::from_ref(a),
            None => link.transport.dests(),
        };
        for plain in p.finish() {
            let bytes = link.sealer.seal(&plain);
            for &to in dests {
                self.out.push(Output::Send { to, bytes: bytes.clone() });
                self.counters.sent += 1;
            }
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix_at_start + now.saturating_duration_since(self.started).as_secs()
    }
}
