//! The push statements beyond route, dns and domain: `redirect-gateway`,
//! `block-outside-dns`, `route-ipv6` and a generic `push "..."`. Each is kept
//! as the option text the client receives, checked here so that a client
//! never gets an option it refuses or that the server sets itself.

use std::net::Ipv6Addr;

/// Options of one PUSH_REPLY line at most: OpenVPN's OPTION_LINE_SIZE (256,
/// its NUL included) is what a client reads of one option.
pub const MAX_PUSH_OPTION: usize = 255;
/// Extra push options at most, so that the PUSH_REPLY stays bounded.
pub const MAX_PUSH_OPTIONS: usize = 256;

/// Options a client accepts pushed (OpenVPN's pushable option classes:
/// routes, DNS, timers, redirect, echo, ...; not setenv, which a 2.6
/// client refuses pushed).
const PUSHABLE: &[&str] = &[
    "block-ipv6",
    "block-outside-dns",
    "dhcp-option",
    "dns",
    "echo",
    "explicit-exit-notify",
    "inactive",
    "ip-win32",
    "redirect-gateway",
    "redirect-private",
    "register-dns",
    "route",
    "route-delay",
    "route-ipv6",
    "route-metric",
    "sndbuf",
    "rcvbuf",
];

/// Options the server computes per client: a second copy would contradict it.
const SERVER_SET: &[&str] = &[
    "cipher",
    "comp-lzo",
    "compress",
    "ifconfig",
    "ifconfig-ipv6",
    "key-derivation",
    "peer-id",
    "ping",
    "ping-restart",
    "protocol-flags",
    "push-continuation",
    "route-gateway",
    "topology",
    "tun-mtu",
    "auth-token",
];

/// `push redirect-gateway` flags, rendered in the order OpenVPN documents.
pub fn redirect_gateway(flags: &[String]) -> Result<String, String> {
    let mut out = vec!["redirect-gateway"];
    for f in flags {
        match f.as_str() {
            "def1" | "bypass-dhcp" | "ipv6" if !out.contains(&f.as_str()) => out.push(f),
            "def1" | "bypass-dhcp" | "ipv6" => return Err(format!("redirect-gateway flag \"{f}\" is given twice")),
            _ => return Err(format!("unknown redirect-gateway flag \"{f}\"; valid: def1, bypass-dhcp, ipv6")),
        }
    }
    Ok(out.join(" "))
}

/// `push route-ipv6 NET/len`: a network whose host bits are zero.
pub fn route_ipv6(w: &str) -> Result<String, String> {
    let bad = || format!("\"{w}\" is not an IPv6 network addr/len (e.g. fd00:1::/64)");
    let (a, l) = w.split_once('/').ok_or_else(bad)?;
    let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().ok().filter(|l| *l <= 128).ok_or_else(bad)?;
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    if u128::from(addr) & !mask != 0 {
        let net = Ipv6Addr::from(u128::from(addr) & mask);
        return Err(format!("route-ipv6 {w} has host bits set: use {net}/{len}"));
    }
    Ok(format!("route-ipv6 {addr}/{len}"))
}

/// A generic `push "..."`: a pushable option name, arguments a client
/// tokenises as OpenVPN does (quotes closed), no comma (the PUSH_REPLY
/// separator), no control character, at most [`MAX_PUSH_OPTION`] bytes.
pub fn generic(text: &str) -> Result<String, String> {
    if text.len() > MAX_PUSH_OPTION {
        return Err(format!("the push option is {} bytes long, more than {MAX_PUSH_OPTION}", text.len()));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!("the push option contains the control character {:?}", c));
    }
    if text.contains(',') {
        return Err("the push option contains a comma, which separates options in a PUSH_REPLY".into());
    }
    let words = tokenise(text)?;
    let Some(name) = words.first() else {
        return Err("the push option is empty".into());
    };
    if SERVER_SET.contains(&name.as_str()) {
        return Err(format!("\"{name}\" is set by the server itself for each client and cannot be pushed"));
    }
    if !PUSHABLE.contains(&name.as_str()) {
        return Err(format!("\"{name}\" is not an option a client accepts pushed; valid: {}", PUSHABLE.join(", ")));
    }
    Ok(text.trim().to_string())
}

/// Words as an OpenVPN client splits an option line: blanks separate,
/// double quotes (with backslash escapes) and single quotes group.
fn tokenise(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = text.chars();
    let mut cur: Option<String> = None;
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => words.extend(cur.take()),
            '"' | '\'' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        None => return Err(format!("the push option has an unclosed {c} quote")),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => match chars.next() {
                            Some(e) => w.push(e),
                            None => return Err("the push option ends in a backslash".into()),
                        },
                        Some(x) => w.push(x),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(e) => cur.get_or_insert_with(String::new).push(e),
                None => return Err("the push option ends in a backslash".into()),
            },
            _ => cur.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(cur);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_flags() {
        assert_eq!(redirect_gateway(&[]).unwrap(), "redirect-gateway");
        let f = ["def1".to_string(), "ipv6".to_string()];
        assert_eq!(redirect_gateway(&f).unwrap(), "redirect-gateway def1 ipv6");
        assert!(redirect_gateway(&["def1".into(), "def1".into()]).unwrap_err().contains("twice"));
        assert!(redirect_gateway(&["local".into()]).unwrap_err().contains("unknown redirect-gateway flag"));
    }

    #[test]
    fn ipv6_routes() {
        assert_eq!(route_ipv6("2001:db8::/32").unwrap(), "route-ipv6 2001:db8::/32");
        assert_eq!(route_ipv6("::/0").unwrap(), "route-ipv6 ::/0");
        assert!(route_ipv6("2001:db8::1/32").unwrap_err().contains("use 2001:db8::/32"));
        for bad in ["2001:db8::", "2001:db8::/129", "10.0.0.0/8", "x/64", "2001:db8::/"] {
            assert!(route_ipv6(bad).unwrap_err().contains("is not an IPv6 network"), "{bad}");
        }
    }

    #[test]
    fn generic_options() {
        assert_eq!(generic("dhcp-option DNS 10.8.0.1").unwrap(), "dhcp-option DNS 10.8.0.1");
        assert_eq!(generic("echo FOO \"a b\"").unwrap(), "echo FOO \"a b\"");
        assert!(generic("setenv FOO 1").unwrap_err().contains("not an option a client accepts"));
        assert!(generic("ifconfig 10.8.0.9 255.255.255.0").unwrap_err().contains("set by the server"));
        assert!(generic("up /bin/sh").unwrap_err().contains("not an option a client accepts"));
        assert!(generic("echo A \"b").unwrap_err().contains("unclosed \" quote"));
        assert!(generic("echo A 'b").unwrap_err().contains("unclosed ' quote"));
        assert!(generic("echo A b\\").unwrap_err().contains("backslash"));
        assert!(generic("route 1.2.3.0 255.255.255.0,up x").unwrap_err().contains("comma"));
        assert!(generic("echo a\u{7}b").unwrap_err().contains("control character"));
        assert!(generic("   ").unwrap_err().contains("empty"));
        let long = format!("echo {}", "a".repeat(MAX_PUSH_OPTION));
        assert!(generic(&long).unwrap_err().contains("more than 255"));
    }

    #[test]
    fn tokenises_like_a_client() {
        assert_eq!(tokenise(r#"setenv X "a \"b\" c" 'd e'"#).unwrap(), ["setenv", "X", "a \"b\" c", "d e"]);
        assert_eq!(tokenise("  route\t1.2.3.4  ").unwrap(), ["route", "1.2.3.4"]);
    }
}
