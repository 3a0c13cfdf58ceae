//! `client network6`: what it sets, its canonical form, and every malformed
//! input refused at its `file:line:col`.

use vpnsyncd_config::parse_str;

const KEYS: &str = "ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n";

fn error(stmt: &str) -> String {
    parse_str("t.conf", &format!("{KEYS}{stmt}\n"), &[]).unwrap_err().to_string()
}

#[test]
fn sets_the_network_and_reparses() {
    let c = parse_str("t.conf", &format!("{KEYS}client network6 fd00:8::/64\n"), &[]).unwrap();
    let n6 = c.network6.unwrap();
    assert_eq!(n6.to_string(), "fd00:8::/64");
    assert_eq!(n6.server().to_string(), "fd00:8::1");
    assert_eq!(n6.client(&c.network, c.pool.0).to_string(), "fd00:8::2");
    let again = parse_str("canonical", &c.to_string(), &[]).unwrap();
    assert_eq!(again.network6, c.network6, "the canonical form reparses the same:\n{c}");
    let none = parse_str("t.conf", KEYS, &[]).unwrap();
    assert_eq!(none.network6, None);
    assert!(!none.to_string().contains("network6"));
}

#[test]
fn malformed_network6_names_the_place_and_the_fix() {
    let cases = [
        ("client network6 fd00:8::1/64", "t.conf:4:17: fd00:8::1/64 has host bits set; did you mean fd00:8::/64?"),
        ("client network6 fd00:8::", "t.conf:4:17: \"fd00:8::\" is not an IPv6 network: write it as addr/len, e.g. fd00:8::/64"),
        ("client network6 10.8.0.0/24", "t.conf:4:17: \"10.8.0.0\" is not an IPv6 address"),
        ("client network6 fd00::/129", "t.conf:4:17: \"129\" is not a prefix length (0 to 128)"),
        ("client network6", "t.conf:4:16: expected an IPv6 network addr/len, found end of line"),
        ("client network6 fd00::/64 pool", "t.conf:4:27: syntax error: unexpected \"pool\", expected the end of the line"),
        ("client network6 fd00::/64\nclient network6 fd00:1::/64", "t.conf:5:1: client network6 is already set on line 4"),
        (
            "client network 10.8.0.0/16\nclient network6 fd00::/120",
            "t.conf:5:1: client network6 fd00::/120 is too small for the host parts of client network 10.8.0.0/16: use a prefix of /112 or shorter",
        ),
    ];
    for (stmt, want) in cases {
        assert_eq!(error(stmt), format!("{want}\n"), "for {stmt:?}");
    }
}
