//! The byte counters of `show clients` and the status file count what
//! OpenVPN 2.6 counts (`link_read_bytes`, `link_write_bytes`): every
//! datagram of the session on the link, control channel and pings
//! included, not only the tunnel's payload.

use super::*;

/// (Bytes Received, Bytes Sent) of the one client in the status report.
fn status_bytes(lab: &Lab) -> (u64, u64) {
    let rows = crate::status::rows(&lab.server, lab.now);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let info = lab.info();
    assert_eq!((info.bytes_in, info.bytes_out), (rows[0].bytes_in, rows[0].bytes_out), "show clients agrees");
    (rows[0].bytes_in, rows[0].bytes_out)
}

#[test]
fn a_client_that_only_pings_has_bytes_both_ways() {
    let mut lab = Lab::tls_auth("keepalive 2 10\n", CLEAN, CLEAN, 71);
    lab.connect(Duration::from_secs(5));
    let (hs_in, hs_out) = status_bytes(&lab);
    // The certificates went both ways: more than a kilobyte each.
    assert!(hs_in > 1000 && hs_out > 1000, "the handshake counts: {hs_in} in, {hs_out} out");
    assert!(hs_in <= lab.up.bytes && hs_out <= lab.down.bytes, "no more than the link carried");

    let (up0, down0, pings0) = (lab.up.bytes, lab.down.bytes, lab.client.pings_received);
    lab.run(Duration::from_secs(20));
    assert!(lab.tun.is_empty(), "nothing but pings went through the tunnel");
    assert!(lab.client.pings_received >= pings0 + 9, "the server pinged every 2 s");
    let (b_in, b_out) = status_bytes(&lab);
    assert_eq!(b_in - hs_in, lab.up.bytes - up0, "every ping datagram of the client, to the byte");
    assert_eq!(b_out - hs_out, lab.down.bytes - down0, "every ping datagram of the server, to the byte");
    assert!(b_out > hs_out && b_in > hs_in);

    let cluster = crate::status::Cluster { role: vpnsyncd_common::msg::Role::Master, sync: "standalone" };
    let text = crate::status::render(2, lab.now.unix, &crate::status::rows(&lab.server, lab.now), cluster, "\n");
    assert!(text.contains(&format!(",{b_in},{b_out},")), "{text}");
}

#[test]
fn datagrams_that_do_not_authenticate_are_not_counted() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 72);
    lab.connect(Duration::from_secs(5));
    let before = status_bytes(&lab);
    let mut out = [0u8; 2048];
    let n = lab.server.seal_tun_packet(lab.now, &ipv4(LAN_HOST, Ipv4Addr::new(10, 8, 0, 2), 1, 1), &mut out).unwrap().2;
    let (data, addr) = (out[..n].to_vec(), lab.addr);
    assert_eq!(status_bytes(&lab), (before.0, before.1 + n as u64), "a data packet to the client counts");
    // The client's own packet back, a byte flipped, and a control packet
    // under a wrong tls-auth key, from the client's address.
    let mut forged = data.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert!(lab.server.on_datagram(lab.now, 0, addr, &mut forged).is_none());
    let mut control = vec![Opcode::ControlV1.first_byte(0)];
    control.extend_from_slice(&[0x55; 60]);
    assert!(lab.server.on_datagram(lab.now, 0, addr, &mut control).is_none());
    assert_eq!(status_bytes(&lab), (before.0, before.1 + n as u64), "forgeries count nowhere");
}
