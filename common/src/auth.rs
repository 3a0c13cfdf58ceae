//! The password check the engine asks of the parent (`AuthCheck`) and the
//! parent's answer (`AuthVerdict`): the engine is chrooted and confined,
//! so scripts run in the privileged parent. The request id pairs them.
//!
//! Usernames and passwords live in [`Secret`]s (zeroized on drop); the
//! encoded request is one too.

use std::net::{IpAddr, SocketAddr};

use crate::codec::{DecodeError, Reader, Writer};
use crate::secret::Secret;

/// OpenVPN's `USER_PASS_LEN` (the larger one): longer credentials are
/// refused by the key-method parser before they get here.
pub const MAX_CREDENTIAL: usize = 4096;
const MAX_NAME: usize = 256;
const MAX_REASON: usize = 512;

/// engine -> parent: check these credentials.
pub struct AuthCheck {
    pub id: u64,
    pub username: Secret,
    pub password: Secret,
    /// The certificate's common name, empty without a client certificate.
    pub common_name: String,
    pub peer: SocketAddr,
}

/// Never prints the credentials.
impl std::fmt::Debug for AuthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCheck").field("id", &self.id).field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl AuthCheck {
    pub fn encode(&self) -> Secret {
        let len = 64 + self.username.len() + self.password.len() + self.common_name.len();
        // Sized up front: no reallocation leaves a copy of the password.
        let mut w = Writer(Vec::with_capacity(len));
        w.u64(self.id).bytes(&self.username).bytes(&self.password).str(&self.common_name);
        match self.peer.ip() {
            IpAddr::V4(a) => w.u8(4).bytes(&a.octets()),
            IpAddr::V6(a) => w.u8(6).bytes(&a.octets()),
        };
        w.u16(self.peer.port());
        Secret::new(w.finish())
    }

    pub fn decode(b: &[u8]) -> Result<AuthCheck, DecodeError> {
        let mut r = Reader::new(b);
        let id = r.u64()?;
        let mut credential = || -> Result<Secret, DecodeError> {
            let v = r.bytes()?;
            if v.len() > MAX_CREDENTIAL {
                return Err(DecodeError("credential too long"));
            }
            Ok(Secret::new(v.to_vec()))
        };
        let (username, password) = (credential()?, credential()?);
        let common_name = r.str()?;
        if common_name.len() > MAX_NAME {
            return Err(DecodeError("common name too long"));
        }
        let family = r.u8()?;
        let addr = r.bytes()?;
        let ip: IpAddr = match (family, addr.len()) {
            (4, 4) => <[u8; 4]>::try_from(addr).expect("length checked").into(),
            (6, 16) => <[u8; 16]>::try_from(addr).expect("length checked").into(),
            _ => return Err(DecodeError("bad peer address")),
        };
        let port = r.u16()?;
        r.end()?;
        Ok(AuthCheck { id, username, password, common_name: common_name.to_string(), peer: SocketAddr::new(ip, port) })
    }
}

/// parent -> engine: the answer; `reason` is for the log (script exit
/// status, timeout), never shown to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthVerdict {
    pub id: u64,
    pub accepted: bool,
    pub reason: String,
}

impl AuthVerdict {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.id).bool(self.accepted).str(&self.reason);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> Result<AuthVerdict, DecodeError> {
        let mut r = Reader::new(b);
        let (id, accepted, reason) = (r.u64()?, r.bool()?, r.str()?);
        if reason.len() > MAX_REASON {
            return Err(DecodeError("verdict reason too long"));
        }
        r.end()?;
        Ok(AuthVerdict { id, accepted, reason: reason.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_and_verdict_round_trip_and_reject_garbage() {
        let c = AuthCheck {
            id: 7,
            username: Secret::new(b"alice".to_vec()),
            password: Secret::new(b"pw".to_vec()),
            common_name: "client1".into(),
            peer: "[2001:db8::1]:1194".parse().unwrap(),
        };
        let b = c.encode();
        let d = AuthCheck::decode(&b).unwrap();
        assert_eq!(
            (d.id, &d.username[..], &d.password[..], d.common_name.as_str(), d.peer),
            (7, &b"alice"[..], &b"pw"[..], "client1", c.peer)
        );
        assert!(!format!("{d:?}").contains("pw"));
        for n in 0..b.len() {
            assert!(AuthCheck::decode(&b[..n]).is_err(), "truncated at {n}");
        }
        let v = AuthVerdict { id: 9, accepted: false, reason: "script exit 1".into() };
        assert_eq!(AuthVerdict::decode(&v.encode()).unwrap(), v);
        let mut long = v.encode();
        long.push(0);
        assert!(AuthVerdict::decode(&long).is_err());
    }
}
