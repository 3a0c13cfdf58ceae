//! Session tokens (`password token`, OpenVPN's `auth-gen-token`): after a
//! password check accepts a client, the server pushes `auth-token TOKEN`;
//! the client then sends the token as its password on every
//! renegotiation and reconnect, and the server checks it itself, so a user
//! with a one-time password is not asked again.
//!
//! The token is `vsd1-` and the hex of: the issue time (Unix seconds, 8
//! bytes) and HMAC-SHA256(key, username NUL common name NUL issue time).
//! It is stateless: any member holding the cluster's token key (derived by
//! the parent from the sync key) checks it, so after a takeover the new
//! master accepts the renegotiations of the old one's clients. 85
//! characters: within the 128 bytes of a stock client's password field.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const PREFIX: &str = "vsd1-";
/// A token from a clock slightly ahead (another member) is still good.
const CLOCK_SKEW: u64 = 300;

/// The cluster's token key and how long a token lives.
#[derive(Clone)]
pub struct TokenKey {
    key: zeroize::Zeroizing<[u8; 32]>,
    pub lifetime: u64,
}

/// Never prints the key.
impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl TokenKey {
    /// `None` unless `key` is the 32 bytes the parent derives.
    pub fn new(key: &[u8], lifetime: u64) -> Option<TokenKey> {
        Some(TokenKey { key: zeroize::Zeroizing::new(key.try_into().ok()?), lifetime })
    }

    /// The HMAC over what a token vouches for, before finalizing.
    fn mac(&self, username: &str, common_name: &str, issued: u64) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key[..]).expect("any key length");
        m.update(username.as_bytes());
        m.update(&[0]);
        m.update(common_name.as_bytes());
        m.update(&[0]);
        m.update(&issued.to_be_bytes());
        m
    }

    /// The token for a user, issued at `issued`.
    pub fn issue(&self, username: &str, common_name: &str, issued: u64) -> String {
        let mut s = String::from(PREFIX);
        for b in
            issued.to_be_bytes().iter().chain(self.mac(username, common_name, issued).finalize().into_bytes().iter())
        {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The issue time of a genuine, unexpired token of this user.
    pub fn check(&self, token: &[u8], username: &str, common_name: &str, now: u64) -> Option<u64> {
        let hex = std::str::from_utf8(token).ok()?.strip_prefix(PREFIX)?;
        if hex.len() != 80 || !hex.is_ascii() {
            return None;
        }
        let bytes: Vec<u8> =
            (0..40).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect::<Option<_>>()?;
        let issued = u64::from_be_bytes(bytes[..8].try_into().ok()?);
        // Constant-time comparison.
        self.mac(username, common_name, issued).verify_slice(&bytes[8..]).ok()?;
        (issued <= now + CLOCK_SKEW && now < issued.saturating_add(self.lifetime)).then_some(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_user_name_key_and_lifetime() {
        let k = TokenKey::new(&[7; 32], 600).unwrap();
        let t = k.issue("bob", "alice", 1000);
        assert!(t.len() <= 127, "fits a client's password field: {}", t.len());
        assert_eq!(k.check(t.as_bytes(), "bob", "alice", 1000), Some(1000));
        assert_eq!(k.check(t.as_bytes(), "bob", "alice", 1599), Some(1000));
        assert_eq!(k.check(t.as_bytes(), "bob", "alice", 1600), None, "expired");
        assert_eq!(k.check(t.as_bytes(), "eve", "alice", 1000), None, "another user");
        assert_eq!(k.check(t.as_bytes(), "bob", "mallory", 1000), None, "another certificate");
        let other = TokenKey::new(&[8; 32], 600).unwrap();
        assert_eq!(other.check(t.as_bytes(), "bob", "alice", 1000), None, "another cluster's key");
        // A forged issue time (extending the life) breaks the HMAC.
        let forged = t.replacen("00000000000003e8", "00000000000007d0", 1);
        assert_ne!(forged, t);
        assert_eq!(k.check(forged.as_bytes(), "bob", "alice", 2000), None);
        for bad in ["", "vsd1-", "password", &t[..t.len() - 1], &format!("{t}0"), &t.replace("vsd1-", "vsd2-")] {
            assert_eq!(k.check(bad.as_bytes(), "bob", "alice", 1000), None, "{bad:?}");
        }
        assert!(TokenKey::new(&[1; 31], 600).is_none());
    }
}
