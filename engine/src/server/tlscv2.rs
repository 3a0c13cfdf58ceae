//! tls-crypt-v2 in the session table (protocol reference §4.2): the
//! HARD_RESET_CLIENT_V3 that starts a session with the client's own key,
//! and the wrapping of a session installed from a record.
//!
//! A 2.6 client that negotiates early (crate::earlyneg) gets the answer
//! of the HMAC cookie (crate::cookie), keyed by the server key: a
//! HARD_RESET_SERVER_V2 wrapped with its own key and asking it to resend
//! its WKc; the server keeps nothing until the client's P_CONTROL_WKC_V1
//! acknowledges that reset under the cookie and brings the WKc again, as
//! a 2.6 server does. A client that does not negotiate early (2.5) would
//! go on with plain P_CONTROL_V1 packets, which do not carry its key: for
//! it the server keeps state from the V3 reset on (the per-client wrapper
//! in the session) and answers with an empty HARD_RESET_SERVER_V2. In
//! both cases CONTROL_WKC_V1 packets of a session must carry the session's
//! own WKc ([`Wrapper`] strips it).

use std::net::SocketAddr;

use super::{Refusal, Server};
use crate::record::SessionRecord;
use crate::session::Now;
use crate::wire::Opcode;
use crate::wrap::Wrapper;

impl Server {
    /// A HARD_RESET_CLIENT_V3: the client's wrapper from its WKc, then the
    /// first-packet path of every reset (authentication, admission rules).
    /// A WKc that does not unwrap is a counted, rate-limited refusal.
    pub(super) fn on_hard_reset_v3(
        &mut self,
        now: Now,
        listener: usize,
        from: SocketAddr,
        known: Option<u32>,
        packet: &[u8],
    ) -> Option<()> {
        match self.wrap.for_v3_reset(packet) {
            Ok(template) => self.on_hard_reset(now, listener, from, known, packet, template),
            Err(e) => {
                self.refuse(now, from, format_args!("tls-crypt-v2: {e}"));
                None
            }
        }
    }

    /// What the stateless answer to a first reset wrapped by `template`
    /// with replay id `id` carries; `None` when the server keeps state
    /// instead (no cookie key, or a tls-crypt-v2 client that would not
    /// send its key again).
    pub(super) fn stateless_payload(&self, template: &Wrapper, id: u32) -> Option<&'static [u8]> {
        self.cookie.as_ref()?;
        match template.wkc() {
            None => Some(&[]),
            Some(_) => crate::earlyneg::signalled(id).then_some(&crate::earlyneg::ASK_RESEND_WKC[..]),
        }
    }

    /// The wrapping a packet of no session is checked with for a cookie:
    /// the server's, or for a P_CONTROL_WKC_V1 the client's own from the
    /// WKc it ends in (one that does not unwrap is a counted refusal).
    pub(super) fn cookie_wrapper(
        &mut self,
        now: Now,
        from: SocketAddr,
        opcode: Opcode,
        packet: &[u8],
    ) -> Option<Wrapper> {
        if opcode != Opcode::ControlWkcV1 {
            return Some(self.wrap.clone());
        }
        match self.wrap.for_v3_reset(packet) {
            Ok(w) => Some(w),
            Err(e) => {
                self.refuse(now, from, format_args!("tls-crypt-v2: {e}"));
                None
            }
        }
    }

    /// The wrapping a session from `rec` starts from: under tls-crypt-v2
    /// the client's, unwrapped from the WKc the record carries.
    pub(super) fn ghost_wrapper(&self, rec: &SessionRecord) -> Result<Wrapper, Refusal> {
        match (&rec.wkc, self.wrap.is_tls_crypt_v2_server()) {
            (None, false) => Ok(self.wrap.clone()),
            (Some(wkc), true) => self
                .wrap
                .with_client_key(wkc)
                .map_err(|_| Refusal::Invalid("its tls-crypt-v2 client key does not unwrap with our server key")),
            (None, true) => Err(Refusal::Invalid("it has no tls-crypt-v2 client key and tls-crypt-v2 is configured")),
            (Some(_), false) => {
                Err(Refusal::Invalid("it has a tls-crypt-v2 client key and tls-crypt-v2 is not configured"))
            }
        }
    }
}
