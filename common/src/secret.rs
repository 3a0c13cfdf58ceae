//! Key material outside the engine's data path: bytes that are zeroized
//! when dropped. Key files are read by `vpnsyncd_config::read_file` into a
//! buffer sized from the file (no reallocation leaves a copy behind) and
//! become a `Secret` without a copy.

use zeroize::Zeroizing;

/// The bytes of a key file, zeroized on drop.
pub type Secret = Zeroizing<Vec<u8>>;
