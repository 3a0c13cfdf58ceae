//! Client-initiated renegotiations are limited (crate::reneglimit): a
//! client flooding soft resets gets a bounded number of handshakes and
//! keeps its tunnel; a client renegotiating at its own sane rate is never
//! refused, one renegotiating every 2 s is slowed, not broken; and the
//! server's own renegotiation after a takeover is not limited.

use super::*;
use crate::reneglimit::{BURST, EVERY};

impl Lab {
    /// The client's soft reset of its newest key_id once more: what a
    /// hostile client sends every step instead of waiting for its resend
    /// timer.
    fn resend_soft_reset(&mut self) {
        let key_id = self.client.key_id();
        let body = ControlBody { acks: Vec::new(), remote_session_id: None, msg_pid: Some(0), payload: Vec::new() };
        let first = Opcode::SoftResetV1.first_byte(key_id);
        let p = self.client.wrap.wrap(first, &self.client.sid, &body.to_bytes(), self.now.unix as u32).unwrap();
        self.up.send(self.step, p);
    }

    /// Runs `d` of a client renegotiating as fast as it can: a new soft
    /// reset as soon as its newest key is in use, resent every step until
    /// the server takes it; a packet each way every step. Returns when
    /// the server started each handshake, and the packets sent each way.
    fn flood(&mut self, d: Duration) -> (Vec<Instant>, u16) {
        let me = self.client.address().unwrap();
        let end = self.now.mono + d;
        let mut server_key = self.info().key_id;
        let (mut handshakes, mut sent) = (Vec::new(), 0u16);
        while self.now.mono < end {
            if self.client.send_key_id() == Some(self.client.key_id()) {
                self.client.renegotiate(self.now);
                self.client_to_link();
            } else if self.info().key_id != self.client.key_id() {
                self.resend_soft_reset();
            }
            assert!(self.client_sends(&ipv4(me, LAN_HOST, sent, 1)), "the client has a key to send with");
            assert!(self.server_sends(&ipv4(LAN_HOST, me, sent, 1)), "the server has a key to send with");
            sent += 1;
            self.step();
            let k = self.info().key_id;
            if k != server_key {
                handshakes.push(self.now.mono);
                server_key = k;
            }
        }
        (handshakes, sent)
    }
}

#[test]
fn a_soft_reset_flood_gets_a_bounded_number_of_handshakes_and_keeps_its_tunnel() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 21);
    lab.connect(Duration::from_secs(5));
    let (tun0, rx0) = (lab.tun.len(), lab.client.received.len());
    let (handshakes, sent) = lab.flood(Duration::from_secs(60));
    let handshakes = handshakes.len();
    let allowed = BURST as usize + (60 / EVERY.as_secs()) as usize;
    assert!(handshakes <= allowed, "{handshakes} handshakes in a minute, at most {allowed} allowed");
    assert!(handshakes + 2 >= allowed, "the limit, not the test, held it back: {handshakes} of {allowed}");
    let refused = lab.server.refused_renegotiations();
    assert!(refused > 500, "a soft reset every step while none is allowed is refused and counted: {refused}");
    lab.run(Duration::from_millis(500));
    let (up, down) = (lab.tun.len() - tun0, lab.client.received.len() - rx0);
    // What a key change loses: packets in flight under a key the
    // client dropped on starting its next renegotiation at once.
    let least = usize::from(sent) - 2 * handshakes;
    assert!(up >= least && down >= least, "{up}/{down} of {sent} arrived over {handshakes} key changes");
    assert_eq!(lab.client.replays, 0, "no packet id was used twice");
    assert_eq!(lab.client.data_rejected, 0);
    assert_eq!(lab.client.control_rejected, 0);
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
    assert_eq!(lab.server.client_count(), 1, "the session lives on");
    assert_eq!(lab.exchange(20, 2), (20, 20), "and its tunnel works");
}

#[test]
fn a_client_renegotiating_every_10_s_for_5_minutes_is_never_refused() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 22);
    lab.connect(Duration::from_secs(5));
    for round in 0..30u8 {
        lab.run(Duration::from_secs(10));
        // Done within a second: not held back by a resend.
        client_renegotiates(&mut lab, Duration::from_secs(1));
        assert_eq!(lab.exchange(5, round), (5, 5), "round {round}");
    }
    assert!(lab.elapsed() >= Duration::from_secs(300));
    assert_eq!(lab.server.refused_renegotiations(), 0);
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
}

/// A small reneg-bytes on a busy tunnel: a renegotiation asked for every
/// 2 s is slowed to the limit, each done within its resend after a token
/// came back, and the tunnel never stops.
#[test]
fn a_client_renegotiating_every_2_s_is_slowed_not_broken() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 23);
    lab.connect(Duration::from_secs(5));
    let start = lab.elapsed();
    for round in 0..20u8 {
        lab.run(Duration::from_secs(2));
        // EVERY until a token is back, then the client's resend (2 s, 4 s).
        client_renegotiates(&mut lab, EVERY + Duration::from_secs(2));
        assert_eq!(lab.exchange(5, round), (5, 5), "round {round}");
    }
    let took = lab.elapsed() - start;
    assert!(took >= EVERY * (20 - BURST), "slowed to the limit: {took:?}");
    assert!(lab.server.refused_renegotiations() > 0);
    assert_eq!(lab.client.replays, 0);
    assert_eq!(lab.client.control_rejected, 0);
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
}

/// The client used up its renegotiations on the old master just before
/// the takeover, and goes on flooding the new one: the new master's
/// session starts with the full allowance (nothing of it is copied), and
/// its own renegotiation that replaces the copied keys comes at its time
/// while the client's are refused.
#[test]
fn a_takeover_is_not_hampered_by_the_limit() {
    let (mut lab, mut backup, _) = cluster("");
    let (handshakes, _) = lab.flood(Duration::from_secs(1));
    assert_eq!(handshakes.len(), BURST as usize, "the allowance spent on the old master");
    assert!(lab.server.refused_renegotiations() > 0);
    // The client's pending soft reset is left to its resend timer.
    lab.run(Duration::from_millis(500));
    sync(&mut lab.server, &mut backup, lab.now);
    lab.server.sync_out.clear();
    std::mem::swap(&mut lab.server, &mut backup);
    let promoted = lab.now.mono;
    lab.server.set_role(lab.now, Role::Master);
    assert!(lab.server.sessions().next().unwrap().takeover_rekey_due());
    // One ghost: its copied keys are replaced at the end of the window.
    let due = promoted + Duration::from_secs(60);
    let (early, _) = lab.flood(Duration::from_secs(10));
    assert!(early.len() > BURST as usize, "the new master started with a full allowance: {}", early.len());
    let quiet = due - Duration::from_millis(500);
    lab.flood(quiet - EVERY - lab.now.mono);
    let refused = lab.server.refused_renegotiations();
    lab.flood(EVERY);
    assert!(lab.server.refused_renegotiations() > refused, "the client's allowance is spent as the rekey comes due");
    // Nothing from the client for a second around the due time: a key
    // change then is the server's own.
    let before = lab.info().key_id;
    lab.client_silent = true;
    lab.run(Duration::from_secs(1));
    lab.client_silent = false;
    assert_ne!(lab.info().key_id, before, "the takeover's renegotiation started on time");
    assert!(!lab.server.sessions().next().unwrap().takeover_rekey_due());
    lab.run(Duration::from_secs(3));
    assert_eq!(lab.client.send_key_id(), Some(lab.info().key_id), "and the client followed");
    assert_eq!(lab.exchange(20, 3), (20, 20));
    assert_eq!(lab.client.replays, 0);
    assert_eq!(lab.client.data_rejected, 0);
    assert_eq!(lab.client.control_rejected, 0);
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
}
