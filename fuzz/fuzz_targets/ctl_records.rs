//! Control records and results as vpnsyncctl decodes them.
#![no_main]

use vpnsyncd_common::ctl::{decode_result, ClientInfo, Summary, SyncInfo};
use vpnsyncd_common::msg::ImsgType;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = Summary::decode(data);
    let _ = ClientInfo::decode(data);
    let _ = SyncInfo::decode(data);
    let _ = decode_result(data);
    if data.len() >= 4 {
        let _ = ImsgType::from_u32(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]));
    }
});
