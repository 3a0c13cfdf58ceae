//! OpenVPN 2.6's stateless first packet (the "HMAC cookie"): with
//! tls-auth/tls-crypt the server answers a client's first reset with a
//! HARD_RESET_SERVER_V2 whose session id is a keyed HMAC of the client's
//! address and session id and the time slot, and makes a session only
//! when the client's next packet acknowledges that reset under that
//! session id. Until then the server holds nothing for the client, so a
//! flood of resets costs answers, not memory. With tls-crypt-v2 the same
//! holds for a client that negotiates early (crate::earlyneg): its next
//! packet, a P_CONTROL_WKC_V1, carries its wrapped key again.
//!
//! The key is derived from the tls-auth/tls-crypt key or the tls-crypt-v2
//! server key, which every member of a cluster holds identically (never a
//! per-process random as in OpenVPN): a client that got its answer from
//! one member completes its handshake with whichever member has the
//! address when it answers.

use std::net::SocketAddr;

use ring::hmac;

use crate::wrap::Wrapper;

/// Seconds per time slot: half of `--hand-window` (60 s), as OpenVPN.
pub const SLOT: u64 = crate::session::HAND_WINDOW.as_secs().div_ceil(2);

/// What the cookie key is derived under, so it is no other key's twin.
const LABEL: &[u8] = b"vpnsyncd hmac cookie v1";

/// The cluster's cookie key.
pub struct CookieKey(hmac::Key);

impl CookieKey {
    /// The key for `wrap`; `None` without tls-auth/tls-crypt/tls-crypt-v2
    /// (then the first packet is anyone's and the half-open table applies).
    pub fn derive(wrap: &Wrapper) -> Option<CookieKey> {
        let secret = wrap.derive_secret(LABEL)?;
        Some(CookieKey(hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref())))
    }

    /// Our session id for client session `client` at `from` in `slot`.
    fn sid(&self, slot: u64, from: SocketAddr, client: &[u8; 8]) -> [u8; 8] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(&(slot as u32).to_be_bytes());
        match from.ip() {
            std::net::IpAddr::V4(a) => ctx.update(&a.octets()),
            std::net::IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&from.port().to_be_bytes());
        ctx.update(client);
        let tag = ctx.sign();
        let mut sid = [0; 8];
        sid.copy_from_slice(&tag.as_ref()[..8]);
        sid
    }

    /// The session id to answer `client` at `from` with at Unix time `unix`.
    pub fn issue(&self, unix: u64, from: SocketAddr, client: &[u8; 8]) -> [u8; 8] {
        self.sid(unix / SLOT, from, client)
    }

    /// Whether `cookie` was issued to `client` at `from` in the current or
    /// the previous slot (so an answer stays good 30 to 60 s).
    pub fn check(&self, unix: u64, from: SocketAddr, client: &[u8; 8], cookie: &[u8; 8]) -> bool {
        let slot = unix / SLOT;
        [slot, slot.saturating_sub(1)].into_iter().any(|s| {
            // Constant time: the comparison must not leak a valid prefix.
            self.sid(s, from, client).iter().zip(cookie).fold(0, |d, (a, b)| d | (a ^ b)) == 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrap::StaticKey;
    use vpnsyncd_config::Digest;

    fn key(fill: u8) -> CookieKey {
        let w = Wrapper::tls_auth(&StaticKey([fill; 256]), Some(0), Digest::Sha256);
        CookieKey::derive(&w).expect("tls-auth has a cookie key")
    }

    #[test]
    fn a_cookie_holds_for_its_slot_and_the_next_only() {
        let (k, from, c) = (key(1), "192.0.2.1:1194".parse().unwrap(), [9; 8]);
        let t = 1_790_000_010;
        let cookie = k.issue(t, from, &c);
        assert!(k.check(t, from, &c, &cookie));
        assert!(k.check(t + SLOT, from, &c, &cookie), "the previous slot");
        assert!(!k.check(t + 2 * SLOT, from, &c, &cookie), "two slots later");
        assert!(!k.check(t - SLOT, from, &c, &cookie), "a slot ahead");
        assert!(!k.check(t, "192.0.2.1:1195".parse().unwrap(), &c, &cookie), "another port");
        assert!(!k.check(t, "192.0.2.2:1194".parse().unwrap(), &c, &cookie), "another address");
        assert!(!k.check(t, from, &[8; 8], &cookie), "another client session");
        assert!(!key(2).check(t, from, &c, &cookie), "another tls-auth key");
        assert!(key(1).check(t, from, &c, &cookie), "the same key elsewhere (another member)");
        assert!(CookieKey::derive(&Wrapper::none()).is_none(), "no wrapping, no cookie");
        let crypt = Wrapper::tls_crypt(&StaticKey([1; 256]), true);
        assert!(CookieKey::derive(&crypt).is_some());
    }
}
