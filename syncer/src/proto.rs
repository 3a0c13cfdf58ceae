//! The sync datagram, sans-IO: framing, encryption and the messages inside.
//!
//! ```text
//! "VSYN" | version u8 = 2 | sender boot id (16) | seq u64 BE | ChaCha20-Poly1305(messages) | tag (16)
//! ```
//!
//! The boot id is the sender's member number (1 byte), the Unix time of its
//! start in milliseconds (8 bytes) and 7 random bytes. It salts the
//! key derivation (HKDF-SHA256 of the cluster key), so every process run
//! encrypts under a fresh key: a restarted peer's `seq` starting over at 1
//! can never repeat a (key, nonce) pair, and no sequence state has to survive
//! a restart. The nonce is 4 zero bytes and `seq`; the 29 header bytes are
//! the associated data, so nothing in them can be altered.
//!
//! A receiver keeps, per member number, the window of that member's newest
//! run only: a datagram of an older run of a member is refused, so a run
//! that is still alive is never forgotten (however often its peers
//! restart) and captured datagrams of a finished run stay refused.
//!
//! The plaintext is a run of messages `type u8 | len u16 BE | body`. Unknown
//! types are skipped and known bodies may grow at the end, so that a newer
//! peer never breaks an older one during a rolling upgrade.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf::{Salt, HKDF_SHA256};
use vpnsyncd_common::codec::{DecodeError, Reader};
use vpnsyncd_common::msg::Role;

use crate::key::SyncKey;
use crate::replay::ReplayWindow;

pub const MAGIC: &[u8; 4] = b"VSYN";
/// 2: generations in session messages, member numbers in boot ids.
pub const VERSION: u8 = 2;
/// Magic, version, boot id, seq.
pub const HEADER_LEN: usize = 4 + 1 + 16 + 8;
pub const TAG_LEN: usize = 16;
/// Messages are packed up to this many plaintext bytes per datagram, which
/// keeps a datagram below the 1280-byte IPv6 minimum MTU with its headers:
/// no IP fragmentation, where one lost fragment loses the whole datagram.
pub const MAX_PLAINTEXT: usize = 1200;
/// The largest message body: what fits one UDP datagram over IPv4 (a body
/// larger than [`MAX_PLAINTEXT`] goes alone, fragmented).
pub const MAX_BODY: usize = 65507 - HEADER_LEN - TAG_LEN - 3;
const INFO: &[u8] = b"vpnsyncd sync v2";

/// Per-process identity of a sender (see the module documentation).
pub type BootId = [u8; 16];

/// A boot id for member `member` started at `unix_ms`, with 7 random bytes.
pub fn boot_id(member: u8, unix_ms: u64, random: [u8; 7]) -> BootId {
    let mut b = [0u8; 16];
    b[0] = member;
    b[1..9].copy_from_slice(&unix_ms.to_be_bytes());
    b[9..].copy_from_slice(&random);
    b
}

/// The member number a boot id names.
pub fn boot_member(b: &BootId) -> u8 {
    b[0]
}
/// The engine's session id, 8 bytes big-endian.
pub type SessionId = u64;

/// One message of the peer protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Every second: who we are, whether our table can serve a bulk, and
    /// a digest of the table (every session id with its generation), which
    /// a backup compares with its own to notice what it missed.
    Heartbeat { role: Role, sessions: u32, complete: bool, digest: u64 },
    /// A session's full record (new session, rekey, float, takeover), with
    /// its generation.
    Upsert { id: SessionId, gen: u64, record: Vec<u8> },
    /// Latest counters of sessions, batched; each with the generation of
    /// the record it follows.
    Progress(Vec<(SessionId, u64, Vec<u8>)>),
    /// A session ended; `gen` is its last record's generation.
    Delete { id: SessionId, gen: u64 },
    /// "Send me your whole table": a (re)starting member.
    BulkRequest,
    /// Ends a bulk answer of `count` sessions.
    BulkEnd { count: u32 },
    /// "I got progress for sessions I do not hold": their upsert was lost;
    /// the master sends those records again.
    Want(Vec<SessionId>),
}

const T_HEARTBEAT: u8 = 1;
const T_UPSERT: u8 = 2;
const T_PROGRESS: u8 = 3;
const T_DELETE: u8 = 4;
const T_BULK_REQUEST: u8 = 5;
const T_BULK_END: u8 = 6;
const T_WANT: u8 = 7;

/// Why a received datagram was dropped; each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Not a sync datagram, or one of a version we do not speak.
    Version,
    /// The tag does not verify: another cluster's key, or forged.
    Auth,
    /// Seen before, too old for the window, or our own.
    Replay,
    /// Truncated header or messages.
    Malformed,
}

impl Reject {
    pub fn reason(self) -> &'static str {
        match self {
            Reject::Version => "bad magic or version",
            Reject::Auth => "authentication failed (wrong sync key or forged)",
            Reject::Replay => "replayed or stale",
            Reject::Malformed => "malformed",
        }
    }
}

/// A message body above [`MAX_BODY`]: it cannot travel in one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge(pub usize);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes exceed the sync message limit {MAX_BODY}", self.0)
    }
}

/// Packs messages into datagram plaintexts of at most [`MAX_PLAINTEXT`]
/// bytes; consecutive progress entries share one `Progress` message.
#[derive(Default)]
pub struct Packer {
    done: Vec<Vec<u8>>,
    cur: Vec<u8>,
    /// Offset in `cur` of the open `Progress` message's header.
    progress_at: Option<usize>,
}

impl Packer {
    pub fn push(&mut self, msg: &Msg) -> Result<(), TooLarge> {
        let mut body = Vec::new();
        let ty = match msg {
            Msg::Progress(entries) => {
                for (id, gen, bytes) in entries {
                    self.progress(*id, *gen, bytes)?;
                }
                return Ok(());
            }
            Msg::Heartbeat { role, sessions, complete, digest } => {
                body.push(*role as u8);
                body.extend_from_slice(&sessions.to_be_bytes());
                body.push(u8::from(*complete));
                body.extend_from_slice(&digest.to_be_bytes());
                T_HEARTBEAT
            }
            Msg::Upsert { id, gen, record } => {
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(&gen.to_be_bytes());
                body.extend_from_slice(record);
                T_UPSERT
            }
            Msg::Delete { id, gen } => {
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(&gen.to_be_bytes());
                T_DELETE
            }
            Msg::BulkRequest => T_BULK_REQUEST,
            Msg::BulkEnd { count } => {
                body.extend_from_slice(&count.to_be_bytes());
                T_BULK_END
            }
            Msg::Want(ids) => {
                for id in ids {
                    body.extend_from_slice(&id.to_be_bytes());
                }
                T_WANT
            }
        };
        if body.len() > MAX_BODY {
            return Err(TooLarge(body.len()));
        }
        self.make_room(3 + body.len());
        self.progress_at = None;
        self.cur.push(ty);
        self.cur.extend_from_slice(&(body.len() as u16).to_be_bytes());
        self.cur.extend_from_slice(&body);
        Ok(())
    }

    /// Appends one progress entry, to the open `Progress` message if it fits.
    pub fn progress(&mut self, id: SessionId, gen: u64, bytes: &[u8]) -> Result<(), TooLarge> {
        let entry = 8 + 8 + 2 + bytes.len();
        if entry > MAX_BODY {
            return Err(TooLarge(entry));
        }
        let fits = |at: usize| {
            let body = self.cur.len() - at - 3;
            self.cur.len() + entry <= MAX_PLAINTEXT && body + entry <= MAX_BODY
        };
        let at = match self.progress_at {
            Some(at) if fits(at) => at,
            _ => {
                self.make_room(3 + entry);
                let at = self.cur.len();
                self.cur.extend_from_slice(&[T_PROGRESS, 0, 0]);
                self.progress_at = Some(at);
                at
            }
        };
        self.cur.extend_from_slice(&id.to_be_bytes());
        self.cur.extend_from_slice(&gen.to_be_bytes());
        self.cur.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        self.cur.extend_from_slice(bytes);
        let body = (self.cur.len() - at - 3) as u16;
        self.cur[at + 1..at + 3].copy_from_slice(&body.to_be_bytes());
        Ok(())
    }

    /// Starts a new datagram unless `n` more bytes fit the current one (a
    /// message larger than a datagram goes alone).
    fn make_room(&mut self, n: usize) {
        if !self.cur.is_empty() && self.cur.len() + n > MAX_PLAINTEXT {
            self.done.push(std::mem::take(&mut self.cur));
            self.progress_at = None;
        }
    }

    /// The plaintexts, one per datagram.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        if !self.cur.is_empty() {
            self.done.push(self.cur);
        }
        self.done
    }
}

/// Decodes a plaintext into its messages, skipping unknown types.
pub fn decode(plain: &[u8]) -> Result<Vec<Msg>, DecodeError> {
    let mut msgs = Vec::new();
    let mut rest = plain;
    while !rest.is_empty() {
        let mut r = Reader::new(take(&mut rest, 3)?);
        let (ty, len) = (r.u8()?, r.u16()? as usize);
        let mut body = take(&mut rest, len)?;
        let mut b = Reader::new(body);
        msgs.push(match ty {
            T_HEARTBEAT => Msg::Heartbeat {
                role: Role::from_u8(b.u8()?)?,
                sessions: b.u32()?,
                complete: b.u8()? != 0,
                digest: b.u64()?,
            },
            T_UPSERT => Msg::Upsert { id: b.u64()?, gen: b.u64()?, record: b.rest().to_vec() },
            T_PROGRESS => {
                let mut entries = Vec::new();
                while !body.is_empty() {
                    let mut e = Reader::new(take(&mut body, 18)?);
                    let (id, gen, n) = (e.u64()?, e.u64()?, e.u16()? as usize);
                    entries.push((id, gen, take(&mut body, n)?.to_vec()));
                }
                Msg::Progress(entries)
            }
            T_DELETE => Msg::Delete { id: b.u64()?, gen: b.u64()? },
            T_BULK_REQUEST => Msg::BulkRequest,
            T_BULK_END => Msg::BulkEnd { count: b.u32()? },
            T_WANT => {
                let mut ids = Vec::new();
                while !body.is_empty() {
                    ids.push(Reader::new(take(&mut body, 8)?).u64()?);
                }
                Msg::Want(ids)
            }
            _ => continue,
        });
    }
    Ok(msgs)
}

/// Splits `n` bytes off the front of `b`.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    let (head, tail) = b.split_at_checked(n).ok_or(DecodeError("truncated message"))?;
    *b = tail;
    Ok(head)
}

/// The AEAD key of one sender run.
fn derive(key: &SyncKey, boot: &BootId) -> LessSafeKey {
    let prk = Salt::new(HKDF_SHA256, boot).extract(key.bytes());
    let okm = prk.expand(&[INFO], &CHACHA20_POLY1305).expect("32 bytes is a valid HKDF-SHA256 output length");
    LessSafeKey::new(UnboundKey::from(okm))
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Encrypts our datagrams: one boot id, one key, `seq` counting from 1.
pub struct Sealer {
    boot: BootId,
    seq: u64,
    key: LessSafeKey,
}

impl Sealer {
    pub fn new(key: &SyncKey, boot: BootId) -> Sealer {
        Sealer { boot, seq: 0, key: derive(key, &boot) }
    }

    /// A new cluster key (a reload): `seq` goes on, so that receivers keep
    /// their windows and a datagram captured under an earlier key stays
    /// refused should that key come back.
    pub fn set_key(&mut self, key: &SyncKey) {
        self.key = derive(key, &self.boot);
    }

    /// Builds the datagram carrying `plain`.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        self.seq += 1;
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.boot);
        out.extend_from_slice(&self.seq.to_be_bytes());
        let mut body = plain.to_vec();
        let aad = Aad::from(&out[..HEADER_LEN]);
        self.key
            .seal_in_place_append_tag(nonce(self.seq), aad, &mut body)
            .expect("a sync datagram is far below the ChaCha20 length limit");
        out.extend_from_slice(&body);
        out
    }
}

/// What the newest run of one member needs on our side.
struct SenderState {
    boot: BootId,
    key: LessSafeKey,
    window: ReplayWindow,
}

/// Decrypts peers' datagrams and keeps a replay window for the newest run
/// of each member (at most [`vpnsyncd_config::MAX_MEMBERS`]).
pub struct Opener {
    key: SyncKey,
    own: BootId,
    senders: Vec<SenderState>,
}

impl Opener {
    /// `own` is our boot id: our own datagrams coming back (a reflection,
    /// or ourselves in the unicast peer list) are replays.
    pub fn new(key: SyncKey, own: BootId) -> Opener {
        Opener { key, own, senders: Vec::new() }
    }

    /// A new cluster key (a reload): every run's window stays (see
    /// [`Sealer::set_key`]).
    pub fn set_key(&mut self, key: SyncKey) {
        for s in &mut self.senders {
            s.key = derive(&key, &s.boot);
        }
        self.key = key;
    }

    /// Authenticates and decodes a datagram; returns the sender's boot id
    /// with the messages.
    pub fn open(&mut self, d: &[u8]) -> Result<(BootId, Vec<Msg>), Reject> {
        let n = d.len().min(4);
        if d[..n] != MAGIC[..n] || d.get(4).is_some_and(|&v| v != VERSION) {
            return Err(Reject::Version);
        }
        if d.len() < HEADER_LEN + TAG_LEN {
            return Err(Reject::Malformed);
        }
        let (header, sealed) = d.split_at(HEADER_LEN);
        let boot: BootId = header[5..21].try_into().expect("16 bytes");
        let seq = u64::from_be_bytes(header[21..29].try_into().expect("8 bytes"));
        if !(1..=vpnsyncd_config::MAX_MEMBERS).contains(&boot_member(&boot)) {
            return Err(Reject::Malformed);
        }
        if boot == self.own || seq == 0 {
            return Err(Reject::Replay);
        }
        // Boot ids of one member order by start time: only the newest run
        // is heard, an older one is over.
        let slot = self.senders.iter().position(|s| boot_member(&s.boot) == boot_member(&boot));
        let known = match slot {
            Some(i) if self.senders[i].boot == boot => Some(i),
            Some(i) if self.senders[i].boot[1..] > boot[1..] => return Err(Reject::Replay),
            _ => None,
        };
        if known.is_some_and(|i| !self.senders[i].window.check(seq)) {
            return Err(Reject::Replay);
        }
        let mut fresh = None;
        let key = match known {
            Some(i) => &self.senders[i].key,
            None => fresh.insert(derive(&self.key, &boot)),
        };
        let mut buf = sealed.to_vec();
        let plain = key.open_in_place(nonce(seq), Aad::from(header), &mut buf).map_err(|_| Reject::Auth)?;
        let msgs = decode(plain);
        let i = match (known, fresh) {
            (Some(i), _) => i,
            (None, key) => {
                let s = SenderState { boot, key: key.expect("derived above"), window: ReplayWindow::default() };
                match slot {
                    Some(i) => {
                        self.senders[i] = s;
                        i
                    }
                    None => {
                        self.senders.push(s);
                        self.senders.len() - 1
                    }
                }
            }
        };
        self.senders[i].window.accept(seq);
        msgs.map(|m| (boot, m)).map_err(|_| Reject::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SyncKey {
        SyncKey::parse(format!("{b:02x}").repeat(32).as_bytes()).unwrap()
    }

    fn one(msgs: &[Msg]) -> Vec<u8> {
        let mut p = Packer::default();
        for m in msgs {
            p.push(m).unwrap();
        }
        let mut v = p.finish();
        assert_eq!(v.len(), 1);
        v.pop().unwrap()
    }

    fn all() -> Vec<Msg> {
        vec![
            Msg::Heartbeat { role: Role::Master, sessions: 7, complete: true, digest: 0xfeed },
            Msg::Upsert { id: 0x0102_0304_0506_0708, gen: 3, record: b"record".to_vec() },
            Msg::Progress(vec![(1, 4, b"p1".to_vec()), (2, 5, Vec::new())]),
            Msg::Delete { id: 9, gen: 6 },
            Msg::BulkRequest,
            Msg::BulkEnd { count: 50 },
        ]
    }

    #[test]
    fn round_trip() {
        let mut s = Sealer::new(&key(1), [1; 16]);
        let mut o = Opener::new(key(1), [2; 16]);
        let plain = one(&all());
        let d = s.seal(&plain);
        assert_eq!(&d[..5], b"VSYN\x02");
        assert_eq!(&d[21..29], &1u64.to_be_bytes());
        assert_eq!(d.len(), HEADER_LEN + plain.len() + TAG_LEN);
        assert_eq!(o.open(&d), Ok(([1; 16], all())));
        assert_eq!(&s.seal(b"")[21..29], &2u64.to_be_bytes());
    }

    #[test]
    fn rejections_are_classified() {
        let mut s = Sealer::new(&key(1), [1; 16]);
        let mut o = Opener::new(key(1), [2; 16]);
        let d = s.seal(&one(&all()));
        assert_eq!(Opener::new(key(3), [2; 16]).open(&d), Err(Reject::Auth));
        let mut forged = d.clone();
        forged[HEADER_LEN] ^= 1;
        assert_eq!(o.open(&forged), Err(Reject::Auth));
        let mut header = d.clone();
        header[10] ^= 1;
        assert_eq!(o.open(&header), Err(Reject::Auth), "the header is AAD");
        assert!(o.open(&d).is_ok(), "a forgery does not burn the seq");
        assert_eq!(o.open(&d), Err(Reject::Replay));
        assert_eq!(Opener::new(key(1), [1; 16]).open(&d), Err(Reject::Replay));
        for cut in 0..HEADER_LEN + TAG_LEN {
            assert_eq!(o.open(&d[..cut]), Err(Reject::Malformed), "cut {cut}");
        }
        let mut v1 = d.clone();
        v1[4] = 1;
        assert_eq!(o.open(&v1), Err(Reject::Version));
        assert_eq!(o.open(b"OpenVPN packet......."), Err(Reject::Version));
        // Authenticated, but a message is cut short.
        let plain = one(&all());
        let d = s.seal(&plain[..plain.len() - 1]);
        assert_eq!(o.open(&d), Err(Reject::Malformed));
    }

    #[test]
    fn replay_window_per_sender() {
        let mut a = Sealer::new(&key(1), [1; 16]);
        let mut b = Sealer::new(&key(1), [3; 16]);
        let mut o = Opener::new(key(1), [2; 16]);
        let old: Vec<_> = (0..70).map(|_| a.seal(b"")).collect();
        assert!(o.open(&old[69]).is_ok());
        assert!(o.open(&old[6]).is_ok(), "inside the window");
        assert_eq!(o.open(&old[5]), Err(Reject::Replay), "below the window");
        assert!(o.open(&b.seal(b"")).is_ok(), "another sender starts at 1");
        assert_eq!(o.open(&Sealer::new(&key(1), [0; 16]).seal(b"")), Err(Reject::Malformed), "no member 0");
    }

    /// Issue 8, finding 2: however often the other members restart, a
    /// member's run that is still alive keeps its window, and datagrams of
    /// a member's earlier run stay refused once a newer run was heard.
    #[test]
    fn a_live_run_is_never_forgotten_and_an_older_run_stays_refused() {
        let mut o = Opener::new(key(1), boot_id(2, 1000, [0; 7]));
        let mut live = Sealer::new(&key(1), boot_id(1, 5000, [1; 7]));
        let captured = live.seal(b"");
        assert!(o.open(&captured).is_ok());
        for run in 0..100u64 {
            for m in 3..=8 {
                assert!(o.open(&Sealer::new(&key(1), boot_id(m, 6000 + run, [2; 7])).seal(b"")).is_ok());
            }
        }
        assert_eq!(o.open(&captured), Err(Reject::Replay), "member 1's window survived 600 restarts of others");
        assert!(o.senders.len() <= 8);
        let old_run = Sealer::new(&key(1), boot_id(1, 4000, [9; 7])).seal(b"");
        assert_eq!(o.open(&old_run), Err(Reject::Replay), "an older run of member 1");
        let mut restarted = Sealer::new(&key(1), boot_id(1, 7000, [1; 7]));
        assert!(o.open(&restarted.seal(b"")).is_ok(), "member 1 restarted");
        assert_eq!(o.open(&live.seal(b"")), Err(Reject::Replay), "its previous run is over");
    }

    /// A key rolled back (A, then B, then A again): what was captured under
    /// the first A stays refused.
    #[test]
    fn a_key_that_comes_back_does_not_reopen_the_windows() {
        let mut s = Sealer::new(&key(1), [1; 16]);
        let mut o = Opener::new(key(1), [2; 16]);
        let captured = s.seal(b"");
        assert!(o.open(&captured).is_ok());
        s.set_key(&key(5));
        o.set_key(key(5));
        assert!(o.open(&s.seal(b"")).is_ok(), "the sender goes on under the new key");
        s.set_key(&key(1));
        o.set_key(key(1));
        assert_eq!(o.open(&captured), Err(Reject::Replay));
        assert!(o.open(&s.seal(b"")).is_ok());
    }

    #[test]
    fn unknown_types_and_longer_bodies_are_skipped() {
        let mut plain = vec![99, 0, 3, 1, 2, 3];
        plain.extend_from_slice(&one(&[Msg::BulkEnd { count: 5 }]));
        plain.extend_from_slice(&[T_DELETE, 0, 17]);
        plain.extend_from_slice(&7u64.to_be_bytes());
        plain.extend_from_slice(&0u64.to_be_bytes());
        plain.push(0xee);
        assert_eq!(decode(&plain), Ok(vec![Msg::BulkEnd { count: 5 }, Msg::Delete { id: 7, gen: 0 }]));
        assert!(decode(&[T_DELETE, 0, 7, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode(&[T_PROGRESS, 0, 10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]).is_err());
        assert!(decode(&[T_DELETE, 0, 15, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn packing_respects_the_size() {
        let mut p = Packer::default();
        for id in 0..200u64 {
            p.progress(id, 1, &[7; 32]).unwrap();
        }
        p.push(&Msg::Upsert { id: 1, gen: 1, record: vec![0; 3000] }).unwrap();
        p.push(&Msg::BulkEnd { count: 200 }).unwrap();
        let v = p.finish();
        let mut ids = Vec::new();
        for (i, plain) in v.iter().enumerate() {
            let msgs = decode(plain).unwrap();
            if plain.len() > MAX_PLAINTEXT {
                assert_eq!(msgs.len(), 1, "a large message goes alone");
            }
            for m in msgs {
                if let Msg::Progress(e) = m {
                    assert!(plain.len() <= MAX_PLAINTEXT, "datagram {i}");
                    ids.extend(e.into_iter().map(|(id, _, _)| id));
                }
            }
        }
        assert_eq!(ids, (0..200).collect::<Vec<_>>());
        assert_eq!(v.len(), 200 * 50 / MAX_PLAINTEXT + 1 + 2);
        let mut p = Packer::default();
        assert_eq!(p.push(&Msg::Upsert { id: 1, gen: 1, record: vec![0; MAX_BODY] }), Err(TooLarge(MAX_BODY + 16)));
    }
}
