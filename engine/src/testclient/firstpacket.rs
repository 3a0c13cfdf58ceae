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
