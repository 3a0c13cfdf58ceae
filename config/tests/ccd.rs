//! The client-config-dir and duplicate-cn statements: values, defaults,
//! canonical form and the exact errors of malformed lines.

use vpnsyncd_config::{parse_str, DuplicateCn};

const KEYS: &str = "ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n";

fn error(text: &str) -> String {
    let e = parse_str("test.conf", &format!("{KEYS}{text}"), &[]).expect_err(text).to_string();
    assert_eq!(e.lines().count(), 1, "one error expected: {e}");
    e.trim_end().to_string()
}

#[test]
fn defaults_and_values() {
    let c = parse_str("t", KEYS, &[]).unwrap();
    assert_eq!(c.client_config_dir, None);
    assert_eq!(c.duplicate_cn, DuplicateCn::Allow, "what vpnsyncd did before the statement existed");
    let c =
        parse_str("t", &format!("{KEYS}client-config-dir \"/etc/vpnsyncd/ccd\"\nduplicate-cn replace\n"), &[]).unwrap();
    assert_eq!(c.client_config_dir.as_deref(), Some(std::path::Path::new("/etc/vpnsyncd/ccd")));
    assert_eq!(c.duplicate_cn, DuplicateCn::Replace);
    let again = parse_str("t", &c.to_string(), &[]).unwrap();
    assert_eq!(again, c, "canonical form round-trips");
    assert!(c.to_string().contains("duplicate-cn replace\n"));
}

#[test]
fn malformed() {
    assert_eq!(
        error("duplicate-cn replacee\n"),
        "test.conf:4:14: unknown duplicate-cn policy \"replacee\"; valid: refuse, replace, allow"
    );
    assert_eq!(error("duplicate-cn\n"), "test.conf:4:13: expected refuse, replace or allow, found end of line");
    assert_eq!(
        error("duplicate-cn allow\nduplicate-cn refuse\n"),
        "test.conf:5:1: duplicate-cn is already set on line 4"
    );
    assert_eq!(
        error("client-config-dir \"/a\"\nclient-config-dir \"/b\"\n"),
        "test.conf:5:1: client-config-dir is already set on line 4"
    );
    assert_eq!(
        error("client-config-dir \"/a\" extra\n"),
        "test.conf:4:24: syntax error: unexpected \"extra\", expected the end of the line"
    );
    assert_eq!(error("client-config-dir\n"), "test.conf:4:18: expected a directory, found end of line");
    assert_eq!(error("client-config-dir \"\"\n"), "test.conf:4:19: a directory is empty");
    assert_eq!(
        error("duplicate-cn replace now\n"),
        "test.conf:4:22: syntax error: unexpected \"now\", expected the end of the line"
    );
}
