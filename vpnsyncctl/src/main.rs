//! vpnsyncctl: look inside a running vpnsyncd and steer it, over the
//! root-only control socket.
//!
//! `vpnsyncctl [-j] [-s socket] [-t seconds] command [argument ...]`

mod deadline;
mod genkey;
mod output;
mod parser;

use std::io;
use std::os::fd::OwnedFd;
use std::process::exit;
use std::time::{Duration, Instant};

use parser::Command;
use vpnsyncd_common::codec::Writer;
use vpnsyncd_common::ctl::{self, ClientInfo, Summary, SyncInfo};
use vpnsyncd_common::imsg::{Imsg, ImsgBuf};
use vpnsyncd_common::msg::ImsgType;

const DEFAULT_SOCKET: &str = "/var/run/vpnsyncd.sock";

fn usage() -> ! {
    eprintln!("usage: vpnsyncctl [-j] [-s socket] [-t seconds] command [argument ...]");
    exit(1)
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("vpnsyncctl: {msg}");
    exit(1)
}

/// Sends the request and collects the answer up to `CtlEnd` or `CtlResult`,
/// giving up at `deadline` if there is one.
fn request(sock: &str, cmd: &Command, deadline: Option<Instant>) -> io::Result<Vec<Imsg>> {
    let stream =
        deadline::connect(sock, deadline).map_err(|e| io::Error::new(e.kind(), format!("connect: {sock}: {e}")))?;
    exchange(stream, cmd, deadline)
}

/// The request on a connected socket, and its answer. The daemon may have
/// refused us and closed before our request went out: its reason is read
/// even when sending failed (EPIPE), and only without one is the send
/// error reported.
fn exchange(stream: OwnedFd, cmd: &Command, deadline: Option<Instant>) -> io::Result<Vec<Imsg>> {
    let mut ibuf = ImsgBuf::new(stream);
    ibuf.set_maxsize(16384);
    let (ty, data) = match cmd {
        Command::ShowSummary => (ImsgType::CtlShowSummary, Vec::new()),
        Command::ShowClients => (ImsgType::CtlShowClients, Vec::new()),
        Command::ShowSync => (ImsgType::CtlShowSync, Vec::new()),
        Command::Reload => (ImsgType::CtlReload, Vec::new()),
        Command::Log { verbose } => {
            let mut w = Writer::new();
            w.bool(*verbose);
            (ImsgType::CtlLog, w.finish())
        }
        Command::KillClient(name) => {
            let mut w = Writer::new();
            w.str(name);
            (ImsgType::CtlKillClient, w.finish())
        }
    };
    ibuf.compose(ty as u32, 0, None, &data)?;
    let sent = deadline::flush(&mut ibuf, deadline);
    let mut out = Vec::new();
    loop {
        let m = match deadline::recv(&mut ibuf, deadline) {
            Ok(m) => m,
            Err(e) => {
                return Err(match sent {
                    _ if e.kind() == io::ErrorKind::TimedOut => e,
                    Err(send) => io::Error::new(send.kind(), format!("send: {send}")),
                    Ok(()) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        io::Error::new(e.kind(), "the daemon closed the connection")
                    }
                    Ok(()) => e,
                })
            }
        };
        let done = matches!(ImsgType::from_u32(m.hdr.ty), Ok(ImsgType::CtlEnd) | Ok(ImsgType::CtlResult));
        out.push(m);
        if done {
            return Ok(out);
        }
    }
}

/// `-t seconds`: a positive number, fractions allowed, at most a day.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 86400.0 => Ok(Duration::from_secs_f64(t)),
        _ => Err(format!("-t \"{s}\": the timeout must be a number of seconds above 0 and at most 86400")),
    }
}

fn decode<T>(r: Result<T, vpnsyncd_common::codec::DecodeError>) -> T {
    r.unwrap_or_else(|e| die(format!("bad answer from the daemon: {e}")))
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let (mut json, mut sock, mut timeout) = (false, DEFAULT_SOCKET.to_string(), None);
    while let Some(a) = args.first().filter(|a| a.starts_with('-')).cloned() {
        args.remove(0);
        match a.as_str() {
            "-j" => json = true,
            "-s" if !args.is_empty() => sock = args.remove(0),
            "-t" if !args.is_empty() => timeout = Some(parse_timeout(&args.remove(0)).unwrap_or_else(|e| die(e))),
            "--" => break,
            _ => usage(),
        }
    }
    if args.first().map(String::as_str) == Some("genkey") {
        let now = vpnsyncd_common::heartbeat::unix_ms() / 1000;
        match genkey::run(&args[1..], now) {
            Ok(text) => print!("{text}"),
            Err(e) => die(e),
        }
        return;
    }
    let cmd = parser::parse(&args).unwrap_or_else(|e| die(e));
    let answer = request(&sock, &cmd, timeout.map(|t| Instant::now() + t)).unwrap_or_else(|e| die(e));
    let now_ms = vpnsyncd_common::heartbeat::unix_ms();
    let now = now_ms / 1000;
    let mut summaries = Vec::new();
    let mut clients = Vec::new();
    let mut syncs = Vec::new();
    for m in &answer {
        match ImsgType::from_u32(m.hdr.ty) {
            Ok(ImsgType::CtlSummary) => summaries.push(decode(Summary::decode(&m.data))),
            Ok(ImsgType::CtlClient) => clients.push(decode(ClientInfo::decode(&m.data))),
            Ok(ImsgType::CtlSync) => syncs.push(decode(SyncInfo::decode(&m.data))),
            Ok(ImsgType::CtlResult) => match decode(ctl::decode_result(&m.data)) {
                Ok(msg) if json => {
                    println!("{}", serde_json::json!({ "result": "ok", "message": msg }))
                }
                Ok(msg) => println!("{msg}"),
                Err(msg) => die(msg),
            },
            Ok(ImsgType::CtlEnd) => {}
            _ => die(format!("unexpected answer type {} from the daemon", m.hdr.ty)),
        }
    }
    let text = match (&cmd, json) {
        (Command::ShowSummary, false) => summaries.iter().map(|s| output::summary(s, now_ms)).collect(),
        (Command::ShowSummary, true) => {
            summaries.iter().map(|s| output::summary_json(s, now_ms).to_string() + "\n").collect()
        }
        (Command::ShowClients, false) => output::clients(&clients, now),
        (Command::ShowClients, true) => output::clients_json(&clients, now).to_string() + "\n",
        (Command::ShowSync, false) => syncs.iter().map(|s| output::sync(s, now)).collect(),
        (Command::ShowSync, true) => syncs.iter().map(|s| output::sync_json(s).to_string() + "\n").collect(),
        _ => String::new(),
    };
    print!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A daemon that refuses us and closes before our request is sent: we
    /// still read its reason instead of failing with "Broken pipe".
    #[test]
    fn the_reason_of_a_refusal_arrives_even_after_epipe() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut daemon = ImsgBuf::new(OwnedFd::from(theirs));
        let why = "permission denied: the control socket accepts root only".to_string();
        daemon.compose(ImsgType::CtlResult as u32, 0, None, &ctl::encode_result(&Err(why.clone()))).unwrap();
        daemon.flush().unwrap();
        drop(daemon);
        let answer = exchange(OwnedFd::from(ours), &Command::ShowSummary, None).unwrap();
        assert_eq!(answer.len(), 1);
        assert_eq!(ctl::decode_result(&answer[0].data), Ok(Err(why)));

        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        drop(theirs);
        let e = exchange(OwnedFd::from(ours), &Command::ShowSummary, None).unwrap_err();
        assert!(e.to_string().starts_with("send: "), "{e}");
    }

    /// A daemon that accepted but never answers (stopped): the request
    /// ends at the deadline with a clear error instead of hanging.
    #[test]
    fn a_silent_daemon_times_out() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let t0 = Instant::now();
        let e =
            exchange(OwnedFd::from(ours), &Command::ShowSummary, Some(t0 + Duration::from_millis(200))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "no answer from the daemon within the timeout (-t)");
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "soon", "1e9", "NaN"] {
            assert!(parse_timeout(bad).unwrap_err().starts_with(&format!("-t \"{bad}\": ")), "{bad}");
        }
    }
}
