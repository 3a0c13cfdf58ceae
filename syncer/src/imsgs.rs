//! The `Sync*` imsg payloads between engine and syncer, mapped to and from
//! the peer protocol's messages (see the table in `common::msg`).

use vpnsyncd_common::codec::{DecodeError, Reader};
use vpnsyncd_common::msg::ImsgType;

use crate::proto::Msg;

/// Decodes a `SyncUpsert`, `SyncProgress` or `SyncDelete` from the engine
/// (the layout is in engine/src/syncglue.rs and common::msg).
pub fn from_engine(ty: ImsgType, data: &[u8]) -> Result<Msg, DecodeError> {
    let mut r = Reader::new(data);
    Ok(match ty {
        ImsgType::SyncUpsert => Msg::Upsert { id: r.u64()?, gen: r.u64()?, record: r.rest().to_vec() },
        ImsgType::SyncDelete => {
            let (id, gen) = (r.u64()?, r.u64()?);
            r.end()?;
            Msg::Delete { id, gen }
        }
        ImsgType::SyncProgress => {
            let mut entries = Vec::new();
            while !r.is_empty() {
                let (id, gen, n) = (r.u64()?, r.u64()?, r.u16()? as usize);
                entries.push((id, gen, r.take(n)?.to_vec()));
            }
            Msg::Progress(entries)
        }
        _ => return Err(DecodeError("not a sync imsg")),
    })
}

/// Encodes a peer's update for the engine; `None` for protocol-only
/// messages.
pub fn to_engine(msg: &Msg) -> Option<(ImsgType, Vec<u8>)> {
    let mut v = Vec::new();
    let ty = match msg {
        Msg::Upsert { id, gen, record } => {
            v.extend_from_slice(&id.to_be_bytes());
            v.extend_from_slice(&gen.to_be_bytes());
            v.extend_from_slice(record);
            ImsgType::SyncUpsert
        }
        Msg::Progress(entries) => {
            for (id, gen, bytes) in entries {
                v.extend_from_slice(&id.to_be_bytes());
                v.extend_from_slice(&gen.to_be_bytes());
                v.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                v.extend_from_slice(bytes);
            }
            ImsgType::SyncProgress
        }
        Msg::Delete { id, gen } => {
            v.extend_from_slice(&id.to_be_bytes());
            v.extend_from_slice(&gen.to_be_bytes());
            ImsgType::SyncDelete
        }
        _ => return None,
    };
    Some((ty, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for m in [
            Msg::Upsert { id: 1 << 60, gen: 7, record: b"rec".to_vec() },
            Msg::Progress(vec![(1, 5, b"a".to_vec()), (2, 6, Vec::new())]),
            Msg::Delete { id: 3, gen: 9 },
        ] {
            let (ty, data) = to_engine(&m).unwrap();
            assert_eq!(from_engine(ty, &data), Ok(m));
        }
        assert!(to_engine(&Msg::BulkRequest).is_none());
        assert!(from_engine(ImsgType::SyncDelete, &[0; 17]).is_err());
        assert!(from_engine(ImsgType::SyncProgress, &[0; 19]).is_err());
        assert!(from_engine(ImsgType::SyncUpsert, &[0; 15]).is_err());
        assert!(from_engine(ImsgType::Role, &[0; 8]).is_err());
    }
}
