//! `vpnsyncctl genkey`: tls-crypt-v2 keys in OpenVPN's PEM formats, so that
//! stock clients and servers take them as they take keys of
//! `openvpn --genkey`. Works without the daemon.
//!
//! ```text
//! genkey tls-crypt-v2-server FILE
//! genkey tls-crypt-v2-client SERVERKEY FILE [METADATA]
//! ```
//!
//! METADATA is base64, as for openvpn; without it the key carries its
//! creation time. Files are created with mode 0600 and never overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use vpnsyncd_config::{read_file, FileKind};
use vpnsyncd_engine::tlscryptv2::{base64_decode, ClientKeyFile, ServerKey};

const USAGE: &str = "usage: vpnsyncctl genkey tls-crypt-v2-server FILE\n       \
                     vpnsyncctl genkey tls-crypt-v2-client SERVERKEY FILE [METADATA]";

/// Runs `genkey` with the words after it; returns what to print.
pub fn run(args: &[String], now: u64) -> Result<String, String> {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["tls-crypt-v2-server", file] => {
            let key = ServerKey::generate().map_err(|e| e.to_string())?;
            write_new(Path::new(file), &key.to_pem())?;
            Ok(format!("{file}: tls-crypt-v2 server key written\n"))
        }
        ["tls-crypt-v2-client", server, file, rest @ ..] if rest.len() <= 1 => {
            let user = match rest.first() {
                Some(m) => Some(base64_decode(m).map_err(|e| format!("metadata \"{m}\": {e} (give it in base64)"))?),
                None => None,
            };
            let text = read_file(Path::new(server), FileKind::StaticKey).map_err(|e| format!("{server}: {e}"))?;
            let key = ServerKey::parse(&text).map_err(|e| format!("{server}: {e}"))?;
            let client = ClientKeyFile::generate(&key, user.as_deref(), now).map_err(|e| e.to_string())?;
            write_new(Path::new(file), &client.to_pem())?;
            Ok(format!("{file}: tls-crypt-v2 client key written\n"))
        }
        _ => Err(USAGE.to_string()),
    }
}

/// Creates `path` with mode 0600; an existing file is an error.
fn write_new(path: &Path, text: &str) -> Result<(), String> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!("{}: exists; not overwritten", path.display()),
        _ => format!("{}: {e}", path.display()),
    })?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn server_and_client_keys() {
        let dir = std::env::temp_dir().join(format!("vpnsyncctl-genkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let (server, client, meta) = (dir.join("s.key"), dir.join("c.key"), dir.join("m.key"));
        let s = server.to_str().unwrap();
        run(&args(&["tls-crypt-v2-server", s]), 0).unwrap();
        assert_eq!(std::fs::metadata(&server).unwrap().permissions().mode() & 0o777, 0o600);
        let err = run(&args(&["tls-crypt-v2-server", s]), 0).unwrap_err();
        assert!(err.ends_with("exists; not overwritten"), "{err}");
        run(&args(&["tls-crypt-v2-client", s, client.to_str().unwrap()]), 1_800_000_000).unwrap();
        run(&args(&["tls-crypt-v2-client", s, meta.to_str().unwrap(), "YWxpY2U="]), 0).unwrap();
        assert_eq!(std::fs::metadata(&client).unwrap().permissions().mode() & 0o777, 0o600);

        let key = ServerKey::parse(&std::fs::read(&server).unwrap()).unwrap();
        let c = ClientKeyFile::parse(&std::fs::read(&client).unwrap()).unwrap();
        let unwrapped = key.unwrap_client_key(&c.wkc).unwrap();
        assert_eq!(unwrapped.metadata, [&[1u8][..], &1_800_000_000u64.to_be_bytes()].concat());
        let m = ClientKeyFile::parse(&std::fs::read(&meta).unwrap()).unwrap();
        assert_eq!(key.unwrap_client_key(&m.wkc).unwrap().metadata, b"\x00alice");

        let err = run(&args(&["tls-crypt-v2-client", s, dir.join("x").to_str().unwrap(), "***"]), 0).unwrap_err();
        assert!(err.contains("give it in base64"), "{err}");
        let c = client.to_str().unwrap();
        let err = run(&args(&["tls-crypt-v2-client", c, dir.join("y").to_str().unwrap()]), 0).unwrap_err();
        assert!(err.contains("no -----BEGIN OpenVPN tls-crypt-v2 server key----- line"), "{err}");
        assert!(!dir.join("y").exists(), "nothing written on error");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn usage_errors() {
        for bad in [&[][..], &["tls-crypt-v2-server"], &["tls-crypt-v2-client", "s"], &["secret", "f"]] {
            assert_eq!(run(&args(bad), 0), Err(USAGE.to_string()), "{bad:?}");
        }
        let too_many = args(&["tls-crypt-v2-client", "s", "f", "m", "x"]);
        assert_eq!(run(&too_many, 0), Err(USAGE.to_string()));
    }
}
