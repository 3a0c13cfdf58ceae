//! The grammar of vpnsyncd.conf(5): one statement per line, a `sync { }`
//! block, macros (`name = value`) and `include`. Like OpenBSD's parse.y it
//! reports every error of the file, then refuses the whole configuration.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::error::{ConfError, ConfErrors, Pos};
use crate::file::{human, read_file, utf8, FileKind};
use crate::lexer::{is_macro_name, Lexer, Tok};
use crate::{
    Cipher, Config, Demote, Digest, DuplicateCn, Ipv4Net, KeyFile, RoleSource, StatusFile, SyncConfig, SyncTransport,
    Wrap, DEFAULT_PORT, DEFAULT_SOCKET, DEFAULT_SYNC_GROUP, DEFAULT_SYNC_PORT, DEFAULT_USER, MAX_MEMBERS,
};

pub enum Source<'a> {
    File(&'a Path),
    Text { name: &'a str, text: &'a str },
}

const TOP_KEYWORDS: &[&str] = &[
    "ack-filter",
    "auth",
    "ca",
    "certificate",
    "client",
    "client-config-dir",
    "crl",
    "data-ciphers",
    "data-threads",
    "duplicate-cn",
    "fallback-cipher",
    "include",
    "keepalive",
    "key",
    "listen",
    "management",
    "max",
    "password",
    "push",
    "reneg-sec",
    "rx-moderation",
    "socket",
    "status",
    "sync",
    "tls-auth",
    "tls-crypt",
    "tls-crypt-v2",
    "tun",
    "user",
    "verify-client-cert",
    "watchdog",
];
const SYNC_KEYWORDS: &[&str] = &["demote", "key", "member", "multicast", "peer", "rekey-window", "role"];
const MAX_INCLUDE_DEPTH: usize = 8;
/// `listen` and `peer` statements at most, each: every one is a socket or a
/// sync destination.
const MAX_ADDRESSES: usize = 64;
/// Pushed routes at most. OpenVPN 2.4 and later have no limit of their own
/// (max-routes is gone); this bound keeps the continued PUSH_REPLY (about
/// 30 bytes a route, 1 KiB a part) near 130 parts, which a stock 2.6 client
/// applies in well under a second (regress/pushes.sh measures 3,000).
pub const MAX_PUSH_ROUTES: usize = 4096;
/// An OpenVPN client takes at most this many DNS servers per address
/// family (`N_DHCP_ADDR`; more are an options error).
pub const MAX_PUSH_DNS: usize = 4;
/// A domain name at most (RFC 1035), which also keeps the pushed
/// `dhcp-option DOMAIN` within the 256 bytes of a client's option line.
const MAX_DOMAIN: usize = 253;
const DEFAULT_DEMOTE_VALUE: u8 = 50;
const DEFAULT_REKEY_WINDOW: u32 = 60;
/// Heartbeats go every second: a watchdog of one second would fire on
/// ordinary scheduling jitter, so two is the least.
const MIN_WATCHDOG: u32 = 2;
const MAX_WATCHDOG: u32 = 300;
/// Three missed heartbeats: quick enough that clients (ping-restart 60 s
/// by default) never notice, slow enough for a loaded machine.
pub const DEFAULT_WATCHDOG: u32 = 3;
/// OpenVPN's default status interval is 60 s; monitors poll more often
/// than that, and rendering a few thousand lines costs little.
pub const DEFAULT_STATUS_INTERVAL: u32 = 10;
const MAX_STATUS_INTERVAL: u32 = 3600;
/// The receive moderation's hold (engine/src/moderate.rs), in
/// microseconds: about the longest of the kernel's adaptive interrupt
/// moderation (net_dim's 256 µs for bulk receive). Against 100 µs it took
/// a sixth off the engine's cost per GB of a client's upload in the lab,
/// for 0.3 ms more round trip of another client's packets meanwhile
/// (docs/DATAPATH.md "Receive moderation").
pub const DEFAULT_RX_MODERATION: u32 = 250;
/// `ack-filter` unless set (docs/DATAPATH.md has the measurements).
pub const DEFAULT_ACK_FILTER: bool = false;
/// A millisecond at most: beyond it the added delay would show in the
/// round-trip time of a LAN.
const MAX_RX_MODERATION: u32 = 1000;

/// The most receive threads (`data-threads`): beyond the cores of any
/// machine a VPN server runs on, and each has its sockets.
pub const MAX_DATA_THREADS: u32 = 64;

/// One file being read.
struct Frame {
    name: String,
    dir: Option<PathBuf>,
    lexer: Lexer,
}

type PResult<T> = Result<T, ConfError>;

/// The `sync` block as written so far.
#[derive(Default)]
struct SyncDraft {
    role: Option<RoleSource>,
    multicast: Option<(Ipv4Addr, u16, String)>,
    peers: Vec<SocketAddr>,
    key: Option<PathBuf>,
    demote: Option<Demote>,
    rekey_window: Option<u32>,
    member: Option<u8>,
}

/// The configuration as written so far; defaults are applied at the end.
#[derive(Default)]
struct Draft {
    listen: Vec<SocketAddr>,
    tun_device: Option<String>,
    network: Option<Ipv4Net>,
    network6: Option<crate::Ipv6Net>,
    pool: Option<(Ipv4Addr, Ipv4Addr)>,
    max_clients: Option<u32>,
    user: Option<String>,
    socket: Option<PathBuf>,
    ca: Option<PathBuf>,
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    crl: Option<PathBuf>,
    /// tls-auth's digest is resolved at the end: it defaults to `auth`.
    wrap: Option<(Wrap, Option<Digest>)>,
    data_ciphers: Option<Vec<Cipher>>,
    fallback_cipher: Option<Cipher>,
    auth: Option<Digest>,
    keepalive: Option<(u32, u32)>,
    watchdog: Option<u32>,
    reneg_sec: Option<u32>,
    rx_moderation: Option<u32>,
    data_threads: Option<u32>,
    ack_filter: Option<bool>,
    push_routes: Vec<Ipv4Net>,
    push_dns: Vec<IpAddr>,
    push_domain: Option<String>,
    push_options: Vec<String>,
    sync: Option<SyncConfig>,
    password: Option<crate::PasswordCheck>,
    password_token: Option<u32>,
    verify_client_cert: Option<crate::ClientCert>,
    status: Option<StatusFile>,
    management: Option<crate::Management>,
    client_config_dir: Option<PathBuf>,
    duplicate_cn: Option<DuplicateCn>,
}

#[path = "management.rs"]
mod management;
#[path = "password.rs"]
mod password;
pub use password::{DEFAULT_BSDAUTH_TYPE, DEFAULT_PAM_SERVICE, DEFAULT_PASSWORD_TIMEOUT, DEFAULT_TOKEN_LIFETIME};

struct Parser {
    stack: Vec<Frame>,
    /// Bytes of configuration read so far, includes included.
    read: u64,
    allow_include: bool,
    macros: HashMap<String, String>,
    /// Macros from the command line: definitions in the file do not override them.
    fixed: HashSet<String>,
    peeked: Option<(Tok, Pos, String)>,
    /// The last token handed out, to know whether error recovery must skip.
    last: Tok,
    errors: Vec<ConfError>,
    /// Where each single-valued statement was first given: (file, line).
    seen: HashMap<String, (String, u32)>,
    /// Statement positions that the final checks refer to.
    at: Places,
    d: Draft,
    /// The `sync` block being read.
    sync_draft: Option<SyncDraft>,
}

/// Why a configuration file could not be read: an I/O error (the caller
/// says which statement), or a byte that is not UTF-8 (at its place).
enum ReadError {
    Io(std::io::Error),
    Utf8(Pos, String),
    Budget,
}

/// Reads a configuration file as text; `read` is what the configuration
/// and its includes have read so far, and may not pass the size of one
/// configuration file.
fn read_conf(path: &Path, read: &mut u64) -> Result<Lexer, ReadError> {
    let bytes = read_file(path, FileKind::Config).map_err(ReadError::Io)?;
    *read += bytes.len() as u64;
    if *read > FileKind::Config.max_size() {
        return Err(ReadError::Budget);
    }
    let text = utf8(bytes).map_err(|(pos, msg)| ReadError::Utf8(pos, msg))?;
    Ok(Lexer::new(&text))
}

/// What the final checks and the key files refer to: where each statement
/// was given.
pub type Places = HashMap<&'static str, (String, Pos)>;

pub fn parse(src: Source, macros: &[(String, String)]) -> Result<(Config, Places), ConfErrors> {
    let mut read = 0;
    let (frame, allow_include) = match src {
        Source::File(path) => {
            let name = path.display().to_string();
            let fail = |pos, msg| Err(ConfErrors(vec![ConfError { file: name.clone(), pos, msg }]));
            match read_conf(path, &mut read) {
                Ok(lexer) => (Frame { name: name.clone(), dir: path.parent().map(Path::to_path_buf), lexer }, true),
                Err(ReadError::Io(e)) => return fail(None, format!("cannot read: {e}")),
                Err(ReadError::Utf8(pos, msg)) => return fail(Some(pos), msg),
                Err(ReadError::Budget) => {
                    return fail(None, format!("more than {}", human(FileKind::Config.max_size())))
                }
            }
        }
        Source::Text { name, text } => (Frame { name: name.to_string(), dir: None, lexer: Lexer::new(text) }, false),
    };
    let mut p = Parser {
        stack: vec![frame],
        read,
        allow_include,
        macros: macros.iter().cloned().collect(),
        fixed: macros.iter().map(|(k, _)| k.clone()).collect(),
        peeked: None,
        last: Tok::Newline,
        errors: Vec::new(),
        seen: HashMap::new(),
        at: HashMap::new(),
        d: Draft::default(),
        sync_draft: None,
    };
    let main_name = p.stack[0].name.clone();
    p.statements(None);
    let conf = p.finish(&main_name);
    if p.errors.is_empty() {
        Ok((conf, p.at))
    } else {
        Err(ConfErrors(p.errors))
    }
}

fn err(file: &str, pos: Pos, msg: impl Into<String>) -> ConfError {
    ConfError { file: file.to_string(), pos: Some(pos), msg: msg.into() }
}

/// Edit distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A pushed domain is one option word of the PUSH_REPLY: a DNS name, so no
/// comma or space can split it.
fn check_domain(d: &str) -> Result<(), String> {
    if d.len() > MAX_DOMAIN {
        return Err(format!("the domain name is {} bytes long, more than {MAX_DOMAIN}", d.len()));
    }
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !d.trim_end_matches('.').split('.').all(label_ok) {
        return Err(format!(
            "\"{d}\" is not a domain name (labels of letters, digits, - and _, at most 63 each, joined by dots)"
        ));
    }
    Ok(())
}

fn unknown_keyword(w: &str, known: &[&str], context: &str) -> String {
    let mut msg = format!("unknown keyword \"{w}\"{context}");
    if let Some(k) = known.iter().filter(|k| distance(w, k) <= 2).min_by_key(|k| distance(w, k)) {
        msg.push_str(&format!("; did you mean \"{k}\"?"));
    }
    msg
}

impl Parser {
    fn file(&self) -> String {
        self.stack.last().map_or_else(String::new, |f| f.name.clone())
    }

    /// The next token with the name of its file. The end of an included
    /// file reads as an end of line.
    fn next_in(&mut self) -> PResult<(Tok, Pos, String)> {
        if let Some(t) = self.peeked.take() {
            self.last = t.0.clone();
            return Ok(t);
        }
        let file = self.file();
        let frame = self.stack.last_mut().expect("a frame is open while parsing");
        let (tok, pos) = frame.lexer.next(&self.macros).map_err(|(pos, msg)| err(&file, pos, msg))?;
        let tok = if tok == Tok::Eof && self.stack.len() > 1 {
            if let Some(done) = self.stack.pop() {
                if let Some(outer) = self.stack.last_mut() {
                    outer.lexer.share_budget(&done.lexer);
                }
            }
            Tok::Newline
        } else {
            tok
        };
        self.last = tok.clone();
        Ok((tok, pos, file))
    }

    fn next(&mut self) -> PResult<(Tok, Pos)> {
        self.next_in().map(|(t, p, _)| (t, p))
    }

    fn peek(&mut self) -> PResult<&Tok> {
        if self.peeked.is_none() {
            let last = self.last.clone();
            let t = self.next_in()?;
            self.last = last;
            self.peeked = Some(t);
        }
        Ok(&self.peeked.as_ref().expect("just peeked").0)
    }

    fn error(&self, pos: Pos, msg: impl Into<String>) -> ConfError {
        err(&self.file(), pos, msg)
    }

    /// After an error: drop the rest of the statement (a `{ }` block
    /// included). Stops before a `}` that closes the enclosing block.
    fn recover(&mut self, in_block: bool) {
        if matches!(self.last, Tok::Newline | Tok::Eof) {
            return;
        }
        let mut depth = 0;
        loop {
            match self.peek() {
                Err(_) => {
                    self.peeked = None;
                    self.last = Tok::Word(String::new());
                    continue;
                }
                Ok(Tok::Eof) => return,
                Ok(Tok::RBrace) if depth == 0 && in_block => return,
                _ => {}
            }
            match self.next() {
                Ok((Tok::Newline, _)) if depth == 0 => return,
                Ok((Tok::LBrace, _)) => depth += 1,
                Ok((Tok::RBrace, _)) => depth = (depth - 1).max(0),
                _ => {}
            }
        }
    }

    /// Statements up to the end of the file, or of the block opened at
    /// `block`.
    fn statements(&mut self, block: Option<Pos>) {
        loop {
            let (tok, pos) = match self.next() {
                Ok(t) => t,
                Err(e) => {
                    self.errors.push(e);
                    self.recover(block.is_some());
                    continue;
                }
            };
            let r = match tok {
                Tok::Newline => continue,
                Tok::Eof => {
                    if let Some(p) = block {
                        self.errors.push(self.error(p, "the sync block is not closed: add \"}\""));
                    }
                    return;
                }
                Tok::RBrace if block.is_some() => return,
                Tok::Word(w) if block.is_some() => self.sync_statement(&w, pos),
                Tok::Word(w) => self.statement(&w, pos),
                t => Err(self.error(pos, format!("syntax error: unexpected {}", t.describe()))),
            };
            if let Err(e) = r {
                self.errors.push(e);
                self.recover(block.is_some());
            }
        }
    }

    // --- token helpers ---------------------------------------------------

    fn word(&mut self, what: &str) -> PResult<(String, Pos)> {
        match self.next()? {
            (Tok::Word(w), p) => Ok((w, p)),
            (t, p) => Err(self.error(p, format!("expected {what}, found {}", t.describe()))),
        }
    }

    /// A word or a quoted string.
    fn text(&mut self, what: &str) -> PResult<(String, Pos)> {
        match self.next()? {
            (Tok::Word(w), p) | (Tok::Str(w), p) if !w.is_empty() => Ok((w, p)),
            (Tok::Str(_), p) => Err(self.error(p, format!("{what} is empty"))),
            (t, p) => Err(self.error(p, format!("expected {what}, found {}", t.describe()))),
        }
    }

    fn path(&mut self, what: &str) -> PResult<PathBuf> {
        self.text(what).map(|(s, _)| PathBuf::from(s))
    }

    fn keyword(&mut self, kw: &str, after: &str) -> PResult<()> {
        match self.next()? {
            (Tok::Word(w), _) if w == kw => Ok(()),
            (t, p) => Err(self.error(p, format!("expected \"{kw}\" after \"{after}\", found {}", t.describe()))),
        }
    }

    /// Consumes the word `kw` if it comes next.
    fn optional(&mut self, kw: &str) -> PResult<bool> {
        if matches!(self.peek()?, Tok::Word(w) if w == kw) {
            self.next()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn number(&mut self, what: &str, min: u32, max: u32) -> PResult<u32> {
        let (w, p) = self.word(what)?;
        match w.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.error(p, format!("{what} \"{w}\" is not a number from {min} to {max}"))),
        }
    }

    fn port(&mut self) -> PResult<u16> {
        self.number("port", 1, 65535).map(|n| n as u16)
    }

    fn parsed<T: std::str::FromStr>(&mut self, what: &str) -> PResult<T> {
        let (w, p) = self.word(what)?;
        w.parse().map_err(|_| self.error(p, format!("\"{w}\" is not {what}")))
    }

    fn network(&mut self) -> PResult<Ipv4Net> {
        let (w, p) = self.word("a network a.b.c.d/len")?;
        w.parse().map_err(|e| self.error(p, e))
    }

    fn last_was_string(&self) -> bool {
        matches!(self.last, Tok::Str(_))
    }

    /// The arguments of `push redirect-gateway`, `block-outside-dns` or
    /// `route-ipv6`, as the option text (see pushopt.rs).
    fn push_option(&mut self, what: &str, pos: Pos) -> PResult<String> {
        match what {
            "route-ipv6" => {
                let (w, p) = self.word("an IPv6 network addr/len")?;
                crate::pushopt::route_ipv6(&w).map_err(|why| self.error(p, why))
            }
            "redirect-gateway" => {
                let mut flags = Vec::new();
                let mut text = crate::pushopt::redirect_gateway(&flags).map_err(|why| self.error(pos, why))?;
                while let Tok::Word(_) = self.peek()? {
                    let (w, p) = self.word("a redirect-gateway flag")?;
                    flags.push(w);
                    text = crate::pushopt::redirect_gateway(&flags).map_err(|why| self.error(p, why))?;
                }
                Ok(text)
            }
            _ => Ok(what.to_string()),
        }
    }

    fn add_push_option(&mut self, o: String, pos: Pos) -> PResult<()> {
        if self.d.push_options.len() == crate::pushopt::MAX_PUSH_OPTIONS {
            let max = crate::pushopt::MAX_PUSH_OPTIONS;
            return Err(self.error(pos, format!("more than {max} push options besides route and dns: summarise them")));
        }
        self.d.push_options.push(o);
        Ok(())
    }

    fn cipher(&mut self) -> PResult<(Cipher, Pos)> {
        let (w, p) = self.word("a cipher")?;
        let valid = Cipher::ALL.map(Cipher::name).join(", ");
        Cipher::from_name(&w)
            .map(|c| (c, p))
            .ok_or_else(|| self.error(p, format!("unknown cipher \"{w}\"; valid ciphers: {valid}")))
    }

    fn digest(&mut self) -> PResult<Digest> {
        let (w, p) = self.word("a digest")?;
        let valid = Digest::ALL.map(Digest::name).join(", ");
        Digest::from_name(&w).ok_or_else(|| self.error(p, format!("unknown digest \"{w}\"; valid digests: {valid}")))
    }

    /// The end of a statement: end of line, end of file, or the `}` that
    /// closes the block (left for the block to read).
    fn end(&mut self) -> PResult<()> {
        match self.peek()? {
            Tok::Newline | Tok::Eof => {
                self.next()?;
                Ok(())
            }
            Tok::RBrace => Ok(()),
            _ => {
                let (t, p) = self.next()?;
                Err(self.error(p, format!("syntax error: unexpected {}, expected the end of the line", t.describe())))
            }
        }
    }

    /// Refuses a second occurrence of a single-valued statement.
    fn once(&mut self, what: &str, pos: Pos) -> PResult<()> {
        let file = self.file();
        if let Some((f, line)) = self.seen.get(what) {
            let place = if *f == file { format!("line {line}") } else { format!("{f}:{line}") };
            return Err(self.error(pos, format!("{what} is already set on {place}")));
        }
        self.seen.insert(what.to_string(), (file, pos.line));
        Ok(())
    }

    fn mark(&mut self, what: &'static str, pos: Pos) {
        let file = self.file();
        self.at.insert(what, (file, pos));
    }

    // --- statements --------------------------------------------------------

    fn statement(&mut self, w: &str, pos: Pos) -> PResult<()> {
        if matches!(self.peek()?, Tok::Eq) {
            return self.macro_definition(w, pos);
        }
        match w {
            "include" => return self.include(pos),
            "listen" => {
                self.keyword("on", "listen")?;
                let (a, p) = self.word("an address")?;
                let addr: IpAddr = a.parse().map_err(|_| self.error(p, format!("\"{a}\" is not an IP address")))?;
                let port = if self.optional("port")? { self.port()? } else { DEFAULT_PORT };
                let sa = SocketAddr::new(addr, port);
                if self.d.listen.len() == MAX_ADDRESSES {
                    return Err(self.error(pos, format!("more than {MAX_ADDRESSES} listen statements")));
                }
                if self.d.listen.contains(&sa) {
                    return Err(self.error(p, format!("listen on {sa} is given twice")));
                }
                self.d.listen.push(sa);
            }
            "tun" => {
                self.keyword("device", "tun")?;
                self.once("tun device", pos)?;
                let (name, p) = self.text("a device name")?;
                if name.len() > 15 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return Err(self
                        .error(p, format!("\"{name}\" is not a device name (letters, digits, - and _, at most 15)")));
                }
                self.d.tun_device = Some(name);
            }
            "client" if matches!(self.peek()?, Tok::Word(w) if w == "network6") => {
                self.next()?;
                self.once("client network6", pos)?;
                self.mark("client network6", pos);
                let (w, p) = self.word("an IPv6 network addr/len")?;
                self.d.network6 = Some(w.parse().map_err(|e| self.error(p, e))?);
            }
            "client" => {
                self.keyword("network", "client")?;
                self.once("client network", pos)?;
                self.mark("client network", pos);
                self.d.network = Some(self.network()?);
                if self.optional("pool")? {
                    let first: Ipv4Addr = self.parsed("an IPv4 address")?;
                    self.keyword("-", &first.to_string())?;
                    let last = self.parsed("an IPv4 address")?;
                    self.d.pool = Some((first, last));
                }
            }
            "max" => {
                self.keyword("clients", "max")?;
                self.once("max clients", pos)?;
                self.mark("max clients", pos);
                self.d.max_clients = Some(self.number("max clients", 1, 65534)?);
            }
            "user" => {
                self.once("user", pos)?;
                self.d.user = Some(self.text("a user name")?.0);
            }
            "socket" => {
                self.once("socket", pos)?;
                self.d.socket = Some(self.path("a socket path")?);
            }
            "ca" | "certificate" | "key" | "crl" => {
                self.once(w, pos)?;
                let path = Some(self.path("a file name")?);
                let file = match w {
                    "ca" => {
                        self.d.ca = path;
                        KeyFile::Ca
                    }
                    "certificate" => {
                        self.d.certificate = path;
                        KeyFile::Certificate
                    }
                    "key" => {
                        self.d.key = path;
                        KeyFile::Key
                    }
                    _ => {
                        self.d.crl = path;
                        KeyFile::Crl
                    }
                };
                self.mark(file.statement(), pos);
            }
            "tls-auth" | "tls-crypt" | "tls-crypt-v2" => {
                // OpenVPN takes only one of the three: each replaces the
                // others' wrapping of the control channel.
                self.once(KeyFile::Wrap.statement(), pos)?;
                self.mark(KeyFile::Wrap.statement(), pos);
                let path = self.path("a key file name")?;
                if w == "tls-crypt" {
                    self.d.wrap = Some((Wrap::TlsCrypt { path }, None));
                } else if w == "tls-crypt-v2" {
                    self.d.wrap = Some((Wrap::TlsCryptV2 { path }, None));
                } else {
                    let (mut direction, mut digest) = (None, None);
                    loop {
                        if self.optional("direction")? {
                            direction = Some(self.number("direction", 0, 1)? as u8);
                        } else if self.optional("digest")? {
                            digest = Some(self.digest()?);
                        } else {
                            break;
                        }
                    }
                    self.d.wrap = Some((Wrap::TlsAuth { path, direction, digest: Digest::Sha1 }, digest));
                }
            }
            "data-ciphers" => {
                self.once("data-ciphers", pos)?;
                self.d.data_ciphers = Some(self.cipher_list()?);
            }
            "fallback-cipher" => {
                self.once("fallback-cipher", pos)?;
                self.d.fallback_cipher = Some(self.cipher()?.0);
            }
            "auth" => {
                self.once("auth", pos)?;
                self.d.auth = Some(self.digest()?);
            }
            "keepalive" => {
                self.once("keepalive", pos)?;
                let interval = self.number("keepalive interval", 1, 3600)?;
                let (t, p) = self.word("the keepalive timeout")?;
                match t.parse::<u32>() {
                    Ok(timeout) if timeout > interval && timeout <= 86400 => {
                        self.d.keepalive = Some((interval, timeout))
                    }
                    _ => {
                        return Err(self.error(
                            p,
                            format!(
                                "keepalive timeout \"{t}\" must be a number of seconds above the interval {interval}"
                            ),
                        ))
                    }
                }
            }
            "watchdog" => {
                self.once("watchdog", pos)?;
                self.d.watchdog = Some(self.number("watchdog", MIN_WATCHDOG, MAX_WATCHDOG)?);
            }
            "reneg-sec" => {
                self.once("reneg-sec", pos)?;
                self.d.reneg_sec = Some(self.number("reneg-sec", 0, 7 * 86400)?);
            }
            "rx-moderation" => {
                self.once("rx-moderation", pos)?;
                self.d.rx_moderation = Some(self.number("rx-moderation", 0, MAX_RX_MODERATION)?);
            }
            "data-threads" => {
                self.once("data-threads", pos)?;
                let n = self.number("data-threads", 1, MAX_DATA_THREADS)?;
                // SO_REUSEPORT spreads a port's datagrams over its sockets
                // only on Linux; elsewhere one socket would get them all.
                if n > 1 && !cfg!(target_os = "linux") {
                    return Err(self.error(pos, "data-threads above 1 needs Linux (SO_REUSEPORT load balancing)"));
                }
                self.d.data_threads = Some(n);
            }
            "ack-filter" => {
                self.once("ack-filter", pos)?;
                let (w, p) = self.word("yes or no")?;
                self.d.ack_filter = Some(match w.as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(self.error(p, format!("ack-filter takes yes or no, not \"{w}\""))),
                });
            }
            "push" => {
                let (what, p) = self
                    .text("route, dns, domain, redirect-gateway, block-outside-dns, route-ipv6 or a quoted option")?;
                match what.as_str() {
                    "route" => {
                        let n = self.network()?;
                        if self.d.push_routes.len() == MAX_PUSH_ROUTES {
                            return Err(self.error(
                                pos,
                                format!("more than {MAX_PUSH_ROUTES} push route statements: summarise the routes"),
                            ));
                        }
                        self.d.push_routes.push(n);
                    }
                    "dns" => {
                        let a: IpAddr = self.parsed("an IP address")?;
                        if self.d.push_dns.iter().filter(|d| d.is_ipv4() == a.is_ipv4()).count() == MAX_PUSH_DNS {
                            return Err(self.error(
                                pos,
                                format!("more than {MAX_PUSH_DNS} push dns statements for IPv{}: OpenVPN clients take at most {MAX_PUSH_DNS}", if a.is_ipv4() { 4 } else { 6 }),
                            ));
                        }
                        self.d.push_dns.push(a);
                    }
                    "domain" => {
                        self.once("push domain", pos)?;
                        let (d, p) = self.text("a domain name")?;
                        check_domain(&d).map_err(|why| self.error(p, why))?;
                        self.d.push_domain = Some(d);
                    }
                    "redirect-gateway" | "block-outside-dns" | "route-ipv6" => {
                        let o = self.push_option(&what, p)?;
                        self.add_push_option(o, pos)?;
                    }
                    _ if self.last_was_string() => {
                        let o = crate::pushopt::generic(&what).map_err(|why| self.error(p, why))?;
                        self.add_push_option(o, pos)?;
                    }
                    _ => {
                        return Err(self.error(
                            p,
                            format!("unknown push option \"{what}\"; valid: route, dns, domain, redirect-gateway, block-outside-dns, route-ipv6, or a quoted \"option ...\""),
                        ))
                    }
                }
            }
            "status" => {
                self.once("status", pos)?;
                self.d.status = Some(self.status_file()?);
            }
            "management" => self.management(pos)?,
            "sync" => return self.sync_block(pos),
            "password" => self.password(pos)?,
            "verify-client-cert" => self.verify_client_cert(pos)?,
            "client-config-dir" => {
                self.once("client-config-dir", pos)?;
                self.d.client_config_dir = Some(self.path("a directory")?);
            }
            "duplicate-cn" => {
                self.once("duplicate-cn", pos)?;
                let (w, p) = self.word("refuse, replace or allow")?;
                self.d.duplicate_cn = Some(DuplicateCn::from_name(&w).ok_or_else(|| {
                    self.error(p, format!("unknown duplicate-cn policy \"{w}\"; valid: refuse, replace, allow"))
                })?);
            }
            _ => return Err(self.error(pos, unknown_keyword(w, TOP_KEYWORDS, ""))),
        }
        self.end()
    }

    /// `status PATH [interval N] [version 2|3]`, options in any order.
    fn status_file(&mut self) -> PResult<StatusFile> {
        let path = self.path("a status file name")?;
        let (mut interval, mut version) = (DEFAULT_STATUS_INTERVAL, 2);
        loop {
            if self.optional("interval")? {
                interval = self.number("status interval", 1, MAX_STATUS_INTERVAL)?;
            } else if self.optional("version")? {
                version = self.number("status version", 2, 3)? as u8;
            } else {
                return Ok(StatusFile { path, interval, version });
            }
        }
    }

    fn macro_definition(&mut self, name: &str, pos: Pos) -> PResult<()> {
        self.next()?; // "="
        if !is_macro_name(name) || TOP_KEYWORDS.contains(&name) {
            return Err(
                self.error(pos, format!("\"{name}\" cannot be a macro name (letters, digits and _, not a keyword)"))
            );
        }
        let (value, _) = match self.next()? {
            (Tok::Word(w), p) | (Tok::Str(w), p) => (w, p),
            (t, p) => {
                return Err(self.error(p, format!("expected the value of macro \"{name}\", found {}", t.describe())))
            }
        };
        if !self.fixed.contains(name) {
            self.macros.insert(name.to_string(), value);
        }
        self.end()
    }

    fn include(&mut self, pos: Pos) -> PResult<()> {
        let (name, p) = self.text("a file name")?;
        if !self.allow_include {
            return Err(self.error(pos, "include is not allowed here"));
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return Err(self.error(p, format!("include \"{name}\": too deeply nested (does a file include itself?)")));
        }
        let mut path = PathBuf::from(&name);
        if path.is_relative() {
            if let Some(dir) = self.stack.last().and_then(|f| f.dir.as_ref()) {
                path = dir.join(path);
            }
        }
        let shown = path.display().to_string();
        let mut lexer = match read_conf(&path, &mut self.read) {
            Ok(l) => l,
            Err(ReadError::Io(e)) => return Err(self.error(p, format!("include \"{shown}\": {e}"))),
            Err(ReadError::Utf8(pos, msg)) => return Err(err(&shown, pos, msg)),
            Err(ReadError::Budget) => {
                let max = human(FileKind::Config.max_size());
                return Err(
                    self.error(p, format!("include \"{shown}\": the configuration and its includes pass {max}"))
                );
            }
        };
        // The statement ends before the included file starts.
        self.end()?;
        if let Some(outer) = self.stack.last() {
            lexer.share_budget(&outer.lexer);
        }
        self.stack.push(Frame { name: shown, dir: path.parent().map(Path::to_path_buf), lexer });
        Ok(())
    }

    /// `data-ciphers C` or `data-ciphers { C, C ... }`.
    fn cipher_list(&mut self) -> PResult<Vec<Cipher>> {
        if !matches!(self.peek()?, Tok::LBrace) {
            return Ok(vec![self.cipher()?.0]);
        }
        let (_, open) = self.next()?;
        let mut list = Vec::new();
        loop {
            match self.peek()? {
                Tok::RBrace => {
                    self.next()?;
                    break;
                }
                Tok::Comma | Tok::Newline => {
                    self.next()?;
                }
                Tok::Eof => return Err(self.error(open, "the cipher list is not closed: add \"}\"")),
                _ => {
                    let (c, p) = self.cipher()?;
                    if list.contains(&c) {
                        return Err(self.error(p, format!("cipher {} is listed twice", c.name())));
                    }
                    list.push(c);
                }
            }
        }
        if list.is_empty() {
            return Err(self.error(open, "the cipher list is empty"));
        }
        Ok(list)
    }

    fn sync_block(&mut self, pos: Pos) -> PResult<()> {
        self.once("sync", pos)?;
        while matches!(self.peek()?, Tok::Newline) {
            self.next()?;
        }
        match self.next()? {
            (Tok::LBrace, _) => {}
            (t, p) => return Err(self.error(p, format!("expected \"{{\" after \"sync\", found {}", t.describe()))),
        }
        self.sync_draft = Some(SyncDraft::default());
        self.statements(Some(pos));
        let draft = self.sync_draft.take().unwrap_or_default();
        self.end()?;
        let file = self.file();
        let missing = |what: &str| err(&file, pos, format!("the sync block needs {what}"));
        let role = draft
            .role
            .ok_or_else(|| missing("a role statement (role vip ADDRESS interface IF, or role carp interface carpN)"))?;
        let key = draft.key.ok_or_else(|| missing("a key statement (key \"/etc/vpnsyncd/sync.key\")"))?;
        let transport = match (draft.multicast, draft.peers.is_empty()) {
            (Some((group, port, interface)), true) => SyncTransport::Multicast { group, port, interface },
            (None, false) => SyncTransport::Unicast { peers: draft.peers },
            (None, true) => return Err(missing("a multicast interface or peer statements")),
            (Some(_), false) => {
                return Err(err(&file, pos, "the sync block has both multicast and peer statements: choose one"))
            }
        };
        let member = draft.member.ok_or_else(|| {
            missing(&format!(
                "a member statement (member 1 to member {MAX_MEMBERS}, a different number on each member)"
            ))
        })?;
        let demote = draft.demote.unwrap_or(Demote { group: "carp".into(), file: None, value: DEFAULT_DEMOTE_VALUE });
        let rekey_window = draft.rekey_window.unwrap_or(DEFAULT_REKEY_WINDOW);
        self.d.sync = Some(SyncConfig { role, transport, key, demote, rekey_window, member });
        Ok(())
    }

    fn draft(&mut self) -> &mut SyncDraft {
        self.sync_draft.get_or_insert_with(SyncDraft::default)
    }

    fn sync_statement(&mut self, w: &str, pos: Pos) -> PResult<()> {
        match w {
            "role" => {
                self.once("sync role", pos)?;
                let (kind, p) = self.word("vip or carp")?;
                let role = match kind.as_str() {
                    "vip" => {
                        let address = self.parsed("an IP address")?;
                        self.keyword("interface", "the VIP address")?;
                        RoleSource::Vip { address, interface: self.text("an interface name")?.0 }
                    }
                    "carp" => {
                        self.keyword("interface", "carp")?;
                        RoleSource::Carp { interface: self.text("an interface name")?.0 }
                    }
                    _ => {
                        return Err(self
                            .error(p, format!("unknown role source \"{kind}\"; valid: vip (Linux), carp (OpenBSD)")))
                    }
                };
                self.draft().role = Some(role);
            }
            "multicast" => {
                self.once("sync multicast", pos)?;
                let (mut group, mut port, mut interface) = (DEFAULT_SYNC_GROUP, DEFAULT_SYNC_PORT, None);
                loop {
                    if self.optional("group")? {
                        let (g, p) = self.word("a multicast group")?;
                        group = match g.parse::<Ipv4Addr>() {
                            Ok(a) if a.is_multicast() => a,
                            _ => {
                                return Err(
                                    self.error(p, format!("\"{g}\" is not an IPv4 multicast group (224.0.0.0/4)"))
                                )
                            }
                        };
                    } else if self.optional("port")? {
                        port = self.port()?;
                    } else if self.optional("interface")? {
                        interface = Some(self.text("an interface name")?.0);
                    } else {
                        break;
                    }
                }
                let interface =
                    interface.ok_or_else(|| self.error(pos, "multicast needs an interface: multicast interface IF"))?;
                self.draft().multicast = Some((group, port, interface));
            }
            "peer" => {
                let (a, p) = self.word("an address")?;
                let addr: IpAddr = a.parse().map_err(|_| self.error(p, format!("\"{a}\" is not an IP address")))?;
                let port = if self.optional("port")? { self.port()? } else { DEFAULT_SYNC_PORT };
                let sa = SocketAddr::new(addr, port);
                if self.draft().peers.len() == MAX_ADDRESSES {
                    return Err(self.error(pos, format!("more than {MAX_ADDRESSES} peer statements")));
                }
                if self.draft().peers.contains(&sa) {
                    return Err(self.error(p, format!("peer {sa} is given twice")));
                }
                self.draft().peers.push(sa);
            }
            "key" => {
                self.once("sync key", pos)?;
                self.mark(KeyFile::Sync.statement(), pos);
                let key = self.path("a key file name")?;
                self.draft().key = Some(key);
            }
            "demote" => {
                self.once("sync demote", pos)?;
                let mut d = Demote { group: "carp".into(), file: None, value: DEFAULT_DEMOTE_VALUE };
                loop {
                    if self.optional("group")? {
                        d.group = self.text("an interface group")?.0;
                    } else if self.optional("file")? {
                        d.file = Some(self.path("a file name")?);
                    } else if self.optional("value")? {
                        d.value = self.number("demote value", 1, 255)? as u8;
                    } else {
                        break;
                    }
                }
                self.draft().demote = Some(d);
            }
            "member" => {
                self.once("sync member", pos)?;
                let n = self.number("member", 1, MAX_MEMBERS.into())?;
                self.draft().member = Some(n as u8);
            }
            "rekey-window" => {
                self.once("sync rekey-window", pos)?;
                let n = self.number("rekey-window", 0, 86400)?;
                self.draft().rekey_window = Some(n);
            }
            _ => return Err(self.error(pos, unknown_keyword(w, SYNC_KEYWORDS, " in the sync block"))),
        }
        self.end()
    }

    /// Applies defaults and checks what involves several statements.
    fn finish(&mut self, main: &str) -> Config {
        let d = std::mem::take(&mut self.d);
        let mut errors = Vec::new();
        let at = |what: &'static str| self.at.get(what).cloned();
        let mut fail = |place: Option<(String, Pos)>, msg: String| {
            errors.push(match place {
                Some((file, pos)) => ConfError { file, pos: Some(pos), msg },
                None => ConfError { file: main.to_string(), pos: None, msg },
            })
        };
        let mut required = |v: Option<PathBuf>, what: &str, example: &str| {
            v.unwrap_or_else(|| {
                fail(None, format!("no {what} statement: add one, e.g. {what} \"{example}\""));
                PathBuf::new()
            })
        };
        let ca = required(d.ca, "ca", "/etc/vpnsyncd/ca.crt");
        let certificate = required(d.certificate, "certificate", "/etc/vpnsyncd/server.crt");
        let key = required(d.key, "key", "/etc/vpnsyncd/private/server.key");

        let network = d.network.unwrap_or(Ipv4Net { addr: Ipv4Addr::new(10, 8, 0, 0), prefix: 24 });
        if network.prefix > 29 {
            fail(
                at("client network"),
                format!("client network {network} is too small: use a prefix of /29 or shorter"),
            );
        }
        let server = Ipv4Addr::from(u32::from(network.addr).wrapping_add(1));
        let default_pool = (
            Ipv4Addr::from(u32::from(network.addr).wrapping_add(2)),
            Ipv4Addr::from(u32::from(network.broadcast()).wrapping_sub(1)),
        );
        let pool = d.pool.unwrap_or(default_pool);
        if d.pool.is_some() {
            let (first, last) = pool;
            let inside =
                |a: Ipv4Addr| network.contains(a) && a != network.addr && a != network.broadcast() && a != server;
            if !inside(first) || !inside(last) || u32::from(first) > u32::from(last) {
                fail(
                    at("client network"),
                    format!(
                        "pool {first} - {last} must lie within {network}, from low to high, without the network, broadcast or server ({server}) addresses"
                    ),
                );
            }
        }
        if let Some(n6) = d.network6 {
            if u32::from(128 - n6.prefix) < u32::from(32 - network.prefix) {
                fail(
                    at("client network6"),
                    format!("client network6 {n6} is too small for the host parts of client network {network}: use a prefix of /{} or shorter", 96 + network.prefix),
                );
            }
        }
        let pool_size = u32::from(pool.1).saturating_sub(u32::from(pool.0)) + 1;
        let max_clients = match d.max_clients {
            Some(m) if m > pool_size => {
                fail(at("max clients"), format!("max clients {m} exceeds the {pool_size} addresses of the pool"));
                m
            }
            Some(m) => m,
            None => pool_size,
        };
        let auth = d.auth.unwrap_or(Digest::Sha1);
        let wrap = d.wrap.map(|(w, digest)| match w {
            Wrap::TlsAuth { path, direction, .. } => Wrap::TlsAuth { path, direction, digest: digest.unwrap_or(auth) },
            w => w,
        });
        let verify_client_cert = d.verify_client_cert.unwrap_or(crate::ClientCert::Require);
        if verify_client_cert != crate::ClientCert::Require && d.password.is_none() {
            fail(
                at("verify-client-cert"),
                format!("verify-client-cert {} admits clients without a certificate: add a password check, e.g. password script \"/etc/vpnsyncd/checkpw\"", verify_client_cert.name()),
            );
        }
        if d.password_token.is_some() && d.password.is_none() {
            fail(
                at("password token"),
                "password token needs a password check to issue tokens after: add e.g. password script \"/etc/vpnsyncd/checkpw\"".into(),
            );
        }
        self.errors.append(&mut errors);
        Config {
            listen: if d.listen.is_empty() {
                vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), DEFAULT_PORT)]
            } else {
                d.listen
            },
            tun_device: d.tun_device.unwrap_or_else(|| "tun0".into()),
            network,
            network6: d.network6,
            pool,
            max_clients,
            user: d.user.unwrap_or_else(|| DEFAULT_USER.into()),
            socket: d.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            ca,
            certificate,
            key,
            crl: d.crl,
            wrap,
            data_ciphers: d
                .data_ciphers
                .unwrap_or_else(|| vec![Cipher::Aes256Gcm, Cipher::Aes128Gcm, Cipher::Chacha20Poly1305]),
            fallback_cipher: d.fallback_cipher,
            auth,
            keepalive: d.keepalive.unwrap_or((10, 60)),
            watchdog: d.watchdog.unwrap_or(DEFAULT_WATCHDOG),
            reneg_sec: d.reneg_sec.unwrap_or(3600),
            rx_moderation: d.rx_moderation.unwrap_or(DEFAULT_RX_MODERATION),
            data_threads: d.data_threads.unwrap_or(1),
            ack_filter: d.ack_filter.unwrap_or(DEFAULT_ACK_FILTER),
            push_routes: d.push_routes,
            push_dns: d.push_dns,
            push_domain: d.push_domain,
            push_options: d.push_options,
            sync: d.sync,
            password: d.password,
            password_token: d.password_token,
            verify_client_cert,
            status: d.status,
            management: d.management,
            client_config_dir: d.client_config_dir,
            duplicate_cn: d.duplicate_cn.unwrap_or(DuplicateCn::Allow),
        }
    }
}
