//! One client of the server: its control channel (wrapping, reliability,
//! TLS, key method 2, control messages), its key states with their data
//! keys, renegotiation, keepalive and timeouts. Sans-IO: fed packets and
//! the time, it queues control datagrams in `outbox` and tells the server
//! through its public fields what it needs (an address) or that it ended.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};
use vpnsyncd_config::{Cipher, Digest};

use crate::data::{DataError, DataHeader, DataKey, Opened, Opener};
use crate::keys::{self, KeyMethod2, KeySource, PeerInfo};
use crate::push::{self, ClientPush, PushSettings};
use crate::record::Progress;
use crate::reliable::{Received, Reliable};
use crate::sendspace::SendSpace;
use crate::wire::{ControlBody, Opcode};
use crate::wrap::Wrapper;

#[path = "replication.rs"]
mod replication;
pub use replication::{Gen, Offer};
#[path = "wake.rs"]
mod wake;

/// TLS output a key state may hold for want of acknowledgements: a
/// handshake flight is a few KB, so past this the client is not reading
/// and its session ends rather than feed TLS more of its input.
const TLS_OUT_MAX: usize = 64 * 1024;

/// Each TLS negotiation must finish within this time (`--hand-window`).
pub const HAND_WINDOW: Duration = Duration::from_secs(60);
/// How long the previous key still decrypts after a renegotiation
/// (`--tran-window` is 3600 s in OpenVPN; a minute covers reordering and
/// the client's own switch).
pub const TRANSITION_WINDOW: Duration = Duration::from_secs(60);
/// The whole UDP/IP datagram of a control packet stays within this size
/// (`--tls-mtu`), which every client accepts.
const CONTROL_MTU: usize = 1250;
/// IPv6 header + UDP header: the larger of the two families.
const IP_UDP_OVERHEAD: usize = 48;
/// Acknowledgements carried on a control packet; a dedicated P_ACK_V1
/// carries up to 8.
const PIGGYBACK_ACKS: usize = 4;
const MAX_ACKS: usize = 8;
/// A control message (after key method 2) never exceeds this.
const MAX_MESSAGE: usize = 2048;
/// The key-method message is read whole from one TLS record (the client
/// writes it at once; a record holds up to 16 KB of plaintext): a 2.x
/// client keeps it within 2 KB, but the parser takes longer fields (a
/// password of up to 4,095 bytes, a long peer-info), and a cut message
/// would not parse.
const MAX_KEY_METHOD: usize = 16 * 1024;
/// The common name of a client without a certificate (OpenVPN's).
pub const NO_CERTIFICATE: &str = "UNDEF";

/// The time, twice: monotonic for timers, Unix seconds for replay ids and
/// the records `vpnsyncctl` shows. Tests make both up.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

/// What every session of the server shares.
pub struct SessionConfig {
    pub tls: Arc<ServerConfig>,
    pub data_ciphers: Vec<Cipher>,
    pub fallback_cipher: Option<Cipher>,
    pub auth: Digest,
    /// Ping interval and the silence after which the client is dropped.
    pub keepalive: (u32, u32),
    /// 0: the server never starts a renegotiation.
    pub reneg_sec: u32,
    pub push: PushSettings,
    /// After a takeover, renegotiations are spread over this window.
    pub rekey_window: Duration,
    /// This machine's number in the cluster (1 when standalone).
    pub member: u8,
    /// A `sync` block is configured: idle sessions refresh their progress
    /// for the backups (crate::replication); standalone, nobody reads it.
    pub replicated: bool,
    /// `None`: usernames and passwords are ignored.
    pub password: Option<crate::auth::PasswordSettings>,
}

/// Compression framing for clients configured with `comp-lzo`/`compress`
/// (protocol reference §13.6): we never compress, but must frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    /// `comp-lzo no`: a 0xFA byte before every payload.
    LzoStub,
    /// `compress stub-v2`: nothing added to IP packets.
    StubV2,
}

/// What was agreed with the client on its first key exchange; kept for
/// every renegotiation (2.4 clients omit their cipher list then).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub cipher: Cipher,
    pub push_cipher: bool,
    pub ekm: bool,
    pub cc_exit: bool,
    pub data_v2: bool,
    pub request_push: bool,
    pub tun_mtu: Option<u16>,
    pub framing: Framing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// TLS handshake, then the client's key-method message.
    Negotiating,
    /// Data keys exist.
    Established,
}

/// One key_id: its reliability sequence, TLS session and data keys.
struct KeyState {
    key_id: u8,
    rel: Reliable,
    /// `None` in a ghost: the TLS session stayed on the old master.
    tls: Option<ServerConnection>,
    phase: Phase,
    data: Option<DataKey>,
    /// What `data` was made from, for the session record.
    key2: Option<Box<[u8; 256]>>,
    /// We may encrypt with this key (the client has it too).
    send_ok: bool,
    started: Instant,
    established: Option<Instant>,
    /// Lame duck: dropped at this time.
    expires: Option<Instant>,
    /// TLS bytes waiting for room in the send window.
    tls_out: Vec<u8>,
    /// Plaintext control messages not yet terminated by a NUL.
    plain: Vec<u8>,
    /// Made or sent under by this run of the engine (not only copied).
    ours: bool,
    /// Bit `m - 1`: member `m` has sent under this key (replication).
    senders: u8,
    /// Never encrypt with this key here (crate::replication, promotion).
    no_send: bool,
}

impl KeyState {
    /// A key state about to negotiate, with a fresh TLS session.
    fn new(key_id: u8, tls: &Arc<ServerConfig>, now: Instant) -> Result<KeyState, String> {
        let tls = ServerConnection::new(tls.clone()).map_err(|e| format!("TLS: {e}"))?;
        Ok(KeyState { tls: Some(tls), ..KeyState::blank(key_id, now) })
    }

    /// What every key state starts from: nothing negotiated, nothing sent.
    fn blank(key_id: u8, now: Instant) -> KeyState {
        KeyState {
            key_id,
            rel: Reliable::new(),
            tls: None,
            phase: Phase::Negotiating,
            data: None,
            key2: None,
            send_ok: false,
            started: now,
            established: None,
            expires: None,
            tls_out: Vec::new(),
            plain: Vec::new(),
            ours: false,
            senders: 0,
            no_send: false,
        }
    }
}

/// Why a session ended, for the log.
pub type CloseReason = String;

pub struct Session {
    pub peer: SocketAddr,
    /// Which listener the client talks to (we answer from the same one).
    pub listener: usize,
    pub peer_id: u32,
    /// OpenVPN's Client ID (status, `client-kill`): handed out by the
    /// server table when the session enters it (crate::server), never
    /// reused while the engine runs, unlike the peer-id.
    pub client_id: u64,
    pub local_sid: [u8; 8],
    pub remote_sid: [u8; 8],
    wrap: Wrapper,
    /// Newest last: the lame duck (if any), then the primary.
    keys: Vec<KeyState>,
    pub common_name: Option<String>,
    pub virtual_ip: Option<Ipv4Addr>,
    /// Its client-config-dir settings (pushes), given with its address.
    pub client_config: Option<Arc<vpnsyncd_config::ccd::ClientConfig>>,
    /// With `client network6`: follows `virtual_ip` (crate::push).
    pub virtual_ip6: Option<std::net::Ipv6Addr>,
    pub negotiated: Option<Negotiated>,
    /// Set once the first key exchange is done: the server must call
    /// `set_address`.
    wants_address: bool,
    /// Set when the session is over; the server removes it.
    closed: Option<CloseReason>,
    pub connected_since: u64,
    pub last_rekey: u64,
    /// Bytes of the datagrams of this session on the link, control and
    /// data channel alike (pings too), as OpenVPN's `link_read_bytes` and
    /// `link_write_bytes` that its status and `bytes_received`/`bytes_sent`
    /// report; only received datagrams that authenticate count, so that
    /// spoofed ones cannot inflate a client's figures.
    pub bytes_in: u64,
    pub bytes_out: u64,
    last_recv: Instant,
    last_send: Instant,
    push_sent: bool,
    /// Control datagrams to send to `peer`.
    pub outbox: Vec<Vec<u8>>,
    /// Data-channel datagrams built by the timers (pings): they took a
    /// packet id, so they leave from the thread that sends the session's
    /// tunnel packets (crate::shard), in packet-id order with them.
    pub data_out: Vec<Vec<u8>>,
    conf: Arc<SessionConfig>,
    /// A copy of a session served by another member (a backup's view):
    /// it sends nothing until promoted.
    ghost: bool,
    /// The generation of the replicated state we hold (crate::replication).
    gen: Gen,
    /// The highest tenure of this session seen: a takeover goes above it.
    tenure: u32,
    /// When the master's last state for this ghost arrived.
    synced_at: Instant,
    /// New keys or a new address: the record must go to the backups.
    record_dirty: bool,
    /// The progress last handed to the syncer, and when.
    last_progress: Option<Progress>,
    progress_sent: Instant,
    /// Keys this run sent under that went away: (fingerprint, last id),
    /// for the server's [`crate::sentkeys::SentKeys`].
    retired: Vec<(u64, u32)>,
    /// After a takeover: when to replace the copied keys.
    reneg_at: Option<Instant>,
    /// After a takeover, until a key is negotiated here: the copied keys
    /// may be one renegotiation behind the client's (the old master
    /// finished one and died before its record replicated), so the client
    /// may already use the key_id after ours. [`Session::skip_key_id`].
    maybe_behind: bool,
    /// The password check and the user it accepted (crate::auth).
    pub auth: crate::auth::SessionAuth,
    /// How many more renegotiations the client may start now.
    reneg_limit: crate::reneglimit::RenegLimit,
    /// The last control packet was a soft reset refused by `reneg_limit`:
    /// the server counts and logs it ([`Session::take_reneg_refused`]).
    reneg_refused: bool,
}

fn next_key_id(k: u8) -> u8 {
    if k >= 7 {
        1
    } else {
        k + 1
    }
}

impl Session {
    /// A session for a client whose (already authenticated) hard reset
    /// carried `remote_sid`; answers it at once.
    pub fn new(
        conf: Arc<SessionConfig>,
        wrap: Wrapper,
        peer: SocketAddr,
        listener: usize,
        peer_id: u32,
        remote_sid: [u8; 8],
        now: Now,
    ) -> Result<Session, String> {
        let mut local_sid = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut local_sid)
            .map_err(|_| "no randomness".to_string())?;
        let mut ks = KeyState::new(0, &conf.tls, now.mono)?;
        // Our reset (msg_pid 0) goes out with the acknowledgement of theirs.
        ks.rel.send(Opcode::HardResetServerV2, Vec::new());
        Ok(Session::blank(conf, wrap, peer, listener, peer_id, (local_sid, remote_sid), vec![ks], now))
    }

    /// A session with its identity and keys, nothing negotiated yet.
    #[allow(clippy::too_many_arguments)]
    fn blank(
        conf: Arc<SessionConfig>,
        wrap: Wrapper,
        peer: SocketAddr,
        listener: usize,
        peer_id: u32,
        (local_sid, remote_sid): ([u8; 8], [u8; 8]),
        keys: Vec<KeyState>,
        now: Now,
    ) -> Session {
        let conf_member = conf.member;
        Session {
            peer,
            listener,
            peer_id,
            client_id: 0,
            local_sid,
            remote_sid,
            wrap,
            keys,
            common_name: None,
            client_config: None,
            virtual_ip: None,
            virtual_ip6: None,
            negotiated: None,
            wants_address: false,
            closed: None,
            connected_since: now.unix,
            last_rekey: 0,
            bytes_in: 0,
            bytes_out: 0,
            last_recv: now.mono,
            last_send: now.mono,
            push_sent: false,
            outbox: Vec::new(),
            data_out: Vec::new(),
            conf,
            ghost: false,
            gen: Gen::new(1, conf_member, 0),
            tenure: 1,
            synced_at: now.mono,
            record_dirty: false,
            last_progress: None,
            progress_sent: now.mono,
            retired: Vec::new(),
            reneg_at: None,
            maybe_behind: false,
            auth: crate::auth::SessionAuth::default(),
            reneg_limit: crate::reneglimit::RenegLimit::new(now.mono),
            reneg_refused: false,
        }
    }

    /// How the session is named in the log.
    pub fn label(&self) -> String {
        match &self.common_name {
            Some(cn) => format!("{cn} ({})", self.peer),
            None => self.peer.to_string(),
        }
    }

    pub fn key_id(&self) -> u8 {
        self.keys.last().map_or(0, |k| k.key_id)
    }

    pub fn cipher_name(&self) -> &'static str {
        self.negotiated.as_ref().map_or("-", |n| n.cipher.name())
    }

    /// When the session last sent or received.
    pub fn last_seen(&self) -> Instant {
        self.last_recv.max(self.last_send)
    }

    /// The first key exchange is done: the server must call `set_address`.
    pub fn wants_address(&self) -> bool {
        self.wants_address
    }

    /// Why the session is over, once it is: the server removes it.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Ends the session (the first reason is kept); the server removes it.
    pub fn close(&mut self, why: impl Into<String>) {
        if self.closed.is_none() {
            self.closed = Some(why.into());
        }
    }

    /// Authenticates a control packet of this session and removes its
    /// wrapping (replay-checked).
    pub fn unwrap(&mut self, packet: &[u8]) -> Result<(u8, [u8; 8], Vec<u8>), crate::wrap::WrapError> {
        let r = self.wrap.unwrap(packet);
        if r.is_ok() {
            self.bytes_in += packet.len() as u64;
        }
        r
    }

    /// A control packet whose wrapping was already removed by `unwrap`.
    pub fn on_control(&mut self, now: Now, first_byte: u8, sid: [u8; 8], body: &[u8]) {
        let (op, key_id) = crate::wire::split_first_byte(first_byte);
        let Some(opcode) = Opcode::from_u8(op).filter(|o| o.is_control()) else {
            return;
        };
        if sid != self.remote_sid {
            log::debug!("{}: control packet of another session dropped", self.label());
            return;
        }
        let body = match ControlBody::parse(opcode, body) {
            Ok(b) => b,
            Err(e) => {
                log::debug!("{}: bad control packet: {e}", self.label());
                return;
            }
        };
        if !body.acks.is_empty() && body.remote_session_id != Some(self.local_sid) {
            log::debug!("{}: acknowledgement for another session dropped", self.label());
            return;
        }
        self.last_recv = now.mono;
        let idx = match self.keys.iter().position(|k| k.key_id == key_id) {
            Some(i) => i,
            None if opcode == Opcode::SoftResetV1 && self.can_renegotiate() => {
                match self.client_renegotiates(key_id, now) {
                    Some(i) => i,
                    None => return,
                }
            }
            // The client answered our soft reset from a key we never had,
            // or ignored one we skipped to.
            None if opcode == Opcode::SoftResetV1 => {
                match self.skip_key_id(key_id, now, false).or_else(|| self.yield_to_client(key_id, now)) {
                    Some(i) => i,
                    None => return,
                }
            }
            None => {
                log::debug!("{}: packet for unknown key_id {key_id} dropped", self.label());
                return;
            }
        };
        let ks = &mut self.keys[idx];
        ks.rel.acked(&body.acks);
        if let Some(pid) = body.msg_pid {
            if ks.rel.receive(pid, opcode, body.payload) == Received::OutOfWindow {
                log::debug!("{}: control packet {pid} beyond the window dropped", self.label());
            }
        }
        self.process(idx, now);
    }

    /// The client may start a renegotiation once its current key works.
    fn can_renegotiate(&self) -> bool {
        self.keys.last().is_some_and(|k| k.phase == Phase::Established)
    }

    /// The client's soft reset while its key works: its renegotiation, if
    /// it may start one now (crate::reneglimit). If not, the packet is
    /// dropped unacknowledged: the client's resends keep asking, and one
    /// after a token came back starts it. Only the plain case is limited:
    /// a key_id past the next one is the repair after a takeover
    /// (`skip_key_id`), at most once per takeover.
    fn client_renegotiates(&mut self, key_id: u8, now: Now) -> Option<usize> {
        if key_id == next_key_id(self.key_id()) && !self.reneg_limit.take(now.mono) {
            self.reneg_refused = true;
            return None;
        }
        self.start_key_state(key_id, now, false)
    }

    /// Whether the client's soft reset was refused for coming too often
    /// since the last call (the server counts and logs it quietly).
    pub fn take_reneg_refused(&mut self) -> bool {
        std::mem::take(&mut self.reneg_refused)
    }

    /// Tests: the server's own renegotiation after a takeover is still due.
    #[cfg(test)]
    pub(crate) fn takeover_rekey_due(&self) -> bool {
        self.reneg_at.is_some()
    }

    /// Opens key state `key_id` for a renegotiation (ours when `initiate`).
    /// Returns its index.
    fn start_key_state(&mut self, key_id: u8, now: Now, initiate: bool) -> Option<usize> {
        let expected = next_key_id(self.key_id());
        if key_id != expected {
            if let Some(i) = self.skip_key_id(key_id, now, initiate) {
                return Some(i);
            }
            log::debug!("{}: soft reset with key_id {key_id}, expected {expected}", self.label());
            return None;
        }
        self.open_key_state(key_id, now, initiate)
    }

    /// After a takeover the client may hold a key this member never heard
    /// of: the old master finished a renegotiation (key_id = ours + 1) and
    /// died before that record reached us. Our soft reset with that same
    /// key_id means nothing to the client (it is its current key), and a
    /// stock client answering any soft reset moves its counter one past
    /// its own key. So when the client shows it holds ours + 1 (data under
    /// it, or a soft reset with ours + 2), this renegotiates with ours + 2,
    /// dropping our own unfinished try. The key_id of a packet we cannot
    /// decrypt is not authenticated, so only exactly that value is taken,
    /// and only once per takeover (`maybe_behind`): a forger can cost the
    /// client one renegotiation, never more.
    fn skip_key_id(&mut self, key_id: u8, now: Now, initiate: bool) -> Option<usize> {
        if !self.maybe_behind || self.ghost || key_id != next_key_id(next_key_id(self.newest_key_id()?)) {
            return None;
        }
        self.maybe_behind = false;
        self.reneg_at = None;
        log::info!("{}: the client is a key ahead of the copied state, key_id {key_id} replaces it", self.label());
        self.drop_unfinished();
        self.open_key_state(key_id, now, initiate)
    }

    /// The client's soft reset with the key_id after our newest key, while
    /// our own renegotiation under another key_id has heard nothing from
    /// it: ours was a skip the client did not need (a forged packet made
    /// it, see `skip_key_id`), so the client's renegotiation goes ahead.
    fn yield_to_client(&mut self, key_id: u8, now: Now) -> Option<usize> {
        let newest = self.newest_key_id()?;
        let last = self.keys.last()?;
        if key_id != next_key_id(newest) || last.phase != Phase::Negotiating || last.rel.heard() {
            return None;
        }
        self.drop_unfinished();
        self.open_key_state(key_id, now, false)
    }

    /// The key_id of our newest key that has data keys.
    fn newest_key_id(&self) -> Option<u8> {
        self.keys.iter().rev().find(|k| k.data.is_some()).map(|k| k.key_id)
    }

    /// Ends an unfinished renegotiation: our newest key is the primary again.
    fn drop_unfinished(&mut self) {
        self.retire_keys(|k| k.data.is_some());
        if let Some(k) = self.keys.last_mut() {
            k.expires = None;
        }
    }

    /// Opens key state `key_id` (its SOFT_RESET queued); the primary stays
    /// as the lame duck, anything older or unfinished goes.
    fn open_key_state(&mut self, key_id: u8, now: Now, initiate: bool) -> Option<usize> {
        let mut ks = match KeyState::new(key_id, &self.conf.tls, now.mono) {
            Ok(k) => k,
            Err(e) => {
                log::error!("{}: {e}", self.label());
                return None;
            }
        };
        // Our own SOFT_RESET: the initiator's, or the answer to the client's.
        ks.rel.send(Opcode::SoftResetV1, Vec::new());
        log::info!(
            "{}: renegotiating, key_id {key_id} ({} initiated)",
            self.label(),
            if initiate { "server" } else { "client" }
        );
        // Keep the primary as lame duck; an older lame duck goes now.
        self.retire_keys(|k| k.phase == Phase::Established && k.expires.is_none());
        if let Some(old) = self.keys.last_mut() {
            old.expires = Some(now.mono + HAND_WINDOW + TRANSITION_WINDOW);
        }
        self.keys.push(ks);
        Some(self.keys.len() - 1)
    }

    /// Moves key state `idx` forward: delivered packets into TLS, TLS
    /// plaintext into the key exchange and control messages, TLS output
    /// onto the wire.
    fn process(&mut self, idx: usize, now: Now) {
        while let Some((opcode, payload)) = self.keys[idx].rel.deliver() {
            if !matches!(opcode, Opcode::ControlV1 | Opcode::ControlWkcV1) || payload.is_empty() {
                continue;
            }
            let waiting = self.keys[idx].tls_out.len();
            if waiting > TLS_OUT_MAX {
                log::warn!("{}: ended: {waiting} bytes of TLS output wait for acknowledgements", self.label());
                self.close(format!("the client acknowledged none of {waiting} bytes of TLS output"));
                return;
            }
            if let Err(e) = self.feed_tls(idx, &payload) {
                self.tls_failed(idx, &e);
                break;
            }
        }
        if self.keys[idx].phase == Phase::Negotiating
            && self.keys[idx].tls.as_ref().is_some_and(|t| !t.is_handshaking())
        {
            self.after_handshake(idx, now);
        }
        self.read_plaintext(idx, now);
        self.flush(idx, now);
    }

    fn feed_tls(&mut self, idx: usize, mut payload: &[u8]) -> Result<(), String> {
        // A ghost's old key has no TLS session: its data is dropped.
        let Some(tls) = self.keys[idx].tls.as_mut() else { return Ok(()) };
        while !payload.is_empty() {
            // After the client's close_notify rustls reads nothing more
            // (0 bytes, not an error): offering the rest again would spin
            // the engine for good.
            if tls.read_tls(&mut payload).map_err(|e| e.to_string())? == 0 {
                return Err("the client closed its TLS session (close_notify) and sent more".into());
            }
            tls.process_new_packets().map_err(|e| crate::tls::describe(&e))?;
        }
        Ok(())
    }

    /// A TLS failure ends the key state's TLS session (and the session,
    /// on key_id 0). The alert TLS queued still goes out, so the client
    /// learns why. The TLS session goes: rustls would fail every later
    /// packet of this key_id again, a log line each, as fast as the
    /// client sends them; its data keys, if any, stay until replaced.
    fn tls_failed(&mut self, idx: usize, e: &str) {
        log::warn!("{}: TLS handshake failed: {e}", self.label());
        let ks = &mut self.keys[idx];
        let mut alert = Vec::new();
        if let Some(mut tls) = ks.tls.take() {
            while tls.wants_write() && tls.write_tls(&mut alert).is_ok() {}
        }
        ks.tls_out.extend_from_slice(&alert);
        if ks.key_id == 0 || self.keys.len() == 1 {
            self.close(format!("TLS handshake failed: {e}"));
        }
    }

    /// The client's certificate is verified: note who it is.
    fn after_handshake(&mut self, idx: usize, _now: Now) {
        let cn = self.keys[idx]
            .tls
            .as_ref()
            .and_then(|t| t.peer_certificates())
            .and_then(|c| c.first())
            .map(|c| crate::tls::common_name(c))
            // No certificate (`verify-client-cert optional` or `none`): the
            // name OpenVPN gives such clients; the password admits them.
            .or_else(|| Some(String::from(NO_CERTIFICATE)));
        match (&self.common_name, cn) {
            (None, Some(cn)) => {
                self.common_name = Some(cn);
                log::info!("{}: TLS handshake done, certificate verified", self.label());
            }
            (Some(old), Some(cn)) if *old != cn => {
                log::warn!("{}: renegotiated with another certificate ({cn})", self.label());
                self.close(format!("certificate common name changed to {cn}"));
            }
            _ => {}
        }
    }

    /// Reads what TLS decrypted: the key-method message first, then
    /// NUL-terminated control messages.
    fn read_plaintext(&mut self, idx: usize, now: Now) {
        let mut buf = [0u8; MAX_MESSAGE];
        loop {
            let negotiating = self.keys[idx].phase == Phase::Negotiating;
            let Some(tls) = self.keys[idx].tls.as_mut() else { return };
            if negotiating {
                let mut km = vec![0u8; MAX_KEY_METHOD];
                let n = match tls.reader().read(&mut km) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                self.key_exchange(idx, &km[..n], now);
                continue;
            }
            let n = match tls.reader().read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let ks = &mut self.keys[idx];
            ks.plain.extend_from_slice(&buf[..n]);
            let mut messages = Vec::new();
            while let Some(end) = ks.plain.iter().position(|b| *b == 0) {
                let msg: Vec<u8> = ks.plain.drain(..=end).collect();
                messages.push(String::from_utf8_lossy(&msg[..end]).trim_end_matches(['\r', '\n']).to_string());
            }
            if ks.plain.len() > MAX_MESSAGE {
                ks.plain.clear();
            }
            for text in messages {
                self.control_message(&text, now);
                if self.closed.is_some() {
                    return;
                }
            }
        }
    }

    /// The client's key-method-2 message: negotiate (first time), answer
    /// with ours, derive the data keys.
    fn key_exchange(&mut self, idx: usize, msg: &[u8], now: Now) {
        let mut client = match KeyMethod2::parse(msg, true) {
            Ok(k) => k,
            Err(e) => {
                log::warn!("{}: bad key-method message: {e}", self.label());
                self.close(format!("bad key-method message: {e}"));
                return;
            }
        };
        let creds = self.conf.password.is_some().then(|| crate::auth::SessionAuth::credentials(&mut client));
        let cn = self.common_name.clone().unwrap_or_default();
        // A genuine token spares the check and is renewed (below).
        let by_token =
            creds.as_ref().is_some_and(|c| self.auth.by_token(self.conf.password.as_ref(), c, &cn, now.unix));
        let creds = creds.filter(|_| !by_token);
        let mut failure = None;
        if self.negotiated.is_none() {
            match self.negotiate(&client) {
                Ok(n) => self.negotiated = Some(n),
                Err(e) => failure = Some(e),
            }
        }
        let server = KeySource::random(false);
        let reply = KeyMethod2 {
            source: server.clone(),
            options: keys::server_options_string(&client.options),
            username: String::new(),
            password: String::new(),
            peer_info: String::new(),
        };
        let Some(tls) = self.keys[idx].tls.as_mut() else { return };
        if tls.writer().write_all(&reply.encode()).is_err() {
            self.close("TLS refused our key-method message");
            return;
        }
        if let Some(e) = failure {
            log::warn!("{}: {e}", self.label());
            self.send_message(idx, &format!("AUTH_FAILED,{e}"));
            self.close(e);
            return;
        }
        let n = self.negotiated.clone().expect("negotiated above");
        let key2 = if n.ekm {
            let mut k = [0u8; 256];
            let res = self.keys[idx].tls.as_ref().map(|t| t.export_keying_material(&mut k[..], keys::EKM_LABEL, None));
            if let Some(Err(e)) = res {
                self.close(format!("TLS key export failed: {e}"));
                return;
            }
            k
        } else {
            keys::prf_key2(&client.source, &server, &self.remote_sid, &self.local_sid)
        };
        let label = self.label();
        let ks = &mut self.keys[idx];
        let mut data = DataKey::new(n.cipher, self.conf.auth, &key2, true);
        data.set_send_space(SendSpace::Member { member: self.conf.member, creator: true });
        ks.data = Some(data);
        ks.key2 = Some(Box::new(key2));
        ks.ours = true;
        ks.senders = 1 << (self.conf.member - 1);
        ks.phase = Phase::Established;
        ks.established = Some(now.mono);
        // The first key is the only one: use it at once. A renegotiated
        // key is used for sending once the client acknowledged our
        // key-method message, i.e. has the key too.
        ks.send_ok = ks.key_id == 0;
        if ks.key_id == 0 {
            // With a password check, the address waits for its verdict.
            self.wants_address = creds.is_none();
            log::info!(
                "{label}: key exchange done, cipher {}, {}",
                n.cipher.name(),
                if n.ekm { "keys from TLS-EKM" } else { "keys from the OpenVPN PRF" }
            );
        } else {
            log::info!("{label}: key_id {} established", ks.key_id);
            self.maybe_behind = false;
            self.last_rekey = now.unix;
            self.record_dirty = true;
            if by_token {
                self.push_token(idx);
            }
        }
        if let Some(c) = creds {
            self.auth.check(c);
        }
    }

    fn negotiate(&self, client: &KeyMethod2) -> Result<Negotiated, String> {
        let info = PeerInfo::parse(&client.peer_info);
        let (cipher, push_cipher) =
            keys::negotiate_cipher(&self.conf.data_ciphers, self.conf.fallback_cipher, &info, &client.options)?;
        let framing = if !keys::uses_compression(&client.options) {
            Framing::None
        } else if info.comp_stub_v2 {
            Framing::StubV2
        } else {
            Framing::LzoStub
        };
        Ok(Negotiated {
            cipher,
            push_cipher,
            ekm: info.tls_ekm(),
            cc_exit: info.cc_exit(),
            data_v2: info.data_v2(),
            request_push: info.request_push(),
            tun_mtu: info.mtu.map(|_| 1500),
            framing,
        })
    }

    /// The server assigned the client's tunnel address.
    pub fn set_address(&mut self, ip: Ipv4Addr, now: Now) {
        self.virtual_ip = Some(ip);
        self.virtual_ip6 = self.conf.push.address6(ip);
        self.wants_address = false;
        self.record_dirty = true;
        if self.negotiated.as_ref().is_some_and(|n| n.request_push) {
            self.send_push_reply(now);
        }
    }

    fn send_push_reply(&mut self, now: Now) {
        let (Some(ip), Some(n)) = (self.virtual_ip, self.negotiated.clone()) else {
            return;
        };
        let c = ClientPush {
            address: ip,
            address6: self.virtual_ip6,
            peer_id: n.data_v2.then_some(self.peer_id),
            cipher: n.push_cipher.then(|| n.cipher.name()),
            cc_exit: n.cc_exit,
            tls_ekm: n.ekm,
            tun_mtu: n.tun_mtu,
            compression: match n.framing {
                Framing::None => None,
                Framing::LzoStub => Some("comp-lzo no"),
                Framing::StubV2 => Some("compress stub-v2"),
            },
        };
        // Control messages go over a key whose exchange is done: written
        // into a key still negotiating, they would reach the client ahead
        // of that key's key-method message.
        let Some(idx) = self.talking_key() else {
            return;
        };
        let mut options = crate::ccd::push_options(&self.conf.push, &c, self.client_config.as_deref());
        let cn = self.common_name.as_deref().unwrap_or_default();
        options.extend(self.auth.push_option(self.conf.password.as_ref(), cn));
        for m in push::messages(&options) {
            self.send_message(idx, &m);
        }
        if !self.push_sent {
            log::info!("{}: tunnel address {ip}, peer-id {}", self.label(), self.peer_id);
        }
        self.push_sent = true;
        self.flush(idx, now);
    }

    /// `password token`: the token renewed after a renegotiation (or a
    /// fresh check), sent alone in a PUSH_REPLY the way auth-gen-token
    /// servers do; the client uses it from its next renegotiation on.
    fn push_token(&mut self, idx: usize) {
        let cn = self.common_name.as_deref().unwrap_or_default();
        if let Some(o) = self.auth.push_option(self.conf.password.as_ref(), cn) {
            self.send_message(idx, &format!("PUSH_REPLY,{o}"));
        }
    }

    /// Key state `idx`'s TLS session, for tests that make the server
    /// misbehave.
    #[cfg(test)]
    pub(crate) fn tls_of(&mut self, idx: usize) -> Option<&mut ServerConnection> {
        self.keys.get_mut(idx)?.tls.as_mut()
    }

    /// One control message: one TLS record, NUL included.
    fn send_message(&mut self, idx: usize, text: &str) {
        let mut m = Vec::with_capacity(text.len() + 1);
        m.extend_from_slice(text.as_bytes());
        m.push(0);
        let ks = &mut self.keys[idx];
        let Some(tls) = ks.tls.as_mut() else { return };
        // rustls buffers at most 64 KiB of records not yet taken, and a
        // message it takes in part is split over two records, which a stock
        // client reads as two messages. The records written so far move on
        // to tls_out (which the reliable window drains) first, so that each
        // message goes whole into a record of its own.
        while tls.wants_write() {
            if !matches!(tls.write_tls(&mut ks.tls_out), Ok(n) if n > 0) {
                break;
            }
        }
        if tls.writer().write_all(&m).is_err() {
            log::error!("{}: the TLS layer refused a control message", self.label());
        }
    }

    fn control_message(&mut self, text: &str, now: Now) {
        if text == "PUSH_REQUEST" {
            // Always answered (2.4 clients restart after unanswered
            // requests), but not while the last answer is still on its way:
            // a client repeats its request every second, and a long reply
            // sent again each time would pile up behind itself.
            if self.push_in_flight() {
                log::debug!("{}: PUSH_REQUEST while the reply is in flight", self.label());
                return;
            }
            self.send_push_reply(now);
        } else if text == "EXIT" || text.starts_with("EXIT,") {
            log::info!("{}: client announced its exit", self.label());
            self.close("client exited (explicit-exit-notify)");
        } else {
            log::debug!("{}: control message ignored: {text}", self.label());
        }
    }

    /// TLS output into reliable packets, then everything due on the wire.
    fn flush(&mut self, idx: usize, now: Now) {
        let chunk = self.payload_room();
        let ks = &mut self.keys[idx];
        if let Some(tls) = ks.tls.as_mut() {
            while tls.wants_write() {
                if tls.write_tls(&mut ks.tls_out).is_err() {
                    break;
                }
            }
        }
        while !ks.tls_out.is_empty() && ks.rel.can_send() {
            let n = ks.tls_out.len().min(chunk);
            let part: Vec<u8> = ks.tls_out.drain(..n).collect();
            ks.rel.send(Opcode::ControlV1, part);
        }
        // Only a key negotiated here: a copied one (no TLS) has nothing to
        // acknowledge, and waits for the client's first packet under it
        // (crate::replication, `client_has`).
        let negotiated_here = ks.tls.is_some();
        if negotiated_here
            && ks.phase == Phase::Established
            && !ks.send_ok
            && ks.rel.all_acked()
            && ks.tls_out.is_empty()
        {
            ks.send_ok = true;
        }
        self.transmit(idx, now);
    }

    /// Room for TLS bytes in one control packet.
    fn payload_room(&self) -> usize {
        let header = 1 + 8 + self.wrap.overhead() + 1 + 4 * PIGGYBACK_ACKS + 8 + 4;
        CONTROL_MTU - IP_UDP_OVERHEAD - header
    }

    /// Sends (or resends) what the reliability layer has due, with
    /// piggybacked acknowledgements; leftover acknowledgements go in a
    /// P_ACK_V1.
    fn transmit(&mut self, idx: usize, now: Now) {
        let mut packets: Vec<(u8, ControlBody)> = Vec::new();
        let ks = &mut self.keys[idx];
        let key_id = ks.key_id;
        let mut due: Vec<(u32, Opcode, Vec<u8>)> = Vec::new();
        ks.rel.transmit(now.mono, |t| due.push((t.pid, t.opcode, t.payload.to_vec())));
        for (pid, opcode, payload) in due {
            let acks = ks.rel.take_acks(PIGGYBACK_ACKS);
            let remote_session_id = (!acks.is_empty()).then_some(self.remote_sid);
            packets.push((
                opcode.first_byte(key_id),
                ControlBody { acks, remote_session_id, msg_pid: Some(pid), payload },
            ));
        }
        if ks.rel.has_acks() {
            let acks = ks.rel.take_acks(MAX_ACKS);
            packets.push((
                Opcode::AckV1.first_byte(key_id),
                ControlBody { acks, remote_session_id: Some(self.remote_sid), msg_pid: None, payload: Vec::new() },
            ));
        }
        for (first, body) in packets {
            let mut bytes = Vec::new();
            body.encode(&mut bytes);
            match self.wrap.wrap(first, &self.local_sid, &bytes, now.unix as u32) {
                Ok(p) => {
                    self.bytes_out += p.len() as u64;
                    self.outbox.push(p);
                    self.last_send = now.mono;
                }
                Err(e) => log::error!("{}: cannot wrap a control packet: {e}", self.label()),
            }
        }
    }

    /// Timers: retransmissions, handshake deadline, lame-duck expiry,
    /// keepalive, renegotiation.
    pub fn on_timer(&mut self, now: Now) {
        if self.ghost {
            if self.ghost_timer(now) {
                self.close("its master stopped reporting it");
            }
            return;
        }
        for idx in 0..self.keys.len() {
            self.flush(idx, now);
        }
        let (ping, timeout) = self.conf.keepalive;
        if now.mono.duration_since(self.last_recv) >= Duration::from_secs(timeout.into()) {
            self.close(format!("no packet for {timeout} s (ping-restart)"));
            return;
        }
        if let Some(k) = self.keys.iter().find(|k| k.phase == Phase::Negotiating) {
            if now.mono.duration_since(k.started) >= HAND_WINDOW {
                let key_id = k.key_id;
                if key_id == 0 || self.keys.len() == 1 {
                    self.close("TLS negotiation did not finish within 60 s");
                    return;
                }
                log::warn!("{}: renegotiation of key_id {key_id} timed out", self.label());
                self.drop_unfinished();
            }
        }
        self.retire_keys(|k| k.expires.is_none_or(|t| t > now.mono));
        if self.virtual_ip.is_some() && now.mono.duration_since(self.last_send) >= Duration::from_secs(ping.into()) {
            self.send_ping(now);
        }
        self.maybe_renegotiate(now);
    }

    fn maybe_renegotiate(&mut self, now: Now) {
        let Some(primary) = self.keys.last() else {
            return;
        };
        if primary.phase != Phase::Established {
            return;
        }
        let by_time = self.conf.reneg_sec > 0
            && primary
                .established
                .is_some_and(|t| now.mono.duration_since(t) >= Duration::from_secs(self.conf.reneg_sec.into()));
        let by_count = primary.data.as_ref().is_some_and(DataKey::needs_rekey);
        let by_takeover = self.reneg_at.is_some_and(|t| t <= now.mono);
        if by_time || by_count || by_takeover {
            self.reneg_at = None;
            let id = next_key_id(primary.key_id);
            if let Some(idx) = self.start_key_state(id, now, true) {
                self.flush(idx, now);
            }
        }
    }

    fn send_ping(&mut self, now: Now) {
        let mut out = [0u8; 128];
        if let Some(n) = self.encrypt(now, &crate::data::PING, &mut out) {
            self.data_out.push(out[..n].to_vec());
        }
    }

    /// Decrypts a data packet in place; returns the payload with any
    /// compression framing removed. Only authenticated packets count as
    /// signs of life.
    pub fn decrypt<'a>(&mut self, now: Now, packet: &'a mut [u8]) -> Option<&'a [u8]> {
        let key = self.opener(now, packet)?;
        let opened = key.open(packet);
        self.opened(now, &key, opened, packet)
    }

    /// The receive key of a data packet's key id: the first step of
    /// [`Session::decrypt`], whose opening may then run elsewhere
    /// (crate::shard). A key id we do not have yet is the client's next
    /// key: its key state starts.
    pub fn opener(&mut self, now: Now, packet: &[u8]) -> Option<Opener> {
        let key_id = packet.first()? & 7;
        let Some(ks) = self.keys.iter().find(|k| k.key_id == key_id && k.data.is_some()) else {
            if let Some(idx) = self.skip_key_id(next_key_id(key_id), now, true) {
                self.flush(idx, now);
            }
            return None;
        };
        ks.data.as_ref().map(DataKey::opener)
    }

    /// The last step of [`Session::decrypt`]: a packet that `key` opened
    /// (authenticated) goes through its key's replay window, if the key is
    /// still installed, and counts as a sign of life.
    pub fn opened<'a>(
        &mut self,
        now: Now,
        key: &Opener,
        opened: Result<Opened, DataError>,
        packet: &'a [u8],
    ) -> Option<&'a [u8]> {
        let ks = self.keys.iter_mut().find(|k| k.data.as_ref().is_some_and(|d| d.opens_with(key)))?;
        let data = ks.data.as_mut()?;
        let payload = match opened.and_then(|o| data.accept(o, packet)) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("{}: data packet dropped: {e}", self.label());
                return None;
            }
        };
        // The client switched to the new key: so may we.
        ks.send_ok = true;
        self.last_recv = now.mono;
        self.bytes_in += packet.len() as u64;
        let framing = self.negotiated.as_ref().map_or(Framing::None, |n| n.framing);
        match (framing, payload) {
            (Framing::LzoStub, [0xFA, rest @ ..]) => Some(rest),
            (Framing::StubV2, [0x50, 0x00, rest @ ..]) => Some(rest),
            (Framing::LzoStub, _) => None,
            _ => Some(payload),
        }
    }

    /// Encrypts `payload` for the client with the newest usable key into
    /// `out`; returns the packet length. The copying form of
    /// [`Session::outgoing`], for keepalives and tests.
    pub fn encrypt(&mut self, now: Now, payload: &[u8], out: &mut [u8]) -> Option<usize> {
        self.outgoing(payload.len())?.seal(now, out, |p| p.copy_from_slice(payload))
    }

    /// A data packet of `len` payload bytes for the client, not yet built:
    /// the key is chosen and the packet's length known, so the caller can
    /// place it (crate::train) before [`DataOut::seal`] writes it there.
    /// `None`: nothing may be sent (a ghost, no usable key), or the packet
    /// would not fit a datagram.
    pub fn outgoing(&mut self, len: usize) -> Option<DataOut<'_>> {
        // A ghost's counters may lag the old master's: sending before the
        // takeover jump could reuse a nonce.
        if self.ghost {
            return None;
        }
        let n = self.negotiated.as_ref()?;
        let (v2, lzo) = (n.data_v2, n.framing == Framing::LzoStub);
        let peer_id = self.peer_id;
        let key = self.keys.iter().rposition(|k| k.send_ok && !k.no_send && k.data.is_some())?;
        let ks = &self.keys[key];
        let hdr = DataHeader { key_id: ks.key_id, peer_id: v2.then_some(peer_id) };
        // `comp-lzo no`: the 0xFA "not compressed" byte in front.
        let framed = len + usize::from(lzo);
        let wire = ks.data.as_ref()?.packet_len(hdr, framed);
        if wire > crate::batch::MAX_DATAGRAM {
            log::warn!(
                "{}: cannot encrypt a {len}-byte packet: {wire} bytes is more than a datagram ({}); lower the tun MTU",
                self.label(),
                crate::batch::MAX_DATAGRAM
            );
            return None;
        }
        Some(DataOut { session: self, key, hdr, lzo, framed, wire })
    }

    /// `kill client`, `kill` and `client-kill`: tell the client `message`
    /// (RESTART makes a stock client reconnect, HALT makes it stop), then
    /// end the session, logged with `why`.
    pub fn kill(&mut self, now: Now, message: &str, why: &str) {
        if let Some(idx) = self.talking_key() {
            self.send_message(idx, message);
            self.flush(idx, now);
        }
        self.close(why);
    }

    /// The parent's verdict on the session's credentials (or the server's
    /// own: a timeout, a full queue). Accepted, a first exchange goes on
    /// to its address; refused, the client gets AUTH_FAILED, as from a
    /// stock server, and the session ends.
    pub fn auth_verdict(&mut self, accepted: bool, why: &str, now: Now) {
        if !std::mem::take(&mut self.auth.waiting) {
            return;
        }
        if accepted {
            self.auth.accept(self.conf.password.as_ref(), now.unix);
            self.wants_address = self.virtual_ip.is_none();
            // The user (and a new token's issue time) go to the backups.
            self.record_dirty = true;
            // A check on a renegotiation (an expired token): the client
            // already has its push, and gets the new token alone.
            if let Some(idx) = self.talking_key().filter(|_| self.push_sent) {
                self.push_token(idx);
                self.flush(idx, now);
            }
            return;
        }
        log::warn!("{}: password refused: {why}", self.label());
        if let Some(idx) = self.talking_key() {
            self.send_message(idx, "AUTH_FAILED");
            self.flush(idx, now);
        }
        self.close(format!("password refused: {why}"));
    }

    /// The newest key whose exchange is done and whose TLS session we hold:
    /// the one control messages go over.
    /// A PUSH_REPLY was sent and its bytes are not all acknowledged yet.
    fn push_in_flight(&self) -> bool {
        self.push_sent
            && self.talking_key().is_some_and(|i| {
                let k = &self.keys[i];
                !k.tls_out.is_empty() || !k.rel.all_acked() || k.tls.as_ref().is_some_and(|t| t.wants_write())
            })
    }

    fn talking_key(&self) -> Option<usize> {
        self.keys.iter().rposition(|k| k.phase == Phase::Established && k.tls.is_some())
    }
}

/// A data packet for a client whose key and length are settled
/// ([`Session::outgoing`]), built by [`DataOut::seal`] where the caller
/// placed it.
pub struct DataOut<'a> {
    session: &'a mut Session,
    /// Index of the key state in `session.keys`.
    key: usize,
    hdr: DataHeader,
    /// The 0xFA byte goes before the payload.
    lzo: bool,
    /// Payload length with the framing byte.
    framed: usize,
    /// The packet's length on the wire.
    wire: usize,
}

impl DataOut<'_> {
    /// The datagram's length.
    pub fn size(&self) -> usize {
        self.wire
    }

    /// Which listener, and which address, the datagram goes to.
    pub fn to(&self) -> (usize, SocketAddr) {
        (self.session.listener, self.session.peer)
    }

    /// Builds the packet in `out` (at least [`DataOut::size`] bytes):
    /// `write` puts the payload (exactly the `len` given to
    /// [`Session::outgoing`]) where it is encrypted in place. Returns the
    /// packet's length; `None` when it cannot be encrypted (logged).
    pub fn seal(self, now: Now, out: &mut [u8], write: impl FnOnce(&mut [u8])) -> Option<usize> {
        let s = self.session;
        let data = s.keys[self.key].data.as_mut()?;
        let lzo = self.lzo;
        let res = data.encrypt_with(self.hdr, self.framed, out, |p| {
            if lzo {
                p[0] = 0xFA;
                write(&mut p[1..]);
            } else {
                write(p);
            }
        });
        match res {
            Ok(n) => {
                s.last_send = now.mono;
                s.bytes_out += n as u64;
                Some(n)
            }
            Err(e) => {
                log::warn!("{}: cannot encrypt: {e}", s.label());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample;
    use vpnsyncd_common::msg::KeyKind;

    /// The session settings of cluster member `member` (keepalive 2 10).
    pub(crate) fn member_conf(member: u8) -> Arc<SessionConfig> {
        let text = format!(
            "ca /ca\ncertificate /crt\nkey /key\nkeepalive 2 10\n\
             sync {{\nrole vip 10.0.0.1 interface lo\npeer 10.0.0.2\nkey /k\nmember {member}\n}}\n"
        );
        let c = vpnsyncd_config::parse_str("test", &text, &[]).unwrap();
        let t = crate::tls::testpki::SERVER_CRT;
        let keys = vec![
            (KeyKind::Ca, crate::tls::testpki::CA.to_vec()),
            (KeyKind::Certificate, t.to_vec()),
            (KeyKind::Key, crate::tls::testpki::SERVER_KEY.to_vec()),
        ];
        crate::settings::build(&c, &keys).unwrap().0
    }

    /// Nothing sent by this run yet.
    fn none() -> crate::sentkeys::SentKeys {
        crate::sentkeys::SentKeys::new(16, Duration::from_secs(3600))
    }

    fn at(t0: Instant, ms: u64) -> Now {
        Now { mono: t0 + Duration::from_millis(ms), unix: 1_800_000_000 + ms / 1000 }
    }

    /// The packet id of an AES-256-GCM DATA_V2 packet (after the 4-byte
    /// header).
    fn packet_id(out: &[u8]) -> u32 {
        u32::from_be_bytes(out[4..8].try_into().unwrap())
    }

    fn primary(s: &mut Session) -> &mut DataKey {
        s.keys.last_mut().unwrap().data.as_mut().unwrap()
    }

    #[test]
    fn a_client_that_acknowledges_nothing_is_ended_at_the_tls_output_bound() {
        let t0 = Instant::now();
        let hello = |s: &mut Session, pid: u32| {
            let body = ControlBody { msg_pid: Some(pid), payload: vec![0x16; 64], ..Default::default() };
            s.on_control(at(t0, 0), Opcode::ControlV1.first_byte(0), [1; 8], &body.to_bytes());
        };
        for (waiting, ended_by_bound) in [(TLS_OUT_MAX, false), (TLS_OUT_MAX + 1, true)] {
            let addr = "192.0.2.1:1194".parse().unwrap();
            let mut s = Session::new(member_conf(1), Wrapper::none(), addr, 0, 0, [1; 8], at(t0, 0)).unwrap();
            let reset = ControlBody { msg_pid: Some(0), ..Default::default() };
            s.on_control(at(t0, 0), Opcode::HardResetClientV2.first_byte(0), [1; 8], &reset.to_bytes());
            s.keys[0].tls_out = vec![0; waiting];
            hello(&mut s, 1);
            let why = s.closed().expect("ended (the bytes are no ClientHello either)");
            assert_eq!(why.contains("acknowledged none"), ended_by_bound, "{waiting}: {why}");
        }
    }

    /// Invariant (a) on the old master's worst day: member 1 serves the
    /// session and sends millions of packets none of which were reported,
    /// member 2 and member 3 both promote from the same stale record, and
    /// all three go on sending (a split brain). No id is sent twice.
    #[test]
    fn members_promoting_from_one_stale_record_never_share_a_packet_id() {
        let t0 = Instant::now();
        let mut rec = sample();
        // Created by member 4 (which died).
        rec.keys[0].senders = 1 << 3;
        let mut members: Vec<Session> = (1..=3)
            .map(|m| Session::ghost(member_conf(m), Wrapper::none(), &rec, Gen::new(1, 4, 1), &none(), at(t0, 0)))
            .collect();
        let mut out = [0u8; 256];
        let mut seen = std::collections::HashSet::new();
        for (i, s) in members.iter_mut().enumerate() {
            s.promote(at(t0, 0), Duration::from_secs(60));
            assert!(!s.ghost, "member {} serves", i + 1);
        }
        for round in 0..400u32 {
            for (i, s) in members.iter_mut().enumerate() {
                // Each member sends in bursts: 99,999 skipped ids, then one
                // real packet, as if it sent 100,000 packets.
                if round > 0 {
                    let d = primary(s);
                    let c = d.send_counter();
                    d.advance_send_counter(c + 99_999);
                }
                let Some(_) = s.encrypt(at(t0, 10), b"payload", &mut out) else {
                    continue;
                };
                let id = packet_id(&out);
                assert!(seen.insert(id), "member {} sent packet id {id} a second time", i + 1);
                let sent = primary(s).send_counter();
                assert_eq!(sent, id);
            }
        }
        assert!(seen.len() > 1000);
    }

    /// A packet built in place ([`Session::outgoing`], then
    /// [`DataOut::seal`] writing the payload where it is encrypted) is
    /// what the copying [`Session::encrypt`] builds: the `comp-lzo no` byte
    /// in front, one packet id each, and the length said before it was
    /// written. One that would not fit a datagram is not started.
    #[test]
    fn packets_built_in_place_carry_the_framing_and_their_own_ids() {
        let t0 = Instant::now();
        for (cipher, framing) in [
            (Cipher::Aes256Gcm, Framing::LzoStub),
            (Cipher::Aes256Cbc, Framing::LzoStub),
            (Cipher::Aes256Gcm, Framing::None),
        ] {
            let mut rec = sample();
            rec.negotiated.cipher = cipher;
            rec.negotiated.framing = framing;
            let mut g = Session::ghost(member_conf(3), Wrapper::none(), &rec, Gen::new(2, 1, 1), &none(), at(t0, 0));
            assert!(g.outgoing(10).is_none(), "a ghost sends nothing");
            g.promote(at(t0, 0), Duration::from_secs(60));
            let auth = g.conf.auth;
            let mut client = DataKey::new(cipher, auth, &rec.keys[0].key2, false);
            let payload: Vec<u8> = (0..1400).map(|i| i as u8).collect();
            let want = [&[0xFA][..], &payload].concat();
            let want = if framing == Framing::LzoStub { &want[..] } else { &payload[..] };
            let mut copied = [0u8; 2048];
            let before = g.bytes_out;
            let n = g.encrypt(at(t0, 0), &payload, &mut copied).expect("copied");
            let o = g.outgoing(payload.len()).expect("a key to send with");
            let size = o.size();
            let mut in_place = [0u8; 2048];
            let m = o.seal(at(t0, 0), &mut in_place[..size], |p| p.copy_from_slice(&payload)).expect("in place");
            assert_eq!((m, n), (size, size), "{cipher:?}: the length is known before the packet is written");
            assert_eq!(client.decrypt(&mut copied[..n]), Ok(want), "{cipher:?}");
            assert_eq!(client.decrypt(&mut in_place[..m]), Ok(want), "{cipher:?}");
            assert_eq!(g.bytes_out - before, (n + m) as u64, "both are counted");
            assert!(g.outgoing(crate::batch::MAX_DATAGRAM).is_none(), "larger than a datagram");
        }
    }

    /// A restarted member must not trust its own bit in a record: its
    /// earlier run's last ids may never have been reported.
    #[test]
    fn a_key_sent_under_by_an_earlier_run_is_replaced_not_used() {
        let t0 = Instant::now();
        let mut rec = sample();
        rec.keys[0].senders = 0b11;
        let mut g = Session::ghost(member_conf(2), Wrapper::none(), &rec, Gen::new(2, 1, 1), &none(), at(t0, 0));
        g.promote(at(t0, 0), Duration::from_secs(60));
        let mut out = [0u8; 256];
        assert_eq!(g.encrypt(at(t0, 0), b"x", &mut out), None, "nothing is sent under that key");
        assert_eq!(g.reneg_at, Some(t0), "it is replaced at once");
        // Member 3, which never sent under it, uses its own block.
        let mut g = Session::ghost(member_conf(3), Wrapper::none(), &rec, Gen::new(2, 1, 1), &none(), at(t0, 0));
        g.promote(at(t0, 0), Duration::from_secs(60));
        assert!(g.encrypt(at(t0, 0), b"x", &mut out).is_some());
        assert_eq!(packet_id(&out), 3 << 20);
        assert_eq!(g.snapshot(at(t0, 0)).unwrap().keys[0].senders, 0b111, "and says so in its record");
    }

    #[test]
    fn takeover_moves_the_control_replay_time_forward() {
        let t0 = Instant::now();
        let mut rec = sample();
        rec.progress.wrap_send = (500, 1_900_000_000);
        let mut g = Session::ghost(member_conf(2), Wrapper::none(), &rec, Gen::new(1, 1, 1), &none(), at(t0, 0));
        assert!(g.ghost);
        g.promote(at(t0, 0), Duration::from_secs(5));
        assert!(!g.ghost);
        assert_eq!(g.wrap.send_state(), (0, 1_900_000_001), "a newer time of member 2's residue, ids from 1");
        assert_eq!(g.reneg_at, Some(t0 + Duration::from_secs(5)));
        assert_eq!(g.gen().tenure(), 2);
        assert_eq!(g.gen().member(), 2);
    }

    #[test]
    fn snapshot_round_trips_through_a_ghost() {
        let t0 = Instant::now();
        let g = Session::ghost(member_conf(1), Wrapper::none(), &sample(), Gen::new(1, 1, 1), &none(), at(t0, 0));
        let mut want = sample();
        // The ghost reports what it holds: the record's counters.
        want.progress.keys = vec![crate::record::KeyProgress { key_id: 1, send: 1000, recv: (0, 900, 0xffff) }];
        assert_eq!(g.snapshot(at(t0, 0)).unwrap(), want);
    }

    /// Finding 5: a copied lame duck expires when its original does, on
    /// the ghost and after promotion, so key_id coming round to it later
    /// finds a fresh key.
    #[test]
    fn a_copied_lame_duck_expires_with_its_original() {
        let t0 = Instant::now();
        let mut rec = sample();
        let mut old = rec.keys[0].clone();
        old.key_id = 7;
        old.key2 = [9; 256];
        old.expires_in = 30;
        rec.keys.insert(0, old);
        let mut g = Session::ghost(member_conf(2), Wrapper::none(), &rec, Gen::new(1, 1, 1), &none(), at(t0, 0));
        assert_eq!(g.keys.len(), 2);
        g.apply_progress(Gen::new(1, 1, 1), &rec.progress, at(t0, 29_000));
        g.on_timer(at(t0, 29_000));
        assert_eq!(g.keys.len(), 2);
        g.on_timer(at(t0, 30_000));
        assert_eq!(g.keys.iter().map(|k| k.key_id).collect::<Vec<_>>(), vec![1], "the lame duck expired on the ghost");
        // Promoted: a copied lame duck lives the transition window at most.
        let mut rec2 = rec.clone();
        rec2.keys[0].expires_in = 86_400;
        let mut g = Session::ghost(member_conf(2), Wrapper::none(), &rec2, Gen::new(1, 1, 1), &none(), at(t0, 0));
        g.promote(at(t0, 0), Duration::from_secs(60));
        assert!(g.keys[0].expires.unwrap() <= t0 + TRANSITION_WINDOW);
    }

    /// Findings 2 and 4: records and progress change a ghost only with a
    /// newer generation, and never a session this member serves.
    #[test]
    fn records_only_move_a_ghost_forward_and_never_touch_a_live_session() {
        let t0 = Instant::now();
        let mut rec = sample();
        let mut g = Session::ghost(member_conf(2), Wrapper::none(), &rec, Gen::new(1, 1, 5), &none(), at(t0, 0));
        rec.keys[0].send = 50;
        assert_eq!(g.offer(&rec, Gen::new(1, 1, 4), &none(), at(t0, 0)), Offer::Stale);
        assert_eq!(g.offer(&rec, Gen::new(1, 1, 6), &none(), at(t0, 0)), Offer::Applied);
        assert_eq!(primary(&mut g).send_counter(), 1000, "a newer record with a lower counter does not lower ours");
        let mut p = rec.progress.clone();
        p.keys[0].send = 2000;
        assert!(!g.apply_progress(Gen::new(1, 1, 5), &p, at(t0, 0)), "progress of an older record");
        assert!(g.apply_progress(Gen::new(1, 1, 6), &p, at(t0, 0)));
        assert_eq!(primary(&mut g).send_counter(), 2000);
        g.promote(at(t0, 0), Duration::from_secs(60));
        let served = primary(&mut g).send_counter();
        assert_eq!(g.offer(&rec, Gen::new(9, 1, 0), &none(), at(t0, 0)), Offer::Live);
        assert_eq!(primary(&mut g).send_counter(), served, "a live session is not rolled back");
        assert!(!g.apply_progress(g.gen(), &rec.progress, at(t0, 0)));
        // A backup reports a later tenure than ours (Session::report_back):
        // our next record supersedes it.
        assert!(!g.apply_progress(Gen::new(9, 0, 0), &rec.progress, at(t0, 0)));
        assert!(g.gen() > Gen::new(9, 8, u32::MAX), "{:?}", g.gen());
        assert_eq!(primary(&mut g).send_counter(), served, "lower counters in the report move nothing");
    }

    /// Finding 6: a ghost whose master stopped reporting it goes away
    /// after twice the keepalive timeout (here 2 x 10 s).
    #[test]
    fn an_unreported_ghost_expires() {
        let t0 = Instant::now();
        let mut g = Session::ghost(member_conf(2), Wrapper::none(), &sample(), Gen::new(1, 1, 1), &none(), at(t0, 0));
        g.on_timer(at(t0, 19_000));
        assert!(g.closed.is_none());
        g.apply_progress(Gen::new(1, 1, 1), &sample().progress, at(t0, 19_000));
        g.on_timer(at(t0, 38_000));
        assert!(g.closed.is_none(), "progress refreshed it");
        g.on_timer(at(t0, 39_000));
        assert!(g.closed.is_some());
    }
}
