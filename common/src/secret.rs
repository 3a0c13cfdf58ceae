//! Key material outside the engine's data path: bytes that are zeroized
//! when dropped, and a key-file reader that leaves no copy behind.

use std::io::{self, Read};
use std::path::Path;

use zeroize::Zeroizing;

/// The bytes of a key file, zeroized on drop.
pub type Secret = Zeroizing<Vec<u8>>;

/// Reads a whole key file into one buffer sized from its length, so that
/// reading never grows (reallocates) it and leaves a copy in freed memory.
/// A file that grows while it is read still reads whole, through a grown,
/// zeroized buffer.
pub fn read_file(path: &Path) -> io::Result<Secret> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(ctx)?;
    let size = f.metadata().map_err(ctx)?.len() as usize;
    // One spare byte shows end-of-file without a probe into another buffer.
    let mut buf = Zeroizing::new(vec![0u8; size + 1]);
    let mut n = 0;
    loop {
        if n == buf.len() {
            let mut grown = Zeroizing::new(vec![0u8; 2 * buf.len()]);
            grown[..n].copy_from_slice(&buf[..n]);
            buf = grown;
        }
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ctx(e)),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_whole_files_and_names_missing_ones() {
        let dir = std::env::temp_dir().join(format!("vpnsyncd-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        assert_eq!(read_file(&path).unwrap().as_slice(), content.as_slice());
        std::fs::write(&path, b"").unwrap();
        assert!(read_file(&path).unwrap().is_empty());
        let e = read_file(&dir.join("missing")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", dir.join("missing").display())), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
