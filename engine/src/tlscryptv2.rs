//! tls-crypt-v2 keys (protocol reference §4.2): the server key, client
//! key files and the wrapped client key (WKc) that a client appends to its
//! first packets.
//!
//! A client key file holds `Kc || WKc`: Kc is a tls-crypt key of the static
//! key layout, and WKc is Kc plus metadata, encrypted and authenticated
//! with the server key, so a server keeps no list of its clients:
//!
//! ```text
//! WKc = T || AES-256-CTR(Ke, IV = T[0..16], Kc || metadata) || net_len
//! T   = HMAC-SHA256(Ka, net_len || Kc || metadata)
//! ```
//!
//! `net_len` is the u16 length of WKc itself. Both key files are PEM; the
//! formats are those of `openvpn --genkey tls-crypt-v2-server/-client`, so
//! keys move between vpnsyncd and stock OpenVPN in both directions. WKc is
//! not secret (the client sends it in clear), which is why a session record
//! carries WKc and not Kc: the new master unwraps it again with the
//! cluster's server key.

use std::fmt;

use aes::cipher::{KeyIvInit, StreamCipher};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::wrap::StaticKey;

/// The longest WKc a server accepts (OpenVPN's `TLS_CRYPT_V2_MAX_WKC_LEN`).
pub const MAX_WKC_LEN: usize = 1024;
/// Bytes of the tag T.
const TAG_LEN: usize = 32;
/// Bytes of the trailing length.
const LEN_LEN: usize = 2;
/// The shortest WKc: a tag, Kc and the length, no metadata.
pub const MIN_WKC_LEN: usize = TAG_LEN + StaticKey::LEN + LEN_LEN;
/// The longest metadata a client key can carry.
pub const MAX_METADATA_LEN: usize = MAX_WKC_LEN - MIN_WKC_LEN;
/// Metadata type 0x00: user data (the `--genkey` argument, base64-decoded).
pub const METADATA_USER: u8 = 0x00;
/// Metadata type 0x01: the key's creation time, u64 big-endian Unix seconds.
pub const METADATA_TIMESTAMP: u8 = 0x01;

const SERVER_PEM: &str = "OpenVPN tls-crypt-v2 server key";
const CLIENT_PEM: &str = "OpenVPN tls-crypt-v2 client key";

/// Why a key file or a wrapped client key was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// No `-----BEGIN <label>-----` line.
    NoBeginLine(&'static str),
    NoEndLine(&'static str),
    /// A byte that is not base64 (1-based line of the file).
    InvalidChar {
        byte: u8,
        line: usize,
    },
    /// `=` padding in the middle, or a length that is not a multiple of 4.
    BadBase64 {
        line: usize,
    },
    /// The decoded key has the wrong size.
    WrongLength {
        what: &'static str,
        len: usize,
        expected: String,
    },
    /// WKc's tag does not match: made with another server key, or damaged.
    TagMismatch,
    /// WKc's trailing length does not match its size.
    LengthMismatch {
        said: usize,
        len: usize,
    },
    /// The OS random source failed while making a key.
    Random,
    /// A client sent a tls-crypt-v2 packet to a server without a
    /// tls-crypt-v2 server key.
    NotConfigured,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NoBeginLine(label) => write!(f, "no -----BEGIN {label}----- line"),
            KeyError::NoEndLine(label) => write!(f, "no -----END {label}----- line"),
            KeyError::InvalidChar { byte, line } => {
                write!(f, "invalid base64 character '{}' on line {line}", byte.escape_ascii())
            }
            KeyError::BadBase64 { line } => write!(f, "malformed base64 (padding or length) ending on line {line}"),
            KeyError::WrongLength { what, len, expected } => {
                write!(f, "{what} holds {len} bytes, {expected} expected")
            }
            KeyError::TagMismatch => {
                f.write_str("wrapped client key does not authenticate (made with another server key?)")
            }
            KeyError::LengthMismatch { said, len } => {
                write!(f, "wrapped client key says it is {said} bytes long but is {len}")
            }
            KeyError::Random => f.write_str("random source failed"),
            KeyError::NotConfigured => f.write_str("tls-crypt-v2 is not configured (no tls-crypt-v2 statement)"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The server key: `cipher[64] || hmac[64]`, of which Ke = bytes 0..32 and
/// Ka = bytes 64..96 are used.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey([u8; ServerKey::LEN]);

impl Drop for ServerKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for ServerKey {
    /// Never prints key material: Debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(..)")
    }
}

/// What unwrapping WKc yields.
pub struct ClientKey {
    /// The client's tls-crypt key.
    pub kc: StaticKey,
    /// The metadata the key was made with (type byte first), often a
    /// timestamp; never key material.
    pub metadata: Vec<u8>,
}

impl ServerKey {
    pub const LEN: usize = 128;

    /// Parses the PEM file of `openvpn --genkey tls-crypt-v2-server`.
    pub fn parse(text: &[u8]) -> Result<ServerKey, KeyError> {
        let mut bytes = pem_decode(text, SERVER_PEM)?;
        let key = <[u8; Self::LEN]>::try_from(&bytes[..]).map_err(|_| KeyError::WrongLength {
            what: "tls-crypt-v2 server key",
            len: bytes.len(),
            expected: Self::LEN.to_string(),
        });
        zeroize::Zeroize::zeroize(&mut bytes);
        key.map(ServerKey)
    }

    /// A new random server key.
    pub fn generate() -> Result<ServerKey, KeyError> {
        let mut key = [0; Self::LEN];
        SystemRandom::new().fill(&mut key).map_err(|_| KeyError::Random)?;
        Ok(ServerKey(key))
    }

    /// The PEM file, as OpenVPN writes it.
    pub fn to_pem(&self) -> String {
        pem_encode(&self.0, SERVER_PEM)
    }

    fn cipher(&self) -> [u8; 32] {
        self.0[..32].try_into().unwrap_or_default()
    }

    fn hmac(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0[64..96])
    }

    /// A secret for another use (the HMAC cookie), which every server with
    /// this key derives alike: HMAC(Ka, label). No WKc tag is such an HMAC
    /// of a label, since a tag's message starts with WKc's length (at most
    /// 1024) and a label with printable bytes.
    pub fn derive_secret(&self, label: &[u8]) -> hmac::Tag {
        hmac::sign(&self.hmac(), label)
    }

    /// AES-256-CTR with IV = the tag's first 16 bytes (a 128-bit
    /// big-endian counter, as OpenSSL counts).
    fn apply_ctr(&self, tag: &[u8], data: &mut [u8]) {
        let iv: [u8; 16] = tag[..16].try_into().unwrap_or_default();
        let mut cipher = ctr::Ctr128BE::<aes::Aes256>::new(&self.cipher().into(), &iv.into());
        cipher.apply_keystream(data);
    }

    /// Wraps `kc` and `metadata` into WKc.
    pub fn wrap_client_key(&self, kc: &StaticKey, metadata: &[u8]) -> Result<Vec<u8>, KeyError> {
        if metadata.len() > MAX_METADATA_LEN {
            return Err(KeyError::WrongLength {
                what: "tls-crypt-v2 metadata",
                len: metadata.len(),
                expected: format!("at most {MAX_METADATA_LEN}"),
            });
        }
        let len = (MIN_WKC_LEN + metadata.len()) as u16;
        let mut ctx = hmac::Context::with_key(&self.hmac());
        ctx.update(&len.to_be_bytes());
        ctx.update(&kc.0);
        ctx.update(metadata);
        let tag = ctx.sign();
        let mut wkc = Vec::with_capacity(len.into());
        wkc.extend_from_slice(tag.as_ref());
        wkc.extend_from_slice(&kc.0);
        wkc.extend_from_slice(metadata);
        self.apply_ctr(tag.as_ref(), &mut wkc[TAG_LEN..]);
        wkc.extend_from_slice(&len.to_be_bytes());
        Ok(wkc)
    }

    /// Decrypts and authenticates WKc (length first, then the tag in
    /// constant time).
    pub fn unwrap_client_key(&self, wkc: &[u8]) -> Result<ClientKey, KeyError> {
        if !(MIN_WKC_LEN..=MAX_WKC_LEN).contains(&wkc.len()) {
            return Err(KeyError::WrongLength {
                what: "wrapped client key",
                len: wkc.len(),
                expected: format!("{MIN_WKC_LEN} to {MAX_WKC_LEN}"),
            });
        }
        let (body, len) = wkc.split_at(wkc.len() - LEN_LEN);
        let said = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if said != wkc.len() {
            return Err(KeyError::LengthMismatch { said, len: wkc.len() });
        }
        let (tag, ciphertext) = body.split_at(TAG_LEN);
        let mut plain = Vec::with_capacity(LEN_LEN + ciphertext.len());
        plain.extend_from_slice(len);
        plain.extend_from_slice(ciphertext);
        self.apply_ctr(tag, &mut plain[LEN_LEN..]);
        let ok = hmac::verify(&self.hmac(), &plain, tag).is_ok();
        let key = ok.then(|| {
            let mut kc = StaticKey([0; StaticKey::LEN]);
            kc.0.copy_from_slice(&plain[LEN_LEN..LEN_LEN + StaticKey::LEN]);
            ClientKey { kc, metadata: plain[LEN_LEN + StaticKey::LEN..].to_vec() }
        });
        zeroize::Zeroize::zeroize(&mut plain);
        key.ok_or(KeyError::TagMismatch)
    }
}

/// Splits a packet that ends in WKc (HARD_RESET_CLIENT_V3, CONTROL_WKC_V1)
/// into the tls-crypt packet in front and WKc, by WKc's trailing length.
/// The length is only checked for bounds here; unwrapping checks the rest.
pub fn split_wkc(packet: &[u8]) -> Result<(&[u8], &[u8]), KeyError> {
    let n = packet.len();
    let said = match packet.get(n.saturating_sub(LEN_LEN)..) {
        Some(&[a, b]) => usize::from(u16::from_be_bytes([a, b])),
        _ => return Err(KeyError::LengthMismatch { said: 0, len: n }),
    };
    if !(MIN_WKC_LEN..=MAX_WKC_LEN).contains(&said) || said > n {
        return Err(KeyError::LengthMismatch { said, len: n });
    }
    Ok(packet.split_at(n - said))
}

/// A client key file: Kc and WKc.
pub struct ClientKeyFile {
    pub kc: StaticKey,
    pub wkc: Vec<u8>,
}

impl fmt::Debug for ClientKeyFile {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeyFile").field("wkc_len", &self.wkc.len()).finish_non_exhaustive()
    }
}

impl ClientKeyFile {
    /// Makes a client key with a fresh random Kc. Without `user` metadata
    /// it carries the creation time (`now`, Unix seconds), as OpenVPN's.
    pub fn generate(server: &ServerKey, user: Option<&[u8]>, now: u64) -> Result<ClientKeyFile, KeyError> {
        let mut kc = StaticKey([0; StaticKey::LEN]);
        SystemRandom::new().fill(&mut kc.0).map_err(|_| KeyError::Random)?;
        let metadata = match user {
            Some(u) => [&[METADATA_USER][..], u].concat(),
            None => [&[METADATA_TIMESTAMP][..], &now.to_be_bytes()].concat(),
        };
        let wkc = server.wrap_client_key(&kc, &metadata)?;
        Ok(ClientKeyFile { kc, wkc })
    }

    /// Parses the PEM file of `openvpn --genkey tls-crypt-v2-client`. WKc is
    /// only checked for size: a client cannot unwrap it.
    pub fn parse(text: &[u8]) -> Result<ClientKeyFile, KeyError> {
        let mut bytes = pem_decode(text, CLIENT_PEM)?;
        let wkc_len = bytes.len().saturating_sub(StaticKey::LEN);
        let result = if (MIN_WKC_LEN..=MAX_WKC_LEN).contains(&wkc_len) {
            let mut kc = StaticKey([0; StaticKey::LEN]);
            kc.0.copy_from_slice(&bytes[..StaticKey::LEN]);
            Ok(ClientKeyFile { kc, wkc: bytes[StaticKey::LEN..].to_vec() })
        } else {
            Err(KeyError::WrongLength {
                what: "tls-crypt-v2 client key",
                len: bytes.len(),
                expected: format!("{} to {}", StaticKey::LEN + MIN_WKC_LEN, StaticKey::LEN + MAX_WKC_LEN),
            })
        };
        zeroize::Zeroize::zeroize(&mut bytes);
        result
    }

    /// The PEM file, as OpenVPN writes it.
    pub fn to_pem(&self) -> String {
        let mut bytes = [&self.kc.0[..], &self.wkc].concat();
        let pem = pem_encode(&bytes, CLIENT_PEM);
        zeroize::Zeroize::zeroize(&mut bytes);
        pem
    }
}

/// The base64 between `-----BEGIN label-----` and `-----END label-----`;
/// anything before the BEGIN line is ignored, as OpenVPN does.
fn pem_decode(text: &[u8], label: &'static str) -> Result<Vec<u8>, KeyError> {
    let (begin, end) = (format!("-----BEGIN {label}-----"), format!("-----END {label}-----"));
    let mut lines = text.split(|&b| b == b'\n').enumerate();
    lines.by_ref().find(|(_, l)| l.trim_ascii() == begin.as_bytes()).ok_or(KeyError::NoBeginLine(label))?;
    let mut sextets = Vec::with_capacity(text.len());
    let mut padding = 0;
    for (index, line) in lines {
        let line_no = index + 1;
        if line.trim_ascii() == end.as_bytes() {
            return from_sextets(&sextets, padding, line_no);
        }
        for &byte in line.trim_ascii() {
            match (byte, base64_value(byte)) {
                (b'=', _) => padding += 1,
                (_, Some(_)) if padding > 0 => return Err(KeyError::BadBase64 { line: line_no }),
                (_, Some(v)) => sextets.push(v),
                _ => return Err(KeyError::InvalidChar { byte, line: line_no }),
            }
        }
    }
    Err(KeyError::NoEndLine(label))
}

/// Bytes from base64 values; `padding` `=` signs ended the text.
fn from_sextets(sextets: &[u8], padding: usize, line: usize) -> Result<Vec<u8>, KeyError> {
    if padding > 2 || !(sextets.len() + padding).is_multiple_of(4) || sextets.len() % 4 == 1 {
        return Err(KeyError::BadBase64 { line });
    }
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let word = chunk.iter().enumerate().fold(0u32, |w, (i, &v)| w | u32::from(v) << (18 - 6 * i));
        let bytes = word.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 decoding of user metadata given on a command line (no PEM
/// frame, no line breaks).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, KeyError> {
    let t = text.trim();
    let body = t.trim_end_matches('=');
    let sextets = body
        .bytes()
        .map(|b| base64_value(b).ok_or(KeyError::InvalidChar { byte: b, line: 1 }))
        .collect::<Result<Vec<u8>, _>>()?;
    from_sextets(&sextets, t.len() - body.len(), 1)
}

/// PEM with 64-column base64 lines, as OpenSSL's PEM writer makes them.
fn pem_encode(bytes: &[u8], label: &str) -> String {
    let mut b64 = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |w, (i, &v)| w | u32::from(v) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(if i <= chunk.len() { BASE64[(word >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made once with OpenVPN 2.6.14 (see testdata/tlscv2/README).
    const SERVER: &str = include_str!("testdata/tlscv2/server.key");
    const OTHER: &str = include_str!("testdata/tlscv2/other.key");
    const CLIENT: &str = include_str!("testdata/tlscv2/client.key");
    const CLIENT_META: &str = include_str!("testdata/tlscv2/client-meta.key");

    #[test]
    fn openvpn_keys_unwrap() {
        let server = ServerKey::parse(SERVER.as_bytes()).unwrap();
        let client = ClientKeyFile::parse(CLIENT.as_bytes()).unwrap();
        let key = server.unwrap_client_key(&client.wkc).unwrap();
        assert!(key.kc == client.kc, "WKc holds the file's Kc");
        assert_eq!(key.metadata.len(), 9);
        assert_eq!(key.metadata[0], METADATA_TIMESTAMP);
        let made = u64::from_be_bytes(key.metadata[1..].try_into().unwrap());
        assert!((1_700_000_000..2_000_000_000).contains(&made), "a creation time: {made}");

        let meta = ClientKeyFile::parse(CLIENT_META.as_bytes()).unwrap();
        let key = server.unwrap_client_key(&meta.wkc).unwrap();
        assert_eq!(key.metadata, b"\x00hello meta");
        assert!(key.kc == meta.kc);

        let other = ServerKey::parse(OTHER.as_bytes()).unwrap();
        assert!(matches!(other.unwrap_client_key(&client.wkc), Err(KeyError::TagMismatch)));
    }

    #[test]
    fn our_wrapping_matches_openvpns() {
        // Wrapping openvpn's Kc and metadata again gives its WKc byte for byte.
        let server = ServerKey::parse(SERVER.as_bytes()).unwrap();
        for file in [CLIENT, CLIENT_META] {
            let client = ClientKeyFile::parse(file.as_bytes()).unwrap();
            let key = server.unwrap_client_key(&client.wkc).unwrap();
            assert_eq!(server.wrap_client_key(&key.kc, &key.metadata).unwrap(), client.wkc);
            assert_eq!(client.to_pem(), file, "PEM written as openvpn writes it");
        }
        assert_eq!(server.to_pem(), SERVER);
    }

    #[test]
    fn generated_keys_round_trip() {
        let server = ServerKey::generate().unwrap();
        let back = ServerKey::parse(server.to_pem().as_bytes()).unwrap();
        assert!(back == server);
        let client = ClientKeyFile::generate(&server, None, 1_800_000_000).unwrap();
        let parsed = ClientKeyFile::parse(client.to_pem().as_bytes()).unwrap();
        assert_eq!(parsed.wkc, client.wkc);
        let key = server.unwrap_client_key(&parsed.wkc).unwrap();
        assert!(key.kc == client.kc);
        assert_eq!(key.metadata, [&[1u8][..], &1_800_000_000u64.to_be_bytes()].concat());
        let user = ClientKeyFile::generate(&server, Some(b"alice"), 0).unwrap();
        assert_eq!(server.unwrap_client_key(&user.wkc).unwrap().metadata, b"\x00alice");
        assert!(ClientKeyFile::generate(&server, Some(&[0; MAX_METADATA_LEN]), 0).is_err(), "type byte is one more");
        let longest = ClientKeyFile::generate(&server, Some(&[7; MAX_METADATA_LEN - 1]), 0).unwrap();
        assert_eq!(longest.wkc.len(), MAX_WKC_LEN);
        assert!(server.unwrap_client_key(&longest.wkc).is_ok());
    }

    #[test]
    fn every_flipped_bit_of_wkc_is_refused() {
        let server = ServerKey::parse(SERVER.as_bytes()).unwrap();
        let wkc = ClientKeyFile::parse(CLIENT.as_bytes()).unwrap().wkc;
        for bit in 0..wkc.len() * 8 {
            let mut bad = wkc.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = server.unwrap_client_key(&bad).err().expect("refused");
            assert!(matches!(err, KeyError::TagMismatch | KeyError::LengthMismatch { .. }), "bit {bit}: {err}");
        }
    }

    #[test]
    fn wkc_lengths() {
        let server = ServerKey::parse(SERVER.as_bytes()).unwrap();
        for len in [0, 1, 2, MIN_WKC_LEN - 1, MAX_WKC_LEN + 1, 5000] {
            assert!(matches!(server.unwrap_client_key(&vec![0; len]), Err(KeyError::WrongLength { .. })), "{len}");
        }
        let mut wkc = vec![0; MIN_WKC_LEN];
        wkc[MIN_WKC_LEN - 1] = 1;
        assert_eq!(server.unwrap_client_key(&wkc).err(), Some(KeyError::LengthMismatch { said: 1, len: MIN_WKC_LEN }));
    }

    #[test]
    fn split_by_trailing_length() {
        let wkc = ClientKeyFile::parse(CLIENT.as_bytes()).unwrap().wkc;
        let packet = [&b"front part"[..], &wkc].concat();
        assert_eq!(split_wkc(&packet).unwrap(), (&b"front part"[..], &wkc[..]));
        assert_eq!(split_wkc(&wkc).unwrap(), (&b""[..], &wkc[..]));
        for bad in [&b""[..], b"\x01", &wkc[1..], b"\x00\x00", b"\xff\xff"] {
            assert!(split_wkc(bad).is_err(), "{bad:?}");
        }
        let mut long = vec![0; 2000];
        long[1998..].copy_from_slice(&1025u16.to_be_bytes());
        assert!(split_wkc(&long).is_err(), "beyond the 1024-byte bound");
    }

    #[test]
    fn malformed_pem_files() {
        let cases: &[(String, KeyError)] = &[
            (String::new(), KeyError::NoBeginLine(SERVER_PEM)),
            (CLIENT.to_string(), KeyError::NoBeginLine(SERVER_PEM)),
            (SERVER.replace("-----END OpenVPN tls-crypt-v2 server key-----", ""), KeyError::NoEndLine(SERVER_PEM)),
            (SERVER.replace("-----END", "-----FIN"), KeyError::InvalidChar { byte: b'-', line: 5 }),
            (SERVER.replacen("8avu", "8a*u", 1), KeyError::InvalidChar { byte: b'*', line: 2 }),
            (SERVER.replacen("8avu", "8a=u", 1), KeyError::BadBase64 { line: 2 }),
            (SERVER.replacen("8avu", "8avuA", 1), KeyError::BadBase64 { line: 5 }),
            (
                SERVER.replacen("8avu", "", 1),
                KeyError::WrongLength { what: "tls-crypt-v2 server key", len: 125, expected: "128".into() },
            ),
            (SERVER.replace("aQk=", "aQk===="), KeyError::BadBase64 { line: 5 }),
        ];
        for (text, want) in cases {
            assert_eq!(ServerKey::parse(text.as_bytes()).err().as_ref(), Some(want), "{text}");
        }
        // Comments before the frame, CRLF and blank lines are fine.
        let dressed = format!("# made by openvpn\r\n{}", SERVER.replace('\n', "\r\n\r\n"));
        assert!(ServerKey::parse(dressed.as_bytes()).unwrap() == ServerKey::parse(SERVER.as_bytes()).unwrap());
        let short = CLIENT.lines().filter(|l| l.starts_with('-')).collect::<Vec<_>>().join("\n");
        assert!(matches!(ClientKeyFile::parse(short.as_bytes()), Err(KeyError::WrongLength { len: 0, .. })));
        assert_eq!(
            KeyError::InvalidChar { byte: 0xff, line: 3 }.to_string(),
            "invalid base64 character '\\xff' on line 3"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let server = ServerKey::parse(SERVER.as_bytes()).unwrap();
        let mut seed = 0x1234_5678u32;
        for n in 0..2000usize {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let junk: Vec<u8> = (0..n % 1100).map(|i| (seed >> (i % 24)) as u8).collect();
            let _ = server.unwrap_client_key(&junk);
            let _ = split_wkc(&junk);
            let framed = [format!("-----BEGIN {CLIENT_PEM}-----\n").as_bytes(), &junk, b"\n-----END "].concat();
            let _ = ClientKeyFile::parse(&framed);
        }
    }

    /// The per-client wrapper strips the WKc that V3 resets and WKC_V1
    /// packets end in, only when it is the client's own, and leaves other
    /// packets alone.
    #[test]
    fn client_wrapper_and_wkc_packets() {
        use crate::wrap::{WrapError, Wrapper};
        let template = Wrapper::tls_crypt_v2_server(ServerKey::parse(SERVER.as_bytes()).unwrap());
        let file = ClientKeyFile::parse(CLIENT.as_bytes()).unwrap();
        let other = ClientKeyFile::parse(CLIENT_META.as_bytes()).unwrap();
        let mut client = Wrapper::tls_crypt(&file.kc, false);
        let body = b"\x00\x00\x00\x00\x01hello".to_vec();
        let wkc_v1 = [client.wrap(0x58, &[4; 8], &body, 100).unwrap(), file.wkc.clone()].concat();
        let mut server = template.for_v3_reset(&wkc_v1).unwrap();
        assert_eq!(server.wkc(), Some(&file.wkc[..]));
        assert_eq!(server.unwrap(&wkc_v1), Ok((0x58, [4; 8], body.clone())));
        let plain = client.wrap(0x20, &[4; 8], &body, 100).unwrap();
        assert_eq!(server.unwrap(&plain), Ok((0x20, [4; 8], body.clone())));
        let foreign = [client.wrap(0x58, &[4; 8], &body, 100).unwrap(), other.wkc.clone()].concat();
        assert_eq!(server.unwrap(&foreign), Err(WrapError::ClientKey));
        let bare = client.wrap(0x58, &[4; 8], &body, 100).unwrap();
        assert_eq!(server.unwrap(&bare), Err(WrapError::ClientKey), "a WKC_V1 without WKc");
        // The template itself wraps and unwraps nothing.
        assert_eq!(template.verify_only(&plain).err(), Some(WrapError::ClientKey));
        assert!(matches!(Wrapper::none().with_client_key(&file.wkc), Err(KeyError::NotConfigured)));
        let w = format!("{server:?}");
        assert!(w.contains("tls-crypt-v2 client"), "{w}");
    }

    #[test]
    fn command_line_base64() {
        assert_eq!(base64_decode("aGVsbG8gbWV0YQ==").unwrap(), b"hello meta");
        assert_eq!(base64_decode("YWxpY2U=").unwrap(), b"alice");
        assert!(base64_decode("a").is_err());
        assert!(base64_decode("a*==").is_err());
    }

    #[test]
    fn debug_hides_keys() {
        let server = ServerKey::parse(SERVER.as_bytes()).unwrap();
        assert_eq!(format!("{server:?}"), "ServerKey(..)");
        let client = ClientKeyFile::parse(CLIENT.as_bytes()).unwrap();
        assert_eq!(format!("{client:?}"), "ClientKeyFile { wkc_len: 299, .. }");
    }
}
