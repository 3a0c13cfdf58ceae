//! The push statements beyond route, dns and domain: what each becomes in
//! the PUSH_REPLY, the canonical form reparsing to the same, and every
//! malformed input refused at its `file:line:col`.

use vpnsyncd_config::{parse_str, MAX_PUSH_OPTIONS};

const KEYS: &str = "ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n";

fn error(stmt: &str) -> String {
    parse_str("t.conf", &format!("{KEYS}{stmt}\n"), &[]).unwrap_err().to_string()
}

#[test]
fn each_statement_becomes_its_option_in_order() {
    let text = format!(
        "{KEYS}push redirect-gateway def1 bypass-dhcp ipv6\npush block-outside-dns\n\
         push route-ipv6 2001:db8::/32\npush \"dhcp-option DNS6 2001:db8::53\"\npush \"echo X 'a b'\"\n"
    );
    let c = parse_str("t.conf", &text, &[]).unwrap();
    let want = [
        "redirect-gateway def1 bypass-dhcp ipv6",
        "block-outside-dns",
        "route-ipv6 2001:db8::/32",
        "dhcp-option DNS6 2001:db8::53",
        "echo X 'a b'",
    ];
    assert_eq!(c.push_options, want);
    let again = parse_str("canonical", &c.to_string(), &[]).unwrap();
    assert_eq!(again.push_options, want, "the canonical form reparses the same:\n{c}");
}

#[test]
fn malformed_pushes_name_the_place_and_the_fix() {
    let cases = [
        ("push redirect-gateway def1 local", "t.conf:4:28: unknown redirect-gateway flag \"local\"; valid: def1, bypass-dhcp, ipv6"),
        ("push redirect-gateway def1 def1", "t.conf:4:28: redirect-gateway flag \"def1\" is given twice"),
        ("push block-outside-dns now", "t.conf:4:24: syntax error: unexpected \"now\", expected the end of the line"),
        ("push redirect-gateway def1 \"ipv6\"", "t.conf:4:28: syntax error: unexpected string \"ipv6\", expected the end of the line"),
        ("push route-ipv6 fd00::/64 metric 5", "t.conf:4:27: syntax error: unexpected \"metric\", expected the end of the line"),
        ("push route-ipv6 2001:db8::1/32", "t.conf:4:17: route-ipv6 2001:db8::1/32 has host bits set: use 2001:db8::/32"),
        ("push route-ipv6 10.0.0.0/8", "t.conf:4:17: \"10.0.0.0/8\" is not an IPv6 network addr/len (e.g. fd00:1::/64)"),
        ("push route-ipv6", "t.conf:4:16: expected an IPv6 network addr/len, found end of line"),
        ("push \"up /bin/sh\"", "t.conf:4:6: \"up\" is not an option a client accepts pushed; valid: block-ipv6, block-outside-dns, dhcp-option, dns, echo, explicit-exit-notify, inactive, ip-win32, redirect-gateway, redirect-private, register-dns, route, route-delay, route-ipv6, route-metric, sndbuf, rcvbuf"),
        ("push \"ifconfig 10.8.0.9 255.255.255.0\"", "t.conf:4:6: \"ifconfig\" is set by the server itself for each client and cannot be pushed"),
        ("push \"echo A 'b\"", "t.conf:4:6: the push option has an unclosed ' quote"),
        ("push \"echo a,ifconfig 1.2.3.4\"", "t.conf:4:6: the push option contains a comma, which separates options in a PUSH_REPLY"),
        ("push \"echo a\tb\"", "t.conf:4:6: the push option contains the control character '\\t'"),
        ("push \"\"", "t.conf:4:6: route, dns, domain, redirect-gateway, block-outside-dns, route-ipv6 or a quoted option is empty"),
        ("push bogus", "t.conf:4:6: unknown push option \"bogus\"; valid: route, dns, domain, redirect-gateway, block-outside-dns, route-ipv6, or a quoted \"option ...\""),
    ];
    for (stmt, want) in cases {
        assert_eq!(error(stmt), format!("{want}\n"), "for {stmt:?}");
    }
    let long = format!("push \"echo {}\"", "a".repeat(300));
    assert_eq!(error(&long), "t.conf:4:6: the push option is 305 bytes long, more than 255\n");
}

#[test]
fn the_number_of_pushes_is_bounded() {
    let many: String = (0..=MAX_PUSH_OPTIONS).map(|i| format!("push \"echo {i}\"\n")).collect();
    let e = parse_str("t.conf", &format!("{KEYS}{many}"), &[]).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "t.conf:{}:1: more than {MAX_PUSH_OPTIONS} push options besides route and dns: summarise them\n",
            4 + MAX_PUSH_OPTIONS
        )
    );
}
