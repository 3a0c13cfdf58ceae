//! Routing-socket messages as carpwatch parses them on OpenBSD.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vpnsyncd_carpwatch::openbsd::parse_ifinfo(data);
});
