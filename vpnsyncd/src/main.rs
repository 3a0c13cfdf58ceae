//! vpnsyncd: the high-availability OpenVPN-protocol server.
//!
//! `vpnsyncd [-dnv] [-D macro=value] [-f file]` starts the privileged parent.
//! The parent re-executes this binary with a hidden flag for each child:
//! -E engine, -S syncer, -C carpwatch (with -U uid:gid, the user to drop to).
//! `-A CHECK ARGS...` (first on the line) is the parent's password-check
//! helper: one PAM or BSD Authentication check (vpnsyncd_parent::helper_main).

use std::path::PathBuf;
use std::process::exit;

use vpnsyncd_common::proctitle::Title;
use vpnsyncd_parent::{Options, DEFAULT_CONFIG};

fn usage() -> ! {
    eprintln!("usage: vpnsyncd [-dnv] [-D macro=value] [-f file]");
    exit(1)
}

/// Which process this invocation is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proc {
    Parent,
    Engine,
    Syncer,
    Carpwatch,
}

/// Command line as parsed by a getopt(3) of "dD:f:nvESCU:".
struct Args {
    opts: Options,
    proc: Proc,
    ids: Option<(u32, u32)>,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        opts: Options { file: PathBuf::from(DEFAULT_CONFIG), ..Options::default() },
        proc: Proc::Parent,
        ids: None,
    };
    let mut it = args.peekable();
    while let Some(arg) = it.next() {
        if arg == "--" {
            break;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            return Err(format!("unexpected argument \"{arg}\""));
        };
        for (i, c) in flags.char_indices() {
            let mut value = || -> Result<String, String> {
                let rest = &flags[i + c.len_utf8()..];
                if !rest.is_empty() {
                    Ok(rest.to_string())
                } else {
                    it.next().ok_or_else(|| format!("option requires an argument -- {c}"))
                }
            };
            match c {
                'd' => a.opts.foreground = true,
                'n' => a.opts.configtest = true,
                'v' => a.opts.verbose = a.opts.verbose.saturating_add(1),
                'E' => a.proc = Proc::Engine,
                'S' => a.proc = Proc::Syncer,
                'C' => a.proc = Proc::Carpwatch,
                'f' | 'D' | 'U' => {
                    let v = value()?;
                    match c {
                        'f' => a.opts.file = PathBuf::from(v),
                        'D' => {
                            let (k, val) = v
                                .split_once('=')
                                .filter(|(k, _)| !k.is_empty())
                                .ok_or_else(|| format!("could not parse macro definition {v}"))?;
                            a.opts.macros.push((k.to_string(), val.to_string()));
                        }
                        _ => {
                            let parsed = v.split_once(':').and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
                            a.ids = Some(parsed.ok_or_else(|| format!("bad -U {v}"))?);
                        }
                    }
                    break;
                }
                _ => return Err(format!("unknown option -- {c}")),
            }
        }
    }
    if a.proc != Proc::Parent && a.ids.is_none() {
        return Err("children are started by the parent only".into());
    }
    Ok(a)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "-A") {
        exit(vpnsyncd_parent::helper_main(&argv[1..]));
    }
    let a = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vpnsyncd: {e}");
            usage();
        }
    };
    let code = match (a.proc, a.ids) {
        (Proc::Parent, _) if a.opts.configtest => vpnsyncd_parent::configtest(&a.opts),
        (Proc::Parent, _) => vpnsyncd_parent::run(a.opts),
        (p, Some((uid, gid))) => {
            let (name, title, main): (
                &'static str,
                Title,
                fn(vpnsyncd_common::imsg::ImsgBuf, vpnsyncd_common::child::Startup) -> i32,
            ) = match p {
                Proc::Engine => ("engine", Title::Engine, vpnsyncd_engine::io::main),
                Proc::Syncer => ("syncer", Title::Syncer, vpnsyncd_syncer::main),
                _ => ("carpwatch", Title::Carpwatch, vpnsyncd_carpwatch::main),
            };
            vpnsyncd_common::log::init(a.opts.foreground, a.opts.verbose, name);
            vpnsyncd_common::proctitle::set(title);
            match vpnsyncd_common::child::start(uid, gid, name, a.opts.foreground) {
                Ok((ibuf, st)) => main(ibuf, st),
                Err(e) => {
                    log::error!("start-up: {e}");
                    1
                }
            }
        }
        (_, None) => unreachable!("parse_args requires -U for children"),
    };
    exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn openbsd_style_flags() {
        let a = parse(&["-dvv", "-f", "/tmp/x.conf", "-Dif=eth0", "-D", "port=1194"]).unwrap();
        assert!(a.opts.foreground && !a.opts.configtest);
        assert_eq!(a.opts.verbose, 2);
        assert_eq!(a.opts.file, PathBuf::from("/tmp/x.conf"));
        assert_eq!(a.opts.macros, vec![("if".into(), "eth0".into()), ("port".into(), "1194".into())]);
        let a = parse(&["-nf/etc/other.conf"]).unwrap();
        assert!(a.opts.configtest);
        assert_eq!(a.opts.file, PathBuf::from("/etc/other.conf"));
        assert_eq!(parse(&[]).unwrap().opts.file, Path::new(DEFAULT_CONFIG));
    }

    #[test]
    fn bad_command_lines() {
        assert_eq!(parse(&["-x"]).err().unwrap(), "unknown option -- x");
        assert_eq!(parse(&["-f"]).err().unwrap(), "option requires an argument -- f");
        assert_eq!(parse(&["-D", "novalue"]).err().unwrap(), "could not parse macro definition novalue");
        assert_eq!(parse(&["file"]).err().unwrap(), "unexpected argument \"file\"");
        assert_eq!(parse(&["-E"]).err().unwrap(), "children are started by the parent only");
        assert!(parse(&["-E", "-U", "1:2"]).is_ok());
        assert_eq!(parse(&["-S", "-U", "x"]).err().unwrap(), "bad -U x");
    }
}
