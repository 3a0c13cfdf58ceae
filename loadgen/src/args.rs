//! The command line of vpnsyncd-loadgen: stock client options where a
//! stock client has one (`--ca`, `--cert`, `--key`, `--tls-auth`,
//! `--tls-crypt`, `--auth`, `--data-ciphers`), and the load itself.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use vpnsyncd_config::Digest;

pub const USAGE: &str = "usage: vpnsyncd-loadgen --remote ADDR:PORT --ca FILE --cert FILE --key FILE\n\
       [--tls-auth FILE | --tls-crypt FILE] [--auth DIGEST] [--data-ciphers LIST]\n\
       [-n CLIENTS] [--rate HANDSHAKES/S] [--duration SECONDS] [--bind ADDR]...\n\
       [--ping-interval SECONDS --ping-to TUNNEL-ADDR [--ping-fast SECONDS]]\n\
       [--mark-file FILE [--resume-file FILE]]";

/// The control channel wrapping and its key file.
#[derive(Debug, PartialEq)]
pub enum WrapFile {
    None,
    /// tls-auth, key-direction 1 (the server uses 0).
    TlsAuth(PathBuf),
    TlsCrypt(PathBuf),
}

#[derive(Debug)]
pub struct Args {
    pub remote: SocketAddr,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub wrap: WrapFile,
    /// `auth`: the tls-auth HMAC and the digest of CBC data channels.
    pub auth: Digest,
    pub ciphers: String,
    pub clients: usize,
    pub rate: f64,
    pub duration: Duration,
    /// Source addresses, used in turn (a server limits half-open sessions
    /// per source address).
    pub bind: Vec<IpAddr>,
    /// An ICMP echo through every client's tunnel to `ping_to` this often.
    pub ping: Option<(Duration, Ipv4Addr)>,
    /// After the mark, the echo interval of a client not answered since.
    pub ping_fast: Option<Duration>,
    /// The file whose Unix time marks the instant resumption is measured from.
    pub mark_file: Option<PathBuf>,
    /// Where every client's time to resume after the mark goes.
    pub resume_file: Option<PathBuf>,
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Args, String> {
    let mut remote = None;
    let (mut ca, mut cert, mut key) = (None, None, None);
    let mut wrap = WrapFile::None;
    let mut auth = Digest::Sha1;
    let mut ciphers = vpnsyncd_engine::client::DEFAULT_CIPHERS.to_string();
    let (mut clients, mut rate, mut duration) = (100usize, 50f64, Duration::from_secs(30));
    let mut bind = Vec::new();
    let (mut ping_interval, mut ping_to, mut ping_fast) = (None, None, None);
    let (mut mark_file, mut resume_file) = (None, None);
    let mut it = args.iter();
    while let Some(opt) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{opt}: missing value"));
        match opt.as_str() {
            "--remote" => {
                let v = value()?;
                remote = Some(v.parse().map_err(|_| format!("--remote: not ADDR:PORT: \"{v}\""))?);
            }
            "--ca" => ca = Some(PathBuf::from(value()?)),
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--key" => key = Some(PathBuf::from(value()?)),
            "--tls-auth" | "--tls-crypt" if wrap != WrapFile::None => {
                return Err(format!("{opt}: only one of --tls-auth and --tls-crypt"))
            }
            "--tls-auth" => wrap = WrapFile::TlsAuth(PathBuf::from(value()?)),
            "--tls-crypt" => wrap = WrapFile::TlsCrypt(PathBuf::from(value()?)),
            "--auth" => {
                let v = value()?;
                auth = Digest::from_name(v).ok_or_else(|| format!("--auth: unknown digest \"{v}\""))?;
            }
            "--data-ciphers" => ciphers = value()?.to_uppercase(),
            "-n" => clients = number(opt, value()?, 1.0, 100_000.0)? as usize,
            "--rate" => rate = number(opt, value()?, 0.1, 100_000.0)?,
            "--duration" => duration = Duration::from_secs_f64(number(opt, value()?, 1.0, 86_400.0)?),
            "--bind" => {
                let v = value()?;
                bind.push(v.parse().map_err(|_| format!("--bind: not an IP address: \"{v}\""))?);
            }
            "--ping-interval" => ping_interval = Some(Duration::from_secs_f64(number(opt, value()?, 0.05, 3600.0)?)),
            "--ping-fast" => ping_fast = Some(Duration::from_secs_f64(number(opt, value()?, 0.01, 3600.0)?)),
            "--ping-to" => {
                let v = value()?;
                ping_to = Some(v.parse().map_err(|_| format!("--ping-to: not an IPv4 address: \"{v}\""))?);
            }
            "--mark-file" => mark_file = Some(PathBuf::from(value()?)),
            "--resume-file" => resume_file = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown option \"{opt}\"\n{USAGE}")),
        }
    }
    let ping = match (ping_interval, ping_to) {
        (Some(i), Some(to)) => Some((i, to)),
        (None, None) => None,
        _ => return Err("--ping-interval and --ping-to go together".to_string()),
    };
    if ping_fast.is_some() && (ping.is_none() || mark_file.is_none()) {
        return Err("--ping-fast needs --ping-interval and --mark-file (it works after the mark)".to_string());
    }
    if resume_file.is_some() && mark_file.is_none() {
        return Err("--resume-file needs --mark-file (the instant resumption is measured from)".to_string());
    }
    let need = |v: Option<PathBuf>, name: &str| v.ok_or_else(|| format!("{name} is required\n{USAGE}"));
    Ok(Args {
        remote: remote.ok_or_else(|| format!("--remote is required\n{USAGE}"))?,
        ca: need(ca, "--ca")?,
        cert: need(cert, "--cert")?,
        key: need(key, "--key")?,
        wrap,
        auth,
        ciphers,
        clients,
        rate,
        duration,
        bind,
        ping,
        ping_fast,
        mark_file,
        resume_file,
    })
}

fn number(opt: &str, v: &str, min: f64, max: f64) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{opt}: \"{v}\" is not a number from {min} to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    const BASE: &str = "--remote 198.18.0.10:1194 --ca ca.crt --cert a.crt --key a.key";

    #[test]
    fn a_stock_profile_parses() {
        let a =
            args(&format!("{BASE} --tls-auth ta.key --auth sha256 -n 1000 --rate 200 --bind 198.18.0.150")).unwrap();
        assert_eq!(a.remote, "198.18.0.10:1194".parse().unwrap());
        assert_eq!(a.wrap, WrapFile::TlsAuth("ta.key".into()));
        assert_eq!(a.auth, Digest::Sha256);
        assert_eq!((a.clients, a.rate), (1000, 200.0));
        assert_eq!(a.bind, vec!["198.18.0.150".parse::<IpAddr>().unwrap()]);
        assert_eq!((a.ping, a.mark_file), (None, None));
        let a = args(&format!("{BASE} --ping-interval 0.5 --ping-to 10.8.0.1 --mark-file m --resume-file r")).unwrap();
        assert_eq!(a.ping, Some((Duration::from_millis(500), Ipv4Addr::new(10, 8, 0, 1))));
        assert_eq!((a.mark_file, a.resume_file), (Some("m".into()), Some("r".into())));
    }

    #[test]
    fn malformed_command_lines_say_what_is_wrong() {
        for (line, want) in [
            ("--ca ca.crt --cert a.crt --key a.key", "--remote is required"),
            ("--remote 198.18.0.10 --ca c --cert a --key k", "not ADDR:PORT"),
            (&format!("{BASE} -n 0"), "-n: \"0\" is not a number from 1"),
            (&format!("{BASE} --rate fast"), "--rate: \"fast\""),
            (&format!("{BASE} --auth sha3"), "unknown digest \"sha3\""),
            (&format!("{BASE} --tls-auth a --tls-crypt b"), "only one of"),
            (&format!("{BASE} --bind nowhere"), "not an IP address"),
            (&format!("{BASE} --duration"), "--duration: missing value"),
            (&format!("{BASE} --verb 3"), "unknown option \"--verb\""),
            (&format!("{BASE} --ping-interval 1"), "go together"),
            (&format!("{BASE} --ping-to 10.8.0.1"), "go together"),
            (
                &format!("{BASE} --ping-interval 0 --ping-to 10.8.0.1"),
                "--ping-interval: \"0\" is not a number from 0.05",
            ),
            (&format!("{BASE} --ping-interval 1 --ping-to fe80::1"), "not an IPv4 address"),
            (&format!("{BASE} --resume-file r"), "needs --mark-file"),
            (&format!("{BASE} --ping-interval 1 --ping-to 10.8.0.1 --ping-fast 0.1"), "--ping-fast needs"),
            (&format!("{BASE} --ping-fast 0 --mark-file m"), "--ping-fast: \"0\" is not a number"),
        ] {
            let e = args(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }
}
