//! Management command lines as the engine reads them (lossy UTF-8, one
//! line at a time): parsing never panics, never yields more than
//! `MAX_WORDS` words, and a line of blanks is the empty command.
#![no_main]

use vpnsyncd_engine::mgmt::command::{parse, words, Command, MAX_WORDS};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        let w = words(line);
        assert!(w.len() <= MAX_WORDS);
        let cmd = parse(line);
        if line.chars().all(char::is_whitespace) {
            assert_eq!(cmd, Command::Empty);
        }
    }
});
