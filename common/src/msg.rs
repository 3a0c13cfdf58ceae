//! Every imsg type of vpnsyncd, in one place.
//!
//! Channels and who sends what:
//!
//! | type | direction | payload | fd |
//! |---|---|---|---|
//! | `Conf` | parent -> child | canonical configuration text | |
//! | `KeyMaterial` | parent -> engine, syncer | [`KeyKind`] u8, then the file's bytes | |
//! | `Fd` | parent -> child | [`FdKind`] u8, then a u32 index | the descriptor |
//! | `ConfDone` | parent -> child | empty: start working | |
//! | `Reload` | parent -> child | canonical configuration text | |
//! | `Role` | carpwatch -> parent -> engine, syncer | [`Role`] u8 | |
//! | `RoleRequest` | engine, syncer -> parent | empty: send the current role (answered with `Role` once known) | |
//! | `Heartbeat` | parent -> child | when each child last answered (`heartbeat::Beats`) | |
//! | `Heartbeat` | child -> parent | empty: the answer, sent at once from the child's loop | |
//! | `Verbose` | engine -> parent -> all children | u8 verbosity | |
//! | `CtlReload` | engine -> parent | empty; peerid = control client | |
//! | `CtlResult` | parent, syncer -> engine; engine -> vpnsyncctl | bool ok, string | |
//! | `CtlShow*`, `CtlLog`, `CtlKillClient` | vpnsyncctl -> engine (-> syncer) | see `ctl` | |
//! | `CtlSummary`, `CtlClient`, `CtlSync`, `CtlEnd` | replies | see `ctl` | |
//!
//! | `StatusPart` | engine -> parent | a piece of the rendered status file (engine/src/status.rs) | |
//! | `StatusCommit` | engine -> parent | empty: the pieces so far are the whole file, write it | |
//! | `CcdFile` | parent -> engine | a client-config-dir file: common name, NUL, its text | |
//! | `CcdDone` | parent -> engine | empty: the files sent since the last one are the whole directory | |
//!
//! | `SyncUpsert` | engine <-> syncer | session id (8), generation (8), then the session record | |
//! | `SyncProgress` | engine <-> syncer | entries: session id (8), generation (8), u16 length, progress bytes | |
//! | `SyncDelete` | engine <-> syncer | session id (8), generation of its last record (8) | |
//! | `SyncReady` | syncer -> parent, engine | empty: the session table is complete (bulk done) | |
//! | `SyncUnready` | syncer -> parent | reason text: the table may lack state, demote again | |
//! | `AuthCheck` | engine -> parent | a password check (`auth::AuthCheck`) | |
//! | `AuthVerdict` | parent -> engine | its answer (`auth::AuthVerdict`) | |
//!
//! The engine sends `Sync*` while it serves sessions (their state); the
//! syncer sends them to the other members' engines (ghost sessions). The
//! syncer treats records and progress as opaque bytes and orders them by
//! generation (engine/src/replication.rs).
//!
//! `peerid` carries the control connection id so that answers find their
//! way back to the right `vpnsyncctl`.

use crate::codec::DecodeError;

macro_rules! imsg_types {
    ($($name:ident = $val:expr),* $(,)?) => {
        /// The imsg `type` field.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum ImsgType { $($name = $val),* }

        impl ImsgType {
            /// Maps a received `type`; unknown types are an error.
            pub fn from_u32(v: u32) -> Result<Self, DecodeError> {
                match v {
                    $($val => Ok(ImsgType::$name),)*
                    _ => Err(DecodeError("unknown imsg type")),
                }
            }
        }
    };
}

imsg_types! {
    Conf = 1,
    KeyMaterial = 2,
    Fd = 3,
    ConfDone = 4,
    Reload = 5,
    Role = 6,
    Verbose = 7,
    RoleRequest = 8,
    Heartbeat = 9,
    CtlReload = 20,
    CtlResult = 21,
    CtlShowSummary = 22,
    CtlShowClients = 23,
    CtlShowSync = 24,
    CtlLog = 25,
    CtlKillClient = 26,
    CtlSummary = 30,
    CtlClient = 31,
    CtlSync = 32,
    CtlEnd = 33,
    SyncUpsert = 40,
    SyncProgress = 41,
    SyncDelete = 42,
    SyncReady = 43,
    SyncUnready = 44,
    AuthCheck = 60,
    AuthVerdict = 61,
    StatusPart = 80,
    StatusCommit = 81,
    CcdFile = 70,
    CcdDone = 71,
}

/// Which key file a `KeyMaterial` message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyKind {
    Ca = 1,
    Certificate = 2,
    Key = 3,
    Crl = 4,
    /// The tls-auth or tls-crypt static key, or the tls-crypt-v2 server key.
    Wrap = 5,
    /// The sync pre-shared key.
    Sync = 6,
    /// The session token key (`password token`), which the parent derives
    /// from the sync key so that every member checks every token.
    AuthToken = 60,
}

impl KeyKind {
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => KeyKind::Ca,
            2 => KeyKind::Certificate,
            3 => KeyKind::Key,
            4 => KeyKind::Crl,
            5 => KeyKind::Wrap,
            6 => KeyKind::Sync,
            60 => KeyKind::AuthToken,
            _ => return Err(DecodeError("unknown key kind")),
        })
    }
}

/// What a descriptor passed in an `Fd` message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FdKind {
    Tun = 1,
    /// A bound UDP socket for clients (one per `listen on`).
    Listener = 2,
    /// The listening control socket.
    Control = 3,
    /// The bound UDP sync socket.
    Sync = 4,
    /// The engine <-> syncer socketpair end.
    Peer = 5,
    /// The route socket (PF_ROUTE on OpenBSD, NETLINK_ROUTE on Linux).
    Route = 6,
    /// The listening management socket (`management`), if configured.
    Management = 7,
    /// The tun device, opened with a virtio_net_hdr before every packet
    /// (Linux `IFF_VNET_HDR`), instead of `Tun`.
    TunVnet = 9,
}

impl FdKind {
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => FdKind::Tun,
            2 => FdKind::Listener,
            3 => FdKind::Control,
            4 => FdKind::Sync,
            5 => FdKind::Peer,
            6 => FdKind::Route,
            7 => FdKind::Management,
            9 => FdKind::TunVnet,
            _ => return Err(DecodeError("unknown fd kind")),
        })
    }
}

/// The cluster role of this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Not known yet (carp INIT, or the VIP interface is missing).
    Init = 0,
    Backup = 1,
    Master = 2,
}

impl Role {
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Role::Init,
            1 => Role::Backup,
            2 => Role::Master,
            _ => return Err(DecodeError("unknown role")),
        })
    }

    /// The name used in logs and `vpnsyncctl` output.
    pub fn name(self) -> &'static str {
        match self {
            Role::Init => "INIT",
            Role::Backup => "BACKUP",
            Role::Master => "MASTER",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for t in [ImsgType::Conf, ImsgType::Fd, ImsgType::Heartbeat, ImsgType::CtlEnd, ImsgType::CtlKillClient] {
            assert_eq!(ImsgType::from_u32(t as u32), Ok(t));
        }
        assert!(ImsgType::from_u32(999).is_err());
        for k in 1..=6 {
            assert_eq!(KeyKind::from_u8(k).unwrap() as u8, k);
            assert_eq!(FdKind::from_u8(k).unwrap() as u8, k);
        }
        assert_eq!(FdKind::from_u8(7), Ok(FdKind::Management));
        assert_eq!(FdKind::from_u8(9), Ok(FdKind::TunVnet));
        assert!(KeyKind::from_u8(0).is_err() && FdKind::from_u8(0).is_err());
        for r in 0..=2 {
            assert_eq!(Role::from_u8(r).unwrap() as u8, r);
        }
        assert!(Role::from_u8(3).is_err());
    }
}
