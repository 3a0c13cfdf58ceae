//! The management commands vpnsyncd answers, parsed from one input line
//! the way OpenVPN 2.6's manage.c reads it: words split on blanks, double
//! quotes group words and backslash escapes the next character inside them,
//! the first word names the command and missing parameters get OpenVPN's
//! own error. Pure: a line in, a [`Command`] out, never a panic.

/// At most this many words are read (OpenVPN's `MAX_PARMS`); more are
/// ignored, as there.
pub const MAX_WORDS: usize = 16;

/// One parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A blank line: OpenVPN answers nothing.
    Empty,
    Quit,
    Help,
    /// `version` without a parameter: the daemon's version.
    Version,
    /// `version N`: the client announces its own version (kept for
    /// nothing; answered as OpenVPN 2.6 does).
    ClientVersion(i64),
    Pid,
    /// `state [on|off|all|N] [..]`: each parameter in turn.
    State(Vec<StateParam>),
    LoadStats,
    /// `status [N]`, N as C's atoi reads it (so anything unreadable is 0,
    /// the version 1 format).
    Status(i64),
    /// `kill CN` or `kill IP:port`.
    Kill(Victim),
    /// `client-kill CID [message]`; `None` when CID is not a number.
    ClientKill {
        cid: Option<u64>,
        message: Option<String>,
    },
    /// A known command without its parameters: the text of the error.
    Missing(String),
    Unknown,
}

/// A parameter of `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateParam {
    On,
    Off,
    /// `all` or a count: print the history (ours holds one entry).
    History,
    /// Anything else, named in the error.
    Bad(String),
}

/// Whom `kill` ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Victim {
    CommonName(String),
    Address(std::net::SocketAddrV4),
    /// `kill IP:port` whose address or port does not parse: the error.
    Bad(String),
}

/// Splits `line` into words as OpenVPN's parse_line does for the
/// management interface (quotes, backslash escapes inside quotes).
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut in_word, mut quoted, mut escaped) = (false, false, false);
    for c in line.chars() {
        if out.len() == MAX_WORDS {
            break;
        }
        if escaped {
            cur.push(c);
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
            in_word = true;
        } else if !quoted && c.is_whitespace() {
            if in_word {
                out.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word && out.len() < MAX_WORDS {
        out.push(cur);
    }
    out
}

/// C's atoi: optional blanks and sign, then digits; 0 when none.
fn atoi(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -n
    } else {
        n
    }
}

/// sscanf("%lu"): leading digits, at least one.
fn cid(s: &str) -> Option<u64> {
    let digits: String = s.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn missing(cmd: &str, n: usize, at_least: bool) -> Command {
    let least = if at_least { "at least " } else { "" };
    let plural = if n > 1 { "s" } else { "" };
    Command::Missing(format!("ERROR: the '{cmd}' command requires {least}{n} parameter{plural}"))
}

/// OpenVPN 2.6's `kill` argument: `IP:port` when both halves are there
/// (the IPv4 address parsed, the port 1..65535), else a common name.
fn victim(arg: &str) -> Victim {
    let mut parts = arg.split(':');
    let p1 = parts.next().unwrap_or_default();
    let p2 = parts.next().unwrap_or_default();
    if p1.is_empty() || p2.is_empty() {
        return Victim::CommonName(p1.to_string());
    }
    let Ok(ip) = p1.parse::<std::net::Ipv4Addr>() else {
        return Victim::Bad(format!("ERROR: error parsing IP address: {p1}"));
    };
    match atoi(p2) {
        port @ 1..=65535 => Victim::Address(std::net::SocketAddrV4::new(ip, port as u16)),
        _ => Victim::Bad(format!("ERROR: port number is out of range: {p2}")),
    }
}

fn state_param(p: &str) -> StateParam {
    match p {
        "on" => StateParam::On,
        "off" => StateParam::Off,
        _ if p == "all" || atoi(p) > 0 => StateParam::History,
        _ => StateParam::Bad(p.to_string()),
    }
}

/// The command on one line (without its line end).
pub fn parse(line: &str) -> Command {
    let w = words(line);
    let Some(cmd) = w.first() else { return Command::Empty };
    let arg = |i: usize| w.get(i).map(String::as_str);
    match cmd.as_str() {
        "exit" | "quit" => Command::Quit,
        "help" => Command::Help,
        "version" => match arg(1) {
            Some(v) => Command::ClientVersion(atoi(v)),
            None => Command::Version,
        },
        "pid" => Command::Pid,
        "state" => match arg(1) {
            None => Command::State(vec![StateParam::History]),
            Some(_) => Command::State(w[1..w.len().min(3)].iter().map(|p| state_param(p)).collect()),
        },
        "load-stats" => Command::LoadStats,
        "status" => Command::Status(arg(1).map_or(0, atoi)),
        "kill" => match arg(1) {
            Some(v) => Command::Kill(victim(v)),
            None => missing("kill", 1, false),
        },
        "client-kill" => match arg(1) {
            Some(c) => Command::ClientKill { cid: cid(c), message: arg(2).map(str::to_string) },
            None => missing("client-kill", 1, true),
        },
        _ => Command::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_as_openvpn_splits_them() {
        assert_eq!(words("  status   3 "), ["status", "3"]);
        assert_eq!(words("client-kill 4 \"RESTART,see you\""), ["client-kill", "4", "RESTART,see you"]);
        assert_eq!(words(r#"kill "a \"b\" \\c""#), ["kill", r#"a "b" \c"#]);
        assert_eq!(words("kill \"\""), ["kill", ""]);
        assert_eq!(words("kill \"unterminated"), ["kill", "unterminated"]);
        assert!(words("").is_empty() && words(" \t ").is_empty());
        assert_eq!(words(&"x ".repeat(100)).len(), MAX_WORDS);
    }

    #[test]
    fn commands() {
        assert_eq!(parse(""), Command::Empty);
        assert_eq!(parse("quit"), Command::Quit);
        assert_eq!(parse("exit now"), Command::Quit);
        assert_eq!(parse("version"), Command::Version);
        assert_eq!(parse("version 3"), Command::ClientVersion(3));
        assert_eq!(parse("status"), Command::Status(0));
        assert_eq!(parse("status 3"), Command::Status(3));
        assert_eq!(parse("status 2x"), Command::Status(2));
        assert_eq!(parse("status x"), Command::Status(0));
        assert_eq!(parse("status 99999999999999999999999"), Command::Status(i64::MAX));
        assert_eq!(parse("load-stats"), Command::LoadStats);
        assert_eq!(parse("state"), Command::State(vec![StateParam::History]));
        assert_eq!(parse("state on all"), Command::State(vec![StateParam::On, StateParam::History]));
        assert_eq!(parse("state off 3 x"), Command::State(vec![StateParam::Off, StateParam::History]));
        assert_eq!(parse("state 0"), Command::State(vec![StateParam::Bad("0".into())]));
        assert_eq!(parse("STATUS"), Command::Unknown, "case matters, as in OpenVPN");
        assert_eq!(parse("bogus"), Command::Unknown);
    }

    #[test]
    fn kill_arguments_as_openvpn_2_6() {
        assert_eq!(parse("kill alice"), Command::Kill(Victim::CommonName("alice".into())));
        assert_eq!(parse("kill alice:"), Command::Kill(Victim::CommonName("alice".into())));
        assert_eq!(parse("kill 1.2.3.4:5"), Command::Kill(Victim::Address("1.2.3.4:5".parse().unwrap())));
        let bad = |s: &str| Command::Kill(Victim::Bad(s.into()));
        assert_eq!(parse("kill host:5"), bad("ERROR: error parsing IP address: host"));
        assert_eq!(parse("kill 1.2.3.4:0"), bad("ERROR: port number is out of range: 0"));
        assert_eq!(parse("kill 1.2.3.4:70000"), bad("ERROR: port number is out of range: 70000"));
        assert_eq!(parse("kill"), Command::Missing("ERROR: the 'kill' command requires 1 parameter".into()));
    }

    #[test]
    fn client_kill_arguments() {
        assert_eq!(parse("client-kill 7"), Command::ClientKill { cid: Some(7), message: None });
        assert_eq!(parse("client-kill 7 HALT"), Command::ClientKill { cid: Some(7), message: Some("HALT".into()) });
        assert_eq!(parse("client-kill x"), Command::ClientKill { cid: None, message: None });
        assert_eq!(parse("client-kill 99999999999999999999999"), Command::ClientKill { cid: None, message: None });
        assert_eq!(
            parse("client-kill"),
            Command::Missing("ERROR: the 'client-kill' command requires at least 1 parameter".into())
        );
    }

    #[test]
    fn hostile_lines_never_panic() {
        for line in ["\"", "\\", "\"\\", "kill :", "kill ::::", "kill \u{0}:\u{0}", "state \u{fffd}", "kill é:ü"] {
            let _ = parse(line);
        }
        let long = "kill ".to_string() + &"é".repeat(4000);
        assert!(matches!(parse(&long), Command::Kill(Victim::CommonName(_))));
    }
}
