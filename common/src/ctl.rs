//! The records that the control socket returns to `vpnsyncctl`.
//!
//! Requests are bare imsg types (`CtlShowSummary`, `CtlShowClients`,
//! `CtlShowSync`, `CtlReload`) or carry one field (`CtlLog`: u8 verbose flag,
//! `CtlKillClient`: the common name). Answers are zero or more records
//! followed by `CtlEnd`, or a `CtlResult`. Times are Unix seconds so that the
//! tool, not the daemon, turns them into durations.

use crate::codec::{DecodeError, Reader, Writer};
use crate::heartbeat::Beats;
use crate::msg::Role;

/// `show summary`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub version: String,
    pub role: Role,
    pub started: u64,
    pub clients: u32,
    pub max_clients: u32,
    pub tun_device: String,
    pub server_address: String,
    pub listen: Vec<String>,
    /// "standalone", or a one-line description of the sync transport.
    pub sync: String,
    /// Sessions of other members held as ghosts.
    pub ghosts: u32,
    /// First packets refused (wrong wrapping key, full server, ...).
    pub refused_packets: u64,
    /// Sync records refused: stale, for a session served here, not
    /// fitting the configuration, in conflict, or beyond the table's size.
    pub refused_records: u64,
    /// Clients' soft resets refused for coming too often (each resend
    /// counts): a client renegotiating faster than the engine allows.
    pub refused_renegotiations: u64,
    /// Tunnel packets dropped for a source address that is not their
    /// client's (its tunnel address or an iroute of it).
    pub wrong_source: u64,
    /// Clients' pure TCP ACKs dropped by the ACK filter (`ack-filter`).
    pub acks_filtered: u64,
    /// The `watchdog` setting, seconds.
    pub watchdog: u32,
    /// Unix milliseconds of the engine's last heartbeat from the parent.
    pub parent_heard: u64,
    /// When each child last answered the parent, as the parent's last
    /// heartbeat to the engine told.
    pub heartbeats: Beats,
}

/// One line of `show clients`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub common_name: String,
    pub real_address: String,
    pub virtual_ip: String,
    pub cipher: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connected_since: u64,
    pub key_id: u8,
    /// 0 when the client has not rekeyed since it connected.
    pub last_rekey: u64,
    pub peer_id: u32,
    /// The user a password check accepted; empty without `password`.
    pub username: String,
    /// The IPv6 tunnel address (`client network6`); empty without one.
    pub virtual_ip6: String,
}

/// One peer line of `show sync`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub address: String,
    /// 0 when never heard.
    pub last_heard: u64,
    /// What its last heartbeat said.
    pub role: Role,
    /// Heard once, but not for three heartbeats: its role is stale.
    pub lost: bool,
}

/// `show sync`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncInfo {
    pub role: Option<Role>,
    pub transport: String,
    pub peers: Vec<PeerInfo>,
    pub sessions: u32,
    pub lag_ms: u32,
    pub bulk_complete: bool,
    pub sent: u64,
    pub received: u64,
    pub rejected_auth: u64,
    pub rejected_replay: u64,
    pub rejected_version: u64,
    pub rejected_malformed: u64,
    /// What the member knows of its own table ("in sync", or why it may
    /// be missing state).
    pub state: String,
    /// Updates refused because the table was full.
    pub rejected_full: u64,
}

fn role_or_none(r: Option<Role>) -> u8 {
    r.map_or(0xff, |r| r as u8)
}

impl Summary {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.str(&self.version).u8(self.role as u8).u64(self.started).u32(self.clients);
        w.u32(self.max_clients).str(&self.tun_device).str(&self.server_address);
        w.u32(self.listen.len() as u32);
        for l in &self.listen {
            w.str(l);
        }
        w.str(&self.sync).u32(self.ghosts).u64(self.refused_packets).u64(self.refused_records);
        w.u64(self.refused_renegotiations).u64(self.wrong_source).u64(self.acks_filtered);
        w.u32(self.watchdog).u64(self.parent_heard).bytes(&self.heartbeats.encode());
        w.finish()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let version = r.str()?.to_owned();
        let role = Role::from_u8(r.u8()?)?;
        let (started, clients, max_clients) = (r.u64()?, r.u32()?, r.u32()?);
        let (tun_device, server_address) = (r.str()?.to_owned(), r.str()?.to_owned());
        let n = r.u32()?;
        let listen = (0..n).map(|_| r.str().map(str::to_owned)).collect::<Result<_, _>>()?;
        let sync = r.str()?.to_owned();
        let (ghosts, refused_packets, refused_records) = (r.u32()?, r.u64()?, r.u64()?);
        let (refused_renegotiations, wrong_source, acks_filtered) = (r.u64()?, r.u64()?, r.u64()?);
        let (watchdog, parent_heard) = (r.u32()?, r.u64()?);
        let heartbeats = Beats::decode(&mut Reader::new(r.bytes()?))?;
        r.end()?;
        Ok(Summary {
            version,
            role,
            started,
            clients,
            max_clients,
            tun_device,
            server_address,
            listen,
            sync,
            ghosts,
            refused_packets,
            refused_records,
            refused_renegotiations,
            wrong_source,
            acks_filtered,
            watchdog,
            parent_heard,
            heartbeats,
        })
    }
}

impl ClientInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.str(&self.common_name).str(&self.real_address).str(&self.virtual_ip).str(&self.cipher);
        w.u64(self.bytes_in).u64(self.bytes_out).u64(self.connected_since).u8(self.key_id);
        w.u64(self.last_rekey).u32(self.peer_id).str(&self.username).str(&self.virtual_ip6);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let c = ClientInfo {
            common_name: r.str()?.to_owned(),
            real_address: r.str()?.to_owned(),
            virtual_ip: r.str()?.to_owned(),
            cipher: r.str()?.to_owned(),
            bytes_in: r.u64()?,
            bytes_out: r.u64()?,
            connected_since: r.u64()?,
            key_id: r.u8()?,
            last_rekey: r.u64()?,
            peer_id: r.u32()?,
            username: r.str()?.to_owned(),
            virtual_ip6: r.str()?.to_owned(),
        };
        r.end()?;
        Ok(c)
    }
}

impl SyncInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(role_or_none(self.role)).str(&self.transport).u32(self.peers.len() as u32);
        for p in &self.peers {
            w.str(&p.address).u64(p.last_heard).u8(p.role as u8).bool(p.lost);
        }
        w.u32(self.sessions).u32(self.lag_ms).bool(self.bulk_complete);
        for v in [self.sent, self.received, self.rejected_auth, self.rejected_replay] {
            w.u64(v);
        }
        w.u64(self.rejected_version).u64(self.rejected_malformed);
        w.str(&self.state).u64(self.rejected_full);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let role = match r.u8()? {
            0xff => None,
            v => Some(Role::from_u8(v)?),
        };
        let transport = r.str()?.to_owned();
        let n = r.u32()?;
        let peers = (0..n)
            .map(|_| {
                Ok(PeerInfo {
                    address: r.str()?.to_owned(),
                    last_heard: r.u64()?,
                    role: Role::from_u8(r.u8()?)?,
                    lost: r.bool()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        let s = SyncInfo {
            role,
            transport,
            peers,
            sessions: r.u32()?,
            lag_ms: r.u32()?,
            bulk_complete: r.bool()?,
            sent: r.u64()?,
            received: r.u64()?,
            rejected_auth: r.u64()?,
            rejected_replay: r.u64()?,
            rejected_version: r.u64()?,
            rejected_malformed: r.u64()?,
            state: r.str()?.to_owned(),
            rejected_full: r.u64()?,
        };
        r.end()?;
        Ok(s)
    }
}

/// A `CtlResult`: success or an error message for the user.
pub fn encode_result(res: &Result<String, String>) -> Vec<u8> {
    let mut w = Writer::new();
    match res {
        Ok(m) => w.bool(true).str(m),
        Err(m) => w.bool(false).str(m),
    };
    w.finish()
}

pub fn decode_result(b: &[u8]) -> Result<Result<String, String>, DecodeError> {
    let mut r = Reader::new(b);
    let ok = r.bool()?;
    let msg = r.str()?.to_owned();
    r.end()?;
    Ok(if ok { Ok(msg) } else { Err(msg) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_truncations<T: std::fmt::Debug>(b: &[u8], decode: fn(&[u8]) -> Result<T, DecodeError>) {
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "decoded a payload cut at {cut}");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert!(decode(&long).is_err(), "accepted trailing bytes");
    }

    #[test]
    fn records_round_trip() {
        let s = Summary {
            version: "0.1.0".into(),
            role: Role::Master,
            started: 1_700_000_000,
            clients: 2,
            max_clients: 1024,
            tun_device: "tun0".into(),
            server_address: "10.8.0.1".into(),
            listen: vec!["0.0.0.0:1194".into(), "[::]:1194".into()],
            sync: "multicast 239.0.2.0:1196 on eth1".into(),
            ghosts: 4,
            refused_packets: 5,
            refused_records: 6,
            refused_renegotiations: 7,
            wrong_source: 9,
            acks_filtered: 8,
            watchdog: 3,
            parent_heard: 1_700_000_000_500,
            heartbeats: Beats(vec![("engine".into(), 1_700_000_000_400), ("carpwatch".into(), 0)]),
        };
        assert_eq!(Summary::decode(&s.encode()), Ok(s.clone()));
        check_truncations(&s.encode(), Summary::decode);

        let c = ClientInfo {
            common_name: "alice".into(),
            real_address: "198.18.0.100:40000".into(),
            virtual_ip: "10.8.0.2".into(),
            cipher: "AES-256-GCM".into(),
            bytes_in: 1,
            bytes_out: 2,
            connected_since: 3,
            key_id: 1,
            last_rekey: 4,
            peer_id: 0,
            username: "bob".into(),
            virtual_ip6: "fd00:8::2".into(),
        };
        assert_eq!(ClientInfo::decode(&c.encode()), Ok(c.clone()));
        check_truncations(&c.encode(), ClientInfo::decode);

        let y = SyncInfo {
            role: Some(Role::Backup),
            transport: "unicast".into(),
            peers: vec![
                PeerInfo { address: "198.18.0.2:1196".into(), last_heard: 5, role: Role::Master, lost: true },
                PeerInfo { address: "198.18.0.3:1196".into(), last_heard: 0, role: Role::Init, lost: false },
            ],
            sessions: 2,
            lag_ms: 3,
            bulk_complete: true,
            sent: 4,
            received: 5,
            rejected_auth: 6,
            rejected_replay: 7,
            rejected_version: 8,
            rejected_malformed: 9,
            state: "in sync".into(),
            rejected_full: 10,
        };
        assert_eq!(SyncInfo::decode(&y.encode()), Ok(y.clone()));
        check_truncations(&y.encode(), SyncInfo::decode);
        let none = SyncInfo::default();
        assert_eq!(SyncInfo::decode(&none.encode()), Ok(none));

        for res in [Ok("reloaded".to_string()), Err("vpnsyncd.conf:3:1: syntax error".to_string())] {
            assert_eq!(decode_result(&encode_result(&res)), Ok(res.clone()));
        }
    }
}
