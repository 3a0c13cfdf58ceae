//! The tunnel engine: the OpenVPN protocol as a server, as sans-IO layers
//! (`wire` -> `wrap` -> `reliable` -> `tls` -> `keys` -> `data`) under a thin
//! event loop (`io`), with the session table (`server`) and the control
//! socket (`control`).

pub mod ackfilter;
pub mod admission;
mod assign;
pub mod auth;
pub mod batch;
pub mod ccd;
pub mod client;
pub mod control;
pub mod cookie;
pub mod data;
pub mod earlyneg;
pub mod io;
pub mod ip6;
pub mod keys;
pub mod lease;
pub mod mgmt;
pub mod moderate;
pub mod offload;
pub mod packet_id;
pub mod pool;
pub mod push;
pub mod quiet;
pub mod record;
pub mod reliable;
pub mod reneglimit;
pub mod sendspace;
pub mod sentkeys;
pub mod server;
pub mod session;
pub mod settings;
pub mod shard;
pub mod sleep;
pub mod status;
pub mod syncglue;
pub mod takeover;
#[cfg(test)]
mod testclient;
pub mod timers;
pub mod tls;
pub mod tlscryptv2;
pub mod token;
pub mod train;
pub mod tunio;
pub mod wire;
pub mod wrap;
