//! Replication of a session between members (a child module of
//! `session`, kept beside record.rs): the record of a live session, the
//! ghost a backup builds from it, how later records and progress update a
//! ghost, and the two role changes, promotion and demotion.
//!
//! The invariants these methods keep are stated in docs/SYNC.md:
//! - (a) no (data key, packet id) pair is sent twice: a promoted key sends
//!   only in this member's blocks above every id known (crate::sendspace),
//!   counters never move back, and a key that an earlier run of this
//!   member sent under is never sent under again (it is replaced);
//! - (b) a served session never moves backwards: records and progress only
//!   ever change ghosts, and only with a newer generation;
//! - (c) a copied key never outlives its original: lame ducks keep their
//!   expiry, the primary its age, and promotion schedules its replacement
//!   within the rekey window;
//! - (d) a ghost whose master stops reporting it expires.

use std::sync::Arc;
use std::time::Duration;

use crate::data::DataKey;
use crate::record::{KeyProgress, KeyRecord, Progress, SessionRecord, Window};
use crate::reliable::Reliable;
use crate::sendspace::SendSpace;
use crate::sentkeys::{fingerprint, SentKeys};
use crate::wrap::Wrapper;

use super::{KeyState, Now, Phase, Session, SessionConfig, TRANSITION_WINDOW};

/// The generation of a session's replicated state, ordered as one number:
/// tenure (how many takeovers the session went through), the member that
/// wrote it, and a sequence per record of that tenure. A member applies a
/// record only if its generation is newer than what it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gen(pub u64);

impl Gen {
    pub fn new(tenure: u32, member: u8, seq: u32) -> Gen {
        Gen((u64::from(tenure & 0xFF_FFFF) << 40) | (u64::from(member) << 32) | u64::from(seq))
    }

    pub fn tenure(self) -> u32 {
        (self.0 >> 40) as u32
    }

    pub fn member(self) -> u8 {
        (self.0 >> 32) as u8
    }

    fn seq(self) -> u32 {
        self.0 as u32
    }

    /// The next record of the same tenure.
    fn bump(self) -> Gen {
        Gen::new(self.tenure(), self.member(), self.seq().saturating_add(1))
    }

    /// What a member that gave the session up to another holds: older than
    /// any record, so that the new master's records apply whatever tenure
    /// the two reached during a split brain (a record from before that the
    /// network delayed may apply too, until the next record or a `Want`
    /// corrects it: counters only move forward either way).
    const YIELDED: Gen = Gen(0);
}

/// What became of a record offered to an existing session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// The ghost now holds the record.
    Applied,
    /// The ghost already holds this generation or a newer one.
    Stale,
    /// We serve this session: a record never changes it. If the record
    /// was newer, our next record gets a newer generation still.
    Live,
}

/// An unchanged progress report goes out again after this long.
pub const PROGRESS_REFRESH: Duration = Duration::from_secs(3);

/// This member's bit in [`KeyRecord::senders`].
fn bit(member: u8) -> u8 {
    1 << (member - 1)
}

/// How long a ghost lives without a record or progress from its master:
/// twice the keepalive timeout (a live session's counters change at least
/// every ping interval, so its master reports it far more often).
pub(super) fn ghost_lifetime(conf: &SessionConfig) -> Duration {
    Duration::from_secs(2 * u64::from(conf.keepalive.1))
}

impl KeyState {
    /// A ghost's key state: the copied keys, no TLS session. It keeps the
    /// original's age and lame-duck expiry, and starts past whatever this
    /// run already sent under the key (`sent`).
    fn copied(
        k: &KeyRecord,
        conf: &SessionConfig,
        cipher: vpnsyncd_config::Cipher,
        sent: &SentKeys,
        now: Now,
    ) -> KeyState {
        let mut data = DataKey::new(cipher, conf.auth, &k.key2, true);
        data.advance_send_counter(k.send);
        let ours = sent.get(fingerprint(&k.key2));
        if let Some(last) = ours {
            data.advance_send_counter(last);
        }
        data.merge_recv_state(k.recv);
        let age = Duration::from_secs(k.age.into());
        KeyState {
            phase: Phase::Established,
            data: Some(data),
            key2: Some(Box::new(k.key2)),
            send_ok: client_has(k.recv),
            established: Some(now.mono.checked_sub(age).unwrap_or(now.mono)),
            expires: (k.expires_in > 0).then(|| now.mono + Duration::from_secs(k.expires_in.into())),
            senders: k.senders,
            ours: ours.is_some(),
            ..KeyState::blank(k.key_id, now.mono)
        }
    }

    /// The record of an established key, `None` otherwise.
    fn record(&self, now: Now) -> Option<KeyRecord> {
        let (data, key2) = (self.data.as_ref()?, self.key2.as_ref()?);
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        Some(KeyRecord {
            key_id: self.key_id,
            key2: **key2,
            send: data.send_counter(),
            recv: data.recv_state(),
            senders: self.senders,
            age: self.established.map_or(0, |t| secs(now.mono.saturating_duration_since(t))),
            // A lame duck always has at least a second left on the wire.
            expires_in: self.expires.map_or(0, |t| secs(t.saturating_duration_since(now.mono)).max(1)),
        })
    }

    /// Later counters of the same key from its master.
    fn apply(&mut self, send: u32, recv: Window) {
        if let Some(d) = self.data.as_mut() {
            d.advance_send_counter(send);
            d.merge_recv_state(recv);
        }
        self.send_ok |= client_has(recv);
    }
}

/// Whether a copied key is known to be the client's too: the master
/// received under it. A renegotiated key the master finished may not be
/// finished at the client (the master died before the client read its last
/// key-method message); sending under it would be lost, so a new master
/// sends under the older key until the client's first packet under the new
/// one (`Session::decrypt` then allows it), as the original master did.
/// The master's send counter is no proof: a takeover jumps it without
/// sending.
fn client_has((_, highest, _): Window) -> bool {
    highest > 0
}

/// A copy of which no key is known to be the client's sends under its
/// newest, as the original master would (a first key, or a client that
/// has been silent since its last renegotiation).
fn allow_newest(keys: &mut [KeyState]) {
    if !keys.iter().any(|k| k.send_ok) {
        if let Some(k) = keys.last_mut() {
            k.send_ok = true;
        }
    }
}

impl Session {
    pub fn is_ghost(&self) -> bool {
        self.ghost
    }

    pub fn gen(&self) -> Gen {
        self.gen
    }

    /// The record of an established session (`None` before it has an
    /// address).
    pub fn snapshot(&self, now: Now) -> Option<SessionRecord> {
        let keys: Vec<KeyRecord> = self.keys.iter().filter_map(|k| k.record(now)).collect();
        if keys.is_empty() {
            return None;
        }
        Some(SessionRecord {
            peer: self.peer,
            listener: self.listener as u8,
            peer_id: self.peer_id,
            local_sid: self.local_sid,
            remote_sid: self.remote_sid,
            common_name: self.common_name.clone()?,
            virtual_ip: self.virtual_ip?,
            virtual_ip6: self.virtual_ip6,
            negotiated: self.negotiated.clone()?,
            connected_since: self.connected_since,
            last_rekey: self.last_rekey,
            keys,
            progress: self.progress(),
            wkc: self.wrap.wkc().map(<[u8]>::to_vec),
            username: self.auth.username.clone(),
            token_issued: self.auth.token_issued,
        })
    }

    /// The record for the backups, with a new generation, if something a
    /// record carries changed (keys, address, a takeover) since the last.
    pub fn take_record(&mut self, now: Now) -> Option<(Gen, SessionRecord)> {
        if self.ghost || !self.record_dirty {
            return None;
        }
        let rec = self.snapshot(now)?;
        self.record_dirty = false;
        self.gen = self.gen.bump();
        self.last_progress = Some(rec.progress.clone());
        Some((self.gen, rec))
    }

    /// Keys, address or peer changed: a record must go out.
    pub(crate) fn mark_dirty(&mut self) {
        self.record_dirty = true;
    }

    /// The counters, windows and byte counts a progress report carries.
    pub(crate) fn progress(&self) -> Progress {
        Progress {
            wrap_send: self.wrap.send_state(),
            wrap_recv: self.wrap.recv_state(),
            keys: self
                .keys
                .iter()
                .filter_map(|k| {
                    let d = k.data.as_ref()?;
                    Some(KeyProgress { key_id: k.key_id, send: d.send_counter(), recv: d.recv_state() })
                })
                .collect(),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
        }
    }

    /// The progress of a live session with a record out, if it changed
    /// since the last call or [`PROGRESS_REFRESH`] passed (so that a member
    /// that missed the last report, or joined after it, catches up with an
    /// idle session); it belongs to the generation of that record.
    pub fn take_progress(&mut self, now: Now) -> Option<(Gen, Progress)> {
        if self.ghost || self.record_dirty || self.virtual_ip.is_none() {
            return None;
        }
        let p = self.progress();
        let due = self.conf.replicated && now.mono.saturating_duration_since(self.progress_sent) >= PROGRESS_REFRESH;
        if self.last_progress.as_ref() == Some(&p) && !due {
            return None;
        }
        self.last_progress = Some(p.clone());
        self.progress_sent = now.mono;
        Some((self.gen, p))
    }

    /// A ghost of another member's session: its keys and counters, no TLS.
    pub fn ghost(
        conf: Arc<SessionConfig>,
        wrap: Wrapper,
        rec: &SessionRecord,
        gen: Gen,
        sent: &SentKeys,
        now: Now,
    ) -> Session {
        let mut keys: Vec<KeyState> =
            rec.keys.iter().map(|k| KeyState::copied(k, &conf, rec.negotiated.cipher, sent, now)).collect();
        allow_newest(&mut keys);
        let sids = (rec.local_sid, rec.remote_sid);
        let mut s = Session {
            common_name: Some(rec.common_name.clone()),
            virtual_ip: Some(rec.virtual_ip),
            virtual_ip6: rec.virtual_ip6,
            negotiated: Some(rec.negotiated.clone()),
            connected_since: rec.connected_since,
            last_rekey: rec.last_rekey,
            push_sent: true,
            ghost: true,
            gen,
            tenure: gen.tenure(),
            ..Session::blank(conf, wrap, rec.peer, rec.listener.into(), rec.peer_id, sids, keys, now)
        };
        s.apply_progress_unchecked(&rec.progress, now);
        s.auth.username = rec.username.clone();
        s.auth.token_issued = rec.token_issued;
        s
    }

    /// A newer record of a ghost: its keys replace ours (keys the record
    /// no longer has are gone on the master too), counters and windows
    /// only move forward.
    pub fn offer(&mut self, rec: &SessionRecord, gen: Gen, sent: &SentKeys, now: Now) -> Offer {
        if !self.ghost {
            self.adopt(rec, sent, now);
            return Offer::Live;
        }
        if gen <= self.gen {
            return Offer::Stale;
        }
        self.tenure = self.tenure.max(gen.tenure());
        let mut keys = Vec::with_capacity(rec.keys.len());
        for k in &rec.keys {
            let same = |ks: &KeyState| ks.key_id == k.key_id && ks.key2.as_deref() == Some(&k.key2);
            match self.keys.iter().position(same) {
                Some(i) => {
                    let mut ks = self.keys.swap_remove(i);
                    ks.apply(k.send, k.recv);
                    ks.senders |= k.senders;
                    ks.expires = (k.expires_in > 0).then(|| now.mono + Duration::from_secs(k.expires_in.into()));
                    keys.push(ks);
                }
                None => keys.push(KeyState::copied(k, &self.conf, rec.negotiated.cipher, sent, now)),
            }
        }
        // What the record no longer has is gone on the master too.
        self.retire_keys(|_| false);
        allow_newest(&mut keys);
        self.keys = keys;
        self.peer = rec.peer;
        self.listener = rec.listener.into();
        self.negotiated = Some(rec.negotiated.clone());
        self.last_rekey = rec.last_rekey;
        // A renegotiation renews the session's token (`password token`).
        self.auth.username = rec.username.clone();
        self.auth.token_issued = rec.token_issued;
        self.gen = gen;
        self.apply_progress_unchecked(&rec.progress, now);
        Offer::Applied
    }

    /// The master's latest counters for this ghost, if they belong to the
    /// record we hold (progress of a newer record waits for that record).
    pub fn apply_progress(&mut self, gen: Gen, p: &Progress, now: Now) -> bool {
        if !self.ghost {
            self.supersede(gen);
            self.overtake(p, now);
            return false;
        }
        if gen != self.gen {
            return false;
        }
        self.apply_progress_unchecked(p, now);
        true
    }

    /// What this ghost must tell the master that sent `gen` and `p`, if
    /// anything: that it sent further under a key than the master says (it
    /// was master during a split brain; the client would refuse the
    /// master's packets), or that it holds a later generation of the
    /// session than the master's (whose records it and others would refuse).
    /// The answer is progress the master passes (`supersede`, `overtake`).
    pub fn report_back(&self, gen: Gen, p: &Progress) -> Option<(Gen, Progress)> {
        let ahead = p.keys.iter().any(|k| {
            self.keys.iter().any(|ks| {
                ks.ours && ks.key_id == k.key_id && ks.data.as_ref().is_some_and(|d| d.send_counter() > k.send)
            })
        });
        let ours = self.gen.max(Gen::new(self.tenure, 0, 0));
        (self.ghost && (ahead || ours > gen)).then(|| (ours, self.progress()))
    }

    fn apply_progress_unchecked(&mut self, p: &Progress, now: Now) {
        for k in &p.keys {
            if let Some(ks) = self.keys.iter_mut().find(|ks| ks.key_id == k.key_id) {
                ks.apply(k.send, k.recv);
            }
        }
        self.wrap.advance_send_state(p.wrap_send.0, p.wrap_send.1);
        self.wrap.merge_recv_state(p.wrap_recv);
        self.bytes_in = self.bytes_in.max(p.bytes_in);
        self.bytes_out = self.bytes_out.max(p.bytes_out);
        self.synced_at = now.mono;
    }

    /// Another member serves this session too (a split brain) and agreed a
    /// new key with the client that we do not have: the client sends under
    /// it, so we take it (sending in our own blocks, like any takeover) as
    /// our newest key. Nothing else of the record changes the session.
    fn adopt(&mut self, rec: &SessionRecord, sent: &SentKeys, now: Now) {
        let Some(k) = rec.keys.last() else { return };
        if self.keys.iter().any(|ks| ks.key_id == k.key_id) {
            return;
        }
        let member = self.conf.member;
        let space = SendSpace::Member { member, creator: false };
        let mut ks = KeyState::copied(k, &self.conf, rec.negotiated.cipher, sent, now);
        let known = ks.data.as_ref().map_or(k.send, DataKey::send_counter);
        match (space.takeover_counter(known, 0), ks.data.as_mut()) {
            (Some(start), Some(d)) => {
                d.advance_send_counter(start);
                d.set_send_space(space);
                ks.senders |= bit(member);
                ks.ours = true;
            }
            _ => ks.no_send = true,
        }
        // Our primary becomes the lame duck; an older one goes.
        self.retire_keys(|o| o.phase == Phase::Established && o.expires.is_none());
        for o in &mut self.keys {
            o.expires = Some(now.mono + TRANSITION_WINDOW);
        }
        self.keys.push(ks);
        self.record_dirty = true;
        log::info!("{}: took key_id {} from another member serving the session", self.label(), k.key_id);
    }

    /// Another member wrote a newer generation of a session we serve (a
    /// split brain): ours must supersede it, or the other members would
    /// take that member's records over ours.
    fn supersede(&mut self, gen: Gen) {
        if gen > self.gen {
            self.tenure = self.tenure.max(gen.tenure());
            self.gen = self.next_tenure();
            self.record_dirty = true;
        }
    }

    /// Drops the key states `keep` refuses, noting what this run sent
    /// under each (crate::sentkeys).
    pub(super) fn retire_keys(&mut self, mut keep: impl FnMut(&KeyState) -> bool) {
        let retired = &mut self.retired;
        self.keys.retain(|k| {
            let kept = keep(k);
            if let (false, true, Some(d), Some(key2)) = (kept, k.ours, k.data.as_ref(), k.key2.as_ref()) {
                retired.push((fingerprint(key2), d.send_counter()));
            }
            kept
        });
    }

    /// What this run sent under the keys it dropped since the last call;
    /// with `all`, under the keys it still holds too (the session goes).
    pub fn take_sent(&mut self, all: bool) -> Vec<(u64, u32)> {
        if all {
            self.retire_keys(|_| false);
        }
        std::mem::take(&mut self.retired)
    }

    /// This member takes the session over: a tenure above every one seen.
    fn next_tenure(&mut self) -> Gen {
        self.tenure += 1;
        Gen::new(self.tenure, self.conf.member, 0)
    }

    /// Another member sends for a session we serve (a split brain, or the
    /// old master's last reports): the client's replay windows follow the
    /// higher of the two senders, so ours must pass theirs or the client
    /// refuses us once the other stops. Each of our keys that they used
    /// further jumps to our first block above their ids, and our control
    /// replay time above theirs: only forward, in our own space, so
    /// invariants (a) and (b) hold.
    fn overtake(&mut self, p: &Progress, now: Now) {
        let member = self.conf.member;
        let space = SendSpace::Member { member, creator: false };
        let mut passed = false;
        for k in &p.keys {
            let Some(d) = self.keys.iter_mut().find(|ks| ks.key_id == k.key_id).and_then(|ks| ks.data.as_mut()) else {
                continue;
            };
            if k.send > d.send_counter() {
                passed = true;
                if let Some(start) = space.takeover_counter(k.send, 0) {
                    d.advance_send_counter(start);
                    d.set_send_space(space);
                }
            }
        }
        if passed {
            // Two members sent under these keys: replace them soon, so that
            // whatever of the other's ids we never heard of stops mattering.
            let soon = now.mono + self.conf.rekey_window / 4;
            self.reneg_at = Some(self.reneg_at.map_or(soon, |t| t.min(soon)));
            self.record_dirty = true;
        }
        let ((their_id, their_time), (_, ours)) = (p.wrap_send, self.wrap.send_state());
        if their_time > ours || (their_time == ours && their_id > 0 && self.wrap.send_state().0 < their_id) {
            self.wrap.set_send_state(0, control_time(member, now.unix, their_time));
        }
    }

    /// A ghost's own timers: lame ducks expire as on the master, and the
    /// whole ghost when its master stopped reporting it. True when the
    /// ghost must go.
    pub(super) fn ghost_timer(&mut self, now: Now) -> bool {
        self.retire_keys(|k| k.expires.is_none_or(|t| t > now.mono));
        self.keys.is_empty() || now.mono.saturating_duration_since(self.synced_at) >= ghost_lifetime(&self.conf)
    }

    /// This member now serves the session (it is MASTER). Each copied key
    /// sends only in this member's blocks above every id known to be used
    /// (crate::sendspace); a key that an earlier run of this member sent
    /// under (its bit is set, yet this run never sent with it) is never
    /// sent under again, because that run's last ids may not have been
    /// reported. Lame ducks keep their expiry (at most the transition
    /// window), the control channel continues with a replay time that no
    /// other member uses, and the copied keys are replaced `reneg_in` from
    /// now, at once if one of them cannot send: then it returns true. It
    /// logs nothing: a takeover promotes thousands, and the caller says
    /// what it did in one line.
    pub fn promote(&mut self, now: Now, reneg_in: Duration) -> bool {
        if !self.ghost {
            return false;
        }
        let member = self.conf.member;
        let space = SendSpace::Member { member, creator: false };
        let last = self.keys.len().saturating_sub(1);
        // A round per quarter second since the last report (crate::sendspace).
        let age = now.mono.saturating_duration_since(self.synced_at);
        let rounds = u32::try_from(age.as_millis() / crate::sendspace::ROUND_EVERY.as_millis()).unwrap_or(u32::MAX);
        let mut renegotiate_now = false;
        for (i, k) in self.keys.iter_mut().enumerate() {
            let Some(d) = k.data.as_mut() else { continue };
            let earlier_run = k.senders & bit(member) != 0 && !k.ours;
            match space.takeover_counter(d.send_counter(), rounds).filter(|_| !earlier_run) {
                Some(start) => {
                    d.advance_send_counter(start);
                    d.set_send_space(space);
                    k.senders |= bit(member);
                    k.ours = true;
                }
                None => {
                    k.no_send = true;
                    renegotiate_now = true;
                }
            }
            if i < last {
                k.expires =
                    Some(k.expires.map_or(now.mono + TRANSITION_WINDOW, |t| t.min(now.mono + TRANSITION_WINDOW)));
            }
        }
        let (_, time) = self.wrap.send_state();
        self.wrap.set_send_state(0, control_time(member, now.unix, time));
        self.ghost = false;
        self.gen = self.next_tenure();
        self.record_dirty = true;
        self.last_recv = now.mono;
        self.reneg_at = Some(if renegotiate_now { now.mono } else { now.mono + reneg_in });
        self.maybe_behind = true;
        renegotiate_now
    }

    /// Back to a ghost, when another member became master: keys and
    /// counters stay (the master's reports keep them current, ours keep
    /// this member from repeating itself), TLS goes.
    pub fn demote(&mut self, now: Now) {
        self.retire_keys(|k| k.data.is_some() && k.key2.is_some());
        for k in &mut self.keys {
            k.tls = None;
            k.rel = Reliable::new();
            k.tls_out.clear();
        }
        // A key the client has not confirmed stays unconfirmed (see
        // `client_has`): its acknowledgement went with the TLS session.
        allow_newest(&mut self.keys);
        self.outbox.clear();
        self.data_out.clear();
        self.ghost = true;
        self.gen = Gen::YIELDED;
        self.synced_at = now.mono;
        self.reneg_at = None;
        self.maybe_behind = false;
    }
}

/// The tls-auth/tls-crypt replay time a new master uses: newer than the
/// old one and than any other member's (it is this member's residue mod
/// 8), so two members taking over at once never send one (id, time).
fn control_time(member: u8, unix: u64, old: u32) -> u32 {
    let at_least = (unix as u32).max(old.saturating_add(1));
    let m = u32::from(member - 1);
    let base = at_least - at_least % u32::from(crate::sendspace::MEMBERS);
    let t = base + m;
    if t >= at_least {
        t
    } else {
        t.saturating_add(u32::from(crate::sendspace::MEMBERS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_order_tenure_then_member_then_seq() {
        let g = Gen::new(1, 2, 0).bump();
        assert_eq!((g.tenure(), g.member(), g.seq()), (1, 2, 1));
        assert!(Gen::new(2, 1, 0) > g.bump().bump(), "a takeover beats every record of the old tenure");
        assert!(Gen::new(3, 1, 0) > Gen::new(2, 8, 99));
        assert!(Gen::YIELDED < Gen::new(0, 1, 1), "a yielded session takes any record");
    }

    #[test]
    fn control_times_of_two_members_differ_and_move_forward() {
        for old in [0u32, 100, 1_800_000_000, 1_800_000_007] {
            let times: Vec<u32> = (1..=8).map(|m| control_time(m, 1_800_000_003, old)).collect();
            for (i, t) in times.iter().enumerate() {
                assert!(*t > old && *t >= 1_800_000_003);
                assert_eq!(t % 8, i as u32);
            }
        }
    }
}
