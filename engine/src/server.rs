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
use crate::session::{Now, Session, SessionConfig};
use crate::wire::{self, Opcode};
use crate::wrap::Wrapper;

/// A control datagram to send: (listener index, destination, bytes).
pub type Outgoing = (usize, SocketAddr, Vec<u8>);

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
    pub outbox: Vec<Outgoing>,
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
            outbox: Vec::new(),
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
            log::warn!(
                "{from}: refused: {} clients already (max clients)",
                self.max_clients
            );
            return None;
        }
        let peer_id = self
            .sessions
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.sessions.len()) as u32;
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
        self.settle(now, peer_id);
        None
    }

    fn on_data<'a>(
        &mut self,
        now: Now,
        from: SocketAddr,
        opcode: Opcode,
        packet: &'a mut [u8],
    ) -> Option<&'a [u8]> {
        let id = match (opcode, wire::data_peer_id(packet)) {
            (Opcode::DataV2, Some(p)) if p != wire::NO_PEER_ID => p,
            _ => *self.by_addr.get(&from)?,
        };
        let s = self.session_mut(id)?;
        if s.peer != from {
            // No floating: a client keeps its address.
            return None;
        }
        let vip = s.virtual_ip;
        let payload = s.decrypt(now, packet)?;
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

    /// A packet from the tun device: encrypted into `out` for the client
    /// that owns its destination. Returns (listener, client, length).
    pub fn on_tun_packet(
        &mut self,
        now: Now,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<(usize, SocketAddr, usize)> {
        let id = *self.by_vip.get(&ipv4_dst(packet)?)?;
        let s = self.session_mut(id)?;
        let n = s.encrypt(now, packet, out)?;
        Some((s.listener, s.peer, n))
    }

    /// Runs every session's timers.
    pub fn on_timer(&mut self, now: Now) {
        for id in 0..self.sessions.len() as u32 {
            if let Some(s) = self.session_mut(id) {
                s.on_timer(now);
                self.settle(now, id);
            }
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
        log::info!("{}: session ended: {why}", s.label());
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
