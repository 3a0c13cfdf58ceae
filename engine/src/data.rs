//! The data channel of one key state (protocol reference §13): packet
//! framing, AEAD (§13.2) and CBC+HMAC (§13.3) protection, and the
//! per-direction packet ids with replay protection (§13.4).
//!
//! The data path allocates nothing and copies nothing here:
//! [`DataKey::encrypt_with`] builds the wire packet around a payload the
//! caller writes where it is encrypted in place, and [`DataKey::decrypt`]
//! works in place and returns the payload as a subslice of the packet.

use std::fmt;
use std::sync::Arc;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use aes::Aes256;
use hmac::{Hmac, Mac};
use ring::aead::{self, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use vpnsyncd_config::{Cipher, Digest};

use crate::packet_id::{PacketIdExhausted, PacketIdSend, ReplayError, ReplayWindow};
use crate::sendspace::SendSpace;

/// Opcode of P_DATA_V1 (one header byte).
const P_DATA_V1: u8 = 6;
/// Opcode of P_DATA_V2 (header byte plus a 24-bit peer-id).
const P_DATA_V2: u8 = 9;
/// Length of the short-form packet id.
const PID_LEN: usize = 4;
/// AEAD tag length of all three AEAD ciphers.
const TAG_LEN: usize = 16;
/// AES block size: the CBC IV length and the padding granularity.
const BLOCK: usize = 16;
/// Length of the implicit part of the AEAD nonce (§10.1).
const IMPLICIT_IV_LEN: usize = 8;
/// Larger payloads cannot come from a UDP datagram or a TUN read.
const MAX_PAYLOAD: usize = 65535;

/// The keepalive payload (§13.7); never written to TUN.
pub const PING: [u8; 16] =
    [0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48];
/// Prefix of OCC messages on the data channel (§13.8).
pub const OCC_MAGIC: [u8; 16] =
    [0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81, 0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c];
/// OCC opcode of the client's explicit-exit notification.
pub const OCC_EXIT: u8 = 6;

/// What a decrypted (and decompressed) payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Keepalive: consume.
    Ping,
    /// The client is leaving: drop it.
    OccExit,
    /// Another OCC message: consume (answering is optional).
    Occ,
    /// A packet for the TUN device.
    Ip,
}

/// Sorts a payload into the kinds the server treats differently.
pub fn classify(payload: &[u8]) -> Payload {
    if payload == PING {
        return Payload::Ping;
    }
    match payload.strip_prefix(&OCC_MAGIC[..]) {
        Some([OCC_EXIT, ..]) => Payload::OccExit,
        Some(_) => Payload::Occ,
        None => Payload::Ip,
    }
}

/// Why a data packet could not be built or was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataError {
    /// The packet is shorter than its header, packet id and tag/HMAC/IV.
    Truncated,
    /// The first byte is not P_DATA_V1 or P_DATA_V2.
    WrongOpcode,
    /// AEAD tag verification failed.
    BadTag,
    /// CBC HMAC verification failed.
    BadHmac,
    /// Authenticated, but the CBC padding or length is malformed.
    BadPadding,
    /// Authenticated, but the packet id was refused.
    Replay(ReplayError),
    /// The output buffer cannot hold the packet.
    BufferTooSmall,
    /// The payload is larger than any datagram.
    TooLarge,
    /// The send counter would wrap: the key must be renegotiated.
    Exhausted,
    /// The OS random source failed (CBC IV).
    Random,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Truncated => f.write_str("data packet truncated"),
            DataError::WrongOpcode => f.write_str("not a data packet"),
            DataError::BadTag => f.write_str("AEAD tag mismatch"),
            DataError::BadHmac => f.write_str("HMAC mismatch"),
            DataError::BadPadding => f.write_str("bad CBC padding"),
            DataError::Replay(e) => write!(f, "bad packet id: {e}"),
            DataError::BufferTooSmall => f.write_str("output buffer too small"),
            DataError::TooLarge => f.write_str("payload too large"),
            DataError::Exhausted => PacketIdExhausted.fmt(f),
            DataError::Random => f.write_str("random source failed"),
        }
    }
}

impl std::error::Error for DataError {}

impl From<PacketIdExhausted> for DataError {
    fn from(_: PacketIdExhausted) -> Self {
        DataError::Exhausted
    }
}

/// The opcode header of a data packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub key_id: u8,
    /// `Some`: P_DATA_V2 with this 24-bit peer-id (higher bits are dropped);
    /// `None`: P_DATA_V1.
    pub peer_id: Option<u32>,
}

impl DataHeader {
    fn len(self) -> usize {
        header_len(self.peer_id.is_some())
    }

    /// Writes the header to the start of `out`, which holds at least `len()`.
    fn write(self, out: &mut [u8]) {
        let key_id = self.key_id & 0x07;
        match self.peer_id {
            Some(peer) => {
                let word = (u32::from(P_DATA_V2) << 27) | (u32::from(key_id) << 24) | peer & 0xFF_FFFF;
                out[..4].copy_from_slice(&word.to_be_bytes());
            }
            None => out[0] = (P_DATA_V1 << 3) | key_id,
        }
    }
}

fn header_len(v2: bool) -> usize {
    if v2 {
        4
    } else {
        1
    }
}

/// Length of the header of a received packet, from its opcode.
fn parse_header_len(packet: &[u8]) -> Result<usize, DataError> {
    let first = packet.first().ok_or(DataError::Truncated)?;
    let len = match first >> 3 {
        P_DATA_V1 => 1,
        P_DATA_V2 => 4,
        _ => return Err(DataError::WrongOpcode),
    };
    if packet.len() < len {
        return Err(DataError::Truncated);
    }
    Ok(len)
}

/// One direction's HMAC key, keyed once so packets only clone the state.
#[derive(Clone)]
enum HmacKey {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

impl HmacKey {
    /// `key` is the direction's 64-byte HMAC slot; the digest length is used.
    fn new(digest: Digest, slot: &[u8]) -> HmacKey {
        let key = &slot[..digest.output_len()];
        let err = "HMAC accepts any key length";
        match digest {
            Digest::Sha1 => HmacKey::Sha1(KeyInit::new_from_slice(key).expect(err)),
            Digest::Sha256 => HmacKey::Sha256(KeyInit::new_from_slice(key).expect(err)),
            Digest::Sha512 => HmacKey::Sha512(KeyInit::new_from_slice(key).expect(err)),
        }
    }

    /// Writes the HMAC of `data` into `out` (exactly the digest length).
    fn sign(&self, data: &[u8], out: &mut [u8]) {
        fn run<M: Mac + Clone>(m: &M, data: &[u8], out: &mut [u8]) {
            let mut m = m.clone();
            m.update(data);
            out.copy_from_slice(&m.finalize().into_bytes());
        }
        match self {
            HmacKey::Sha1(m) => run(m, data, out),
            HmacKey::Sha256(m) => run(m, data, out),
            HmacKey::Sha512(m) => run(m, data, out),
        }
    }

    /// Constant-time comparison of `tag` with the HMAC of `data`.
    fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        fn run<M: Mac + Clone>(m: &M, data: &[u8], tag: &[u8]) -> bool {
            let mut m = m.clone();
            m.update(data);
            m.verify_slice(tag).is_ok()
        }
        match self {
            HmacKey::Sha1(m) => run(m, data, tag),
            HmacKey::Sha256(m) => run(m, data, tag),
            HmacKey::Sha512(m) => run(m, data, tag),
        }
    }
}

/// The keys of one direction. Two exist per key state and they are built
/// once, so the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum DirKey {
    Aead {
        key: LessSafeKey,
        implicit_iv: [u8; IMPLICIT_IV_LEN],
    },
    Cbc {
        /// Boxed: the expanded AES key dwarfs the AEAD variant.
        aes: Box<Aes256>,
        hmac: HmacKey,
    },
}

impl DirKey {
    /// Builds a direction from its 128-byte record `cipher[64] || hmac[64]`
    /// (§10).
    fn new(cipher: Cipher, auth: Digest, record: &[u8]) -> DirKey {
        let (cipher_slot, hmac_slot) = record.split_at(64);
        let algorithm = match cipher {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
            Cipher::Aes256Cbc => {
                return DirKey::Cbc {
                    aes: Box::new(Aes256::new_from_slice(&cipher_slot[..32]).expect("AES-256 key is 32 bytes")),
                    hmac: HmacKey::new(auth, hmac_slot),
                }
            }
        };
        let unbound =
            UnboundKey::new(algorithm, &cipher_slot[..algorithm.key_len()]).expect("key length matches the algorithm");
        let mut implicit_iv = [0; IMPLICIT_IV_LEN];
        implicit_iv.copy_from_slice(&hmac_slot[..IMPLICIT_IV_LEN]);
        DirKey::Aead { key: LessSafeKey::new(unbound), implicit_iv }
    }
}

/// The data-channel state of one key state: both directions' keys, the send
/// counter and the receive replay window.
pub struct DataKey {
    cipher: Cipher,
    auth: Digest,
    send: DirKey,
    recv: Opener,
    send_id: PacketIdSend,
    /// Which ids this member may send under the key (crate::sendspace).
    space: SendSpace,
    replay: ReplayWindow,
    rng: SystemRandom,
    /// Names the send key in [`sent::record`]'s log.
    #[cfg(test)]
    send_fingerprint: u64,
}

/// Keys are never printed.
impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("cipher", &self.cipher.name())
            .field("auth", &self.auth.name())
            .field("send_id", &self.send_id)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// Keys a data channel from the 256-byte `key2` (§10). The server
    /// decrypts with `key[0]` (bytes 0..128) and encrypts with `key[1]`
    /// (bytes 128..256); a client (`server = false`) the other way round.
    /// `auth` matters only for CBC.
    pub fn new(cipher: Cipher, auth: Digest, key2: &[u8; 256], server: bool) -> DataKey {
        let (c2s, s2c) = key2.split_at(128);
        let (send, recv) = if server { (s2c, c2s) } else { (c2s, s2c) };
        DataKey {
            cipher,
            auth,
            send: DirKey::new(cipher, auth, send),
            recv: Opener { key: Arc::new(DirKey::new(cipher, auth, recv)), auth },
            send_id: PacketIdSend::new(),
            space: SendSpace::Any,
            replay: ReplayWindow::new(),
            rng: SystemRandom::new(),
            #[cfg(test)]
            send_fingerprint: sent::fingerprint(send),
        }
    }

    /// Most bytes a packet can be longer than its payload (header included),
    /// for sizing buffers and MTU.
    pub fn overhead(&self, v2: bool) -> usize {
        let crypto =
            if self.cipher.is_aead() { PID_LEN + TAG_LEN } else { self.auth.output_len() + BLOCK + PID_LEN + BLOCK };
        header_len(v2) + crypto
    }

    /// The send counter has reached the renegotiation trigger (§13.5).
    pub fn needs_rekey(&self) -> bool {
        self.send_id.needs_rekey()
    }

    /// Last packet id sent (0: none).
    pub fn send_counter(&self) -> u32 {
        self.send_id.parts().0
    }

    /// Continues sending after `last` if that is ahead of our own counter:
    /// a counter never moves back, so this member never repeats an id it
    /// sent itself (invariant (a), with [`SendSpace`] for the others).
    pub fn advance_send_counter(&mut self, last: u32) {
        if last > self.send_counter() {
            self.send_id = PacketIdSend::from_parts(last, 0);
        }
    }

    /// Restricts the ids this key sends to a member's send space.
    pub fn set_send_space(&mut self, space: SendSpace) {
        self.space = space;
    }

    /// The replay window as `(time, highest id, seen bitmap)`.
    pub fn recv_state(&self) -> (u32, u32, u64) {
        self.replay.parts()
    }

    /// Takes a replicated replay window if it is ahead of ours; a window
    /// never moves back, so a stale report cannot reopen seen ids.
    pub fn merge_recv_state(&mut self, (time, highest, seen): (u32, u32, u64)) {
        let (t, h, _) = self.replay.parts();
        if (time, highest) > (t, h) {
            self.replay = ReplayWindow::from_parts(time, highest, seen);
        }
    }

    /// Builds the wire packet carrying `payload` in `out` and returns its
    /// length. The packet id is consumed only when the packet is built.
    pub fn encrypt(&mut self, hdr: DataHeader, payload: &[u8], out: &mut [u8]) -> Result<usize, DataError> {
        self.encrypt_with(hdr, payload.len(), out, |p| p.copy_from_slice(payload))
    }

    /// [`DataKey::encrypt`] of a payload of `payload_len` bytes that
    /// `write` puts straight where it is encrypted in place (exactly
    /// `payload_len` bytes of `out`): the tun's packets are written once,
    /// into the datagram that carries them (crate::train), not copied here.
    pub fn encrypt_with(
        &mut self,
        hdr: DataHeader,
        payload_len: usize,
        out: &mut [u8],
        write: impl FnOnce(&mut [u8]),
    ) -> Result<usize, DataError> {
        if payload_len > MAX_PAYLOAD {
            return Err(DataError::TooLarge);
        }
        let total = self.packet_len(hdr, payload_len);
        let out = out.get_mut(..total).ok_or(DataError::BufferTooSmall)?;
        hdr.write(out);
        let at = self.payload_at(hdr);
        write(&mut out[at..at + payload_len]);
        match &self.send {
            DirKey::Aead { key, implicit_iv } => {
                let id = self.send_id.next_in(self.space)?;
                #[cfg(test)]
                sent::record(self.send_fingerprint, id);
                seal_aead(key, implicit_iv, hdr, id, out)?;
            }
            DirKey::Cbc { aes, hmac } => {
                let iv_at = hdr.len() + self.auth.output_len();
                self.rng.fill(&mut out[iv_at..iv_at + BLOCK]).map_err(|_| DataError::Random)?;
                let id = self.send_id.next_in(self.space)?;
                #[cfg(test)]
                sent::record(self.send_fingerprint, id);
                seal_cbc(aes, hmac, hdr.len(), id, payload_len, out)?;
            }
        }
        Ok(total)
    }

    /// Exact wire length of a packet with `payload_len` payload bytes.
    pub fn packet_len(&self, hdr: DataHeader, payload_len: usize) -> usize {
        if self.cipher.is_aead() {
            hdr.len() + PID_LEN + TAG_LEN + payload_len
        } else {
            let padded = (PID_LEN + payload_len) / BLOCK * BLOCK + BLOCK;
            hdr.len() + self.auth.output_len() + BLOCK + padded
        }
    }

    /// Where the payload's plaintext lies in the packet: after the tag
    /// (AEAD), or after the IV and the packet id (CBC).
    fn payload_at(&self, hdr: DataHeader) -> usize {
        if self.cipher.is_aead() {
            hdr.len() + PID_LEN + TAG_LEN
        } else {
            hdr.len() + self.auth.output_len() + BLOCK + PID_LEN
        }
    }

    /// The receive key, to authenticate and decrypt with outside the
    /// session (a data thread, crate::shard) before [`DataKey::accept`].
    pub fn opener(&self) -> Opener {
        self.recv.clone()
    }

    /// Whether `o` is this key's receive key (and not a key that was
    /// rotated out while a packet was being opened with it).
    pub fn opens_with(&self, o: &Opener) -> bool {
        Arc::ptr_eq(&self.recv.key, &o.key)
    }

    /// The second half of [`DataKey::decrypt`]: the packet id of an
    /// authenticated packet goes through the replay window; returns the
    /// payload. Forged packets never get here, so they cannot move the
    /// window.
    pub fn accept<'a>(&mut self, opened: Opened, packet: &'a [u8]) -> Result<&'a [u8], DataError> {
        self.replay.accept(opened.id, 0).map_err(DataError::Replay)?;
        packet.get(opened.range).ok_or(DataError::Truncated)
    }

    /// Authenticates and decrypts a received wire packet (either opcode) in
    /// place and returns its payload. The packet id is checked and recorded
    /// only after authentication, so forged packets cannot move the window.
    pub fn decrypt<'a>(&mut self, packet: &'a mut [u8]) -> Result<&'a [u8], DataError> {
        let opened = self.recv.open(packet)?;
        self.accept(opened, packet)
    }
}

/// A receive key on its own: authentication and decryption need nothing
/// else, and no state changes, so they can run without the session (and
/// without the server's lock, crate::shard). Cloning shares the key.
#[derive(Clone)]
pub struct Opener {
    key: Arc<DirKey>,
    auth: Digest,
}

/// A packet that [`Opener::open`] authenticated and decrypted in place:
/// its packet id, not yet through the replay window, and where its payload
/// lies.
#[derive(Debug)]
pub struct Opened {
    id: u32,
    range: std::ops::Range<usize>,
}

impl Opener {
    /// Authenticates and decrypts `packet` (either data opcode) in place.
    pub fn open(&self, packet: &mut [u8]) -> Result<Opened, DataError> {
        let h = parse_header_len(packet)?;
        let (id, range) = match &*self.key {
            DirKey::Aead { key, implicit_iv } => open_aead(key, implicit_iv, h, packet)?,
            DirKey::Cbc { aes, hmac } => open_cbc(aes, hmac, self.auth, h, packet)?,
        };
        Ok(Opened { id, range })
    }
}

/// Tests only: a log of every (send key, packet id) pair this thread's
/// [`DataKey::encrypt`] used, for the cluster simulation that proves no pair
/// is used twice across members (cargo runs tests on several threads,
/// hence per thread). Off until [`sent::start`].
#[cfg(test)]
pub mod sent {
    use std::hash::{DefaultHasher, Hash, Hasher};

    // The initializer is const; clippy still flags it on targets whose
    // thread_local! expands to OS keys (x86_64-unknown-openbsd).
    #[allow(clippy::missing_const_for_thread_local)]
    mod log {
        use std::cell::RefCell;
        thread_local! {
            pub static LOG: RefCell<Option<Vec<(u64, u32)>>> = const { RefCell::new(None) };
        }
    }
    use log::LOG;

    /// A 64-bit name of a direction's key material (cipher key, HMAC key
    /// or implicit IV): equal keys, equal names.
    pub fn fingerprint(record: &[u8]) -> u64 {
        let mut h = DefaultHasher::new();
        record.hash(&mut h);
        h.finish()
    }

    pub(super) fn record(key: u64, packet_id: u32) {
        LOG.with(|l| {
            if let Some(v) = l.borrow_mut().as_mut() {
                v.push((key, packet_id));
            }
        });
    }

    /// Starts (or restarts, empty) the log of this thread.
    pub fn start() {
        LOG.with(|l| *l.borrow_mut() = Some(Vec::new()));
    }

    /// The pairs logged since the last call.
    pub fn take() -> Vec<(u64, u32)> {
        LOG.with(|l| l.borrow_mut().as_mut().map(std::mem::take).unwrap_or_default())
    }

    /// Stops logging on this thread.
    pub fn stop() {
        LOG.with(|l| *l.borrow_mut() = None);
    }
}

/// The AEAD nonce: the packet id as on the wire, then the implicit IV.
fn aead_nonce(id: u32, implicit_iv: &[u8; IMPLICIT_IV_LEN]) -> Nonce {
    let mut nonce = [0; aead::NONCE_LEN];
    nonce[..PID_LEN].copy_from_slice(&id.to_be_bytes());
    nonce[PID_LEN..].copy_from_slice(implicit_iv);
    Nonce::assume_unique_for_key(nonce)
}

/// The AEAD additional data: the V2 header (not V1's) and the packet id.
/// Returns the buffer and its used length.
fn aead_aad(packet: &[u8], h: usize, id: u32) -> ([u8; 8], usize) {
    let mut aad = [0; 8];
    let header = if h == 4 { &packet[..4] } else { &[][..] };
    aad[..header.len()].copy_from_slice(header);
    aad[header.len()..header.len() + PID_LEN].copy_from_slice(&id.to_be_bytes());
    (aad, header.len() + PID_LEN)
}

/// Fills `out` (header and plaintext already written) as
/// `[hdr][id][tag][ciphertext]`, encrypting in place.
fn seal_aead(
    key: &LessSafeKey,
    implicit_iv: &[u8; IMPLICIT_IV_LEN],
    hdr: DataHeader,
    id: u32,
    out: &mut [u8],
) -> Result<(), DataError> {
    let h = hdr.len();
    out[h..h + PID_LEN].copy_from_slice(&id.to_be_bytes());
    let (aad, aad_len) = aead_aad(out, h, id);
    let (head, body) = out.split_at_mut(h + PID_LEN + TAG_LEN);
    let tag = key
        .seal_in_place_separate_tag(aead_nonce(id, implicit_iv), Aad::from(&aad[..aad_len]), body)
        .map_err(|_| DataError::TooLarge)?;
    head[h + PID_LEN..].copy_from_slice(tag.as_ref());
    Ok(())
}

/// Verifies and decrypts `[hdr][id][tag][ciphertext]`; returns the packet id
/// and where the plaintext is.
fn open_aead(
    key: &LessSafeKey,
    implicit_iv: &[u8; IMPLICIT_IV_LEN],
    h: usize,
    packet: &mut [u8],
) -> Result<(u32, std::ops::Range<usize>), DataError> {
    let body_at = h + PID_LEN + TAG_LEN;
    if packet.len() < body_at {
        return Err(DataError::Truncated);
    }
    let id = read_id(&packet[h..]);
    let (aad, aad_len) = aead_aad(packet, h, id);
    let (head, body) = packet.split_at_mut(body_at);
    let tag = Tag::try_from(&head[h + PID_LEN..]).map_err(|_| DataError::Truncated)?;
    key.open_in_place_separate_tag(aead_nonce(id, implicit_iv), Aad::from(&aad[..aad_len]), tag, body, 0..)
        .map_err(|_| DataError::BadTag)?;
    Ok((id, body_at..packet.len()))
}

/// Fills `out` (header, IV and the `payload_len` bytes of plaintext
/// after the packet id already written) as
/// `[hdr][hmac][iv][CBC(id || payload || pad)]`, encrypting in place.
fn seal_cbc(
    aes: &Aes256,
    hmac: &HmacKey,
    h: usize,
    id: u32,
    payload_len: usize,
    out: &mut [u8],
) -> Result<(), DataError> {
    let (head, iv_ct) = out.split_at_mut(h + hmac_len(hmac));
    let (iv, ct) = iv_ct.split_at_mut(BLOCK);
    ct[..PID_LEN].copy_from_slice(&id.to_be_bytes());
    cbc::Encryptor::<Aes256>::inner_iv_slice_init(aes.clone(), iv)
        .map_err(|_| DataError::BufferTooSmall)?
        .encrypt_padded::<Pkcs7>(ct, PID_LEN + payload_len)
        .map_err(|_| DataError::BufferTooSmall)?;
    hmac.sign(iv_ct, &mut head[h..]);
    Ok(())
}

/// Verifies the HMAC of `[hdr][hmac][iv][ciphertext]`, then decrypts; returns
/// the packet id and where the payload is.
fn open_cbc(
    aes: &Aes256,
    hmac: &HmacKey,
    auth: Digest,
    h: usize,
    packet: &mut [u8],
) -> Result<(u32, std::ops::Range<usize>), DataError> {
    let iv_at = h + auth.output_len();
    let ct_at = iv_at + BLOCK;
    if packet.len() < ct_at {
        return Err(DataError::Truncated);
    }
    let (head, iv_ct) = packet.split_at_mut(iv_at);
    if !hmac.verify(iv_ct, &head[h..]) {
        return Err(DataError::BadHmac);
    }
    let (iv, ct) = iv_ct.split_at_mut(BLOCK);
    if ct.is_empty() || ct.len() % BLOCK != 0 {
        return Err(DataError::BadPadding);
    }
    let plain_len = cbc::Decryptor::<Aes256>::inner_iv_slice_init(aes.clone(), iv)
        .map_err(|_| DataError::BadPadding)?
        .decrypt_padded::<Pkcs7>(ct)
        .map_err(|_| DataError::BadPadding)?
        .len();
    if plain_len < PID_LEN {
        return Err(DataError::Truncated);
    }
    let id = read_id(&packet[ct_at..]);
    Ok((id, ct_at + PID_LEN..ct_at + plain_len))
}

fn hmac_len(hmac: &HmacKey) -> usize {
    match hmac {
        HmacKey::Sha1(_) => Digest::Sha1,
        HmacKey::Sha256(_) => Digest::Sha256,
        HmacKey::Sha512(_) => Digest::Sha512,
    }
    .output_len()
}

/// The big-endian packet id at the start of `bytes` (at least 4 long).
fn read_id(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key2() -> [u8; 256] {
        let mut k = [0; 256];
        k.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        k
    }

    fn pair(cipher: Cipher, auth: Digest) -> (DataKey, DataKey) {
        let k = key2();
        (DataKey::new(cipher, auth, &k, true), DataKey::new(cipher, auth, &k, false))
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    const V1: DataHeader = DataHeader { key_id: 1, peer_id: None };
    const V2: DataHeader = DataHeader { key_id: 2, peer_id: Some(0x12_3456) };

    fn round_trip(from: &mut DataKey, to: &mut DataKey, hdr: DataHeader) {
        for len in [0, 1, 11, 12, 15, 16, 48, 1400] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut buf = [0; 1600];
            let n = from.encrypt(hdr, &payload, &mut buf).expect("encrypts");
            assert!(n <= payload.len() + from.overhead(hdr.peer_id.is_some()));
            assert_eq!(buf[0] & 7, hdr.key_id);
            assert_eq!(to.decrypt(&mut buf[..n]), Ok(&payload[..]));
        }
    }

    #[test]
    fn round_trips() {
        for cipher in Cipher::ALL {
            for auth in Digest::ALL {
                for hdr in [V1, V2] {
                    let (mut server, mut client) = pair(cipher, auth);
                    round_trip(&mut server, &mut client, hdr);
                    round_trip(&mut client, &mut server, hdr);
                }
            }
        }
    }

    /// The payload written in place gives the very packet the copying
    /// form builds: byte for byte with AEAD (same key, same packet id),
    /// the same plaintext with CBC (whose IV is random). The writer gets
    /// exactly the payload's bytes.
    #[test]
    fn written_in_place_is_what_encrypt_builds() {
        for cipher in Cipher::ALL {
            for hdr in [V1, V2] {
                let (mut a, mut client) = pair(cipher, Digest::Sha256);
                let (mut b, _) = pair(cipher, Digest::Sha256);
                for len in [0, 1, 15, 16, 17, 1400] {
                    let payload: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
                    let (mut copied, mut in_place) = ([0u8; 1600], [0xa5u8; 1600]);
                    let n = a.encrypt(hdr, &payload, &mut copied).expect("encrypts");
                    let m = b
                        .encrypt_with(hdr, len, &mut in_place, |p| {
                            assert_eq!(p.len(), len);
                            p.copy_from_slice(&payload);
                        })
                        .expect("encrypts");
                    assert_eq!(m, n);
                    if cipher.is_aead() {
                        assert_eq!(&in_place[..m], &copied[..n], "{cipher:?} {len}");
                    }
                    assert_eq!(client.decrypt(&mut in_place[..m]), Ok(&payload[..]), "{cipher:?} {len}");
                }
            }
        }
    }

    #[test]
    fn directions_differ() {
        for cipher in Cipher::ALL {
            let (mut server, _) = pair(cipher, Digest::Sha256);
            let (mut other, _) = pair(cipher, Digest::Sha256);
            let mut buf = [0; 200];
            let n = server.encrypt(V2, b"to the client", &mut buf).expect("encrypts");
            assert!(other.decrypt(&mut buf[..n]).is_err(), "{cipher:?}");
        }
    }

    #[test]
    fn flipped_bits_rejected() {
        for cipher in Cipher::ALL {
            for hdr in [V1, V2] {
                let (mut server, mut client) = pair(cipher, Digest::Sha1);
                let mut buf = [0; 200];
                let n = client.encrypt(hdr, &[0x45; 40], &mut buf).expect("encrypts");
                // Only the AEAD V2 header is authenticated (§13.2, §13.3).
                let first = if cipher.is_aead() && hdr.peer_id.is_some() { 0 } else { 8 * hdr.len() };
                for bit in first..n * 8 {
                    let mut copy = buf;
                    copy[bit / 8] ^= 1 << (bit % 8);
                    assert!(server.decrypt(&mut copy[..n]).is_err(), "{cipher:?} bit {bit}");
                }
                assert!(server.decrypt(&mut buf[..n]).is_ok());
            }
        }
    }

    /// Opening apart from the key (a data thread, crate::shard): nothing
    /// changes until accept, which still refuses a replay, and a key
    /// rebuilt from the same material is not the key that opened.
    #[test]
    fn opened_apart_then_accepted_once() {
        for cipher in Cipher::ALL {
            let (mut server, mut client) = pair(cipher, Digest::Sha256);
            let mut first = [0; 100];
            let n = client.encrypt(V2, b"once", &mut first).expect("encrypts");
            let opener = server.opener();
            assert!(server.opens_with(&opener));
            let (other, _) = pair(cipher, Digest::Sha256);
            assert!(!other.opens_with(&opener), "{cipher:?}: another key state's window must not take it");
            let (mut a, mut b) = (first, first);
            let oa = opener.open(&mut a[..n]).expect("authentic");
            let ob = opener.open(&mut b[..n]).expect("opening changes nothing");
            assert_eq!(server.accept(oa, &a[..n]), Ok(&b"once"[..]));
            assert_eq!(server.accept(ob, &b[..n]), Err(DataError::Replay(ReplayError::Duplicate)));
            let mut forged = first;
            forged[n - 1] ^= 1;
            assert!(opener.open(&mut forged[..n]).is_err());
        }
    }

    #[test]
    fn replays_rejected() {
        for cipher in Cipher::ALL {
            let (mut server, mut client) = pair(cipher, Digest::Sha256);
            let mut first = [0; 100];
            let n = client.encrypt(V2, b"once", &mut first).expect("encrypts");
            let mut copy = first;
            assert!(server.decrypt(&mut copy[..n]).is_ok());
            let mut copy = first;
            assert_eq!(server.decrypt(&mut copy[..n]), Err(DataError::Replay(ReplayError::Duplicate)));
        }
    }

    #[test]
    fn garbage_never_panics() {
        let (mut gcm, _) = pair(Cipher::Aes256Gcm, Digest::Sha1);
        let (mut cbc, _) = pair(Cipher::Aes256Cbc, Digest::Sha512);
        for len in 0..120 {
            for first in [0x30, 0x48, 0x00, 0xff] {
                let mut p = vec![0u8; len];
                if let Some(b) = p.first_mut() {
                    *b = first;
                }
                let _ = gcm.decrypt(&mut p.clone());
                let _ = cbc.decrypt(&mut p);
            }
        }
        assert_eq!(gcm.decrypt(&mut []), Err(DataError::Truncated));
        assert_eq!(gcm.decrypt(&mut [0x20, 0]), Err(DataError::WrongOpcode));
        assert_eq!(gcm.decrypt(&mut [0x48, 0]), Err(DataError::Truncated));
    }

    #[test]
    fn lab_sizes() {
        let mut buf = [0; 200];
        let (mut gcm, _) = pair(Cipher::Aes256Gcm, Digest::Sha1);
        assert_eq!(gcm.encrypt(V2, &[0x60; 48], &mut buf), Ok(72));
        assert_eq!(gcm.encrypt(V2, &PING, &mut buf), Ok(40));
        let (mut cbc, _) = pair(Cipher::Aes256Cbc, Digest::Sha256);
        assert_eq!(cbc.encrypt(V2, &[0x60; 48], &mut buf), Ok(116));
        assert_eq!(cbc.overhead(true), 4 + 32 + 16 + 4 + 16);
        assert_eq!(gcm.overhead(false), 1 + 4 + 16);
    }

    #[test]
    fn small_buffer_and_counters() {
        let (mut server, mut client) = pair(Cipher::Aes128Gcm, Digest::Sha1);
        let mut buf = [0; 71];
        assert_eq!(server.encrypt(V2, &[0; 48], &mut buf), Err(DataError::BufferTooSmall));
        assert_eq!(server.send_counter(), 0);
        server.advance_send_counter(u32::MAX - 1);
        let mut buf = [0; 100];
        let n = server.encrypt(V1, b"last", &mut buf).expect("last id");
        assert!(server.needs_rekey());
        assert_eq!(server.encrypt(V1, b"x", &mut [0; 100]), Err(DataError::Exhausted));
        let sent = buf;
        assert!(client.decrypt(&mut buf[..n]).is_ok());
        let state = client.recv_state();
        assert_eq!(state.1, u32::MAX);
        let (_, mut backup) = pair(Cipher::Aes128Gcm, Digest::Sha1);
        backup.merge_recv_state(state);
        assert_eq!(backup.decrypt(&mut { sent }[..n]), Err(DataError::Replay(ReplayError::Duplicate)));
    }

    /// AES-256-GCM known answer, computed independently with Python's
    /// `cryptography` (AESGCM): key2 = bytes 0..=255, server to client, so
    /// key = key2[128..160], implicit IV = key2[192..200]; P_DATA_V2 key_id 0
    /// peer-id 5, packet id 1, AAD = header || packet id.
    #[test]
    fn gcm_known_answer() {
        let wire = hex("4800000500000001c8d840864303b844fe582a15cb4c0a5ad22a4766e0e3ed81\
             53c0eb0d2d5e4bc6725e9885a5f4f524d952838c");
        let payload = b"known answer payload for GCM";
        let (mut server, mut client) = pair(Cipher::Aes256Gcm, Digest::Sha1);
        let mut buf = [0; 100];
        let hdr = DataHeader { key_id: 0, peer_id: Some(5) };
        let n = server.encrypt(hdr, payload, &mut buf).expect("encrypts");
        assert_eq!(&buf[..n], &wire[..]);
        let mut wire = wire;
        assert_eq!(client.decrypt(&mut wire), Ok(&payload[..]));
    }

    /// AES-256-CBC + HMAC-SHA256 known answer, client to server, made with
    /// the openssl CLI: key2 = bytes 0..=255, so key = key2[0..32], HMAC key
    /// = key2[64..96]; IV = 00..0f;
    /// `openssl enc -aes-256-cbc -K <key> -iv <iv>` of `00000001 || payload`,
    /// `openssl dgst -sha256 -mac HMAC -macopt hexkey:<hmac key>` of IV || ct,
    /// packet = 0x30 (P_DATA_V1, key_id 0) || HMAC || IV || ct.
    #[test]
    fn cbc_known_answer() {
        let mut wire = hex("3096744d5f73e614a4ed5ca94458df1a669084b21bb783e8888fba6639ef5dee\
             80000102030405060708090a0b0c0d0e0f161a9258ee0f5e09949cbdd9f692f6\
             91b7a0c37e90d44763015a2ea6e2a0b04692e8443f3cc872a360b14ec94cf5cd\
             c8");
        let (mut server, _) = pair(Cipher::Aes256Cbc, Digest::Sha256);
        assert_eq!(server.decrypt(&mut wire), Ok(&b"known answer payload for CBC"[..]));
    }

    #[test]
    fn classify_payloads() {
        assert_eq!(classify(&PING), Payload::Ping);
        assert_eq!(classify(&PING[..15]), Payload::Ip);
        let mut exit = OCC_MAGIC.to_vec();
        exit.push(OCC_EXIT);
        assert_eq!(classify(&exit), Payload::OccExit);
        exit[16] = 0;
        assert_eq!(classify(&exit), Payload::Occ);
        assert_eq!(classify(&[0x45, 0, 0, 20]), Payload::Ip);
        assert_eq!(classify(&[]), Payload::Ip);
    }

    #[test]
    fn debug_hides_keys() {
        let (server, _) = pair(Cipher::Aes256Cbc, Digest::Sha256);
        let text = format!("{server:?}");
        assert!(text.contains("AES-256-CBC") && !text.contains("aes"));
    }
}
