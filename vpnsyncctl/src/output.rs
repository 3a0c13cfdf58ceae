//! Output of vpnsyncctl: aligned columns in the OpenBSD *ctl manner, or
//! JSON with -j. Durations are computed here from the daemon's Unix times.

use serde_json::{json, Value};
use vpnsyncd_common::ctl::{ClientInfo, Summary, SyncInfo};

/// A duration in bgpctl's fmt_timeframe style: 01:02:03, 2d03h04m, 5w2d03h.
pub fn timeframe(secs: u64) -> String {
    let (w, d, h, m, s) = (secs / 604_800, secs / 86_400 % 7, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if secs < 86_400 {
        format!("{:02}:{:02}:{:02}", secs / 3600, m, s)
    } else if secs < 604_800 {
        format!("{}d{:02}h{:02}m", secs / 86_400, h, m)
    } else {
        format!("{w:02}w{d}d{h:02}h")
    }
}

fn ago(now: u64, t: u64) -> String {
    if t == 0 {
        "never".to_string()
    } else {
        timeframe(now.saturating_sub(t))
    }
}

/// Each process's last heartbeat: the parent's as the engine heard it,
/// then each child's answer as the parent saw it, with its age (Unix ms,
/// 0 for never).
fn heartbeats(s: &Summary) -> Vec<(&str, u64)> {
    let mut v = vec![("parent", s.parent_heard)];
    v.extend(s.heartbeats.0.iter().map(|(name, ms)| (name.as_str(), *ms)));
    v
}

fn age_ms(now_ms: u64, t: u64) -> Option<u64> {
    (t != 0).then(|| now_ms.saturating_sub(t))
}

/// `now_ms`: Unix milliseconds (heartbeats are a second apart, so their
/// ages need tenths).
pub fn summary(s: &Summary, now_ms: u64) -> String {
    let now = now_ms / 1000;
    let beats: Vec<String> = heartbeats(s)
        .into_iter()
        .map(|(name, t)| match age_ms(now_ms, t) {
            None => format!("{name} never"),
            Some(a) => format!("{name} {:.1} s ago", a as f64 / 1000.0),
        })
        .collect();
    format!(
        "vpnsyncd {}, role {}, up {}\nTunnel:   {} {}\nListen:   {}\nClients:  {} of {}, {} of other members\nSync:     {}\nRefused:  {} first packets, {} sync records, {} renegotiations\nDropped:  {} tunnel packets from a wrong source\nFiltered: {} TCP ACKs (ack-filter)\nWatchdog: {} s; last heartbeat: {}\n",
        s.version,
        s.role.name(),
        timeframe(now.saturating_sub(s.started)),
        s.tun_device,
        s.server_address,
        s.listen.join(", "),
        s.clients,
        s.max_clients,
        s.ghosts,
        s.sync,
        s.refused_packets,
        s.refused_records,
        s.refused_renegotiations,
        s.wrong_source,
        s.acks_filtered,
        s.watchdog,
        beats.join(", ")
    )
}

pub fn summary_json(s: &Summary, now_ms: u64) -> Value {
    let now = now_ms / 1000;
    let beats: serde_json::Map<String, Value> = heartbeats(s)
        .into_iter()
        .map(|(name, t)| {
            let v = match age_ms(now_ms, t) {
                None => Value::Null,
                Some(a) => json!({ "last_ms": t, "age_ms": a }),
            };
            (name.to_string(), v)
        })
        .collect();
    json!({
        "version": s.version, "role": s.role.name(), "started": s.started,
        "uptime": now.saturating_sub(s.started), "tun_device": s.tun_device,
        "server_address": s.server_address, "listen": s.listen, "clients": s.clients,
        "max_clients": s.max_clients, "sync": s.sync, "ghosts": s.ghosts,
        "refused_packets": s.refused_packets, "refused_records": s.refused_records,
        "refused_renegotiations": s.refused_renegotiations, "wrong_source": s.wrong_source,
        "acks_filtered": s.acks_filtered,
        "watchdog": s.watchdog, "heartbeats": beats,
    })
}

type ClientLine<'a> =
    (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

const CLIENT_HEADER: ClientLine<'static> = (
    "Common Name",
    "User",
    "Real Address",
    "Virtual IP",
    "Virtual IPv6",
    "Cipher",
    "Bytes In",
    "Bytes Out",
    "Up",
    "Key",
    "Last Rekey",
);

/// One row; `w6` is the width of the IPv6 column, which is as wide as its
/// longest address (they run from 3 to 39 characters) so that the columns
/// after it stay aligned.
fn client_line(c: ClientLine<'_>, w6: usize) -> String {
    format!(
        "{:<20} {:<16} {:<22} {:<15} {:<w6$} {:<17} {:>12} {:>12} {:>9} {:>3} {}\n",
        c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7, c.8, c.9, c.10
    )
}

/// What a column shows for an empty field.
fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

pub fn clients(list: &[ClientInfo], now: u64) -> String {
    let w6 = list.iter().map(|c| or_dash(&c.virtual_ip6).len()).fold(CLIENT_HEADER.4.len(), usize::max);
    let mut out = client_line(CLIENT_HEADER, w6);
    for c in list {
        let (up, key) = (timeframe(now.saturating_sub(c.connected_since)), c.key_id.to_string());
        let rekey = if c.last_rekey == 0 { "never".to_string() } else { format!("{} ago", ago(now, c.last_rekey)) };
        let (bin, bout) = (c.bytes_in.to_string(), c.bytes_out.to_string());
        out += &client_line(
            (
                &c.common_name,
                or_dash(&c.username),
                &c.real_address,
                &c.virtual_ip,
                or_dash(&c.virtual_ip6),
                &c.cipher,
                &bin,
                &bout,
                &up,
                &key,
                &rekey,
            ),
            w6,
        );
    }
    out
}

pub fn clients_json(list: &[ClientInfo], now: u64) -> Value {
    Value::Array(
        list.iter()
            .map(|c| {
                json!({
                    "common_name": c.common_name, "real_address": c.real_address,
                    "virtual_ip": c.virtual_ip, "cipher": c.cipher, "bytes_in": c.bytes_in,
                    "bytes_out": c.bytes_out, "connected_since": c.connected_since,
                    "uptime": now.saturating_sub(c.connected_since), "key_id": c.key_id,
                    "last_rekey": if c.last_rekey == 0 { Value::Null } else { c.last_rekey.into() },
                    "peer_id": c.peer_id,
                    "username": if c.username.is_empty() { Value::Null } else { c.username.clone().into() },
                    "virtual_ip6": if c.virtual_ip6.is_empty() { Value::Null } else { c.virtual_ip6.clone().into() },
                })
            })
            .collect(),
    )
}

fn role_name(s: &SyncInfo) -> &'static str {
    s.role.map_or("unknown", |r| r.name())
}

pub fn sync(s: &SyncInfo, now: u64) -> String {
    let mut out = format!(
        "Role:       {}\nTransport:  {}\nSessions:   {} ({})\nState:      {}\nLag:        {} ms\nDatagrams:  sent {}, received {}\nRejected:   bad auth {}, replay {}, version {}, malformed {}, table full {}\n",
        role_name(s),
        s.transport,
        s.sessions,
        if s.bulk_complete { "bulk complete" } else { "bulk pending" },
        s.state,
        s.lag_ms,
        s.sent,
        s.received,
        s.rejected_auth,
        s.rejected_replay,
        s.rejected_version,
        s.rejected_malformed,
        s.rejected_full
    );
    if !s.peers.is_empty() {
        out += &format!("\n{:<24} {:<8} {}\n", "Peer", "Role", "Last heard");
        for p in &s.peers {
            let heard = if p.last_heard == 0 { "never".to_string() } else { format!("{} ago", ago(now, p.last_heard)) };
            // A silent peer's last role is stale: a dead master is not master.
            let role = if p.lost { "lost" } else { p.role.name() };
            out += &format!("{:<24} {:<8} {}\n", p.address, role, heard);
        }
    }
    out
}

pub fn sync_json(s: &SyncInfo) -> Value {
    json!({
        "role": s.role.map(|r| r.name()), "transport": s.transport, "sessions": s.sessions,
        "lag_ms": s.lag_ms, "bulk_complete": s.bulk_complete, "state": s.state, "sent": s.sent,
        "received": s.received,
        "rejected": { "auth": s.rejected_auth, "replay": s.rejected_replay,
                      "version": s.rejected_version, "malformed": s.rejected_malformed,
                      "full": s.rejected_full },
        "peers": s.peers.iter().map(|p| json!({
            "address": p.address, "role": p.role.name(),
            "last_heard": if p.last_heard == 0 { Value::Null } else { p.last_heard.into() },
            "lost": p.lost,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpnsyncd_common::ctl::PeerInfo;
    use vpnsyncd_common::heartbeat::Beats;
    use vpnsyncd_common::msg::Role;

    #[test]
    fn timeframes() {
        assert_eq!(timeframe(0), "00:00:00");
        assert_eq!(timeframe(3723), "01:02:03");
        assert_eq!(timeframe(86_400 + 3 * 3600 + 4 * 60), "1d03h04m");
        assert_eq!(timeframe(5 * 604_800 + 2 * 86_400 + 3 * 3600), "05w2d03h");
    }

    #[test]
    fn client_table_is_aligned() {
        let c = ClientInfo {
            common_name: "alice".into(),
            real_address: "198.18.0.100:51234".into(),
            virtual_ip: "10.8.0.2".into(),
            cipher: "AES-256-GCM".into(),
            bytes_in: 1234,
            bytes_out: 56789,
            connected_since: 1000,
            key_id: 1,
            last_rekey: 4000,
            peer_id: 0,
            username: "bob".into(),
            virtual_ip6: String::new(),
        };
        let out = clients(&[c], 4600);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].find("Virtual IP"), lines[1].find("10.8.0.2"));
        assert_eq!(lines[0].find("Bytes In").map(|i| i + "Bytes In".len()), lines[1].find(" 1234 ").map(|i| i + 5));
        assert!(lines[1].starts_with("alice "));
        assert_eq!(lines[0].find("User"), lines[1].find("bob "));
        assert!(lines[1].ends_with("00:10:00 ago"), "{}", lines[1]);
        assert!(lines[1].contains("01:00:00"));
        assert_eq!(lines[0].find("Virtual IPv6"), lines[1].find("- "), "no IPv6 address: a dash");
        let j = clients_json(&[ClientInfo { last_rekey: 0, ..clients_sample() }], 10);
        assert_eq!(j[0]["last_rekey"], Value::Null);
        assert_eq!(j[0]["common_name"], "bob");
        assert_eq!(j[0]["username"], Value::Null);
        assert_eq!(j[0]["virtual_ip6"], Value::Null);
    }

    #[test]
    fn the_ipv6_column_is_as_wide_as_its_longest_address() {
        let long = "2001:db8:1234:5678:9abc:def0:1234:5678";
        let with = |a: &str| ClientInfo { virtual_ip6: a.into(), ..clients_sample() };
        let out = clients(&[with("fd00:8::2"), with(long), with("")], 10);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        let cipher = lines[0].find("Cipher").unwrap();
        assert_eq!(cipher, lines[0].find("Virtual IPv6").unwrap() + long.len() + 1);
        for (line, v6) in lines[1..].iter().zip(["fd00:8::2", long, "-"]) {
            let col = lines[0].find("Virtual IPv6").unwrap();
            assert_eq!(line[col..].split(' ').next(), Some(v6), "{line}");
            assert_eq!(line[cipher..].split(' ').next(), Some("c"), "{line}");
        }
        let j = clients_json(&[with(long)], 10);
        assert_eq!(j[0]["virtual_ip6"], long);
        let narrow = clients(&[with("")], 10);
        assert_eq!(narrow.lines().next().unwrap().find("Cipher"), Some(lines[0].find("Virtual IPv6").unwrap() + 13));
    }

    fn clients_sample() -> ClientInfo {
        ClientInfo {
            common_name: "bob".into(),
            real_address: "a".into(),
            virtual_ip: "b".into(),
            cipher: "c".into(),
            bytes_in: 0,
            bytes_out: 0,
            connected_since: 0,
            key_id: 0,
            last_rekey: 7,
            peer_id: 3,
            username: String::new(),
            virtual_ip6: String::new(),
        }
    }

    #[test]
    fn summary_and_sync_text() {
        let s = Summary {
            version: "0.1.0".into(),
            role: Role::Backup,
            started: 100,
            clients: 0,
            max_clients: 1024,
            tun_device: "tun0".into(),
            server_address: "10.8.0.1/24".into(),
            listen: vec!["0.0.0.0:1194".into()],
            sync: "standalone".into(),
            ghosts: 3,
            refused_packets: 7,
            refused_records: 2,
            refused_renegotiations: 4,
            wrong_source: 5,
            acks_filtered: 3,
            watchdog: 3,
            parent_heard: 3_699_600,
            heartbeats: Beats(vec![("engine".into(), 3_699_750), ("syncer".into(), 0)]),
        };
        let t = summary(&s, 3_700_000);
        assert!(t.starts_with("vpnsyncd 0.1.0, role BACKUP, up 01:00:00\n"), "{t}");
        assert!(t.contains("Clients:  0 of 1024, 3 of other members\n"), "{t}");
        assert!(
            t.contains(
                "Refused:  7 first packets, 2 sync records, 4 renegotiations\nDropped:  5 tunnel packets from a wrong source\nFiltered: 3 TCP ACKs (ack-filter)\n"
            ),
            "{t}"
        );
        assert!(
            t.ends_with("Watchdog: 3 s; last heartbeat: parent 0.4 s ago, engine 0.2 s ago, syncer never\n"),
            "{t}"
        );
        let j = summary_json(&s, 3_700_000);
        assert_eq!(j["uptime"], 3600);
        assert_eq!(j["watchdog"], 3);
        assert_eq!(j["acks_filtered"], 3);
        assert_eq!(j["refused_renegotiations"], 4);
        assert_eq!(j["wrong_source"], 5);
        assert_eq!(j["heartbeats"]["engine"]["age_ms"], 250);
        assert_eq!(j["heartbeats"]["parent"]["last_ms"], 3_699_600);
        assert_eq!(j["heartbeats"]["syncer"], Value::Null);
        let y = SyncInfo { role: None, transport: "unicast".into(), ..SyncInfo::default() };
        let t = sync(&y, 0);
        assert!(t.starts_with("Role:       unknown\nTransport:  unicast\n"), "{t}");
        assert_eq!(sync_json(&y)["role"], Value::Null);
    }

    #[test]
    fn a_lost_peer_is_not_shown_as_master() {
        let peer = |lost| PeerInfo { address: "198.18.0.2:1196".into(), last_heard: 100, role: Role::Master, lost };
        let y = SyncInfo { role: Some(Role::Backup), peers: vec![peer(true)], ..SyncInfo::default() };
        let t = sync(&y, 110);
        let line = t.lines().last().unwrap();
        assert!(line.starts_with("198.18.0.2:1196          lost     "), "{t}");
        assert!(!t.contains("MASTER"), "{t}");
        let j = sync_json(&y);
        assert_eq!(j["peers"][0]["role"], "MASTER");
        assert_eq!(j["peers"][0]["lost"], true);
        let y = SyncInfo { peers: vec![peer(false)], ..y };
        assert!(sync(&y, 110).lines().last().unwrap().contains(" MASTER "));
        assert_eq!(sync_json(&y)["peers"][0]["lost"], false);
    }
}
