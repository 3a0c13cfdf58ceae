//! The session table: every connected client by peer-id, with its virtual
//! address from the pool. The protocol state of each client lives in its
//! session; this table is what `vpnsyncctl show clients` reads.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use vpnsyncd_common::ctl::ClientInfo;
use vpnsyncd_config::Config;

use crate::pool::Pool;

/// What the table knows of one client.
#[derive(Clone, Debug)]
pub struct ClientEntry {
    pub common_name: String,
    pub real_address: SocketAddr,
    pub virtual_ip: Ipv4Addr,
    pub cipher: &'static str,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connected_since: u64,
    pub key_id: u8,
    pub last_rekey: u64,
}

/// All sessions of this engine.
pub struct Server {
    pool: Pool,
    max_clients: u32,
    clients: BTreeMap<u32, ClientEntry>,
}

impl Server {
    pub fn new(conf: &Config) -> Self {
        Server {
            pool: Pool::new(conf.pool.0, conf.pool.1),
            max_clients: conf.max_clients,
            clients: BTreeMap::new(),
        }
    }

    /// Applies a reloaded configuration to the table's limits.
    pub fn reconfigure(&mut self, conf: &Config) {
        self.pool.resize(conf.pool.0, conf.pool.1);
        self.max_clients = conf.max_clients;
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// One `show clients` record per session, ordered by peer-id.
    pub fn client_infos(&self) -> Vec<ClientInfo> {
        self.clients
            .iter()
            .map(|(peer_id, c)| ClientInfo {
                common_name: c.common_name.clone(),
                real_address: c.real_address.to_string(),
                virtual_ip: c.virtual_ip.to_string(),
                cipher: c.cipher.to_string(),
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                connected_since: c.connected_since,
                key_id: c.key_id,
                last_rekey: c.last_rekey,
                peer_id: *peer_id,
            })
            .collect()
    }

    /// Drops every session of common name `cn`; returns how many.
    pub fn kill_client(&mut self, cn: &str) -> usize {
        let victims: Vec<u32> = self
            .clients
            .iter()
            .filter(|(_, c)| c.common_name == cn)
            .map(|(id, _)| *id)
            .collect();
        for id in &victims {
            if let Some(c) = self.clients.remove(id) {
                self.pool.release(c.virtual_ip);
                log::info!("{cn}: disconnected by the operator");
            }
        }
        victims.len()
    }
}
