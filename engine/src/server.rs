//! The session table: every client by peer-id, by real address and by
//! tunnel address, the address pool, and the first packet of a new client
//! (authenticated before any state is made). Datagrams from the link and
//! packets from the tun device come in here; control datagrams to send
//! collect in `outbox`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use vpnsyncd_common::ctl::ClientInfo;
use vpnsyncd_common::msg::Role;
use vpnsyncd_config::{Config, DuplicateCn, Ipv4Net};

use crate::admission::{half_open_cap, Admission};
use crate::cookie::CookieKey;
use crate::data::{classify, Payload};
use crate::pool::Pool;
use crate::record::{Progress, SessionRecord};
use crate::sendspace::MEMBERS;
use crate::session::{DataOut, Gen, Now, Offer, Session, SessionConfig};
use crate::wire::{self, Opcode};
use crate::wrap::Wrapper;

mod tlscv2;

/// A control datagram to send: (listener index, destination, bytes).
pub type Outgoing = (usize, SocketAddr, Vec<u8>);

/// [`Server::shard_of`] session `s` (peer-id `id`) of `threads`.
fn shard_for(s: Option<&Session>, id: u32, threads: usize) -> usize {
    match s.and_then(|s| s.negotiated.as_ref()) {
        Some(n) if !n.data_v2 => 0,
        _ => vpnsyncd_common::steer::shard_of(id, threads),
    }
}

/// Session state for the syncer (keyed by our session id), each with the
/// generation it belongs to (crate::replication::Gen).
#[derive(Debug, PartialEq, Eq)]
pub enum SyncOut {
    Upsert([u8; 8], Gen, Vec<u8>),
    Progress(Vec<([u8; 8], Gen, Vec<u8>)>),
    /// The generation of the session's last record.
    Delete([u8; 8], Gen),
}

/// Peer-ids a synced record may carry: every member hands out its own
/// residue class (mod 8) of peer-ids, lowest first, so this bounds the
/// session table whatever a record says.
const PEER_ID_LIMIT: u32 = 1 << 19;

/// Why a synced record was not installed; each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// We already hold this generation or a newer one.
    Stale,
    /// We serve the session ourselves.
    Live,
    /// Its listener, peer-id, cipher or address does not fit our
    /// configuration.
    Invalid(&'static str),
    /// Its peer-id, address or client address belongs to a session we serve.
    Conflict,
    /// The session table is full.
    Full,
}

/// Records refused, by reason, for `show summary`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    pub stale: u64,
    pub live: u64,
    pub invalid: u64,
    pub conflict: u64,
    pub full: u64,
}

impl Refusals {
    pub fn total(&self) -> u64 {
        self.stale + self.live + self.invalid + self.conflict + self.full
    }
}

/// The stateless first packet's counters (crate::cookie).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cookies {
    /// First resets answered without state.
    pub answered: u64,
    /// Sessions made from a valid cookie.
    pub accepted: u64,
    /// Authenticated second packets whose cookie was wrong or too old.
    pub refused: u64,
}

/// All sessions of this engine.
pub struct Server {
    conf: Arc<SessionConfig>,
    /// Cloned into every new session: the keys, with fresh counters.
    wrap: Wrapper,
    pub(crate) pool: Pool,
    max_clients: u32,
    listeners: usize,
    /// What carpwatch said last: only a MASTER serves ghosts.
    role: Role,
    /// Indexed by peer-id: this member hands out the lowest free one of
    /// its residue class, others' come from their records.
    pub(crate) sessions: Vec<Option<Box<Session>>>,
    /// How many of `sessions` are `Some`: the table limit is checked on
    /// every record, and counting 10,000 sessions over their slots for
    /// each of a bulk's records made a rejoin quadratic.
    held: usize,
    by_addr: HashMap<SocketAddr, u32>,
    pub(crate) by_vip: HashMap<Ipv4Addr, u32>,
    /// With `client network6`: at most one entry per session, like by_vip.
    pub(crate) by_vip6: HashMap<std::net::Ipv6Addr, u32>,
    by_sid: HashMap<[u8; 8], u32>,
    /// A client's new handshake beside its established session at the
    /// same address: the old one lives until the new one authenticates
    /// (so a replayed reset never ends a session).
    pending: HashMap<SocketAddr, u32>,
    /// Half-open sessions and recent first packets (crate::admission).
    admission: Admission,
    /// With tls-auth/tls-crypt: first resets are answered statelessly
    /// (crate::cookie).
    cookie: Option<CookieKey>,
    cookies: Cookies,
    /// Control datagrams, sent by the main thread.
    pub outbox: Vec<Outgoing>,
    /// Data-channel datagrams (the timers' pings) of each data thread's
    /// sessions (vpnsyncd_common::steer; one queue per `data-threads`, so
    /// its length is their number), which only that thread sends:
    /// they took their packet ids under the session table's lock, and the
    /// thread takes them under it before it takes any id of its own, so
    /// it sends every session's packets in packet-id order.
    pub data_out: Vec<Vec<Outgoing>>,
    pub sync_out: Vec<SyncOut>,
    refusals: Refusals,
    /// First packets refused (bad wrapping, full server): logged quietly.
    refused: crate::quiet::Quiet,
    /// Clients' soft resets refused for coming too often
    /// (crate::reneglimit): logged quietly.
    reneg_refused: crate::quiet::Quiet,
    /// Tunnel packets dropped for their source address: neither the
    /// client's tunnel address nor in its iroutes. Logged quietly.
    wrong_source: crate::quiet::Quiet,
    /// What this run sent under keys it no longer holds (invariant (a)).
    sent: crate::sentkeys::SentKeys,
    /// Password checks waiting for the parent (crate::auth).
    pub checks: crate::auth::Checks,
    /// Which sessions' timers the next tick runs (crate::timers).
    timers: crate::timers::TimerQueue,
    /// client-config-dir settings and iroutes (crate::ccd).
    pub(crate) ccd: crate::ccd::Table,
    /// A client-config-dir is configured and its files have not arrived
    /// yet: clients wait (are refused) rather than miss their settings.
    pub(crate) ccd_pending: bool,
    pub(crate) leases: crate::lease::Leases,
    pub(crate) duplicate_cn: DuplicateCn,
    network: Ipv4Net,
    /// The newest session of each common name that has an address: where
    /// traffic to its iroutes goes.
    pub(crate) by_cn: HashMap<String, u32>,
    /// Client IDs handed out so far (see [`Server::next_client_id`]).
    client_ids: u64,
    /// The ghosts a role change to MASTER made ours, promoted in slices
    /// (crate::takeover).
    takeover: crate::takeover::Takeover,
}

/// IPv4 source address of a packet from the tunnel.
fn ipv4_src(p: &[u8]) -> Option<Ipv4Addr> {
    (p.len() >= 20 && p[0] >> 4 == 4).then(|| Ipv4Addr::new(p[12], p[13], p[14], p[15]))
}

fn ipv4_dst(p: &[u8]) -> Option<Ipv4Addr> {
    (p.len() >= 20 && p[0] >> 4 == 4).then(|| Ipv4Addr::new(p[16], p[17], p[18], p[19]))
}

/// A data packet's session and receive key, from [`Server::receive`]:
/// what opening the packet needs, and nothing that the server's lock
/// guards.
pub struct DataTicket {
    id: u32,
    key: crate::data::Opener,
}

impl DataTicket {
    /// Authenticates and decrypts the packet in place (crate::data).
    pub fn open(&self, packet: &mut [u8]) -> Result<crate::data::Opened, crate::data::DataError> {
        self.key.open(packet)
    }
}

impl Server {
    pub fn new(conf: &Config, session: Arc<SessionConfig>, wrap: Wrapper) -> Self {
        let cookie = CookieKey::derive(&wrap);
        Server {
            conf: session,
            wrap,
            pool: Pool::new(conf.pool.0, conf.pool.1),
            max_clients: conf.max_clients,
            listeners: conf.listen.len(),
            role: Role::Init,
            sessions: Vec::new(),
            held: 0,
            by_addr: HashMap::new(),
            by_vip: HashMap::new(),
            by_vip6: HashMap::new(),
            by_sid: HashMap::new(),
            pending: HashMap::new(),
            admission: Admission::default(),
            cookie,
            cookies: Cookies::default(),
            outbox: Vec::new(),
            data_out: vec![Vec::new(); conf.data_threads.max(1) as usize],
            sync_out: Vec::new(),
            refusals: Refusals::default(),
            refused: crate::quiet::Quiet::default(),
            reneg_refused: crate::quiet::Quiet::default(),
            wrong_source: crate::quiet::Quiet::default(),
            checks: crate::auth::Checks::default(),
            sent: crate::sentkeys::SentKeys::new(
                4 * conf.max_clients as usize * usize::from(MEMBERS),
                crate::sentkeys::life(conf.reneg_sec),
            ),
            timers: Default::default(),
            ccd: crate::ccd::Table::default(),
            ccd_pending: conf.client_config_dir.is_some(),
            leases: crate::lease::Leases::default(),
            duplicate_cn: conf.duplicate_cn,
            network: conf.network,
            by_cn: HashMap::new(),
            client_ids: 0,
            takeover: Default::default(),
        }
    }

    /// The client-config-dir as the parent read it (start and reload).
    pub fn set_client_configs(&mut self, t: crate::ccd::Table) {
        self.ccd = t;
        self.ccd_pending = false;
    }

    /// Applies a reloaded configuration: limits now, protocol settings and
    /// keys for sessions that start from now on.
    pub fn reconfigure(&mut self, conf: &Config, session: Arc<SessionConfig>, wrap: Wrapper) {
        self.pool.resize(conf.pool.0, conf.pool.1);
        self.max_clients = conf.max_clients;
        self.listeners = conf.listen.len();
        self.conf = session;
        self.cookie = CookieKey::derive(&wrap);
        self.wrap = wrap;
        self.duplicate_cn = conf.duplicate_cn;
        self.network = conf.network;
        if conf.client_config_dir.is_none() {
            self.set_client_configs(crate::ccd::Table::default());
        }
    }

    /// Every session, ghosts included: the status report, and the cluster
    /// simulation's convergence check.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> + '_ {
        self.sessions.iter().flatten().map(|b| &**b)
    }

    /// The sessions this member serves whose key exchange is done (ghosts
    /// and half-open sessions do not count): what `max clients` limits.
    pub fn client_count(&self) -> usize {
        self.sessions.iter().flatten().filter(|s| !s.is_ghost()).count().saturating_sub(self.admission.half_open())
    }

    /// Tests only: the earliest deadline in the timer queue.
    #[cfg(test)]
    pub fn next_timer(&self) -> Option<std::time::Instant> {
        self.timers.next_deadline()
    }

    /// When [`Server::on_timer`] must run next (`None`: nothing queued).
    /// A session touched since the last run, or a password check under
    /// way (its time-out), makes it due at once; the I/O loop's floor
    /// (crate::sleep) keeps that from spinning.
    pub fn next_deadline(&self, now: std::time::Instant) -> Option<std::time::Instant> {
        if self.timers.has_touched() || self.checks.pending() > 0 {
            return Some(now);
        }
        self.timers.next_deadline()
    }

    /// Tests only: sessions run by the timers so far.
    #[cfg(test)]
    pub fn timer_runs(&self) -> u64 {
        self.timers.taken()
    }

    /// Tests only: sessions whose first key exchange is not done yet.
    #[cfg(test)]
    pub fn half_open_count(&self) -> usize {
        self.admission.half_open()
    }

    pub fn refusals(&self) -> Refusals {
        self.refusals
    }

    /// Tests only: the stateless first packet's counters.
    #[cfg(test)]
    pub fn cookies(&self) -> Cookies {
        self.cookies
    }

    /// First packets refused so far (see [`crate::quiet`]).
    pub fn refused_first_packets(&self) -> u64 {
        self.refused.total
    }

    /// Clients' soft resets refused so far for coming too often
    /// (crate::reneglimit); every resend of one counts.
    pub fn refused_renegotiations(&self) -> u64 {
        self.reneg_refused.total
    }

    /// Tunnel packets dropped so far for a source address that is not
    /// their client's (its tunnel address or an iroute of it).
    pub fn wrong_source_packets(&self) -> u64 {
        self.wrong_source.total
    }

    /// Sessions of other members held here.
    pub fn ghost_count(&self) -> usize {
        self.sessions.iter().flatten().filter(|s| s.is_ghost()).count()
    }

    /// A session about to change: its timers run at the next tick.
    pub(crate) fn session_mut(&mut self, id: u32) -> Option<&mut Session> {
        let s = self.sessions.get_mut(id as usize).and_then(Option::as_mut).map(|b| &mut **b);
        if s.is_some() {
            self.timers.touch(id);
        }
        s
    }

    /// The lowest free peer-id of this member's residue class.
    fn free_peer_id(&self) -> u32 {
        let m = u32::from(self.conf.member - 1);
        (m..).step_by(MEMBERS.into()).find(|&p| self.sessions.get(p as usize).is_none_or(Option::is_none)).unwrap_or(m)
    }

    /// The next Client ID of this member: monotonic, never reused while
    /// the engine runs (so a `client-kill` of a client that is gone
    /// fails instead of ending the later client that got its peer-id),
    /// and in this member's residue class like the peer-ids, so that an
    /// ID read from another member's status names nobody here either.
    fn next_client_id(&mut self) -> u64 {
        let id = self.client_ids * u64::from(MEMBERS) + u64::from(self.conf.member - 1);
        self.client_ids += 1;
        id
    }

    /// Enters session `s` (new, or a ghost) under peer-id `id` with a
    /// Client ID of its own.
    fn put(&mut self, id: u32, mut s: Session) {
        s.client_id = self.next_client_id();
        while self.sessions.len() <= id as usize {
            self.sessions.push(None);
        }
        if self.sessions[id as usize].replace(Box::new(s)).is_none() {
            self.held += 1;
        }
        self.timers.touch(id);
    }

    /// A datagram from a client. Returns the IP packet to write to the tun
    /// device, if it was one.
    pub fn on_datagram<'a>(
        &mut self,
        now: Now,
        listener: usize,
        from: SocketAddr,
        packet: &'a mut [u8],
    ) -> Option<&'a [u8]> {
        let ticket = self.receive(now, listener, from, packet)?;
        let opened = ticket.open(packet);
        self.opened(now, from, ticket, opened, packet)
    }

    /// The first step of [`Server::on_datagram`]: a control packet is
    /// handled whole; a data packet yields what to open it with, which may
    /// run without the server (crate::shard), then [`Server::opened`].
    pub fn receive(&mut self, now: Now, listener: usize, from: SocketAddr, packet: &mut [u8]) -> Option<DataTicket> {
        let (op, _) = wire::split_first_byte(*packet.first()?);
        let opcode = Opcode::from_u8(op)?;
        if !opcode.is_control() {
            return self.data_ticket(now, from, opcode, packet);
        }
        let known = self.by_addr.get(&from).copied();
        if opcode == Opcode::HardResetClientV2 {
            let template = self.wrap.clone();
            self.on_hard_reset(now, listener, from, known, packet, template);
            return None;
        }
        if opcode == Opcode::HardResetClientV3 {
            self.on_hard_reset_v3(now, listener, from, known, packet);
            return None;
        }
        // The client's session id in the header picks its new handshake
        // over the established session at the same address.
        let sid = packet.get(1..9);
        let pending = self
            .pending
            .get(&from)
            .copied()
            .filter(|&p| self.session_mut(p).is_some_and(|s| Some(&s.remote_sid[..]) == sid));
        let theirs = known.is_some_and(|k| self.session_mut(k).is_some_and(|s| Some(&s.remote_sid[..]) == sid));
        if pending.is_none()
            && !theirs
            && matches!(opcode, Opcode::AckV1 | Opcode::ControlV1 | Opcode::ControlWkcV1)
            && self
                .cookie_wrapper(now, from, opcode, packet)
                .is_some_and(|w| self.on_cookie(now, listener, from, known, packet, w))
        {
            return None;
        }
        let id = pending.or(known)?;
        self.control(now, id, packet);
        None
    }

    /// A first packet dropped: counted, and logged at most once a second.
    fn refuse(&mut self, now: Now, from: SocketAddr, why: impl std::fmt::Display) {
        if let Some(n) = self.refused.event(now.mono) {
            log::warn!("{from}: first packet refused: {why}{}", crate::quiet::more(n));
        }
    }

    fn control(&mut self, now: Now, id: u32, packet: &[u8]) {
        let Some(s) = self.session_mut(id) else {
            return;
        };
        // Authentication first: nothing reaches the session unverified.
        match s.unwrap(packet) {
            Ok((first, sid, body)) => {
                if !self.serves(now, id) {
                    return;
                }
                if let Some(s) = self.session_mut(id) {
                    s.on_control(now, first, sid, &body);
                }
            }
            Err(e) => log::debug!("{}: control packet dropped: {e}", s.label()),
        }
        self.settle(now, id);
    }

    /// The first packet of a client (or of a client that restarted);
    /// `template` is the wrapping its session starts from (the server's,
    /// or under tls-crypt-v2 the client's own).
    fn on_hard_reset(
        &mut self,
        now: Now,
        listener: usize,
        from: SocketAddr,
        known: Option<u32>,
        packet: &[u8],
        template: Wrapper,
    ) -> Option<()> {
        let (first, sid, body, id, time) = match template.verify_only(packet) {
            Ok(v) => v,
            Err(e) => {
                self.refuse(now, from, format_args!("{e} (wrong tls-auth/tls-crypt key?)"));
                return None;
            }
        };
        if first & 7 != 0 {
            log::debug!("{from}: hard reset with key_id {} dropped", first & 7);
            return None;
        }
        let mine = [known, self.pending.get(&from).copied()];
        if let Some(old) =
            mine.into_iter().flatten().find(|&o| self.session_mut(o).is_some_and(|s| s.remote_sid == sid))
        {
            // A retransmitted reset: the session acknowledges it again.
            self.control(now, old, packet);
            return None;
        }
        if template.authenticates() {
            if let Err(r) = self.admission.first_packet(now.mono, now.unix, (sid, id, time)) {
                self.refuse(now, from, r);
                return None;
            }
        }
        if let Some(payload) = self.stateless_payload(&template, id) {
            self.answer_statelessly(now, listener, from, sid, template, payload);
            return None;
        }
        let mut wrap = template;
        if let Err(e) = wrap.record_replay(id, time) {
            log::debug!("{from}: {e}");
            return None;
        }
        let (peer_id, mut s, beside) = self.admit(now, listener, from, known, sid, wrap)?;
        log::info!("{from}: new session, peer-id {peer_id}");
        s.on_control(now, first, sid, &body);
        self.install(now, beside, s);
        None
    }

    /// Answers the first reset of client session `sid` with our reset
    /// under its cookie (crate::cookie), keeping nothing: the reset a
    /// session would send, with replay id 1, acknowledging theirs, wrapped
    /// by `wrap` (a fresh copy of the session's) and carrying `payload`.
    fn answer_statelessly(
        &mut self,
        now: Now,
        listener: usize,
        from: SocketAddr,
        sid: [u8; 8],
        mut wrap: Wrapper,
        payload: &[u8],
    ) {
        let Some(key) = &self.cookie else { return };
        let ours = key.issue(now.unix, from, &sid);
        let body = wire::ControlBody {
            acks: vec![0],
            remote_session_id: Some(sid),
            msg_pid: Some(0),
            payload: payload.to_vec(),
        };
        match wrap.wrap(Opcode::HardResetServerV2.first_byte(0), &ours, &body.to_bytes(), now.unix as u32) {
            Ok(p) => {
                self.cookies.answered += 1;
                log::debug!("{from}: first reset answered with an HMAC cookie");
                self.outbox.push((listener, from, p));
            }
            Err(e) => log::error!("{from}: cannot wrap a cookie reset: {e}"),
        }
    }

    /// A P_ACK_V1, P_CONTROL_V1 or P_CONTROL_WKC_V1 from `from` that
    /// belongs to no session, wrapped by `wrap`: if it acknowledges our
    /// reset under a cookie we issued to it, its session starts here (as
    /// OpenVPN's `session_skip_to_pre_start`). True if the packet was taken
    /// (used or refused as a cookie).
    fn on_cookie(
        &mut self,
        now: Now,
        listener: usize,
        from: SocketAddr,
        known: Option<u32>,
        packet: &[u8],
        wrap: Wrapper,
    ) -> bool {
        let Some(key) = &self.cookie else { return false };
        let Ok((first, sid, body, id, time)) = wrap.verify_only(packet) else { return false };
        let Ok(p) = wire::ControlPacket::decode(first, sid, &body) else { return false };
        if p.key_id != 0 {
            return false;
        }
        let valid = p.body.remote_session_id.filter(|c| p.body.acks.contains(&0) && key.check(now.unix, from, &sid, c));
        let ackless = matches!(p.opcode, Opcode::ControlV1 | Opcode::ControlWkcV1)
            && p.body.acks.is_empty()
            && p.body.msg_pid == Some(1);
        let cookie = match valid {
            Some(c) => c,
            // A 2.4/2.5 client acknowledges our reset in a P_ACK_V1 of its
            // own; when that was lost its ClientHello comes alone and
            // proves nothing (so does a 2.6 client's P_CONTROL_WKC_V1 when
            // it is sent again without its acknowledgement). It gets a half-open session (bounded, per
            // source, replay-checked) under the cookie of this slot, whose
            // reset it then acknowledges.
            None if ackless => key.issue(now.unix, from, &sid),
            None => {
                // Authenticated, so a key holder's: a forged or old cookie.
                self.cookies.refused += 1;
                self.refuse(now, from, "its HMAC cookie is wrong or older than a minute");
                return known.is_none();
            }
        };
        if let Err(r) = self.admission.first_packet(now.mono, now.unix, (sid, id, time)) {
            self.refuse(now, from, r);
            return true;
        }
        let their_reset = if wrap.wkc().is_some() { Opcode::HardResetClientV3 } else { Opcode::HardResetClientV2 };
        let Some((peer_id, mut s, beside)) = self.admit(now, listener, from, known, sid, wrap) else {
            return true;
        };
        s.local_sid = cookie;
        // The handshake's first round as it happened: their reset in, our
        // reset out (already sent: dropped here, unless unacknowledged).
        let reset = wire::ControlBody { msg_pid: Some(0), ..Default::default() };
        s.on_control(now, their_reset.first_byte(0), sid, &reset.to_bytes());
        if valid.is_some() {
            s.outbox.clear();
            self.cookies.accepted += 1;
            log::info!("{from}: new session, peer-id {peer_id}, after its HMAC cookie");
        } else {
            log::info!("{from}: new session, peer-id {peer_id}, half-open (its ClientHello came without the cookie)");
        }
        self.install(now, beside, s);
        self.control(now, peer_id, packet);
        true
    }

    /// Checks there is room for a new session of client session `sid`
    /// at `from` and makes it with `wrap`; returns it with its peer-id and the
    /// established session it starts beside, if any.
    fn admit(
        &mut self,
        now: Now,
        listener: usize,
        from: SocketAddr,
        known: Option<u32>,
        sid: [u8; 8],
        wrap: Wrapper,
    ) -> Option<(u32, Session, Option<u32>)> {
        // An unfinished handshake at this address gives way to the new
        // one; an established session (or a ghost) stays beside it.
        if let Some(p) = self.pending.get(&from).copied() {
            self.remove(p, "the client restarted its handshake");
        }
        let beside = match known {
            Some(old) if self.admission.is_half_open(old) => {
                self.remove(old, "the client restarted its handshake");
                None
            }
            other => other,
        };
        if let Err(r) = self.admission.room(from.ip(), half_open_cap(self.max_clients)) {
            self.refuse(now, from, r);
            return None;
        }
        if beside.is_none() && self.client_count() >= self.max_clients as usize {
            let max = self.max_clients;
            self.refuse(now, from, format_args!("{max} clients already (max clients)"));
            return None;
        }
        let peer_id = self.free_peer_id();
        match Session::new(self.conf.clone(), wrap, from, listener, peer_id, sid, now) {
            Ok(s) => Some((peer_id, s, beside)),
            Err(e) => {
                log::error!("{from}: cannot start a session: {e}");
                None
            }
        }
    }

    /// Enters a new half-open session `s` into the tables.
    fn install(&mut self, now: Now, beside: Option<u32>, s: Session) {
        let (from, peer_id) = (s.peer, s.peer_id);
        match beside {
            Some(_) => self.pending.insert(from, peer_id),
            None => self.by_addr.insert(from, peer_id),
        };
        self.by_sid.insert(s.local_sid, peer_id);
        self.admission.open(peer_id, from.ip());
        self.put(peer_id, s);
        self.settle(now, peer_id);
    }

    /// Session `id` finished its first key exchange: it replaces the
    /// session it stood beside, or takes a place under `max clients`
    /// (ended if there is none left).
    fn established(&mut self, id: u32) {
        let Some(peer) = self.session_mut(id).map(|s| s.peer) else { return };
        if self.pending.get(&peer) == Some(&id) {
            self.pending.remove(&peer);
            if let Some(old) = self.by_addr.get(&peer).copied() {
                self.remove(old, "the client restarted (its new session authenticated)");
            }
            self.by_addr.insert(peer, id);
        } else if self.client_count() > self.max_clients as usize {
            let max = self.max_clients;
            if let Some(s) = self.session_mut(id) {
                s.close(format!("refused: {max} clients already (max clients)"));
            }
        }
    }

    /// A data packet's session and receive key; the client may have
    /// floated (only P_DATA_V2 names its session by peer-id).
    fn data_ticket(&mut self, now: Now, from: SocketAddr, opcode: Opcode, packet: &[u8]) -> Option<DataTicket> {
        let id = match (opcode, wire::data_peer_id(packet)) {
            (Opcode::DataV2, Some(p)) if p != wire::NO_PEER_ID => p,
            _ => *self.by_addr.get(&from)?,
        };
        // A client whose address changed (NAT rebinding, a roaming laptop)
        // is found by its peer-id; it floats once its packet authenticates.
        let floated = self.session_mut(id)?.peer != from;
        if floated && opcode != Opcode::DataV2 {
            return None;
        }
        let key = self.session_mut(id)?.opener(now, packet)?;
        Some(DataTicket { id, key })
    }

    /// The last step of [`Server::on_datagram`]: a data packet that the
    /// ticket's key opened passes the replay window and the source checks;
    /// returns the IP packet for the tun device. The session may have
    /// ended or floated meanwhile; its key may have been rotated out, and
    /// then the packet is dropped.
    pub fn opened<'a>(
        &mut self,
        now: Now,
        from: SocketAddr,
        ticket: DataTicket,
        opened: Result<crate::data::Opened, crate::data::DataError>,
        packet: &'a [u8],
    ) -> Option<&'a [u8]> {
        let id = ticket.id;
        let s = self.session_mut(id)?;
        let (vip, vip6, floated) = (s.virtual_ip, s.virtual_ip6, s.peer != from);
        let payload = s.opened(now, &ticket.key, opened, packet)?;
        if !self.serves(now, id) {
            return None;
        }
        if floated {
            self.float(id, from);
        }
        match classify(payload) {
            Payload::Ip if vip.is_some() && ipv4_src(payload) == vip => Some(payload),
            Payload::Ip if vip6.is_some() && crate::ip6::src(payload) == vip6 => Some(payload),
            Payload::Ip if self.iroute_source(id, payload) => Some(payload),
            Payload::Ip => {
                self.drop_wrong_source(now, id, payload);
                None
            }
            Payload::OccExit => {
                let label = self.session_mut(id)?.label();
                log::info!("{label}: client announced its exit");
                self.remove(id, "client exited (explicit-exit-notify)");
                None
            }
            Payload::Ping | Payload::Occ => None,
        }
    }

    /// A tunnel packet of session `id` from another source than its
    /// client's: another client's address (spoofing) or a LAN behind it
    /// without an iroute (a configuration mistake). Counted for `show
    /// summary`, logged at most once a second, whatever the rate.
    fn drop_wrong_source(&mut self, now: Now, id: u32, packet: &[u8]) {
        let Some(n) = self.wrong_source.event(now.mono) else { return };
        let src = match (ipv4_src(packet), crate::ip6::src(packet)) {
            (Some(a), _) => a.to_string(),
            (None, Some(a)) => a.to_string(),
            (None, None) => "a packet that is neither IPv4 nor IPv6".to_string(),
        };
        // Read only: session_mut would also queue the session's timers.
        let label = self.sessions.get(id as usize).and_then(Option::as_ref).map(|s| s.label()).unwrap_or_default();
        log::warn!(
            "{label}: tunnel packet from {src} dropped: not the client's tunnel address nor in its iroutes \
             (a network behind the client needs an iroute in its client-config-dir file){}",
            crate::quiet::more(n)
        );
    }

    /// Whether an IPv4 packet of session `id` comes from a host of one of
    /// its client's iroutes (the site behind it): the source check lets
    /// those through, as OpenVPN's does.
    fn iroute_source(&self, id: u32, packet: &[u8]) -> bool {
        let cn = self.sessions.get(id as usize).and_then(Option::as_ref).and_then(|s| s.common_name.as_deref());
        match (cn, ipv4_src(packet)) {
            (Some(cn), Some(src)) => self.ccd.route(src) == Some(cn),
            _ => false,
        }
    }

    /// Moves session `id` to the client's new address (its packet from
    /// there authenticated and passed the replay check) and tells the
    /// backups.
    fn float(&mut self, id: u32, to: SocketAddr) {
        if let Some(other) = self.by_addr.get(&to).copied().filter(|o| *o != id) {
            self.remove(other, "its address now belongs to a floating client");
        }
        let Some(s) = self.session_mut(id) else { return };
        let from = std::mem::replace(&mut s.peer, to);
        s.mark_dirty();
        log::info!("{}: floated from {from}", s.label());
        if self.by_addr.get(&from) == Some(&id) {
            self.by_addr.remove(&from);
        }
        self.by_addr.insert(to, id);
    }

    /// A packet of `len` bytes from the tun device for session `id` (its
    /// [`Server::tun_destination`]). The returned packet is built where
    /// the caller places it ([`DataOut::seal`]).
    pub fn on_tun_packet(&mut self, now: Now, id: u32, len: usize) -> Option<DataOut<'_>> {
        // A ghost never sends, and tunnel traffic proves nothing: every
        // member routes the pool to its own tun device. Only a ghost that
        // the role change made ours, still queued, is promoted by it.
        let s = self.session_mut(id)?;
        if s.is_ghost() {
            let sid = s.local_sid;
            let delay = self.takeover.claim(id, &sid)?;
            self.promote_queued(now, id, delay);
        }
        self.session_mut(id)?.outgoing(len)
    }

    /// The peer-id of the session a packet from the tun device goes to, by
    /// its destination (a tunnel address or an iroute): `head` is the
    /// packet's start (its IP header, which is all the routing reads).
    pub fn tun_destination(&self, head: &[u8]) -> Option<u32> {
        match crate::ip6::dst(head) {
            Some(d) => self.by_vip6.get(&d).copied(),
            None => {
                let dst = ipv4_dst(head)?;
                match self.by_vip.get(&dst) {
                    Some(&id) => Some(id),
                    None => self.by_cn.get(self.ccd.route(dst)?).copied(),
                }
            }
        }
    }

    /// The data thread that sends peer-id `id`'s packets: the one its
    /// peer-id names, or the main thread for a client without P_DATA_V2,
    /// whose datagrams the parent's steering program hands the main
    /// thread (and with them, through the tun's flow table, its flows).
    /// Fixed from the first key exchange on, before any data packet.
    pub fn shard_of(&self, id: u32) -> usize {
        shard_for(self.sessions.get(id as usize).and_then(Option::as_deref), id, self.data_out.len())
    }

    /// Tests: everything queued to send, as the threads would send it:
    /// the control datagrams, then every thread's pings.
    #[cfg(test)]
    pub fn take_sends(&mut self) -> Vec<Outgoing> {
        let mut out = std::mem::take(&mut self.outbox);
        out.extend(self.data_out.iter_mut().flat_map(std::mem::take));
        out
    }

    /// Tests: [`Server::on_tun_packet`] of a whole packet, copied into
    /// `out`. Returns (listener, client, length).
    #[cfg(test)]
    pub fn seal_tun_packet(&mut self, now: Now, packet: &[u8], out: &mut [u8]) -> Option<(usize, SocketAddr, usize)> {
        let id = self.tun_destination(packet)?;
        let o = self.on_tun_packet(now, id, packet.len())?;
        let (li, to) = o.to();
        let n = o.seal(now, out, |p| p.copy_from_slice(packet))?;
        Some((li, to, n))
    }

    /// The parent's verdict on a password check.
    pub fn on_auth_verdict(&mut self, now: Now, v: &vpnsyncd_common::auth::AuthVerdict) {
        if let Some(session) = self.checks.answered(v) {
            self.auth_verdict(now, session, v.accepted, &v.reason);
        }
    }

    fn auth_verdict(&mut self, now: Now, (id, sid): (u32, [u8; 8]), accepted: bool, why: &str) {
        if let Some(s) = self.session_mut(id).filter(|s| s.local_sid == sid) {
            s.auth_verdict(accepted, why, now);
            self.settle(now, id);
        }
    }

    /// Runs the timers of the sessions that are due or changed since the
    /// last tick (crate::timers), then queues each one's next deadline.
    pub fn on_timer(&mut self, now: Now) {
        self.promote_slice(now);
        for session in self.checks.expired(now.mono) {
            self.auth_verdict(now, session, false, "the check timed out");
        }
        let mut progress = Vec::new();
        for id in self.timers.take_due(now.mono) {
            let Some(s) = self.sessions.get_mut(id as usize).and_then(Option::as_mut) else {
                self.timers.forget(id);
                continue;
            };
            s.on_timer(now);
            if let Some((gen, p)) = s.take_progress(now) {
                progress.push((s.local_sid, gen, p.encode()));
            }
            self.settle(now, id);
            match self.sessions.get(id as usize).and_then(Option::as_ref) {
                Some(s) => self.timers.schedule(id, s.next_wake(now)),
                None => self.timers.forget(id),
            }
        }
        if !progress.is_empty() {
            self.sync_out.push(SyncOut::Progress(progress));
        }
    }

    /// After a session ran: give it an address if it needs one, move its
    /// datagrams to the outbox, remove it if it ended.
    fn settle(&mut self, now: Now, id: u32) {
        let wants = self.sessions.get(id as usize).and_then(Option::as_ref).is_some_and(|s| s.wants_address());
        if wants && self.admission.close(id) {
            self.established(id);
        }
        let unassigned = self.sessions.get(id as usize).and_then(Option::as_ref);
        if unassigned.is_some_and(|s| s.wants_address() && s.closed().is_none()) {
            self.assign(now, id);
        }
        let Some(s) = self.sessions.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(c) = s.auth.to_check.take() {
            let timeout = self.conf.password.as_ref().map_or(std::time::Duration::ZERO, |p| p.timeout);
            let who = (s.common_name.as_deref().unwrap_or(""), s.peer);
            if !self.checks.submit((id, s.local_sid), c, who, now.mono + timeout) {
                s.auth_verdict(false, "too many password checks under way", now);
            }
        }
        if s.take_reneg_refused() {
            if let Some(n) = self.reneg_refused.event(now.mono) {
                log::warn!(
                    "{}: soft reset refused: the client renegotiates more often than {} back to back, then one \
                     every {} s; its resend after that starts it (the client's reneg-sec, reneg-bytes or \
                     reneg-pkts is too small){}",
                    s.label(),
                    crate::reneglimit::BURST,
                    crate::reneglimit::EVERY.as_secs(),
                    crate::quiet::more(n)
                );
            }
        }
        if let Some((gen, rec)) = s.take_record(now) {
            self.sync_out.push(SyncOut::Upsert(s.local_sid, gen, rec.encode()));
        }
        self.sent.note_all(s.take_sent(false), now.mono);
        let (listener, peer) = (s.listener, s.peer);
        for p in s.outbox.drain(..) {
            self.outbox.push((listener, peer, p));
        }
        let shard = shard_for(Some(s), id, self.data_out.len());
        self.data_out[shard].extend(s.data_out.drain(..).map(|p| (listener, peer, p)));
        if let Some(why) = s.closed().map(str::to_string) {
            self.remove(id, &why);
        }
    }

    pub(crate) fn remove(&mut self, id: u32, why: &str) {
        let Some(mut s) = self.sessions.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.held -= 1;
        let last_seen = s.last_seen();
        self.sent.note_all(s.take_sent(true), last_seen);
        if s.is_ghost() {
            log::debug!("ghost {}: removed: {why}", s.label());
        } else {
            log::info!("{}: session ended: {why}", s.label());
            if s.virtual_ip.is_some() {
                self.sync_out.push(SyncOut::Delete(s.local_sid, s.gen()));
            }
        }
        if self.by_sid.get(&s.local_sid) == Some(&id) {
            self.by_sid.remove(&s.local_sid);
        }
        let (listener, peer) = (s.listener, s.peer);
        let shard = shard_for(Some(&s), id, self.data_out.len());
        for p in s.outbox {
            self.outbox.push((listener, peer, p));
        }
        self.data_out[shard].extend(s.data_out.into_iter().map(|p| (listener, peer, p)));
        if self.by_addr.get(&s.peer) == Some(&id) {
            self.by_addr.remove(&s.peer);
        }
        if self.pending.get(&s.peer) == Some(&id) {
            self.pending.remove(&s.peer);
        }
        self.admission.close(id);
        if let Some(ip) = s.virtual_ip {
            self.by_vip.remove(&ip);
            self.pool.release(ip);
            if let Some(cn) = &s.common_name {
                // The lease outlives the session, from its last packet on.
                self.leases.set(cn, ip, last_seen);
                if self.by_cn.get(cn) == Some(&id) {
                    self.by_cn.remove(cn);
                    // duplicate-cn allow: another session of the name
                    // takes over its iroutes.
                    let next = self
                        .sessions
                        .iter()
                        .flatten()
                        .find(|o| o.virtual_ip.is_some() && o.common_name == s.common_name);
                    if let Some(next) = next.map(|o| o.peer_id) {
                        self.by_cn.insert(cn.clone(), next);
                    }
                }
            }
        }
        if let Some(ip6) = s.virtual_ip6.filter(|a| self.by_vip6.get(a) == Some(&id)) {
            self.by_vip6.remove(&ip6);
        }
        while self.sessions.last().is_some_and(Option::is_none) {
            self.sessions.pop();
        }
    }

    /// Whether session `id`, whose packet just authenticated, is served
    /// here: a live session is; a ghost only while we are MASTER, and
    /// then it is promoted by this packet: one the takeover has queued
    /// (out of turn), or one whose record arrived after the role change
    /// (for instance from a split-brain peer).
    fn serves(&mut self, now: Now, id: u32) -> bool {
        let master = self.role == Role::Master;
        let Some(s) = self.session_mut(id) else { return false };
        if !s.is_ghost() {
            return true;
        }
        if !master {
            return false;
        }
        let sid = s.local_sid;
        match self.takeover.claim(id, &sid) {
            Some(delay) => self.promote_queued(now, id, delay),
            None => {
                let replaced = self.promote(now, id, self.conf.rekey_window / 2);
                let keys = if replaced { ", its keys are replaced at once" } else { "" };
                log::info!("promoted: 1 ghost session now live (its packet authenticated){keys}");
            }
        }
        true
    }

    /// Promotes ghost `id` (crate::replication) and hands its record to
    /// the syncer; true when its keys are replaced at once.
    fn promote(&mut self, now: Now, id: u32, reneg_in: std::time::Duration) -> bool {
        let replaced = self.session_mut(id).is_some_and(|s| s.promote(now, reneg_in));
        self.settle(now, id);
        replaced
    }

    /// [`Server::promote`] for a ghost of the takeover, which counts it.
    fn promote_queued(&mut self, now: Now, id: u32, reneg_in: std::time::Duration) {
        if self.promote(now, id, reneg_in) {
            self.takeover.note_replaced_now();
        }
    }

    /// A record of another member's session: a new ghost, or a newer state
    /// of one we hold. Never changes a session we serve.
    pub fn install_ghost(&mut self, now: Now, gen: Gen, rec: &SessionRecord) -> Result<(), Refusal> {
        let res = self.offer(now, gen, rec);
        if let Err(r) = res {
            let c = &mut self.refusals;
            *match r {
                Refusal::Stale => &mut c.stale,
                Refusal::Live => &mut c.live,
                Refusal::Invalid(_) => &mut c.invalid,
                Refusal::Conflict => &mut c.conflict,
                Refusal::Full => &mut c.full,
            } += 1;
            if let Refusal::Invalid(why) = r {
                log::warn!("sync: record of peer-id {} refused: {why}", rec.peer_id);
            }
        }
        res
    }

    /// Checks a record against our configuration: what we would index or
    /// serve with it must exist here.
    fn validate(&self, rec: &SessionRecord) -> Result<(), Refusal> {
        if usize::from(rec.listener) >= self.listeners {
            return Err(Refusal::Invalid("its listener does not exist here (the listen statements differ)"));
        }
        if rec.peer_id >= PEER_ID_LIMIT {
            return Err(Refusal::Invalid("peer-id out of range"));
        }
        let c = rec.negotiated.cipher;
        if !self.conf.data_ciphers.contains(&c) && self.conf.fallback_cipher != Some(c) {
            return Err(Refusal::Invalid("its cipher is not configured here (data-ciphers differ)"));
        }
        let ip = rec.virtual_ip;
        if !self.network.contains(ip) || ip == self.network.addr || ip == self.network.broadcast() {
            return Err(Refusal::Invalid("its tunnel address is outside the client network here"));
        }
        if rec.virtual_ip6.is_some_and(|a| !self.conf.push.network6.is_some_and(|n| n.contains(a))) {
            return Err(Refusal::Invalid("its IPv6 tunnel address is outside client network6 here"));
        }
        Ok(())
    }

    fn offer(&mut self, now: Now, gen: Gen, rec: &SessionRecord) -> Result<(), Refusal> {
        self.validate(rec)?;
        if let Some(id) = self.by_sid.get(&rec.local_sid).copied() {
            let sent = &self.sent;
            let s = self.sessions.get_mut(id as usize).and_then(Option::as_mut).ok_or(Refusal::Stale)?;
            let old_peer = s.peer;
            let offered = s.offer(rec, gen, sent, now);
            self.sent.note_all(s.take_sent(false), now.mono);
            let s = self.session_mut(id).ok_or(Refusal::Stale)?;
            return match offered {
                Offer::Stale => {
                    if let Some((g, back)) = s.report_back(gen, &rec.progress) {
                        let sid = s.local_sid;
                        self.sync_out.push(SyncOut::Progress(vec![(sid, g, back.encode())]));
                    }
                    Err(Refusal::Stale)
                }
                Offer::Live => {
                    self.settle(now, id);
                    Err(Refusal::Live)
                }
                Offer::Applied if old_peer != rec.peer => {
                    if self.by_addr.get(&old_peer) == Some(&id) {
                        self.by_addr.remove(&old_peer);
                    }
                    self.clear_ghost_at(self.by_addr.get(&rec.peer).copied(), "its client address moved")?;
                    self.by_addr.insert(rec.peer, id);
                    Ok(())
                }
                Offer::Applied => Ok(()),
            };
        }
        let wrap = self.ghost_wrapper(rec)?;
        // What the record takes must be free, or held by an older ghost.
        let by_slot = self.sessions.get(rec.peer_id as usize).and_then(|s| s.as_ref()).map(|s| s.peer_id);
        let by_vip6 = rec.virtual_ip6.and_then(|a| self.by_vip6.get(&a).copied());
        let conflicts =
            [by_slot, self.by_vip.get(&rec.virtual_ip).copied(), self.by_addr.get(&rec.peer).copied(), by_vip6];
        if conflicts.iter().flatten().any(|&id| self.session_mut(id).is_some_and(|s| !s.is_ghost())) {
            return Err(Refusal::Conflict);
        }
        if self.held.saturating_sub(self.admission.half_open()) >= self.table_limit() {
            return Err(Refusal::Full);
        }
        for id in conflicts {
            self.clear_ghost_at(id, "its peer-id or address belongs to a newer record")?;
        }
        let id = rec.peer_id;
        let ghost = Session::ghost(self.conf.clone(), wrap, rec, gen, &self.sent, now);
        log::debug!("ghost {}: installed", ghost.label());
        self.pool.claim(rec.virtual_ip);
        self.by_addr.insert(rec.peer, id);
        self.by_vip.insert(rec.virtual_ip, id);
        if let Some(a) = rec.virtual_ip6 {
            self.by_vip6.insert(a, id);
        }
        self.by_sid.insert(rec.local_sid, id);
        self.leases.set(&rec.common_name, rec.virtual_ip, now.mono);
        self.by_cn.insert(rec.common_name.clone(), id);
        self.put(id, ghost);
        Ok(())
    }

    /// Removes the ghost `id` to make room; a live session is a conflict.
    fn clear_ghost_at(&mut self, id: Option<u32>, why: &str) -> Result<(), Refusal> {
        match id.and_then(|id| self.session_mut(id).map(|s| (id, s.is_ghost()))) {
            Some((_, false)) => Err(Refusal::Conflict),
            Some((id, true)) => {
                self.remove(id, why);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Live sessions and ghosts together: every member's clients.
    fn table_limit(&self) -> usize {
        self.max_clients as usize * usize::from(MEMBERS)
    }

    /// The master's latest counters for one of our ghosts.
    pub fn ghost_progress(&mut self, now: Now, sid: &[u8; 8], gen: Gen, p: &Progress) {
        let Some(id) = self.by_sid.get(sid).copied() else { return };
        let Some(s) = self.session_mut(id) else { return };
        s.apply_progress(gen, p, now);
        if let Some((gen, back)) = s.report_back(gen, p) {
            let sid = s.local_sid;
            self.sync_out.push(SyncOut::Progress(vec![(sid, gen, back.encode())]));
        }
    }

    /// The master ended a session (`gen`: its last record).
    pub fn ghost_delete(&mut self, sid: &[u8; 8], gen: Gen) {
        if let Some(id) = self.by_sid.get(sid).copied() {
            if self.session_mut(id).is_some_and(|s| s.is_ghost() && s.gen() <= gen) {
                self.remove(id, "ended on the master");
            }
        }
    }

    /// The role from carpwatch: a new MASTER promotes every ghost, a
    /// member that stops being MASTER turns its sessions into ghosts.
    pub fn set_role(&mut self, now: Now, role: Role) {
        match (self.role, role) {
            (Role::Master, Role::Master) => {}
            (_, Role::Master) => {
                self.role = role;
                self.start_takeover(now);
            }
            (Role::Master, _) => {
                self.role = role;
                let left = self.takeover.abandon();
                if left > 0 {
                    log::info!("takeover: {left} ghost session(s) left unpromoted: no longer master");
                }
                self.demote_all(now);
            }
            _ => self.role = role,
        }
    }

    /// We became master: every ghost is ours, promoted in slices
    /// (crate::takeover), the first one at once; their renegotiations are
    /// spread evenly over the rekey window.
    fn start_takeover(&mut self, now: Now) {
        let ghosts: Vec<(u32, [u8; 8])> =
            self.sessions.iter().flatten().filter(|s| s.is_ghost()).map(|s| (s.peer_id, s.local_sid)).collect();
        if ghosts.is_empty() {
            return;
        }
        log::info!("takeover: promoting {} ghost session(s), a slice per loop turn", ghosts.len());
        self.takeover.start(now.mono, ghosts, self.conf.rekey_window);
        self.promote_slice(now);
    }

    /// Tests only: promote `n` ghosts per slice, so that a few sessions
    /// make a takeover of several slices.
    #[cfg(test)]
    pub fn set_takeover_slice(&mut self, n: usize) {
        self.takeover.set_slice(n);
    }

    /// Whether a takeover still has ghosts to promote: the I/O loop then
    /// calls [`Server::promote_slice`] every turn instead of sleeping.
    pub fn promoting(&self) -> bool {
        self.takeover.under_way()
    }

    /// Promotes the takeover's next slice of ghosts (a ghost that is gone,
    /// or whose slot now holds another session, is skipped).
    pub fn promote_slice(&mut self, now: Now) {
        for (id, sid, delay) in self.takeover.next_slice() {
            let ours = self.sessions.get(id as usize).and_then(Option::as_ref);
            if ours.is_some_and(|s| s.is_ghost() && s.local_sid == sid) {
                self.promote_queued(now, id, delay);
            }
        }
        if let Some(line) = self.takeover.finished(now.mono) {
            log::info!("{line}");
        }
    }

    /// Another member became master: our sessions become ghosts that its
    /// reports keep current; unfinished handshakes are dropped.
    fn demote_all(&mut self, now: Now) {
        let live: Vec<u32> = self.sessions.iter().flatten().filter(|s| !s.is_ghost()).map(|s| s.peer_id).collect();
        let mut last = Vec::new();
        for id in live {
            let Some(s) = self.session_mut(id) else { continue };
            if s.snapshot(now).is_some() {
                // How far we got, for the master to pass (Session::overtake).
                last.push((s.local_sid, s.gen(), s.progress().encode()));
                s.demote(now);
            } else {
                self.remove(id, "another member is master");
            }
        }
        if !last.is_empty() {
            self.sync_out.push(SyncOut::Progress(last));
        }
    }

    /// One `show clients` record per established session, by peer-id.
    pub fn client_infos(&self) -> Vec<ClientInfo> {
        self.sessions
            .iter()
            .flatten()
            .filter(|s| s.virtual_ip.is_some())
            .map(|s| ClientInfo {
                common_name: s.common_name.clone().unwrap_or_default(),
                real_address: s.peer.to_string(),
                virtual_ip: s.virtual_ip.map(|a| a.to_string()).unwrap_or_default(),
                cipher: s.cipher_name().to_string(),
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                connected_since: s.connected_since,
                key_id: s.key_id(),
                last_rekey: s.last_rekey,
                peer_id: s.peer_id,
                username: s.auth.username.clone().unwrap_or_default(),
                virtual_ip6: s.virtual_ip6.map(|a| a.to_string()).unwrap_or_default(),
            })
            .collect()
    }

    /// Drops every session of common name `cn`; returns how many.
    pub fn kill_client(&mut self, now: Now, cn: &str) -> usize {
        self.kill_sessions(
            now,
            |s| s.common_name.as_deref() == Some(cn),
            "RESTART,killed by the administrator",
            "killed by vpnsyncctl",
        )
    }

    /// Ends the sessions this member serves that `which` picks, each told
    /// `message` (RESTART or HALT, OpenVPN's client-kill), and returns how
    /// many. Ghosts are left alone: they are the master's, and the deletes
    /// that these ends send remove them on every backup, so that a killed
    /// session does not come back after a failover.
    pub fn kill_sessions(&mut self, now: Now, which: impl Fn(&Session) -> bool, message: &str, why: &str) -> usize {
        let victims: Vec<u32> =
            self.sessions.iter().flatten().filter(|s| !s.is_ghost() && which(s)).map(|s| s.peer_id).collect();
        for id in &victims {
            if let Some(s) = self.session_mut(*id) {
                s.kill(now, message, why);
            }
            self.settle(now, *id);
        }
        victims.len()
    }
}
