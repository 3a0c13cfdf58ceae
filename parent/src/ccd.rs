//! The client-config-dir, read by the parent (root, not chrooted) at start
//! and at every reload, and sent whole to the engine: one `CcdFile` a file,
//! then `CcdDone`. Reading it all at once (rather than per client) keeps
//! the engine's connection path free of round trips to the parent and
//! lets the engine route every iroute, ghosts' included, from the start;
//! an edit applies at the next `vpnsyncctl reload` or SIGHUP.

use std::io;

use vpnsyncd_common::imsg::{CHILD_MAXSIZE, HEADER_SIZE};
use vpnsyncd_common::msg::ImsgType;
use vpnsyncd_config::{ccd, Config, FileKind};

use crate::children::Child;

/// The largest file, with its name and the NUL, fits one message.
const _: () = assert!(FileKind::ClientConfig.max_size() as usize + 256 + 1 + HEADER_SIZE <= CHILD_MAXSIZE);

/// Sends the directory of `conf` (if it names one) to the engine; each
/// problem is logged (its client is refused, see `ccd::load_dir`).
pub fn send(engine: &mut Child, conf: &Config) -> io::Result<()> {
    let Some(dir) = &conf.client_config_dir else { return Ok(()) };
    let (files, errors) = ccd::load_dir(dir, conf.network);
    for e in errors {
        log::error!("{e}");
    }
    for f in &files {
        engine.ibuf.compose(ImsgType::CcdFile as u32, 0, None, &f.encode())?;
    }
    log::info!("client-config-dir {}: {} file(s)", dir.display(), files.len());
    engine.ibuf.compose(ImsgType::CcdDone as u32, 0, None, &[])
}
