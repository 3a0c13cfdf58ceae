//! tls-crypt-v2 end to end: the test client with a client key that
//! OpenVPN 2.6.14 made (engine/src/testdata/tlscv2) against a server with
//! the matching server key, with and without early negotiation, refused
//! keys, and a takeover from the session record.

use super::*;
use crate::tlscryptv2::ClientKeyFile;

const SERVER_KEY: &str = include_str!("../testdata/tlscv2/server.key");
const CLIENT_KEY: &str = include_str!("../testdata/tlscv2/client.key");
const OTHER_SERVER_KEY: &str = include_str!("../testdata/tlscv2/other.key");

/// A server with `tls-crypt-v2` and the server key `key` (PEM).
fn v2_server(key: &str, extra: &str) -> Server {
    let text = format!(
        "ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n\
         tls-crypt-v2 \"/k/tc2-server.key\"\n{extra}"
    );
    let conf = vpnsyncd_config::parse_str("test", &text, &[]).unwrap();
    let keys = vec![
        (KeyKind::Ca, testpki::CA.to_vec()),
        (KeyKind::Certificate, testpki::SERVER_CRT.to_vec()),
        (KeyKind::Key, testpki::SERVER_KEY.to_vec()),
        (KeyKind::Wrap, key.as_bytes().to_vec()),
    ];
    let (session, wrap) = settings::build(&conf, &keys).unwrap();
    Server::new(&conf, session, wrap)
}

fn v2_member(m: u8) -> Server {
    v2_server(
        SERVER_KEY,
        &format!("sync {{\nrole vip 198.18.0.10 interface eth0\nmulticast interface eth1\nkey /k/s\nmember {m}\n}}\n"),
    )
}

fn v2_client(early_neg: bool) -> ClientOptions {
    let file = ClientKeyFile::parse(CLIENT_KEY.as_bytes()).unwrap();
    ClientOptions::v26(ClientWrap::TlsCryptV2 { kc: file.kc.clone(), wkc: file.wkc.clone(), early_neg })
}

#[test]
fn an_openvpn_made_client_key_connects_and_renegotiates() {
    for (early_neg, seed) in [(false, 61), (true, 62)] {
        for (imp, clean) in [(CLEAN, true), (BAD, false)] {
            let mut lab = Lab::new(v2_server(SERVER_KEY, ""), v2_client(early_neg), imp, imp, seed);
            lab.connect(HAND_WINDOW);
            let (up, down) = lab.exchange(20, 1);
            assert!(up >= 10 && down >= 10, "early_neg {early_neg}: {up}/{down}");
            client_renegotiates(&mut lab, HAND_WINDOW);
            lab.set_network(CLEAN, CLEAN);
            lab.run(Duration::from_millis(500));
            assert_eq!(lab.exchange(10, 2), (10, 10), "early_neg {early_neg}");
            if clean {
                assert_eq!(lab.client.control_rejected, 0, "early_neg {early_neg}");
            }
            assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
        }
    }
}

/// A key wrapped by another server key, a plain tls-crypt client with the
/// right Kc, and a client without wrapping get no answer; the refusals
/// are counted.
#[test]
fn foreign_or_missing_client_keys_get_no_answer() {
    let file = ClientKeyFile::parse(CLIENT_KEY.as_bytes()).unwrap();
    let cases = [
        ("another server key", v2_server(OTHER_SERVER_KEY, ""), v2_client(true)),
        ("plain tls-crypt", v2_server(SERVER_KEY, ""), ClientOptions::v26(ClientWrap::TlsCrypt(file.kc.clone()))),
        ("no wrapping", v2_server(SERVER_KEY, ""), ClientOptions::v26(ClientWrap::None)),
    ];
    for (what, srv, opts) in cases {
        let mut lab = Lab::new(srv, opts, CLEAN, CLEAN, 63);
        lab.run(Duration::from_secs(20));
        assert!(lab.up.sent >= 4, "{what}: the client kept trying");
        assert_eq!(lab.down.sent, 0, "{what}: the server answered");
        assert_eq!(lab.server.client_count() + lab.server.half_open_count(), 0, "{what}: a session exists");
        assert!(lab.server.refused_first_packets() >= 4, "{what}: refusals counted");
    }
}

/// A V3 reset whose WKc was damaged, cut or inflated is refused without a
/// session, and so is one from a server without tls-crypt-v2.
#[test]
fn damaged_v3_resets_are_refused() {
    let mut lab = Lab::new(v2_server(SERVER_KEY, ""), v2_client(false), CLEAN, CLEAN, 64);
    let reset = TestClient::new(v2_client(false), lab.now).outbox[0].clone();
    assert_eq!(reset[0] >> 3, Opcode::HardResetClientV3 as u8);
    let n = reset.len();
    let mut bad_tag = reset.clone();
    bad_tag[n - 100] ^= 1;
    let mut long = reset.clone();
    long[n - 2..].copy_from_slice(&2000u16.to_be_bytes());
    let cut = reset[..n - 1].to_vec();
    let mut bad_front = reset.clone();
    bad_front[20] ^= 1;
    for (i, mut p) in [bad_tag, long, cut, bad_front, vec![0x50], vec![0x50, 0, 1]].into_iter().enumerate() {
        assert!(lab.server.on_datagram(lab.now, 0, lab.addr, &mut p).is_none());
        lab.server.on_timer(lab.now);
        assert!(lab.server.outbox.is_empty(), "case {i} answered");
        assert_eq!(lab.server.refused_first_packets(), i as u64 + 1, "case {i}");
    }
    let mut plain = server("tls-crypt \"/k/tc.key\"\n", Some(&static_key(3)));
    let mut p = reset.clone();
    assert!(plain.on_datagram(lab.now, 0, lab.addr, &mut p).is_none());
    plain.on_timer(lab.now);
    assert!(plain.outbox.is_empty());
    assert_eq!(plain.refused_first_packets(), 1);
    // The real reset still starts a session.
    let mut p = reset;
    lab.server.on_datagram(lab.now, 0, "198.18.0.77:1194".parse().unwrap(), &mut p);
    assert_eq!(lab.server.half_open_count(), 1);
}

/// The record carries WKc: the backup rebuilds the client's wrapper from
/// it, answers the client's control packets after the takeover and
/// renegotiates under the same client key.
#[test]
fn a_backup_continues_a_tls_crypt_v2_session() {
    let mut lab = Lab::new(v2_member(1), v2_client(true), CLEAN, CLEAN, 65);
    lab.server.set_role(lab.now, Role::Master);
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.exchange(20, 1), (20, 20));
    let mut backup = v2_member(2);
    backup.set_role(lab.now, Role::Backup);
    let records = crate::syncglue::drain(&mut lab.server);
    for (ty, data) in &records {
        crate::syncglue::apply(&mut backup, lab.now, *ty, data).unwrap();
    }
    assert_eq!(backup.client_infos().len(), 1, "the ghost is installed");
    std::mem::swap(&mut lab.server, &mut backup);
    lab.server.set_role(lab.now, Role::Master);
    assert_eq!(lab.exchange(20, 2), (20, 20), "B answers at once");
    lab.run(Duration::from_secs(61));
    assert!(lab.info().key_id >= 1, "B renegotiated over the client's tls-crypt-v2 channel");
    assert_eq!(lab.exchange(20, 3), (20, 20));
    assert_eq!(lab.client.control_rejected, 0, "the client accepted every control packet of B");
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);

    // A member with another server key, or without tls-crypt-v2, refuses
    // the record; a tls-crypt-v2 member refuses a record without WKc.
    let other = v2_server(
        OTHER_SERVER_KEY,
        "sync {\nrole vip 198.18.0.10 interface eth0\nmulticast interface eth1\nkey /k/s\nmember 3\n}\n",
    );
    for (what, mut stranger) in [("another server key", other), ("tls-auth", member(3))] {
        for (ty, data) in &records {
            let _ = crate::syncglue::apply(&mut stranger, lab.now, *ty, data);
        }
        assert!(stranger.client_infos().is_empty(), "{what}");
        assert!(stranger.refusals().invalid >= 1, "{what}");
    }
    let (tls_auth_lab, _, plain_records) = cluster("");
    let mut v2 = v2_member(3);
    for (ty, data) in &plain_records {
        let _ = crate::syncglue::apply(&mut v2, tls_auth_lab.now, *ty, data);
    }
    assert!(v2.client_infos().is_empty());
    assert!(v2.refusals().invalid >= 1);
}

/// Steps until the client sent its P_CONTROL_WKC_V1 (still on the way).
fn until_wkc_sent(lab: &mut Lab) {
    assert!(lab.run_until(Duration::from_secs(5), |l| l.client.wkc_packets > 0), "no P_CONTROL_WKC_V1");
}

/// A 2.6 client (early negotiation) gets the stateless answer: the server
/// holds nothing after its V3 reset, asks for the WKc again, and makes the
/// session from the P_CONTROL_WKC_V1 that acknowledges the cookie, with
/// the client's key for the record.
#[test]
fn a_v3_reset_leaves_no_state_until_the_wkc_comes_again() {
    let mut lab = Lab::new(v2_server(SERVER_KEY, ""), v2_client(true), CLEAN, CLEAN, 66);
    until_wkc_sent(&mut lab);
    assert_eq!(lab.server.sessions().count(), 0, "no session for a V3 reset");
    assert_eq!(lab.server.half_open_count(), 0, "no half-open session either");
    assert_eq!(lab.server.cookies().answered, 1);
    lab.connect(Duration::from_secs(5));
    let c = lab.server.cookies();
    assert_eq!((c.answered, c.accepted, c.refused), (1, 1, 0));
    assert_eq!(lab.client.wkc_packets, 1, "one P_CONTROL_WKC_V1, then P_CONTROL_V1");
    assert_eq!(lab.exchange(10, 1), (10, 10));
    let wkc = ClientKeyFile::parse(CLIENT_KEY.as_bytes()).unwrap().wkc;
    assert_eq!(lab.first_record().wkc.as_deref(), Some(&wkc[..]), "the record carries the client's key");
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
    assert_eq!(lab.client.control_rejected, 0);
}

/// A 2.5 client (no early negotiation) never resends its key: the server
/// keeps its wrapper from the V3 reset and sends it no TLV.
#[test]
fn a_v3_reset_without_early_negotiation_keeps_state() {
    let mut lab = Lab::new(v2_server(SERVER_KEY, ""), v2_client(false), CLEAN, CLEAN, 67);
    lab.step();
    assert_eq!(lab.server.half_open_count(), 1, "a half-open session from the reset");
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.server.cookies().answered, 0);
    assert_eq!(lab.client.wkc_packets, 0);
    assert!(lab.client.errors.is_empty(), "no reset payload for a 2.5 client: {:?}", lab.client.errors);
    assert_eq!(lab.exchange(10, 1), (10, 10));
}

/// The cookie of a V3 answer is keyed by the cluster's server key: the
/// member that has the address when the WKc comes makes the session.
/// Under loss, duplication and reordering the handshake completes too.
#[test]
fn the_wkc_may_come_to_another_member_and_through_a_bad_network() {
    let mut lab = Lab::new(v2_member(1), v2_client(true), CLEAN, CLEAN, 68);
    lab.server.set_role(lab.now, Role::Master);
    until_wkc_sent(&mut lab);
    lab.server = v2_member(2);
    lab.server.set_role(lab.now, Role::Master);
    lab.connect(Duration::from_secs(5));
    let c = lab.server.cookies();
    assert_eq!((c.answered, c.accepted, c.refused), (0, 1, 0), "member 2 took member 1's cookie");
    assert_eq!(lab.exchange(10, 1), (10, 10));

    for seed in 70..75 {
        let mut lab = Lab::new(v2_server(SERVER_KEY, ""), v2_client(true), BAD, BAD, seed);
        lab.connect(HAND_WINDOW);
        assert_eq!(lab.server.client_count(), 1, "seed {seed}");
        assert!(lab.client.errors.is_empty(), "seed {seed}: {:?}", lab.client.errors);
    }
}

/// A P_CONTROL_WKC_V1 of no session proves nothing by itself: from
/// another address (the cookie is the address's), with a damaged WKc, or
/// under a server key that is not ours, it makes no session.
#[test]
fn a_wkc_packet_without_its_cookie_makes_no_session() {
    let mut lab = Lab::new(v2_server(SERVER_KEY, ""), v2_client(true), CLEAN, CLEAN, 69);
    until_wkc_sent(&mut lab);
    let wkc = lab.up.queue.iter().map(|(_, p)| p.clone()).find(|p| p[0] >> 3 == Opcode::ControlWkcV1 as u8);
    let wkc = wkc.expect("the P_CONTROL_WKC_V1 on its way");
    lab.up.queue.clear();
    let fresh = |p: &[u8]| p.to_vec();
    let no_session = |srv: &Server| srv.sessions().count() == 0 && srv.half_open_count() == 0;

    let elsewhere: SocketAddr = "198.18.0.99:40000".parse().unwrap();
    assert!(lab.server.on_datagram(lab.now, 0, elsewhere, &mut fresh(&wkc)).is_none());
    assert!(no_session(&lab.server), "from another address");
    assert_eq!(lab.server.cookies().refused, 1, "a wrong cookie, counted");

    let mut damaged = fresh(&wkc);
    let n = damaged.len();
    damaged[n - 40] ^= 1;
    let refused = lab.server.refused_first_packets();
    assert!(lab.server.on_datagram(lab.now, 0, lab.addr, &mut damaged).is_none());
    assert!(no_session(&lab.server), "a damaged WKc");
    assert_eq!(lab.server.refused_first_packets(), refused + 1);

    let mut other = v2_server(OTHER_SERVER_KEY, "");
    assert!(other.on_datagram(lab.now, 0, lab.addr, &mut fresh(&wkc)).is_none());
    assert!(no_session(&other), "another server key");
    assert_eq!(other.refused_first_packets(), 1);

    // The packet itself, from the client's address, is the session.
    assert!(lab.server.on_datagram(lab.now, 0, lab.addr, &mut fresh(&wkc)).is_none());
    assert_eq!(lab.server.sessions().count(), 1);
    assert_eq!(lab.server.cookies().accepted, 1);
}
