//! The session table every member keeps, whatever its role, so that any
//! complete member can answer a bulk request (the master may be the one
//! that is restarting).

use std::collections::BTreeMap;

use crate::proto::{Msg, Packer, SessionId, TooLarge};

/// One session: its last full record and the latest progress after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Entry {
    record: Vec<u8>,
    progress: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
pub struct Table(BTreeMap<SessionId, Entry>);

impl Table {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Applies an update and returns what of it changed the table: progress
    /// for unknown sessions and deletes of unknown sessions are dropped, so
    /// the engine is never told about a session it cannot have.
    pub fn apply(&mut self, msg: Msg) -> Option<Msg> {
        match msg {
            Msg::Upsert { id, record } => {
                // A new record supersedes progress taken before it.
                self.0.insert(id, Entry { record: record.clone(), progress: None });
                Some(Msg::Upsert { id, record })
            }
            Msg::Progress(entries) => {
                let known: Vec<_> = entries
                    .into_iter()
                    .filter(|(id, bytes)| match self.0.get_mut(id) {
                        Some(e) => {
                            e.progress = Some(bytes.clone());
                            true
                        }
                        None => false,
                    })
                    .collect();
                (!known.is_empty()).then_some(Msg::Progress(known))
            }
            Msg::Delete { id } => self.0.remove(&id).map(|_| Msg::Delete { id }),
            _ => None,
        }
    }

    /// The sessions of a progress message that we do not hold.
    pub fn unknown(&self, msg: &Msg) -> Vec<SessionId> {
        match msg {
            Msg::Progress(entries) => entries.iter().map(|(id, _)| *id).filter(|id| !self.0.contains_key(id)).collect(),
            _ => Vec::new(),
        }
    }

    /// Packs the records (and progress) of `ids` that we hold, for a peer
    /// that missed them.
    pub fn pack_some(&self, ids: &[SessionId], p: &mut Packer) {
        for id in ids {
            if let Some(e) = self.0.get(id) {
                let packed = p
                    .push(&Msg::Upsert { id: *id, record: e.record.clone() })
                    .and_then(|()| e.progress.as_ref().map_or(Ok(()), |b| p.progress(*id, b)));
                if let Err(e) = packed {
                    log_too_large(*id, e);
                }
            }
        }
    }

    /// Packs the whole table (records, then their progress) for a bulk
    /// answer; returns the number of sessions packed. A record too large for
    /// a datagram is left out with an error log: the peer cannot get it by
    /// any means, and the rest of the table is still worth sending.
    pub fn pack_all(&self, p: &mut Packer) -> u32 {
        let mut n = 0;
        for (&id, e) in &self.0 {
            let packed = p.push(&Msg::Upsert { id, record: e.record.clone() });
            let packed = packed.and_then(|()| match &e.progress {
                Some(bytes) => p.progress(id, bytes),
                None => Ok(()),
            });
            match packed {
                Ok(()) => n += 1,
                Err(e) => log_too_large(id, e),
            }
        }
        n
    }
}

/// Logs a session the peer protocol cannot carry.
pub fn log_too_large(id: SessionId, e: TooLarge) {
    log::error!("session {id:016x} not synced: {e}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode;

    fn up(id: u64, r: &[u8]) -> Msg {
        Msg::Upsert { id, record: r.to_vec() }
    }

    #[test]
    fn apply_and_pack() {
        let mut t = Table::default();
        assert_eq!(t.apply(up(1, b"a")), Some(up(1, b"a")));
        assert_eq!(t.apply(up(2, b"b")), Some(up(2, b"b")));
        assert_eq!(
            t.apply(Msg::Progress(vec![(2, b"p".to_vec()), (9, b"x".to_vec())])),
            Some(Msg::Progress(vec![(2, b"p".to_vec())]))
        );
        assert_eq!(t.apply(Msg::Progress(vec![(9, b"x".to_vec())])), None);
        assert_eq!(t.apply(Msg::Delete { id: 1 }), Some(Msg::Delete { id: 1 }));
        assert_eq!(t.apply(Msg::Delete { id: 1 }), None);
        assert_eq!(t.apply(Msg::BulkRequest), None);
        let mut p = Packer::default();
        assert_eq!(t.pack_all(&mut p), 1);
        let plain = p.finish();
        assert_eq!(decode(&plain[0]), Ok(vec![up(2, b"b"), Msg::Progress(vec![(2, b"p".to_vec())])]));
        t.apply(up(3, &vec![0; 70000]));
        let mut p = Packer::default();
        assert_eq!(t.pack_all(&mut p), 1, "the oversized record is left out");
        assert_eq!(t.len(), 2);
    }
}
