//! The tunnel engine: the OpenVPN protocol as a server, as sans-IO layers
//! (`wire` -> `wrap` -> `reliable` -> `tls` -> `keys` -> `data`) under a thin
//! event loop.

pub mod data;
pub mod keys;
pub mod packet_id;
pub mod reliable;
pub mod tls;
pub mod wire;
pub mod wrap;
