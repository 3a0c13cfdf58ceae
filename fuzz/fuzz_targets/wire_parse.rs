//! Untrusted datagrams through the packet codec and every unwrapping mode:
//! nothing may panic, and what decodes must encode back to the same bytes.
#![no_main]

use vpnsyncd_config::Digest;
use vpnsyncd_engine::wire::{data_peer_id, ControlPacket};
use vpnsyncd_engine::wrap::{StaticKey, Wrapper};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = data_peer_id(data);
    if let Ok(packet) = ControlPacket::parse(data) {
        let mut wire = vec![packet.first_byte()];
        wire.extend_from_slice(&packet.session_id);
        packet.body.encode(&mut wire);
        assert_eq!(wire, data);
    }
    let _ = StaticKey::parse(data);
    let key = StaticKey([0x5a; 256]);
    let mut wrappers = [
        Wrapper::none(),
        Wrapper::tls_auth(&key, Some(0), Digest::Sha1),
        Wrapper::tls_auth(&key, None, Digest::Sha512),
        Wrapper::tls_crypt(&key, true),
    ];
    for w in &mut wrappers {
        if let Ok((first, sid, body)) = w.unwrap(data) {
            let _ = ControlPacket::decode(first, sid, &body);
        }
    }
});
