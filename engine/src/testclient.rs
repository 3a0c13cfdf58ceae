//! An in-process test of the server core: a client-mode OpenVPN core
//! written for tests (reset, reliability, TLS, key method 2, push, data
//! channel, renegotiation) talking to the real `Server` through a network
//! simulator with loss, duplication and reordering, on a virtual clock.
//! Nothing here sleeps: time is `Now` advanced by fixed steps.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use vpnsyncd_common::msg::{KeyKind, Role};
use vpnsyncd_config::{Cipher, Digest};

use crate::client::{self, next_key_id, peer_info_26, Client as TestClient, ClientOptions, ClientWrap};
use crate::data::{OCC_EXIT, OCC_MAGIC};
use crate::server::Server;
use crate::session::Now;
use crate::settings;
use crate::tls::testpki;
use crate::wire::{ControlBody, Opcode};
use crate::wrap::{StaticKey, Wrapper};

// ---------------------------------------------------------------------------
// Deterministic randomness for the network and the test keys.

/// xorshift64: tiny, deterministic, good enough to drop packets.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u32) -> bool {
        self.next() % 1000 < u64::from(per_mille)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A static key (tls-auth / tls-crypt) from a seed.
fn static_key(seed: u64) -> StaticKey {
    let mut rng = Rng::new(seed);
    let mut k = [0u8; StaticKey::LEN];
    k.iter_mut().for_each(|b| *b = rng.next() as u8);
    StaticKey(k)
}

/// The key in the file format of `openvpn --genkey secret`.
fn key_file(k: &StaticKey) -> Vec<u8> {
    let mut s = String::from("#\n# 2048 bit OpenVPN static key\n#\n");
    s.push_str("-----BEGIN OpenVPN Static key V1-----\n");
    for line in k.0.chunks(16) {
        line.iter().for_each(|b| s.push_str(&format!("{b:02x}")));
        s.push('\n');
    }
    s.push_str("-----END OpenVPN Static key V1-----\n");
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// The client: crate::client, with the test PKI.

/// 2.5.11: DATA_V2 and REQUEST_PUSH only; keys from the PRF.
const PEER_INFO_25: &str = "IV_VER=2.5.11\nIV_PLAT=linux\nIV_PROTO=6\nIV_NCP=2\n\
                            IV_CIPHERS=AES-256-GCM:AES-128-GCM\n";
/// 2.4.12: DATA_V2 only: the server must wait for PUSH_REQUEST.
const PEER_INFO_24: &str = "IV_VER=2.4.12\nIV_PLAT=linux\nIV_PROTO=2\nIV_NCP=2\n\
                            IV_CIPHERS=AES-256-GCM:AES-128-GCM:BF-CBC\n";

/// The client TLS of the tests: alice of the test PKI, or no
/// certificate (`no_cert`); TLS 1.2 only if `tls12`.
fn test_tls(tls12: bool, no_cert: bool) -> Arc<ClientConfig> {
    let cert_key = (!no_cert).then_some((testpki::ALICE_CRT, testpki::ALICE_KEY));
    client::tls_config(testpki::CA, cert_key, tls12).expect("the test PKI")
}

impl ClientOptions {
    /// A 2.6 client as alice.
    fn v26(wrap: ClientWrap) -> ClientOptions {
        ClientOptions {
            peer_info: peer_info_26(client::DEFAULT_CIPHERS),
            wrap,
            auth: Digest::Sha1,
            push_request_delay: Duration::from_secs(1),
            user_pass: (String::new(), String::new()),
            tls: test_tls(false, false),
        }
    }
}

// ---------------------------------------------------------------------------
// The network and the lab around client and server.

/// Per-mille rates of one direction.
#[derive(Clone, Copy, Default)]
struct Impair {
    loss: u32,
    dup: u32,
    /// Held back 1..3 steps, so later packets overtake it.
    reorder: u32,
}

const CLEAN: Impair = Impair { loss: 0, dup: 0, reorder: 0 };
const BAD: Impair = Impair { loss: 200, dup: 100, reorder: 150 };

struct Link {
    imp: Impair,
    rng: Rng,
    /// (step at which it arrives, datagram), in sending order.
    queue: Vec<(u64, Vec<u8>)>,
    sent: usize,
    /// Bytes of the datagrams delivered.
    bytes: u64,
    /// What the impairments did: (lost, duplicated, held back).
    harm: (usize, usize, usize),
}

impl Link {
    fn new(imp: Impair, seed: u64) -> Link {
        Link { imp, rng: Rng::new(seed), queue: Vec::new(), sent: 0, bytes: 0, harm: (0, 0, 0) }
    }

    fn send(&mut self, step: u64, p: Vec<u8>) {
        self.sent += 1;
        if self.rng.chance(self.imp.loss) {
            self.harm.0 += 1;
            return;
        }
        let copies = if self.rng.chance(self.imp.dup) {
            self.harm.1 += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let hold = if self.rng.chance(self.imp.reorder) {
                self.harm.2 += 1;
                1 + self.rng.below(3)
            } else {
                0
            };
            self.queue.push((step + 1 + hold, p.clone()));
        }
    }

    fn arrived(&mut self, step: u64) -> Vec<Vec<u8>> {
        let (now, later): (Vec<_>, Vec<_>) = self.queue.drain(..).partition(|(s, _)| *s <= step);
        self.queue = later;
        self.bytes += now.iter().map(|(_, p)| p.len() as u64).sum::<u64>();
        now.into_iter().map(|(_, p)| p).collect()
    }
}

const STEP: Duration = Duration::from_millis(50);
const UNIX0: u64 = 1_790_000_000;
const CLIENT_ADDR: &str = "198.18.0.7:40000";

/// The server configuration with the test PKI.
fn server(extra: &str, wrap_key: Option<&StaticKey>) -> Server {
    let text = format!("ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n{extra}");
    let conf = vpnsyncd_config::parse_str("test", &text, &[]).unwrap();
    let mut keys = vec![
        (KeyKind::Ca, testpki::CA.to_vec()),
        (KeyKind::Certificate, testpki::SERVER_CRT.to_vec()),
        (KeyKind::Key, testpki::SERVER_KEY.to_vec()),
        // What the parent derives from the sync key, for `password token`.
        (KeyKind::AuthToken, vec![0x42; 32]),
    ];
    if let Some(k) = wrap_key {
        keys.push((KeyKind::Wrap, key_file(k)));
    }
    let (session, wrap) = settings::build(&conf, &keys).unwrap();
    Server::new(&conf, session, wrap)
}

pub(super) struct Lab {
    server: Server,
    client: TestClient,
    start: Instant,
    now: Now,
    step: u64,
    up: Link,
    down: Link,
    addr: SocketAddr,
    /// IP packets the server wrote to its tun device.
    tun: Vec<Vec<u8>>,
    /// Drop everything the client sends.
    client_silent: bool,
}

impl Lab {
    fn new(server: Server, opts: ClientOptions, up: Impair, down: Impair, seed: u64) -> Lab {
        let start = Instant::now();
        let now = Now { mono: start, unix: UNIX0 };
        let mut lab = Lab {
            server,
            client: TestClient::new(opts, now),
            start,
            now,
            step: 0,
            up: Link::new(up, seed),
            down: Link::new(down, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            addr: CLIENT_ADDR.parse().unwrap(),
            tun: Vec::new(),
            client_silent: false,
        };
        lab.client_to_link();
        lab
    }

    /// The usual lab: tls-auth (SHA1) like the stock client set-up.
    fn tls_auth(extra: &str, up: Impair, down: Impair, seed: u64) -> Lab {
        let k = static_key(7);
        let server = server(&format!("tls-auth \"/k/ta.key\" direction 0\n{extra}"), Some(&k));
        Lab::new(server, ClientOptions::v26(ClientWrap::TlsAuth(k, Digest::Sha1)), up, down, seed)
    }

    fn set_network(&mut self, up: Impair, down: Impair) {
        self.up.imp = up;
        self.down.imp = down;
    }

    fn elapsed(&self) -> Duration {
        self.now.mono.duration_since(self.start)
    }

    fn client_to_link(&mut self) {
        for p in self.client.outbox.drain(..) {
            if !self.client_silent {
                self.up.send(self.step, p);
            }
        }
    }

    fn server_to_link(&mut self) {
        for (listener, to, p) in self.server.take_sends() {
            assert_eq!((listener, to), (0, self.addr), "answer to the client");
            self.down.send(self.step, p);
        }
    }

    /// One virtual time step: deliver, run the timers, send.
    fn step(&mut self) {
        self.step += 1;
        self.now.mono += STEP;
        self.now.unix = UNIX0 + self.elapsed().as_secs();
        let now = self.now;
        for mut p in self.up.arrived(self.step) {
            if let Some(ip) = self.server.on_datagram(now, 0, self.addr, &mut p) {
                self.tun.push(ip.to_vec());
            }
        }
        self.server.on_timer(now);
        self.server_to_link();
        for mut p in self.down.arrived(self.step) {
            self.client.on_datagram(now, &mut p);
        }
        self.client.on_timer(now);
        self.client_to_link();
    }

    fn run(&mut self, d: Duration) {
        let end = self.now.mono + d;
        while self.now.mono < end {
            self.step();
        }
    }

    /// Steps until `done` holds; false if `limit` of virtual time passed.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Lab) -> bool) -> bool {
        let end = self.now.mono + limit;
        while !done(self) {
            if self.now.mono >= end {
                return false;
            }
            self.step();
        }
        true
    }

    fn connect(&mut self, limit: Duration) {
        let ok = self.run_until(limit, |l| l.client.connected() && !l.server.client_infos().is_empty());
        assert!(
            ok,
            "not connected after {:?}: client errors {:?}, messages {:?}, server sessions {}",
            self.elapsed(),
            self.client.errors,
            self.client.messages,
            self.server.client_count()
        );
    }

    /// A packet from the tun device to the client.
    fn server_sends(&mut self, ip: &[u8]) -> bool {
        let mut out = [0u8; 2048];
        match self.server.seal_tun_packet(self.now, ip, &mut out) {
            Some((listener, to, n)) => {
                assert_eq!((listener, to), (0, self.addr));
                self.down.send(self.step, out[..n].to_vec());
                true
            }
            None => false,
        }
    }

    fn client_sends(&mut self, ip: &[u8]) -> bool {
        let ok = self.client.send_data(self.now, ip);
        self.client_to_link();
        ok
    }

    /// The first session record the server handed to the syncer.
    fn first_record(&self) -> crate::record::SessionRecord {
        self.server
            .sync_out
            .iter()
            .find_map(|o| match o {
                crate::server::SyncOut::Upsert(_, _, r) => Some(crate::record::SessionRecord::decode(r).unwrap()),
                _ => None,
            })
            .expect("the session's record")
    }

    /// Sends `n` packets each way, one pair per step, then lets them
    /// arrive; returns how many arrived (client->server, server->client).
    fn exchange(&mut self, n: u16, tag: u8) -> (usize, usize) {
        let me = self.client.address().expect("an address");
        let (tun0, rx0) = (self.tun.len(), self.client.received.len());
        let mut sent_up = Vec::new();
        let mut sent_down = Vec::new();
        for i in 0..n {
            let up = ipv4(me, LAN_HOST, i, tag);
            assert!(self.client_sends(&up), "client has a key to send with");
            sent_up.push(up);
            let down = ipv4(LAN_HOST, me, i, tag);
            assert!(self.server_sends(&down), "server has a key to send with");
            sent_down.push(down);
            self.step();
        }
        self.run(Duration::from_millis(500));
        let got_up = &self.tun[tun0..];
        let got_down = &self.client.received[rx0..];
        assert!(got_up.iter().all(|p| sent_up.contains(p)), "intact upstream");
        assert!(got_down.iter().all(|p| sent_down.contains(p)), "intact downstream");
        (got_up.len(), got_down.len())
    }

    fn info(&self) -> vpnsyncd_common::ctl::ClientInfo {
        let infos = self.server.client_infos();
        assert_eq!(infos.len(), 1, "one client");
        infos.into_iter().next().unwrap()
    }
}

const LAN_HOST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);

/// A minimal IPv4/UDP packet whose payload names it.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, id: u16, tag: u8) -> Vec<u8> {
    let payload = [tag, (id >> 8) as u8, id as u8, 0x5a, 0xa5, 0x11, 0x22, 0x33];
    let total = 20 + 8 + payload.len();
    let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = p.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    let ulen = (8 + payload.len()) as u16;
    p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
    p.extend_from_slice(&ulen.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&payload);
    p
}

const HAND_WINDOW: Duration = Duration::from_secs(60);

/// The randomized cluster simulation (issue 7), on this client.
mod cluster;

/// client-config-dir, leases, duplicate-cn (issue 9).
mod ccd;

/// Replays and floods of first packets (issue 8).
mod firstpacket;
#[cfg(test)]
mod tlscv2;

/// Username/password checks through a fake parent (issue 9).
mod password;

/// IPv6 inside the tunnel (issue 9).
mod ipv6;

/// The bytes counted per session (issue 9).
mod counters;

/// The management interface's answers and kills (issue 9).
mod mgmt;

/// The idle cost of many sessions under the timer queue (issue 10).
mod idle;

/// A takeover of many sessions in slices (issue 10).
mod takeover;

/// Clients that renegotiate too often (crate::reneglimit).
mod reneg;

/// Clients with valid certificates abusing the control channel or the tunnel.
mod abuse;

/// The data threads' send order (crate::shard).
mod threads;

// ---------------------------------------------------------------------------
// The tests.

/// A super-packet from the tun reaches the client as its segments, each
/// written once into the datagram that carries it and encrypted there
/// (crate::io's path: the offload's pieces, the session's packets, the
/// train), on a socket that records what it is given.
#[test]
fn a_super_packet_from_the_tun_reaches_the_client_as_its_segments() {
    use crate::offload::{segment, VnetHdr, GSO_UDP_L4};
    use crate::train::tests::{Fake, Sent};
    use crate::train::Train;
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 41);
    lab.connect(HAND_WINDOW);
    let me = lab.client.address().unwrap();
    let body: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let mut sup = ipv4(LAN_HOST, me, 9, 1)[..28].to_vec();
    sup[2..4].copy_from_slice(&((28 + body.len()) as u16).to_be_bytes());
    sup.extend_from_slice(&body);
    let hdr = VnetHdr { gso_type: GSO_UDP_L4, gso_size: 1200, ..VnetHdr::default() };
    let mut want = Vec::new();
    segment(&hdr, &mut sup.clone(), 2048, &mut |p| {
        let mut v = vec![0; p.size()];
        p.write(&mut v);
        want.push(v);
    })
    .unwrap();
    assert_eq!(want.len(), 5);
    let (mut train, mut sock, now) = (Train::new(), Fake::default(), lab.now);
    let server = &mut lab.server;
    segment(&hdr, &mut sup, 2048, &mut |p| {
        let id = server.tun_destination(p.head()).expect("routed to the client");
        let o = server.on_tun_packet(now, id, p.size()).expect("a key to send with");
        let ((_, to), len) = (o.to(), o.size());
        assert!(train.push(&mut sock, to, len, |b| o.seal(now, b, |x| p.write(x)).is_some()));
    })
    .unwrap();
    train.flush(&mut sock);
    assert_eq!(sock.sent.len(), if cfg!(target_os = "linux") { 1 } else { 5 }, "one UDP_SEGMENT send");
    for sent in &sock.sent {
        let (to, datagrams) = match sent {
            Sent::Train(to, seg, bytes) => (to, bytes.chunks(*seg).map(<[u8]>::to_vec).collect()),
            Sent::Single(to, d) => (to, vec![d.clone()]),
        };
        assert_eq!(*to, lab.addr);
        for mut d in datagrams {
            lab.client.on_datagram(now, &mut d);
        }
    }
    assert_eq!(lab.client.received, want, "every segment, in order, decrypted by the client");
}

#[test]
fn clean_network_connects_and_passes_data() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 1);
    lab.connect(Duration::from_secs(5));
    assert!(lab.elapsed() < Duration::from_secs(1), "a few round trips");
    assert_eq!(lab.client.address(), Some(Ipv4Addr::new(10, 8, 0, 2)));
    let p = lab.client.pushed.clone().unwrap();
    assert!(p.ekm, "2.6 client: keys from TLS-EKM: {:?}", p.options);
    assert_eq!(p.peer_id, Some(0));
    assert_eq!(p.cipher, Some(Cipher::Aes256Gcm));
    assert_eq!(lab.client.push_requests, 0, "pushed without a request");
    assert_eq!(lab.client.push_replies, 1);

    let info = lab.info();
    assert_eq!(info.common_name, "alice");
    assert_eq!(info.virtual_ip, "10.8.0.2");
    assert_eq!(info.real_address, CLIENT_ADDR);
    assert_eq!(info.cipher, "AES-256-GCM");
    assert_eq!(info.key_id, 0);
    assert_eq!(info.peer_id, 0);

    // One packet each way, checked byte for byte.
    let me = Ipv4Addr::new(10, 8, 0, 2);
    let up = ipv4(me, LAN_HOST, 1, 1);
    assert!(lab.client_sends(&up));
    lab.step();
    assert_eq!(lab.tun, vec![up]);
    let down = ipv4(LAN_HOST, me, 2, 1);
    assert!(lab.server_sends(&down));
    lab.step();
    assert_eq!(lab.client.received, vec![down]);

    assert_eq!(lab.exchange(50, 2), (50, 50));
    let info = lab.info();
    assert!(info.bytes_in > 0 && info.bytes_out > 0);

    // Spoofed source: the server drops it.
    assert!(lab.client_sends(&ipv4(Ipv4Addr::new(10, 8, 0, 3), LAN_HOST, 9, 9)));
    let before = lab.tun.len();
    lab.step();
    assert_eq!(lab.tun.len(), before, "wrong source address dropped");
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
}

#[test]
fn lossy_network_connects_within_the_hand_window() {
    let mut harm = [0usize; 3];
    for seed in 1..=20 {
        let mut lab = Lab::tls_auth("", BAD, BAD, seed);
        lab.connect(HAND_WINDOW);
        assert_eq!(lab.client.address(), Some(Ipv4Addr::new(10, 8, 0, 2)));
        assert_eq!(lab.info().common_name, "alice");
        let (up, down) = lab.exchange(40, 3);
        assert!(up >= 20 && down >= 20, "seed {seed}: {up}/{down} of 40 arrived");
        assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
        for l in [&lab.up, &lab.down] {
            harm[0] += l.harm.0;
            harm[1] += l.harm.1;
            harm[2] += l.harm.2;
        }
    }
    // The network did its worst, in every way.
    assert!(harm.iter().all(|n| *n >= 20), "{harm:?}");
}

/// Renegotiates from the client side (waiting for both sides to use the
/// new key) and returns when done.
fn client_renegotiates(lab: &mut Lab, limit: Duration) {
    let want = next_key_id(lab.client.key_id());
    lab.client.renegotiate(lab.now);
    lab.client_to_link();
    let ok = lab.run_until(limit, |l| l.client.send_key_id() == Some(want) && l.info().key_id == want);
    assert!(
        ok,
        "renegotiation to key_id {want} unfinished after {:?}: client {:?}, server {}, errors {:?}",
        lab.elapsed(),
        lab.client.send_key_id(),
        lab.info().key_id,
        lab.client.errors
    );
}

#[test]
fn client_renegotiates_under_loss_and_no_packet_is_lost_at_the_switch() {
    for seed in 1..=10 {
        let mut lab = Lab::tls_auth("", BAD, BAD, seed);
        lab.connect(HAND_WINDOW);
        client_renegotiates(&mut lab, HAND_WINDOW);
        assert_eq!(lab.info().key_id, 1);
        assert!(lab.info().last_rekey >= UNIX0);
        let (up, down) = lab.exchange(40, 4);
        assert!(up >= 20 && down >= 20, "seed {seed}: {up}/{down} of 40 arrived");
        // Some data still on key 0: the lame duck decrypts it.
        assert_eq!(lab.client.keys.len(), 2, "the old key is kept");

        // The next one on a clean network, with traffic every step while
        // the keys change: nothing may be lost.
        lab.set_network(CLEAN, CLEAN);
        lab.run(Duration::from_millis(500));
        let me = lab.client.address().unwrap();
        let (tun0, rx0) = (lab.tun.len(), lab.client.received.len());
        lab.client.renegotiate(lab.now);
        lab.client_to_link();
        let mut sent = 0u16;
        let mut seen_keys = Vec::new();
        while sent < 400 && !(lab.client.send_key_id() == Some(2) && lab.info().key_id == 2 && sent > 40) {
            assert!(lab.client_sends(&ipv4(me, LAN_HOST, sent, 5)));
            assert!(lab.server_sends(&ipv4(LAN_HOST, me, sent, 5)));
            seen_keys.push(lab.client.send_key_id());
            sent += 1;
            lab.step();
        }
        lab.run(Duration::from_millis(200));
        assert_eq!(lab.info().key_id, 2, "seed {seed}");
        assert!(seen_keys.contains(&Some(1)) && seen_keys.contains(&Some(2)));
        assert_eq!(lab.tun.len() - tun0, usize::from(sent), "seed {seed}: upstream loss at the switch");
        assert_eq!(lab.client.received.len() - rx0, usize::from(sent), "seed {seed}: downstream loss at the switch");
        assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
    }
}

#[test]
fn server_renegotiates_after_reneg_sec() {
    let mut lab = Lab::tls_auth("reneg-sec 10\n", CLEAN, CLEAN, 3);
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.exchange(5, 6), (5, 5));
    // Nothing before reneg-sec.
    lab.run(Duration::from_secs(9));
    assert_eq!(lab.client.key_id(), 0);
    assert_eq!(lab.info().key_id, 0);
    lab.run(Duration::from_secs(2));
    assert_eq!(lab.client.key_id(), 1, "the client followed the server's soft reset");
    assert_eq!(lab.client.send_key_id(), Some(1));
    assert_eq!(lab.info().key_id, 1);
    assert!(lab.info().last_rekey > UNIX0);
    assert_eq!(lab.exchange(20, 7), (20, 20));
    assert_eq!(lab.info().key_id, 1);
    // Every ten seconds for a minute, under loss: renegotiations overlap
    // (the server's timer may fire before the client finished the last
    // one), the session must survive them and converge.
    lab.set_network(BAD, BAD);
    let me = lab.client.address().unwrap();
    let mut max_key = 1;
    for i in 0..120u16 {
        lab.client_sends(&ipv4(me, LAN_HOST, i, 8));
        lab.server_sends(&ipv4(LAN_HOST, me, i, 8));
        lab.run(Duration::from_millis(500));
        max_key = max_key.max(lab.info().key_id);
    }
    assert!(max_key >= 4, "renegotiated every 10 s: key_id {max_key}");
    lab.set_network(CLEAN, CLEAN);
    lab.run(Duration::from_secs(3));
    assert_eq!(lab.exchange(40, 9), (40, 40));
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
}

fn client(peer_info: &str, wrap: ClientWrap) -> ClientOptions {
    ClientOptions { peer_info: peer_info.into(), ..ClientOptions::v26(wrap) }
}

#[test]
fn client_2_5_uses_prf_keys() {
    let k = static_key(7);
    let srv = server("tls-auth \"/k/ta.key\" direction 0\n", Some(&k));
    let opts = client(PEER_INFO_25, ClientWrap::TlsAuth(k, Digest::Sha1));
    let mut lab = Lab::new(srv, opts, CLEAN, CLEAN, 5);
    lab.connect(Duration::from_secs(5));
    let p = lab.client.pushed.clone().unwrap();
    assert!(!p.ekm, "no EKM for IV_PROTO=6: {:?}", p.options);
    assert!(
        !p.options.iter().any(|o| o.starts_with("protocol-flags") || o.starts_with("key-derivation")),
        "{:?}",
        p.options
    );
    assert_eq!(p.cipher, Some(Cipher::Aes256Gcm));
    assert_eq!(p.peer_id, Some(0));
    // Keys from the PRF agree: data passes both ways.
    assert_eq!(lab.exchange(10, 10), (10, 10));
    // A PUSH_REQUEST (as a 2.5 client sends when it waits) is answered
    // again, with the same options.
    lab.client.send_message(lab.now, "PUSH_REQUEST");
    lab.run(Duration::from_millis(200));
    assert_eq!(lab.client.push_replies, 2);
    let replies: Vec<&String> = lab.client.messages.iter().filter(|m| m.starts_with("PUSH_REPLY")).collect();
    assert_eq!(replies[0], replies[1]);
    // The PRF with new randoms and the same session ids on renegotiation.
    client_renegotiates(&mut lab, Duration::from_secs(5));
    assert_eq!(lab.exchange(10, 11), (10, 10));
}

/// A long reply (several continuation parts) is not sent again for the
/// PUSH_REQUESTs that arrive while it is in flight; once delivered, a new
/// request is answered.
#[test]
fn repeated_push_requests_do_not_pile_up_a_long_reply() {
    let routes: String = (0..200).map(|i| format!("push route 10.{i}.0.0/16\n")).collect();
    let mut lab = Lab::new(
        server(&routes, None),
        client(&peer_info_26(client::DEFAULT_CIPHERS), ClientWrap::None),
        CLEAN,
        CLEAN,
        1,
    );
    lab.connect(HAND_WINDOW);
    assert_eq!(lab.client.push_replies, 1);
    let parts = lab.client.messages.iter().filter(|m| m.starts_with("PUSH_REPLY")).count();
    assert!(parts > 3, "the reply is continued: {parts} parts");
    lab.client.send_message(lab.now, "PUSH_REQUEST");
    lab.client.send_message(lab.now, "PUSH_REQUEST");
    lab.run(Duration::from_millis(500));
    assert_eq!(lab.client.push_replies, 2, "the second request came while the first answer was in flight");
    lab.client.send_message(lab.now, "PUSH_REQUEST");
    lab.run(Duration::from_millis(500));
    assert_eq!(lab.client.push_replies, 3, "answered again once delivered");
}

/// A reply past the 64 KiB rustls buffers (3,000 routes, about 100 parts)
/// arrives whole: every route, each part a message of its own.
#[test]
fn a_reply_longer_than_the_tls_buffer_arrives_whole() {
    let routes: String = (0..3000).map(|i| format!("push route 10.{}.{}.0/24\n", 100 + i / 256, i % 256)).collect();
    let mut lab = Lab::new(
        server(&routes, None),
        client(&peer_info_26(client::DEFAULT_CIPHERS), ClientWrap::None),
        CLEAN,
        CLEAN,
        1,
    );
    lab.connect(HAND_WINDOW);
    let parts: Vec<&String> = lab.client.messages.iter().filter(|m| m.starts_with("PUSH_REPLY,")).collect();
    assert!(parts.len() > 64, "{} parts", parts.len());
    let n = parts.iter().flat_map(|m| m.split(',')).filter(|o| o.starts_with("route 10.")).count();
    assert_eq!(n, 3000);
    assert!(parts.last().unwrap().ends_with(",push-continuation 1"));
}

#[test]
fn client_2_4_gets_its_push_reply_on_request_only() {
    for (imp, seed) in [(CLEAN, 1), (BAD, 2), (BAD, 3), (BAD, 4)] {
        let k = static_key(7);
        let srv = server("tls-auth \"/k/ta.key\" direction 0\n", Some(&k));
        let opts = client(PEER_INFO_24, ClientWrap::TlsAuth(k, Digest::Sha1));
        let mut lab = Lab::new(srv, opts, imp, imp, seed);
        lab.connect(HAND_WINDOW);
        assert!(lab.client.push_requests >= 1);
        assert!(lab.elapsed() >= Duration::from_secs(1), "no unsolicited push");
        assert!(!lab.client.pushed.as_ref().unwrap().ekm);
        let (up, down) = lab.exchange(20, 12);
        assert!(up >= 10 && down >= 10, "{up}/{down}");
    }
}

/// tls-crypt, tls-auth with SHA256, and the CBC data channel with SHA256.
#[test]
fn tls_crypt_and_tls_auth_sha256() {
    let k = static_key(99);
    let default = peer_info_26(client::DEFAULT_CIPHERS);
    let cases = [
        ("tls-crypt \"/k/tc.key\"\n", ClientWrap::TlsCrypt(k.clone()), default.as_str(), Digest::Sha1, "AES-256-GCM"),
        (
            "tls-auth \"/k/ta.key\" direction 0 digest sha256\n",
            ClientWrap::TlsAuth(k.clone(), Digest::Sha256),
            default.as_str(),
            Digest::Sha1,
            "AES-256-GCM",
        ),
        (
            "auth sha256\ntls-auth \"/k/ta.key\" direction 0\ndata-ciphers aes-256-cbc\n",
            ClientWrap::TlsAuth(k.clone(), Digest::Sha256),
            "IV_VER=2.6.14\nIV_PLAT=linux\nIV_CIPHERS=AES-256-CBC\nIV_PROTO=990\n",
            Digest::Sha256,
            "AES-256-CBC",
        ),
    ];
    for (conf, wrap, peer_info, auth, cipher) in cases {
        for (imp, seed) in [(CLEAN, 21), (BAD, 22)] {
            let srv = server(conf, Some(&k));
            let opts = ClientOptions { auth, ..client(peer_info, wrap.clone()) };
            let mut lab = Lab::new(srv, opts, imp, imp, seed);
            lab.connect(HAND_WINDOW);
            assert_eq!(lab.info().cipher, cipher, "{conf}");
            let (up, down) = lab.exchange(20, 13);
            assert!(up >= 10 && down >= 10, "{conf}: {up}/{down}");
            client_renegotiates(&mut lab, HAND_WINDOW);
            lab.set_network(CLEAN, CLEAN);
            lab.run(Duration::from_millis(500));
            assert_eq!(lab.exchange(10, 14), (10, 10), "{conf}");
        }
    }
}

/// TLS 1.2 with EKM: the exporter without a context (RFC 5705).
#[test]
fn tls_1_2_client_with_ekm() {
    let mut lab = Lab::new(
        server("", None),
        ClientOptions { tls: test_tls(true, false), ..ClientOptions::v26(ClientWrap::None) },
        CLEAN,
        CLEAN,
        31,
    );
    lab.connect(Duration::from_secs(5));
    assert!(lab.client.pushed.as_ref().unwrap().ekm);
    assert_eq!(lab.client.keys[0].tls.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(lab.exchange(10, 15), (10, 10));
}

/// A client without the right key gets no answer at all, and no session
/// exists for it.
#[test]
fn wrong_static_key_gets_no_answer() {
    let right = static_key(1);
    let wrong = static_key(2);
    let cases = [
        ("tls-auth \"/k/ta.key\" direction 0\n", ClientWrap::TlsAuth(wrong.clone(), Digest::Sha1)),
        // The right key, the wrong direction: no HMAC matches either.
        ("tls-auth \"/k/ta.key\" direction 1\n", ClientWrap::TlsAuth(right.clone(), Digest::Sha1)),
        ("tls-auth \"/k/ta.key\" direction 0 digest sha256\n", ClientWrap::TlsAuth(right.clone(), Digest::Sha1)),
        ("tls-crypt \"/k/tc.key\"\n", ClientWrap::TlsCrypt(wrong.clone())),
        ("tls-crypt \"/k/tc.key\"\n", ClientWrap::None),
    ];
    for (conf, wrap) in cases {
        let mut lab = Lab::new(server(conf, Some(&right)), ClientOptions::v26(wrap), CLEAN, CLEAN, 41);
        lab.run(Duration::from_secs(20));
        assert!(lab.up.sent >= 4, "the client kept trying");
        assert_eq!(lab.down.sent, 0, "{conf}: the server answered");
        assert_eq!(lab.server.client_count(), 0, "{conf}: a session exists");
        assert!(lab.server.client_infos().is_empty());
        assert!(lab.client.remote_sid.is_none());
    }
}

#[test]
fn silent_client_is_dropped_after_the_keepalive_timeout() {
    let mut lab = Lab::tls_auth("keepalive 2 10\n", CLEAN, CLEAN, 51);
    lab.connect(Duration::from_secs(5));
    let p = lab.client.pushed.clone().unwrap();
    assert_eq!(p.ping, Some(2));
    assert!(p.options.contains(&"ping-restart 10".to_string()));
    // A client that pings stays, and the server pings it.
    lab.run(Duration::from_secs(30));
    assert_eq!(lab.server.client_count(), 1);
    assert!(lab.client.pings_received >= 10, "{}", lab.client.pings_received);
    assert!(lab.tun.is_empty(), "pings never reach the tun device");
    // Now silence.
    lab.client_silent = true;
    lab.run(Duration::from_secs(9));
    assert_eq!(lab.server.client_count(), 1, "not yet");
    lab.run(Duration::from_secs(2));
    assert_eq!(lab.server.client_count(), 0, "dropped after 10 s");
    assert!(lab.server.client_infos().is_empty());
    // Its address is free again: a new client gets the same one.
    assert!(!lab.server_sends(&ipv4(LAN_HOST, Ipv4Addr::new(10, 8, 0, 2), 1, 1)));
    reconnect(&mut lab);
}

#[test]
fn an_idle_session_sleeps_in_the_timer_queue_until_its_ping() {
    let mut lab = Lab::tls_auth("keepalive 2 10\n", CLEAN, CLEAN, 52);
    lab.connect(Duration::from_secs(5));
    lab.run(Duration::from_secs(3));
    lab.client_silent = true;
    lab.run(Duration::from_secs(1));
    let next = lab.server.next_timer().expect("the session is queued");
    assert!(next > lab.now.mono, "an idle session is not due at every tick");
    assert!(next <= lab.now.mono + Duration::from_secs(2), "its ping is at most 2 s away");
    let pings = lab.client.pings_received;
    lab.run(Duration::from_secs(5));
    assert!(lab.client.pings_received >= pings + 2, "the queue still sends its pings");
}

/// A data thread's packet touches its session (due at once), but the
/// main thread runs the timers no sooner than its floor: the thread wakes
/// it only when that comes before the end of its wait, so a stream of
/// batches costs the main thread a wake-up per timer run, not per batch.
#[test]
fn a_data_thread_wakes_the_main_thread_only_for_an_earlier_timer_run() {
    use crate::shard::Plane;
    use crate::sleep::MIN_GAP;
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 53);
    lab.connect(Duration::from_secs(5));
    lab.run(Duration::from_secs(1));
    let me = lab.client.address().unwrap();
    assert!(lab.client_sends(&ipv4(me, LAN_HOST, 1, 9)));
    let mut packets = lab.up.arrived(lab.step + 10);
    assert_eq!(packets.len(), 1);
    let placeholder = server("", None);
    let plane = Plane::new(std::mem::replace(&mut lab.server, placeholder), Duration::ZERO);
    let mut plane = crate::shard::lock(&plane);
    let t = lab.now.mono;
    // The main thread ran the timers at t, sent what they queued, and
    // sleeps to its floor.
    assert!(plane.sleep.due(t, Some(t)));
    plane.server.on_timer(lab.now);
    plane.server.outbox.clear();
    plane.server.sync_out.clear();
    plane.main_wakes = t + MIN_GAP;
    let later = Now { mono: t + Duration::from_millis(10), ..lab.now };
    assert!(!plane.wants_main(later.mono), "nothing is touched yet");
    assert!(plane.server.on_datagram(later, 0, lab.addr, &mut packets[0]).is_some());
    assert!(plane.server.next_deadline(later.mono).is_some_and(|d| d <= later.mono), "the session is touched");
    assert!(!plane.wants_main(later.mono), "the main thread runs the timers at its floor anyway");
    // A main thread asleep past its floor (it found nothing due) is woken.
    plane.main_wakes = t + Duration::from_secs(1);
    assert!(plane.wants_main(later.mono), "the touched session would wait for a second");
}

/// A new client (same address, new session) in place of the old one.
fn reconnect(lab: &mut Lab) {
    let opts = lab.client.opts.clone();
    lab.client = TestClient::new(opts, lab.now);
    lab.client_silent = false;
    lab.client_to_link();
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.client.address(), Some(Ipv4Addr::new(10, 8, 0, 2)));
    assert_eq!(lab.exchange(3, 16), (3, 3));
}

#[test]
fn occ_exit_and_exit_message_end_the_session_at_once() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 61);
    lab.connect(Duration::from_secs(5));
    let mut exit = OCC_MAGIC.to_vec();
    exit.push(OCC_EXIT);
    assert!(lab.client_sends(&exit));
    lab.step();
    assert_eq!(lab.server.client_count(), 0, "OCC_EXIT removes the session");
    assert!(lab.tun.is_empty());

    reconnect(&mut lab);
    lab.client.send_message(lab.now, "EXIT");
    lab.client_to_link();
    lab.step();
    assert_eq!(lab.server.client_count(), 0, "EXIT removes the session");
    reconnect(&mut lab);
}

/// A client that restarts (new session id, same address) replaces its
/// old session once the new one authenticates; the old one gives its
/// tunnel address back first.
#[test]
fn restarted_client_replaces_its_session() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 81);
    lab.connect(Duration::from_secs(5));
    let old_sid = lab.client.sid;
    reconnect(&mut lab);
    assert_ne!(lab.client.sid, old_sid);
    assert_eq!(lab.server.client_count(), 1);
    assert_eq!(lab.server.half_open_count(), 0);
    assert_eq!(lab.info().peer_id, 8, "the new session's peer-id (member 1's next)");
}

/// A PUSH_REQUEST that arrives on the old key while a renegotiation is
/// under way (a 2.4 client repeats it every 5 s until answered) must not
/// break the new key state: its answer may only follow the key-method
/// reply (OpenVPN queues it until the key state is active).
#[test]
fn push_request_during_renegotiation() {
    let k = static_key(7);
    let srv = server("tls-auth \"/k/ta.key\" direction 0\n", Some(&k));
    let opts = client(PEER_INFO_24, ClientWrap::TlsAuth(k, Digest::Sha1));
    let mut lab = Lab::new(srv, opts, CLEAN, CLEAN, 71);
    lab.connect(Duration::from_secs(5));
    lab.client.renegotiate(lab.now);
    lab.client.send_message(lab.now, "PUSH_REQUEST");
    lab.client_to_link();
    let ok = lab.run_until(Duration::from_secs(10), |l| l.client.send_key_id() == Some(1) && l.info().key_id == 1);
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
    assert!(ok, "renegotiation unfinished");
    assert_eq!(lab.client.push_replies, 2, "the request was answered");
    assert_eq!(lab.exchange(10, 17), (10, 10));
}

#[test]
fn client_floats_to_a_new_address_once_its_packet_authenticates() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 3);
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.exchange(5, 1), (5, 5));
    // Someone else replays one of the client's packets from elsewhere: the
    // replay window refuses it, the session stays where it is.
    let me = lab.client.address().unwrap();
    assert!(lab.client_sends(&ipv4(me, LAN_HOST, 77, 7)));
    let captured: Vec<Vec<u8>> = lab.up.arrived(u64::MAX);
    assert_eq!(captured.len(), 1);
    let mut first = captured[0].clone();
    assert!(lab.server.on_datagram(lab.now, 0, lab.addr, &mut first).is_some());
    let mut replay = captured[0].clone();
    let elsewhere: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    assert!(lab.server.on_datagram(lab.now, 0, elsewhere, &mut replay).is_none());
    assert_eq!(lab.info().real_address, CLIENT_ADDR, "a replayed packet does not move the session");
    // The client's own new packets from a new address move it.
    lab.addr = "198.51.100.7:5000".parse().unwrap();
    assert!(lab.client_sends(&ipv4(me, LAN_HOST, 78, 8)));
    lab.step();
    assert_eq!(lab.info().real_address, "198.51.100.7:5000");
    assert_eq!(lab.exchange(5, 2), (5, 5), "answers go to the new address");
}

/// Hands what `from` queued for the syncer to `to`, through the imsg
/// encoding the engine and the syncer use (without the syncer's network).
fn sync(from: &mut Server, to: &mut Server, now: Now) {
    for (ty, data) in crate::syncglue::drain(from) {
        crate::syncglue::apply(to, now, ty, &data).unwrap();
    }
}

/// The tls-auth server configuration of cluster member `m`.
fn member(m: u8) -> Server {
    member_with(m, "")
}

fn member_with(m: u8, extra: &str) -> Server {
    let extra = format!(
        "tls-auth \"/k/ta.key\" direction 0\n{extra}\
         sync {{\nrole vip 198.18.0.10 interface eth0\nmulticast interface eth1\nkey /k/s\nmember {m}\n}}\n"
    );
    server(&extra, Some(&static_key(7)))
}

/// Member 1 serves the client as MASTER; member 2 is its BACKUP holding
/// the synced ghost. Also returns the sync imsgs that got it there.
fn cluster(extra: &str) -> (Lab, Server, Vec<(vpnsyncd_common::msg::ImsgType, Vec<u8>)>) {
    let opts = ClientOptions::v26(ClientWrap::TlsAuth(static_key(7), Digest::Sha1));
    let mut lab = Lab::new(member_with(1, extra), opts, CLEAN, CLEAN, 11);
    lab.server.set_role(lab.now, Role::Master);
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.exchange(20, 1), (20, 20));
    let mut backup = member_with(2, extra);
    backup.set_role(lab.now, Role::Backup);
    let first = crate::syncglue::drain(&mut lab.server);
    for (ty, data) in &first {
        crate::syncglue::apply(&mut backup, lab.now, *ty, data).unwrap();
    }
    assert_eq!(backup.client_infos().len(), 1, "the ghost is installed");
    (lab, backup, first)
}

/// Issue 4's takeover, in-process: server A serves the client and streams
/// its record and progress; server B holds a ghost; the last reports are
/// lost with A. B answers the client's next packet at once with packet ids
/// and control replay ids the client accepts, then replaces the copied keys
/// by a renegotiation within the rekey window.
#[test]
fn a_backup_continues_the_session_from_the_synced_record() {
    let mut lab =
        Lab::new(member(1), ClientOptions::v26(ClientWrap::TlsAuth(static_key(7), Digest::Sha1)), CLEAN, CLEAN, 11);
    lab.server.set_role(lab.now, Role::Master);
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.exchange(20, 1), (20, 20));
    let mut backup = member(2);
    backup.set_role(lab.now, Role::Backup);
    sync(&mut lab.server, &mut backup, lab.now);
    assert_eq!(backup.client_infos().len(), 1, "the ghost is installed");
    assert_eq!(lab.exchange(20, 2), (20, 20));
    lab.run(Duration::from_millis(400));
    sync(&mut lab.server, &mut backup, lab.now);
    // Traffic whose progress never leaves A.
    assert_eq!(lab.exchange(50, 3), (50, 50));
    lab.server.sync_out.clear();
    // A dies; B has the VIP.
    std::mem::swap(&mut lab.server, &mut backup);
    lab.server.set_role(lab.now, Role::Master);
    assert_eq!(lab.exchange(20, 4), (20, 20), "B answers at once");
    assert_eq!(lab.info().real_address, CLIENT_ADDR);
    assert_eq!(lab.info().key_id, 0, "still the copied keys");
    lab.run(Duration::from_secs(61));
    assert!(lab.info().key_id >= 1, "B renegotiated within the rekey window");
    assert_eq!(lab.exchange(20, 5), (20, 20), "data on B's own keys");
    assert_eq!(lab.client.data_rejected, 0, "the client accepted every data packet of B");
    assert_eq!(lab.client.control_rejected, 0, "and every control packet");
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
}

/// Issue 7, finding 1: on a BACKUP, neither a junk DATA_V2 carrying the
/// ghost's peer-id, nor tunnel traffic toward its client, nor even the
/// client's own authentic packet promotes the ghost; only the role change
/// does.
#[test]
fn a_ghost_is_promoted_only_by_the_role_change_on_a_backup() {
    let (mut lab, mut backup, _) = cluster("");
    let peer_id = lab.info().peer_id;
    let stranger: SocketAddr = "203.0.113.9:5555".parse().unwrap();
    let mut junk = vec![(9 << 3) as u8, (peer_id >> 16) as u8, (peer_id >> 8) as u8, peer_id as u8];
    junk.extend_from_slice(&[0x5a; 60]);
    assert!(backup.on_datagram(lab.now, 0, stranger, &mut junk).is_none());
    let me = lab.client.address().unwrap();
    let mut out = [0u8; 2048];
    assert!(backup.seal_tun_packet(lab.now, &ipv4(LAN_HOST, me, 1, 9), &mut out).is_none(), "a ghost never sends");
    // The client's real packet reaches the backup too (a stray route).
    assert!(lab.client.send_data(lab.now, &ipv4(me, LAN_HOST, 2, 9)));
    let mut real = lab.client.outbox.last().unwrap().clone();
    assert!(backup.on_datagram(lab.now, 0, lab.addr, &mut real).is_none(), "not served while BACKUP");
    backup.on_timer(lab.now);
    assert!(backup.outbox.is_empty(), "the backup sent nothing");
    assert_eq!(backup.client_count(), 0, "still a ghost");
    assert!(backup.sync_out.is_empty(), "and no record went out");
    backup.set_role(lab.now, Role::Master);
    assert_eq!(backup.client_count(), 1, "the role change promotes it");
}

/// Issue 7, finding 2: the dying master's delayed records reach the new
/// master after its takeover: they change nothing (no counter goes back,
/// no delete goes out) and the client refuses nothing.
#[test]
fn a_delayed_record_never_rolls_back_a_session_the_new_master_serves() {
    let (mut lab, mut backup, first) = cluster("");
    assert_eq!(lab.exchange(30, 2), (30, 30));
    lab.run(Duration::from_millis(400));
    // Records and progress in flight when A dies: they arrive late.
    let late = crate::syncglue::drain(&mut lab.server);
    std::mem::swap(&mut lab.server, &mut backup);
    lab.server.set_role(lab.now, Role::Master);
    assert_eq!(lab.exchange(50, 3), (50, 50), "B serves");
    lab.server.sync_out.clear();
    for (ty, data) in first.iter().chain(&late) {
        crate::syncglue::apply(&mut lab.server, lab.now, *ty, data).unwrap();
    }
    assert_eq!(lab.server.client_count(), 1);
    assert_eq!(lab.server.refusals().live, 1, "A's first record, refused: B serves the session");
    assert!(!lab.server.sync_out.iter().any(|o| matches!(o, crate::server::SyncOut::Delete(..))), "no delete");
    assert_eq!(lab.exchange(50, 4), (50, 50));
    assert_eq!(lab.client.data_rejected, 0, "no packet id went back");
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
}

/// Issue 7, finding 5: after a takeover, the copied keys (a lame duck
/// included) give way to fresh ones, and 20 renegotiations later (key_id
/// wrapped round 7 -> 1 more than twice) the client still has its session
/// and refused nothing.
#[test]
fn twenty_renegotiations_after_a_takeover() {
    let (mut lab, mut backup, _) = cluster("reneg-sec 10\n");
    // A renegotiates once: the record holds a lame duck and the new key.
    lab.run(Duration::from_secs(12));
    assert!(lab.info().key_id >= 1);
    sync(&mut lab.server, &mut backup, lab.now);
    lab.run(Duration::from_millis(300));
    sync(&mut lab.server, &mut backup, lab.now);
    let since = lab.info().connected_since;
    std::mem::swap(&mut lab.server, &mut backup);
    lab.server.set_role(lab.now, Role::Master);
    let mut key_ids = Vec::new();
    for round in 0..24u8 {
        assert_eq!(lab.exchange(10, round), (10, 10), "round {round}");
        lab.run(Duration::from_secs(10));
        key_ids.push(lab.info().key_id);
    }
    let changes = key_ids.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(changes >= 20, "renegotiations: {changes} ({key_ids:?})");
    assert_eq!(lab.info().connected_since, since, "the same session");
    assert_eq!(lab.client.data_rejected, 0);
    assert_eq!(lab.client.control_rejected, 0);
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
}

/// Member 2 takes over from member 1 (the lab's server is then member 2,
/// MASTER). With `ahead`, member 1 renegotiated the client to key_id 1
/// first (`reneg-sec 10` in `extra`: its own; else the client's), and none
/// of it reached member 2.
fn takeover_behind(extra: &str, ahead: bool) -> Lab {
    let (mut lab, mut backup, _) = cluster(extra);
    lab.run(Duration::from_secs(1));
    sync(&mut lab.server, &mut backup, lab.now);
    assert_eq!(backup.client_infos()[0].key_id, 0);
    if ahead {
        if extra.is_empty() {
            lab.client.renegotiate(lab.now);
        }
        assert!(lab.run_until(Duration::from_secs(15), |l| l.info().key_id == 1 && l.client.send_key_id() == Some(1)));
    }
    lab.server.sync_out.clear();
    std::mem::swap(&mut lab.server, &mut backup);
    lab.server.set_role(lab.now, Role::Master);
    lab
}

impl Lab {
    /// A junk DATA_V2 under `key_id` with the session's peer-id, from the
    /// client's address: nothing comes out of it.
    fn forge_data(&mut self, key_id: u8) {
        let peer_id = self.info().peer_id;
        let mut forged = vec![(9 << 3) | key_id, (peer_id >> 16) as u8, (peer_id >> 8) as u8, peer_id as u8];
        forged.extend_from_slice(&[0x5a; 60]);
        let addr = self.addr;
        assert!(self.server.on_datagram(self.now, 0, addr, &mut forged).is_none());
    }

    /// Server and client both use `key_id` within a second; then the last
    /// acknowledgements settle.
    fn on_key_within_a_second(&mut self, key_id: u8) {
        let limit = self.elapsed() + Duration::from_secs(1);
        let done = self.run_until(limit, |l| l.info().key_id == key_id && l.client.send_key_id() == Some(key_id));
        assert!(done, "on key_id {key_id} within a second (key_id now {})", self.info().key_id);
        self.run(Duration::from_millis(500));
    }

    fn client_refused_nothing(&self) {
        assert_eq!(self.client.data_rejected, 0);
        assert_eq!(self.client.control_rejected, 0);
        assert!(self.client.errors.is_empty(), "{:?}", self.client.errors);
    }
}

/// The known liveness gap of the takeover (issue 10): A finishes a
/// renegotiation and dies before its record reaches B, so the client is a
/// key ahead of B's copy. B must not wait for the rekey window nor offer
/// the key_id the client already uses: the client's first data packet
/// under the key B never had makes it renegotiate with the one after, and
/// the session goes on within a second, refusing nothing. Once that is
/// done, a forged packet under the next key_id does not start another.
#[test]
fn a_client_a_key_ahead_of_the_copy_is_caught_up_at_once() {
    let mut lab = takeover_behind("", true);
    // The first packet under key_id 1 starts it (B's own renegotiation
    // would come within the rekey window, 60 s).
    let me = lab.client.address().unwrap();
    assert!(lab.client_sends(&ipv4(me, LAN_HOST, 1, 2)));
    lab.on_key_within_a_second(2);
    assert_eq!(lab.exchange(20, 3), (20, 20), "data both ways on B's own key");
    lab.forge_data(3);
    lab.run(Duration::from_secs(2));
    assert_eq!(lab.info().key_id, 2, "no renegotiation for a forged key_id");
    assert_eq!(lab.exchange(20, 4), (20, 20));
    lab.client_refused_nothing();
}

/// The other side of that gap: A finishes a renegotiation on its side and
/// dies before the client has read A's last key-method message, so the
/// client still sends (and receives) under key_id 0 while B's copy holds
/// key_id 1 too. B must send under the key the client has, not under the
/// newer one it merely copied (the simulation's seed 2704 found it: every
/// packet the new master sent was dropped by the client).
#[test]
fn a_client_a_key_behind_the_copy_gets_its_packets_under_the_old_key() {
    let (mut lab, mut backup, _) = cluster("reneg-sec 10\n");
    lab.run(Duration::from_secs(1));
    sync(&mut lab.server, &mut backup, lab.now);
    // A renegotiates; the moment its side is done, what it sent to the
    // client is lost, and A dies with its record of key_id 1 out.
    let upsert = |l: &Lab| l.server.sync_out.iter().any(|o| matches!(o, crate::server::SyncOut::Upsert(..)));
    assert!(lab.run_until(Duration::from_secs(15), upsert), "A finished key_id 1");
    lab.down.queue.clear();
    lab.set_network(CLEAN, Impair { loss: 1000, ..CLEAN });
    lab.run(Duration::from_millis(500));
    sync(&mut lab.server, &mut backup, lab.now);
    assert_eq!(backup.client_infos()[0].key_id, 1, "B holds key_id 1");
    std::mem::swap(&mut lab.server, &mut backup);
    lab.set_network(CLEAN, CLEAN);
    lab.server.set_role(lab.now, Role::Master);
    lab.run(Duration::from_millis(200));
    assert_eq!(lab.client.send_key_id(), Some(0), "the client never finished key_id 1");
    assert_eq!(lab.exchange(10, 2), (10, 10), "data both ways under key_id 0");
}

/// The same gap when the client stays silent: B's own soft reset comes
/// first (the copied key is past reneg-sec), under the key_id the client
/// already holds. The client moves one past it (what a stock client's
/// answer does) and B follows.
#[test]
fn a_silent_client_a_key_ahead_is_followed_to_the_next_key_id() {
    let mut lab = takeover_behind("reneg-sec 10\n", true);
    lab.on_key_within_a_second(2);
    assert_eq!(lab.exchange(20, 3), (20, 20));
    lab.client_refused_nothing();
}

/// A forged data packet under the next key_id right after a takeover
/// (the client was not ahead): B skips to the key_id after it, the client
/// answers with the one it expects, and B takes the client's: one
/// renegotiation, done within a second, not a hand-window timeout.
#[test]
fn a_forged_key_id_after_a_takeover_costs_one_renegotiation() {
    let mut lab = takeover_behind("", false);
    lab.forge_data(1);
    lab.on_key_within_a_second(1);
    assert_eq!(lab.exchange(20, 3), (20, 20));
    lab.client_refused_nothing();
}

/// Issue 7, finding 7: records that do not fit this member's configuration
/// are refused and counted, never indexed.
#[test]
fn records_that_do_not_fit_the_configuration_are_refused() {
    let opts = ClientOptions::v26(ClientWrap::TlsAuth(static_key(7), Digest::Sha1));
    let mut lab = Lab::new(member(1), opts, CLEAN, CLEAN, 11);
    lab.connect(Duration::from_secs(5));
    let rec = lab.first_record();
    let mut other = member(3);
    let gen = crate::session::Gen::new(1, 1, 9);
    let bad = |f: &dyn Fn(&mut crate::record::SessionRecord)| {
        let mut r = rec.clone();
        f(&mut r);
        r
    };
    let cases = [
        bad(&|r| r.listener = 3),
        bad(&|r| r.peer_id = 0xFF_FFF0),
        bad(&|r| r.negotiated.cipher = vpnsyncd_config::Cipher::Aes256Cbc),
        bad(&|r| r.virtual_ip = Ipv4Addr::new(192, 0, 2, 1)),
    ];
    for r in &cases {
        assert!(matches!(other.install_ghost(lab.now, gen, r), Err(crate::server::Refusal::Invalid(_))));
    }
    assert_eq!(other.refusals().invalid, 4);
    assert!(other.client_infos().is_empty());
    assert!(other.install_ghost(lab.now, gen, &rec).is_ok(), "the record itself fits");
    assert_eq!(
        other.install_ghost(lab.now, crate::session::Gen::new(1, 1, 0), &rec),
        Err(crate::server::Refusal::Stale)
    );
}

#[test]
fn status_report_lists_the_connected_client() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 1);
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.exchange(5, 3), (5, 5));
    let rows = crate::status::rows(&lab.server, lab.now);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!((r.common_name.as_str(), r.virtual_address), ("alice", Ipv4Addr::new(10, 8, 0, 2)));
    assert_eq!((r.real_address.to_string(), r.peer_id, r.cipher), (CLIENT_ADDR.to_string(), 0, "AES-256-GCM"));
    assert!(r.bytes_in > 0 && r.bytes_out > 0);
    assert!(r.connected_since <= r.last_ref && r.last_ref <= lab.now.unix, "{r:?} at {}", lab.now.unix);
    let cluster = crate::status::Cluster { role: vpnsyncd_common::msg::Role::Master, sync: "standalone" };
    let text = crate::status::render(2, lab.now.unix, &rows, cluster, "\n");
    assert!(text.contains("\nCLIENT_LIST,alice,"), "{text}");
}
