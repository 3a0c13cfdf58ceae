//! Control-channel wrapping: none, tls-auth (protocol reference §3),
//! tls-crypt (§4.1) and tls-crypt-v2 (§4.2), with the long-form replay ids
//! of §3.5.
//!
//! A [`Wrapper`] holds the keys of one side plus its own send counter and
//! receive window, so each client session on the server gets a clone of a
//! template. Authentication always happens before the replay check, so a
//! forged packet can never move the window. The first packet from an
//! unknown address is only authenticated ([`Wrapper::verify_only`]); its
//! replay id is recorded once a session exists ([`Wrapper::record_replay`]).

use std::fmt;
use std::sync::Arc;

use aes::cipher::{KeyIvInit, StreamCipher};
use ring::hmac;
use vpnsyncd_config::Digest;

use crate::packet_id::{PacketIdExhausted, PacketIdSend, ReplayError, ReplayWindow};
use crate::tlscryptv2::{self, KeyError, ServerKey};
use crate::wire::SessionId;

/// Bytes of the first byte and the sender's session id, in front of every
/// control packet.
const HEADER_LEN: usize = 1 + 8;
/// Bytes of a long-form replay id: id and time, both u32.
const REPLAY_ID_LEN: usize = 8;
/// tls-crypt uses HMAC-SHA256 for its tag.
const TAG_LEN: usize = 32;

const BEGIN_LINE: &str = "-----BEGIN OpenVPN Static key V1-----";
const END_LINE: &str = "-----END OpenVPN Static key V1-----";

/// Why a static key file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFileError {
    NoBeginLine,
    NoEndLine,
    /// A byte that is neither a hex digit nor whitespace (1-based line).
    InvalidChar {
        byte: u8,
        line: usize,
    },
    /// Hex digits come in pairs.
    OddDigits,
    /// The key must hold exactly two 128-byte records.
    WrongLength(usize),
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::NoBeginLine => write!(f, "no {BEGIN_LINE} line"),
            KeyFileError::NoEndLine => write!(f, "no {END_LINE} line"),
            KeyFileError::InvalidChar { byte, line } => {
                write!(f, "invalid character '{}' on line {line}", byte.escape_ascii())
            }
            KeyFileError::OddDigits => f.write_str("odd number of hex digits"),
            KeyFileError::WrongLength(n) => {
                write!(f, "key holds {n} bytes, {} expected", StaticKey::LEN)
            }
        }
    }
}

impl std::error::Error for KeyFileError {}

/// The 256 bytes of an "OpenVPN Static key V1" file: two records of
/// `cipher[64] || hmac[64]` (§3.1).
#[derive(Clone, PartialEq, Eq)]
pub struct StaticKey(pub [u8; 256]);

/// The key file's bytes are zeroized when the key goes (a reload replaces it).
impl Drop for StaticKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for StaticKey {
    /// Never prints key material: Debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticKey(..)")
    }
}

impl StaticKey {
    /// Key length in bytes.
    pub const LEN: usize = 256;

    /// Parses the file format of `openvpn --genkey secret` (§3.1): anything
    /// before the BEGIN line is ignored, only hex digits and whitespace may
    /// follow until the END line.
    pub fn parse(text: &[u8]) -> Result<StaticKey, KeyFileError> {
        let mut lines = text.split(|&b| b == b'\n').enumerate();
        lines.by_ref().find(|(_, l)| l.trim_ascii() == BEGIN_LINE.as_bytes()).ok_or(KeyFileError::NoBeginLine)?;
        let mut digits = Vec::with_capacity(2 * Self::LEN);
        for (index, line) in lines {
            if line.trim_ascii() == END_LINE.as_bytes() {
                return Self::from_digits(&digits);
            }
            for &byte in line {
                match byte {
                    b if b.is_ascii_whitespace() => {}
                    b if b.is_ascii_hexdigit() => digits.push(hex_value(b)),
                    _ => return Err(KeyFileError::InvalidChar { byte, line: index + 1 }),
                }
            }
        }
        Err(KeyFileError::NoEndLine)
    }

    fn from_digits(digits: &[u8]) -> Result<StaticKey, KeyFileError> {
        if !digits.len().is_multiple_of(2) {
            return Err(KeyFileError::OddDigits);
        }
        if digits.len() != 2 * Self::LEN {
            return Err(KeyFileError::WrongLength(digits.len() / 2));
        }
        let mut key = [0; Self::LEN];
        for (k, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
            *k = (pair[0] << 4) | pair[1];
        }
        Ok(StaticKey(key))
    }

    /// `len` bytes starting at `offset` (both within the 256 bytes).
    fn slice(&self, offset: usize, len: usize) -> &[u8] {
        &self.0[offset..offset + len]
    }
}

/// The value of an ASCII hex digit (checked by the caller).
fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Offsets of the two 64-byte HMAC slots (key[0].hmac, key[1].hmac).
const HMAC_SLOT: [usize; 2] = [64, 192];
/// Offsets of the two 64-byte cipher slots (key[0].cipher, key[1].cipher).
const CIPHER_SLOT: [usize; 2] = [0, 128];

/// Why a packet could not be wrapped or unwrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrapError {
    TooShort,
    HmacMismatch,
    TagMismatch,
    Replay(ReplayError),
    /// The send counter ran out within the same second.
    PacketIdExhausted,
    /// tls-crypt-v2: a packet that must end in the client's wrapped key
    /// (WKc) does not, or ends in another one; or a packet that needs a
    /// client key reached the server's template.
    ClientKey,
}

impl fmt::Display for WrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WrapError::TooShort => f.write_str("packet too short"),
            WrapError::HmacMismatch => f.write_str("HMAC mismatch"),
            WrapError::TagMismatch => f.write_str("tls-crypt tag mismatch"),
            WrapError::Replay(e) => write!(f, "replay: {e}"),
            WrapError::PacketIdExhausted => write!(f, "{PacketIdExhausted}"),
            WrapError::ClientKey => f.write_str("no or another tls-crypt-v2 client key"),
        }
    }
}

impl std::error::Error for WrapError {}

impl From<ReplayError> for WrapError {
    fn from(e: ReplayError) -> Self {
        WrapError::Replay(e)
    }
}

impl From<PacketIdExhausted> for WrapError {
    fn from(_: PacketIdExhausted) -> Self {
        WrapError::PacketIdExhausted
    }
}

/// The keys of one direction of tls-crypt.
#[derive(Clone)]
struct CryptKeys {
    /// AES-256-CTR key (Ke).
    enc: [u8; 32],
    /// HMAC-SHA256 key (Ka).
    auth: hmac::Key,
}

impl CryptKeys {
    /// The keys of record `index` (0 or 1) of `key`.
    fn from_record(key: &StaticKey, index: usize) -> CryptKeys {
        let mut enc = [0; 32];
        enc.copy_from_slice(key.slice(CIPHER_SLOT[index], 32));
        let auth = hmac::Key::new(hmac::HMAC_SHA256, key.slice(HMAC_SLOT[index], 32));
        CryptKeys { enc, auth }
    }

    /// AES-256-CTR with the full 128-bit block as big-endian counter, as
    /// OpenSSL does; encrypting and decrypting are the same operation.
    fn apply_ctr(&self, tag: &[u8], data: &mut [u8]) {
        let iv: [u8; 16] = tag[..16].try_into().unwrap_or_default();
        let mut cipher = ctr::Ctr128BE::<aes::Aes256>::new(&self.enc.into(), &iv.into());
        cipher.apply_keystream(data);
    }
}

/// The wrapping; under tls-crypt-v2 the server's template holds the
/// server key and wraps nothing itself: each client's wrapper (tls-crypt
/// with its Kc) comes from [`Wrapper::with_client_key`].
#[derive(Clone)]
enum Mode {
    None,
    TlsAuth { send: hmac::Key, recv: hmac::Key, len: usize },
    TlsCrypt { send: CryptKeys, recv: CryptKeys },
    TlsCryptV2Server(Arc<ServerKey>),
}

/// One side's control-channel wrapping, with its replay state.
#[derive(Clone)]
pub struct Wrapper {
    mode: Mode,
    send: PacketIdSend,
    recv: ReplayWindow,
    /// tls-crypt-v2: the client's wrapped key, which its
    /// HARD_RESET_CLIENT_V3 and CONTROL_WKC_V1 packets end in.
    wkc: Option<Arc<[u8]>>,
}

impl fmt::Debug for Wrapper {
    /// Shows the mode and counters, never keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::None => "none",
            Mode::TlsAuth { .. } => "tls-auth",
            Mode::TlsCrypt { .. } if self.wkc.is_some() => "tls-crypt-v2 client",
            Mode::TlsCrypt { .. } => "tls-crypt",
            Mode::TlsCryptV2Server(_) => "tls-crypt-v2 server",
        };
        f.debug_struct("Wrapper").field("mode", &mode).field("send", &self.send).field("recv", &self.recv).finish()
    }
}

/// A verified packet: first byte, sender session id, body, replay id and time.
pub type Verified = (u8, SessionId, Vec<u8>, u32, u32);

impl Wrapper {
    fn with_mode(mode: Mode) -> Wrapper {
        Wrapper { mode, send: PacketIdSend::new(), recv: ReplayWindow::new(), wkc: None }
    }

    /// No wrapping: packets are sent as they are and nothing is checked.
    pub fn none() -> Wrapper {
        Self::with_mode(Mode::None)
    }

    /// tls-auth with this side's `key-direction` (§3.2): 0 sends with
    /// key[0] and receives with key[1], 1 the inverse, none uses key[0]
    /// both ways. The HMAC key is the first L bytes of the hmac slot.
    pub fn tls_auth(key: &StaticKey, direction: Option<u8>, digest: Digest) -> Wrapper {
        let (send_slot, recv_slot) = match direction {
            Some(0) => (0, 1),
            Some(_) => (1, 0),
            None => (0, 0),
        };
        let algorithm = match digest {
            Digest::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => hmac::HMAC_SHA256,
            Digest::Sha512 => hmac::HMAC_SHA512,
        };
        let len = digest.output_len();
        let slot = |i: usize| hmac::Key::new(algorithm, key.slice(HMAC_SLOT[i], len));
        Self::with_mode(Mode::TlsAuth { send: slot(send_slot), recv: slot(recv_slot), len })
    }

    /// tls-crypt (§4.1): the direction is fixed by the role, the server
    /// sends with record 0 and receives with record 1.
    pub fn tls_crypt(key: &StaticKey, server: bool) -> Wrapper {
        let (send, recv) = if server { (0, 1) } else { (1, 0) };
        Self::with_mode(Mode::TlsCrypt {
            send: CryptKeys::from_record(key, send),
            recv: CryptKeys::from_record(key, recv),
        })
    }

    /// The server's template under tls-crypt-v2 (§4.2).
    pub fn tls_crypt_v2_server(key: ServerKey) -> Wrapper {
        Self::with_mode(Mode::TlsCryptV2Server(Arc::new(key)))
    }

    /// The wrapper of the client whose wrapped key is `wkc`: tls-crypt
    /// with the Kc that the server key unwraps, fresh counters. Also how a
    /// new master rebuilds it from a session record.
    pub fn with_client_key(&self, wkc: &[u8]) -> Result<Wrapper, KeyError> {
        let Mode::TlsCryptV2Server(server) = &self.mode else {
            return Err(KeyError::NotConfigured);
        };
        let client = server.unwrap_client_key(wkc)?;
        Ok(Wrapper { wkc: Some(wkc.into()), ..Self::tls_crypt(&client.kc, true) })
    }

    /// The wrapper for the client whose HARD_RESET_CLIENT_V3 or
    /// CONTROL_WKC_V1 is `packet` (its WKc split off the end and unwrapped).
    pub fn for_v3_reset(&self, packet: &[u8]) -> Result<Wrapper, KeyError> {
        let (_, wkc) = tlscryptv2::split_wkc(packet)?;
        self.with_client_key(wkc)
    }

    /// tls-crypt-v2: the client's wrapped key, for its session record.
    pub fn wkc(&self) -> Option<&[u8]> {
        self.wkc.as_deref()
    }

    /// Whether this is the server's tls-crypt-v2 template.
    pub fn is_tls_crypt_v2_server(&self) -> bool {
        matches!(self.mode, Mode::TlsCryptV2Server(_))
    }

    /// Whether packets are authenticated (tls-auth or tls-crypt), and so
    /// carry a replay id and time worth checking.
    pub fn authenticates(&self) -> bool {
        !matches!(self.mode, Mode::None)
    }

    /// A secret for another purpose, the same on every member holding
    /// this key: the HMAC of `label` under the receiving key. `None`
    /// without wrapping.
    pub fn derive_secret(&self, label: &[u8]) -> Option<hmac::Tag> {
        match &self.mode {
            Mode::None => None,
            Mode::TlsAuth { recv, .. } => Some(hmac::sign(recv, label)),
            Mode::TlsCrypt { recv, .. } => Some(hmac::sign(&recv.auth, label)),
            // Each client has its own key; the server key is the cluster's.
            Mode::TlsCryptV2Server(server) => Some(server.derive_secret(label)),
        }
    }

    /// Bytes the wrapping adds to a packet.
    pub fn overhead(&self) -> usize {
        match &self.mode {
            Mode::None => 0,
            Mode::TlsAuth { len, .. } => len + REPLAY_ID_LEN,
            Mode::TlsCrypt { .. } | Mode::TlsCryptV2Server(_) => REPLAY_ID_LEN + TAG_LEN,
        }
    }

    /// Builds the wire packet for `body` (what follows the session id in the
    /// logical packet), taking a fresh replay id; `now` is Unix seconds.
    pub fn wrap(
        &mut self,
        first_byte: u8,
        session_id: &SessionId,
        body: &[u8],
        now: u32,
    ) -> Result<Vec<u8>, WrapError> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.overhead() + body.len());
        out.push(first_byte);
        out.extend_from_slice(session_id);
        match &self.mode {
            Mode::None => out.extend_from_slice(body),
            Mode::TlsAuth { send, .. } => {
                let replay = next_replay_id(&mut self.send, now)?;
                tls_auth_seal(send, &replay, body, &mut out);
            }
            Mode::TlsCrypt { send, .. } => {
                let replay = next_replay_id(&mut self.send, now)?;
                tls_crypt_seal(send, &replay, body, &mut out);
            }
            Mode::TlsCryptV2Server(_) => return Err(WrapError::ClientKey),
        }
        Ok(out)
    }

    /// Authenticates and replay-checks `packet`, recording its replay id;
    /// returns the first byte, the sender's session id and the body.
    pub fn unwrap(&mut self, packet: &[u8]) -> Result<(u8, SessionId, Vec<u8>), WrapError> {
        let (first, sid, body, id, time) = self.verify_only(packet)?;
        self.record_replay(id, time)?;
        Ok((first, sid, body))
    }

    /// Authenticates `packet` without looking at or changing the replay
    /// state. Without wrapping the replay id and time are 0.
    pub fn verify_only(&self, packet: &[u8]) -> Result<Verified, WrapError> {
        let packet = self.strip_wkc(packet)?;
        if packet.len() < HEADER_LEN + self.overhead() {
            return Err(WrapError::TooShort);
        }
        let (header, rest) = packet.split_at(HEADER_LEN);
        let first = header[0];
        let sid: SessionId = header[1..].try_into().unwrap_or_default();
        let (body, id, time) = match &self.mode {
            Mode::None => (rest.to_vec(), 0, 0),
            Mode::TlsAuth { recv, len, .. } => tls_auth_open(recv, *len, header, rest)?,
            Mode::TlsCrypt { recv, .. } => tls_crypt_open(recv, header, rest)?,
            Mode::TlsCryptV2Server(_) => return Err(WrapError::ClientKey),
        };
        Ok((first, sid, body, id, time))
    }

    /// tls-crypt-v2: the packet without the WKc that HARD_RESET_CLIENT_V3
    /// and CONTROL_WKC_V1 end in, which must be this client's own; other
    /// packets, and other modes, as they are.
    fn strip_wkc<'a>(&self, packet: &'a [u8]) -> Result<&'a [u8], WrapError> {
        let Some(own) = &self.wkc else { return Ok(packet) };
        use crate::wire::Opcode;
        let op = packet.first().and_then(|&b| Opcode::from_u8(crate::wire::split_first_byte(b).0));
        if !matches!(op, Some(Opcode::HardResetClientV3 | Opcode::ControlWkcV1)) {
            return Ok(packet);
        }
        match tlscryptv2::split_wkc(packet) {
            Ok((front, wkc)) if wkc == &own[..] => Ok(front),
            _ => Err(WrapError::ClientKey),
        }
    }

    /// Records the replay id of a packet that [`Wrapper::verify_only`]
    /// accepted. Without wrapping there is nothing to record.
    pub fn record_replay(&mut self, id: u32, time: u32) -> Result<(), WrapError> {
        if matches!(self.mode, Mode::None) {
            return Ok(());
        }
        Ok(self.recv.accept(id, time)?)
    }

    /// `(last id sent, time)` of the send counter, for a backup server.
    pub fn send_state(&self) -> (u32, u32) {
        self.send.parts()
    }

    /// Continues sending after `id` with `time`, as in a sync record.
    pub fn set_send_state(&mut self, id: u32, time: u32) {
        self.send = PacketIdSend::from_parts(id, time);
    }

    /// `(time, highest id, seen bitmap)` of the receive window.
    pub fn recv_state(&self) -> (u32, u32, u64) {
        self.recv.parts()
    }

    /// Continues after a replicated `(id, time)` if it is ahead of ours
    /// (a stale report never moves the counter back).
    pub fn advance_send_state(&mut self, id: u32, time: u32) {
        let (i, t) = self.send.parts();
        if (time, id) > (t, i) {
            self.send = PacketIdSend::from_parts(id, time);
        }
    }

    /// Takes a replicated receive window if it is ahead of ours.
    pub fn merge_recv_state(&mut self, (time, highest, seen): (u32, u32, u64)) {
        let (t, h, _) = self.recv.parts();
        if (time, highest) > (t, h) {
            self.recv = ReplayWindow::from_parts(time, highest, seen);
        }
    }
}

/// The next long-form replay id of `send`, as wire bytes.
fn next_replay_id(send: &mut PacketIdSend, now: u32) -> Result<[u8; REPLAY_ID_LEN], WrapError> {
    let (id, time) = send.next_long(now)?;
    let mut bytes = [0; REPLAY_ID_LEN];
    bytes[..4].copy_from_slice(&id.to_be_bytes());
    bytes[4..].copy_from_slice(&time.to_be_bytes());
    Ok(bytes)
}

/// Appends `HMAC | replay id | body` (the header is already in `out`); the
/// HMAC covers the replay id first, then the header and body (§3.4).
fn tls_auth_seal(key: &hmac::Key, replay: &[u8; REPLAY_ID_LEN], body: &[u8], out: &mut Vec<u8>) {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(replay);
    ctx.update(out);
    ctx.update(body);
    out.extend_from_slice(ctx.sign().as_ref());
    out.extend_from_slice(replay);
    out.extend_from_slice(body);
}

/// Verifies `rest` = `HMAC | replay id | body`; returns body, id and time.
fn tls_auth_open(key: &hmac::Key, len: usize, header: &[u8], rest: &[u8]) -> Result<(Vec<u8>, u32, u32), WrapError> {
    let (tag, rest) = rest.split_at(len);
    let (replay, body) = rest.split_at(REPLAY_ID_LEN);
    let mut input = Vec::with_capacity(REPLAY_ID_LEN + HEADER_LEN + body.len());
    input.extend_from_slice(replay);
    input.extend_from_slice(header);
    input.extend_from_slice(body);
    hmac::verify(key, &input, tag).map_err(|_| WrapError::HmacMismatch)?;
    let (id, time) = split_replay_id(replay);
    Ok((body.to_vec(), id, time))
}

/// Appends `replay id | tag | ciphertext`, the tag computed over the
/// header, replay id and plaintext (§4.1).
fn tls_crypt_seal(keys: &CryptKeys, replay: &[u8; REPLAY_ID_LEN], body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(replay);
    let mut ctx = hmac::Context::with_key(&keys.auth);
    ctx.update(out);
    ctx.update(body);
    let tag = ctx.sign();
    out.extend_from_slice(tag.as_ref());
    let start = out.len();
    out.extend_from_slice(body);
    keys.apply_ctr(tag.as_ref(), &mut out[start..]);
}

/// Decrypts and verifies `rest` = `replay id | tag | ciphertext`; returns
/// the plaintext body, id and time.
fn tls_crypt_open(keys: &CryptKeys, header: &[u8], rest: &[u8]) -> Result<(Vec<u8>, u32, u32), WrapError> {
    let (replay, rest) = rest.split_at(REPLAY_ID_LEN);
    let (tag, ciphertext) = rest.split_at(TAG_LEN);
    let authenticated = HEADER_LEN + REPLAY_ID_LEN;
    let mut buf = Vec::with_capacity(authenticated + ciphertext.len());
    buf.extend_from_slice(header);
    buf.extend_from_slice(replay);
    buf.extend_from_slice(ciphertext);
    keys.apply_ctr(tag, &mut buf[authenticated..]);
    hmac::verify(&keys.auth, &buf, tag).map_err(|_| WrapError::TagMismatch)?;
    let (id, time) = split_replay_id(replay);
    Ok((buf.split_off(authenticated), id, time))
}

/// `(id, time)` of an 8-byte long-form replay id.
fn split_replay_id(replay: &[u8]) -> (u32, u32) {
    let word = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap_or_default());
    (word(&replay[..4]), word(&replay[4..8]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ControlBody, ControlPacket, Opcode};
    use ::hmac::{Hmac, KeyInit, Mac};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Lab time of §21.1, the replay time of all three captured packets.
    const LAB_TIME: u32 = 0x6b05_e786;
    const CLIENT_RESET: &str = "38 768d5287c2fbc367 b36be015484d327f91bb3648893e2998130168a2
                                000000016b05e786 00 00000000";
    const SERVER_RESET: &str = "40 8d7d591cf5e1c46b 83913fa6ae5562ae0123995704f66d41ea08832f
                                00000001 6b05e786 01 00000000 768d5287c2fbc367 00000000";
    const CLIENT_ACK: &str = "28 768d5287c2fbc367 dc737a02a52cf30602f404f5429dab7879ccc5f8
                              00000003 6b05e786 02 00000001 00000000 8d7d591cf5e1c46b";

    /// The §21.1 lab key: only the first 20 bytes of both HMAC slots are
    /// known, the rest is filler that SHA1 tls-auth never reads.
    ///
    /// The captures decide the direction: the client's packets verify with
    /// bytes 192..211 and the server's with bytes 64..83 (checked with
    /// `openssl dgst -sha1 -mac HMAC`), which matches the §3.2 table (server
    /// `key-direction 0` sends with key[0], receives with key[1]). The
    /// sentences of §3.2/§21.1 that call bytes 64.. the client-to-server key
    /// contradict the captures.
    fn lab_key() -> StaticKey {
        let mut key = [0x5a; 256];
        key[64..84].copy_from_slice(&hex("11a8a1bca1ee86bd937bc620d72b29565e0ca8e7"));
        key[192..212].copy_from_slice(&hex("73a1fce2539ab33f15b402ab323ca2ef60771d8c"));
        StaticKey(key)
    }

    fn numbered_key() -> StaticKey {
        StaticKey(std::array::from_fn(|i| i as u8))
    }

    #[test]
    fn lab_tls_auth_server_side() {
        let mut server = Wrapper::tls_auth(&lab_key(), Some(0), Digest::Sha1);
        let (first, sid, body) = server.unwrap(&hex(CLIENT_RESET)).unwrap();
        assert_eq!(first, 0x38);
        assert_eq!(sid, hex("768d5287c2fbc367")[..]);
        assert_eq!(body, hex("00 00000000"));
        let (first, _, body) = server.unwrap(&hex(CLIENT_ACK)).unwrap();
        assert_eq!(first, 0x28);
        assert_eq!(body, hex("02 00000001 00000000 8d7d591cf5e1c46b"));
        assert_eq!(server.recv_state(), (LAB_TIME, 3, 0b101));

        // The server's own reset comes out byte for byte.
        let reset = ControlPacket::parse(&hex("40 8d7d591cf5e1c46b 01 00000000 768d5287c2fbc367 00000000")).unwrap();
        let wire = server.wrap(reset.first_byte(), &reset.session_id, &reset.body.to_bytes(), LAB_TIME).unwrap();
        assert_eq!(wire, hex(SERVER_RESET));
    }

    #[test]
    fn lab_tls_auth_client_side() {
        let mut client = Wrapper::tls_auth(&lab_key(), Some(1), Digest::Sha1);
        let (first, sid, body) = client.unwrap(&hex(SERVER_RESET)).unwrap();
        assert_eq!(first, 0x40);
        assert_eq!(sid, hex("8d7d591cf5e1c46b")[..]);
        let body = ControlBody::parse(Opcode::HardResetServerV2, &body).unwrap();
        assert_eq!(body.acks, vec![0]);

        let sid: SessionId = hex("768d5287c2fbc367").try_into().unwrap();
        let reset = client.wrap(0x38, &sid, &hex("00 00000000"), LAB_TIME).unwrap();
        assert_eq!(reset, hex(CLIENT_RESET));
        // The capture's ACK carried replay id 3: id 2 went to the ClientHello.
        let ack_body = hex("02 00000001 00000000 8d7d591cf5e1c46b");
        client.wrap(0x20, &sid, b"hello", LAB_TIME).unwrap();
        let ack = client.wrap(0x28, &sid, &ack_body, LAB_TIME + 9).unwrap();
        assert_eq!(ack, hex(CLIENT_ACK), "time stays at its first use");
    }

    #[test]
    fn lab_packets_fail_with_the_other_direction() {
        let mut wrong = Wrapper::tls_auth(&lab_key(), Some(1), Digest::Sha1);
        assert_eq!(wrong.unwrap(&hex(CLIENT_RESET)), Err(WrapError::HmacMismatch));
        let mut bidir = Wrapper::tls_auth(&lab_key(), None, Digest::Sha1);
        assert_eq!(bidir.unwrap(&hex(CLIENT_RESET)), Err(WrapError::HmacMismatch));
    }

    /// tls-crypt known answer, computed with the OpenSSL 3 command line
    /// (key = bytes 0, 1, .., 255; the server sends with Ke = bytes 0..32,
    /// Ka = bytes 64..96):
    ///
    /// ```text
    /// echo -n "$HDR$PT" | xxd -r -p | openssl dgst -sha256 -mac HMAC -macopt hexkey:$KA
    /// echo -n "$PT" | xxd -r -p | openssl enc -aes-256-ctr -K $KE -iv ${TAG:0:32} | xxd -p
    /// ```
    /// with HDR = first byte, session id and replay id, PT = the body.
    #[test]
    fn tls_crypt_known_answer() {
        let sid = [1, 2, 3, 4, 5, 6, 7, 8];
        let body = hex("01 00000000 1112131415161718 00000001 68656c6c6f2066726f6d20746c732d6372797074");
        let expected = hex("20 0102030405060708 00000001 6b05e786
             2350dedef615b0f4255aed505f3e7ceac22a1624b940458fe4a2238eabefeb9e
             4ead59c3987b1d089c97b89da4937977ad6ac72eb7c56dbf87b875cac9c83f75f0895f3af1");
        let mut server = Wrapper::tls_crypt(&numbered_key(), true);
        let wire = server.wrap(0x20, &sid, &body, LAB_TIME).unwrap();
        assert_eq!(wire, expected);
        assert_eq!(wire.len(), 9 + server.overhead() + body.len());
        let mut client = Wrapper::tls_crypt(&numbered_key(), false);
        assert_eq!(client.unwrap(&wire), Ok((0x20, sid, body)));
        // The server does not accept its own direction.
        assert_eq!(server.unwrap(&wire), Err(WrapError::TagMismatch));
    }

    /// tls-auth HMAC through the `hmac` crate, independent of the ring code
    /// under test: HMAC(replay id || header || body) with the first L bytes
    /// of the slot.
    fn reference_tls_auth(digest: Digest, slot: &[u8], replay: &[u8], header: &[u8], body: &[u8]) -> Vec<u8> {
        fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut m = <M as KeyInit>::new_from_slice(key).unwrap();
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        let key = &slot[..digest.output_len()];
        let parts = [replay, header, body];
        let tag = match digest {
            Digest::Sha1 => mac::<Hmac<sha1::Sha1>>(key, &parts),
            Digest::Sha256 => mac::<Hmac<sha2::Sha256>>(key, &parts),
            Digest::Sha512 => mac::<Hmac<sha2::Sha512>>(key, &parts),
        };
        [header, &tag, replay, body].concat()
    }

    #[test]
    fn tls_auth_matches_reference_hmac() {
        let key = numbered_key();
        let sid = [9; 8];
        let body = b"\x00\x00\x00\x00\x07 payload";
        for digest in Digest::ALL {
            let mut server = Wrapper::tls_auth(&key, Some(0), digest);
            let wire = server.wrap(0x40, &sid, body, 77).unwrap();
            let replay = hex("00000001 0000004d");
            let header = [&[0x40u8][..], &sid].concat();
            assert_eq!(wire, reference_tls_auth(digest, &key.0[64..128], &replay, &header, body));
            assert_eq!(server.overhead(), digest.output_len() + 8);

            // Id 0 with a valid HMAC is still refused, and leaves no trace.
            let mut client = Wrapper::tls_auth(&key, Some(1), digest);
            let zero = reference_tls_auth(digest, &key.0[64..128], &hex("00000000 0000004d"), &header, body);
            assert_eq!(client.unwrap(&zero), Err(WrapError::Replay(ReplayError::Zero)));
            assert_eq!(client.recv_state(), (0, 0, 0));
            client.unwrap(&wire).unwrap();
        }
    }

    /// Server and client wrappers that talk to each other.
    fn pairs() -> Vec<(&'static str, Wrapper, Wrapper)> {
        let key = numbered_key();
        let mut out = vec![("tls-crypt", Wrapper::tls_crypt(&key, true), Wrapper::tls_crypt(&key, false))];
        for digest in Digest::ALL {
            for (s, c) in [(Some(0), Some(1)), (Some(1), Some(0)), (None, None)] {
                out.push((digest.name(), Wrapper::tls_auth(&key, s, digest), Wrapper::tls_auth(&key, c, digest)));
            }
        }
        out
    }

    #[test]
    fn round_trips_both_ways() {
        let sid = [0xab; 8];
        for (name, mut server, mut client) in pairs() {
            for n in 0..40u8 {
                let body: Vec<u8> = (0..n).collect();
                let wire = server.wrap(0x20, &sid, &body, 1000).unwrap();
                assert_eq!(client.unwrap(&wire), Ok((0x20, sid, body.clone())), "{name}");
                let wire = client.wrap(0x21, &sid, &body, 2000).unwrap();
                assert_eq!(server.unwrap(&wire), Ok((0x21, sid, body)), "{name}");
            }
            assert_eq!(server.send_state(), (40, 1000), "{name}");
            assert_eq!(client.recv_state().1, 40, "{name}");
        }
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        for (name, mut server, client) in pairs() {
            let wire = server.wrap(0x20, &[3; 8], b"\x00\x00\x00\x00\x05tls", 1).unwrap();
            for bit in 0..wire.len() * 8 {
                let mut bad = wire.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let err = client.verify_only(&bad).unwrap_err();
                assert!(matches!(err, WrapError::HmacMismatch | WrapError::TagMismatch), "{name} bit {bit}: {err}");
            }
            client.verify_only(&wire).unwrap();
        }
    }

    #[test]
    fn replays_and_wrong_keys_are_rejected() {
        let mut other = numbered_key();
        other.0[70] ^= 1;
        other.0[200] ^= 1;
        other.0[5] ^= 1;
        for (name, mut server, mut client) in pairs() {
            let wire = server.wrap(0x20, &[3; 8], b"body", 1).unwrap();
            let mut copy = client.clone();
            client.unwrap(&wire).unwrap();
            assert_eq!(client.unwrap(&wire), Err(WrapError::Replay(ReplayError::Duplicate)), "{name}");
            // A clone taken before keeps its own window.
            copy.unwrap(&wire).unwrap();
        }
        let wrong_auth = Wrapper::tls_auth(&other, Some(1), Digest::Sha256);
        let wrong_crypt = Wrapper::tls_crypt(&other, false);
        let mut auth = Wrapper::tls_auth(&numbered_key(), Some(0), Digest::Sha256);
        let mut crypt = Wrapper::tls_crypt(&numbered_key(), true);
        let wire = auth.wrap(0x20, &[3; 8], b"body", 1).unwrap();
        assert_eq!(wrong_auth.verify_only(&wire), Err(WrapError::HmacMismatch));
        let wire = crypt.wrap(0x20, &[3; 8], b"body", 1).unwrap();
        assert_eq!(wrong_crypt.verify_only(&wire), Err(WrapError::TagMismatch));
    }

    #[test]
    fn verify_only_leaves_the_window_alone() {
        for (name, mut server, mut client) in pairs() {
            let wire = server.wrap(0x38, &[1; 8], b"\x00\x00\x00\x00\x00", 50).unwrap();
            let (first, sid, body, id, time) = client.verify_only(&wire).unwrap();
            assert_eq!((first, sid, id, time), (0x38, [1; 8], 1, 50), "{name}");
            assert_eq!(body, b"\x00\x00\x00\x00\x00");
            assert_eq!(client.recv_state(), (0, 0, 0));
            client.record_replay(id, time).unwrap();
            assert_eq!(client.record_replay(id, time), Err(WrapError::Replay(ReplayError::Duplicate)));
        }
    }

    #[test]
    fn short_packets() {
        for (name, server, _) in pairs() {
            let need = 9 + server.overhead();
            for len in 0..need {
                let mut w = server.clone();
                assert_eq!(w.unwrap(&vec![0x20; len]), Err(WrapError::TooShort), "{name} {len}");
            }
        }
        let mut none = Wrapper::none();
        assert_eq!(none.unwrap(&[0x38; 8]), Err(WrapError::TooShort));
    }

    #[test]
    fn no_wrapping() {
        let mut w = Wrapper::none();
        assert_eq!(w.overhead(), 0);
        let wire = w.wrap(0x38, &[7; 8], b"\x00\x00\x00\x00\x00", 5).unwrap();
        assert_eq!(wire, [&[0x38u8][..], &[7; 8], b"\x00\x00\x00\x00\x00"].concat());
        // Nothing to replay-check: the same packet passes twice.
        assert_eq!(w.unwrap(&wire), Ok((0x38, [7; 8], b"\x00\x00\x00\x00\x00".to_vec())));
        assert!(w.unwrap(&wire).is_ok());
        assert_eq!(w.send_state(), (0, 0));
    }

    #[test]
    fn backup_continues_from_synced_state() {
        let key = numbered_key();
        let mut master = Wrapper::tls_auth(&key, Some(0), Digest::Sha1);
        let mut client = Wrapper::tls_auth(&key, Some(1), Digest::Sha1);
        for _ in 0..3 {
            let w = client.wrap(0x20, &[2; 8], b"x", 10).unwrap();
            master.unwrap(&w).unwrap();
            let w = master.wrap(0x20, &[1; 8], b"y", 11).unwrap();
            client.unwrap(&w).unwrap();
        }
        let seen_by_master = client.wrap(0x20, &[2; 8], b"z", 10).unwrap();
        master.unwrap(&seen_by_master).unwrap();

        let mut backup = Wrapper::tls_auth(&key, Some(0), Digest::Sha1);
        let (id, time) = master.send_state();
        backup.set_send_state(id, time);
        let (t, h, s) = master.recv_state();
        backup.merge_recv_state((t, h, s));
        assert_eq!(backup.unwrap(&seen_by_master), Err(WrapError::Replay(ReplayError::Duplicate)));
        let w = backup.wrap(0x20, &[1; 8], b"from backup", 99).unwrap();
        assert_eq!(&w[29..37], &hex("00000004 0000000b")[..], "id 4, master's time");
        client.unwrap(&w).unwrap();
    }

    #[test]
    fn exhausted_send_counter() {
        let mut w = Wrapper::tls_crypt(&numbered_key(), true);
        w.set_send_state(u32::MAX, 10);
        assert_eq!(w.wrap(0x20, &[1; 8], b"", 10), Err(WrapError::PacketIdExhausted));
        assert!(w.wrap(0x20, &[1; 8], b"", 11).is_ok(), "rolls over once time moved");
    }

    const KEY_FILE: &str = "#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN OpenVPN Static key V1-----\n";

    fn key_file(lines: &[String]) -> String {
        format!("{KEY_FILE}{}\n-----END OpenVPN Static key V1-----\n", lines.join("\n"))
    }

    fn hex_lines(key: &StaticKey) -> Vec<String> {
        key.0.chunks(16).map(|c| c.iter().map(|b| format!("{b:02x}")).collect()).collect()
    }

    #[test]
    fn static_key_file() {
        let key = numbered_key();
        let text = key_file(&hex_lines(&key));
        assert_eq!(StaticKey::parse(text.as_bytes()), Ok(key.clone()));
        // CRLF, upper case and digit pairs split across lines are fine.
        let odd = format!("junk\r\n{}", key_file(&hex_lines(&key)).replace('\n', "\r\n"))
            .to_uppercase()
            .replace("BEGIN OPENVPN STATIC KEY V1", "BEGIN OpenVPN Static key V1")
            .replace("END OPENVPN STATIC KEY V1", "END OpenVPN Static key V1")
            .replacen("0001", "0\n 001", 1);
        assert_eq!(StaticKey::parse(odd.as_bytes()), Ok(key));
    }

    #[test]
    fn static_key_file_errors() {
        let lines = hex_lines(&numbered_key());
        let no_begin = key_file(&lines).replace("BEGIN", "BEGINN");
        assert_eq!(StaticKey::parse(no_begin.as_bytes()), Err(KeyFileError::NoBeginLine));
        let no_end = key_file(&lines).replace("-----END OpenVPN Static key V1-----", "");
        assert_eq!(StaticKey::parse(no_end.as_bytes()), Err(KeyFileError::NoEndLine));
        let mut bad = lines.clone();
        bad[2].replace_range(5..6, "x");
        assert_eq!(StaticKey::parse(key_file(&bad).as_bytes()), Err(KeyFileError::InvalidChar { byte: b'x', line: 7 }));
        assert_eq!(StaticKey::parse(key_file(&lines[..15]).as_bytes()), Err(KeyFileError::WrongLength(240)));
        let mut odd = lines.clone();
        odd[0].push('a');
        assert_eq!(StaticKey::parse(key_file(&odd).as_bytes()), Err(KeyFileError::OddDigits));
        assert_eq!(StaticKey::parse(b""), Err(KeyFileError::NoBeginLine));
        assert_eq!(StaticKey::parse(&[0xff; 300]), Err(KeyFileError::NoBeginLine));
    }

    #[test]
    fn messages_and_debug() {
        assert_eq!(KeyFileError::NoBeginLine.to_string(), "no -----BEGIN OpenVPN Static key V1----- line");
        assert_eq!(KeyFileError::WrongLength(240).to_string(), "key holds 240 bytes, 256 expected");
        assert_eq!(KeyFileError::InvalidChar { byte: b'x', line: 7 }.to_string(), "invalid character 'x' on line 7");
        assert_eq!(
            KeyFileError::InvalidChar { byte: 0xff, line: 1 }.to_string(),
            "invalid character '\\xff' on line 1"
        );
        assert_eq!(WrapError::TooShort.to_string(), "packet too short");
        assert_eq!(WrapError::Replay(ReplayError::Zero).to_string(), "replay: packet id 0");
        let key = StaticKey([0x42; 256]);
        assert_eq!(format!("{key:?}"), "StaticKey(..)");
        let w = format!("{:?}", Wrapper::tls_crypt(&key, true));
        assert!(w.contains("tls-crypt") && !w.contains("42") && !w.contains("66"), "{w}");
    }
}
