//! The `password` statements: what they set, their canonical form, and the
//! exact error for each malformed one.

use vpnsyncd_config::{parse_str, ClientCert, Config, PasswordCheck, DEFAULT_PASSWORD_TIMEOUT, DEFAULT_TOKEN_LIFETIME};

const KEYS: &str = "ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n";

fn parse(body: &str) -> Result<Config, String> {
    parse_str("test.conf", &format!("{KEYS}{body}"), &[]).map_err(|e| e.to_string())
}

#[test]
fn no_password_statement_leaves_passwords_unchecked() {
    let c = parse("").unwrap();
    assert_eq!((c.password, c.password_token), (None, None));
    assert_eq!(c.verify_client_cert, ClientCert::Require);
}

#[test]
fn script_and_token_with_defaults_and_values() {
    let c = parse("password script \"/etc/vpnsyncd/checkpw\"\npassword token\n").unwrap();
    assert_eq!(
        c.password,
        Some(PasswordCheck::Script { path: "/etc/vpnsyncd/checkpw".into(), timeout: DEFAULT_PASSWORD_TIMEOUT })
    );
    assert_eq!(c.password_token, Some(DEFAULT_TOKEN_LIFETIME));
    let c = parse("password script /x/y timeout 3\npassword token lifetime 600\nverify-client-cert none\n").unwrap();
    assert_eq!(c.verify_client_cert, ClientCert::None);
    assert_eq!(c.password, Some(PasswordCheck::Script { path: "/x/y".into(), timeout: 3 }));
    assert_eq!(c.password_token, Some(600));
    let printed = c.to_string();
    assert!(printed.contains("password script \"/x/y\" timeout 3\npassword token lifetime 600\n"), "{printed}");
    assert_eq!(parse_str("again", &printed, &[]).unwrap(), c);
}

#[test]
fn malformed_password_statements() {
    let cases: &[(&str, &str)] = &[
        ("password", "test.conf:4:9: expected script or token, found end of file"),
        ("password pam", "test.conf:4:10: unknown password check \"pam\"; valid: script, token"),
        ("password script", "test.conf:4:16: expected a script path, found end of file"),
        ("password script checkpw", "test.conf:4:17: password script \"checkpw\" must be an absolute path"),
        ("password script /x timeout 0", "test.conf:4:28: password timeout \"0\" is not a number from 1 to 60"),
        ("password script /x timeout soon", "test.conf:4:28: password timeout \"soon\" is not a number from 1 to 60"),
        ("password script /x after 3", "test.conf:4:20: syntax error: unexpected \"after\", expected the end of the line"),
        ("password script /x\npassword script /y", "test.conf:5:1: password check is already set on line 4"),
        ("password script /x\npassword token lifetime 5", "test.conf:5:25: token lifetime \"5\" is not a number from 60 to 2592000"),
        ("password script /x\npassword token\npassword token", "test.conf:6:1: password token is already set on line 5"),
        ("verify-client-cert maybe", "test.conf:4:20: unknown verify-client-cert mode \"maybe\"; valid: require, optional, none"),
        ("verify-client-cert", "test.conf:4:19: expected require, optional or none, found end of file"),
        ("verify-client-cert require\nverify-client-cert none", "test.conf:5:1: verify-client-cert is already set on line 4"),
        (
            "verify-client-cert optional",
            "test.conf:4:1: verify-client-cert optional admits clients without a certificate: add a password check, e.g. password script \"/etc/vpnsyncd/checkpw\"",
        ),
        (
            "password token",
            "test.conf:4:1: password token needs a password check to issue tokens after: add e.g. password script \"/etc/vpnsyncd/checkpw\"",
        ),
    ];
    for (body, want) in cases {
        let got = parse(body).expect_err(body);
        assert_eq!(got.trim_end(), *want, "for {body:?}");
    }
}
