//! client-config-dir, leases and duplicate-cn against the in-process
//! client (common name "alice"); a second session of the same name is a
//! ghost installed from the first server's record.

use super::*;
use crate::ccd::{Loading, Table};
use crate::record::SessionRecord;
use crate::server::SyncOut;
use crate::session::Gen;
use vpnsyncd_config::ccd::CcdFile;

fn table(text: &str) -> Table {
    let mut l = Loading::default();
    let f = CcdFile { name: "alice".into(), text: text.into() };
    l.add(&f.encode(), "10.8.0.0/24".parse().unwrap()).unwrap();
    l.finish()
}

fn lab(extra: &str, ccd: Option<&str>) -> Lab {
    let mut lab = Lab::tls_auth(extra, CLEAN, CLEAN, 3);
    if let Some(t) = ccd {
        lab.server.set_client_configs(table(t));
    }
    lab
}

/// The newest record the server produced, with its generation.
fn last_record(server: &mut Server) -> (Gen, SessionRecord) {
    let (gen, bytes) = server
        .sync_out
        .drain(..)
        .filter_map(|o| match o {
            SyncOut::Upsert(_, g, r) => Some((g, r)),
            _ => None,
        })
        .next_back()
        .expect("a record");
    (gen, SessionRecord::decode(&bytes).unwrap())
}

/// A fresh Lab on `server`, its client at another address than the first
/// (the same address would be the same client restarting).
fn reconnect(server: Server) -> Lab {
    let k = static_key(7);
    let mut lab = Lab::new(server, ClientOptions::v26(ClientWrap::TlsAuth(k, Digest::Sha1)), CLEAN, CLEAN, 9);
    lab.addr = "198.18.0.8:40001".parse().unwrap();
    lab
}

#[test]
fn fixed_address_push_and_iroute() {
    let mut lab = lab(
        "client-config-dir \"/ccd\"\n",
        Some("ifconfig-push 10.8.0.50 255.255.255.0\niroute 192.168.50.0 255.255.255.0\npush \"route 192.168.60.0 255.255.255.0\"\n"),
    );
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.client.address(), Some(Ipv4Addr::new(10, 8, 0, 50)));
    let pushed = lab.client.pushed.clone().unwrap();
    assert!(pushed.options.contains(&"route 192.168.60.0 255.255.255.0".to_string()), "{:?}", pushed.options);
    // A host behind the client is reached through it; other networks not.
    let behind = ipv4(LAN_HOST, Ipv4Addr::new(192, 168, 50, 7), 1, 9);
    assert!(lab.server_sends(&behind));
    assert!(!lab.server_sends(&ipv4(LAN_HOST, Ipv4Addr::new(192, 168, 51, 7), 2, 9)));
    lab.run(Duration::from_millis(300));
    assert!(lab.client.received.contains(&behind));
    // And the site's hosts send through it; a source outside its iroutes
    // and its address is still dropped.
    let from_site = ipv4(Ipv4Addr::new(192, 168, 50, 7), LAN_HOST, 3, 9);
    assert!(lab.client_sends(&from_site));
    lab.step();
    assert_eq!(lab.tun.last(), Some(&from_site));
    let before = lab.tun.len();
    assert!(lab.client_sends(&ipv4(Ipv4Addr::new(192, 168, 51, 7), LAN_HOST, 4, 9)));
    lab.step();
    assert_eq!(lab.tun.len(), before, "a source outside the iroutes is dropped");
}

#[test]
fn disabled_and_not_yet_loaded_clients_are_refused() {
    for ccd in [Some("disable\n"), None] {
        let mut lab = lab("client-config-dir \"/ccd\"\n", ccd);
        lab.run(Duration::from_secs(5));
        assert!(lab.client.address().is_none(), "{ccd:?}");
        assert!(lab.server.client_infos().is_empty(), "{ccd:?}");
    }
}

#[test]
fn lease_kept_across_reconnect_and_on_a_second_server() {
    let mut lab = lab("", None);
    let now = lab.now;
    lab.server.leases.set("alice", Ipv4Addr::new(10, 8, 0, 9), now.mono);
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.client.address(), Some(Ipv4Addr::new(10, 8, 0, 9)), "the lease, not the lowest free");
    let (gen, rec) = last_record(&mut lab.server);
    let sid = rec.local_sid;
    // The client goes; a new connection (another port) gets the address again.
    assert_eq!(lab.server.kill_client(now, "alice"), 1);
    assert!(lab.server.client_infos().is_empty());
    lab.server.outbox.clear();
    let mut again = reconnect(std::mem::replace(&mut lab.server, server("", None)));
    again.connect(Duration::from_secs(5));
    assert_eq!(again.client.address(), Some(Ipv4Addr::new(10, 8, 0, 9)));
    // A second server learns the lease from the record and keeps it after
    // the session ended.
    let k = static_key(7);
    let mut second = super::server("tls-auth \"/k/ta.key\" direction 0\n", Some(&k));
    second.install_ghost(now, gen, &rec).unwrap();
    second.ghost_delete(&sid, gen);
    assert_eq!(second.ghost_count(), 0);
    let mut there = reconnect(second);
    there.connect(Duration::from_secs(5));
    assert_eq!(there.client.address(), Some(Ipv4Addr::new(10, 8, 0, 9)));
}

/// A server holding a ghost of alice at 10.8.0.2, and the record.
fn with_ghost(policy: &str) -> Server {
    let mut first = lab("", None);
    first.connect(Duration::from_secs(5));
    let (gen, rec) = last_record(&mut first.server);
    let k = static_key(7);
    let mut s = super::server(&format!("tls-auth \"/k/ta.key\" direction 0\nduplicate-cn {policy}\n"), Some(&k));
    s.install_ghost(first.now, gen, &rec).unwrap();
    assert_eq!(s.ghost_count(), 1);
    s
}

#[test]
fn duplicate_cn_policies() {
    let mut refuse = reconnect(with_ghost("refuse"));
    refuse.run(Duration::from_secs(5));
    assert!(refuse.client.address().is_none(), "refused while alice is connected");

    let mut replace = reconnect(with_ghost("replace"));
    replace.connect(Duration::from_secs(5));
    assert_eq!(replace.server.ghost_count(), 0, "the old session ended");
    assert_eq!(replace.client.address(), Some(Ipv4Addr::new(10, 8, 0, 2)), "and its lease is taken over");

    let mut allow = reconnect(with_ghost("allow"));
    allow.run_until(Duration::from_secs(5), |l| l.client.connected());
    assert_eq!(allow.server.ghost_count(), 1, "both live");
    assert_eq!(allow.client.address(), Some(Ipv4Addr::new(10, 8, 0, 3)), "a distinct address");
    let (newest, live) = (allow.server.by_cn["alice"], allow.server.client_infos());
    let new = live.iter().find(|c| c.virtual_ip == "10.8.0.3").unwrap().peer_id;
    assert_eq!(newest, new, "iroutes go to the newest session");
    allow.server.remove(new, "test: the newer session ends");
    let old = allow.server.client_infos()[0].peer_id;
    assert_eq!(allow.server.by_cn.get("alice"), Some(&old), "the older one takes its iroutes back");
}
