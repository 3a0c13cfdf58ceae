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
        ("password", "test.conf:4:9: expected script, pam, bsdauth or token, found end of file"),
        ("password ldap", "test.conf:4:10: unknown password check \"ldap\"; valid: script, pam, bsdauth, token"),
        ("password script", "test.conf:4:16: expected a script path, found end of file"),
        ("password script checkpw", "test.conf:4:17: password script \"checkpw\" must be an absolute path"),
        ("password script /x timeout 0", "test.conf:4:28: password timeout \"0\" is not a number from 1 to 60"),
        ("password script /x timeout soon", "test.conf:4:28: password timeout \"soon\" is not a number from 1 to 60"),
        ("password script /x after 3", "test.conf:4:20: syntax error: unexpected \"after\", expected the end of the line"),
        ("password script /x\npassword script /y", "test.conf:5:1: password check is already set on line 4"),
        ("password script /x\npassword token lifetime 5", "test.conf:5:25: token lifetime \"5\" is not a number from 60 to 2592000"),
        ("password script /x\npassword token\npassword token", "test.conf:6:1: password token is already set on line 5"),
        ("password script \"\"", "test.conf:4:17: a script path is empty"),
        ("password script /x timeout", "test.conf:4:27: expected password timeout, found end of file"),
        ("password script /x\npassword token lifetime", "test.conf:5:24: expected token lifetime, found end of file"),
        ("password script /x\npassword token forever", "test.conf:5:16: syntax error: unexpected \"forever\", expected the end of the line"),
        ("password script /x\nverify-client-cert none now", "test.conf:5:25: syntax error: unexpected \"now\", expected the end of the line"),
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

fn expect_errors(cases: &[(&str, &str)]) {
    for (body, want) in cases {
        let got = parse(body).expect_err(body);
        assert_eq!(got.trim_end(), *want, "for {body:?}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn pam_with_defaults_and_values() {
    let c = parse("password pam\n").unwrap();
    assert_eq!(
        c.password,
        Some(PasswordCheck::Pam {
            service: vpnsyncd_config::DEFAULT_PAM_SERVICE.into(),
            timeout: DEFAULT_PASSWORD_TIMEOUT
        })
    );
    let c = parse("password pam service \"openvpn\" timeout 20\npassword token lifetime 60\n").unwrap();
    assert_eq!(c.password, Some(PasswordCheck::Pam { service: "openvpn".into(), timeout: 20 }));
    let printed = c.to_string();
    assert!(printed.contains("password pam service \"openvpn\" timeout 20\npassword token lifetime 60\n"), "{printed}");
    assert_eq!(parse_str("again", &printed, &[]).unwrap(), c);
    let c = parse("password pam timeout 3\nverify-client-cert none\n").unwrap();
    assert_eq!(c.password, Some(PasswordCheck::Pam { service: "vpnsyncd".into(), timeout: 3 }));
}

#[cfg(target_os = "linux")]
#[test]
fn malformed_pam_statements_and_bsdauth_on_linux() {
    expect_errors(&[
        ("password pam service", "test.conf:4:21: expected PAM service, found end of file"),
        ("password pam service \"\"", "test.conf:4:22: PAM service is empty"),
        (
            "password pam service ../shadow",
            "test.conf:4:22: PAM service \"../shadow\" is not a name: use up to 64 letters, digits, '.', '_' or '-'",
        ),
        (
            "password pam service a/b",
            "test.conf:4:22: PAM service \"a/b\" is not a name: use up to 64 letters, digits, '.', '_' or '-'",
        ),
        ("password pam timeout 61", "test.conf:4:22: password timeout \"61\" is not a number from 1 to 60"),
        ("password pam service x y", "test.conf:4:24: syntax error: unexpected \"y\", expected the end of the line"),
        ("password pam timeout 5 service x", "test.conf:4:24: syntax error: unexpected \"service\", expected the end of the line"),
        ("password script /x\npassword pam", "test.conf:5:1: password check is already set on line 4"),
        ("password pam\npassword script /x", "test.conf:5:1: password check is already set on line 4"),
        (
            "password bsdauth",
            "test.conf:4:10: password bsdauth is OpenBSD's BSD Authentication, which linux lacks: use password pam [service NAME]",
        ),
        (
            "password bsdauth style passwd",
            "test.conf:4:10: password bsdauth is OpenBSD's BSD Authentication, which linux lacks: use password pam [service NAME]",
        ),
    ]);
}

#[cfg(target_os = "openbsd")]
#[test]
fn bsdauth_with_defaults_and_values() {
    let c = parse("password bsdauth\n").unwrap();
    let want = PasswordCheck::BsdAuth {
        style: None,
        kind: vpnsyncd_config::DEFAULT_BSDAUTH_TYPE.into(),
        timeout: DEFAULT_PASSWORD_TIMEOUT,
    };
    assert_eq!(c.password, Some(want));
    let c = parse("password bsdauth style radius type auth-vpn timeout 30\n").unwrap();
    let want = PasswordCheck::BsdAuth { style: Some("radius".into()), kind: "auth-vpn".into(), timeout: 30 };
    assert_eq!(c.password, Some(want));
    assert_eq!(parse_str("again", &c.to_string(), &[]).unwrap(), c);
}

#[cfg(target_os = "openbsd")]
#[test]
fn malformed_bsdauth_statements_and_pam_on_openbsd() {
    expect_errors(&[
        ("password bsdauth style", "test.conf:4:23: expected authentication style, found end of file"),
        (
            "password bsdauth type a/b",
            "test.conf:4:23: authentication type \"a/b\" is not a name: use up to 64 letters, digits, '.', '_' or '-'",
        ),
        ("password bsdauth type x style y", "test.conf:4:26: syntax error: unexpected \"style\", expected the end of the line"),
        (
            "password pam",
            "test.conf:4:10: password pam needs Linux-PAM, which openbsd lacks: use password bsdauth [style NAME] [type NAME]",
        ),
    ]);
}
