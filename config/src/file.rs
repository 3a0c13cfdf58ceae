//! The one way vpnsyncd reads a file named by its configuration: the
//! configuration itself, its includes and every key file.
//!
//! A configuration is outside input, and so are the files it names: a path
//! may be a FIFO (open(2) would block forever), a device such as /dev/zero
//! (read would never end), or simply huge. So the file is opened with
//! `O_NONBLOCK` (a FIFO then opens at once), checked with fstat(2) on the
//! open descriptor (no race with a rename), refused unless it is a regular
//! file within the size of its kind, and read no further than that size in
//! case it grows meanwhile.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::Pos;

/// What a file is for; each kind has its own size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// vpnsyncd.conf and the files it includes.
    Config,
    /// CA, certificate or CRL (PEM): a CRL of a large CA can be long.
    Certificate,
    /// The server's private key (PEM).
    PrivateKey,
    /// A tls-auth, tls-crypt or sync key: a few hundred bytes of text.
    StaticKey,
    /// A file of the client-config-dir: a few lines.
    ClientConfig,
}

impl FileKind {
    /// The largest file of this kind, in bytes.
    pub const fn max_size(self) -> u64 {
        match self {
            FileKind::Config => 1 << 20,
            FileKind::Certificate => 3 << 20,
            FileKind::PrivateKey => 64 << 10,
            FileKind::StaticKey => 8 << 10,
            FileKind::ClientConfig => 64 << 10,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileKind::Config => "a configuration file",
            FileKind::Certificate => "a certificate, CA or CRL file",
            FileKind::PrivateKey => "a private key file",
            FileKind::StaticKey => "a static key file",
            FileKind::ClientConfig => "a client configuration file",
        }
    }
}

/// A size for messages: "1 MiB", "64 KiB" or bytes.
pub(crate) fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

fn file_type(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads the regular file at `path`, of at most `kind.max_size()` bytes.
/// Errors do not name the path (the caller knows which statement named
/// it); a missing or unreadable file keeps its `io::ErrorKind`, a file of
/// the wrong type or size is `InvalidInput`.
pub fn read_file(path: &Path, kind: FileKind) -> io::Result<Vec<u8>> {
    let refuse = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let mut f = File::options().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(refuse(format!("{} is needed here, and this is {}", kind.name(), file_type(meta.file_type()))));
    }
    let max = kind.max_size();
    let too_big = |n: u64| refuse(format!("{} bytes is more than the {} {} may have", n, human(max), kind.name()));
    if meta.len() > max {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut f).take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// `bytes` as text, or where the first byte that is not UTF-8 is.
pub(crate) fn utf8(bytes: Vec<u8>) -> Result<String, (Pos, String)> {
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        // `good` is valid UTF-8 up to here, so counting chars is exact.
        let col = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let byte = e.as_bytes()[good.len()];
        (
            Pos { line: line as u32, col: col as u32 },
            format!("byte 0x{byte:02x} is not UTF-8: the configuration must be UTF-8 text"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn regular_files_within_their_size() {
        let dir = std::env::temp_dir().join(format!("vpnsyncd-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small");
        std::fs::write(&small, b"0123456789abcdef").unwrap();
        assert_eq!(read_file(&small, FileKind::StaticKey).unwrap(), b"0123456789abcdef");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 8 * 1024 + 1]).unwrap();
        let e = read_file(&big, FileKind::StaticKey).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "8193 bytes is more than the 8 KiB a static key file may have");
        assert!(read_file(&big, FileKind::PrivateKey).is_ok());
        let e = read_file(&dir, FileKind::Config).unwrap_err();
        assert_eq!(e.to_string(), "a configuration file is needed here, and this is a directory");
        assert_eq!(read_file(&dir.join("none"), FileKind::Config).unwrap_err().kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Neither a FIFO nobody writes to nor an endless device holds us up.
    #[test]
    fn fifos_and_devices_are_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("vpnsyncd-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).unwrap();
        let start = Instant::now();
        let e = read_file(&fifo, FileKind::Certificate).unwrap_err();
        assert_eq!(e.to_string(), "a certificate, CA or CRL file is needed here, and this is a FIFO");
        let e = read_file(Path::new("/dev/zero"), FileKind::StaticKey).unwrap_err();
        assert_eq!(e.to_string(), "a static key file is needed here, and this is a character device");
        assert!(start.elapsed() < Duration::from_secs(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_utf8_has_a_place() {
        assert_eq!(utf8(b"ok\n".to_vec()).unwrap(), "ok\n");
        let (pos, msg) = utf8(b"a\n\xc3\xa9t\xe9\n".to_vec()).unwrap_err();
        assert_eq!(pos, Pos { line: 2, col: 3 });
        assert_eq!(msg, "byte 0xe9 is not UTF-8: the configuration must be UTF-8 text");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(1 << 20), "1 MiB");
        assert_eq!(human(3 << 20), "3 MiB");
        assert_eq!(human(64 << 10), "64 KiB");
        assert_eq!(human(1000), "1000 bytes");
    }
}
