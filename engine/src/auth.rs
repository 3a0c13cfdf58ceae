//! Username/password checks (`password` in vpnsyncd.conf(5)). The engine
//! is confined and chrooted: a client's key-method-2 credentials go to the
//! privileged parent as an `AuthCheck` imsg, and the session waits, without
//! an address, for the `AuthVerdict`. Waits are bounded twice: at most
//! [`MAX_PENDING`] checks at once (a client beyond that is refused at
//! once) and each check expires after the configured timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vpnsyncd_common::auth::{AuthCheck, AuthVerdict};
use vpnsyncd_common::secret::Secret;

/// Checks waiting for the parent at most: enough for a reconnect storm of
/// a large server behind one slow script, small enough that a flood of
/// handshakes cannot queue unbounded work in the parent.
pub const MAX_PENDING: usize = 256;

/// How the sessions of a server check passwords.
#[derive(Clone, Debug)]
pub struct PasswordSettings {
    /// A check without a verdict by then refuses the client.
    pub timeout: Duration,
    /// `password token`: tokens are issued and accepted.
    pub token: Option<crate::token::TokenKey>,
}

/// Credentials a session asks the server to have checked.
pub struct Credentials {
    pub username: Secret,
    pub password: Secret,
}

/// What a session knows of its user.
#[derive(Default)]
pub struct SessionAuth {
    /// The username a check accepted; shown by `vpnsyncctl show clients`.
    pub username: Option<String>,
    /// Credentials for the server to send to the parent.
    pub to_check: Option<Credentials>,
    /// A check is under way: the session has no address yet.
    pub waiting: bool,
    /// The username of the check under way.
    claimed: Option<String>,
    /// When the session's token was issued (Unix seconds): the token
    /// pushed is made from it, on any member.
    pub token_issued: Option<u64>,
}

impl SessionAuth {
    /// Moves the credentials out of a client's key-method message, so that
    /// only zeroized copies remain.
    pub fn credentials(km: &mut crate::keys::KeyMethod2) -> Credentials {
        Credentials {
            username: Secret::new(std::mem::take(&mut km.username).into_bytes()),
            password: Secret::new(std::mem::take(&mut km.password).into_bytes()),
        }
    }

    /// A key exchange brought credentials: they go to the parent.
    pub fn check(&mut self, c: Credentials) {
        self.claimed = Some(String::from_utf8_lossy(&c.username).into_owned());
        self.to_check = Some(c);
        self.waiting = true;
    }
}

impl SessionAuth {
    /// The check under way accepted its username; with tokens on, one is
    /// issued now.
    pub fn accept(&mut self, settings: Option<&PasswordSettings>, now: u64) {
        self.username = self.claimed.take();
        if settings.is_some_and(|s| s.token.is_some()) {
            self.token_issued = Some(now);
        }
    }

    /// Whether `c` carries a genuine token of this session's user (any
    /// user before the first check): then no check is needed, and the
    /// token is renewed (issued `now`), so that a client that renegotiates
    /// more often than the lifetime never meets its end.
    pub fn by_token(
        &mut self,
        settings: Option<&PasswordSettings>,
        c: &Credentials,
        common_name: &str,
        now: u64,
    ) -> bool {
        let Some(key) = settings.and_then(|s| s.token.as_ref()) else { return false };
        let user = String::from_utf8_lossy(&c.username);
        if self.username.as_deref().is_some_and(|u| u != user) {
            return false;
        }
        if key.check(&c.password, &user, common_name, now).is_none() {
            return false;
        }
        self.username = Some(user.into_owned());
        self.token_issued = Some(now);
        true
    }

    /// The `auth-token` option of the push reply, once one was issued.
    pub fn push_option(&self, settings: Option<&PasswordSettings>, common_name: &str) -> Option<String> {
        let key = settings?.token.as_ref()?;
        Some(format!("auth-token {}", key.issue(self.username.as_deref()?, common_name, self.token_issued?)))
    }
}

/// One check sent to the parent.
struct Pending {
    /// The session's peer-id and local session id: a peer-id can be
    /// reused by another session before the verdict comes.
    session: (u32, [u8; 8]),
    deadline: Instant,
}

/// The checks of a server that wait for the parent.
#[derive(Default)]
pub struct Checks {
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// Requests for the parent, drained by the event loop.
    pub out: Vec<AuthCheck>,
}

impl Checks {
    /// Queues a check; `false` when [`MAX_PENDING`] already wait.
    pub fn submit(
        &mut self,
        session: (u32, [u8; 8]),
        creds: Credentials,
        (common_name, peer): (&str, SocketAddr),
        deadline: Instant,
    ) -> bool {
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.pending.insert(id, Pending { session, deadline });
        self.out.push(AuthCheck {
            id,
            username: creds.username,
            password: creds.password,
            common_name: common_name.to_string(),
            peer,
        });
        true
    }

    /// The session a verdict is for; `None` for an unknown or expired id.
    pub fn answered(&mut self, v: &AuthVerdict) -> Option<(u32, [u8; 8])> {
        self.pending.remove(&v.id).map(|p| p.session)
    }

    /// Removes and returns the sessions whose check timed out.
    pub fn expired(&mut self, now: Instant) -> Vec<(u32, [u8; 8])> {
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| self.pending.remove(&id)).map(|p| p.session).collect()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials { username: Secret::new(b"u".to_vec()), password: Secret::new(b"p".to_vec()) }
    }

    #[test]
    fn checks_are_capped_answered_once_and_expire() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        for i in 0..MAX_PENDING as u32 {
            assert!(c.submit((i, [0; 8]), creds(), ("cn", peer), t0 + Duration::from_secs(u64::from(i % 2) + 1)));
        }
        assert!(!c.submit((999, [0; 8]), creds(), ("cn", peer), t0), "the cap holds");
        let first = AuthVerdict { id: c.out[0].id, accepted: true, reason: String::new() };
        assert_eq!(c.answered(&first), Some((0, [0; 8])));
        assert_eq!(c.answered(&first), None, "a verdict counts once");
        let gone = c.expired(t0 + Duration::from_secs(1));
        assert_eq!(gone.len(), MAX_PENDING / 2 - 1);
        assert!(gone.iter().all(|(i, _)| i % 2 == 0));
        assert_eq!(c.pending(), MAX_PENDING / 2);
    }
}
