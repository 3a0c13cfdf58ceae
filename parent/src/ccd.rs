//! The client-config-dir, read by the parent (root, not chrooted) at start
//! and at every reload, and sent whole to the engine: one `CcdFile` a file,
//! then `CcdDone`. Reading it all at once (rather than per client) keeps
//! the engine's connection path free of round trips to the parent and
//! lets the engine route every iroute, ghosts' included, from the start;
//! an edit applies at the next `vpnsyncctl reload` or SIGHUP. The parent
//! keeps the iroute networks for the kernel routes (crate::route).

use std::collections::BTreeSet;
use std::io;

use vpnsyncd_common::imsg::{CHILD_MAXSIZE, HEADER_SIZE};
use vpnsyncd_common::msg::ImsgType;
use vpnsyncd_config::{ccd, Config, FileKind, Ipv4Net};

use crate::children::Child;

/// The largest file, with its name and the NUL, fits one message.
const _: () = assert!(FileKind::ClientConfig.max_size() as usize + 256 + 1 + HEADER_SIZE <= CHILD_MAXSIZE);

/// Sends the directory of `conf` (if it names one) to the engine; each
/// problem is logged (its client is refused, see `ccd::load_dir`).
/// Returns every iroute network of the directory.
pub fn send(engine: &mut Child, conf: &Config) -> io::Result<BTreeSet<Ipv4Net>> {
    let Some(dir) = &conf.client_config_dir else { return Ok(BTreeSet::new()) };
    let (files, errors) = ccd::load_dir(dir, conf.network);
    for e in errors {
        log::error!("{e}");
    }
    for f in &files {
        engine.ibuf.compose(ImsgType::CcdFile as u32, 0, None, &f.encode())?;
    }
    log::info!("client-config-dir {}: {} file(s)", dir.display(), files.len());
    engine.ibuf.compose(ImsgType::CcdDone as u32, 0, None, &[])?;
    Ok(iroutes(&files, conf.network))
}

/// The iroute networks of `files` (which `load_dir` checked: one that
/// does not parse has none).
fn iroutes(files: &[ccd::CcdFile], network: Ipv4Net) -> BTreeSet<Ipv4Net> {
    files.iter().filter_map(|f| ccd::parse(&f.name, &f.text, network).ok()).flat_map(|c| c.iroutes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_files_iroutes_once() {
        let file = |name: &str, text: &str| ccd::CcdFile { name: name.into(), text: text.into() };
        let files = [
            file("a", "iroute 192.168.50.0 255.255.255.0\niroute 172.16.0.0 255.240.0.0\n"),
            file("b", "iroute 192.168.50.0 255.255.255.0\ndisable\n"),
            file("c", "push-reset\n"),
            file("d", "iroute 10.8.0.0 255.255.255.0\n"),
        ];
        let got: Vec<String> =
            iroutes(&files, "10.8.0.0/24".parse().unwrap()).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["172.16.0.0/12", "192.168.50.0/24"]);
    }
}
