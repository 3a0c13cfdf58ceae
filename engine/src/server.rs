//! The session table: every client by peer-id, by real address and by
//! tunnel address, the address pool, and the first packet of a new client
//! (authenticated before any state is made). Datagrams from the link and
//! packets from the tun device come in here; control datagrams to send
//! collect in `outbox`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use vpnsyncd_common::ctl::ClientInfo;
use vpnsyncd_config::Config;

use crate::data::{classify, Payload};
use crate::pool::Pool;
use crate::record::{Progress, SessionRecord};
use crate::session::{Now, Session, SessionConfig};
use crate::wire::{self, Opcode};
use crate::wrap::Wrapper;

/// A control datagram to send: (listener index, destination, bytes).
pub type Outgoing = (usize, SocketAddr, Vec<u8>);

/// Session state for the syncer (keyed by our session id).
#[derive(Debug, PartialEq, Eq)]
pub enum SyncOut {
    Upsert([u8; 8], Vec<u8>),
    Progress(Vec<([u8; 8], Vec<u8>)>),
    Delete([u8; 8]),
}

/// All sessions of this engine.
pub struct Server {
    conf: Arc<SessionConfig>,
    /// Cloned into every new session: the keys, with fresh counters.
    wrap: Wrapper,
    pool: Pool,
    max_clients: u32,
    /// Indexed by peer-id (the lowest free slot, as OpenVPN assigns it).
    sessions: Vec<Option<Session>>,
    by_addr: HashMap<SocketAddr, u32>,
    by_vip: HashMap<Ipv4Addr, u32>,
    by_sid: HashMap<[u8; 8], u32>,
    pub outbox: Vec<Outgoing>,
    pub sync_out: Vec<SyncOut>,
}

/// IPv4 source address of a packet from the tunnel.
fn ipv4_src(p: &[u8]) -> Option<Ipv4Addr> {
    (p.len() >= 20 && p[0] >> 4 == 4).then(|| Ipv4Addr::new(p[12], p[13], p[14], p[15]))
}

fn ipv4_dst(p: &[u8]) -> Option<Ipv4Addr> {
    (p.len() >= 20 && p[0] >> 4 == 4).then(|| Ipv4Addr::new(p[16], p[17], p[18], p[19]))
}

impl Server {
    pub fn new(conf: &Config, session: Arc<SessionConfig>, wrap: Wrapper) -> Self {
        Server {
            conf: session,
            wrap,
            pool: Pool::new(conf.pool.0, conf.pool.1),
            max_clients: conf.max_clients,
            sessions: Vec::new(),
            by_addr: HashMap::new(),
            by_vip: HashMap::new(),
            by_sid: HashMap::new(),
            outbox: Vec::new(),
            sync_out: Vec::new(),
        }
    }

    /// Applies a reloaded configuration: limits now, protocol settings and
    /// keys for sessions that start from now on.
    pub fn reconfigure(&mut self, conf: &Config, session: Arc<SessionConfig>, wrap: Wrapper) {
        self.pool.resize(conf.pool.0, conf.pool.1);
        self.max_clients = conf.max_clients;
        self.conf = session;
        self.wrap = wrap;
    }

    /// Tests only: every session, ghosts included, for the cluster
    /// simulation's convergence check.
    #[cfg(test)]
    pub fn sessions(&self) -> impl Iterator<Item = &Session> + '_ {
        self.sessions.iter().flatten()
    }

    pub fn client_count(&self) -> usize {
        self.sessions.iter().flatten().count()
    }

    fn session_mut(&mut self, id: u32) -> Option<&mut Session> {
        self.sessions.get_mut(id as usize).and_then(Option::as_mut)
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
        let (op, _) = wire::split_first_byte(*packet.first()?);
        let opcode = Opcode::from_u8(op)?;
        if !opcode.is_control() {
            return self.on_data(now, from, opcode, packet);
        }
        let known = self.by_addr.get(&from).copied();
        if opcode == Opcode::HardResetClientV2 {
            return self.on_hard_reset(now, listener, from, known, packet);
        }
        let id = known?;
        self.control(now, id, packet);
        None
    }

    fn control(&mut self, now: Now, id: u32, packet: &[u8]) {
        self.promote_on_packet(now, id);
        let Some(s) = self.session_mut(id) else {
            return;
        };
        // Authentication first: nothing reaches the session unverified.
        match s.unwrap(packet) {
            Ok((first, sid, body)) => s.on_control(now, first, sid, &body),
            Err(e) => log::debug!("{}: control packet dropped: {e}", s.label()),
        }
        self.settle(now, id);
    }

    /// The first packet of a client (or of a client that restarted).
    fn on_hard_reset(
        &mut self,
        now: Now,
        listener: usize,
        from: SocketAddr,
        known: Option<u32>,
        packet: &[u8],
    ) -> Option<&'static [u8]> {
        let (first, sid, body, id, time) = match self.wrap.verify_only(packet) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("{from}: first packet refused: {e} (wrong tls-auth/tls-crypt key?)");
                return None;
            }
        };
        if first & 7 != 0 {
            log::debug!("{from}: hard reset with key_id {} dropped", first & 7);
            return None;
        }
        if let Some(old) = known {
            if self.session_mut(old).is_some_and(|s| s.remote_sid == sid) {
                // A retransmitted reset: the session acknowledges it again.
                self.control(now, old, packet);
                return None;
            }
            self.remove(old, "the client restarted");
        }
        if self.client_count() >= self.max_clients as usize {
            log::warn!("{from}: refused: {} clients already (max clients)", self.max_clients);
            return None;
        }
        let peer_id = self.sessions.iter().position(Option::is_none).unwrap_or(self.sessions.len()) as u32;
        let mut wrap = self.wrap.clone();
        if let Err(e) = wrap.record_replay(id, time) {
            log::debug!("{from}: {e}");
            return None;
        }
        let mut s = match Session::new(self.conf.clone(), wrap, from, listener, peer_id, sid, now) {
            Ok(s) => s,
            Err(e) => {
                log::error!("{from}: cannot start a session: {e}");
                return None;
            }
        };
        log::info!("{from}: new session, peer-id {peer_id}");
        s.on_control(now, first, sid, &body);
        if peer_id as usize == self.sessions.len() {
            self.sessions.push(Some(s));
        } else {
            self.sessions[peer_id as usize] = Some(s);
        }
        self.by_addr.insert(from, peer_id);
        self.by_sid.insert(self.sessions[peer_id as usize].as_ref().map_or([0; 8], |s| s.local_sid), peer_id);
        self.settle(now, peer_id);
        None
    }

    fn on_data<'a>(&mut self, now: Now, from: SocketAddr, opcode: Opcode, packet: &'a mut [u8]) -> Option<&'a [u8]> {
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
        self.promote_on_packet(now, id);
        let s = self.session_mut(id)?;
        let vip = s.virtual_ip;
        let payload = s.decrypt(now, packet)?;
        if floated {
            self.float(id, from);
        }
        let s = self.session_mut(id)?;
        match classify(payload) {
            Payload::Ip if vip.is_some() && ipv4_src(payload) == vip => Some(payload),
            Payload::Ip => None,
            Payload::OccExit => {
                let label = s.label();
                log::info!("{label}: client announced its exit");
                self.remove(id, "client exited (explicit-exit-notify)");
                None
            }
            Payload::Ping | Payload::Occ => None,
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
        s.record_dirty = true;
        log::info!("{}: floated from {from}", s.label());
        if self.by_addr.get(&from) == Some(&id) {
            self.by_addr.remove(&from);
        }
        self.by_addr.insert(to, id);
    }

    /// A packet from the tun device: encrypted into `out` for the client
    /// that owns its destination. Returns (listener, client, length).
    pub fn on_tun_packet(&mut self, now: Now, packet: &[u8], out: &mut [u8]) -> Option<(usize, SocketAddr, usize)> {
        let id = *self.by_vip.get(&ipv4_dst(packet)?)?;
        // Traffic for a ghost's client reaches us: we hold the VIPs now.
        self.promote_on_packet(now, id);
        let s = self.session_mut(id)?;
        let n = s.encrypt(now, packet, out)?;
        Some((s.listener, s.peer, n))
    }

    /// Runs every session's timers.
    pub fn on_timer(&mut self, now: Now) {
        let mut progress = Vec::new();
        for id in 0..self.sessions.len() as u32 {
            if let Some(s) = self.session_mut(id) {
                s.on_timer(now);
                if !s.ghost && s.virtual_ip.is_some() && !s.record_dirty {
                    if let Some(p) = s.take_progress() {
                        progress.push((s.local_sid, p.encode()));
                    }
                }
                self.settle(now, id);
            }
        }
        if !progress.is_empty() {
            self.sync_out.push(SyncOut::Progress(progress));
        }
    }

    /// After a session ran: give it an address if it needs one, move its
    /// datagrams to the outbox, remove it if it ended.
    fn settle(&mut self, now: Now, id: u32) {
        let Some(s) = self.sessions.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if s.wants_address {
            match self.pool.allocate() {
                Some(ip) => {
                    self.by_vip.insert(ip, id);
                    s.set_address(ip, now);
                }
                None => {
                    log::warn!("{}: refused: the address pool is exhausted", s.label());
                    s.closed = Some("address pool exhausted".into());
                }
            }
        }
        if s.record_dirty && !s.ghost {
            s.record_dirty = false;
            if let Some(rec) = s.snapshot() {
                s.take_progress();
                self.sync_out.push(SyncOut::Upsert(s.local_sid, rec.encode()));
            }
        }
        let (listener, peer) = (s.listener, s.peer);
        for p in s.outbox.drain(..) {
            self.outbox.push((listener, peer, p));
        }
        if let Some(why) = s.closed.clone() {
            self.remove(id, &why);
        }
    }

    fn remove(&mut self, id: u32, why: &str) {
        let Some(s) = self.sessions.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        if s.ghost {
            log::debug!("ghost {}: removed: {why}", s.label());
        } else {
            log::info!("{}: session ended: {why}", s.label());
            if s.virtual_ip.is_some() {
                self.sync_out.push(SyncOut::Delete(s.local_sid));
            }
        }
        if self.by_sid.get(&s.local_sid) == Some(&id) {
            self.by_sid.remove(&s.local_sid);
        }
        let (listener, peer) = (s.listener, s.peer);
        for p in s.outbox {
            self.outbox.push((listener, peer, p));
        }
        if self.by_addr.get(&s.peer) == Some(&id) {
            self.by_addr.remove(&s.peer);
        }
        if let Some(ip) = s.virtual_ip {
            self.by_vip.remove(&ip);
            self.pool.release(ip);
        }
        while self.sessions.last().is_some_and(Option::is_none) {
            self.sessions.pop();
        }
    }

    /// A session of another member, from its record: installed (or
    /// replaced) as a ghost.
    pub fn install_ghost(&mut self, now: Now, rec: &SessionRecord) {
        if let Some(old) = self.by_sid.get(&rec.local_sid).copied() {
            self.remove(old, "replaced by a newer record");
        }
        if let Some(Some(other)) = self.sessions.get(rec.peer_id as usize) {
            log::warn!("{}: peer-id {} taken over by a synced session", other.label(), rec.peer_id);
            self.remove(rec.peer_id, "its peer-id belongs to a synced session");
        }
        if let Some(other) = self.by_vip.get(&rec.virtual_ip).copied() {
            self.remove(other, "its address belongs to a synced session");
        }
        if let Some(other) = self.by_addr.get(&rec.peer).copied() {
            self.remove(other, "its client address belongs to a synced session");
        }
        let id = rec.peer_id;
        let ghost = Session::ghost(self.conf.clone(), self.wrap.clone(), rec, now);
        log::info!("ghost {}: installed", ghost.label());
        while self.sessions.len() <= id as usize {
            self.sessions.push(None);
        }
        self.pool.claim(rec.virtual_ip);
        self.by_addr.insert(rec.peer, id);
        self.by_vip.insert(rec.virtual_ip, id);
        self.by_sid.insert(rec.local_sid, id);
        self.sessions[id as usize] = Some(ghost);
    }

    /// The master's latest counters for one of our ghosts.
    pub fn ghost_progress(&mut self, now: Now, sid: &[u8; 8], p: &Progress) {
        let Some(id) = self.by_sid.get(sid).copied() else { return };
        if let Some(s) = self.session_mut(id).filter(|s| s.ghost) {
            s.apply_progress(p, now);
        }
    }

    /// The master ended a session.
    pub fn ghost_delete(&mut self, sid: &[u8; 8]) {
        if let Some(id) = self.by_sid.get(sid).copied() {
            if self.session_mut(id).is_some_and(|s| s.ghost) {
                self.remove(id, "ended on the master");
            }
        }
    }

    /// A packet for a ghost: the VIP is here, so this member serves it now,
    /// before the role change reaches us.
    fn promote_on_packet(&mut self, now: Now, id: u32) {
        let n = self.sessions.len().max(1) as u32;
        let delay = self.conf.rekey_window * (id + 1) / n;
        if let Some(s) = self.session_mut(id).filter(|s| s.ghost) {
            s.promote(now, delay);
            s.record_dirty = true;
            log::info!("promoted: 1 ghost session(s) now live (its packet came before the role change)");
            self.settle(now, id);
        }
    }

    /// We became master: every ghost is live; their renegotiations are
    /// spread evenly over the rekey window.
    pub fn promote_all(&mut self, now: Now) {
        let ghosts: Vec<u32> = self.sessions.iter().flatten().filter(|s| s.ghost).map(|s| s.peer_id).collect();
        let n = ghosts.len() as u32;
        for (i, id) in ghosts.iter().enumerate() {
            let delay = self.conf.rekey_window * (i as u32 + 1) / n.max(1);
            if let Some(s) = self.session_mut(*id) {
                s.promote(now, delay);
                s.record_dirty = true;
            }
            self.settle(now, *id);
        }
        if n > 0 {
            log::info!("promoted: {n} ghost session(s) now live");
        }
    }

    /// Another member became master: our sessions become ghosts that its
    /// reports keep current; unfinished handshakes are dropped.
    pub fn demote_all(&mut self, now: Now) {
        let live: Vec<u32> = self.sessions.iter().flatten().filter(|s| !s.ghost).map(|s| s.peer_id).collect();
        for id in live {
            let Some(s) = self.session_mut(id) else { continue };
            if s.snapshot().is_some() {
                s.demote(now);
            } else {
                self.remove(id, "another member is master");
            }
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
            })
            .collect()
    }

    /// Drops every session of common name `cn`; returns how many.
    pub fn kill_client(&mut self, now: Now, cn: &str) -> usize {
        let victims: Vec<u32> = self
            .sessions
            .iter()
            .flatten()
            .filter(|s| s.common_name.as_deref() == Some(cn))
            .map(|s| s.peer_id)
            .collect();
        for id in &victims {
            if let Some(s) = self.session_mut(*id) {
                s.kill(now);
            }
            self.settle(now, *id);
        }
        victims.len()
    }
}
