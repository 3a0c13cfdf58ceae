//! What vpnsyncd answers to each management command, in OpenVPN 2.6's
//! words (engine/testdata/status/openvpn-2.6.14-management.txt is a stock
//! server's transcript): `SUCCESS:`/`ERROR:` lines, multi-line answers
//! ending in `END`, every line ending in CRLF.
//!
//! The status report is engine/src/status.rs's, the one the status file
//! prints. It lists the sessions this member serves: a backup lists none
//! (its ghosts belong to the master) and says so in GLOBAL_STATS. `kill`
//! and `client-kill` end sessions this member serves; the ends go to the
//! other members as deletes (docs/SYNC.md), so a killed session does not
//! come back after a failover.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::command::{Command, StateParam, Victim};
use crate::server::Server;
use crate::session::{Now, Session};
use crate::status::{self, Cluster};

/// The first line of every connection.
pub const GREETING: &str = ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n";

/// What the daemon's version line names. openvpn-monitor takes the second
/// word for a semantic version and reads the 2.4+ status columns only
/// from 2.4.0 up, so that word is the OpenVPN level whose interface this
/// answers, marked as ours.
pub fn title() -> String {
    format!("vpnsyncd 2.6.14-compatible (vpnsyncd {})", vpnsyncd_common::VERSION)
}

/// The message a client killed from here receives when none is given
/// (`client-kill CID` sends RESTART, as OpenVPN does).
const KILL_MESSAGE: &str = "RESTART,killed by the management interface";
const WHY: &str = "killed on the management interface";

/// The commands served, in OpenVPN's help layout.
const HELP: &[&str] = &[
    "Commands:",
    "client-kill CID [M]    : Kill client instance CID with message M (def=RESTART)",
    "exit|quit              : Close management session.",
    "help                   : Print this message.",
    "kill cn                : Kill the client instance(s) having common name cn.",
    "kill IP:port           : Kill the client instance connecting from IP:port.",
    "load-stats             : Show global server load stats.",
    "pid                    : Show process ID of the current OpenVPN process.",
    "state [on|off] [N|all] : Like log, but show state history.",
    "status [n]             : Show current daemon status info using format #n.",
    "version [n]            : Set client's version to n or show current version of daemon.",
    "END",
];

/// What an answer needs of the engine besides its sessions.
pub struct View {
    pub now: Now,
    pub cluster: Cluster,
    /// When the engine started: the time of its CONNECTED state.
    pub started: u64,
    /// The server's tunnel addresses.
    pub local: Ipv4Addr,
    pub local6: Option<Ipv6Addr>,
    /// The first `listen on` address.
    pub listen: Option<SocketAddr>,
}

/// One answer: the text to send, and whether the connection ends after it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub text: String,
    pub quit: bool,
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push_str("\r\n");
}

/// The answer to `cmd`; `kill` and `client-kill` end sessions of `server`.
pub fn answer(cmd: &Command, server: &mut Server, v: &View) -> Answer {
    let mut out = String::new();
    match cmd {
        Command::Empty => {}
        Command::Quit => return Answer { text: out, quit: true },
        Command::Help => {
            push_line(&mut out, &format!("Management Interface for {}", title()));
            HELP.iter().for_each(|l| push_line(&mut out, l));
        }
        Command::Version => {
            push_line(&mut out, &format!("OpenVPN Version: {}", title()));
            push_line(&mut out, "Management Version: 5");
            push_line(&mut out, "END");
        }
        // Versions up to 3 were never acknowledged (manage.c, MCV_PKSIGN_ALG).
        Command::ClientVersion(n) if *n > 3 => {
            push_line(&mut out, &format!("SUCCESS: Management client version set to {n}"))
        }
        Command::ClientVersion(_) => {}
        Command::Pid => push_line(&mut out, &format!("SUCCESS: pid={}", std::process::id())),
        Command::State(params) => params.iter().for_each(|p| state(&mut out, p, v)),
        Command::LoadStats => {
            let rows = status::rows(server, v.now);
            let (bin, bout) = rows.iter().fold((0u64, 0u64), |(i, o), r| (i + r.bytes_in, o + r.bytes_out));
            push_line(&mut out, &format!("SUCCESS: nclients={},bytesin={bin},bytesout={bout}", rows.len()));
        }
        Command::Status(n) => {
            let version = u8::try_from(*n).unwrap_or(1);
            out = status::render(version, v.now.unix, &status::rows(server, v.now), v.cluster, "\r\n");
        }
        Command::Kill(victim) => push_line(&mut out, &kill(server, v.now, victim)),
        Command::ClientKill { cid: None, .. } => push_line(&mut out, "ERROR: cannot parse CID"),
        Command::ClientKill { cid: Some(cid), message } => {
            let msg = message.as_deref().unwrap_or(KILL_MESSAGE);
            let n = server.kill_sessions(v.now, |s| s.client_id == *cid, msg, WHY);
            push_line(
                &mut out,
                if n > 0 { "SUCCESS: client-kill command succeeded" } else { "ERROR: client-kill command failed" },
            );
        }
        Command::Missing(text) => push_line(&mut out, text),
        Command::Unknown => push_line(&mut out, "ERROR: unknown command, enter 'help' for more options"),
    }
    Answer { text: out, quit: false }
}

/// `state`: the one state of a server, CONNECTED since the engine started,
/// in manage.c's columns (time, state, reason, tunnel address, remote
/// address and port, empty on a server, local address and port, and the
/// tunnel IPv6 address when there is one). `state on` is acknowledged and
/// no `>STATE:` line ever follows: the state never changes, and what
/// monitoring runs does not wait for one (openvpn-monitor sends a plain
/// `state`, openvpn_exporter reads only the status file).
fn state(out: &mut String, p: &StateParam, v: &View) {
    match p {
        StateParam::On => push_line(out, "SUCCESS: real-time state notification set to ON"),
        StateParam::Off => push_line(out, "SUCCESS: real-time state notification set to OFF"),
        StateParam::Bad(_) => push_line(out, "ERROR: state parameter must be 'on' or 'off' or some number n or 'all'"),
        StateParam::History => {
            let mut l = format!("{},CONNECTED,SUCCESS,{},,", v.started, v.local);
            match v.listen {
                Some(a) => {
                    let _ = write!(l, ",{},{}", a.ip(), a.port());
                }
                None => l.push_str(",,"),
            }
            if let Some(a6) = v.local6 {
                let _ = write!(l, ",{a6}");
            }
            push_line(out, &l);
            push_line(out, "END");
        }
    }
}

/// The real address as `kill IP:port` names it (an IPv4-mapped IPv6
/// peer of a dual-stack listener counts as its IPv4 address).
fn peer_v4(s: &Session) -> Option<std::net::SocketAddrV4> {
    match s.peer {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().map(|ip| std::net::SocketAddrV4::new(ip, a.port())),
    }
}

fn kill(server: &mut Server, now: Now, victim: &Victim) -> String {
    match victim {
        Victim::Bad(text) => text.clone(),
        Victim::CommonName(cn) => {
            match server.kill_sessions(now, |s| s.common_name.as_deref() == Some(cn), KILL_MESSAGE, WHY) {
                0 => format!("ERROR: common name '{cn}' not found"),
                n => format!("SUCCESS: common name '{cn}' found, {n} client(s) killed"),
            }
        }
        Victim::Address(a) => match server.kill_sessions(now, |s| peer_v4(s) == Some(*a), KILL_MESSAGE, WHY) {
            0 => format!("ERROR: client at address {a} not found"),
            n => format!("SUCCESS: {n} client(s) at address {a} killed"),
        },
    }
}
