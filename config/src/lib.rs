//! vpnsyncd.conf(5): the configuration of the daemon, its grammar and its
//! canonical form (what `vpnsyncd -n` prints and what the parent hands to
//! each child, so that the children parse the very text the parent checked).

pub mod ccd;
mod error;
mod file;
mod lexer;
mod net;
mod net6;
mod parser;
mod print;
mod pushopt;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub use error::{ConfError, ConfErrors, Pos};
pub use file::{read_file, FileKind};
pub use lexer::{MAX_EXPANDED, MAX_STRING};
pub use net::Ipv4Net;
pub use net6::Ipv6Net;
pub use parser::{
    DEFAULT_ACK_FILTER, DEFAULT_BSDAUTH_TYPE, DEFAULT_PAM_SERVICE, DEFAULT_PASSWORD_TIMEOUT, DEFAULT_STATUS_INTERVAL,
    DEFAULT_TOKEN_LIFETIME, DEFAULT_WATCHDOG, MAX_PUSH_DNS, MAX_PUSH_ROUTES,
};
pub use pushopt::{MAX_PUSH_OPTION, MAX_PUSH_OPTIONS};

/// The OpenVPN port.
pub const DEFAULT_PORT: u16 = 1194;
/// The largest cluster: members are numbered 1 to this.
pub const MAX_MEMBERS: u8 = 8;

/// The sync defaults of the VPNSync lineage.
pub const DEFAULT_SYNC_GROUP: Ipv4Addr = Ipv4Addr::new(239, 0, 2, 0);
pub const DEFAULT_SYNC_PORT: u16 = 1196;
pub const DEFAULT_SOCKET: &str = "/var/run/vpnsyncd.sock";
pub const DEFAULT_USER: &str = "_vpnsyncd";

/// A data-channel cipher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    Aes256Gcm,
    Aes128Gcm,
    Chacha20Poly1305,
    Aes256Cbc,
}

impl Cipher {
    pub const ALL: [Cipher; 4] = [Cipher::Aes256Gcm, Cipher::Aes128Gcm, Cipher::Chacha20Poly1305, Cipher::Aes256Cbc];

    /// The name OpenVPN uses on the wire (IV_CIPHERS, `cipher` push).
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::Aes128Gcm => "AES-128-GCM",
            Cipher::Chacha20Poly1305 => "CHACHA20-POLY1305",
            Cipher::Aes256Cbc => "AES-256-CBC",
        }
    }

    /// Case-insensitive, as OpenVPN accepts it.
    pub fn from_name(s: &str) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(s))
    }

    pub fn is_aead(self) -> bool {
        self != Cipher::Aes256Cbc
    }
}

/// An HMAC digest (`auth`, tls-auth).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Digest {
    Sha1,
    Sha256,
    Sha512,
}

impl Digest {
    pub const ALL: [Digest; 3] = [Digest::Sha1, Digest::Sha256, Digest::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha1 => "SHA1",
            Digest::Sha256 => "SHA256",
            Digest::Sha512 => "SHA512",
        }
    }

    pub fn from_name(s: &str) -> Option<Digest> {
        Digest::ALL.into_iter().find(|d| d.name().eq_ignore_ascii_case(s))
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Digest::Sha1 => 20,
            Digest::Sha256 => 32,
            Digest::Sha512 => 64,
        }
    }
}

/// The control-channel wrapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wrap {
    /// HMAC over control packets. `direction` is OpenVPN's key-direction
    /// (the server normally uses 0, the client 1); `None` uses one key both
    /// ways.
    TlsAuth { path: PathBuf, direction: Option<u8>, digest: Digest },
    /// Encryption and authentication of control packets (AES-256-CTR +
    /// HMAC-SHA256).
    TlsCrypt { path: PathBuf },
    /// tls-crypt with a key per client (tls-crypt-v2): `path` is the
    /// server key, which unwraps the key each client sends.
    TlsCryptV2 { path: PathBuf },
}

/// Where the machine's role (master or backup) comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleSource {
    /// OpenBSD: the state of a carp interface.
    Carp { interface: String },
    /// Linux: master while the VIP is on the interface (keepalived, ucarp).
    Vip { address: IpAddr, interface: String },
}

/// How sync datagrams travel between cluster members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncTransport {
    Multicast {
        group: Ipv4Addr,
        port: u16,
        interface: String,
    },
    /// The local port is the first peer's port.
    Unicast {
        peers: Vec<SocketAddr>,
    },
}

/// How this machine tells CARP/VRRP not to make it master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demote {
    /// OpenBSD interface group whose carp demote counter is raised.
    pub group: String,
    /// Linux: the file keepalived's `track_file` reads.
    pub file: Option<PathBuf>,
    pub value: u8,
}

/// The `sync` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    pub role: RoleSource,
    pub transport: SyncTransport,
    /// The pre-shared key of the cluster.
    pub key: PathBuf,
    pub demote: Demote,
    /// After a takeover every session is renegotiated within this many
    /// seconds, spread evenly, so that clients do not all rekey at once.
    pub rekey_window: u32,
    /// This machine's number in the cluster, 1 to [`MAX_MEMBERS`], unique:
    /// it decides which packet ids this member may ever send under a
    /// shared key and which peer-ids it hands out (docs/SYNC.md).
    pub member: u8,
}

/// The `status` statement: a file in OpenVPN's status format, rewritten
/// by the parent every `interval` seconds from what the engine renders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusFile {
    pub path: PathBuf,
    pub interval: u32,
    /// OpenVPN's `status-version`: 2 (comma-separated) or 3 (tabs).
    pub version: u8,
}

/// The `management` statement: OpenVPN's management interface on a unix
/// socket, bound by the parent (mode 0600 root, or 0660 with `group`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Management {
    pub path: PathBuf,
    /// The group that may connect besides root (OpenVPN's
    /// `management-client-group`).
    pub group: Option<String>,
}

/// A parsed and checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub tun_device: String,
    pub network: Ipv4Net,
    /// `client network6`: the IPv6 client network, if clients get IPv6.
    pub network6: Option<Ipv6Net>,
    /// First and last address handed to clients.
    pub pool: (Ipv4Addr, Ipv4Addr),
    pub max_clients: u32,
    pub user: String,
    pub socket: PathBuf,
    pub ca: PathBuf,
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
    pub wrap: Option<Wrap>,
    pub data_ciphers: Vec<Cipher>,
    /// For clients that do not negotiate (before 2.4, or NCP disabled).
    pub fallback_cipher: Option<Cipher>,
    /// The HMAC of CBC data channels.
    pub auth: Digest,
    /// Ping interval and restart timeout (seconds), pushed to the clients.
    pub keepalive: (u32, u32),
    /// Seconds without a heartbeat after which the parent or a child is
    /// taken for hung and the node goes down (heartbeats go every second).
    pub watchdog: u32,
    pub reneg_sec: u32,
    /// Microseconds the engine waits, while data flows, before it reads the
    /// tun and the listeners again (0: it wakes for every packet).
    pub rx_moderation: u32,
    /// Threads that receive and decrypt clients' datagrams (`data-threads`,
    /// engine/src/shard.rs): 1 is the main thread alone.
    pub data_threads: u32,
    /// Whether a client's pure TCP ACK that a later one of the same receive
    /// batch supersedes is dropped (`ack-filter`, engine/src/ackfilter.rs).
    pub ack_filter: bool,
    pub push_routes: Vec<Ipv4Net>,
    pub push_dns: Vec<IpAddr>,
    pub push_domain: Option<String>,
    /// redirect-gateway, block-outside-dns, route-ipv6 and generic pushes,
    /// as the option text a client receives, in configuration order.
    pub push_options: Vec<String>,
    pub sync: Option<SyncConfig>,
    /// How key-method-2 usernames and passwords are checked; `None`: they
    /// are ignored and the certificate alone admits a client.
    pub password: Option<PasswordCheck>,
    /// `password token lifetime N`: seconds an auth-gen-token stays valid.
    pub password_token: Option<u32>,
    pub verify_client_cert: ClientCert,
    pub status: Option<StatusFile>,
    pub management: Option<Management>,
    /// Per-client files named by common name (read by the parent).
    pub client_config_dir: Option<PathBuf>,
    pub duplicate_cn: DuplicateCn,
}

/// `verify-client-cert`: whether clients must present a certificate.
/// One they present is always verified against the CA and the CRL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCert {
    Require,
    /// Clients without one are admitted by their password alone.
    Optional,
    /// Certificates are not asked for: passwords alone admit clients.
    None,
}

impl ClientCert {
    pub const ALL: [ClientCert; 3] = [ClientCert::Require, ClientCert::Optional, ClientCert::None];

    pub fn name(self) -> &'static str {
        match self {
            ClientCert::Require => "require",
            ClientCert::Optional => "optional",
            ClientCert::None => "none",
        }
    }
}

/// Who decides whether a username and password are good (`password`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordCheck {
    /// OpenVPN's `auth-user-pass-verify SCRIPT via-file`; `timeout` in
    /// seconds, after which the script is killed and the client refused.
    Script { path: PathBuf, timeout: u32 },
    /// Linux-PAM (`password pam`): the `service` names /etc/pam.d/SERVICE;
    /// pam_authenticate then pam_acct_mgmt, in a helper process killed at
    /// `timeout`.
    Pam { service: String, timeout: u32 },
    /// OpenBSD's BSD Authentication (`password bsdauth`): auth_userokay(3)
    /// with `style` (`None`: the login class's default) and the
    /// login.conf(5) authentication `type` of the user's login class.
    BsdAuth { style: Option<String>, kind: String, timeout: u32 },
}

impl PasswordCheck {
    /// Seconds a check may take before the client is refused.
    pub fn timeout(&self) -> u32 {
        match self {
            PasswordCheck::Script { timeout, .. }
            | PasswordCheck::Pam { timeout, .. }
            | PasswordCheck::BsdAuth { timeout, .. } => *timeout,
        }
    }
}

/// What a second connection with a common name already connected does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicateCn {
    /// The new connection is refused while the old one lives.
    Refuse,
    /// The new connection ends the old one (what OpenVPN does without
    /// its duplicate-cn option).
    Replace,
    /// Both live, each with its own address (the default: what vpnsyncd
    /// did before the statement, and what a load generator needs).
    Allow,
}

impl DuplicateCn {
    pub fn name(self) -> &'static str {
        match self {
            DuplicateCn::Refuse => "refuse",
            DuplicateCn::Replace => "replace",
            DuplicateCn::Allow => "allow",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [DuplicateCn::Refuse, DuplicateCn::Replace, DuplicateCn::Allow].into_iter().find(|d| d.name() == s)
    }
}

impl Config {
    /// The server's own address in the client network: the first host.
    pub fn server_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network.addr) + 1)
    }
}

/// A file whose bytes the parent reads for a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFile {
    Ca,
    Certificate,
    Key,
    Crl,
    /// The tls-auth or tls-crypt key, or the tls-crypt-v2 server key.
    Wrap,
    /// The key of the `sync` block.
    Sync,
}

impl KeyFile {
    /// The statement that names the file (where its place is recorded).
    pub fn statement(self) -> &'static str {
        match self {
            KeyFile::Ca => "ca",
            KeyFile::Certificate => "certificate",
            KeyFile::Key => "key",
            KeyFile::Crl => "crl",
            KeyFile::Wrap => "tls-auth, tls-crypt or tls-crypt-v2",
            KeyFile::Sync => "sync key",
        }
    }

    pub fn kind(self) -> FileKind {
        match self {
            KeyFile::Ca | KeyFile::Certificate | KeyFile::Crl => FileKind::Certificate,
            KeyFile::Key => FileKind::PrivateKey,
            KeyFile::Wrap | KeyFile::Sync => FileKind::StaticKey,
        }
    }
}

impl Config {
    /// Every key file the configuration names.
    pub fn key_files(&self) -> Vec<(KeyFile, &Path)> {
        let mut v =
            vec![(KeyFile::Ca, &*self.ca), (KeyFile::Certificate, &self.certificate), (KeyFile::Key, &self.key)];
        v.extend(self.crl.as_deref().map(|p| (KeyFile::Crl, p)));
        match &self.wrap {
            Some(Wrap::TlsAuth { path, .. } | Wrap::TlsCrypt { path } | Wrap::TlsCryptV2 { path }) => {
                v.push((KeyFile::Wrap, path))
            }
            None => {}
        }
        v.extend(self.sync.as_ref().map(|s| (KeyFile::Sync, &*s.key)));
        v
    }
}

/// A configuration file and the key files it names, read.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub keys: Vec<(KeyFile, Vec<u8>)>,
    /// Key files that are missing or may not be read, at the statement
    /// that names them: the daemon refuses to start, but `vpnsyncd -n`
    /// only warns, so that a configuration can be checked away from the
    /// machine that holds the keys.
    pub unreadable: ConfErrors,
}

/// Parses the file at `path` and reads every key file it names, each
/// through [`read_file`]. A key file of the wrong type or size is an error
/// at the statement that names it. `macros` come from `-D name=value` and
/// take precedence over definitions in the file.
pub fn load(path: &Path, macros: &[(String, String)]) -> Result<Loaded, ConfErrors> {
    let (config, places) = parser::parse(parser::Source::File(path), macros)?;
    let (mut keys, mut errors, mut unreadable) = (Vec::new(), Vec::new(), Vec::new());
    for (file, key_path) in config.key_files() {
        // Errors quote the keyword as written.
        let keyword = match (file, &config.wrap) {
            (KeyFile::Wrap, Some(Wrap::TlsCrypt { .. })) => "tls-crypt",
            (KeyFile::Wrap, Some(Wrap::TlsCryptV2 { .. })) => "tls-crypt-v2",
            (KeyFile::Wrap, _) => "tls-auth",
            _ => file.statement(),
        };
        match read_file(key_path, file.kind()) {
            Ok(bytes) => keys.push((file, bytes)),
            Err(e) => {
                let (name, pos) = places
                    .get(file.statement())
                    .cloned()
                    .map_or((path.display().to_string(), None), |(f, p)| (f, Some(p)));
                let err = ConfError { file: name, pos, msg: format!("{keyword} \"{}\": {e}", key_path.display()) };
                if e.kind() == std::io::ErrorKind::InvalidInput {
                    errors.push(err)
                } else {
                    unreadable.push(err)
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(ConfErrors(errors));
    }
    Ok(Loaded { config, keys, unreadable: ConfErrors(unreadable) })
}

/// The canonical text a child received from the parent (see `Display`).
pub fn from_parent(text: &str) -> Result<Config, ConfErrors> {
    parse_str("configuration from parent", text, &[])
}

/// Parses `text` named `name` in messages. `include` is refused: this is
/// how children read the canonical text the parent sent them.
pub fn parse_str(name: &str, text: &str, macros: &[(String, String)]) -> Result<Config, ConfErrors> {
    parser::parse(parser::Source::Text { name, text }, macros).map(|(c, _)| c)
}
