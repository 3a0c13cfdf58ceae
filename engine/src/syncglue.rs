//! The `Sync*` imsgs between the engine and the syncer, both ways: what
//! the server core hands out ([`SyncOut`]) as imsg payloads, and a
//! syncer's imsg applied to the server core. Sans-IO, so that the cluster
//! simulation drives exactly the path the daemon runs.
//!
//! Payloads (the syncer's `imsgs` module reads and writes the same):
//! - SyncUpsert: session id (8) | generation (8) | record
//! - SyncProgress: repeated session id (8) | generation (8) | len u16 | progress
//! - SyncDelete: session id (8) | generation of its last record (8)

use vpnsyncd_common::codec::{DecodeError, Reader, Writer};
use vpnsyncd_common::msg::ImsgType;

use crate::record::{Progress, SessionRecord};
use crate::server::{Server, SyncOut};
use crate::session::{Gen, Now};

/// The imsg carrying `out`.
pub fn encode(out: SyncOut) -> (ImsgType, Vec<u8>) {
    let mut w = Writer::new();
    let ty = match out {
        SyncOut::Upsert(sid, gen, rec) => {
            w.0.extend_from_slice(&sid);
            w.u64(gen.0).0.extend_from_slice(&rec);
            ImsgType::SyncUpsert
        }
        SyncOut::Delete(sid, gen) => {
            w.0.extend_from_slice(&sid);
            w.u64(gen.0);
            ImsgType::SyncDelete
        }
        SyncOut::Progress(entries) => {
            for (sid, gen, p) in entries {
                w.0.extend_from_slice(&sid);
                w.u64(gen.0).u16(p.len() as u16).0.extend_from_slice(&p);
            }
            ImsgType::SyncProgress
        }
    };
    (ty, w.finish())
}

/// Everything the server queued for the syncer, as imsgs.
pub fn drain(server: &mut Server) -> Vec<(ImsgType, Vec<u8>)> {
    std::mem::take(&mut server.sync_out).into_iter().map(encode).collect()
}

fn head(r: &mut Reader<'_>) -> Result<([u8; 8], Gen), DecodeError> {
    let sid: [u8; 8] = r.take(8)?.try_into().map_err(|_| DecodeError("short session id"))?;
    Ok((sid, Gen(r.u64()?)))
}

/// Applies a syncer's `Sync*` imsg (or its `SyncReady`) to the server. A record or progress
/// that does not decode is refused (and counted by the server or logged),
/// never fatal: it came from another machine.
pub fn apply(server: &mut Server, now: Now, ty: ImsgType, data: &[u8]) -> Result<(), DecodeError> {
    let mut r = Reader::new(data);
    match ty {
        ImsgType::SyncUpsert => {
            let (_, gen) = head(&mut r)?;
            match SessionRecord::decode(r.rest()) {
                Ok(rec) => {
                    let _ = server.install_ghost(now, gen, &rec);
                }
                Err(e) => log::warn!("sync: session record refused: {}", e.0),
            }
        }
        ImsgType::SyncProgress => {
            while !r.is_empty() {
                let (sid, gen) = head(&mut r)?;
                let n = r.u16()? as usize;
                match Progress::decode(r.take(n)?) {
                    Ok(p) => server.ghost_progress(now, &sid, gen, &p),
                    Err(e) => log::warn!("sync: progress refused: {}", e.0),
                }
            }
        }
        ImsgType::SyncDelete => {
            let (sid, gen) = head(&mut r)?;
            r.end()?;
            server.ghost_delete(&sid, gen);
        }
        ImsgType::SyncReady => log::info!("sync: ready, holding every session of the cluster"),
        _ => return Err(DecodeError("not a session sync imsg")),
    }
    Ok(())
}
