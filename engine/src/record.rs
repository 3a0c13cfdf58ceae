//! The session record: everything a backup server needs to continue a
//! client's session without a new handshake (protocol reference §19), in
//! one versioned, serialisable form. The master's engine snapshots it after
//! every key exchange, the syncer carries it (encrypted) to the backups, and
//! a backup's engine installs it as a ghost session.
//!
//! Encoding: a version byte, then fields as `tag u8 | length u32 | value`.
//! Unknown tags are skipped, so a newer peer's records do not break an
//! older one; a missing required field is an error. The fast-changing part
//! (packet counters, replay windows, byte counts) travels separately as
//! [`Progress`], batched.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use vpnsyncd_common::codec::{DecodeError, Reader, Writer};
use vpnsyncd_config::Cipher;

use crate::session::{Framing, Negotiated};

/// 2: keys carry their senders, age and lame-duck expiry.
pub const VERSION: u8 = 2;

/// A receive replay window: (time, highest id, bitmap of the 64 below).
pub type Window = (u32, u32, u64);

/// One key state's data-channel keys and counters.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: u8,
    /// The 256-byte key block both directions are cut from (§10).
    pub key2: [u8; 256],
    /// The last packet id the master sent with this key.
    pub send: u32,
    pub recv: Window,
    /// Bit `m - 1`: member `m` has sent under this key (the creator, and
    /// every member that took it over). See `Session::promote`.
    pub senders: u8,
    /// Seconds since the key was established, so that a copy is
    /// renegotiated no later than the original would have been.
    pub age: u32,
    /// A lame duck: seconds until it is dropped; 0 for the primary key.
    pub expires_in: u32,
}

/// The counters of one key state, as progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyProgress {
    pub key_id: u8,
    pub send: u32,
    pub recv: Window,
}

/// What changes with every packet: sent in batches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// tls-auth/tls-crypt send (id, time) and receive window.
    pub wrap_send: (u32, u32),
    pub wrap_recv: Window,
    pub keys: Vec<KeyProgress>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub peer: SocketAddr,
    /// Index of the listener in the (identical) configuration.
    pub listener: u8,
    pub peer_id: u32,
    pub local_sid: [u8; 8],
    pub remote_sid: [u8; 8],
    pub common_name: String,
    pub virtual_ip: Ipv4Addr,
    /// With `client network6`; absent in older records.
    pub virtual_ip6: Option<Ipv6Addr>,
    pub negotiated: Negotiated,
    pub connected_since: u64,
    pub last_rekey: u64,
    pub keys: Vec<KeyRecord>,
    pub progress: Progress,
    /// tls-crypt-v2: the client's wrapped key (WKc, not secret), which the
    /// new master unwraps with the cluster's server key to get the
    /// client's tls-crypt key back. Absent in older records.
    pub wkc: Option<Vec<u8>>,
    /// The user a password check (or token) accepted; absent in records
    /// of servers without `password`, and of older versions.
    pub username: Option<String>,
    /// The issue time of the session's token: any member pushes the same.
    pub token_issued: Option<u64>,
}

impl fmt::Debug for SessionRecord {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("peer", &self.peer)
            .field("peer_id", &self.peer_id)
            .field("common_name", &self.common_name)
            .field("virtual_ip", &self.virtual_ip)
            .field("virtual_ip6", &self.virtual_ip6)
            .field("key_ids", &self.keys.iter().map(|k| k.key_id).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

mod tag {
    pub const PEER: u8 = 1;
    pub const LISTENER: u8 = 2;
    pub const PEER_ID: u8 = 3;
    pub const SIDS: u8 = 4;
    pub const COMMON_NAME: u8 = 5;
    pub const VIRTUAL_IP: u8 = 6;
    pub const NEGOTIATED: u8 = 7;
    pub const TIMES: u8 = 8;
    pub const KEY: u8 = 9;
    pub const PROGRESS: u8 = 10;
    /// tls-crypt-v2 (55-59 reserved).
    pub const WKC: u8 = 55;
    /// The username a password check accepted (optional).
    pub const USERNAME: u8 = 20;
    /// When the session's auth-token was issued (optional).
    pub const TOKEN_ISSUED: u8 = 21;
    /// The IPv6 tunnel address (optional).
    pub const VIRTUAL_IP6: u8 = 40;
}

fn field(w: &mut Writer, tag: u8, value: impl FnOnce(&mut Writer)) {
    let mut v = Writer::new();
    value(&mut v);
    w.u8(tag).bytes(&v.finish());
}

fn put_addr(w: &mut Writer, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => w.u8(4).0.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => w.u8(6).0.extend_from_slice(&ip.octets()),
    }
    w.u16(a.port());
}

fn get_array<const N: usize>(r: &mut Reader<'_>) -> Result<[u8; N], DecodeError> {
    let mut a = [0u8; N];
    for b in a.iter_mut() {
        *b = r.u8()?;
    }
    Ok(a)
}

fn get_addr(r: &mut Reader<'_>) -> Result<SocketAddr, DecodeError> {
    let ip: IpAddr = match r.u8()? {
        4 => Ipv4Addr::from(get_array::<4>(r)?).into(),
        6 => std::net::Ipv6Addr::from(get_array::<16>(r)?).into(),
        _ => return Err(DecodeError("bad address family")),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

/// WKc: the rest of the field, within tls-crypt-v2's bound.
fn get_wkc(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let wkc = r.rest();
    if wkc.len() > crate::tlscryptv2::MAX_WKC_LEN {
        return Err(DecodeError("tls-crypt-v2 client key too long"));
    }
    Ok(wkc.to_vec())
}

fn put_window(w: &mut Writer, (t, h, s): Window) {
    w.u32(t).u32(h).u64(s);
}

fn get_window(r: &mut Reader<'_>) -> Result<Window, DecodeError> {
    Ok((r.u32()?, r.u32()?, r.u64()?))
}

fn framing_code(f: Framing) -> u8 {
    match f {
        Framing::None => 0,
        Framing::LzoStub => 1,
        Framing::StubV2 => 2,
    }
}

fn put_negotiated(w: &mut Writer, n: &Negotiated) {
    let flags = u8::from(n.push_cipher)
        | u8::from(n.ekm) << 1
        | u8::from(n.cc_exit) << 2
        | u8::from(n.data_v2) << 3
        | u8::from(n.request_push) << 4;
    w.str(n.cipher.name()).u8(flags).u16(n.tun_mtu.unwrap_or(0)).u8(framing_code(n.framing));
}

fn get_negotiated(r: &mut Reader<'_>) -> Result<Negotiated, DecodeError> {
    let cipher = Cipher::from_name(r.str()?).ok_or(DecodeError("unknown cipher"))?;
    let flags = r.u8()?;
    let mtu = r.u16()?;
    let framing = match r.u8()? {
        0 => Framing::None,
        1 => Framing::LzoStub,
        2 => Framing::StubV2,
        _ => return Err(DecodeError("unknown framing")),
    };
    Ok(Negotiated {
        cipher,
        push_cipher: flags & 1 != 0,
        ekm: flags & 2 != 0,
        cc_exit: flags & 4 != 0,
        data_v2: flags & 8 != 0,
        request_push: flags & 16 != 0,
        tun_mtu: (mtu != 0).then_some(mtu),
        framing,
    })
}

impl Progress {
    fn put(&self, w: &mut Writer) {
        w.u32(self.wrap_send.0).u32(self.wrap_send.1);
        put_window(w, self.wrap_recv);
        w.u64(self.bytes_in).u64(self.bytes_out).u8(self.keys.len() as u8);
        for k in &self.keys {
            w.u8(k.key_id).u32(k.send);
            put_window(w, k.recv);
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Progress, DecodeError> {
        let wrap_send = (r.u32()?, r.u32()?);
        let wrap_recv = get_window(r)?;
        let (bytes_in, bytes_out) = (r.u64()?, r.u64()?);
        let n = r.u8()?;
        let keys = (0..n)
            .map(|_| Ok(KeyProgress { key_id: r.u8()?, send: r.u32()?, recv: get_window(r)? }))
            .collect::<Result<_, DecodeError>>()?;
        Ok(Progress { wrap_send, wrap_recv, keys, bytes_in, bytes_out })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        self.put(&mut w);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> Result<Progress, DecodeError> {
        let mut r = Reader::new(b);
        if r.u8()? != VERSION {
            return Err(DecodeError("unsupported progress version"));
        }
        // Fields a newer version appends are ignored.
        Progress::get(&mut r)
    }
}

impl SessionRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        field(&mut w, tag::PEER, |v| put_addr(v, self.peer));
        field(&mut w, tag::LISTENER, |v| {
            v.u8(self.listener);
        });
        field(&mut w, tag::PEER_ID, |v| {
            v.u32(self.peer_id);
        });
        field(&mut w, tag::SIDS, |v| {
            v.0.extend_from_slice(&self.local_sid);
            v.0.extend_from_slice(&self.remote_sid);
        });
        field(&mut w, tag::COMMON_NAME, |v| {
            v.str(&self.common_name);
        });
        field(&mut w, tag::VIRTUAL_IP, |v| v.0.extend_from_slice(&self.virtual_ip.octets()));
        field(&mut w, tag::NEGOTIATED, |v| put_negotiated(v, &self.negotiated));
        field(&mut w, tag::TIMES, |v| {
            v.u64(self.connected_since).u64(self.last_rekey);
        });
        for k in &self.keys {
            field(&mut w, tag::KEY, |v| {
                v.u8(k.key_id).0.extend_from_slice(&k.key2);
                v.u32(k.send);
                put_window(v, k.recv);
                v.u8(k.senders).u32(k.age).u32(k.expires_in);
            });
        }
        field(&mut w, tag::PROGRESS, |v| self.progress.put(v));
        if let Some(wkc) = &self.wkc {
            field(&mut w, tag::WKC, |v| v.0.extend_from_slice(wkc));
        }
        if let Some(u) = &self.username {
            field(&mut w, tag::USERNAME, |v| {
                v.str(u);
            });
        }
        if let Some(a) = self.virtual_ip6 {
            field(&mut w, tag::VIRTUAL_IP6, |v| v.0.extend_from_slice(&a.octets()));
        }
        if let Some(t) = self.token_issued {
            field(&mut w, tag::TOKEN_ISSUED, |v| {
                v.u64(t);
            });
        }
        w.finish()
    }

    pub fn decode(b: &[u8]) -> Result<SessionRecord, DecodeError> {
        let mut r = Reader::new(b);
        if r.u8()? != VERSION {
            return Err(DecodeError("unsupported session record version"));
        }
        let (mut peer, mut listener, mut peer_id, mut sids, mut cn, mut vip, mut neg, mut times, mut progress) =
            (None, None, None, None, None, None, None, None, None);
        let (mut keys, mut wkc) = (Vec::new(), None);
        let (mut username, mut token_issued, mut vip6) = (None, None, None);
        while let Ok(t) = r.u8() {
            let mut v = Reader::new(r.bytes()?);
            match t {
                tag::WKC => wkc = Some(get_wkc(&mut v)?),
                tag::PEER => peer = Some(get_addr(&mut v)?),
                tag::LISTENER => listener = Some(v.u8()?),
                tag::PEER_ID => peer_id = Some(v.u32()?),
                tag::SIDS => sids = Some((get_array::<8>(&mut v)?, get_array::<8>(&mut v)?)),
                tag::COMMON_NAME => cn = Some(v.str()?.to_string()),
                tag::VIRTUAL_IP => vip = Some(Ipv4Addr::from(get_array::<4>(&mut v)?)),
                tag::NEGOTIATED => neg = Some(get_negotiated(&mut v)?),
                tag::TIMES => times = Some((v.u64()?, v.u64()?)),
                tag::KEY => keys.push(KeyRecord {
                    key_id: v.u8()?,
                    key2: get_array::<256>(&mut v)?,
                    send: v.u32()?,
                    recv: get_window(&mut v)?,
                    senders: v.u8()?,
                    age: v.u32()?,
                    expires_in: v.u32()?,
                }),
                tag::PROGRESS => progress = Some(Progress::get(&mut v)?),
                tag::USERNAME => username = Some(v.str()?.to_string()),
                tag::TOKEN_ISSUED => token_issued = Some(v.u64()?),
                tag::VIRTUAL_IP6 => vip6 = Some(Ipv6Addr::from(get_array::<16>(&mut v)?)),
                _ => {}
            }
        }
        let missing = DecodeError("session record lacks a required field");
        let (local_sid, remote_sid) = sids.ok_or(missing.clone())?;
        let (connected_since, last_rekey) = times.ok_or(missing.clone())?;
        // At most a lame duck and a primary, each key_id once.
        if keys.is_empty()
            || keys.len() > 2
            || keys.iter().any(|k| k.key_id > 7)
            || keys.windows(2).any(|w| w[0].key_id == w[1].key_id)
        {
            return Err(DecodeError("session record without valid keys"));
        }
        Ok(SessionRecord {
            peer: peer.ok_or(missing.clone())?,
            listener: listener.ok_or(missing.clone())?,
            peer_id: peer_id.filter(|p| *p < crate::wire::NO_PEER_ID).ok_or(missing.clone())?,
            local_sid,
            remote_sid,
            common_name: cn.ok_or(missing.clone())?,
            virtual_ip: vip.ok_or(missing.clone())?,
            virtual_ip6: vip6,
            negotiated: neg.ok_or(missing.clone())?,
            connected_since,
            last_rekey,
            keys,
            progress: progress.ok_or(missing)?,
            wkc,
            username,
            token_issued,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> SessionRecord {
        SessionRecord {
            peer: "198.18.0.101:40000".parse().unwrap(),
            listener: 0,
            peer_id: 3,
            local_sid: [1; 8],
            remote_sid: [2; 8],
            common_name: "alice".into(),
            virtual_ip: Ipv4Addr::new(10, 8, 0, 2),
            virtual_ip6: None,
            negotiated: Negotiated {
                cipher: Cipher::Aes256Gcm,
                push_cipher: true,
                ekm: true,
                cc_exit: true,
                data_v2: true,
                request_push: true,
                tun_mtu: Some(1500),
                framing: Framing::None,
            },
            connected_since: 1_700_000_000,
            last_rekey: 0,
            username: None,
            token_issued: None,
            keys: vec![KeyRecord {
                key_id: 1,
                key2: [7; 256],
                send: 1000,
                recv: (0, 900, 0xffff),
                senders: 1,
                age: 30,
                expires_in: 0,
            }],
            progress: Progress {
                wrap_send: (12, 1_700_000_000),
                wrap_recv: (1_700_000_001, 20, 3),
                keys: vec![KeyProgress { key_id: 1, send: 1000, recv: (0, 900, 0xffff) }],
                bytes_in: 5,
                bytes_out: 6,
            },
            wkc: None,
        }
    }

    #[test]
    fn round_trips() {
        let r = sample();
        assert_eq!(SessionRecord::decode(&r.encode()).unwrap(), r);
        let p = r.progress.clone();
        assert_eq!(Progress::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn wkc_is_optional() {
        let with = SessionRecord { wkc: Some(vec![5; 400]), ..sample() };
        let b = with.encode();
        assert_eq!(SessionRecord::decode(&b).unwrap(), with);
        assert_eq!(b.len(), sample().encode().len() + 5 + 400);
        let long = SessionRecord { wkc: Some(vec![5; 1025]), ..sample() };
        assert!(SessionRecord::decode(&long.encode()).is_err());
    }

    #[test]
    fn the_user_and_token_travel_and_are_optional() {
        let r = SessionRecord { username: Some("bob".into()), token_issued: Some(1_700_000_100), ..sample() };
        assert_eq!(SessionRecord::decode(&r.encode()).unwrap(), r);
        // A record without them (an older member's) decodes with none.
        assert_eq!(SessionRecord::decode(&sample().encode()).unwrap().username, None);
    }

    #[test]
    fn the_ipv6_address_travels_and_is_optional() {
        let r = SessionRecord { virtual_ip6: Some("fd00:8::2".parse().unwrap()), ..sample() };
        let b = r.encode();
        assert_eq!(SessionRecord::decode(&b).unwrap(), r);
        assert_eq!(b.len(), sample().encode().len() + 5 + 16);
        assert_eq!(SessionRecord::decode(&sample().encode()).unwrap().virtual_ip6, None);
        let mut short = sample().encode();
        short.extend_from_slice(&[40, 0, 0, 0, 4, 1, 2, 3, 4]);
        assert!(SessionRecord::decode(&short).is_err(), "a truncated IPv6 address is refused");
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut b = sample().encode();
        b.extend_from_slice(&[200, 0, 0, 0, 3, 9, 9, 9]);
        assert_eq!(SessionRecord::decode(&b).unwrap(), sample());
    }

    #[test]
    fn refuses_truncation_and_missing_fields() {
        let b = sample().encode();
        for n in 0..b.len() {
            assert!(SessionRecord::decode(&b[..n]).is_err(), "prefix of {n} bytes accepted");
        }
        assert!(SessionRecord::decode(&[2]).is_err());
        assert!(Progress::decode(&[1, 0]).is_err());
    }

    #[test]
    fn debug_hides_keys() {
        let s = format!("{:?}", sample());
        assert!(s.contains("alice") && !s.contains("[7, 7"));
    }
}
