//! PUSH_REPLY: the options the server pushes to a client (protocol reference
//! §11.3), in the order a 2.6 server uses, with only what this client
//! understands (§18 item 18), split into NUL-free messages of at most 1024
//! bytes with push-continuation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vpnsyncd_config::{Ipv4Net, Ipv6Net};

/// Server-wide push settings (from the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSettings {
    pub server_address: Ipv4Addr,
    pub netmask: Ipv4Addr,
    /// The IPv4 client network, whose host parts the IPv6 addresses reuse.
    pub network: Ipv4Net,
    /// `client network6`: clients get an IPv6 address too.
    pub network6: Option<Ipv6Net>,
    pub routes: Vec<Ipv4Net>,
    pub dns: Vec<IpAddr>,
    pub domain: Option<String>,
    /// The other configured pushes (redirect-gateway, block-outside-dns,
    /// route-ipv6, generic), checked by the configuration.
    pub extra: Vec<String>,
    /// `keepalive` interval and timeout, pushed as ping / ping-restart.
    pub keepalive: (u32, u32),
}

/// What is specific to one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPush {
    pub address: Ipv4Addr,
    /// Its IPv6 address, with `client network6`.
    pub address6: Option<Ipv6Addr>,
    /// `Some` when the client does DATA_V2 (IV_PROTO bit 1).
    pub peer_id: Option<u32>,
    /// The negotiated cipher, pushed when the client does NCP.
    pub cipher: Option<&'static str>,
    /// IV_PROTO bit 7: protocol-flags understood.
    pub cc_exit: bool,
    /// EKM key derivation agreed (IV_PROTO bit 3).
    pub tls_ekm: bool,
    /// IV_MTU was sent: push tun-mtu.
    pub tun_mtu: Option<u16>,
    /// The client frames its data with a compression byte (§13.6).
    pub compression: Option<&'static str>,
}

impl PushSettings {
    /// The IPv6 address of the client given `v4` (vpnsyncd.conf(5),
    /// `client network6`), if clients get one.
    pub fn address6(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        self.network6.map(|n6| n6.client(&self.network, v4))
    }
}

/// A 2.6 client reads at most this much per message; 2.6 servers cap at 1024.
const PUSH_MAX: usize = 1024;

/// The option list of the reply, in order.
pub fn options(s: &PushSettings, c: &ClientPush) -> Vec<String> {
    let mut o = vec![format!("route-gateway {}", s.server_address), "topology subnet".to_string()];
    for r in &s.routes {
        o.push(format!("route {} {}", r.addr, r.netmask()));
    }
    for d in &s.dns {
        o.push(format!("dhcp-option DNS {d}"));
    }
    if let Some(dom) = &s.domain {
        o.push(format!("dhcp-option DOMAIN {dom}"));
    }
    o.extend(s.extra.iter().cloned());
    o.push(format!("ping {}", s.keepalive.0));
    o.push(format!("ping-restart {}", s.keepalive.1));
    if let Some(comp) = c.compression {
        o.push(comp.to_string());
    }
    o.push(format!("ifconfig {} {}", c.address, s.netmask));
    // A 2.6 client needs no `tun-ipv6` (it ignores it, with a warning).
    if let (Some(n6), Some(a6)) = (s.network6, c.address6) {
        o.push(format!("ifconfig-ipv6 {a6}/{} {}", n6.prefix, n6.server()));
    }
    if let Some(id) = c.peer_id {
        o.push(format!("peer-id {id}"));
    }
    if let Some(cipher) = c.cipher {
        o.push(format!("cipher {cipher}"));
    }
    match (c.cc_exit, c.tls_ekm) {
        (true, true) => o.push("protocol-flags cc-exit tls-ekm".to_string()),
        (true, false) => o.push("protocol-flags cc-exit".to_string()),
        (false, true) => o.push("key-derivation tls-ekm".to_string()),
        (false, false) => {}
    }
    if let Some(mtu) = c.tun_mtu {
        o.push(format!("tun-mtu {mtu}"));
    }
    o
}

/// The PUSH_REPLY message(s), each without its terminating NUL.
pub fn messages(opts: &[String]) -> Vec<String> {
    const HEAD: &str = "PUSH_REPLY";
    const MORE: &str = ",push-continuation 2";
    const LAST: &str = ",push-continuation 1";
    let single: usize = HEAD.len() + opts.iter().map(|o| o.len() + 1).sum::<usize>();
    if single <= PUSH_MAX {
        return vec![std::iter::once(HEAD.to_string()).chain(opts.iter().cloned()).collect::<Vec<_>>().join(",")];
    }
    let mut out = Vec::new();
    let mut cur = HEAD.to_string();
    for o in opts {
        if cur.len() + 1 + o.len() + MORE.len() > PUSH_MAX && cur.len() > HEAD.len() {
            out.push(cur + MORE);
            cur = HEAD.to_string();
        }
        cur.push(',');
        cur.push_str(o);
    }
    out.push(cur + LAST);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PushSettings {
        PushSettings {
            server_address: Ipv4Addr::new(10, 8, 0, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            network: "10.8.0.0/24".parse().unwrap(),
            network6: None,
            routes: vec![],
            dns: vec![],
            domain: None,
            extra: vec![],
            keepalive: (10, 60),
        }
    }

    fn client26() -> ClientPush {
        ClientPush {
            address: Ipv4Addr::new(10, 8, 0, 2),
            address6: None,
            peer_id: Some(0),
            cipher: Some("AES-256-GCM"),
            cc_exit: true,
            tls_ekm: true,
            tun_mtu: Some(1500),
            compression: None,
        }
    }

    /// The reply of a 2.6.14 server in the protocol reference's lab, less
    /// dyn-tls-crypt (which we do not offer).
    #[test]
    fn matches_the_lab_reply_for_26() {
        let m = messages(&options(&settings(), &client26()));
        assert_eq!(
            m,
            vec!["PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm,tun-mtu 1500"]
        );
    }

    #[test]
    fn a_25_client_gets_no_protocol_flags() {
        let c = ClientPush { cc_exit: false, tls_ekm: false, tun_mtu: None, ..client26() };
        assert_eq!(
            messages(&options(&settings(), &c)),
            vec!["PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM"]
        );
        let c = ClientPush { cc_exit: false, tls_ekm: true, ..c };
        assert!(options(&settings(), &c).contains(&"key-derivation tls-ekm".to_string()));
    }

    /// As a 2.6 server with `server-ipv6`: right after `ifconfig`.
    #[test]
    fn ifconfig_ipv6_follows_the_ipv4_host_part() {
        let mut s = settings();
        s.network6 = Some("fd00:8::/64".parse().unwrap());
        let a6 = s.address6(Ipv4Addr::new(10, 8, 0, 2));
        assert_eq!(a6, Some("fd00:8::2".parse().unwrap()));
        let o = options(&s, &ClientPush { address6: a6, ..client26() });
        let i = o.iter().position(|x| x.starts_with("ifconfig ")).unwrap();
        assert_eq!(o[i + 1], "ifconfig-ipv6 fd00:8::2/64 fd00:8::1");
        assert_eq!(settings().address6(Ipv4Addr::new(10, 8, 0, 2)), None);
        assert!(!options(&settings(), &client26()).iter().any(|x| x.contains("ipv6")));
    }

    #[test]
    fn routes_dns_domain() {
        let mut s = settings();
        s.routes = vec!["198.19.0.0/24".parse().unwrap()];
        s.dns = vec!["198.19.0.53".parse().unwrap()];
        s.domain = Some("lab.example".into());
        let o = options(&s, &client26());
        assert_eq!(
            &o[2..5],
            ["route 198.19.0.0 255.255.255.0", "dhcp-option DNS 198.19.0.53", "dhcp-option DOMAIN lab.example"]
        );
    }

    /// The configured extra pushes follow the routes and DNS options, in
    /// configuration order, ahead of what is computed per client.
    #[test]
    fn extra_pushes_follow_the_routes_in_order() {
        let mut s = settings();
        s.domain = Some("lab.example".into());
        s.extra = vec!["redirect-gateway def1 ipv6".into(), "block-outside-dns".into(), "route-ipv6 ::/0".into()];
        let o = options(&s, &client26());
        assert_eq!(
            &o[2..6],
            ["dhcp-option DOMAIN lab.example", "redirect-gateway def1 ipv6", "block-outside-dns", "route-ipv6 ::/0"]
        );
        assert_eq!(o[6], "ping 10");
    }

    #[test]
    fn long_replies_are_continued() {
        let mut s = settings();
        s.routes = (0..100).map(|i| format!("10.{i}.0.0/16").parse().unwrap()).collect();
        let m = messages(&options(&s, &client26()));
        assert!(m.len() > 1);
        for (i, msg) in m.iter().enumerate() {
            assert!(msg.len() <= PUSH_MAX, "message {i} is {} bytes", msg.len());
            assert!(msg.starts_with("PUSH_REPLY,"));
            let tail = if i + 1 == m.len() { ",push-continuation 1" } else { ",push-continuation 2" };
            assert!(msg.ends_with(tail));
        }
        let all: Vec<&str> =
            m.iter().flat_map(|x| x.split(',').skip(1)).filter(|o| !o.starts_with("push-continuation")).collect();
        assert_eq!(all, options(&s, &client26()));
    }
}
