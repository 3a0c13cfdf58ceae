//! Key-method-2 messages and peer-info from TLS: parsing must refuse, never
//! panic, and what parses must encode back to a message that parses equal.
#![no_main]

use vpnsyncd_config::Cipher;
use vpnsyncd_engine::keys::{negotiate_cipher, server_options_string, KeyMethod2, PeerInfo};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for from_client in [true, false] {
        if let Ok(m) = KeyMethod2::parse(data, from_client) {
            assert_eq!(KeyMethod2::parse(&m.encode(), from_client).ok(), Some(m.clone()));
            let peer = PeerInfo::parse(&m.peer_info);
            let _ = negotiate_cipher(&Cipher::ALL, Some(Cipher::Aes256Cbc), &peer, &m.options);
            let _ = server_options_string(&m.options);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PeerInfo::parse(text);
    }
});
