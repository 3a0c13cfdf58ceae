//! A client with a valid certificate (or at least the tls-auth key) that
//! abuses its control channel: what the server does with it.

use std::io::Write;
use std::sync::Mutex;

use super::*;

impl Lab {
    /// A control packet of the client's session, made here rather than by
    /// the client: `pid` under `key_id`, acknowledging `acks`.
    fn inject_control(&mut self, op: Opcode, key_id: u8, acks: Vec<u32>, pid: Option<u32>, payload: Vec<u8>) {
        let remote_session_id = if acks.is_empty() { None } else { self.client.remote_sid };
        let body = ControlBody { acks, remote_session_id, msg_pid: pid, payload };
        let p = self
            .client
            .wrap
            .wrap(op.first_byte(key_id), &self.client.sid, &body.to_bytes(), self.now.unix as u32)
            .unwrap();
        self.up.send(self.step, p);
    }

    /// The client's hard reset only: then the test speaks for it.
    fn reset_only(seed: u64) -> Lab {
        let mut lab = Lab::tls_auth("", CLEAN, CLEAN, seed);
        lab.client_silent = true;
        assert!(lab.run_until(Duration::from_secs(1), |l| l.client.remote_sid.is_some()), "the server answered");
        lab
    }
}

/// TLS records of a handshake message `len` bytes long (its 4-byte
/// header first), `fragment` bytes of it per record, `n` bytes in all.
fn handshake_records(msg_type: u8, len: u32, fragment: usize, n: usize) -> Vec<u8> {
    let mut msg = vec![msg_type, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    msg.resize(n, 0x41);
    let mut out = Vec::new();
    for part in msg.chunks(fragment) {
        out.extend_from_slice(&[0x16, 0x03, 0x03, 0, part.len() as u8]);
        out.extend_from_slice(part);
    }
    out
}

/// After the client's close_notify, rustls reads nothing more (read_tls
/// returns 0, not an error): the next TLS bytes of that key state must
/// end it, not spin the engine for good on bytes nobody takes.
#[test]
fn a_close_notify_then_more_tls_ends_the_session_without_spinning() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 31);
    lab.connect(Duration::from_secs(5));
    lab.client.keys[0].tls.send_close_notify();
    lab.run(Duration::from_millis(200));
    assert_eq!(lab.server.client_count(), 1, "a close_notify alone changes nothing yet");
    lab.client.keys[0].tls.writer().write_all(b"PUSH_REQUEST\0").unwrap();
    lab.run(Duration::from_millis(200));
    assert_eq!(lab.server.client_count(), 0, "the key_id 0 TLS session is over, and with it the session");
}

/// The client core (the load generator's) likewise: a server's
/// close_notify, then more TLS on that key state, is an error there, not a
/// loop that never ends.
#[test]
fn the_client_core_does_not_spin_on_a_close_notify_from_the_server() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 34);
    lab.connect(Duration::from_secs(5));
    let id = lab.server.sessions().next().unwrap().peer_id;
    lab.server.session_mut(id).and_then(|s| s.tls_of(0)).unwrap().send_close_notify();
    lab.run(Duration::from_millis(200));
    assert!(lab.client.errors.is_empty(), "a close_notify alone is no error: {:?}", lab.client.errors);
    let tls = lab.server.session_mut(id).and_then(|s| s.tls_of(0)).unwrap();
    tls.writer().write_all(b"RESTART\0").unwrap();
    lab.run(Duration::from_millis(500));
    assert!(lab.client.errors.iter().any(|e| e.contains("close_notify")), "{:?}", lab.client.errors);
}

/// The log lines at warning level and above, of every test running.
struct Lines(Mutex<Vec<String>>);

static LINES: Lines = Lines(Mutex::new(Vec::new()));

impl log::Log for Lines {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            self.0.lock().unwrap().push(r.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// The warnings so far that contain `who` (tests run in parallel: each
/// names its own client by a unique address).
fn warnings_naming(who: &str) -> usize {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if log::set_logger(&LINES).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    });
    LINES.0.lock().unwrap().iter().filter(|l| l.contains(who)).count()
}

/// The same on a renegotiated key: that key state's TLS ends with one
/// warning, however many TLS packets the client sends on it after; the
/// session and its tunnel go on.
#[test]
fn a_close_notify_on_a_renegotiated_key_leaves_the_tunnel_up_and_logs_once() {
    warnings_naming("");
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 32);
    lab.addr = "198.18.0.32:40032".parse().unwrap();
    lab.connect(Duration::from_secs(5));
    client_renegotiates(&mut lab, Duration::from_secs(2));
    lab.run(Duration::from_millis(500));
    let who = lab.addr.to_string();
    assert_eq!(warnings_naming(&who), 0);
    let newest = lab.client.keys.len() - 1;
    lab.client.keys[newest].tls.send_close_notify();
    lab.run(Duration::from_millis(200));
    for _ in 0..50 {
        lab.client.keys[newest].tls.writer().write_all(b"PUSH_REQUEST\0").unwrap();
        lab.step();
    }
    lab.run(Duration::from_millis(200));
    assert_eq!(lab.server.client_count(), 1);
    assert_eq!(warnings_naming(&who), 1, "one warning for 50 packets");
    assert_eq!(lab.exchange(10, 1), (10, 10), "data on the established key");
}

/// A client certificate chain (or any handshake message) announced
/// beyond 64 KB: rustls refuses the header, the session ends at once.
#[test]
fn a_handshake_message_announced_at_16_mb_ends_the_session_at_once() {
    let mut lab = Lab::reset_only(33);
    let records = handshake_records(1, 0xff_ffff, 200, 1000);
    lab.inject_control(Opcode::ControlV1, 0, vec![0], Some(1), records);
    lab.run(Duration::from_millis(200));
    assert_eq!(lab.server.cookies().accepted, 1, "its acknowledgement of our reset made a session");
    assert_eq!(lab.server.sessions().count(), 0, "which ended");
    assert_eq!(lab.server.half_open_count(), 0);
}

/// An endless stream of TLS records before the handshake is done: one
/// 64 KB handshake message in 1-byte fragments, then more. rustls buffers
/// at most 64 KB of records while it joins a message (then refuses), the
/// reliability layer at most its window of datagrams: the session ends
/// after about 64 KB, however long the client goes on.
#[test]
fn an_endless_stream_of_tls_records_ends_the_session_after_64_kb() {
    let mut lab = Lab::reset_only(34);
    // 1-byte fragments: 6 bytes of record per byte of message.
    let stream = handshake_records(1, 0xffff, 1, 0x1_0000 * 2);
    let per_packet = 1200;
    let mut sent = 0;
    for (i, chunk) in stream.chunks(per_packet).enumerate() {
        let acks = if i == 0 { vec![0] } else { Vec::new() };
        lab.inject_control(Opcode::ControlV1, 0, acks, Some(i as u32 + 1), chunk.to_vec());
        sent += chunk.len();
        lab.step();
        if lab.server.sessions().count() == 0 {
            break;
        }
    }
    assert_eq!(lab.server.cookies().accepted, 1, "its acknowledgement of our reset made a session");
    assert_eq!(lab.server.sessions().count(), 0, "which ended");
    assert!(sent <= 0x1_0000 + per_packet, "ended after {sent} bytes of TLS records");
}

/// Acknowledgements of packet ids we never sent (ahead of anything a
/// handshake sends, u32::MAX) and a packet id far beyond the window, all through
/// the client's authentic wrapping, during a handshake on a lossy link:
/// none counts as an acknowledgement, so what was lost is still resent
/// and the handshake finishes; the far packet id is neither taken nor
/// acknowledged; a 255-entry ACK array is refused by the parser.
#[test]
fn acknowledgements_of_ids_never_sent_and_huge_packet_ids_change_nothing() {
    for seed in 1..=5 {
        let mut lab = Lab::tls_auth("", BAD, BAD, 40 + seed);
        lab.connect(HAND_WINDOW);
        let want = next_key_id(lab.client.key_id());
        lab.client.renegotiate(lab.now);
        lab.client_to_link();
        let mut far = vec![0xff];
        far.extend(std::iter::repeat_n(0x5a, 255 * 4 + 8 + 4));
        let mut steps = 0;
        while !(lab.client.send_key_id() == Some(want) && lab.info().key_id == want) {
            assert!(steps < 1200, "seed {seed}: renegotiation unfinished after {:?}", lab.elapsed());
            let ids = vec![64, 65, 66, 1000, 0x7fff_ffff, 0xffff_fffe, u32::MAX, 100];
            lab.inject_control(Opcode::AckV1, want, ids, None, Vec::new());
            lab.inject_control(Opcode::ControlV1, want, Vec::new(), Some(u32::MAX), vec![0x16; 40]);
            lab.inject_control(Opcode::ControlV1, want, Vec::new(), Some(1 << 20), vec![0x16; 40]);
            // A 255-entry ACK array: the parser refuses it.
            let first = Opcode::AckV1.first_byte(want);
            let p = lab.client.wrap.wrap(first, &lab.client.sid, &far, lab.now.unix as u32).unwrap();
            lab.up.send(lab.step, p);
            lab.step();
            steps += 1;
        }
        assert_eq!(lab.server.client_count(), 1, "seed {seed}");
        lab.set_network(CLEAN, CLEAN);
        lab.run(Duration::from_secs(1));
        assert_eq!(lab.exchange(10, 1), (10, 10), "seed {seed}");
        assert!(lab.client.errors.is_empty(), "seed {seed}: {:?}", lab.client.errors);
    }
}

/// Client 0 sends tunnel packets whose source is client 1's tunnel
/// address, or a host of an iroute of another common name, or not IP at
/// all: each is dropped and counted; its own packets and those of client
/// 1 pass.
#[test]
fn a_tunnel_packet_from_another_clients_address_or_iroute_is_dropped_and_counted() {
    use super::idle::{addr, connect_all};
    let k = static_key(7);
    let mut server = server("tls-auth \"/k/ta.key\" direction 0\nclient-config-dir \"/ccd\"\n", Some(&k));
    let mut l = crate::ccd::Loading::default();
    let bob = vpnsyncd_config::ccd::CcdFile { name: "bob".into(), text: "iroute 192.168.70.0 255.255.255.0\n".into() };
    l.add(&bob.encode(), "10.8.0.0/24".parse().unwrap()).unwrap();
    server.set_client_configs(l.finish());
    let opts = ClientOptions::v26(ClientWrap::TlsAuth(k, Digest::Sha1));
    let mut now = Now { mono: Instant::now(), unix: UNIX0 };
    let mut clients = connect_all(&mut server, &opts, 2, &mut now);
    let (me, other) = (clients[0].address().unwrap(), clients[1].address().unwrap());
    assert_ne!(me, other);
    let mut up = |server: &mut Server, clients: &mut [TestClient], i: usize, ip: &[u8]| -> bool {
        assert!(clients[i].send_data(now, ip));
        now.mono += Duration::from_millis(1);
        let mut p = clients[i].outbox.pop().unwrap();
        server.on_datagram(now, 0, addr(i), &mut p) == Some(ip)
    };
    let bobs_host = Ipv4Addr::new(192, 168, 70, 9);
    // Version 6, but shorter than an IPv6 header.
    let not_ip = [0x65u8; 20];
    for n in 0..100u16 {
        assert!(!up(&mut server, &mut clients, 0, &ipv4(other, LAN_HOST, n, 1)), "another client's address");
        assert!(!up(&mut server, &mut clients, 0, &ipv4(bobs_host, LAN_HOST, n, 2)), "another name's iroute");
        assert!(!up(&mut server, &mut clients, 0, &not_ip), "neither IPv4 nor IPv6");
        assert!(up(&mut server, &mut clients, 0, &ipv4(me, LAN_HOST, n, 3)), "its own address");
        assert!(up(&mut server, &mut clients, 1, &ipv4(other, LAN_HOST, n, 4)), "the other's own");
    }
    assert_eq!(server.wrong_source_packets(), 300);
    assert_eq!(server.client_count(), 2, "dropping the packets ends no session");
}
