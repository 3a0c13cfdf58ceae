//! IPv6 inside the tunnel (`client network6`, issue 9 item 3): the pushed
//! address, packets both ways, a spoofed source dropped, and the address
//! carried by the record to a new master.

use std::net::Ipv6Addr;

use super::*;
use crate::ip6::tests::packet;

const NET6: &str = "client network6 fd00:8::/64\n";

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const LAN6: &str = "2001:db8:19::100";

/// One packet each way between the client at `me` and the inside host:
/// whether each arrived intact.
fn both_ways(lab: &mut Lab, me: Ipv6Addr, tag: u8) -> (bool, bool) {
    let mut up = packet(me, a6(LAN6));
    up.push(tag);
    let (tun0, rx0) = (lab.tun.len(), lab.client.received.len());
    assert!(lab.client_sends(&up), "the client has a key to send with");
    let mut down = packet(a6(LAN6), me);
    down.push(tag);
    let routed = lab.server_sends(&down);
    lab.run(Duration::from_millis(200));
    (lab.tun[tun0..] == [up], routed && lab.client.received[rx0..] == [down])
}

#[test]
fn ipv6_goes_both_ways_and_a_spoofed_source_is_dropped() {
    let mut lab = Lab::tls_auth(NET6, CLEAN, CLEAN, 1);
    lab.connect(Duration::from_secs(5));
    let opts = &lab.client.pushed.as_ref().unwrap().options;
    assert!(opts.iter().any(|o| o == "ifconfig-ipv6 fd00:8::2/64 fd00:8::1"), "{opts:?}");
    assert_eq!(both_ways(&mut lab, a6("fd00:8::2"), 1), (true, true));
    assert_eq!(lab.info().virtual_ip6, "fd00:8::2", "show clients has the IPv6 address");
    let rows = crate::status::rows(&lab.server, lab.now);
    assert_eq!(rows[0].virtual_ipv6, Some(a6("fd00:8::2")), "and so has the status file");

    let mut out = [0u8; 2048];
    assert!(
        lab.server.seal_tun_packet(lab.now, &packet(a6(LAN6), a6("fd00:8::3")), &mut out).is_none(),
        "no such client"
    );
    let before = lab.tun.len();
    for spoofed in ["fd00:8::3", "2001:db8::1"] {
        assert!(lab.client_sends(&packet(a6(spoofed), a6(LAN6))));
    }
    lab.run(Duration::from_millis(200));
    assert_eq!(lab.tun.len(), before, "wrong IPv6 sources dropped");
    assert_eq!(lab.exchange(5, 2), (5, 5), "IPv4 still flows");
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
}

#[test]
fn without_network6_no_ipv6_is_pushed_or_forwarded() {
    let mut lab = Lab::tls_auth("", CLEAN, CLEAN, 1);
    lab.connect(Duration::from_secs(5));
    assert!(!lab.client.pushed.as_ref().unwrap().options.iter().any(|o| o.contains("ipv6")));
    assert_eq!(lab.info().virtual_ip6, "");
    assert_eq!(both_ways(&mut lab, a6("fd00:8::2"), 1), (false, false));
}

#[test]
fn the_new_master_forwards_ipv6_after_a_takeover() {
    let (mut lab, mut backup, _) = cluster(NET6);
    assert_eq!(both_ways(&mut lab, a6("fd00:8::2"), 1), (true, true));
    lab.server.sync_out.clear();
    std::mem::swap(&mut lab.server, &mut backup);
    lab.server.set_role(lab.now, Role::Master);
    assert_eq!(both_ways(&mut lab, a6("fd00:8::2"), 2), (true, true), "the ghost was indexed by its IPv6 address");
    assert_eq!(lab.info().virtual_ip6, "fd00:8::2", "the new master's show clients has it");
    let before = lab.tun.len();
    assert!(lab.client_sends(&packet(a6("fd00:8::9"), a6(LAN6))));
    lab.run(Duration::from_millis(200));
    assert_eq!(lab.tun.len(), before, "the new master checks the source too");
    assert!(lab.client.errors.is_empty(), "{:?}", lab.client.errors);
}

#[test]
fn a_record_whose_ipv6_address_does_not_fit_is_refused() {
    let opts = ClientOptions::v26(ClientWrap::TlsAuth(static_key(7), Digest::Sha1));
    let mut lab = Lab::new(member_with(1, NET6), opts, CLEAN, CLEAN, 11);
    lab.connect(Duration::from_secs(5));
    let rec = lab.first_record();
    assert_eq!(rec.virtual_ip6, Some(a6("fd00:8::2")), "the record carries the IPv6 address");
    let gen = crate::session::Gen::new(1, 1, 9);
    for extra in ["", "client network6 fd00:9::/64\n"] {
        let mut other = member_with(3, extra);
        assert!(
            matches!(other.install_ghost(lab.now, gen, &rec), Err(crate::server::Refusal::Invalid(_))),
            "with {extra:?}"
        );
    }
    let mut same = member_with(3, NET6);
    assert!(same.install_ghost(lab.now, gen, &rec).is_ok());
}
