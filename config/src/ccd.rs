//! client-config-dir: per-client files named by the client's common name,
//! in the subset of OpenVPN's ccd syntax that vpnsyncd applies:
//! `ifconfig-push ADDR MASK`, `iroute NET MASK`, `push "OPTION"`,
//! `push-reset` and `disable`. One directive a line; `#` and `;` start a
//! comment; a value with spaces is double-quoted. The parent reads these
//! files (the engine is chrooted) and the engine parses the same text, so
//! both see the very same rules.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::{ConfError, ConfErrors, Pos};
use crate::file::{read_file, FileKind};
use crate::Ipv4Net;

/// iroute lines a file may have: each is a kernel route and a table entry.
pub const MAX_IROUTES: usize = 64;
/// push lines a file may have (the PUSH_REPLY is split if long).
pub const MAX_CLIENT_PUSHES: usize = 64;
/// Files read from the directory at most; more are refused at load.
pub const MAX_CCD_FILES: usize = 4096;
/// What one client's file says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// `ifconfig-push`: the client's fixed tunnel address.
    pub fixed_address: Option<Ipv4Addr>,
    /// `iroute`: networks behind the client, routed to it.
    pub iroutes: Vec<Ipv4Net>,
    /// `push-reset`: the server-wide routes, DNS and domain are not pushed.
    pub push_reset: bool,
    /// `push`: options added to this client's PUSH_REPLY.
    pub push: Vec<String>,
    /// `disable`: the client is refused.
    pub disable: bool,
}

/// Whether `cn` may name a file in the directory: no path separator, not
/// `..`, no leading dot (hidden files, editors' swap files), not empty, and
/// only printable ASCII without spaces (what the parent may open safely).
pub fn valid_common_name(cn: &str) -> bool {
    !cn.is_empty()
        && cn.len() <= 255
        && !cn.starts_with('.')
        && cn.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\')
}

/// Splits a line into words, OpenVPN style: blanks separate, `"..."`
/// groups, `#` or `;` at the start of a word ends the line. Each word has
/// its column.
fn words(line: &str) -> Result<Vec<(String, u32)>, (u32, String)> {
    let mut out = Vec::new();
    let mut it = line.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        let col = line[..i].chars().count() as u32 + 1;
        if c.is_whitespace() {
            it.next();
        } else if c == '#' || c == ';' {
            break;
        } else if c == '"' {
            it.next();
            let mut w = String::new();
            loop {
                match it.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match it.next() {
                        Some((_, e)) => w.push(e),
                        None => return Err((col, "unterminated quoted string".into())),
                    },
                    Some((_, ch)) => w.push(ch),
                    None => return Err((col, "unterminated quoted string".into())),
                }
            }
            out.push((w, col));
        } else {
            let mut w = String::new();
            while let Some(&(_, ch)) = it.peek() {
                if ch.is_whitespace() {
                    break;
                }
                w.push(ch);
                it.next();
            }
            out.push((w, col));
        }
    }
    Ok(out)
}

/// A contiguous netmask as a prefix length.
fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let p = m.leading_ones();
    (m.checked_shl(p).unwrap_or(0) == 0).then_some(p as u8)
}

/// Parses the file named `name` (as errors show it) for a server whose
/// client network is `network` (`server` is its own address there).
pub fn parse(name: &str, text: &str, network: Ipv4Net) -> Result<ClientConfig, ConfErrors> {
    let mut c = ClientConfig::default();
    let mut errors = Vec::new();
    let server = Ipv4Addr::from(u32::from(network.addr).wrapping_add(1));
    for (n, line) in text.lines().enumerate() {
        let lineno = n as u32 + 1;
        let mut fail = |col: u32, msg: String| {
            errors.push(ConfError { file: name.to_string(), pos: Some(Pos { line: lineno, col }), msg })
        };
        let words = match words(line) {
            Ok(w) => w,
            Err((col, msg)) => {
                fail(col, msg);
                continue;
            }
        };
        let Some(((kw, col), args)) = words.split_first() else { continue };
        let arity = |want: usize, usage: &str| -> Result<(), (u32, String)> {
            if args.len() == want {
                Ok(())
            } else {
                Err((*col, format!("{kw} takes {want} argument(s): {usage}")))
            }
        };
        let addr = |i: usize, what: &str| -> Result<Ipv4Addr, (u32, String)> {
            let (w, col) = &args[i];
            w.parse().map_err(|_| (*col, format!("\"{w}\" is not an IPv4 {what}")))
        };
        let res: Result<(), (u32, String)> = (|| {
            match kw.as_str() {
                "ifconfig-push" => {
                    arity(2, "ifconfig-push ADDRESS NETMASK")?;
                    if c.fixed_address.is_some() {
                        return Err((*col, "ifconfig-push is given twice".into()));
                    }
                    let (a, m) = (addr(0, "address")?, addr(1, "netmask")?);
                    if m != network.netmask() {
                        return Err((
                            args[1].1,
                            format!("netmask {m} is not the client network's {}", network.netmask()),
                        ));
                    }
                    if !network.contains(a) || a == network.addr || a == network.broadcast() || a == server {
                        return Err((
                            args[0].1,
                            format!("address {a} must be a host of the client network {network} other than the server's {server}"),
                        ));
                    }
                    c.fixed_address = Some(a);
                }
                "iroute" => {
                    arity(2, "iroute NETWORK NETMASK")?;
                    let (a, m) = (addr(0, "network")?, addr(1, "netmask")?);
                    let prefix = prefix_of(m).ok_or((args[1].1, format!("netmask {m} is not contiguous")))?;
                    let net = Ipv4Net { addr: a, prefix };
                    if u32::from(a) & !u32::from(m) != 0 {
                        return Err((args[0].1, format!("{a} has host bits set for netmask {m}")));
                    }
                    if prefix == 0 || network.contains(a) || net.contains(network.addr) {
                        return Err((
                            args[0].1,
                            format!("iroute {net} overlaps the client network {network} or is a default route"),
                        ));
                    }
                    if c.iroutes.len() == MAX_IROUTES {
                        return Err((*col, format!("more than {MAX_IROUTES} iroute lines")));
                    }
                    c.iroutes.push(net);
                }
                "push" => {
                    arity(1, "push \"OPTION\"")?;
                    // The rules of the server-wide `push "..."`: what a
                    // client accepts pushed, nothing the server sets.
                    let o = crate::pushopt::generic(&args[0].0).map_err(|m| (args[0].1, m))?;
                    if c.push.len() == MAX_CLIENT_PUSHES {
                        return Err((*col, format!("more than {MAX_CLIENT_PUSHES} push lines")));
                    }
                    c.push.push(o);
                }
                "push-reset" => {
                    arity(0, "push-reset")?;
                    c.push_reset = true;
                }
                "disable" => {
                    arity(0, "disable")?;
                    c.disable = true;
                }
                _ => {
                    return Err((
                        *col,
                        format!("unknown directive \"{kw}\"; valid: ifconfig-push, iroute, push, push-reset, disable"),
                    ))
                }
            }
            Ok(())
        })();
        if let Err((col, msg)) = res {
            fail(col, msg);
        }
    }
    if errors.is_empty() {
        Ok(c)
    } else {
        Err(ConfErrors(errors))
    }
}

/// One file of the directory, read by the parent: its common name and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CcdFile {
    pub name: String,
    pub text: String,
}

impl CcdFile {
    /// The payload of a `CcdFile` message: the name, a NUL, the text.
    pub fn encode(&self) -> Vec<u8> {
        [self.name.as_bytes(), &[0], self.text.as_bytes()].concat()
    }
}

/// Reads and checks every client file of `dir` (each through
/// [`read_file`], at most [`MAX_CCD_FILES`]); files whose name is no valid
/// common name are skipped with a warning in the error list, files that do
/// cannot be read or do not parse are errors and come back as `disable`,
/// so that a typo refuses the client instead of serving it without its
/// settings. Returns the files to apply and every problem.
pub fn load_dir(dir: &Path, network: Ipv4Net) -> (Vec<CcdFile>, Vec<ConfError>) {
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    let shown = dir.display().to_string();
    let whole = |msg: String| ConfError { file: shown.clone(), pos: None, msg };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return (files, vec![whole(format!("client-config-dir: {e}"))]),
    };
    let mut names: Vec<String> = Vec::new();
    for e in entries.flatten() {
        match e.file_name().into_string() {
            Ok(n) if n.starts_with('.') => {}
            Ok(n) if valid_common_name(&n) => names.push(n),
            Ok(n) => errors.push(whole(format!("\"{n}\" skipped: not a valid common name"))),
            Err(n) => errors.push(whole(format!("{n:?} skipped: not UTF-8"))),
        }
    }
    names.sort();
    if names.len() > MAX_CCD_FILES {
        errors.push(whole(format!("{} files: only the first {MAX_CCD_FILES} are read", names.len())));
        names.truncate(MAX_CCD_FILES);
    }
    for n in names {
        let path = dir.join(&n);
        let shown = path.display().to_string();
        let text = match read_file(&path, FileKind::ClientConfig).map(String::from_utf8) {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(_)) => Err(vec![ConfError { file: shown.clone(), pos: None, msg: "not UTF-8 text".into() }]),
            Err(e) => Err(vec![ConfError { file: shown.clone(), pos: None, msg: e.to_string() }]),
        }
        .and_then(|text| parse(&shown, &text, network).map(|_| text).map_err(|e| e.0));
        match text {
            Ok(text) => files.push(CcdFile { name: n, text }),
            Err(mut e) => {
                errors.append(&mut e);
                files.push(CcdFile { name: n, text: "disable\n".into() });
            }
        }
    }
    (files, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Ipv4Net {
        "10.8.0.0/24".parse().unwrap()
    }

    fn errs(text: &str) -> Vec<String> {
        parse("ccd/alice", text, net()).unwrap_err().0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_full_file() {
        let c = parse(
            "ccd/alice",
            "# site A\nifconfig-push 10.8.0.50 255.255.255.0\niroute 192.168.50.0 255.255.255.0 ; lan\n\
             push-reset\npush \"route 192.168.60.0 255.255.255.0\"\npush \"dhcp-option DNS 10.8.0.1\"\n",
            net(),
        )
        .unwrap();
        assert_eq!(c.fixed_address, Some(Ipv4Addr::new(10, 8, 0, 50)));
        assert_eq!(c.iroutes, vec!["192.168.50.0/24".parse().unwrap()]);
        assert!(c.push_reset && !c.disable);
        assert_eq!(c.push, ["route 192.168.60.0 255.255.255.0", "dhcp-option DNS 10.8.0.1"]);
        assert!(parse("x", "disable\n", net()).unwrap().disable);
    }

    #[test]
    fn malformed_lines_have_file_line_col() {
        assert_eq!(errs("\n  ifconfig-pushh 1.2.3.4\n"), [
            "ccd/alice:2:3: unknown directive \"ifconfig-pushh\"; valid: ifconfig-push, iroute, push, push-reset, disable"
        ]);
        assert_eq!(
            errs("ifconfig-push 10.8.0.5\n"),
            ["ccd/alice:1:1: ifconfig-push takes 2 argument(s): ifconfig-push ADDRESS NETMASK"]
        );
        assert_eq!(errs("ifconfig-push 10.9.0.5 255.255.255.0\n"), [
            "ccd/alice:1:15: address 10.9.0.5 must be a host of the client network 10.8.0.0/24 other than the server's 10.8.0.1"
        ]);
        assert_eq!(errs("ifconfig-push 10.8.0.1 255.255.255.0\n").len(), 1, "the server's own address");
        assert_eq!(
            errs("ifconfig-push 10.8.0.5 255.255.0.0\n"),
            ["ccd/alice:1:24: netmask 255.255.0.0 is not the client network's 255.255.255.0"]
        );
        assert_eq!(
            errs("ifconfig-push 10.8.0.5x 255.255.255.0\n"),
            ["ccd/alice:1:15: \"10.8.0.5x\" is not an IPv4 address"]
        );
        assert_eq!(errs("iroute 192.168.1.0 255.0.255.0\n"), ["ccd/alice:1:20: netmask 255.0.255.0 is not contiguous"]);
        assert_eq!(
            errs("iroute 192.168.1.1 255.255.255.0\n"),
            ["ccd/alice:1:8: 192.168.1.1 has host bits set for netmask 255.255.255.0"]
        );
        assert_eq!(errs("iroute 10.8.0.0 255.255.255.128\n").len(), 1, "inside the client network");
        assert_eq!(errs("iroute 0.0.0.0 0.0.0.0\n").len(), 1, "a default route");
        assert_eq!(errs("push \"route 1.2.3.0 255.255.255.0\n"), ["ccd/alice:1:6: unterminated quoted string"]);
        assert_eq!(
            errs("push \"a,b\"\n"),
            ["ccd/alice:1:6: the push option contains a comma, which separates options in a PUSH_REPLY"]
        );
        assert_eq!(
            errs("push \"ifconfig 10.8.0.9 255.255.255.0\"\n"),
            ["ccd/alice:1:6: \"ifconfig\" is set by the server itself for each client and cannot be pushed"]
        );
        // The server-wide push's rules (crate::pushopt): what a client
        // accepts pushed, quotes closed as the client reads them.
        let up = errs("push \"up /bin/sh\"\n");
        assert_eq!(up.len(), 1);
        assert!(up[0].starts_with("ccd/alice:1:6: \"up\" is not an option a client accepts pushed; valid: "), "{up:?}");
        assert_eq!(errs("push \"echo 'a\"\n"), ["ccd/alice:1:6: the push option has an unclosed ' quote"]);
        assert_eq!(errs("push \"\"\n"), ["ccd/alice:1:6: the push option is empty"]);
        assert_eq!(errs("push\n"), ["ccd/alice:1:1: push takes 1 argument(s): push \"OPTION\""]);
        assert_eq!(errs("push route 1.2.3.0\n"), ["ccd/alice:1:1: push takes 1 argument(s): push \"OPTION\""]);
        assert_eq!(errs("disable now\n"), ["ccd/alice:1:1: disable takes 0 argument(s): disable"]);
        assert_eq!(errs("push-reset all\n"), ["ccd/alice:1:1: push-reset takes 0 argument(s): push-reset"]);
        assert_eq!(errs("iroute 192.168.1.0\n"), ["ccd/alice:1:1: iroute takes 2 argument(s): iroute NETWORK NETMASK"]);
        assert_eq!(errs("iroute lan 255.255.255.0\n"), ["ccd/alice:1:8: \"lan\" is not an IPv4 network"]);
        assert_eq!(
            errs("iroute 192.168.1.0 255.255.255.0 metric\n"),
            ["ccd/alice:1:1: iroute takes 2 argument(s): iroute NETWORK NETMASK"]
        );
        assert_eq!(
            errs("ifconfig-push 10.8.0.5 255.255.255.0\nifconfig-push 10.8.0.6 255.255.255.0\n"),
            ["ccd/alice:2:1: ifconfig-push is given twice"]
        );
        // Every error of the file at once.
        assert_eq!(errs("bogus\ndisable x\n").len(), 2);
    }

    #[test]
    fn bounded_lists() {
        let many: String = (0..=MAX_IROUTES).map(|i| format!("iroute 172.16.{i}.0 255.255.255.0\n")).collect();
        assert_eq!(errs(&many), [format!("ccd/alice:{}:1: more than {MAX_IROUTES} iroute lines", MAX_IROUTES + 1)]);
        let many: String = (0..=MAX_CLIENT_PUSHES).map(|i| format!("push \"dhcp-option NTP 10.0.0.{i}\"\n")).collect();
        assert_eq!(errs(&many).len(), 1);
        let long = format!("push \"setenv X {}\"\n", "y".repeat(300));
        assert_eq!(errs(&long).len(), 1);
    }

    #[test]
    fn common_names() {
        for good in ["alice", "client-1.example.com", "a_b@c"] {
            assert!(valid_common_name(good), "{good}");
        }
        for bad in ["", ".hidden", "..", "../etc/passwd", "a/b", "a b", "a\\b", "é"] {
            assert!(!valid_common_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_directory() {
        let dir = std::env::temp_dir().join(format!("vpnsyncd-ccd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("alice"), "ifconfig-push 10.8.0.50 255.255.255.0\n").unwrap();
        std::fs::write(dir.join("bob"), "iroute 1.2.3.4 255.255.255.0\n").unwrap();
        std::fs::write(dir.join(".alice.swp"), "junk").unwrap();
        std::fs::write(dir.join("big"), vec![b'#'; FileKind::ClientConfig.max_size() as usize + 1]).unwrap();
        std::fs::write(dir.join("a b"), "disable\n").unwrap();
        let (files, errors) = load_dir(&dir, net());
        let disabled = |n: &str| CcdFile { name: n.into(), text: "disable\n".into() };
        assert_eq!(
            files,
            [
                CcdFile { name: "alice".into(), text: "ifconfig-push 10.8.0.50 255.255.255.0\n".into() },
                disabled("big"),
                disabled("bob"),
            ]
        );
        assert_eq!(files[1].encode(), b"big\0disable\n");
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| e.ends_with("\"a b\" skipped: not a valid common name")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("/big: ") && e.contains("more than the 64 KiB")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("/bob:1:8: 1.2.3.4 has host bits")), "{errors:?}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(load_dir(&dir, net()).1.len(), 1, "a missing directory is an error");
    }
}
