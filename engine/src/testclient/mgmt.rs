//! The management answers against the in-process client on a two-member
//! cluster: what monitoring reads on the master and on the backup, and
//! `kill`/`client-kill` ending the session on every member.

use super::*;
use crate::mgmt::answer::{answer, View};
use crate::mgmt::command::parse;
use crate::status::Cluster;

fn view(now: Now, role: Role) -> View {
    View {
        now,
        cluster: Cluster { role, sync: "ready" },
        started: 1_796_165_667,
        local: Ipv4Addr::new(10, 8, 0, 1),
        local6: None,
        listen: Some("198.18.0.10:1194".parse().unwrap()),
    }
}

fn ask(server: &mut Server, now: Now, role: Role, line: &str) -> String {
    answer(&parse(line), server, &view(now, role)).text
}

#[test]
fn what_openvpn_monitor_reads_on_the_master_and_the_backup() {
    let (mut lab, mut backup, _) = cluster("");
    let (now, m) = (lab.now, Role::Master);
    let version = ask(&mut lab.server, now, m, "version");
    assert_eq!(
        version,
        format!(
            "OpenVPN Version: vpnsyncd 2.6.14-compatible (vpnsyncd {})\r\nManagement Version: 5\r\nEND\r\n",
            vpnsyncd_common::VERSION
        )
    );
    // openvpn-monitor: the second word is a semantic version, 2.4.0 or later.
    let release = version.lines().next().unwrap().trim_start_matches("OpenVPN Version: ").to_string();
    assert_eq!(release.split(' ').nth(1), Some("2.6.14-compatible"));
    assert_eq!(
        ask(&mut lab.server, now, m, "state"),
        "1796165667,CONNECTED,SUCCESS,10.8.0.1,,,198.18.0.10,1194\r\nEND\r\n"
    );
    let stats = ask(&mut lab.server, now, m, "load-stats");
    let info = lab.info();
    assert_eq!(stats, format!("SUCCESS: nclients=1,bytesin={},bytesout={}\r\n", info.bytes_in, info.bytes_out));
    let status = ask(&mut lab.server, now, m, "status 3");
    assert!(status.contains(&format!("\r\nCLIENT_LIST\talice\t{CLIENT_ADDR}\t10.8.0.2\t\t")), "{status}");
    assert!(
        status.ends_with("GLOBAL_STATS\tcluster_role\tMASTER\r\nGLOBAL_STATS\tsync_state\tready\r\nEND\r\n"),
        "{status}"
    );
    assert!(ask(&mut lab.server, now, m, "status 2").contains("\r\nCLIENT_LIST,alice,"));
    assert!(ask(&mut lab.server, now, m, "status").starts_with("OpenVPN CLIENT LIST\r\nUpdated,"));
    // The backup holds the ghost but serves nobody: no row, its role said.
    let b = ask(&mut backup, now, Role::Backup, "status 3");
    assert!(!b.contains("CLIENT_LIST\talice"), "{b}");
    assert!(b.contains("GLOBAL_STATS\tcluster_role\tBACKUP\r\n"), "{b}");
    assert_eq!(ask(&mut backup, now, Role::Backup, "load-stats"), "SUCCESS: nclients=0,bytesin=0,bytesout=0\r\n");
}

#[test]
fn errors_in_openvpn_words() {
    let (mut lab, _, _) = cluster("");
    let (now, m) = (lab.now, Role::Master);
    let mut ask = |l: &str| ask(&mut lab.server, now, m, l);
    assert_eq!(ask("bogus"), "ERROR: unknown command, enter 'help' for more options\r\n");
    assert_eq!(ask("kill nobody"), "ERROR: common name 'nobody' not found\r\n");
    assert_eq!(ask("kill 1.2.3.4:5"), "ERROR: client at address 1.2.3.4:5 not found\r\n");
    assert_eq!(ask("client-kill 99"), "ERROR: client-kill command failed\r\n");
    assert_eq!(ask("client-kill 99999999999"), "ERROR: client-kill command failed\r\n");
    assert_eq!(ask("client-kill x"), "ERROR: cannot parse CID\r\n");
    assert_eq!(ask("state x"), "ERROR: state parameter must be 'on' or 'off' or some number n or 'all'\r\n");
    assert_eq!(ask("state on"), "SUCCESS: real-time state notification set to ON\r\n");
    assert_eq!(ask(""), "");
    assert_eq!(ask("version 2"), "");
    assert_eq!(ask("version 4"), "SUCCESS: Management client version set to 4\r\n");
    let help = ask("help");
    assert!(help.starts_with("Management Interface for vpnsyncd ") && help.ends_with("\r\nEND\r\n"), "{help}");
    assert!(answer(&parse("quit"), &mut lab.server, &view(now, m)).quit);
    assert_eq!(lab.server.client_count(), 1, "no error killed anyone");
}

/// `kill CN` on the master: the client is told RESTART, the session ends,
/// and the delete removes the backup's ghost, so that after a failover
/// the new master does not serve the killed session.
#[test]
fn kill_on_the_master_ends_the_session_on_every_member() {
    let (mut lab, mut backup, _) = cluster("");
    let now = lab.now;
    assert_eq!(ask(&mut backup, now, Role::Backup, "kill alice"), "ERROR: common name 'alice' not found\r\n");
    assert_eq!(backup.ghost_count(), 1, "a backup's kill leaves the master's session alone");
    assert_eq!(
        ask(&mut lab.server, now, Role::Master, "kill alice"),
        "SUCCESS: common name 'alice' found, 1 client(s) killed\r\n"
    );
    assert_eq!(lab.server.client_count(), 0);
    lab.run(Duration::from_millis(200));
    assert!(lab.client.messages.iter().any(|m| m.starts_with("RESTART")), "{:?}", lab.client.messages);
    sync(&mut lab.server, &mut backup, now);
    assert_eq!(backup.ghost_count(), 0, "the delete reached the backup");
    backup.set_role(now, Role::Master);
    assert_eq!(backup.client_count(), 0, "nothing to take over");
}

#[test]
fn kill_by_address_and_client_kill_by_id() {
    let (mut lab, mut backup, _) = cluster("");
    let now = lab.now;
    let want = format!("SUCCESS: 1 client(s) at address {CLIENT_ADDR} killed\r\n");
    assert_eq!(ask(&mut lab.server, now, Role::Master, &format!("kill {CLIENT_ADDR}")), want);
    sync(&mut lab.server, &mut backup, now);
    assert_eq!(backup.ghost_count(), 0);

    let (mut lab, mut backup, _) = cluster("");
    let (id, _) = ids(&lab.server, lab.now);
    let line = format!("client-kill {id} HALT");
    assert_eq!(ask(&mut lab.server, now, Role::Master, &line), "SUCCESS: client-kill command succeeded\r\n");
    lab.run(Duration::from_millis(200));
    assert!(lab.client.messages.iter().any(|m| m == "HALT"), "{:?}", lab.client.messages);
    sync(&mut lab.server, &mut backup, lab.now);
    assert_eq!(backup.ghost_count(), 0);
}

/// The one client's Client ID and peer-id in `server`'s status rows.
fn ids(server: &Server, now: Now) -> (u64, u32) {
    let rows = crate::status::rows(server, now);
    assert_eq!(rows.len(), 1, "{rows:?}");
    (rows[0].client_id, rows[0].peer_id)
}

/// OpenVPN never reuses a Client ID while it runs, so a `client-kill` of
/// a client that is gone must not end the later client that got its
/// peer-id (peer-ids are reused, lowest free first). The status file and
/// the `status` answer show the same ID, and after a failover an ID read
/// from the old master's status names nobody on the new one.
#[test]
fn client_ids_are_never_reused_and_name_nobody_on_another_member() {
    let (mut lab, mut backup, _) = cluster("");
    let (first, peer_id) = ids(&lab.server, lab.now);
    assert_eq!(first % 8, 0, "member 1's residue class");
    let cluster = Cluster { role: Role::Master, sync: "ready" };
    let file = crate::status::render(2, lab.now.unix, &crate::status::rows(&lab.server, lab.now), cluster, "\n");
    let answer = ask(&mut lab.server, lab.now, Role::Master, "status 2");
    let columns = |text: &str| -> Vec<String> {
        let row = text.lines().find(|l| l.starts_with("CLIENT_LIST,")).expect("a client row");
        row.trim_end().split(',').map(str::to_string).collect()
    };
    assert_eq!(columns(&file), columns(&answer), "the status file and the management answer agree");
    assert_eq!(columns(&file)[10..12], [first.to_string(), peer_id.to_string()], "Client ID, Peer ID");

    let kill = |s: &mut Server, now: Now, role: Role, id: u64| ask(s, now, role, &format!("client-kill {id}"));
    assert_eq!(kill(&mut lab.server, lab.now, Role::Master, first), "SUCCESS: client-kill command succeeded\r\n");
    lab.run(Duration::from_millis(200));
    assert_eq!(lab.server.client_count(), 0);
    super::reconnect(&mut lab);
    let (second, again) = ids(&lab.server, lab.now);
    assert_eq!(again, peer_id, "the new session got the freed peer-id");
    assert!(second > first && second % 8 == 0, "a new, higher Client ID of member 1: {first} -> {second}");
    assert_eq!(
        kill(&mut lab.server, lab.now, Role::Master, first),
        "ERROR: client-kill command failed\r\n",
        "the gone client's ID names nobody"
    );
    assert_eq!(lab.server.client_count(), 1, "the later client lives on");

    // The backup numbers the ghosts it installs in its own class; after
    // the takeover the master's IDs name nobody there.
    sync(&mut lab.server, &mut backup, lab.now);
    assert_eq!(backup.ghost_count(), 1);
    backup.set_role(lab.now, Role::Master);
    let (theirs, _) = ids(&backup, lab.now);
    assert_eq!(theirs % 8, 1, "member 2's residue class: {theirs}");
    for old in [first, second] {
        assert_eq!(kill(&mut backup, lab.now, Role::Master, old), "ERROR: client-kill command failed\r\n");
    }
    assert_eq!(backup.client_count(), 1);
    assert_eq!(kill(&mut backup, lab.now, Role::Master, theirs), "SUCCESS: client-kill command succeeded\r\n");
    assert_eq!(backup.client_count(), 0);
}
