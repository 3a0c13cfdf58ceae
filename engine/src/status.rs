//! OpenVPN's status report (`status-version` 1, 2 and 3, as OpenVPN 2.6
//! prints it), which the status file and the management `status` command
//! share, so that openvpn-monitor, openvpn_exporter and appliance scripts
//! read vpnsyncd as they read a stock server.
//!
//! Rendering is pure (rows and a clock in, text out): the engine renders,
//! the parent writes the file, since the engine has no filesystem.
//! Times are printed in UTC: the engine runs chrooted without
//! /etc/localtime, and the `(time_t)` columns carry the exact instant.
//! The cluster role and the sync state go in extra `GLOBAL_STATS` rows,
//! which parsers of the stock format skip.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use vpnsyncd_common::msg::Role;

use crate::server::Server;
use crate::session::Now;

/// Bytes of status text per `StatusPart` imsg, below the imsg maximum.
pub const PART: usize = 16000;

/// One connected client: a `CLIENT_LIST` and a `ROUTING_TABLE` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub common_name: String,
    pub real_address: SocketAddr,
    pub virtual_address: Ipv4Addr,
    /// From `client network6`; also a ROUTING_TABLE line, as in OpenVPN.
    pub virtual_ipv6: Option<Ipv6Addr>,
    /// The user a password check accepted; OpenVPN prints UNDEF without.
    pub username: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connected_since: u64,
    /// OpenVPN's client id (what `client-kill` takes): never reused while
    /// the engine runs, unlike the peer-id (crate::session::Session).
    pub client_id: u64,
    pub peer_id: u32,
    pub cipher: &'static str,
    /// When the client last sent or received (Unix time).
    pub last_ref: u64,
}

/// What the extra `GLOBAL_STATS` rows report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cluster {
    pub role: Role,
    /// "standalone", "ready" (the table is complete) or "incomplete".
    pub sync: &'static str,
}

/// One row per established session (a virtual address assigned) that this
/// member serves, by peer-id: a backup's ghosts are the master's clients.
pub fn rows(server: &Server, now: Now) -> Vec<Row> {
    server
        .sessions()
        .filter(|s| !s.is_ghost())
        .filter_map(|s| {
            let idle = now.mono.saturating_duration_since(s.last_seen()).as_secs();
            Some(Row {
                common_name: s.common_name.clone().unwrap_or_default(),
                real_address: s.peer,
                virtual_address: s.virtual_ip?,
                virtual_ipv6: s.virtual_ip6,
                username: s.auth.username.clone(),
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                connected_since: s.connected_since,
                client_id: s.client_id,
                peer_id: s.peer_id,
                cipher: s.cipher_name(),
                last_ref: now.unix.saturating_sub(idle),
            })
        })
        .collect()
}

/// The `TITLE` row: OpenVPN puts its version string there.
fn title() -> String {
    format!("vpnsyncd {}", vpnsyncd_common::VERSION)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, the layout of OpenVPN's time columns.
pub fn time_string(unix: u64) -> String {
    let (days, secs) = ((unix / 86400) as i64, unix % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The report in `version` 1, 2 or 3 (anything else is 1, as in
/// OpenVPN), each line ending in `eol` ("\n" in the file, "\r\n" on the
/// management socket).
pub fn render(version: u8, now: u64, rows: &[Row], cluster: Cluster, eol: &str) -> String {
    let mut out = String::with_capacity(512 + rows.len() * 160);
    match version {
        2 | 3 => modern(&mut out, if version == 3 { "\t" } else { "," }, now, rows, cluster, eol),
        _ => classic(&mut out, now, rows, cluster, eol),
    }
    out
}

fn line(out: &mut String, sep: &str, fields: &[&str], eol: &str) {
    out.push_str(&fields.join(sep));
    out.push_str(eol);
}

fn modern(out: &mut String, sep: &str, now: u64, rows: &[Row], cluster: Cluster, eol: &str) {
    line(out, sep, &["TITLE", &title()], eol);
    line(out, sep, &["TIME", &time_string(now), &now.to_string()], eol);
    line(
        out,
        sep,
        &[
            "HEADER",
            "CLIENT_LIST",
            "Common Name",
            "Real Address",
            "Virtual Address",
            "Virtual IPv6 Address",
            "Bytes Received",
            "Bytes Sent",
            "Connected Since",
            "Connected Since (time_t)",
            "Username",
            "Client ID",
            "Peer ID",
            "Data Channel Cipher",
        ],
        eol,
    );
    for r in rows {
        let (real, vaddr) = (r.real_address.to_string(), r.virtual_address.to_string());
        let (cid, peer_id) = (r.client_id.to_string(), r.peer_id.to_string());
        let vaddr6 = r.virtual_ipv6.map(|a| a.to_string()).unwrap_or_default();
        let fields = [
            "CLIENT_LIST",
            &r.common_name,
            &real,
            &vaddr,
            &vaddr6,
            &r.bytes_in.to_string(),
            &r.bytes_out.to_string(),
            &time_string(r.connected_since),
            &r.connected_since.to_string(),
            r.username.as_deref().unwrap_or("UNDEF"),
            &cid,
            &peer_id,
            r.cipher,
        ];
        line(out, sep, &fields, eol);
    }
    let header =
        ["HEADER", "ROUTING_TABLE", "Virtual Address", "Common Name", "Real Address", "Last Ref", "Last Ref (time_t)"];
    line(out, sep, &header, eol);
    for (r, vaddr) in routes(rows) {
        let real = r.real_address.to_string();
        let fields =
            ["ROUTING_TABLE", &vaddr, &r.common_name, &real, &time_string(r.last_ref), &r.last_ref.to_string()];
        line(out, sep, &fields, eol);
    }
    line(out, sep, &["GLOBAL_STATS", "Max bcast/mcast queue length", "0"], eol);
    line(out, sep, &["GLOBAL_STATS", "dco_enabled", "0"], eol);
    line(out, sep, &["GLOBAL_STATS", "cluster_role", cluster.role.name()], eol);
    line(out, sep, &["GLOBAL_STATS", "sync_state", cluster.sync], eol);
    out.push_str("END");
    out.push_str(eol);
}

/// The routing table: each client's IPv4 address, then its IPv6 one.
fn routes(rows: &[Row]) -> impl Iterator<Item = (&Row, String)> {
    rows.iter().flat_map(|r| {
        std::iter::once((r, r.virtual_address.to_string())).chain(r.virtual_ipv6.map(|a| (r, a.to_string())))
    })
}

fn classic(out: &mut String, now: u64, rows: &[Row], cluster: Cluster, eol: &str) {
    let _ = write!(out, "OpenVPN CLIENT LIST{eol}Updated,{}{eol}", time_string(now));
    out.push_str("Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since");
    out.push_str(eol);
    for r in rows {
        let since = time_string(r.connected_since);
        let _ = write!(out, "{},{},{},{},{since}{eol}", r.common_name, r.real_address, r.bytes_in, r.bytes_out);
    }
    let _ = write!(out, "ROUTING TABLE{eol}Virtual Address,Common Name,Real Address,Last Ref{eol}");
    for (r, vaddr) in routes(rows) {
        let _ = write!(out, "{vaddr},{},{},{}{eol}", r.common_name, r.real_address, time_string(r.last_ref));
    }
    let _ = write!(
        out,
        "GLOBAL STATS{eol}Max bcast/mcast queue length,0{eol}cluster_role,{}{eol}sync_state,{}{eol}END{eol}",
        cluster.role.name(),
        cluster.sync
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(time_string(0), "1970-01-01 00:00:00");
        // From the stock OpenVPN 2.6 capture in testdata/status (TZ=UTC).
        assert_eq!(time_string(1796165397), "2026-12-01 22:49:57");
        assert_eq!(time_string(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(time_string(4_107_542_399), "2100-02-28 23:59:59");
    }

    fn row() -> Row {
        Row {
            common_name: "alice".into(),
            real_address: "198.18.0.21:40001".parse().unwrap(),
            virtual_address: Ipv4Addr::new(10, 8, 0, 2),
            virtual_ipv6: None,
            username: None,
            bytes_in: 1234,
            bytes_out: 5678,
            connected_since: 1796165382,
            client_id: 12,
            peer_id: 7,
            cipher: "AES-256-GCM",
            last_ref: 1796165396,
        }
    }

    const CLUSTER: Cluster = Cluster { role: Role::Master, sync: "ready" };

    #[test]
    fn version_2_lines() {
        let text = render(2, 1796165397, &[row()], CLUSTER, "\n");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "TIME,2026-12-01 22:49:57,1796165397");
        assert_eq!(
            lines[3],
            "CLIENT_LIST,alice,198.18.0.21:40001,10.8.0.2,,1234,5678,2026-12-01 22:49:42,1796165382,UNDEF,12,7,AES-256-GCM"
        );
        assert_eq!(lines[5], "ROUTING_TABLE,10.8.0.2,alice,198.18.0.21:40001,2026-12-01 22:49:56,1796165396");
        assert_eq!(&lines[8..], ["GLOBAL_STATS,cluster_role,MASTER", "GLOBAL_STATS,sync_state,ready", "END"]);
    }

    #[test]
    fn the_ipv6_address_and_the_user_have_their_columns() {
        let r = Row { virtual_ipv6: Some("fd00:8::2".parse().unwrap()), username: Some("bob".into()), ..row() };
        let text = render(2, 1796165397, std::slice::from_ref(&r), CLUSTER, "\n");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[3],
            "CLIENT_LIST,alice,198.18.0.21:40001,10.8.0.2,fd00:8::2,1234,5678,2026-12-01 22:49:42,1796165382,bob,12,7,AES-256-GCM"
        );
        assert_eq!(lines[5], "ROUTING_TABLE,10.8.0.2,alice,198.18.0.21:40001,2026-12-01 22:49:56,1796165396");
        assert_eq!(lines[6], "ROUTING_TABLE,fd00:8::2,alice,198.18.0.21:40001,2026-12-01 22:49:56,1796165396");
        assert_eq!(lines[7], "GLOBAL_STATS,Max bcast/mcast queue length,0");
        let classic = render(1, 1796165397, &[r], CLUSTER, "\n");
        assert!(
            classic.contains("\n10.8.0.2,alice,198.18.0.21:40001,2026-12-01 22:49:56\nfd00:8::2,alice,"),
            "{classic}"
        );
    }

    #[test]
    fn version_3_uses_tabs_and_management_crlf() {
        let text = render(3, 1796165397, &[row()], CLUSTER, "\r\n");
        assert!(text.ends_with("GLOBAL_STATS\tsync_state\tready\r\nEND\r\n"), "{text}");
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 11);
        assert!(lines.iter().all(|l| !l.contains(',') && !l.contains('\n')));
    }

    #[test]
    fn version_1_as_openvpn_prints_it() {
        let text = render(1, 1796165397, &[row()], CLUSTER, "\n");
        let want = "OpenVPN CLIENT LIST\nUpdated,2026-12-01 22:49:57\n\
            Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since\n\
            alice,198.18.0.21:40001,1234,5678,2026-12-01 22:49:42\n\
            ROUTING TABLE\nVirtual Address,Common Name,Real Address,Last Ref\n\
            10.8.0.2,alice,198.18.0.21:40001,2026-12-01 22:49:56\n\
            GLOBAL STATS\nMax bcast/mcast queue length,0\ncluster_role,MASTER\nsync_state,ready\nEND\n";
        assert_eq!(text, want);
    }
}
