//! Giving an authenticated client its tunnel address: its client-config-dir
//! settings (`disable`, `ifconfig-push`), the `duplicate-cn` policy, its
//! lease, and only then the lowest free address of the pool that is not
//! leased or fixed for another client.

use std::net::Ipv4Addr;

use vpnsyncd_config::DuplicateCn;

use crate::server::Server;
use crate::session::Now;

/// Addresses leased or fixed for others that one allocation skips at most
/// before it takes one of them anyway (the pool is then nearly full).
const MAX_SKIPPED: usize = 64;

impl Server {
    /// Session `id` finished its first key exchange: it gets an address
    /// (and its settings) or is closed with the reason.
    pub(crate) fn assign(&mut self, now: Now, id: u32) {
        let cn = self.session_mut(id).and_then(|s| s.common_name.clone()).unwrap_or_default();
        match self.address_for(now, id, &cn) {
            Ok(ip) => {
                self.pool.claim(ip);
                self.by_vip.insert(ip, id);
                self.by_cn.insert(cn.clone(), id);
                self.leases.set(&cn, ip, now.mono);
                let cc = self.ccd.get(&cn).cloned();
                let ip6 = self.session_mut(id).and_then(|s| {
                    s.client_config = cc;
                    s.set_address(ip, now);
                    s.virtual_ip6
                });
                if let Some(ip6) = ip6 {
                    self.by_vip6.insert(ip6, id);
                }
            }
            Err(why) => {
                if let Some(s) = self.session_mut(id) {
                    log::warn!("{}: refused: {why}", s.label());
                    s.close(format!("refused: {why}"));
                }
            }
        }
    }

    fn address_for(&mut self, now: Now, id: u32, cn: &str) -> Result<Ipv4Addr, String> {
        if self.ccd_pending {
            return Err("the client-config-dir is not loaded yet".into());
        }
        let cc = self.ccd.get(cn).cloned();
        if cc.as_ref().is_some_and(|c| c.disable) {
            return Err(format!("{cn} is disabled in the client-config-dir"));
        }
        let others: Vec<u32> = self
            .sessions
            .iter()
            .flatten()
            .filter(|s| s.peer_id != id && s.virtual_ip.is_some() && s.common_name.as_deref() == Some(cn))
            .map(|s| s.peer_id)
            .collect();
        match self.duplicate_cn {
            DuplicateCn::Refuse if !others.is_empty() => {
                return Err(format!("{cn} is already connected (duplicate-cn refuse)"));
            }
            DuplicateCn::Replace => {
                for o in others {
                    self.remove(o, "replaced by a new connection of its common name (duplicate-cn replace)");
                }
            }
            _ => {}
        }
        if let Some(a) = cc.and_then(|c| c.fixed_address) {
            return match self.by_vip.contains_key(&a) {
                true => Err(format!("its fixed address {a} is in use by another session")),
                false => Ok(a),
            };
        }
        let mine = |s: &Server, a: Ipv4Addr| s.ccd.fixed_owner(a).is_none_or(|o| o == cn);
        if let Some(a) = self.leases.get(cn, now.mono) {
            if self.pool.contains(a) && !self.by_vip.contains_key(&a) && mine(self, a) {
                return Ok(a);
            }
        }
        let mut skipped = Vec::new();
        let got = loop {
            match self.pool.allocate() {
                Some(a) if !mine(self, a) || self.leases.held_by_other(a, cn, now.mono) => {
                    skipped.push(a);
                    if skipped.len() > MAX_SKIPPED {
                        break None;
                    }
                }
                other => break other,
            }
        };
        for a in &skipped {
            self.pool.release(*a);
        }
        // Nearly full: a disconnected client's lease gives way.
        got.or_else(|| skipped.into_iter().find(|&a| mine(self, a)))
            .ok_or_else(|| "the address pool is exhausted".into())
    }
}
