//! The engine's side of the engine <-> syncer channel, in one place: the
//! `Sync*` imsg payloads the engine sends and receives, and what a role
//! change does to the session table. The I/O shell (`io`) and the cluster
//! simulation (a test) both go through here, so the simulation exercises
//! the path the daemon runs, not a copy of it.
//!
//! Payloads (the syncer's `imsgs` module is the other end):
//! - `SyncUpsert`: our session id (8 bytes), then the encoded record;
//! - `SyncDelete`: the session id;
//! - `SyncProgress`: repeated `session id | u16 length | encoded progress`.

use vpnsyncd_common::codec::{DecodeError, Reader, Writer};
use vpnsyncd_common::msg::{ImsgType, Role};

use crate::record::{Progress, SessionRecord};
use crate::server::{Server, SyncOut};
use crate::session::Now;

/// The imsg that carries one of the engine's sync messages to the syncer.
pub fn encode(out: SyncOut) -> (ImsgType, Vec<u8>) {
    match out {
        SyncOut::Upsert(sid, rec) => (ImsgType::SyncUpsert, [&sid[..], &rec].concat()),
        SyncOut::Delete(sid) => (ImsgType::SyncDelete, sid.to_vec()),
        SyncOut::Progress(entries) => {
            let mut w = Writer::new();
            for (sid, p) in entries {
                w.0.extend_from_slice(&sid);
                w.u16(p.len() as u16).0.extend_from_slice(&p);
            }
            (ImsgType::SyncProgress, w.finish())
        }
    }
}

/// Everything the server queued for the syncer, as imsgs, oldest first.
pub fn drain(server: &mut Server) -> Vec<(ImsgType, Vec<u8>)> {
    std::mem::take(&mut server.sync_out).into_iter().map(encode).collect()
}

fn session_id(d: &[u8]) -> Result<[u8; 8], DecodeError> {
    d.get(..8).and_then(|s| s.try_into().ok()).ok_or(DecodeError("short session id"))
}

/// Applies another member's session state from the syncer to `server`:
/// records become ghosts, progress moves ghosts forward, deletes remove
/// them. A record or progress entry that does not decode is refused with a
/// warning and the rest is applied; a message whose framing is broken is an
/// error (the syncer is our own process: it is not talking our protocol).
/// Returns `Ok(false)` for a type that is not a session update.
pub fn apply(server: &mut Server, now: Now, ty: ImsgType, data: &[u8]) -> Result<bool, DecodeError> {
    match ty {
        ImsgType::SyncUpsert => match SessionRecord::decode(data.get(8..).unwrap_or_default()) {
            Ok(rec) => server.install_ghost(now, &rec),
            Err(e) => log::warn!("sync: session record refused: {}", e.0),
        },
        ImsgType::SyncProgress => {
            let mut r = Reader::new(data);
            while !r.is_empty() {
                let id = session_id(r.take(8)?)?;
                let n = r.u16()? as usize;
                match Progress::decode(r.take(n)?) {
                    Ok(p) => server.ghost_progress(now, &id, &p),
                    Err(e) => log::warn!("sync: progress refused: {}", e.0),
                }
            }
        }
        ImsgType::SyncDelete => server.ghost_delete(&session_id(data)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// A role change from the parent (carpwatch): becoming master makes every
/// ghost live, leaving it turns our sessions back into ghosts.
pub fn role_change(server: &mut Server, now: Now, from: Role, to: Role) {
    match (from, to) {
        (Role::Master, Role::Master) => {}
        (_, Role::Master) => server.promote_all(now),
        (Role::Master, _) => server.demote_all(now),
        _ => {}
    }
}
