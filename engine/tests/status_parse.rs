//! The status report read the way openvpn_exporter and openvpn-monitor read
//! it, applied to files written by stock OpenVPN 2.6.14 (captured in the
//! lab: `status FILE 1`, `status-version 2` and `3`, one client connected)
//! and to what vpnsyncd renders: both must give the same record types,
//! the same headers and rows that fill every header column.

use std::collections::HashMap;

use vpnsyncd_common::msg::Role;
use vpnsyncd_engine::status::{render, Cluster, Row};

/// A status file as the exporters see it.
#[derive(Debug, Default)]
struct Parsed {
    time: Option<u64>,
    /// Column names of each record type, from its HEADER line.
    headers: HashMap<String, Vec<String>>,
    /// Rows of each record type, as column name -> value.
    rows: HashMap<String, Vec<HashMap<String, String>>>,
    /// Only the stats the exporters know; the rest are skipped, as they do.
    max_bcast: Option<u64>,
    ended: bool,
}

fn parse(text: &str, sep: char) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    for (n, line) in text.lines().enumerate() {
        if p.ended {
            return Err(format!("line {}: text after END", n + 1));
        }
        let f: Vec<&str> = line.split(sep).collect();
        match f[0] {
            "TITLE" => {}
            "TIME" => p.time = Some(f.get(2).and_then(|t| t.parse().ok()).ok_or("TIME without a time_t")?),
            "HEADER" if f.len() > 2 => {
                p.headers.insert(f[1].to_string(), f[2..].iter().map(|s| s.to_string()).collect());
            }
            "GLOBAL_STATS" if f.len() == 3 => {
                if f[1] == "Max bcast/mcast queue length" {
                    p.max_bcast = Some(f[2].parse().map_err(|_| "bad queue length")?);
                }
            }
            "END" => p.ended = true,
            kind => {
                let cols = p.headers.get(kind).ok_or(format!("line {}: {kind} before its HEADER", n + 1))?;
                if cols.len() != f.len() - 1 {
                    return Err(format!("line {}: {} fields for {} columns", n + 1, f.len() - 1, cols.len()));
                }
                let row = cols.iter().cloned().zip(f[1..].iter().map(|s| s.to_string())).collect();
                p.rows.entry(kind.to_string()).or_default().push(row);
            }
        }
    }
    if !p.ended {
        return Err("no END".into());
    }
    Ok(p)
}

/// What vpnsyncd renders for the client of a stock file, at its time.
fn ours(version: u8, stock: &Parsed) -> String {
    let c = &stock.rows["CLIENT_LIST"][0];
    let r = &stock.rows["ROUTING_TABLE"][0];
    let row = Row {
        common_name: c["Common Name"].clone(),
        real_address: c["Real Address"].parse().unwrap(),
        virtual_address: c["Virtual Address"].parse().unwrap(),
        virtual_ipv6: None,
        username: None,
        bytes_in: c["Bytes Received"].parse().unwrap(),
        bytes_out: c["Bytes Sent"].parse().unwrap(),
        connected_since: c["Connected Since (time_t)"].parse().unwrap(),
        client_id: c["Client ID"].parse().unwrap(),
        peer_id: c["Peer ID"].parse().unwrap(),
        cipher: "AES-256-GCM",
        last_ref: r["Last Ref (time_t)"].parse().unwrap(),
    };
    render(version, stock.time.unwrap(), &[row], Cluster { role: Role::Backup, sync: "ready" }, "\n")
}

fn compare(stock: &str, version: u8, sep: char) {
    let theirs = parse(stock, sep).unwrap();
    let text = ours(version, &theirs);
    let mine = parse(&text, sep).unwrap();
    assert_eq!(mine.headers, theirs.headers, "headers of version {version}");
    assert_eq!(theirs.headers["CLIENT_LIST"].len(), 12, "the 2.6 columns");
    for kind in ["CLIENT_LIST", "ROUTING_TABLE"] {
        let (a, b) = (&theirs.rows[kind], &mine.rows[kind]);
        assert_eq!((a.len(), b.len()), (1, 1));
        // Every column, the formatted dates included, reads the same.
        for col in &theirs.headers[kind] {
            assert_eq!(b[0][col], a[0][col], "{kind} column {col}");
        }
    }
    assert_eq!((mine.max_bcast, theirs.max_bcast), (Some(0), Some(0)));
    assert_eq!(mine.time, theirs.time);
    // Line for line, only TITLE and the extra GLOBAL_STATS rows differ.
    let differ: Vec<&str> = text.lines().filter(|l| !stock.lines().any(|s| s == *l)).collect();
    assert_eq!(differ.len(), 3, "{differ:?}");
    assert!(differ[0].starts_with("TITLE") && differ[1..].iter().all(|l| l.starts_with("GLOBAL_STATS")));
}

#[test]
fn version_2_reads_like_stock_openvpn() {
    compare(include_str!("../testdata/status/openvpn-2.6.14-v2.status"), 2, ',');
}

#[test]
fn version_3_reads_like_stock_openvpn() {
    compare(include_str!("../testdata/status/openvpn-2.6.14-v3.status"), 3, '\t');
}

#[test]
fn cluster_rows_are_only_global_stats() {
    let stock = parse(include_str!("../testdata/status/openvpn-2.6.14-v2.status"), ',').unwrap();
    let text = ours(2, &stock);
    let extra: Vec<&str> = text.lines().filter(|l| l.contains("cluster_role") || l.contains("sync_state")).collect();
    assert_eq!(extra, ["GLOBAL_STATS,cluster_role,BACKUP", "GLOBAL_STATS,sync_state,ready"]);
    assert!(parse(&text.replace("END\n", ""), ',').is_err(), "the parser notices a truncated file");
}
