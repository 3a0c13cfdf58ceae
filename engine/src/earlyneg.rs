//! OpenVPN 2.6's early negotiation (protocol reference §4.2, §6.4): a
//! tls-crypt-v2 client that starts its replay ids at [`START`] says that
//! it reads TLVs in the server's reset, and the server's
//! `EARLY_NEG_FLAGS` TLV with [`RESEND_WKC`] asks it to send its wrapped
//! key (WKc) again in its next packet, a P_CONTROL_WKC_V1: the server can
//! then answer the reset without keeping the client's key, as it answers
//! any first packet with an HMAC cookie (crate::cookie).
//!
//! Only clients that signalled it get TLVs: 2.4 and 2.5 clients feed the
//! reset's payload to TLS.

/// The first replay id of a client that negotiates early, less one (the id
/// is counted up before its first use, so its reset carries 0x0f000001).
pub const START: u32 = 0x0f00_0000;

/// TLV type of the flags.
const EARLY_NEG_FLAGS: u16 = 0x0001;

/// The flag that asks for the WKc in the client's next packet.
pub const RESEND_WKC: u16 = 0x0001;

/// Whether a reset with replay id `id` comes from a client that
/// negotiates early (the bits of [`START`] all set, as OpenVPN tests).
pub fn signalled(id: u32) -> bool {
    id & START == START
}

/// The reset payload that asks for the WKc again.
pub const ASK_RESEND_WKC: [u8; 6] = {
    let (t, f) = (EARLY_NEG_FLAGS.to_be_bytes(), RESEND_WKC.to_be_bytes());
    [t[0], t[1], 0, 2, f[0], f[1]]
};

/// A TLV list that ends inside a TLV, or flags that are not 2 bytes:
/// fatal to the handshake in OpenVPN.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed early negotiation TLVs in the server's reset")
    }
}

/// The EARLY_NEG_FLAGS of a reset payload (0 without them); unknown types
/// are skipped.
pub fn flags(mut payload: &[u8]) -> Result<u16, Malformed> {
    let mut flags = 0;
    while !payload.is_empty() {
        let [t0, t1, l0, l1, rest @ ..] = payload else { return Err(Malformed) };
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let value = rest.get(..len).ok_or(Malformed)?;
        if u16::from_be_bytes([*t0, *t1]) == EARLY_NEG_FLAGS {
            let [a, b] = value else { return Err(Malformed) };
            flags = u16::from_be_bytes([*a, *b]);
        }
        payload = &rest[len..];
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ask_is_what_a_2_6_server_sends() {
        // The server reset payload of the lab capture (reference §4.2).
        assert_eq!(ASK_RESEND_WKC, [0x00, 0x01, 0x00, 0x02, 0x00, 0x01]);
        assert_eq!(flags(&ASK_RESEND_WKC), Ok(RESEND_WKC));
    }

    #[test]
    fn the_signal_is_the_replay_id_prefix() {
        assert!(signalled(0x0f00_0001));
        assert!(signalled(0xff00_0002));
        assert!(!signalled(1));
        assert!(!signalled(0x0e00_0001));
    }

    #[test]
    fn unknown_types_are_skipped_and_truncations_refused() {
        assert_eq!(flags(&[]), Ok(0));
        let other = [0x00, 0x07, 0x00, 0x03, 1, 2, 3];
        assert_eq!(flags(&[&other[..], &ASK_RESEND_WKC].concat()), Ok(RESEND_WKC));
        assert_eq!(flags(&other), Ok(0));
        for n in 1..ASK_RESEND_WKC.len() {
            assert_eq!(flags(&ASK_RESEND_WKC[..n]), Err(Malformed), "{n} bytes");
        }
        assert_eq!(flags(&[0, 1, 0, 3, 0, 1, 0]), Err(Malformed), "flags of 3 bytes");
    }
}
