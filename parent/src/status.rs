//! Writes the status file that the engine renders (engine/src/status.rs).
//!
//! The engine is chrooted without a filesystem, so it sends the text in
//! `StatusPart` pieces and a `StatusCommit`; the parent, which runs as root
//! outside the chroot, writes it to a temporary file beside the target and
//! renames it over the target, so that a reader sees the old file or the
//! new one, never half of one. Passing the engine a directory descriptor
//! instead would need openat/renameat in its seccomp allow-list and a
//! writable directory reachable from the confined process.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest status file accepted: 65534 clients of two lines of about
/// 200 bytes each, with room to spare. Pieces beyond it are dropped and
/// that report is not written.
pub const MAX_STATUS: usize = 32 << 20;

/// The report being received.
#[derive(Default)]
pub struct StatusWriter {
    text: Vec<u8>,
    overflow: bool,
}

impl StatusWriter {
    pub fn part(&mut self, bytes: &[u8]) {
        if self.text.len() + bytes.len() > MAX_STATUS {
            self.overflow = true;
        } else if !self.overflow {
            self.text.extend_from_slice(bytes);
        }
    }

    /// Writes what was received to `path` (mode 0640) and starts afresh.
    pub fn commit(&mut self, path: &Path) -> io::Result<()> {
        let text = std::mem::take(&mut self.text);
        if std::mem::take(&mut self.overflow) {
            return Err(io::Error::other(format!("status report beyond {MAX_STATUS} bytes, not written")));
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let res = (|| {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o640).open(&tmp)?;
            f.write_all(&text)?;
            fs::rename(&tmp, path)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map_err(|e| io::Error::new(e.kind(), format!("status file {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_bounds_it() {
        let dir = std::env::temp_dir().join(format!("vpnsyncd-status-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("status");
        let mut w = StatusWriter::default();
        w.part(b"TITLE,x\n");
        w.part(b"END\n");
        w.commit(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"TITLE,x\nEND\n");
        w.part(b"END\n");
        w.commit(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"END\n", "pieces do not carry over");
        w.part(&vec![b'x'; MAX_STATUS]);
        w.part(b"y");
        assert!(w.commit(&path).is_err(), "an oversized report is refused");
        assert_eq!(fs::read(&path).unwrap(), b"END\n", "and the last good file stays");
        w.part(b"ok\n");
        w.commit(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"ok\n", "the next report is written again");
        assert!(!dir.join("status.tmp").exists());
        assert!(w.commit(&dir.join("missing/status")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
