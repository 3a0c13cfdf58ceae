//! What every vpnsyncd process shares: imsg framing, the message catalogue,
//! payload encoding, control records, logging, process titles and confinement.

pub mod auth;
pub mod backpressure;
pub mod child;
pub mod codec;
pub mod ctl;
pub mod heartbeat;
pub mod imsg;
pub mod log;
pub mod msg;
pub mod poll;
pub mod proctitle;
pub mod sandbox;
#[cfg(target_os = "linux")]
pub mod seccomp;
pub mod secret;
pub mod steer;

/// The version shown by `vpnsyncctl show summary`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Unix seconds now, for the Unix times of control records. Protocol cores
/// take their time as an argument instead.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
