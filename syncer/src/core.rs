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
//! - a joining member asks for the whole table and asks again when nothing of
//!   the answer arrived for [`BULK_RETRY`], or decides it is alone after
//!   [`ALONE_AFTER`] without hearing a complete member; only then does it
//!   send `SyncReady`, which lets the parent lift the CARP demotion;
//! - the bulk answer comes from one member (the master, or without one the
//!   lowest-numbered complete member), paced at [`BULK_BURST`] datagrams per
//!   [`BULK_PACE`], so that a large table does not overflow socket buffers;
//! - deletes are sent at once and again with the next [`DELETE_REPEATS`]
//!   heartbeats; every heartbeat carries the table's digest, and a backup
//!   whose table differs from the master's for [`DIVERGED_AFTER`] asks for a
//!   resync (a bulk that also removes what the master no longer has);
//! - entries nobody refreshes for twice the keepalive timeout expire.
//!
//! What a backup knows about its own state is in `show sync` ([`SyncState`]):
//! whether it heard the master lately and whether their tables agree.

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
use crate::proto::{boot_member, BootId, Msg, Opener, Packer, Reject, Sealer, SessionId};
use crate::table::{log_too_large, Source, Table};

pub const HEARTBEAT: Duration = Duration::from_secs(1);
pub const BULK_RETRY: Duration = Duration::from_secs(1);
pub const ALONE_AFTER: Duration = Duration::from_secs(3);
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// A bulk answer sends this many datagrams per [`BULK_PACE`]: 10,000
/// datagrams a second, under 12 MB/s, which a receiver that reads every
/// few milliseconds drains without filling its socket buffer.
pub const BULK_BURST: usize = 50;
pub const BULK_PACE: Duration = Duration::from_millis(5);
/// Deletes go out again with this many heartbeats after the first send.
pub const DELETE_REPEATS: u8 = 2;
/// At most this many messages wait to be repeated: beyond it (thousands of
/// clients connecting at once) the digest and `Want` repair what is lost,
/// and a heartbeat never turns into a burst.
pub const MAX_REPEAT: usize = 64;
/// A digest that differs from the master's this long starts a resync.
pub const DIVERGED_AFTER: Duration = Duration::from_secs(2);
/// At most one resync per this long.
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// No heartbeat from a master this long: the backup may be missing state.
pub const MASTER_SILENT: Duration = Duration::from_secs(3);
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
    sealer: Sealer,
    opener: Opener,
}

/// What the syncer needs of the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Our member number (vpnsyncd.conf `member`).
    pub member: u8,
    /// Entries nobody refreshed for this long expire (twice the keepalive
    /// timeout, like the engine's ghosts).
    pub lifetime: Duration,
    /// Sessions the table holds at most.
    pub limit: usize,
}

#[derive(Debug, Default)]
struct Counters {
    sent: u64,
    received: u64,
    auth: u64,
    replay: u64,
    version: u64,
    malformed: u64,
    /// Updates for sessions beyond the table's bound.
    full: u64,
}

/// What this member knows of its own table, for `show sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Master, standalone, or a backup whose table matches the master's.
    InSync,
    /// Joining: the bulk is not complete.
    Joining,
    /// A backup that has not heard a master for this long.
    MasterSilent(Duration),
    /// A backup whose digest differs from the master's since this long.
    Diverged(Duration),
    /// Another member uses our member number.
    DuplicateMember,
}

impl SyncState {
    pub fn describe(self) -> String {
        match self {
            SyncState::InSync => "in sync".into(),
            SyncState::Joining => "joining: waiting for the bulk".into(),
            SyncState::MasterSilent(d) => {
                format!("may be missing state: no heartbeat from a master for {} s", d.as_secs())
            }
            SyncState::Diverged(d) => {
                format!("may be missing state: table differs from the master's for {} s", d.as_secs())
            }
            SyncState::DuplicateMember => "another member uses this member number: demoted".into(),
        }
    }
}

/// A paced bulk answer in progress.
#[derive(Debug)]
struct BulkJob {
    to: SocketAddr,
    /// The last session id sent; `None` before the first.
    cursor: Option<SessionId>,
    sent: u32,
    next_at: Instant,
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
    params: Params,
    role: Option<Role>,
    table: Table,
    peers: Peers,
    /// The table holds what the cluster holds (bulk received, or alone).
    complete: bool,
    started: Instant,
    unix_at_start: u64,
    next_heartbeat: Instant,
    /// When the last datagram of the bulk we wait for arrived (or when we
    /// asked); nothing for [`BULK_RETRY`] means ask again.
    bulk_heard: Instant,
    /// Sessions received during the bulk we wait for (joining or resync).
    bulk_seen: Option<std::collections::HashSet<SessionId>>,
    /// The bulk we wait for is a resync of a complete table.
    resync: bool,
    last_resync: Option<Instant>,
    /// Bulk answers being sent, paced.
    bulk_out: Vec<BulkJob>,
    last_progress_flush: Option<Instant>,
    /// The engine's latest progress per session, not sent yet.
    pending_progress: BTreeMap<SessionId, (u64, Vec<u8>)>,
    /// Messages for every peer, sent at the next [`Core::take_output`].
    urgent: Vec<Msg>,
    /// Deletes and records to send again with the next heartbeats.
    repeat: Vec<(Msg, u8)>,
    /// Last heartbeat from a peer that said MASTER.
    last_master: Option<Instant>,
    /// Since when our digest differs from the master's.
    diverged_since: Option<Instant>,
    /// Last datagram from another member with our member number.
    duplicate_heard: Option<Instant>,
    counters: Counters,
    quiet: Throttle,
    out: Vec<Output>,
}

impl Core {
    /// `sync` is `None` when the configuration has no sync block: then the
    /// table is complete at once and `SyncReady` is the first output.
    /// `boot` must be unique per process run (see [`crate::proto`]); `unix`
    /// is the wall clock at `now`, for `show sync`.
    pub fn new(sync: Option<(Transport, SyncKey)>, params: Params, boot: BootId, now: Instant, unix: u64) -> Core {
        let link = sync.map(|(transport, key)| Link {
            sealer: Sealer::new(&key, boot),
            opener: Opener::new(key.clone(), boot),
            transport,
            key,
        });
        let mut core = Core {
            peers: Peers::new(link.as_ref().map_or(&[], |l| l.transport.configured_peers())),
            link,
            params,
            role: None,
            table: Table::new(params.limit),
            complete: false,
            started: now,
            unix_at_start: unix,
            next_heartbeat: now,
            bulk_heard: now,
            bulk_seen: Some(Default::default()),
            resync: false,
            last_resync: None,
            bulk_out: Vec::new(),
            last_progress_flush: None,
            pending_progress: BTreeMap::new(),
            urgent: Vec::new(),
            repeat: Vec::new(),
            last_master: None,
            diverged_since: None,
            duplicate_heard: None,
            counters: Counters::default(),
            quiet: Throttle::default(),
            out: Vec::new(),
        };
        if core.link.is_none() {
            core.ready();
        } else {
            core.urgent.push(Msg::BulkRequest);
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
        if self.role == Some(Role::Master) {
            self.table.yield_own();
        }
        self.role = Some(role);
        self.diverged_since = None;
        self.urgent.push(self.heartbeat());
    }

    /// A sync key from a reload. The replay windows and our sequence go on
    /// whatever the key (resetting them would let old datagrams in again,
    /// should an earlier key come back).
    pub fn set_key(&mut self, key: SyncKey) {
        if let Some(l) = &mut self.link {
            if l.key != key {
                log::info!("sync key changed");
                l.sealer.set_key(&key);
                l.opener.set_key(key.clone());
                l.key = key;
            }
        }
    }

    /// A `Sync*` message from the engine: the state of sessions it serves,
    /// sent whatever our own role (the engine knows best whether it
    /// serves, and our role may lag behind its own by a message).
    pub fn on_engine(&mut self, ty: ImsgType, data: &[u8], now: Instant) -> Result<(), DecodeError> {
        let applied = self.table.apply(imsgs::from_engine(ty, data)?, Source::Engine, now);
        if applied.full {
            self.counters.full += 1;
        }
        match applied.changed {
            Some(Msg::Progress(entries)) => {
                self.pending_progress.extend(entries.into_iter().map(|(id, gen, b)| (id, (gen, b))))
            }
            Some(m) => {
                // An upsert or a delete: progress still pending is older.
                if let Msg::Upsert { id, .. } | Msg::Delete { id, .. } = m {
                    self.pending_progress.remove(&id);
                }
                // Both go again with the next heartbeats: a lost record is
                // the costliest loss (a takeover without it loses the
                // session), a lost delete leaves a ghost behind.
                let times = if matches!(m, Msg::Delete { .. }) { DELETE_REPEATS } else { 1 };
                self.repeat_later(&m, times);
                self.urgent.push(m);
            }
            None => {}
        }
        Ok(())
    }

    fn repeat_later(&mut self, m: &Msg, times: u8) {
        if self.repeat.len() < MAX_REPEAT {
            self.repeat.push((m.clone(), times));
        }
    }

    /// A datagram received on the sync socket.
    pub fn on_datagram(&mut self, from: SocketAddr, d: &[u8], now: Instant) {
        let Some(link) = &mut self.link else {
            return;
        };
        let (boot, msgs) = match link.opener.open(d) {
            Ok(v) => v,
            Err(r) => return self.reject(from, r, now),
        };
        self.counters.received += 1;
        if boot_member(&boot) == self.params.member {
            return self.duplicate(from, now);
        }
        let unix = self.unix(now);
        self.peers.heard(from, boot_member(&boot), now, unix);
        for m in msgs {
            self.on_peer_msg(from, m, now);
        }
    }

    /// Another process with our member number: our send spaces would
    /// overlap, so we must not serve. Stay demoted while it is heard.
    fn duplicate(&mut self, from: SocketAddr, now: Instant) {
        if self.quiet.allow("duplicate", now) {
            log::error!(
                "sync peer {from} uses this machine's member number {}: give every member its own `member` \
                 in vpnsyncd.conf; staying demoted",
                self.params.member
            );
        }
        if self.duplicate_heard.is_none() {
            self.unready("another cluster member uses this member number");
        }
        self.duplicate_heard = Some(now);
    }

    fn on_peer_msg(&mut self, from: SocketAddr, m: Msg, now: Instant) {
        match m {
            Msg::Heartbeat { role, complete, digest, .. } => {
                self.peers.heartbeat(from, role, complete);
                if role == Role::Master {
                    self.last_master = Some(now);
                    self.compare_digest(digest, now);
                }
            }
            Msg::BulkRequest => self.answer_bulk(from, now),
            Msg::BulkEnd { count } => self.bulk_end(from, count, now),
            Msg::Want(ids) if self.role == Some(Role::Master) => {
                let mut p = Packer::default();
                for id in &ids {
                    self.table.pack(*id, &mut p);
                }
                log::debug!("resending {} session record(s) to {from}", ids.len());
                self.send(Some(from), p);
            }
            Msg::Want(_) => {}
            update => {
                if let (Some(seen), Msg::Upsert { id, .. }) = (&mut self.bulk_seen, &update) {
                    if seen.insert(*id) {
                        self.bulk_heard = now;
                    }
                }
                let from_master = self.peers.role(from) == Some(Role::Master);
                let src = Source::Peer { master: self.role == Some(Role::Master), from_master };
                let applied = self.table.apply(update, src, now);
                if applied.full {
                    self.counters.full += 1;
                }
                if !applied.wanted.is_empty() && self.quiet.allow("want", now) {
                    let mut p = Packer::default();
                    if p.push(&Msg::Want(applied.wanted)).is_ok() {
                        self.send(Some(from), p);
                    }
                }
                if let Some((ty, data)) = applied.changed.as_ref().and_then(imsgs::to_engine) {
                    self.out.push(Output::Engine { ty, data });
                }
            }
        }
    }

    /// A backup compares the master's digest with its own table; a
    /// difference that lasts starts a resync.
    fn compare_digest(&mut self, digest: u64, now: Instant) {
        if self.role == Some(Role::Master) || !self.complete || self.bulk_seen.is_some() {
            return;
        }
        if digest == self.table.digest() {
            self.diverged_since = None;
            return;
        }
        let since = *self.diverged_since.get_or_insert(now);
        let may = self.last_resync.is_none_or(|t| now.saturating_duration_since(t) >= RESYNC_EVERY);
        if now.saturating_duration_since(since) >= DIVERGED_AFTER && may {
            log::info!("session table differs from the master's for {} s: resync", DIVERGED_AFTER.as_secs());
            self.last_resync = Some(now);
            self.resync = true;
            self.bulk_seen = Some(Default::default());
            self.bulk_heard = now;
            self.urgent.push(Msg::BulkRequest);
        }
    }

    /// The end of a bulk answer: complete if every announced session came.
    fn bulk_end(&mut self, from: SocketAddr, count: u32, now: Instant) {
        let Some(seen) = &self.bulk_seen else { return };
        if seen.len() < count as usize {
            // Part of it was lost (socket buffers): ask again at once; the
            // answer is paced, and what we have is kept.
            log::debug!("bulk from {from}: {} of {count} sessions, asking again", seen.len());
            self.urgent.push(Msg::BulkRequest);
            self.bulk_heard = now;
            return;
        }
        let seen = self.bulk_seen.take().unwrap_or_default();
        if std::mem::take(&mut self.resync) {
            let gone = self.table.retain(&seen);
            log::info!("resync from {from}: {count} sessions, {} no longer on the master", gone.len());
            for m in gone {
                if let Some((ty, data)) = imsgs::to_engine(&m) {
                    self.out.push(Output::Engine { ty, data });
                }
            }
            self.diverged_since = None;
        } else {
            log::info!("session table complete: {} sessions from {from}", self.table.len());
            self.ready();
        }
    }

    /// Whether we answer bulk requests: the master does; without a master
    /// heard lately, the lowest-numbered complete member (one answer, not
    /// one from every member).
    fn answers_bulk(&self, now: Instant) -> bool {
        if !self.complete {
            return false;
        }
        if self.role == Some(Role::Master) {
            return true;
        }
        let master_heard = self.last_master.is_some_and(|t| now.saturating_duration_since(t) < MASTER_SILENT);
        !master_heard && !self.peers.lower_complete_heard(self.params.member, now, ALONE_AFTER)
    }

    /// Starts a paced bulk answer to a joining (or resyncing) member.
    fn answer_bulk(&mut self, to: SocketAddr, now: Instant) {
        if !self.answers_bulk(now) {
            return;
        }
        log::debug!("bulk answer of {} sessions to {to}", self.table.len());
        self.bulk_out.retain(|j| j.to != to);
        self.bulk_out.push(BulkJob { to, cursor: None, sent: 0, next_at: now });
    }

    /// Sends the next part of every bulk answer that is due.
    fn pace_bulks(&mut self, now: Instant) {
        let mut jobs = std::mem::take(&mut self.bulk_out);
        jobs.retain_mut(|job| {
            if job.next_at > now {
                return true;
            }
            let mut p = Packer::default();
            let mut done = false;
            // About one datagram per record.
            for id in self.table.ids_after(job.cursor, BULK_BURST) {
                job.cursor = Some(id);
                if self.table.pack(id, &mut p) {
                    job.sent += 1;
                }
            }
            if self.table.ids_after(job.cursor, 1).is_empty() {
                p.push(&Msg::BulkEnd { count: job.sent }).expect("a BulkEnd is small");
                done = true;
            }
            self.send(Some(job.to), p);
            job.next_at = now + BULK_PACE;
            !done
        });
        self.bulk_out = jobs;
    }

    /// When [`Core::tick`] should run next at the latest.
    pub fn next_tick(&self, now: Instant) -> Duration {
        // Standalone, `tick` does nothing: sleep as long as the parent
        // watchdog allows (its heartbeats wake us anyway).
        if self.link.is_none() {
            return HEARTBEAT;
        }
        match self.bulk_out.iter().map(|j| j.next_at).min() {
            Some(t) => t.saturating_duration_since(now).min(PROGRESS_EVERY),
            None => PROGRESS_EVERY,
        }
    }

    /// Runs the timers; call it at least every [`Core::next_tick`].
    pub fn tick(&mut self, now: Instant) {
        if self.link.is_none() {
            return;
        }
        if now >= self.next_heartbeat {
            self.urgent.push(self.heartbeat());
            self.repeat.retain_mut(|(m, left)| {
                self.urgent.push(m.clone());
                *left -= 1;
                *left > 0
            });
            self.next_heartbeat = now + HEARTBEAT;
            for m in self.table.expire(now, self.params.lifetime) {
                if let Some((ty, data)) = imsgs::to_engine(&m) {
                    self.out.push(Output::Engine { ty, data });
                }
            }
        }
        if self.duplicate_heard.is_some_and(|t| now.saturating_duration_since(t) >= ALONE_AFTER) {
            self.duplicate_heard = None;
            if self.complete {
                self.ready();
            }
        }
        if !self.complete {
            let waited = now.saturating_duration_since(self.started);
            if waited >= ALONE_AFTER && !self.peers.complete_heard(now, ALONE_AFTER) {
                log::info!("no peer answered: alone in the cluster");
                self.bulk_seen = None;
                self.ready();
            }
        }
        if self.bulk_seen.is_some() && now.saturating_duration_since(self.bulk_heard) >= BULK_RETRY {
            self.urgent.push(Msg::BulkRequest);
            self.bulk_heard = now;
        }
        self.pace_bulks(now);
        let due = self.last_progress_flush.is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_EVERY);
        if due && !self.pending_progress.is_empty() {
            let mut p = Packer::default();
            for (id, (gen, bytes)) in std::mem::take(&mut self.pending_progress) {
                if let Err(e) = p.progress(id, gen, &bytes) {
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

    /// What we know of our own table.
    pub fn state(&self, now: Instant) -> SyncState {
        let since = |t: Instant| now.saturating_duration_since(t);
        if self.duplicate_heard.is_some() {
            SyncState::DuplicateMember
        } else if !self.complete {
            SyncState::Joining
        } else if self.role == Some(Role::Master) || self.link.is_none() {
            SyncState::InSync
        } else if let Some(t) = self.diverged_since {
            SyncState::Diverged(since(t))
        } else {
            match self.last_master {
                Some(t) if since(t) < MASTER_SILENT => SyncState::InSync,
                Some(t) => SyncState::MasterSilent(since(t)),
                None => SyncState::MasterSilent(since(self.started)),
            }
        }
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
            state: self.state(now).describe(),
            rejected_full: c.full,
        }
    }

    fn heartbeat(&self) -> Msg {
        Msg::Heartbeat {
            role: self.role.unwrap_or(Role::Init),
            sessions: self.table.len() as u32,
            complete: self.complete,
            digest: self.table.digest(),
        }
    }

    /// The table is complete: tell the parent (lift the demotion) and the
    /// engine.
    fn ready(&mut self) {
        self.complete = true;
        if self.duplicate_heard.is_some() {
            return;
        }
        for out in [
            Output::Parent { ty: ImsgType::SyncReady, data: Vec::new() },
            Output::Engine { ty: ImsgType::SyncReady, data: Vec::new() },
        ] {
            self.out.push(out);
        }
    }

    /// The parent must demote again.
    fn unready(&mut self, why: &str) {
        self.out.push(Output::Parent { ty: ImsgType::SyncUnready, data: why.as_bytes().to_vec() });
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
