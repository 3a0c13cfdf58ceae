//! Received data-channel packets: decryption must refuse, never panic, for
//! every cipher and digest, and a packet this key built must come back.
#![no_main]

use vpnsyncd_config::{Cipher, Digest};
use vpnsyncd_engine::data::{classify, DataHeader, DataKey};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key2 = [0x5a; 256];
    for cipher in Cipher::ALL {
        for auth in Digest::ALL {
            let mut server = DataKey::new(cipher, auth, &key2, true);
            if let Ok(payload) = server.decrypt(&mut data.to_vec()) {
                let _ = classify(payload);
            }
            if data.len() > 65535 {
                continue;
            }
            // A fresh receiver: a forged packet above may have moved the window.
            let mut server = DataKey::new(cipher, auth, &key2, true);
            let mut client = DataKey::new(cipher, auth, &key2, false);
            let hdr = DataHeader {
                key_id: data.first().copied().unwrap_or(0),
                peer_id: data.len().is_multiple_of(2).then_some(data.len() as u32),
            };
            let mut out = vec![0; data.len() + client.overhead(true)];
            let n = client.encrypt(hdr, data, &mut out).expect("buffer is large enough");
            assert_eq!(server.decrypt(&mut out[..n]).ok(), Some(data));
        }
    }
});
