//! vpnsyncd.conf as users write it: every statement, every default, the
//! canonical form, and the exact error for malformed files.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use vpnsyncd_config::{load, parse_str, Cipher, ConfErrors, Config, Demote, Digest, RoleSource, SyncTransport, Wrap};

const KEYS: &str = "ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\n";

/// The configuration in the file at `path`, key files not needed.
fn parse_file(path: &Path, macros: &[(String, String)]) -> Result<Config, ConfErrors> {
    load(path, macros).map(|l| l.config)
}

fn parse(text: &str) -> Result<Config, String> {
    parse_str("test.conf", text, &[]).map_err(|e| e.to_string())
}

fn with_keys(text: &str) -> String {
    format!("{KEYS}{text}")
}

/// The one error `text` gives, with its position (the first three lines
/// are KEYS when `keys`).
fn error(text: &str) -> String {
    let e = parse(text).expect_err(text);
    assert_eq!(e.lines().count(), 1, "one error expected: {e}");
    e.trim_end().to_string()
}

#[test]
fn defaults() {
    let c = parse(KEYS).unwrap();
    assert_eq!(c.listen, vec!["0.0.0.0:1194".parse::<SocketAddr>().unwrap()]);
    assert_eq!(c.tun_device, "tun0");
    assert_eq!(c.network.to_string(), "10.8.0.0/24");
    assert_eq!(c.server_address(), Ipv4Addr::new(10, 8, 0, 1));
    assert_eq!(c.pool, (Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 254)));
    assert_eq!(c.max_clients, 253);
    assert_eq!(c.user, "_vpnsyncd");
    assert_eq!(c.socket, PathBuf::from("/var/run/vpnsyncd.sock"));
    assert_eq!(c.data_ciphers, vec![Cipher::Aes256Gcm, Cipher::Aes128Gcm, Cipher::Chacha20Poly1305]);
    assert_eq!(c.fallback_cipher, None);
    assert_eq!(c.auth, Digest::Sha1);
    assert_eq!(c.keepalive, (10, 60));
    assert_eq!(c.reneg_sec, 3600);
    assert_eq!(c.rx_moderation, 250);
    assert_eq!(c.data_threads, 1);
    assert_eq!(c.ack_filter, vpnsyncd_config::DEFAULT_ACK_FILTER);
    assert_eq!(c.watchdog, 3);
    assert_eq!(c.wrap, None);
    assert_eq!(c.crl, None);
    assert_eq!(c.sync, None);
}

#[test]
fn every_statement() {
    let c = parse(&with_keys(
        "listen on 198.18.0.10 port 1195\nlisten on ::1\ntun device tun7\nclient network 10.9.0.0/16 pool 10.9.1.1 - 10.9.1.100\n\
         max clients 50\nuser nobody\nsocket \"/tmp/s.sock\"\ncrl \"/k/crl.pem\"\ntls-auth \"/k/ta.key\" direction 1 digest sha512\n\
         data-ciphers { chacha20-poly1305 aes-128-gcm }\nfallback-cipher aes-256-cbc\nauth sha256\nkeepalive 2 10\nreneg-sec 0\nrx-moderation 0\ndata-threads 2\nack-filter yes\nwatchdog 5\n\
         push route 198.19.0.0/24\npush route 192.168.0.0/16\npush dns 198.19.0.53\npush dns 2001:db8::53\npush domain lab.example\n",
    ))
    .unwrap();
    assert_eq!(c.listen, vec!["198.18.0.10:1195".parse().unwrap(), "[::1]:1194".parse().unwrap()]);
    assert_eq!(c.tun_device, "tun7");
    assert_eq!(c.network.to_string(), "10.9.0.0/16");
    assert_eq!(c.pool, (Ipv4Addr::new(10, 9, 1, 1), Ipv4Addr::new(10, 9, 1, 100)));
    assert_eq!(c.max_clients, 50);
    assert_eq!(c.user, "nobody");
    assert_eq!(c.socket, PathBuf::from("/tmp/s.sock"));
    assert_eq!(c.ca, PathBuf::from("/k/ca.crt"));
    assert_eq!(c.certificate, PathBuf::from("/k/server.crt"));
    assert_eq!(c.key, PathBuf::from("/k/server.key"));
    assert_eq!(c.crl, Some(PathBuf::from("/k/crl.pem")));
    assert_eq!(c.wrap, Some(Wrap::TlsAuth { path: "/k/ta.key".into(), direction: Some(1), digest: Digest::Sha512 }));
    assert_eq!(c.data_ciphers, vec![Cipher::Chacha20Poly1305, Cipher::Aes128Gcm]);
    assert_eq!(c.fallback_cipher, Some(Cipher::Aes256Cbc));
    assert_eq!(c.auth, Digest::Sha256);
    assert_eq!(c.keepalive, (2, 10));
    assert_eq!(c.reneg_sec, 0);
    assert_eq!(c.rx_moderation, 0);
    assert_eq!(c.data_threads, 2);
    assert!(c.ack_filter);
    assert_eq!(c.watchdog, 5);
    assert_eq!(c.push_routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(), ["198.19.0.0/24", "192.168.0.0/16"]);
    assert_eq!(c.push_dns, vec!["198.19.0.53".parse::<IpAddr>().unwrap(), "2001:db8::53".parse().unwrap()]);
    assert_eq!(c.push_domain.as_deref(), Some("lab.example"));
}

#[test]
fn tls_auth_digest_follows_auth_and_tls_crypt() {
    let c = parse(&with_keys("auth SHA256\ntls-auth /k/ta.key\n")).unwrap();
    assert_eq!(c.wrap, Some(Wrap::TlsAuth { path: "/k/ta.key".into(), direction: None, digest: Digest::Sha256 }));
    let c = parse(&with_keys("tls-crypt \"/k/tc.key\"\n")).unwrap();
    assert_eq!(c.wrap, Some(Wrap::TlsCrypt { path: "/k/tc.key".into() }));
    let c = parse(&with_keys("tls-crypt-v2 \"/k/tc2-server.key\"\n")).unwrap();
    assert_eq!(c.wrap, Some(Wrap::TlsCryptV2 { path: "/k/tc2-server.key".into() }));
    let c = parse(&with_keys("data-ciphers AES-256-CBC\n")).unwrap();
    assert_eq!(c.data_ciphers, vec![Cipher::Aes256Cbc]);
}

#[test]
fn sync_block_multicast_vip() {
    let c = parse(&with_keys(
        "sync {\n\trole vip 198.18.0.10 interface eth0\n\tmulticast interface eth1\n\tkey \"/k/sync.key\"\n\tmember 2\n\
         \tdemote file \"/run/d\" value 20\n\trekey-window 30\n}\n",
    ))
    .unwrap();
    let s = c.sync.unwrap();
    assert_eq!(s.role, RoleSource::Vip { address: "198.18.0.10".parse().unwrap(), interface: "eth0".into() });
    assert_eq!(
        s.transport,
        SyncTransport::Multicast { group: Ipv4Addr::new(239, 0, 2, 0), port: 1196, interface: "eth1".into() }
    );
    assert_eq!(s.key, PathBuf::from("/k/sync.key"));
    assert_eq!(s.demote, Demote { group: "carp".into(), file: Some("/run/d".into()), value: 20 });
    assert_eq!(s.rekey_window, 30);
}

#[test]
fn sync_block_carp_unicast() {
    let c = parse(&with_keys(
        "sync { \n role carp interface carp0\n peer 10.0.0.2\n peer 10.0.0.3 port 2000\n key /k/s\n member 1\n demote group vpn\n multicast_unused = 1\n}\n",
    ))
    .unwrap_err();
    assert_eq!(c, "test.conf:11:2: unknown keyword \"multicast_unused\" in the sync block\n");
    let c = parse(&with_keys(
        "sync {\n role carp interface carp0\n peer 10.0.0.2\n peer 10.0.0.3 port 2000\n key /k/s\n member 8\n demote group vpn\n}",
    ))
    .unwrap();
    let s = c.sync.unwrap();
    assert_eq!(s.role, RoleSource::Carp { interface: "carp0".into() });
    assert_eq!(
        s.transport,
        SyncTransport::Unicast { peers: vec!["10.0.0.2:1196".parse().unwrap(), "10.0.0.3:2000".parse().unwrap()] }
    );
    assert_eq!(s.demote, Demote { group: "vpn".into(), file: None, value: 50 });
    assert_eq!(s.rekey_window, 60);
}

#[test]
fn sync_group_and_port() {
    let c = parse(&with_keys(
        "sync {\nrole vip ::1 interface lo\nmulticast group 239.1.2.3 port 5000 interface \"br0\"\nkey k\nmember 3\n}\n",
    ))
    .unwrap();
    assert_eq!(
        c.sync.unwrap().transport,
        SyncTransport::Multicast { group: Ipv4Addr::new(239, 1, 2, 3), port: 5000, interface: "br0".into() }
    );
}

#[test]
fn macros_from_file_and_command_line() {
    let text = "dir = \"/etc/v\"\nport = 1200\nca \"$dir/ca.crt\"\ncertificate \"$dir/s.crt\"\nkey \"$dir/s.key\"\nlisten on 127.0.0.1 port $port\n";
    let c = parse_str("m.conf", text, &[]).unwrap();
    assert_eq!(c.ca, PathBuf::from("/etc/v/ca.crt"));
    assert_eq!(c.listen[0].port(), 1200);
    // -D wins over the file's definition.
    let c = parse_str("m.conf", text, &[("dir".into(), "/other".into())]).unwrap();
    assert_eq!(c.key, PathBuf::from("/other/s.key"));
}

#[test]
fn canonical_form_round_trips() {
    let text = with_keys(
        "listen on 127.0.0.1\ntls-auth \"/k/t a$.key\" direction 0\nuser \"a \\\"b\\\"\"\npush domain lab.example\n\
         sync {\nrole vip 127.0.0.2 interface lo\npeer 10.0.0.2\nkey /k/s\nmember 1\n}\n",
    );
    let text = text.replace("a$.key", "a\\$.key");
    let c = parse(&text).unwrap();
    assert_eq!(c.wrap, Some(Wrap::TlsAuth { path: "/k/t a$.key".into(), direction: Some(0), digest: Digest::Sha1 }));
    let printed = c.to_string();
    let again = parse(&printed).unwrap();
    assert_eq!(again, c);
    assert_eq!(again.to_string(), printed);
    let c = parse(&with_keys("tls-crypt-v2 \"/k/tc2 server.key\"\n")).unwrap();
    let printed = c.to_string();
    assert!(printed.contains("tls-crypt-v2 \"/k/tc2 server.key\"\n"), "{printed}");
    assert_eq!(parse(&printed).unwrap(), c);
}

/// The example shipped in etc/ parses, and `vpnsyncd -n`'s output parses
/// to the same configuration and prints identically.
#[test]
fn example_file_round_trips() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/examples/vpnsyncd.conf");
    let c = parse_file(&path, &[]).unwrap();
    assert_eq!(c.listen, vec!["198.18.0.10:1194".parse().unwrap()]);
    assert_eq!(c.key, PathBuf::from("/etc/vpnsyncd/private/server.key"));
    assert!(c.sync.is_some());
    let printed = c.to_string();
    assert_eq!(parse_str("printed", &printed, &[]).unwrap(), c);
    let d = parse_file(&path, &[("dir".into(), "/lab".into())]).unwrap();
    assert_eq!(d.ca, PathBuf::from("/lab/ca.crt"));
}

#[test]
fn include_is_relative_to_the_including_file() {
    let dir = std::env::temp_dir().join(format!("vpnsyncd-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keys.conf"), KEYS).unwrap();
    std::fs::write(dir.join("bad.conf"), "ca /x\nfoo\n").unwrap();
    std::fs::write(dir.join("main.conf"), "include \"keys.conf\"\nmax clients 5\n").unwrap();
    std::fs::write(dir.join("twice.conf"), "include \"keys.conf\"\nca /y\ninclude \"bad.conf\"\n").unwrap();
    let c = parse_file(&dir.join("main.conf"), &[]).unwrap();
    assert_eq!(c.max_clients, 5);
    assert_eq!(c.ca, PathBuf::from("/k/ca.crt"));
    let e = parse_file(&dir.join("twice.conf"), &[]).unwrap_err().to_string();
    let d = dir.display();
    assert_eq!(
        e,
        format!(
            "{d}/twice.conf:2:1: ca is already set on {d}/keys.conf:1\n{d}/bad.conf:1:1: ca is already set on {d}/keys.conf:1\n{d}/bad.conf:2:1: unknown keyword \"foo\"\n"
        )
    );
    let e = parse_file(&dir.join("missing.conf"), &[]).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{d}/missing.conf: cannot read: ")), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn all_errors_are_reported() {
    let e = parse("listen at 1.2.3.4\ntun device tun0\nmax clients many\n").unwrap_err();
    assert_eq!(
        e,
        "test.conf:1:8: expected \"on\" after \"listen\", found \"at\"\ntest.conf:3:13: max clients \"many\" is not a number from 1 to 65534\n\
         test.conf: no ca statement: add one, e.g. ca \"/etc/vpnsyncd/ca.crt\"\n\
         test.conf: no certificate statement: add one, e.g. certificate \"/etc/vpnsyncd/server.crt\"\n\
         test.conf: no key statement: add one, e.g. key \"/etc/vpnsyncd/private/server.key\"\n"
    );
}

/// At least twenty malformed files, each with its exact message and place.
#[test]
fn malformed_files() {
    let cases: &[(&str, &str)] = &[
        ("data-ciphers aes-256-cbcx", "test.conf:4:14: unknown cipher \"aes-256-cbcx\"; valid ciphers: AES-256-GCM, AES-128-GCM, CHACHA20-POLY1305, AES-256-CBC"),
        ("auth md5", "test.conf:4:6: unknown digest \"md5\"; valid digests: SHA1, SHA256, SHA512"),
        ("listn on 1.2.3.4", "test.conf:4:1: unknown keyword \"listn\"; did you mean \"listen\"?"),
        ("listen on 1.2.3.400", "test.conf:4:11: \"1.2.3.400\" is not an IP address"),
        ("listen on 1.2.3.4 port 70000", "test.conf:4:24: port \"70000\" is not a number from 1 to 65535"),
        ("listen on 1.2.3.4\nlisten on 1.2.3.4 port 1194", "test.conf:5:11: listen on 1.2.3.4:1194 is given twice"),
        ("tun device tun0\ntun device tun1", "test.conf:5:1: tun device is already set on line 4"),
        ("tun device a-very-long-device-name", "test.conf:4:12: \"a-very-long-device-name\" is not a device name (letters, digits, - and _, at most 15)"),
        ("client network 10.8.0.1/24", "test.conf:4:16: 10.8.0.1/24 has host bits set; did you mean 10.8.0.0/24?"),
        ("client network 10.8.0.0/30", "test.conf:4:1: client network 10.8.0.0/30 is too small: use a prefix of /29 or shorter"),
        (
            "client network 10.8.0.0/24 pool 10.8.0.1 - 10.8.0.9",
            "test.conf:4:1: pool 10.8.0.1 - 10.8.0.9 must lie within 10.8.0.0/24, from low to high, without the network, broadcast or server (10.8.0.1) addresses",
        ),
        ("client network 10.8.0.0/24 pool 10.8.0.5 to 10.8.0.9", "test.conf:4:42: expected \"-\" after \"10.8.0.5\", found \"to\""),
        ("client network 10.8.0.0/28\nmax clients 20", "test.conf:5:1: max clients 20 exceeds the 13 addresses of the pool"),
        ("max clients 0", "test.conf:4:13: max clients \"0\" is not a number from 1 to 65534"),
        ("tls-auth /k/ta.key direction 2", "test.conf:4:30: direction \"2\" is not a number from 0 to 1"),
        ("tls-auth /k/ta.key\ntls-crypt /k/tc.key", "test.conf:5:1: tls-auth, tls-crypt or tls-crypt-v2 is already set on line 4"),
        ("tls-crypt /k/tc.key\ntls-crypt-v2 /k/s.key", "test.conf:5:1: tls-auth, tls-crypt or tls-crypt-v2 is already set on line 4"),
        ("tls-crypt-v2 /k/s.key\ntls-auth /k/ta.key", "test.conf:5:1: tls-auth, tls-crypt or tls-crypt-v2 is already set on line 4"),
        ("tls-crypt-v2", "test.conf:4:13: expected a key file name, found end of file"),
        ("tls-crypt-v2 \"\"", "test.conf:4:14: a key file name is empty"),
        ("tls-crypt-v2 /k/s.key direction 0", "test.conf:4:23: syntax error: unexpected \"direction\", expected the end of the line"),
        ("tls-cryptv2 /k/s.key", "test.conf:4:1: unknown keyword \"tls-cryptv2\"; did you mean \"tls-crypt-v2\"?"),
        ("keepalive 10 5", "test.conf:4:14: keepalive timeout \"5\" must be a number of seconds above the interval 10"),
        ("watchdog 1", "test.conf:4:10: watchdog \"1\" is not a number from 2 to 300"),
        ("watchdog 3\nwatchdog 4", "test.conf:5:1: watchdog is already set on line 4"),
        ("reneg-sec soon", "test.conf:4:11: reneg-sec \"soon\" is not a number from 0 to 604800"),
        ("rx-moderation 5000", "test.conf:4:15: rx-moderation \"5000\" is not a number from 0 to 1000"),
        ("data-threads 0", "test.conf:4:14: data-threads \"0\" is not a number from 1 to 64"),
        ("ack-filter on", "test.conf:4:12: ack-filter takes yes or no, not \"on\""),
        ("ack-filter no\nack-filter yes", "test.conf:5:1: ack-filter is already set on line 4"),
        ("push route 10.0.0.0", "test.conf:4:12: \"10.0.0.0\" is not a network: write it as a.b.c.d/len"),
        ("push gateway 1.2.3.4", "test.conf:4:6: unknown push option \"gateway\"; valid: route, dns, domain, redirect-gateway, block-outside-dns, route-ipv6, or a quoted \"option ...\""),
        ("push dns example.org", "test.conf:4:10: \"example.org\" is not an IP address"),
        ("data-ciphers { AES-256-GCM, AES-256-GCM }", "test.conf:4:29: cipher AES-256-GCM is listed twice"),
        ("data-ciphers { }", "test.conf:4:14: the cipher list is empty"),
        ("data-ciphers { AES-256-GCM", "test.conf:4:14: the cipher list is not closed: add \"}\""),
        ("crl \"/k/crl.pem", "test.conf:4:5: unterminated quoted string"),
        ("crl \"$where/crl.pem\"", "test.conf:4:6: macro \"where\" is not defined"),
        ("ca = /x", "test.conf:4:1: \"ca\" cannot be a macro name (letters, digits and _, not a keyword)"),
        ("user _vpnsyncd extra", "test.conf:4:16: syntax error: unexpected \"extra\", expected the end of the line"),
        ("} ", "test.conf:4:1: syntax error: unexpected \"}\""),
        ("include \"other.conf\"", "test.conf:4:1: include is not allowed here"),
        ("sync {\nrole vip 1.2.3.4 interface eth0\nkey /k/s\n", "test.conf:4:1: the sync block is not closed: add \"}\""),
        ("sync {\nrole vip 1.2.3.4 interface eth0\nmulticast interface eth1\n}", "test.conf:4:1: the sync block needs a key statement (key \"/etc/vpnsyncd/sync.key\")"),
        (
            "sync {\nkey /k/s\nmulticast interface eth1\n}",
            "test.conf:4:1: the sync block needs a role statement (role vip ADDRESS interface IF, or role carp interface carpN)",
        ),
        ("sync {\nrole vip 1.2.3.4 interface eth0\nkey /k/s\n}", "test.conf:4:1: the sync block needs a multicast interface or peer statements"),
        (
            "sync {\nrole vip 1.2.3.4 interface eth0\nkey /k/s\nmulticast interface eth1\npeer 10.0.0.2\n}",
            "test.conf:4:1: the sync block has both multicast and peer statements: choose one",
        ),
        ("sync {\nrole hsrp 1.2.3.4\n}", "test.conf:5:6: unknown role source \"hsrp\"; valid: vip (Linux), carp (OpenBSD)"),
        ("sync {\nmulticast group 10.0.0.1 interface eth1\n}", "test.conf:5:17: \"10.0.0.1\" is not an IPv4 multicast group (224.0.0.0/4)"),
        ("sync {\nmulticast port 1196\n}", "test.conf:5:1: multicast needs an interface: multicast interface IF"),
        ("sync {\ndemote value 300\n}", "test.conf:5:14: demote value \"300\" is not a number from 1 to 255"),
        ("sync {\nrol vip 1.2.3.4 interface eth0\n}", "test.conf:5:1: unknown keyword \"rol\" in the sync block; did you mean \"role\"?"),
        (
            "sync {\nrole vip 1.2.3.4 interface eth0\nkey /k/s\nmulticast interface eth1\n}",
            "test.conf:4:1: the sync block needs a member statement (member 1 to member 8, a different number on each member)",
        ),
        ("sync {\nmember 0\n}", "test.conf:5:8: member \"0\" is not a number from 1 to 8"),
        ("sync {\nmember 9\n}", "test.conf:5:8: member \"9\" is not a number from 1 to 8"),
        ("sync {\nmember 1\nmember 2\n}", "test.conf:6:1: sync member is already set on line 5"),
        ("sync\n[\n", "test.conf:5:1: expected \"{\" after \"sync\", found \"[\""),
    ];
    assert!(cases.len() >= 20);
    for (body, want) in cases {
        let text = with_keys(body);
        let got = parse(&text).expect_err(body);
        let first = got.lines().next().unwrap();
        assert_eq!(first, *want, "for {body:?}; all errors:\n{got}");
        // Nothing else is reported for these one-mistake files, except
        // where the sync block itself is incomplete.
        if !body.starts_with("sync {\nro")
            && !body.starts_with("sync {\nmu")
            && !body.starts_with("sync {\nde")
            && !body.starts_with("sync {\nme")
        {
            assert_eq!(error(&text), *want);
        }
    }
}
