//! The client-config-dir as the engine holds it: each common name's
//! settings, the longest-prefix table of every iroute, and the fixed
//! addresses (reserved so the pool never hands them to someone else).
//!
//! The parent reads the directory (the engine is chrooted) at start and at
//! every reload and sends each file's text (`CcdFile`), then `CcdDone`;
//! the engine parses the same text with the same rules and swaps the whole
//! table in at `CcdDone`, so a reload never leaves half a directory.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use vpnsyncd_config::ccd::{self, ClientConfig, MAX_CCD_FILES};
use vpnsyncd_config::Ipv4Net;

use crate::push::{ClientPush, PushSettings};

/// Every client's settings, and the routes they own.
#[derive(Debug, Default)]
pub struct Table {
    clients: HashMap<String, Arc<ClientConfig>>,
    /// By prefix length, longest first: network -> common name.
    iroutes: BTreeMap<std::cmp::Reverse<u8>, HashMap<u32, String>>,
    fixed: HashMap<Ipv4Addr, String>,
}

impl Table {
    /// Adds one client's settings; the first file of a name or address wins.
    fn insert(&mut self, cn: &str, c: ClientConfig) {
        for r in &c.iroutes {
            self.iroutes.entry(std::cmp::Reverse(r.prefix)).or_default().entry(u32::from(r.addr)).or_insert(cn.into());
        }
        if let Some(a) = c.fixed_address {
            self.fixed.entry(a).or_insert(cn.into());
        }
        self.clients.insert(cn.into(), Arc::new(c));
    }

    pub fn get(&self, cn: &str) -> Option<&Arc<ClientConfig>> {
        self.clients.get(cn)
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The common name whose iroute is the longest prefix holding `dst`.
    pub fn route(&self, dst: Ipv4Addr) -> Option<&str> {
        self.iroutes.iter().find_map(|(std::cmp::Reverse(p), nets)| {
            let mask = if *p == 0 { 0 } else { u32::MAX << (32 - u32::from(*p)) };
            nets.get(&(u32::from(dst) & mask)).map(String::as_str)
        })
    }

    /// Whose fixed address `a` is, if anyone's.
    pub fn fixed_owner(&self, a: Ipv4Addr) -> Option<&str> {
        self.fixed.get(&a).map(String::as_str)
    }
}

/// A table being received from the parent.
#[derive(Debug, Default)]
pub struct Loading {
    table: Table,
    /// Files refused here: they were checked by the parent, so a refusal
    /// means the two disagree; the client is refused (`disable`) rather
    /// than served without its settings.
    pub refused: usize,
}

impl Loading {
    /// One `CcdFile` payload: the common name, a NUL, the file's text.
    pub fn add(&mut self, payload: &[u8], network: Ipv4Net) -> Result<(), &'static str> {
        if self.table.len() >= MAX_CCD_FILES {
            return Err("more client-config-dir files than the engine holds");
        }
        let nul = payload.iter().position(|&b| b == 0).ok_or("client file without a name")?;
        let name = std::str::from_utf8(&payload[..nul]).map_err(|_| "client file name is not UTF-8")?;
        if !ccd::valid_common_name(name) {
            return Err("client file name is not a valid common name");
        }
        let text = std::str::from_utf8(&payload[nul + 1..]).map_err(|_| "client file is not UTF-8")?;
        let c = ccd::parse(&format!("ccd/{name}"), text, network).unwrap_or_else(|e| {
            log::error!("{e}client {name} is refused until its file is fixed");
            self.refused += 1;
            ClientConfig { disable: true, ..ClientConfig::default() }
        });
        self.table.insert(name, c);
        Ok(())
    }

    pub fn finish(self) -> Table {
        self.table
    }
}

/// The PUSH_REPLY options of a client with settings `c`: `push-reset`
/// drops the server-wide routes, DNS and domain; its own pushes come after
/// the server's, before the per-session options (as OpenVPN orders them).
pub fn push_options(s: &PushSettings, client: &ClientPush, c: Option<&ClientConfig>) -> Vec<String> {
    let Some(c) = c else { return crate::push::options(s, client) };
    let reset;
    let s = if c.push_reset {
        reset = PushSettings { routes: vec![], dns: vec![], domain: None, extra: vec![], ..s.clone() };
        &reset
    } else {
        s
    };
    let mut o = crate::push::options(s, client);
    // The per-session part starts at ifconfig (or at the compression
    // option before it).
    let at =
        o.iter().position(|x| x.starts_with("comp-lzo") || x.starts_with("compress") || x.starts_with("ifconfig "));
    let at = at.unwrap_or(o.len());
    o.splice(at..at, c.push.iter().cloned());
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpnsyncd_config::ccd::CcdFile;

    fn net() -> Ipv4Net {
        "10.8.0.0/24".parse().unwrap()
    }

    fn table(files: &[(&str, &str)]) -> Table {
        let mut l = Loading::default();
        for (n, t) in files {
            l.add(&CcdFile { name: n.to_string(), text: t.to_string() }.encode(), net()).unwrap();
        }
        l.finish()
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&[
            ("wide", "iroute 192.168.0.0 255.255.0.0\n"),
            ("narrow", "iroute 192.168.5.0 255.255.255.0\niroute 172.16.0.0 255.240.0.0\n"),
        ]);
        assert_eq!(t.route(Ipv4Addr::new(192, 168, 5, 9)), Some("narrow"));
        assert_eq!(t.route(Ipv4Addr::new(192, 168, 6, 9)), Some("wide"));
        assert_eq!(t.route(Ipv4Addr::new(172, 31, 255, 1)), Some("narrow"));
        assert_eq!(t.route(Ipv4Addr::new(172, 32, 0, 1)), None);
    }

    #[test]
    fn bad_files_disable_their_client() {
        let mut l = Loading::default();
        l.add(b"eve\0ifconfig-push 1.2.3.4\n", net()).unwrap();
        assert!(l.add(b"../x\0disable\n", net()).is_err());
        assert!(l.add(b"no-name", net()).is_err());
        assert_eq!(l.refused, 1);
        let t = l.finish();
        assert!(t.get("eve").unwrap().disable);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn pushes_and_reset() {
        let s = PushSettings {
            server_address: Ipv4Addr::new(10, 8, 0, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            routes: vec!["198.19.0.0/24".parse().unwrap()],
            dns: vec![],
            domain: None,
            keepalive: (10, 60),
            extra: vec!["block-outside-dns".into()],
            network: net(),
            network6: None,
        };
        let c = ClientPush {
            address: Ipv4Addr::new(10, 8, 0, 9),
            address6: None,
            peer_id: None,
            cipher: None,
            cc_exit: false,
            tls_ekm: false,
            tun_mtu: None,
            compression: None,
        };
        let t = table(&[("a", "push \"route 192.168.9.0 255.255.255.0\"\n"), ("b", "push-reset\n")]);
        let o = push_options(&s, &c, t.get("a").map(|a| &**a));
        let i = o.iter().position(|x| x == "route 192.168.9.0 255.255.255.0").unwrap();
        assert!(o.contains(&"route 198.19.0.0 255.255.255.0".to_string()));
        assert!(o[i + 1].starts_with("ifconfig 10.8.0.9"), "{o:?}");
        let o = push_options(&s, &c, t.get("b").map(|a| &**a));
        assert!(!o.iter().any(|x| x.starts_with("route ") || x == "block-outside-dns"), "{o:?}");
        assert_eq!(push_options(&s, &c, None), crate::push::options(&s, &c));
    }
}
