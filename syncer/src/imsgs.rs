//! The `Sync*` imsg payloads between engine and syncer, mapped to and from
//! the peer protocol's messages (see the table in `common::msg`).

use vpnsyncd_common::codec::{DecodeError, Reader};
use vpnsyncd_common::msg::ImsgType;

use crate::proto::Msg;

/// Decodes a `SyncUpsert`, `SyncProgress` or `SyncDelete` from the engine.
pub fn from_engine(ty: ImsgType, data: &[u8]) -> Result<Msg, DecodeError> {
    let mut r = Reader::new(data);
    Ok(match ty {
        ImsgType::SyncUpsert => Msg::Upsert { id: r.u64()?, record: r.rest().to_vec() },
        ImsgType::SyncDelete => {
            let id = r.u64()?;
            r.end()?;
            Msg::Delete { id }
        }
        ImsgType::SyncProgress => {
            let mut entries = Vec::new();
            let mut rest = data;
            while !rest.is_empty() {
                let mut e = Reader::new(rest);
                let (id, n) = (e.u64()?, e.u16()? as usize);
                let (bytes, tail) = e.rest().split_at_checked(n).ok_or(DecodeError("truncated progress entry"))?;
                entries.push((id, bytes.to_vec()));
                rest = tail;
            }
            Msg::Progress(entries)
        }
        _ => return Err(DecodeError("not a sync imsg")),
    })
}

/// Encodes a peer's update for the engine; `None` for protocol-only
/// messages.
pub fn to_engine(msg: &Msg) -> Option<(ImsgType, Vec<u8>)> {
    Some(match msg {
        Msg::Upsert { id, record } => {
            let mut v = id.to_be_bytes().to_vec();
            v.extend_from_slice(record);
            (ImsgType::SyncUpsert, v)
        }
        Msg::Progress(entries) => {
            let mut v = Vec::new();
            for (id, bytes) in entries {
                v.extend_from_slice(&id.to_be_bytes());
                v.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                v.extend_from_slice(bytes);
            }
            (ImsgType::SyncProgress, v)
        }
        Msg::Delete { id } => (ImsgType::SyncDelete, id.to_be_bytes().to_vec()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for m in [
            Msg::Upsert { id: 1 << 60, record: b"rec".to_vec() },
            Msg::Progress(vec![(1, b"a".to_vec()), (2, Vec::new())]),
            Msg::Delete { id: 3 },
        ] {
            let (ty, data) = to_engine(&m).unwrap();
            assert_eq!(from_engine(ty, &data), Ok(m));
        }
        assert!(to_engine(&Msg::BulkRequest).is_none());
        assert!(from_engine(ImsgType::SyncDelete, &[0; 9]).is_err());
        assert!(from_engine(ImsgType::SyncProgress, &[0; 11]).is_err());
        assert!(from_engine(ImsgType::SyncUpsert, &[0; 7]).is_err());
        assert!(from_engine(ImsgType::Role, &[0; 8]).is_err());
    }
}
