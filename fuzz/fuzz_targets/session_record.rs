//! Session records and progress as a backup's engine decodes them from the
//! syncer: errors, never panics; what decodes re-encodes to a record that
//! decodes the same.
#![no_main]

use vpnsyncd_engine::record::{Progress, SessionRecord};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SessionRecord::decode(data) {
        assert_eq!(SessionRecord::decode(&r.encode()).ok(), Some(r));
    }
    let _ = Progress::decode(data);
});
