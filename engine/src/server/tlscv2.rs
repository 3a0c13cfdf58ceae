//! tls-crypt-v2 in the session table (protocol reference §4.2): the
//! HARD_RESET_CLIENT_V3 that starts a session with the client's own key,
//! and the wrapping of a session installed from a record.
//!
//! The server keeps state from the V3 reset on: it unwraps the client's
//! WKc once, keeps the per-client wrapper in the session and answers with
//! an empty HARD_RESET_SERVER_V2 (no EARLY_NEG_FLAGS), so a 2.6 client that
//! signalled early negotiation goes on with plain P_CONTROL_V1 packets.
//! CONTROL_WKC_V1 packets are still accepted (their WKc must be the
//! session's own; [`Wrapper`] strips it).

use std::net::SocketAddr;

use super::{Refusal, Server};
use crate::record::SessionRecord;
use crate::session::Now;
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
    ) -> Option<&'static [u8]> {
        match self.wrap.for_v3_reset(packet) {
            Ok(template) => self.on_hard_reset(now, listener, from, known, packet, template),
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
