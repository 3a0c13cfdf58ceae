//! tls-crypt-v2 key files and wrapped client keys (WKc) from outside: the
//! PEM parsers and the WKc unwrap never panic; a parsed key file writes
//! back to a file that parses to the same key, and a WKc that unwraps
//! wraps back to the same bytes (the tag and IV depend on nothing else).
#![no_main]

use vpnsyncd_engine::tlscryptv2::{split_wkc, ClientKeyFile, ServerKey};
use vpnsyncd_engine::wrap::Wrapper;

const SERVER_KEY: &str = include_str!("../../engine/src/testdata/tlscv2/server.key");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(k) = ServerKey::parse(data) {
        assert!(ServerKey::parse(k.to_pem().as_bytes()).is_ok_and(|back| back == k));
    }
    if let Ok(c) = ClientKeyFile::parse(data) {
        let back = ClientKeyFile::parse(c.to_pem().as_bytes()).expect("our own PEM parses");
        assert!(back.kc == c.kc && back.wkc == c.wkc);
    }
    let Ok(server) = ServerKey::parse(SERVER_KEY.as_bytes()) else { return };
    if let Ok(client) = server.unwrap_client_key(data) {
        assert_eq!(server.wrap_client_key(&client.kc, &client.metadata).ok().as_deref(), Some(data));
    }
    let _ = split_wkc(data);
    if let Ok(mut w) = Wrapper::tls_crypt_v2_server(server).for_v3_reset(data) {
        let _ = w.unwrap(data);
    }
});
