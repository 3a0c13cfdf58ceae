//! The monitoring statement (`status`): defaults,
//! the canonical form, and the exact error for each malformed variant.

use vpnsyncd_config::{parse_str, Config, StatusFile, DEFAULT_STATUS_INTERVAL};

const KEYS: &str = "ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n";

fn parse(extra: &str) -> Result<Config, String> {
    parse_str("test.conf", &format!("{KEYS}{extra}\n"), &[]).map_err(|e| e.to_string())
}

#[test]
fn absent_by_default() {
    let c = parse("").unwrap();
    assert_eq!(c.status, None);
}

#[test]
fn status_defaults_and_options_in_any_order() {
    let c = parse("status \"/var/run/vpnsyncd/status\"").unwrap();
    let want = StatusFile { path: "/var/run/vpnsyncd/status".into(), interval: DEFAULT_STATUS_INTERVAL, version: 2 };
    assert_eq!(c.status, Some(want));
    let c = parse("status /s version 3 interval 1").unwrap();
    assert_eq!(c.status, Some(StatusFile { path: "/s".into(), interval: 1, version: 3 }));
}

#[test]
fn canonical_form_round_trips() {
    let c = parse("status \"/a b\" interval 30").unwrap();
    let printed = c.to_string();
    assert!(printed.contains("status \"/a b\" interval 30 version 2\n"), "{printed}");
    assert_eq!(parse_str("again", &printed, &[]).unwrap(), c);
}

#[test]
fn malformed() {
    let cases: &[(&str, &str)] = &[
        ("status", "test.conf:4:7: expected a status file name, found end of line"),
        ("status \"\"", "test.conf:4:8: a status file name is empty"),
        ("status /s interval 0", "test.conf:4:20: status interval \"0\" is not a number from 1 to 3600"),
        ("status /s interval", "test.conf:4:19: expected status interval, found end of line"),
        ("status /s version 1", "test.conf:4:19: status version \"1\" is not a number from 2 to 3"),
        ("status /s version", "test.conf:4:18: expected status version, found end of line"),
        ("status /s interval 3601", "test.conf:4:20: status interval \"3601\" is not a number from 1 to 3600"),
        ("status /s every 5", "test.conf:4:11: syntax error: unexpected \"every\", expected the end of the line"),
        ("status /a\nstatus /b", "test.conf:5:1: status is already set on line 4"),
    ];
    for (text, want) in cases {
        let e = parse(text).expect_err(text);
        assert_eq!(e.lines().next().unwrap_or_default(), *want, "for {text:?}");
    }
}
