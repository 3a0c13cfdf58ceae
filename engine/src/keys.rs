//! Key method 2 and everything derived from it: the message both sides send
//! first inside TLS (protocol reference §8), the client's peer-info (§9), the
//! legacy OpenVPN PRF that turns the exchanged randoms into data keys for
//! pre-2.6 clients (§10.3), cipher negotiation (§12) and the OCC options
//! string the server sends back (§16).
//!
//! Everything here is pure: the caller feeds the plaintext read from TLS and
//! sends what [`KeyMethod2::encode`] returns as one TLS record.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use ring::rand::{SecureRandom, SystemRandom};
use vpnsyncd_config::Cipher;

/// TLS exporter label of the 2.6 data-key derivation (§10.2); the exporter
/// itself lives with the TLS session.
pub const EKM_LABEL: &[u8] = b"EXPORTER-OpenVPN-datakeys";

/// Maximum options string length including its NUL (`TLS_OPTIONS_LEN`).
const OPTIONS_MAX: usize = 512;
/// Maximum username/password length including the NUL (`USER_PASS_LEN` of
/// PKCS#11 builds, the larger of OpenVPN's two values).
const USER_PASS_MAX: usize = 4096;
/// The only key method in use since OpenVPN 2.0.
const KEY_METHOD_2: u8 = 2;

/// The TLS 1.0/1.1 PRF (RFC 2246 §5): P_MD5 over the first half of the
/// secret XOR P_SHA1 over the second half; for odd lengths the halves share
/// the middle byte. OpenVPN keeps using it for pre-2.6 clients.
pub fn tls1_prf(secret: &[u8], seed: &[u8], out: &mut [u8]) {
    let half = secret.len().div_ceil(2);
    out.fill(0);
    p_hash_xor::<Hmac<md5::Md5>>(&secret[..half], seed, out);
    p_hash_xor::<Hmac<sha1::Sha1>>(&secret[secret.len() - half..], seed, out);
}

/// XORs P_hash(secret, seed) (RFC 2246 §5) into `out`.
fn p_hash_xor<M: Mac + KeyInit + Clone>(secret: &[u8], seed: &[u8], out: &mut [u8]) {
    let keyed = <M as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length");
    let mut a = mac(&keyed, &[seed]);
    for chunk in out.chunks_mut(a.len()) {
        let block = mac(&keyed, &[&a, seed]);
        chunk.iter_mut().zip(block.iter()).for_each(|(o, b)| *o ^= b);
        a = mac(&keyed, &[&a]);
    }
}

/// HMAC of the concatenation of `parts` with an already keyed state.
fn mac<M: Mac + Clone>(keyed: &M, parts: &[&[u8]]) -> Vec<u8> {
    let mut m = keyed.clone();
    parts.iter().for_each(|p| m.update(p));
    m.finalize().into_bytes().to_vec()
}

/// The random material one side contributes to the legacy PRF.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySource {
    /// Only the client sends a pre-master secret.
    pub pre_master: Option<[u8; 48]>,
    pub random1: [u8; 32],
    pub random2: [u8; 32],
}

impl KeySource {
    /// Fresh randoms from the OS; `client` adds the pre-master secret.
    ///
    /// # Panics
    /// When the OS random source fails: no key may be made without it.
    pub fn random(client: bool) -> KeySource {
        let rng = SystemRandom::new();
        let fill = |buf: &mut [u8]| rng.fill(buf).expect("the OS random source failed");
        let mut source = KeySource { pre_master: client.then_some([0; 48]), random1: [0; 32], random2: [0; 32] };
        if let Some(pm) = source.pre_master.as_mut() {
            fill(pm);
        }
        fill(&mut source.random1);
        fill(&mut source.random2);
        source
    }
}

/// The pre-master secret and randoms are zeroized when the source goes
/// (once the data keys are derived from it, or with its session).
impl Drop for KeySource {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(pm) = self.pre_master.as_mut() {
            pm.zeroize();
        }
        self.random1.zeroize();
        self.random2.zeroize();
    }
}

/// Secrets are never printed, not even in debug logs.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySource")
            .field("pre_master", &self.pre_master.map(|_| "<secret>"))
            .field("random1", &"<secret>")
            .field("random2", &"<secret>")
            .finish()
    }
}

/// Why a key-method-2 message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMethodError {
    /// The message ends inside a fixed field or a string.
    Truncated,
    /// The method nibble is not 2.
    BadMethod(u8),
    /// A string is not NUL-terminated, or has a NUL inside.
    BadString,
    /// A string is longer than OpenVPN allows for that field.
    TooLong,
    /// A string is not UTF-8.
    NotUtf8,
}

impl fmt::Display for KeyMethodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMethodError::Truncated => f.write_str("key method message truncated"),
            KeyMethodError::BadMethod(m) => write!(f, "unsupported key method {m}"),
            KeyMethodError::BadString => f.write_str("key method string not NUL-terminated"),
            KeyMethodError::TooLong => f.write_str("key method string too long"),
            KeyMethodError::NotUtf8 => f.write_str("key method string not UTF-8"),
        }
    }
}

impl std::error::Error for KeyMethodError {}

/// The key-method-2 message (§8.1).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMethod2 {
    pub source: KeySource,
    pub options: String,
    pub username: String,
    pub password: String,
    pub peer_info: String,
}

/// Secrets are never printed; the options and peer-info are public.
impl fmt::Debug for KeyMethod2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMethod2")
            .field("source", &self.source)
            .field("options", &self.options)
            .field("username", &self.username)
            .field("password", &"<secret>")
            .field("peer_info", &self.peer_info)
            .finish()
    }
}

/// A cursor over the message that fails with `Truncated` instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KeyMethodError> {
        if self.0.len() < n {
            return Err(KeyMethodError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], KeyMethodError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A string as `write_string()` writes it; length 0 is the empty string.
    fn string(&mut self, max: usize) -> Result<String, KeyMethodError> {
        let [hi, lo] = self.array::<2>()?;
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            return Ok(String::new());
        }
        if len > max {
            return Err(KeyMethodError::TooLong);
        }
        let (text, nul) = self.take(len)?.split_at(len - 1);
        if nul != [0] || text.contains(&0) {
            return Err(KeyMethodError::BadString);
        }
        String::from_utf8(text.to_vec()).map_err(|_| KeyMethodError::NotUtf8)
    }

    /// Like [`Reader::string`], but a message that already ended yields the
    /// empty string: older peers stop before the trailing fields.
    fn optional_string(&mut self, max: usize) -> Result<String, KeyMethodError> {
        if self.0.is_empty() {
            return Ok(String::new());
        }
        self.string(max)
    }
}

impl KeyMethod2 {
    /// Parses a peer's message; `from_client` says whether it carries the
    /// pre-master secret. The leading u32 is ignored, as OpenVPN does, and so
    /// are bytes after the peer-info.
    pub fn parse(bytes: &[u8], from_client: bool) -> Result<KeyMethod2, KeyMethodError> {
        let mut r = Reader(bytes);
        r.take(4)?;
        let [method] = r.array::<1>()?;
        if method & 0x0F != KEY_METHOD_2 {
            return Err(KeyMethodError::BadMethod(method));
        }
        let pre_master = if from_client { Some(r.array::<48>()?) } else { None };
        let source = KeySource { pre_master, random1: r.array()?, random2: r.array()? };
        Ok(KeyMethod2 {
            source,
            options: r.string(OPTIONS_MAX)?,
            username: r.optional_string(USER_PASS_MAX)?,
            password: r.optional_string(USER_PASS_MAX)?,
            peer_info: r.optional_string(usize::from(u16::MAX))?,
        })
    }

    /// The message as sent in one TLS record; the pre-master secret is
    /// included iff the source has one (the client's message).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 1 + 48 + 64 + 8 + self.options.len() + self.peer_info.len() + 4);
        out.extend_from_slice(&[0, 0, 0, 0, KEY_METHOD_2]);
        if let Some(pm) = &self.source.pre_master {
            out.extend_from_slice(pm);
        }
        out.extend_from_slice(&self.source.random1);
        out.extend_from_slice(&self.source.random2);
        for s in [&self.options, &self.username, &self.password, &self.peer_info] {
            write_string(&mut out, s);
        }
        out
    }
}

/// `u16 length incl. NUL || bytes || NUL`, or `00 00` for the empty string.
/// Strings are cut at 65534 bytes so the length fits; the fields we send are
/// far shorter.
fn write_string(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() {
        out.extend_from_slice(&[0, 0]);
        return;
    }
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX) - 1)];
    let len = u16::try_from(bytes.len() + 1).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    out.push(0);
}

/// The legacy data-key derivation (§10.3): master secret from the
/// pre-master and the first randoms, then 256 bytes of key2 from the second
/// randoms and both control-channel session ids.
///
/// # Panics
/// When `client` has no pre-master secret: a client message parsed with
/// `from_client = true` always has one.
pub fn prf_key2(client: &KeySource, server: &KeySource, client_sid: &[u8; 8], server_sid: &[u8; 8]) -> [u8; 256] {
    let pre_master = client.pre_master.as_ref().expect("the client's key source has a pre-master secret");
    let mut master = [0; 48];
    let seed = [&b"OpenVPN master secret"[..], &client.random1, &server.random1].concat();
    tls1_prf(pre_master, &seed, &mut master);
    let seed = [&b"OpenVPN key expansion"[..], &client.random2, &server.random2, client_sid, server_sid].concat();
    let mut key2 = [0; 256];
    tls1_prf(&master, &seed, &mut key2);
    key2
}

/// IV_PROTO bits (§9) the server acts on.
const IV_PROTO_DATA_V2: u32 = 1 << 1;
const IV_PROTO_REQUEST_PUSH: u32 = 1 << 2;
const IV_PROTO_TLS_KEY_EXPORT: u32 = 1 << 3;
const IV_PROTO_CC_EXIT_NOTIFY: u32 = 1 << 7;

/// The IV_* variables of the client's peer-info that the server uses (§9).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub version: Option<String>,
    pub platform: Option<String>,
    pub proto: u32,
    pub ncp: u32,
    pub ciphers: Option<Vec<String>>,
    pub mtu: Option<u16>,
    pub comp_stub_v2: bool,
    pub lzo_stub: bool,
}

impl PeerInfo {
    /// Parses `NAME=value` lines. Unknown names and malformed values are
    /// skipped: the text is client-controlled and only advisory.
    pub fn parse(text: &str) -> PeerInfo {
        let mut info = PeerInfo::default();
        for (name, value) in text.lines().filter_map(|l| l.trim_end().split_once('=')) {
            info.set(name, value);
        }
        info
    }

    fn set(&mut self, name: &str, value: &str) {
        match name {
            "IV_VER" => self.version = Some(value.to_owned()),
            "IV_PLAT" => self.platform = Some(value.to_owned()),
            "IV_PROTO" => self.proto = value.parse().unwrap_or(self.proto),
            "IV_NCP" => self.ncp = value.parse().unwrap_or(self.ncp),
            "IV_CIPHERS" => {
                let list = value.split(':').filter(|c| !c.is_empty());
                self.ciphers = Some(list.map(str::to_owned).collect());
            }
            "IV_MTU" => self.mtu = value.parse().ok().or(self.mtu),
            "IV_COMP_STUBv2" => self.comp_stub_v2 = value == "1",
            "IV_LZO_STUB" => self.lzo_stub = value == "1",
            _ => {}
        }
    }

    /// The client understands P_DATA_V2 and a pushed peer-id.
    pub fn data_v2(&self) -> bool {
        self.proto & IV_PROTO_DATA_V2 != 0
    }

    /// The server may push without waiting for PUSH_REQUEST.
    pub fn request_push(&self) -> bool {
        self.proto & IV_PROTO_REQUEST_PUSH != 0
    }

    /// The client can derive data keys with the TLS exporter.
    pub fn tls_ekm(&self) -> bool {
        self.proto & IV_PROTO_TLS_KEY_EXPORT != 0
    }

    /// The client sends and accepts the EXIT control message.
    pub fn cc_exit(&self) -> bool {
        self.proto & IV_PROTO_CC_EXIT_NOTIFY != 0
    }
}

/// The value of the `cipher` item of an OCC options string, if any.
fn occ_cipher(options: &str) -> Option<&str> {
    options.split(',').find_map(|item| item.strip_prefix("cipher "))
}

/// Picks the data-channel cipher for a client (§12). Returns the cipher and
/// whether to push `cipher NAME` (only NCP-capable clients understand it).
/// The error text is meant for the log and AUTH_FAILED reason.
pub fn negotiate_cipher(
    server_list: &[Cipher],
    fallback: Option<Cipher>,
    peer: &PeerInfo,
    occ_options: &str,
) -> Result<(Cipher, bool), String> {
    let client_list: Vec<&str> = match &peer.ciphers {
        Some(list) => list.iter().map(String::as_str).collect(),
        None if peer.ncp >= 2 => vec![Cipher::Aes256Gcm.name(), Cipher::Aes128Gcm.name()],
        None => Vec::new(),
    };
    // A client that sends IV_CIPHERS has its OCC cipher in that list already
    // (or deliberately not, §12); only older clients rely on it.
    let occ = peer.ciphers.is_none().then(|| occ_cipher(occ_options)).flatten();
    let offered = |c: &Cipher| client_list.iter().chain(occ.iter()).any(|n| n.eq_ignore_ascii_case(c.name()));
    let push = !client_list.is_empty();
    if let Some(c) = server_list.iter().copied().find(offered) {
        return Ok((c, push));
    }
    match fallback {
        // The client runs its own `--cipher`: the fallback only fits when the
        // client named none or the same one.
        Some(f) if !push && occ.is_none_or(|o| o.eq_ignore_ascii_case(f.name())) => Ok((f, false)),
        _ => Err(no_shared_cipher(&client_list, occ, server_list)),
    }
}

fn no_shared_cipher(client_list: &[&str], occ: Option<&str>, server_list: &[Cipher]) -> String {
    let mut offers: Vec<&str> = client_list.to_vec();
    offers.extend(occ);
    let offers = if offers.is_empty() { "nothing".to_owned() } else { offers.join(":") };
    let allows: Vec<&str> = server_list.iter().map(|c| c.name()).collect();
    format!("no shared cipher: client offers {offers}, server allows {}", allows.join(":"))
}

/// The options string the server sends back: the client's own, mirrored
/// (§16), which is exactly what the client expects and so logs no warnings.
pub fn server_options_string(client_options: &str) -> String {
    client_options
        .split(',')
        .map(|item| match item {
            "tls-client" => "tls-server",
            "keydir 0" => "keydir 1",
            "keydir 1" => "keydir 0",
            "proto TCPv4_CLIENT" => "proto TCPv4_SERVER",
            "proto TCPv6_CLIENT" => "proto TCPv6_SERVER",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The client frames its data with a compression byte (§13.6).
pub fn uses_compression(client_options: &str) -> bool {
    client_options.split(',').any(|item| item == "comp-lzo")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prf_vector() {
        let mut out = [0; 8];
        tls1_prf(b"tls1-prf-test-secret", b"tls1-prf-test", &mut out);
        assert_eq!(out, [0x71, 0x44, 0xfe, 0x25, 0x40, 0x73, 0x75, 0x95]);
    }

    #[test]
    fn prf_prefix_is_stable() {
        let mut short = [0; 20];
        let mut long = [0; 100];
        tls1_prf(b"odd-length-secret", b"seed", &mut short);
        tls1_prf(b"odd-length-secret", b"seed", &mut long);
        assert_eq!(short, long[..20]);
    }

    const OPTIONS: &str = "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,keydir 1,\
                           auth SHA1,keysize 128,tls-auth,key-method 2,tls-client";
    const EXPECTS: &str = "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,keydir 0,\
                           auth SHA1,keysize 128,tls-auth,key-method 2,tls-server";
    const PEER_INFO: &str = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\n\
                             IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\n\
                             IV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n";

    fn client_message() -> KeyMethod2 {
        KeyMethod2 {
            source: KeySource::random(true),
            options: OPTIONS.to_owned(),
            username: String::new(),
            password: String::new(),
            peer_info: PEER_INFO.to_owned(),
        }
    }

    #[test]
    fn lab_sizes() {
        assert_eq!(OPTIONS.len() + 1, 119);
        assert_eq!(PEER_INFO.len() + 1, 173);
        let client = client_message();
        assert_eq!(client.encode().len(), 417);
        let server = KeyMethod2 {
            source: KeySource::random(false),
            options: server_options_string(OPTIONS),
            username: String::new(),
            password: String::new(),
            peer_info: String::new(),
        };
        assert_eq!(server.encode().len(), 196);
    }

    #[test]
    fn round_trip_client() {
        let mut m = client_message();
        m.username = "alice".into();
        m.password = "s3cret".into();
        let bytes = m.encode();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 2]);
        assert_eq!(KeyMethod2::parse(&bytes, true), Ok(m));
    }

    #[test]
    fn round_trip_server() {
        let m = KeyMethod2 {
            source: KeySource::random(false),
            options: EXPECTS.to_owned(),
            username: String::new(),
            password: String::new(),
            peer_info: String::new(),
        };
        let bytes = m.encode();
        assert_eq!(&bytes[bytes.len() - 6..], &[0; 6]);
        assert_eq!(KeyMethod2::parse(&bytes, false), Ok(m));
    }

    #[test]
    fn missing_trailing_fields_are_empty() {
        let m = client_message();
        let bytes = m.encode();
        let options_end = 4 + 1 + 48 + 64 + 2 + OPTIONS.len() + 1;
        let parsed = KeyMethod2::parse(&bytes[..options_end], true).expect("parses");
        assert_eq!(parsed.options, OPTIONS);
        assert!(parsed.peer_info.is_empty() && parsed.username.is_empty());
    }

    #[test]
    fn rejects_bad_messages() {
        let bytes = client_message().encode();
        let mut bad = bytes.clone();
        bad[4] = 1;
        assert_eq!(KeyMethod2::parse(&bad, true), Err(KeyMethodError::BadMethod(1)));
        let options_nul = 4 + 1 + 48 + 64 + 2 + OPTIONS.len();
        let mut bad = bytes.clone();
        bad[options_nul] = b'x';
        assert_eq!(KeyMethod2::parse(&bad, true), Err(KeyMethodError::BadString));
        let mut bad = bytes.clone();
        bad[117..119].copy_from_slice(&600u16.to_be_bytes());
        assert_eq!(KeyMethod2::parse(&bad, true), Err(KeyMethodError::TooLong));
        for cut in 0..bytes.len() {
            let _ = KeyMethod2::parse(&bytes[..cut], true);
            let _ = KeyMethod2::parse(&bytes[..cut], false);
        }
        assert_eq!(KeyMethod2::parse(&bytes[..100], true), Err(KeyMethodError::Truncated));
    }

    #[test]
    fn debug_hides_secrets() {
        let mut m = client_message();
        m.password = "hunter2".into();
        m.source.random1 = [0xAB; 32];
        let text = format!("{m:?}");
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("171"));
    }

    /// Computed independently with a 10-line Python PRF (hmac/hashlib,
    /// RFC 2246 §5) and the seeds of §10.3.
    #[test]
    fn prf_key2_known_answer() {
        let client = KeySource { pre_master: Some([1; 48]), random1: [2; 32], random2: [3; 32] };
        let server = KeySource { pre_master: None, random1: [4; 32], random2: [5; 32] };
        let key2 = prf_key2(&client, &server, &[6; 8], &[7; 8]);
        assert_eq!(
            key2[..16],
            [0xdf, 0x52, 0xf0, 0x10, 0x93, 0x2d, 0x07, 0x64, 0x26, 0x0f, 0x71, 0x17, 0xf3, 0x67, 0xcf, 0x5d]
        );
        assert_eq!(
            key2[240..],
            [0xa6, 0x5f, 0x1d, 0xde, 0x58, 0x28, 0xe8, 0x07, 0xca, 0xa3, 0x11, 0xa2, 0xf0, 0x31, 0xad, 0x3c]
        );
    }

    #[test]
    fn prf_key2_depends_on_every_input() {
        let c = KeySource::random(true);
        let s = KeySource::random(false);
        let base = prf_key2(&c, &s, &[1; 8], &[2; 8]);
        assert_eq!(base, prf_key2(&c, &s, &[1; 8], &[2; 8]));
        assert_ne!(base, prf_key2(&c, &s, &[2; 8], &[1; 8]));
        let mut s2 = s.clone();
        s2.random1[0] ^= 1;
        assert_ne!(base, prf_key2(&c, &s2, &[1; 8], &[2; 8]));
    }

    #[test]
    fn peer_info_2_6_14() {
        let p = PeerInfo::parse(PEER_INFO);
        assert_eq!(p.version.as_deref(), Some("2.6.14"));
        assert_eq!(p.platform.as_deref(), Some("linux"));
        assert_eq!(p.proto, 990);
        assert_eq!(p.ncp, 2);
        assert_eq!(
            p.ciphers,
            Some(vec!["AES-256-GCM".to_owned(), "AES-128-GCM".to_owned(), "CHACHA20-POLY1305".to_owned()])
        );
        assert_eq!(p.mtu, Some(1600));
        assert!(p.comp_stub_v2 && p.lzo_stub);
        assert!(p.data_v2() && p.request_push() && p.tls_ekm() && p.cc_exit());
    }

    #[test]
    fn peer_info_tolerates_junk() {
        let p = PeerInfo::parse("garbage\nIV_PROTO=abc\nIV_MTU=99999\n=\nIV_PROTO=6\r\n");
        assert_eq!(p.proto, 6);
        assert_eq!(p.mtu, None);
        assert!(p.data_v2() && p.request_push() && !p.tls_ekm() && !p.cc_exit());
    }

    const SERVER: [Cipher; 3] = [Cipher::Aes256Gcm, Cipher::Aes128Gcm, Cipher::Chacha20Poly1305];

    #[test]
    fn negotiate_2_6_default() {
        let peer = PeerInfo::parse(PEER_INFO);
        let server = [Cipher::Chacha20Poly1305, Cipher::Aes256Gcm];
        assert_eq!(negotiate_cipher(&server, None, &peer, OPTIONS), Ok((Cipher::Chacha20Poly1305, true)));
    }

    #[test]
    fn negotiate_2_4_ncp_only() {
        let peer = PeerInfo::parse("IV_VER=2.4.7\nIV_PROTO=2\nIV_NCP=2\n");
        let server = [Cipher::Chacha20Poly1305, Cipher::Aes128Gcm];
        let occ = "V4,cipher BF-CBC,auth SHA1";
        assert_eq!(negotiate_cipher(&server, None, &peer, occ), Ok((Cipher::Aes128Gcm, true)));
    }

    #[test]
    fn negotiate_2_3_occ_cipher() {
        let peer = PeerInfo::parse("IV_VER=2.3.18\n");
        let occ = "V4,dev-type tun,cipher AES-256-CBC,auth SHA1,key-method 2,tls-client";
        let server = [Cipher::Aes256Gcm, Cipher::Aes256Cbc];
        assert_eq!(negotiate_cipher(&server, None, &peer, occ), Ok((Cipher::Aes256Cbc, false)));
    }

    #[test]
    fn occ_cipher_ignored_with_iv_ciphers() {
        let peer = PeerInfo::parse("IV_CIPHERS=AES-128-GCM\n");
        let occ = "V4,cipher AES-256-CBC";
        let server = [Cipher::Aes256Cbc, Cipher::Aes128Gcm];
        assert_eq!(negotiate_cipher(&server, None, &peer, occ), Ok((Cipher::Aes128Gcm, true)));
    }

    #[test]
    fn negotiate_fallback() {
        let peer = PeerInfo::parse("IV_VER=2.3.18\n");
        let fb = Some(Cipher::Aes256Cbc);
        assert_eq!(negotiate_cipher(&SERVER, fb, &peer, "V4,auth SHA1"), Ok((Cipher::Aes256Cbc, false)));
        assert_eq!(negotiate_cipher(&SERVER, fb, &peer, "V4,cipher AES-256-CBC"), Ok((Cipher::Aes256Cbc, false)));
        assert!(negotiate_cipher(&SERVER, fb, &peer, "V4,cipher BF-CBC").is_err());
    }

    #[test]
    fn negotiate_failure() {
        let peer = PeerInfo::parse("IV_CIPHERS=AES-256-CBC:BF-CBC\n");
        assert_eq!(
            negotiate_cipher(&SERVER, Some(Cipher::Aes256Gcm), &peer, ""),
            Err("no shared cipher: client offers AES-256-CBC:BF-CBC, \
                 server allows AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305"
                .to_owned())
        );
        let none = PeerInfo::default();
        assert_eq!(
            negotiate_cipher(&[Cipher::Aes256Gcm], None, &none, "V4"),
            Err("no shared cipher: client offers nothing, server allows AES-256-GCM".to_owned())
        );
    }

    #[test]
    fn options_mirror() {
        assert_eq!(server_options_string(OPTIONS), EXPECTS);
        assert_eq!(
            server_options_string("V4,proto TCPv4_CLIENT,keydir 0,tls-client"),
            "V4,proto TCPv4_SERVER,keydir 1,tls-server"
        );
    }

    #[test]
    fn compression_item() {
        assert!(!uses_compression(OPTIONS));
        assert!(uses_compression("V4,dev-type tun,comp-lzo,auth SHA1"));
    }
}
