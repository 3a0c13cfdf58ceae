//! imsg framing from a peer process: headers, lengths, fd marks.
#![no_main]

use std::io::Write;
use vpnsyncd_common::imsg::{socketpair, ImsgBuf};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (a, b) = socketpair().expect("socketpair");
    let mut raw = std::fs::File::from(a);
    let mut ibuf = ImsgBuf::new(b);
    ibuf.allow_fdpass();
    if raw.write_all(&data[..data.len().min(60000)]).is_err() {
        return;
    }
    drop(raw);
    let _ = ibuf.read();
    while let Ok(Some(_)) = ibuf.get() {}
});
