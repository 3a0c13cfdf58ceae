//! vpnsyncd.conf text: the parser reports errors, never panics, and what it
//! accepts prints to a canonical form that parses to the same configuration.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(conf) = vpnsyncd_config::parse_str("fuzz", text, &[]) {
        let printed = conf.to_string();
        assert_eq!(vpnsyncd_config::parse_str("printed", &printed, &[]).ok(), Some(conf));
    }
});
