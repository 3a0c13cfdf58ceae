//! The first packet under attack (issue 8, item 1): captured resets
//! replayed from many addresses, reset floods without tls-auth, and a
//! replay at a live client's own address. Several real clients and an
//! attacker share one server here, without a lossy link: what is tested is
//! who gets a session, not the network.

use super::*;

/// One server and the real clients around it, by address.
struct Crowd {
    server: Server,
    start: Instant,
    now: Now,
    clients: Vec<(SocketAddr, TestClient)>,
    /// Datagrams the server sent to addresses without a real client
    /// (the attacker's).
    strays: usize,
}

impl Crowd {
    fn new(server: Server) -> Crowd {
        let start = Instant::now();
        Crowd { server, start, now: Now { mono: start, unix: UNIX0 }, clients: Vec::new(), strays: 0 }
    }

    /// A real client at `addr`; returns its index and its first reset as
    /// an eavesdropper captures it.
    fn join(&mut self, addr: &str, opts: ClientOptions) -> (usize, Vec<u8>) {
        let c = TestClient::new(opts, self.now);
        let reset = c.outbox[0].clone();
        let addr = addr.parse().unwrap();
        match self.clients.iter().position(|(a, _)| *a == addr) {
            Some(i) => {
                self.clients[i].1 = c;
                (i, reset)
            }
            None => {
                self.clients.push((addr, c));
                (self.clients.len() - 1, reset)
            }
        }
    }

    fn step(&mut self) {
        self.now.mono += STEP;
        self.now.unix = UNIX0 + self.now.mono.duration_since(self.start).as_secs();
        let now = self.now;
        for (addr, c) in &mut self.clients {
            for mut p in c.outbox.drain(..) {
                self.server.on_datagram(now, 0, *addr, &mut p);
            }
        }
        self.server.on_timer(now);
        for (_, to, mut p) in self.server.outbox.drain(..) {
            match self.clients.iter_mut().find(|(a, _)| *a == to) {
                Some((_, c)) => c.on_datagram(now, &mut p),
                None => self.strays += 1,
            }
        }
        for (_, c) in &mut self.clients {
            c.on_timer(now);
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now.mono + d;
        while self.now.mono < end {
            self.step();
        }
    }

    /// Steps until client `i` is connected (at most 5 s); false if not.
    fn connect(&mut self, i: usize) -> bool {
        let end = self.now.mono + Duration::from_secs(5);
        while !self.clients[i].1.connected() {
            if self.now.mono >= end {
                return false;
            }
            self.step();
        }
        true
    }

    /// The attacker's datagram from `from`.
    fn inject(&mut self, from: SocketAddr, p: &[u8]) {
        let mut p = p.to_vec();
        assert!(self.server.on_datagram(self.now, 0, from, &mut p).is_none());
    }

    /// Whether a packet client `i` sends now reaches the tun device.
    fn data_flows(&mut self, i: usize, id: u16) -> bool {
        let (addr, c) = &mut self.clients[i];
        let Some(me) = c.address() else { return false };
        assert!(c.send_data(self.now, &ipv4(me, LAN_HOST, id, 9)));
        // Acknowledgements may be queued before it: they reach no tun.
        let sent: Vec<Vec<u8>> = c.outbox.drain(..).collect();
        sent.into_iter().filter(|p| self.server.on_datagram(self.now, 0, *addr, &mut p.clone()).is_some()).count() == 1
    }

    /// The server's record of the session at `addr`: (peer-id, tunnel address).
    fn session_at(&self, addr: &str) -> Option<(u32, String)> {
        let infos = self.server.client_infos();
        infos.into_iter().find(|c| c.real_address == addr).map(|c| (c.peer_id, c.virtual_ip))
    }
}

fn tls_auth_crowd(extra: &str) -> (Crowd, ClientOptions) {
    let k = static_key(8);
    let server = server(&format!("tls-auth \"/k/ta.key\" direction 0\n{extra}"), Some(&k));
    (Crowd::new(server), ClientOptions::v26(ClientWrap::TlsAuth(k, Digest::Sha1)))
}

fn plain_crowd(extra: &str) -> (Crowd, ClientOptions) {
    (Crowd::new(server(extra, None)), ClientOptions::v26(ClientWrap::None))
}

/// `reset` under another client session id (only possible unwrapped).
fn forged(reset: &[u8], n: u64) -> Vec<u8> {
    let mut p = reset.to_vec();
    p[1..9].copy_from_slice(&(n ^ 0x5eed_0000_0000_0000).to_be_bytes());
    p
}

const SECOND: &str = "198.18.0.8:40000";

#[test]
fn a_reset_replayed_from_300_addresses_makes_no_session() {
    let (mut crowd, opts) = tls_auth_crowd("max clients 10\n");
    let (live, captured) = crowd.join(CLIENT_ADDR, opts.clone());
    assert!(crowd.connect(live));
    let before = crowd.session_at(CLIENT_ADDR).expect("the live session");
    for i in 0..300u32 {
        let from = SocketAddr::from(([203, 0, (i / 200) as u8, (i % 200 + 1) as u8], 1024 + i as u16));
        crowd.inject(from, &captured);
    }
    assert_eq!(crowd.server.half_open_count(), 0, "no half-open session from a replay");
    assert_eq!(crowd.strays, 0, "the replays got no answer");
    assert_eq!(crowd.server.refused_first_packets(), 300);
    // The live client keeps its session and a new real client connects.
    assert!(crowd.data_flows(live, 1));
    let (second, _) = crowd.join(SECOND, opts);
    assert!(crowd.connect(second), "a new real client connects during the replay");
    assert_eq!(crowd.server.client_count(), 2);
    assert_eq!(crowd.session_at(CLIENT_ADDR), Some(before), "the live session is the same");
    assert!(crowd.data_flows(live, 2) && crowd.data_flows(second, 3));
    // A minute later the capture is stale, and still refused.
    crowd.run(Duration::from_secs(62));
    crowd.inject("203.0.113.1:999".parse().unwrap(), &captured);
    assert_eq!(crowd.server.half_open_count(), 0);
    assert_eq!(crowd.server.refused_first_packets(), 301);
    assert_eq!(crowd.strays, 0);
}

#[test]
fn ten_thousand_resets_without_tls_auth_leave_room_for_real_clients() {
    let (mut crowd, opts) = plain_crowd("max clients 10\n");
    let (live, reset) = crowd.join(CLIENT_ADDR, opts.clone());
    assert!(crowd.connect(live));
    let before = crowd.session_at(CLIENT_ADDR).expect("the live session");
    for n in 0..10_000u64 {
        let from = SocketAddr::from(([203, 0, 113, 66], 20_000 + (n % 5_000) as u16));
        crowd.inject(from, &forged(&reset, n));
    }
    assert_eq!(crowd.server.half_open_count(), crate::admission::PER_IP, "one source holds 4 half-open sessions");
    // Refused: all but the first 4, and the 4 that came again from their
    // ports 5,000 resets later (a new handshake from an address replaces
    // its unfinished one).
    assert_eq!(crowd.server.refused_first_packets(), 10_000 - 2 * crate::admission::PER_IP as u64);
    assert!(crowd.strays <= 2 * crate::admission::PER_IP, "{} answers to the flood", crowd.strays);
    let (second, _) = crowd.join(SECOND, opts);
    assert!(crowd.connect(second), "a new real client connects during the flood");
    assert_eq!(crowd.server.client_count(), 2);
    assert_eq!(crowd.session_at(CLIENT_ADDR), Some(before));
    assert!(crowd.data_flows(live, 1) && crowd.data_flows(second, 2));
    // The unfinished handshakes expire with the hand window.
    crowd.run(Duration::from_secs(61));
    assert_eq!(crowd.server.half_open_count(), 0);
    assert_eq!(crowd.server.client_count(), 2);
}

/// `max clients 2`, one client connected and 60 half-open sessions from
/// 15 addresses: a second client still gets in, a third is refused once
/// its key exchange is done, and nobody established is evicted.
#[test]
fn half_open_sessions_never_count_against_max_clients() {
    let (mut crowd, opts) = plain_crowd("max clients 2\n");
    let (live, reset) = crowd.join(CLIENT_ADDR, opts.clone());
    assert!(crowd.connect(live));
    for n in 0..60u64 {
        let from = SocketAddr::from(([203, 0, 113, 1 + (n / 4) as u8], 30_000 + n as u16));
        crowd.inject(from, &forged(&reset, n));
    }
    assert_eq!(crowd.server.half_open_count(), 60);
    assert_eq!(crowd.server.client_count(), 1, "half-open sessions are not clients");
    let (second, _) = crowd.join(SECOND, opts.clone());
    assert!(crowd.connect(second));
    assert_eq!(crowd.server.client_count(), 2);
    let (third, _) = crowd.join("198.18.0.9:40000", opts);
    assert!(!crowd.connect(third), "max clients 2");
    assert_eq!(crowd.server.client_count(), 2);
    assert!(crowd.session_at("198.18.0.9:40000").is_none());
    assert!(crowd.data_flows(live, 1) && crowd.data_flows(second, 2));
    // The table is full (64): a new first packet is dropped, unanswered.
    for n in 100..110u64 {
        crowd.inject(SocketAddr::from(([203, 0, 114, n as u8], 4000)), &forged(&reset, n));
    }
    assert!(crowd.server.half_open_count() <= crate::admission::half_open_cap(2));
    assert_eq!(crowd.server.client_count(), 2);
}

#[test]
fn a_reset_replayed_at_the_live_address_never_ends_its_session() {
    // tls-auth: the client restarted once; its first reset, and the
    // current one, come again from its address.
    let (mut crowd, opts) = tls_auth_crowd("");
    let (live, old_reset) = crowd.join(CLIENT_ADDR, opts.clone());
    assert!(crowd.connect(live));
    let first = crowd.session_at(CLIENT_ADDR).expect("a session");
    let (_, new_reset) = crowd.join(CLIENT_ADDR, opts);
    assert!(crowd.connect(live), "a real restart still connects");
    let now = crowd.session_at(CLIENT_ADDR).expect("the new session");
    assert_ne!(now.0, first.0, "the restart made a new session");
    assert_eq!(now.1, first.1, "which took the old one's tunnel address");
    assert_eq!(crowd.server.client_count(), 1, "the old session went once the new one authenticated");
    let addr = CLIENT_ADDR.parse().unwrap();
    crowd.inject(addr, &old_reset);
    crowd.inject(addr, &new_reset);
    crowd.run(Duration::from_secs(1));
    assert_eq!(crowd.server.half_open_count(), 0);
    assert_eq!(crowd.session_at(CLIENT_ADDR), Some(now.clone()));
    assert!(crowd.data_flows(live, 1));

    // Without tls-auth a forged reset from the address starts a
    // handshake beside the session, which lives on when it expires.
    let (mut crowd, opts) = plain_crowd("keepalive 5 120\n");
    let (live, reset) = crowd.join(CLIENT_ADDR, opts);
    assert!(crowd.connect(live));
    let before = crowd.session_at(CLIENT_ADDR).expect("a session");
    crowd.inject(addr, &forged(&reset, 1));
    assert_eq!(crowd.server.half_open_count(), 1);
    assert_eq!(crowd.server.client_count(), 1);
    assert!(crowd.data_flows(live, 2), "data still reaches the live session");
    crowd.run(Duration::from_secs(61));
    assert_eq!(crowd.server.half_open_count(), 0, "the forged handshake expired");
    assert_eq!(crowd.session_at(CLIENT_ADDR), Some(before));
    assert!(crowd.data_flows(live, 3));
}

// The stateless first packet (crate::cookie): with tls-auth/tls-crypt a
// reset is answered and forgotten; the client's next packet makes the
// session.

/// Our reset (its session id is the cookie) in answer to `reset`, sent to
/// `from` without anything kept.
fn stateless_answer(crowd: &mut Crowd, from: SocketAddr, reset: &[u8]) -> Vec<u8> {
    let before = crowd.server.sessions().count();
    crowd.inject(from, reset);
    assert_eq!(crowd.server.sessions().count(), before, "no session for a reset");
    assert_eq!(crowd.server.half_open_count(), 0, "no half-open session for a reset");
    let mut out: Vec<_> = crowd.server.outbox.drain(..).collect();
    assert_eq!(out.len(), 1, "one answer");
    let (_, to, answer) = out.pop().unwrap();
    assert_eq!(to, from);
    assert_eq!(answer[0], Opcode::HardResetServerV2.first_byte(0));
    answer
}

/// An acknowledgement of our reset under `cookie`, as client session
/// `sid` wrapped by `wrap` would send it.
fn ack(wrap: &mut Wrapper, sid: [u8; 8], cookie: [u8; 8], unix: u64) -> Vec<u8> {
    let body = ControlBody { acks: vec![0], remote_session_id: Some(cookie), msg_pid: None, payload: Vec::new() };
    wrap.wrap(Opcode::AckV1.first_byte(0), &sid, &body.to_bytes(), unix as u32).unwrap()
}

/// A 2.6 client's reset of session `sid`, wrapped by `wrap`.
fn reset_of(wrap: &mut Wrapper, sid: [u8; 8], unix: u64) -> Vec<u8> {
    let body = ControlBody { msg_pid: Some(0), ..Default::default() };
    wrap.wrap(Opcode::HardResetClientV2.first_byte(0), &sid, &body.to_bytes(), unix as u32).unwrap()
}

#[test]
fn a_client_connects_through_the_cookie_with_no_state_after_its_reset() {
    let k = static_key(8);
    for (conf, wrap) in [
        ("tls-auth \"/k/ta.key\" direction 0\n", ClientWrap::TlsAuth(k.clone(), Digest::Sha1)),
        ("tls-crypt \"/k/tc.key\"\n", ClientWrap::TlsCrypt(k.clone())),
    ] {
        let mut crowd = Crowd::new(server(conf, Some(&k)));
        let (i, reset) = crowd.join(CLIENT_ADDR, ClientOptions::v26(wrap));
        crowd.clients[i].1.outbox.clear();
        let answer = stateless_answer(&mut crowd, CLIENT_ADDR.parse().unwrap(), &reset);
        let now = crowd.now;
        crowd.clients[i].1.on_datagram(now, &mut answer.clone());
        assert!(crowd.connect(i), "{conf}: the client connects through the cookie");
        let c = crowd.server.cookies();
        assert_eq!((c.answered, c.accepted, c.refused), (1, 1, 0), "{conf}");
        assert_eq!(crowd.server.client_count(), 1);
        let (peer_id, _) = crowd.session_at(CLIENT_ADDR).expect("the session");
        let ours = crowd.server.sessions().find(|s| s.peer_id == peer_id).unwrap().local_sid;
        assert_eq!(ours[..], answer[1..9], "{conf}: the session goes on under the cookie");
        assert!(crowd.data_flows(i, 1));
    }
}

#[test]
fn ten_thousand_resets_from_5000_ports_leave_no_state_and_a_client_connects() {
    let (mut crowd, opts) = tls_auth_crowd("max clients 10\n");
    let k = static_key(8);
    let mut attacker = Wrapper::tls_auth(&k, Some(1), Digest::Sha1);
    for n in 0..10_000u64 {
        let from = SocketAddr::from(([203, 0, 113, 66], 20_000 + (n % 5_000) as u16));
        let p = reset_of(&mut attacker, (n | 1 << 60).to_be_bytes(), crowd.now.unix);
        crowd.inject(from, &p);
    }
    assert_eq!(crowd.server.half_open_count(), 0, "no half-open session");
    assert_eq!(crowd.server.sessions().count(), 0, "no session at all");
    assert_eq!(crowd.server.cookies().answered, 10_000, "every reset got its cookie");
    assert_eq!(crowd.server.refused_first_packets(), 0);
    crowd.server.outbox.clear();
    let (i, _) = crowd.join(SECOND, opts);
    assert!(crowd.connect(i), "a real client connects after the flood");
    assert_eq!(crowd.server.client_count(), 1);
    assert_eq!(crowd.server.cookies().accepted, 1);
}

#[test]
fn a_forged_or_old_cookie_is_refused_and_counted() {
    let (mut crowd, _) = tls_auth_crowd("");
    let k = static_key(8);
    let mut client = Wrapper::tls_auth(&k, Some(1), Digest::Sha1);
    let (from, sid) = (CLIENT_ADDR.parse().unwrap(), [5; 8]);
    let reset = reset_of(&mut client, sid, crowd.now.unix);
    let cookie: [u8; 8] = stateless_answer(&mut crowd, from, &reset)[1..9].try_into().unwrap();
    let unix = crowd.now.unix;
    // From another address, under another cookie, for another session.
    crowd.inject("198.18.0.99:40000".parse().unwrap(), &ack(&mut client, sid, cookie, unix));
    crowd.inject(from, &ack(&mut client, sid, [0x42; 8], unix));
    crowd.inject(from, &ack(&mut client, [6; 8], cookie, unix));
    // Two slots later (a minute and more) it is too old.
    crowd.now.unix = unix + 2 * crate::cookie::SLOT;
    crowd.inject(from, &ack(&mut client, sid, cookie, crowd.now.unix));
    assert_eq!(crowd.server.cookies().refused, 4);
    assert_eq!(crowd.server.refused_first_packets(), 4);
    assert_eq!(crowd.server.sessions().count(), 0);
    assert!(crowd.server.outbox.is_empty(), "no answer to a refused cookie");
    // A slot later it is still good, and it makes a half-open session.
    crowd.now.unix = unix + crate::cookie::SLOT;
    let good = ack(&mut client, sid, cookie, crowd.now.unix);
    crowd.inject(from, &good);
    assert_eq!(crowd.server.cookies().accepted, 1);
    assert_eq!(crowd.server.half_open_count(), 1);
    // Replayed, it is nobody's proof: the session's wrapping refuses it.
    crowd.inject(from, &good);
    crowd.inject("198.18.0.99:40000".parse().unwrap(), &good);
    assert_eq!(crowd.server.cookies().accepted, 1);
    assert_eq!(crowd.server.half_open_count(), 1);
}

#[test]
fn a_cookie_of_member_1_is_accepted_by_member_2() {
    let (mut crowd, opts) = tls_auth_crowd("");
    let (i, reset) = crowd.join(CLIENT_ADDR, opts);
    crowd.clients[i].1.outbox.clear();
    let answer = stateless_answer(&mut crowd, CLIENT_ADDR.parse().unwrap(), &reset);
    // The first member fails over before the client answers: a second
    // server with the same configuration has the address now.
    let k = static_key(8);
    crowd.server = server("tls-auth \"/k/ta.key\" direction 0\n", Some(&k));
    let now = crowd.now;
    crowd.clients[i].1.on_datagram(now, &mut answer.clone());
    assert!(crowd.connect(i), "the handshake survives the failover");
    let c = crowd.server.cookies();
    assert_eq!((c.answered, c.accepted, c.refused), (0, 1, 0));
    assert!(crowd.data_flows(i, 1));
}

#[test]
fn a_clienthello_without_the_acknowledgement_gets_a_half_open_session() {
    // A 2.5 client whose P_ACK_V1 was lost: its ClientHello proves nothing.
    let (mut crowd, _) = tls_auth_crowd("");
    let k = static_key(8);
    let mut client = Wrapper::tls_auth(&k, Some(1), Digest::Sha1);
    let (from, sid) = (CLIENT_ADDR.parse().unwrap(), [5; 8]);
    let reset = reset_of(&mut client, sid, crowd.now.unix);
    let answer = stateless_answer(&mut crowd, from, &reset);
    // (Empty, so that TLS has nothing to fail on.)
    let hello = ControlBody { msg_pid: Some(1), ..Default::default() };
    let p = client.wrap(Opcode::ControlV1.first_byte(0), &sid, &hello.to_bytes(), crowd.now.unix as u32).unwrap();
    crowd.inject(from, &p);
    assert_eq!(crowd.server.half_open_count(), 1, "a half-open session, bounded as any");
    assert_eq!(crowd.server.cookies().accepted, 0, "no cookie was proven");
    // It sends our reset again under the same cookie, for the client to
    // acknowledge, with the acknowledgement of the ClientHello.
    let out: Vec<_> = crowd.server.outbox.drain(..).map(|(_, _, p)| p).collect();
    assert!(out.iter().any(|p| p[0] == answer[0] && p[1..9] == answer[1..9]), "our reset again");
}
