//! The cluster's pre-shared sync key, as read from the `key` file of the
//! `sync` block.
//!
//! The file holds 64 hex digits so that `openssl rand -hex 32 > key` makes
//! one and an operator can compare two machines' keys by eye (or by hash).

use std::fmt;

use zeroize::Zeroize;

/// Length of the sync key in bytes.
pub const KEY_LEN: usize = 32;

/// The 32 key bytes. `Debug` never shows them, so that a key cannot leak
/// into a log line through a `{:?}` of a containing struct, and they are
/// zeroized when the key is dropped (every clone too).
#[derive(Clone, PartialEq, Eq)]
pub struct SyncKey([u8; KEY_LEN]);

impl SyncKey {
    /// Parses the file's bytes: hex digits, any whitespace ignored (a final
    /// newline, or a key split over lines).
    pub fn parse(bytes: &[u8]) -> Result<SyncKey, String> {
        // Digits go straight into the key (no buffer of digits to clean up);
        // on an error the partial key is zeroized as it is dropped.
        let mut key = SyncKey([0u8; KEY_LEN]);
        let mut count = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            if b.is_ascii_whitespace() {
                continue;
            }
            match (b as char).to_digit(16) {
                Some(d) => {
                    if let Some(k) = key.0.get_mut(count / 2) {
                        *k = *k << 4 | d as u8;
                    }
                    count += 1;
                }
                None => {
                    return Err(format!(
                        "sync key: byte {} is not a hex digit (64 hex digits expected, e.g. `openssl rand -hex 32`)",
                        i + 1
                    ))
                }
            }
        }
        if count % 2 == 1 {
            return Err(format!(
                "sync key: odd number of hex digits ({count}), 64 expected (e.g. `openssl rand -hex 32`)"
            ));
        }
        let n = count / 2;
        if n != KEY_LEN {
            return Err(format!(
                "sync key: {n} bytes, {KEY_LEN} expected (64 hex digits, e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(key)
    }

    /// The key bytes, for key derivation only.
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for SyncKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";

    #[test]
    fn parses_hex_ignoring_whitespace() {
        let k = SyncKey::parse(format!("{}\n  {}\r\n", &HEX[..10], &HEX[10..]).as_bytes()).unwrap();
        let want: Vec<u8> = (0..32).collect();
        assert_eq!(k.bytes().as_slice(), want.as_slice());
        assert_eq!(format!("{k:?}"), "SyncKey(..)");
    }

    #[test]
    fn says_what_is_wrong() {
        let short = SyncKey::parse(&HEX.as_bytes()[..62]).unwrap_err();
        assert_eq!(short, "sync key: 31 bytes, 32 expected (64 hex digits, e.g. `openssl rand -hex 32`)");
        let odd = SyncKey::parse(&HEX.as_bytes()[..63]).unwrap_err();
        assert!(odd.contains("odd number of hex digits (63)"), "{odd}");
        let bad = SyncKey::parse(format!("{}zz", &HEX[..62]).as_bytes()).unwrap_err();
        assert!(bad.contains("byte 63 is not a hex digit"), "{bad}");
        assert!(SyncKey::parse(b"").unwrap_err().contains("0 bytes"));
        assert!(SyncKey::parse(format!("{HEX}00").as_bytes()).unwrap_err().contains("33 bytes"));
    }
}
