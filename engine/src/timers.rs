//! The server's timer queue: which sessions must run their timers at a
//! tick. A tick then costs what the sessions that are due (or were touched
//! since the last tick) need, not a scan of the whole session table, so an
//! idle server's CPU grows with its keepalive traffic, not its clients.
//!
//! A session's entry is its next deadline ([`crate::session::Session::next_wake`]);
//! rescheduling pushes a new entry and leaves the old one in the heap
//! (lazy deletion: an entry counts only if it matches the slot's current
//! deadline). Running a session's timers early is always harmless, so a
//! stale or reused slot costs at most one extra run. The heap is rebuilt
//! when stale entries outnumber live ones, which bounds it by twice the
//! session table.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Per slot (peer-id): the deadline of its current heap entry.
    due: Vec<Option<Instant>>,
    /// Slots touched since the last tick, each once (`touched[slot]`).
    dirty: Vec<u32>,
    touched: Vec<bool>,
    /// Slots handed out by [`TimerQueue::take_due`] (tests: the cost).
    #[cfg(test)]
    taken: u64,
}

/// Grows `v` so that `slot` indexes it.
fn reach<T: Clone>(v: &mut Vec<T>, slot: u32, fill: T) {
    if v.len() <= slot as usize {
        v.resize(slot as usize + 1, fill);
    }
}

impl TimerQueue {
    /// Slot `slot` changed (a packet, a record, a role change): its timers
    /// run at the next tick whatever its deadline.
    pub fn touch(&mut self, slot: u32) {
        reach(&mut self.touched, slot, false);
        if !std::mem::replace(&mut self.touched[slot as usize], true) {
            self.dirty.push(slot);
        }
    }

    /// Slot `slot` must run its timers again at `at` (its earlier deadline,
    /// if any, no longer counts).
    pub fn schedule(&mut self, slot: u32, at: Instant) {
        reach(&mut self.due, slot, None);
        if self.due[slot as usize] == Some(at) {
            return;
        }
        self.due[slot as usize] = Some(at);
        self.heap.push(Reverse((at, slot)));
        if self.heap.len() > 2 * self.due.len() + 64 {
            self.compact();
        }
    }

    /// Slot `slot` holds no session any more.
    pub fn forget(&mut self, slot: u32) {
        if let Some(d) = self.due.get_mut(slot as usize) {
            *d = None;
        }
        while self.due.last().is_some_and(Option::is_none) {
            self.due.pop();
        }
    }

    /// The slots to run at `now`, in ascending order: those touched since
    /// the last call and those whose deadline passed. Their deadlines are
    /// consumed: the caller schedules each again.
    pub fn take_due(&mut self, now: Instant) -> Vec<u32> {
        let mut out = std::mem::take(&mut self.dirty);
        for &s in &out {
            self.touched[s as usize] = false;
        }
        while let Some(&Reverse((at, slot))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if let Some(d) = self.due.get_mut(slot as usize).filter(|d| **d == Some(at)) {
                *d = None;
                out.push(slot);
            }
        }
        out.sort_unstable();
        out.dedup();
        #[cfg(test)]
        {
            self.taken += out.len() as u64;
        }
        out
    }

    /// Whether a slot was touched since the last [`TimerQueue::take_due`]:
    /// then the timers are due at once.
    pub fn has_touched(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The earliest deadline queued (perhaps a stale one: then early).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Entries in the heap, stale ones included (tests: the bound).
    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// Slots run so far (tests: how much timer work a load costs).
    #[cfg(test)]
    pub fn taken(&self) -> u64 {
        self.taken
    }

    fn compact(&mut self) {
        self.heap = self.due.iter().enumerate().filter_map(|(s, d)| d.map(|at| Reverse((at, s as u32)))).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn runs_due_and_touched_slots_only() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        q.schedule(3, ms(t0, 500));
        q.schedule(1, ms(t0, 100));
        q.schedule(2, ms(t0, 900));
        assert_eq!(q.take_due(ms(t0, 50)), Vec::<u32>::new());
        q.touch(2);
        q.touch(2);
        assert_eq!(q.take_due(ms(t0, 100)), vec![1, 2], "1 is due, 2 touched (once)");
        assert_eq!(q.take_due(ms(t0, 200)), Vec::<u32>::new(), "a deadline is consumed once");
        assert_eq!(q.next_deadline(), Some(ms(t0, 500)));
        assert_eq!(q.take_due(ms(t0, 1000)), vec![2, 3]);
    }

    #[test]
    fn a_rescheduled_slot_runs_at_its_new_deadline_only() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        q.schedule(7, ms(t0, 100));
        q.schedule(7, ms(t0, 300));
        assert_eq!(q.take_due(ms(t0, 200)), Vec::<u32>::new(), "the first entry is stale");
        assert_eq!(q.take_due(ms(t0, 300)), vec![7]);
        q.schedule(4, ms(t0, 400));
        q.forget(4);
        assert_eq!(q.take_due(ms(t0, 500)), Vec::<u32>::new(), "a forgotten slot never runs");
    }

    #[test]
    fn stale_entries_stay_bounded_by_the_table() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        for round in 0..1000u64 {
            for slot in 0..10 {
                q.schedule(slot, ms(t0, 1000 + round));
            }
        }
        assert!(q.heap_len() <= 2 * 10 + 64 + 1, "heap holds {}", q.heap_len());
        assert_eq!(q.take_due(ms(t0, 5000)), (0..10).collect::<Vec<u32>>());
    }
}
