//! The `management` statement: OpenVPN's spellings, the canonical form,
//! and the exact error for each malformed variant.

use vpnsyncd_config::{parse_str, Config, Management};

const KEYS: &str = "ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n";

fn parse(extra: &str) -> Result<Config, String> {
    parse_str("test.conf", &format!("{KEYS}{extra}\n"), &[]).map_err(|e| e.to_string())
}

#[test]
fn absent_by_default() {
    assert_eq!(parse("").unwrap().management, None);
}

#[test]
fn openvpn_spelling_and_ours() {
    let want = Management { path: "/run/mgmt.sock".into(), group: None };
    for text in ["management /run/mgmt.sock unix", "management \"/run/mgmt.sock\""] {
        assert_eq!(parse(text).unwrap().management, Some(want.clone()), "{text}");
    }
    let c = parse("management /run/m unix group monitor").unwrap();
    assert_eq!(c.management, Some(Management { path: "/run/m".into(), group: Some("monitor".into()) }));
}

#[test]
fn canonical_form_round_trips() {
    for text in ["management \"/a b\"", "management /m group \"mon itor\""] {
        let c = parse(text).unwrap();
        let printed = c.to_string();
        assert!(printed.contains("management \"/"), "{printed}");
        assert_eq!(parse_str("again", &printed, &[]).unwrap(), c, "{printed}");
    }
}

#[test]
fn malformed() {
    let cases: &[(&str, &str)] = &[
        ("management", "test.conf:4:11: expected a management socket path, found end of line"),
        ("management \"\"", "test.conf:4:12: a management socket path is empty"),
        (
            "management 127.0.0.1 7505",
            "test.conf:4:12: management on TCP (\"127.0.0.1\") is not supported; use a unix socket: management \"/var/run/vpnsyncd.mgmt\" unix",
        ),
        (
            "management localhost 7505",
            "test.conf:4:12: management on TCP (\"localhost\") is not supported; use a unix socket: management \"/var/run/vpnsyncd.mgmt\" unix",
        ),
        (
            "management vpn.example 7505",
            "test.conf:4:12: management on TCP (\"vpn.example\") is not supported; use a unix socket: management \"/var/run/vpnsyncd.mgmt\" unix",
        ),
        ("management mgmt.sock unix", "test.conf:4:12: management socket \"mgmt.sock\" must be an absolute path"),
        (
            "management /m unix /etc/pw",
            "test.conf:4:20: management password files (\"/etc/pw\") are not supported; the socket's mode and group decide who may connect",
        ),
        ("management /m group", "test.conf:4:20: expected a group name, found end of line"),
        ("management /m group \"\"", "test.conf:4:21: a group name is empty"),
        ("management /a\nmanagement /b", "test.conf:5:1: management is already set on line 4"),
    ];
    for (text, want) in cases {
        let e = parse(text).expect_err(text);
        assert_eq!(e.lines().next().unwrap_or_default(), *want, "for {text:?}");
    }
}
