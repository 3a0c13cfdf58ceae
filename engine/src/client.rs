//! A client-mode core of the OpenVPN protocol (reset, reliability, TLS,
//! key method 2, push, data channel, renegotiation) as a sans-IO state
//! machine: datagrams in through [`Client::on_datagram`], out through
//! [`Client::outbox`], time through [`Client::on_timer`]. The in-process
//! tests drive it against the real `Server` on a virtual clock; the load
//! generator (vpnsyncd-loadgen) drives thousands of them over real UDP
//! sockets. It speaks what a stock 2.6 client speaks, from the same
//! layers the server uses, so that neither needs a second implementation.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};
use vpnsyncd_config::{Cipher, Digest};

use crate::data::{classify, DataError, DataHeader, DataKey, Payload, PING};
use crate::keys::{self, KeyMethod2, KeySource};
use crate::reliable::Reliable;
use crate::session::Now;
use crate::wire::{ControlBody, ControlPacket, Opcode};
use crate::wrap::{StaticKey, Wrapper};

/// The TLS side of a client: trusts the CA in `ca` (PEM), presents
/// `cert_key` (certificate chain and key, PEM) if given, offers TLS 1.2
/// only if `tls12`. As a stock client with `remote-cert-tls server` and
/// no `verify-x509-name`, it checks the server's chain, not its name.
/// No session resumption: every handshake is a full one, as from a
/// fresh client process.
pub fn tls_config(ca: &[u8], cert_key: Option<(&[u8], &[u8])>, tls12: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        roots.add(c.map_err(|e| format!("CA: {e}"))?).map_err(|e| format!("CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("CA: no certificate in the file".into());
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("CA: {e}"))?;
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls12 { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13, &rustls::version::TLS12] };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyName(inner)));
    let mut config = match cert_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("certificate: {e}"))?;
            if chain.is_empty() {
                return Err("certificate: no certificate in the file".into());
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("certificate and key: {e}"))?
        }
    };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The web PKI verifier less the name check (OpenVPN does not match the
/// server's name unless told to).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The `data-ciphers` of a stock 2.6 client.
pub const DEFAULT_CIPHERS: &str = "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305";

/// The peer-info of a 2.6.14 client offering the data channel ciphers
/// `ciphers` (colon-separated, as `data-ciphers`), less the compression
/// stubs (no framing).
pub fn peer_info_26(ciphers: &str) -> String {
    format!("IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\nIV_CIPHERS={ciphers}\nIV_PROTO=990\n")
}

/// How the client wraps its control channel.
#[derive(Clone)]
pub enum ClientWrap {
    None,
    /// tls-auth with key-direction 1 (the server uses 0).
    TlsAuth(StaticKey, Digest),
    TlsCrypt(StaticKey),
    /// tls-crypt-v2 with the client key `kc` and its wrapped form `wkc`,
    /// which the HARD_RESET_CLIENT_V3 ends in; `early_neg` starts the
    /// replay ids at EARLY_NEG_START as 2.6 clients do.
    TlsCryptV2 {
        kc: StaticKey,
        wkc: Vec<u8>,
        early_neg: bool,
    },
}

/// What a client offers and how it wraps its control channel: what a
/// stock client's profile says.
#[derive(Clone)]
pub struct ClientOptions {
    /// Sent in the key-method message (`IV_*` lines).
    pub peer_info: String,
    pub wrap: ClientWrap,
    /// Digest of CBC data channels.
    pub auth: Digest,
    /// The first PUSH_REQUEST goes out this long after the key exchange
    /// unless a PUSH_REPLY came first; then every 5 s.
    pub push_request_delay: Duration,
    /// `auth-user-pass`: sent in every key-method message.
    pub user_pass: (String, String),
    /// CA, client certificate (if any) and TLS versions: see [`tls_config`].
    pub tls: Arc<ClientConfig>,
}

impl ClientOptions {
    /// The OCC options string a 2.6 client sends (§16); cosmetic only.
    fn occ_string(&self) -> String {
        let (keydir, tls_auth) = match self.wrap {
            ClientWrap::TlsAuth(..) => (",keydir 1", ",tls-auth"),
            _ => ("", ""),
        };
        format!(
            "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4{keydir},auth {},keysize 128{tls_auth},key-method 2,tls-client",
            self.auth.name()
        )
    }
}

/// What the server pushed.
#[derive(Clone, Debug, Default)]
pub struct Pushed {
    pub address: Option<Ipv4Addr>,
    pub peer_id: Option<u32>,
    pub cipher: Option<Cipher>,
    pub ekm: bool,
    pub ping: Option<u32>,
    pub options: Vec<String>,
}

impl Pushed {
    fn parse(options: &[String]) -> Pushed {
        let mut p = Pushed { options: options.to_vec(), ..Pushed::default() };
        for o in options {
            let words: Vec<&str> = o.split(' ').collect();
            match words.as_slice() {
                ["ifconfig", a, _] => p.address = a.parse().ok(),
                ["peer-id", n] => p.peer_id = n.parse().ok(),
                ["cipher", c] => p.cipher = Cipher::from_name(c),
                ["ping", n] => p.ping = n.parse().ok(),
                ["key-derivation", "tls-ekm"] => p.ekm = true,
                ["protocol-flags", flags @ ..] => p.ekm |= flags.contains(&"tls-ekm"),
                _ => {}
            }
        }
        p
    }
}

/// The key_id after `k` (0 is used only once).
pub fn next_key_id(k: u8) -> u8 {
    if k >= 7 {
        1
    } else {
        k + 1
    }
}

/// Length of a server key-method-2 message at the start of `b`, once all
/// of it arrived (fixed part, then four strings).
fn server_key_method_len(b: &[u8]) -> Option<usize> {
    let mut at = 4 + 1 + 32 + 32;
    for _ in 0..4 {
        let len = b.get(at..at + 2)?;
        at += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    }
    (b.len() >= at).then_some(at)
}

/// One key_id of the client.
pub struct ClientKey {
    pub key_id: u8,
    rel: Reliable,
    pub tls: ClientConnection,
    /// TLS goes out once our reset was acknowledged (S_START).
    tls_started: bool,
    tls_out: Vec<u8>,
    source: KeySource,
    km_sent: bool,
    /// The server's key source, once its key-method message arrived.
    server_source: Option<KeySource>,
    plain: Vec<u8>,
    data: Option<DataKey>,
    /// We encrypt with this key (S_ACTIVE: our key-method message was
    /// acknowledged and the server's arrived).
    send_ok: bool,
}

impl ClientKey {
    fn new(key_id: u8, config: &Arc<ClientConfig>, reset: Opcode) -> ClientKey {
        let name = ServerName::try_from("server").expect("a valid DNS name");
        let tls = ClientConnection::new(config.clone(), name).expect("client TLS");
        let mut rel = Reliable::new();
        rel.send(reset, Vec::new());
        ClientKey {
            key_id,
            rel,
            tls,
            tls_started: false,
            tls_out: Vec::new(),
            source: KeySource::random(true),
            km_sent: false,
            server_source: None,
            plain: Vec::new(),
            data: None,
            send_ok: false,
        }
    }
}

/// The client core. Datagrams to send collect in `outbox`; decrypted IP
/// packets in `received`.
pub struct Client {
    pub opts: ClientOptions,
    pub wrap: Wrapper,
    pub sid: [u8; 8],
    pub remote_sid: Option<[u8; 8]>,
    /// Oldest first: the lame duck (if any), then the newest.
    pub keys: Vec<ClientKey>,
    pub outbox: Vec<Vec<u8>>,
    pub received: Vec<Vec<u8>>,
    /// Every control message the server sent.
    pub messages: Vec<String>,
    push_parts: Vec<String>,
    pub pushed: Option<Pushed>,
    pub push_replies: usize,
    pub push_requests: usize,
    push_due: Option<Instant>,
    pub pings_received: usize,
    last_send: Instant,
    /// TLS errors, for test failure messages.
    pub errors: Vec<String>,
    /// Data and control packets refused (a stock client logs a replay or
    /// authentication warning for each).
    pub data_rejected: usize,
    pub control_rejected: usize,
    /// Of `data_rejected`: authentic packets refused for their packet id
    /// (a stock client logs "replay" for each).
    pub replays: usize,
    /// The server's reset asked for our WKc again (crate::earlyneg): our
    /// next reliable packet is a P_CONTROL_WKC_V1.
    resend_wkc: bool,
    /// P_CONTROL_WKC_V1 packets sent, retransmissions included.
    pub wkc_packets: usize,
}

/// Room for TLS bytes in one control packet (a 1250-byte IP datagram).
fn payload_room(wrap: &Wrapper) -> usize {
    1250 - 28 - (1 + 8 + wrap.overhead() + 1 + 4 * 4 + 8 + 4)
}

impl Client {
    /// A client that sends its hard reset at once.
    pub fn new(opts: ClientOptions, now: Now) -> Client {
        let wrap = match &opts.wrap {
            ClientWrap::None => Wrapper::none(),
            ClientWrap::TlsAuth(k, d) => Wrapper::tls_auth(k, Some(1), *d),
            ClientWrap::TlsCrypt(k) => Wrapper::tls_crypt(k, false),
            ClientWrap::TlsCryptV2 { kc, early_neg, .. } => {
                let mut w = Wrapper::tls_crypt(kc, false);
                if *early_neg {
                    w.set_send_state(0x0f00_0000, now.unix as u32);
                }
                w
            }
        };
        let reset = match opts.wrap {
            ClientWrap::TlsCryptV2 { .. } => Opcode::HardResetClientV3,
            _ => Opcode::HardResetClientV2,
        };
        let mut sid = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut sid).unwrap();
        let first = ClientKey::new(0, &opts.tls, reset);
        let mut c = Client {
            opts,
            wrap,
            sid,
            remote_sid: None,
            keys: vec![first],
            outbox: Vec::new(),
            received: Vec::new(),
            messages: Vec::new(),
            push_parts: Vec::new(),
            pushed: None,
            push_replies: 0,
            push_requests: 0,
            push_due: None,
            pings_received: 0,
            last_send: now.mono,
            errors: Vec::new(),
            data_rejected: 0,
            control_rejected: 0,
            replays: 0,
            resend_wkc: false,
            wkc_packets: 0,
        };
        c.flush(0, now);
        c
    }

    /// The newest key_id.
    pub fn key_id(&self) -> u8 {
        self.keys.last().map_or(0, |k| k.key_id)
    }

    /// The key_id we encrypt with.
    pub fn send_key_id(&self) -> Option<u8> {
        self.keys.iter().rev().find(|k| k.send_ok).map(|k| k.key_id)
    }

    pub fn connected(&self) -> bool {
        self.pushed.is_some() && self.send_key_id().is_some()
    }

    pub fn address(&self) -> Option<Ipv4Addr> {
        self.pushed.as_ref().and_then(|p| p.address)
    }

    pub fn on_datagram(&mut self, now: Now, packet: &mut [u8]) {
        let Some(&first) = packet.first() else {
            return;
        };
        match Opcode::from_u8(first >> 3) {
            Some(Opcode::DataV1 | Opcode::DataV2) => self.on_data(packet),
            Some(_) => self.on_control(now, packet),
            None => self.errors.push(format!("unknown opcode in {first:#x}")),
        }
    }

    fn on_data(&mut self, packet: &mut [u8]) {
        let key_id = packet[0] & 7;
        let Some(data) = self.keys.iter_mut().find(|k| k.key_id == key_id).and_then(|k| k.data.as_mut()) else {
            return;
        };
        let payload = match data.decrypt(packet) {
            Ok(p) => p,
            Err(e) => {
                self.data_rejected += 1;
                self.replays += usize::from(matches!(e, DataError::Replay(_)));
                return;
            }
        };
        match classify(payload) {
            Payload::Ping => self.pings_received += 1,
            Payload::Ip => self.received.push(payload.to_vec()),
            Payload::Occ | Payload::OccExit => {}
        }
    }

    fn on_control(&mut self, now: Now, packet: &[u8]) {
        let Ok((first, sid, body)) = self.wrap.unwrap(packet) else {
            self.control_rejected += 1;
            return;
        };
        let Ok(p) = ControlPacket::decode(first, sid, &body) else {
            return;
        };
        match self.remote_sid {
            None if p.opcode == Opcode::HardResetServerV2 && p.key_id == 0 => self.remote_sid = Some(sid),
            Some(r) if r == sid => {}
            _ => return,
        }
        if !p.body.acks.is_empty() && p.body.remote_session_id != Some(self.sid) {
            return;
        }
        // The server renegotiates: follow as a stock client does
        // (ssl.c: tls_pre_decrypt()). Any SOFT_RESET while our newest key
        // works moves our key_id one on, whatever key_id it carries; one
        // under another key_id is then dropped ("local/remote key IDs out
        // of sync") and our own SOFT_RESET goes out.
        let idx = if p.opcode == Opcode::SoftResetV1 && self.keys.last().is_some_and(|k| k.data.is_some()) {
            let id = next_key_id(self.key_id());
            let idx = self.new_key_state(id);
            if p.key_id != id {
                self.flush(idx, now);
                return;
            }
            idx
        } else {
            match self.keys.iter().position(|k| k.key_id == p.key_id) {
                Some(i) => i,
                None => return,
            }
        };
        let ks = &mut self.keys[idx];
        ks.rel.acked(&p.body.acks);
        if let Some(pid) = p.body.msg_pid {
            ks.rel.receive(pid, p.opcode, p.body.payload);
        }
        self.process(idx, now);
    }

    /// Opens key state `key_id` with our SOFT_RESET; the newest key with
    /// data keys stays as the lame duck. Returns its index.
    fn new_key_state(&mut self, key_id: u8) -> usize {
        if let Some(keep) = self.keys.iter().rposition(|k| k.data.is_some()) {
            let mut old = self.keys.swap_remove(keep);
            // The server has its keys: it is established there.
            old.send_ok = true;
            self.keys.clear();
            self.keys.push(old);
        }
        self.keys.push(ClientKey::new(key_id, &self.opts.tls, Opcode::SoftResetV1));
        self.keys.len() - 1
    }

    /// Starts a renegotiation (client side, like `reneg-sec` on the client).
    pub fn renegotiate(&mut self, now: Now) {
        let idx = self.new_key_state(next_key_id(self.key_id()));
        self.flush(idx, now);
    }

    fn process(&mut self, idx: usize, now: Now) {
        let ks = &mut self.keys[idx];
        if !ks.tls_started && ks.rel.all_acked() {
            ks.tls_started = true;
        }
        while let Some((opcode, payload)) = ks.rel.deliver() {
            if opcode == Opcode::HardResetServerV2 {
                // What a 2.6 client reads there; 2.4 and 2.5 feed it to TLS.
                let early_neg = matches!(self.opts.wrap, ClientWrap::TlsCryptV2 { early_neg: true, .. });
                match crate::earlyneg::flags(&payload) {
                    Ok(f) if early_neg => self.resend_wkc = f & crate::earlyneg::RESEND_WKC != 0,
                    Ok(_) if payload.is_empty() => {}
                    Ok(_) => self.errors.push("a reset payload for a client without early negotiation".into()),
                    Err(e) => self.errors.push(e.to_string()),
                }
            }
            if opcode != Opcode::ControlV1 || payload.is_empty() {
                continue;
            }
            let mut rest = &payload[..];
            while !rest.is_empty() {
                // After the server's close_notify rustls reads nothing more
                // (0 bytes, not an error): offering the rest again would spin.
                let r = match ks.tls.read_tls(&mut rest) {
                    Ok(0) => Err("the server closed its TLS session (close_notify) and sent more".to_string()),
                    Ok(_) => ks.tls.process_new_packets().map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = r {
                    self.errors.push(format!("key_id {}: TLS: {e}", ks.key_id));
                    return;
                }
            }
        }
        if !ks.tls.is_handshaking() && !ks.km_sent {
            let km = KeyMethod2 {
                source: ks.source.clone(),
                options: self.opts.occ_string(),
                username: self.opts.user_pass.0.clone(),
                password: self.opts.user_pass.1.clone(),
                peer_info: self.opts.peer_info.clone(),
            };
            ks.tls.writer().write_all(&km.encode()).unwrap();
            ks.km_sent = true;
        }
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = ks.tls.reader().read(&mut buf) {
            ks.plain.extend_from_slice(&buf[..n]);
        }
        if ks.server_source.is_none() && ks.plain.len() >= 5 && ks.plain[4] & 0x0f != 2 {
            // What OpenVPN's key_method_2_read() would see: not a key
            // method message, a fatal TLS error for this key state.
            let head = String::from_utf8_lossy(&ks.plain[..ks.plain.len().min(24)]).into_owned();
            self.errors.push(format!(
                "key_id {}: unknown key_method/flags={} in the server's first plaintext {head:?}",
                ks.key_id, ks.plain[4]
            ));
            ks.plain.clear();
            return;
        }
        if ks.server_source.is_none() {
            if let Some(len) = server_key_method_len(&ks.plain) {
                let bytes: Vec<u8> = ks.plain.drain(..len).collect();
                match KeyMethod2::parse(&bytes, false) {
                    Ok(m) => ks.server_source = Some(m.source),
                    Err(e) => self.errors.push(format!("server key method: {e}")),
                }
                if ks.key_id == 0 {
                    self.push_due = Some(now.mono + self.opts.push_request_delay);
                }
                self.derive(idx);
            }
        }
        let ks = &mut self.keys[idx];
        let mut messages = Vec::new();
        if ks.server_source.is_some() {
            while let Some(end) = ks.plain.iter().position(|b| *b == 0) {
                let m: Vec<u8> = ks.plain.drain(..=end).collect();
                messages.push(String::from_utf8_lossy(&m[..end]).into_owned());
            }
        }
        for m in messages {
            self.message(idx, m);
        }
        self.flush(idx, now);
    }

    fn message(&mut self, idx: usize, m: String) {
        if let Some(rest) = m.strip_prefix("PUSH_REPLY") {
            let mut last = true;
            for o in rest.split(',').filter(|o| !o.is_empty()) {
                match o {
                    "push-continuation 2" => last = false,
                    "push-continuation 1" => {}
                    // As a stock client: the token is the password of
                    // every later key exchange (auth-gen-token renewal).
                    _ if o.starts_with("auth-token ") => {
                        self.opts.user_pass.1 = o["auth-token ".len()..].to_string();
                        self.push_parts.push(o.to_string());
                    }
                    _ => self.push_parts.push(o.to_string()),
                }
            }
            if last {
                let parts = std::mem::take(&mut self.push_parts);
                self.push_replies += 1;
                if self.pushed.is_none() {
                    self.pushed = Some(Pushed::parse(&parts));
                    self.derive(idx);
                }
            }
        }
        self.messages.push(m);
    }

    /// Makes the data keys of key state `idx` once everything they need
    /// is known: the server's key source and (for the cipher and the
    /// derivation) the push.
    fn derive(&mut self, idx: usize) {
        let Some(p) = self.pushed.clone() else {
            return;
        };
        let (Some(remote_sid), auth) = (self.remote_sid, self.opts.auth) else {
            return;
        };
        let ks = &mut self.keys[idx];
        let Some(server) = ks.server_source.as_ref() else {
            return;
        };
        if ks.data.is_some() {
            return;
        }
        let key2 = if p.ekm {
            ks.tls.export_keying_material([0u8; 256], keys::EKM_LABEL, None).unwrap()
        } else {
            keys::prf_key2(&ks.source, server, &self.sid, &remote_sid)
        };
        let cipher = p.cipher.unwrap_or(Cipher::Aes256Gcm);
        ks.data = Some(DataKey::new(cipher, auth, &key2, false));
    }

    /// TLS output into reliable packets, then everything due on the wire.
    fn flush(&mut self, idx: usize, now: Now) {
        let room = payload_room(&self.wrap);
        let ks = &mut self.keys[idx];
        if ks.tls_started {
            while ks.tls.wants_write() {
                if ks.tls.write_tls(&mut ks.tls_out).is_err() {
                    break;
                }
            }
            while !ks.tls_out.is_empty() && ks.rel.can_send() {
                let n = ks.tls_out.len().min(room);
                let part: Vec<u8> = ks.tls_out.drain(..n).collect();
                let op = if std::mem::take(&mut self.resend_wkc) { Opcode::ControlWkcV1 } else { Opcode::ControlV1 };
                ks.rel.send(op, part);
            }
        }
        if ks.data.is_some() && (ks.key_id == 0 || (ks.rel.all_acked() && ks.tls_out.is_empty())) {
            ks.send_ok = true;
        }
        let key_id = ks.key_id;
        let mut due: Vec<(u32, Opcode, Vec<u8>)> = Vec::new();
        ks.rel.transmit(now.mono, |t| due.push((t.pid, t.opcode, t.payload.to_vec())));
        let mut packets = Vec::new();
        for (pid, opcode, payload) in due {
            let acks = ks.rel.take_acks(4);
            packets.push((
                opcode.first_byte(key_id),
                ControlBody {
                    remote_session_id: (!acks.is_empty()).then_some(self.remote_sid).flatten(),
                    acks,
                    msg_pid: Some(pid),
                    payload,
                },
            ));
        }
        if ks.rel.has_acks() {
            packets.push((
                Opcode::AckV1.first_byte(key_id),
                ControlBody {
                    acks: ks.rel.take_acks(8),
                    remote_session_id: self.remote_sid,
                    msg_pid: None,
                    payload: Vec::new(),
                },
            ));
        }
        for (first, body) in packets {
            let mut p = self.wrap.wrap(first, &self.sid, &body.to_bytes(), now.unix as u32).unwrap();
            if let ClientWrap::TlsCryptV2 { wkc, .. } = &self.opts.wrap {
                let op = Opcode::from_u8(first >> 3);
                if matches!(op, Some(Opcode::HardResetClientV3 | Opcode::ControlWkcV1)) {
                    p.extend_from_slice(wkc);
                }
                self.wkc_packets += usize::from(op == Some(Opcode::ControlWkcV1));
            }
            self.outbox.push(p);
            self.last_send = now.mono;
        }
    }

    /// A control message on the newest key state whose keys are made.
    pub fn send_message(&mut self, now: Now, text: &str) {
        let idx = self.keys.iter().rposition(|k| k.server_source.is_some()).expect("a key state past its key exchange");
        let mut m = text.as_bytes().to_vec();
        m.push(0);
        self.keys[idx].tls.writer().write_all(&m).unwrap();
        self.flush(idx, now);
    }

    /// Encrypts `payload` with the current key; false if there is none.
    pub fn send_data(&mut self, now: Now, payload: &[u8]) -> bool {
        let peer_id = self.pushed.as_ref().and_then(|p| p.peer_id);
        let Some(ks) = self.keys.iter_mut().rev().find(|k| k.send_ok) else {
            return false;
        };
        let hdr = DataHeader { key_id: ks.key_id, peer_id };
        let mut out = [0u8; 2048];
        let n = ks.data.as_mut().expect("send_ok keys have data keys").encrypt(hdr, payload, &mut out).unwrap();
        self.outbox.push(out[..n].to_vec());
        self.last_send = now.mono;
        true
    }

    pub fn on_timer(&mut self, now: Now) {
        for idx in 0..self.keys.len() {
            self.flush(idx, now);
        }
        if self.pushed.is_none() && self.push_due.is_some_and(|t| t <= now.mono) {
            self.push_due = Some(now.mono + Duration::from_secs(5));
            self.push_requests += 1;
            self.send_message(now, "PUSH_REQUEST");
        }
        if let Some(ping) = self.pushed.as_ref().and_then(|p| p.ping) {
            if now.mono.duration_since(self.last_send) >= Duration::from_secs(ping.into()) {
                self.send_data(now, &PING);
            }
        }
    }
}
