//! The data plane, on one thread or several (`data-threads`). Each thread
//! owns a shard: its socket of every listen address, its queue of the tun
//! device, its batch buffers, trains, tun writer and ACK filter. The
//! session table stays one: a [`Server`] under a mutex, the [`Plane`].
//!
//! Who does what (docs/DATAPATH.md, "The data threads"):
//! - A session belongs to the thread its peer-id names
//!   (vpnsyncd_common::steer). Only that thread takes packet ids of the
//!   session and sends its data packets, so they leave in packet-id order
//!   by construction (the client's replay window would count a reordering
//!   beyond 64 packets as replays). The timers' pings, built on the main
//!   thread, wait in the plane for it ([`Server::data_out`]), and it takes
//!   them, under the lock, before any id of its own.
//! - The parent's steering program hands a thread the datagrams of its
//!   sessions, and the tun device (multi-queue) the packets of the flows
//!   whose packets that thread wrote: so most of a session's traffic meets
//!   its thread. A tunnel packet read by another thread is handed over
//!   (copied into the owner's queue in the plane, which is bounded).
//! - Receiving a batch takes the lock twice: once for the control packets
//!   (whole) and the lookup of each data packet's session and receive key
//!   ([`Server::receive`]), once after the opening for its replay check
//!   and source checks ([`Server::opened`]). recvmmsg, the authentication
//!   and decryption ([`crate::server::DataTicket::open`], which changes
//!   nothing), the ACK filter and the tun writes run outside it.
//! - The main thread keeps the control socket, the timers and the sync. A
//!   thread whose batch left another work (a control datagram to send, a
//!   record for the syncer, a password check, a timer earlier than its
//!   wake-up, a handed-over packet) wakes it through its socket pair.

use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

use crate::ackfilter::AckFilter;
use crate::batch::{Batch, BATCH, PER_TURN};
use crate::moderate::Moderation;
use crate::offload::Piece;
use crate::server::{DataTicket, Server};
use crate::session::Now;
use crate::sleep::Sleep;
use crate::train::Train;
use crate::tunio::TunIo;

/// Tunnel packets waiting for the thread of their session, per thread:
/// beyond this the newest is dropped (and counted), as a full tun queue
/// would. About 3 MB of 1,500-byte packets.
pub const HANDOFF_MAX: usize = 2048;

/// The session table, shared by the data threads and the main thread.
pub struct Plane {
    pub server: Server,
    /// When the main thread's wait ends: a data thread that queued an
    /// earlier timer wakes it.
    pub main_wakes: Instant,
    /// When the main thread runs the timers (crate::sleep). Here, so that
    /// a data thread that touched a session (due "at once", but run no
    /// sooner than the floor) wakes the main thread only if that is
    /// earlier than its wait's end, not after every batch.
    pub sleep: Sleep,
    /// `rx-moderation`, which a reload may change for every shard.
    pub hold: Duration,
    /// Tunnel packets read by one thread for another's session, per
    /// thread, at most [`HANDOFF_MAX`] each.
    handoff: Vec<Vec<Vec<u8>>>,
    /// Hand-overs dropped because the queue was full.
    handoff_full: crate::quiet::Quiet,
}

impl Deref for Plane {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl DerefMut for Plane {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

impl Plane {
    pub fn new(server: Server, hold: Duration) -> Arc<Mutex<Plane>> {
        let handoff = vec![Vec::new(); server.data_out.len()];
        let (main_wakes, sleep, handoff_full) = (Instant::now(), Sleep::default(), Default::default());
        Arc::new(Mutex::new(Plane { server, main_wakes, sleep, hold, handoff, handoff_full }))
    }

    /// Queues tunnel packet `pkt` for thread `to`; false when its queue
    /// is full (the packet is dropped, counted and logged quietly).
    fn hand_off(&mut self, to: usize, pkt: &Piece, now: Instant) -> bool {
        let q = &mut self.handoff[to];
        if q.len() >= HANDOFF_MAX {
            if let Some(n) = self.handoff_full.event(now) {
                log::warn!(
                    "data thread {to}: {HANDOFF_MAX} tunnel packets wait for it already: one dropped{}",
                    crate::quiet::more(n)
                );
            }
            return false;
        }
        let mut copy = vec![0; pkt.size()];
        pkt.write(&mut copy);
        q.push(copy);
        true
    }

    /// Under the lock: encrypts session `id`'s packet `pkt` into this
    /// thread's train to its client.
    fn seal(&mut self, t: Now, id: u32, pkt: &Piece, tx: &mut [Train], listeners: &[OwnedFd]) {
        let Some(o) = self.on_tun_packet(t, id, pkt.size()) else {
            return;
        };
        let (li, to) = o.to();
        let len = o.size();
        tx[li].push(&mut listeners[li].as_fd(), to, len, |buf| o.seal(t, buf, |p| pkt.write(p)).is_some());
    }

    /// Under the lock: what waits for thread `me`, ahead of any packet id
    /// it takes in this hold: the pings of its sessions (ids taken), then
    /// the tunnel packets other threads handed over (none taken yet).
    fn take_queued(&mut self, me: usize, t: Now, tx: &mut [Train], listeners: &[OwnedFd]) {
        for (li, to, bytes) in std::mem::take(&mut self.server.data_out[me]) {
            if let (Some(train), Some(l)) = (tx.get_mut(li), listeners.get(li)) {
                train.push(&mut l.as_fd(), to, bytes.len(), |buf| {
                    buf.copy_from_slice(&bytes);
                    true
                });
            }
        }
        for pkt in std::mem::take(&mut self.handoff[me]) {
            if let Some(id) = self.tun_destination(&pkt) {
                self.seal(t, id, &Piece::whole(&pkt), tx, listeners);
            }
        }
    }

    /// The data threads (not the main one) with work waiting in the
    /// plane, one bit each (`data-threads` is at most 64).
    fn waiting(&self) -> u64 {
        (1..self.handoff.len())
            .filter(|&i| !self.handoff[i].is_empty() || !self.server.data_out[i].is_empty())
            .fold(0, |m, i| m | 1 << i)
    }

    /// Whether the main thread has work that a data thread left: what only
    /// it sends, or a timer due before it wakes.
    pub(crate) fn wants_main(&self, now: Instant) -> bool {
        let s = &self.server;
        !s.outbox.is_empty()
            || !s.sync_out.is_empty()
            || !s.checks.out.is_empty()
            || self.sleep.run_at(s.next_deadline(now)).is_some_and(|d| d < self.main_wakes)
    }
}

/// Locks the plane. A thread that panicked holding it took the process
/// down with it (see [`spawn`]), so the lock is never found poisoned by a
/// live engine.
pub fn lock(plane: &Mutex<Plane>) -> MutexGuard<'_, Plane> {
    plane.lock().expect("a data thread panicked holding the session table")
}

fn now() -> Now {
    Now { mono: Instant::now(), unix: vpnsyncd_common::unix_now() }
}

/// One thread's part of the data plane.
pub struct Shard {
    /// Which thread: 0 is the main thread.
    index: usize,
    /// One socket per listen address, in the configuration's order.
    pub listeners: Vec<OwnedFd>,
    /// This thread's queue of the tun device.
    pub tun: OwnedFd,
    /// Buffers of the tun side, and the coalescer of the receive batches.
    pub tunio: TunIo,
    /// Data packets to each listener's clients.
    tx: Vec<Train>,
    /// Thins the clients' pure TCP ACKs of each receive batch (`ack-filter`).
    acks: AckFilter,
    /// ACKs dropped by the filters of all shards, for `show summary`.
    acks_dropped: Arc<AtomicU64>,
    rx: Batch,
    /// Whether a wait leaves the data descriptors out (crate::moderate),
    /// and the `rx-moderation` it was made for.
    pub moderation: Moderation,
    hold: Duration,
    /// This thread's end of its wake-up pair.
    pub woken: UnixDatagram,
    /// Every thread's other end, to wake it (one for all: duplicating
    /// them would take fcntl F_DUPFD, which the sandbox forbids).
    wakes: Arc<Vec<UnixDatagram>>,
}

impl Shard {
    /// The shards of the threads: `listeners` thread by thread, one tun
    /// queue each, and their wake-up pairs ([`wake_pairs`]).
    pub fn all(
        mut listeners: Vec<OwnedFd>,
        tun: Vec<OwnedFd>,
        pairs: Vec<(UnixDatagram, UnixDatagram)>,
        vnet: bool,
        hold: Duration,
        acks_dropped: &Arc<AtomicU64>,
    ) -> Vec<Shard> {
        let per = listeners.len() / tun.len().max(1);
        let (woken, wakes): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        let wakes = Arc::new(wakes);
        tun.into_iter()
            .zip(woken)
            .enumerate()
            .map(|(index, (tun, woken))| Shard {
                index,
                listeners: listeners.drain(..per).collect(),
                tun,
                tunio: TunIo::new(vnet),
                tx: (0..per).map(|_| Train::new()).collect(),
                acks: AckFilter::new(),
                acks_dropped: acks_dropped.clone(),
                rx: Batch::new(),
                moderation: Moderation::new(hold),
                hold,
                woken,
                wakes: wakes.clone(),
            })
            .collect()
    }

    /// Datagrams from clients on listener `li`: data to the tun device,
    /// control through the sessions. Returns how many TCP data segments
    /// went to the coalescer.
    pub fn on_link(&mut self, plane: &Mutex<Plane>, li: usize, ack_filter: bool) -> usize {
        let mut segments = 0;
        for _ in 0..PER_TURN / BATCH {
            let n = match self.rx.recv(self.listeners[li].as_fd()) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log::debug!("listener: {e}");
                    }
                    return segments;
                }
            };
            let t = now();
            let mut tickets: [Option<DataTicket>; BATCH] = std::array::from_fn(|_| None);
            {
                let mut p = lock(plane);
                for (i, ticket) in tickets.iter_mut().enumerate().take(n) {
                    let (buf, from) = self.rx.get_mut(i);
                    if let Some(from) = from {
                        *ticket = p.receive(t, li, from, buf);
                    }
                }
            }
            let opened: [_; BATCH] = std::array::from_fn(|i| {
                let ticket = tickets[i].as_ref()?;
                Some(ticket.open(self.rx.get_mut(i).0))
            });
            // Where each datagram's decrypted packet lies in its buffer: the
            // whole batch is decrypted before any of it goes to the tun, so
            // the ACK filter sees the batch at once.
            let mut plain = [None; BATCH];
            let wake = {
                let mut p = lock(plane);
                for (i, (ticket, opened)) in tickets.into_iter().zip(opened).enumerate().take(n) {
                    let (Some(ticket), Some(opened), Some(from)) = (ticket, opened, self.rx.addr(i)) else {
                        continue;
                    };
                    let buf = self.rx.get(i);
                    let start = buf.as_ptr() as usize;
                    if let Some(ip) = p.opened(t, from, ticket, opened, buf) {
                        plain[i] = (ip.as_ptr() as usize).checked_sub(start).map(|off| (off, ip.len()));
                    }
                }
                if p.hold != self.hold {
                    (self.hold, self.moderation) = (p.hold, Moderation::new(p.hold));
                }
                self.index != 0 && p.wants_main(t.mono)
            };
            if wake {
                self.wake(0);
            }
            let mut pkts: [Option<&[u8]>; BATCH] = [None; BATCH];
            for (i, (p, at)) in pkts.iter_mut().zip(&plain).enumerate().take(n) {
                *p = at.and_then(|(off, len)| self.rx.get(i).get(off..off + len));
            }
            if ack_filter {
                let dropped = self.acks.filter(&mut pkts[..n]);
                if dropped > 0 {
                    self.acks_dropped.fetch_add(dropped as u64, Ordering::Relaxed);
                }
            }
            segments += self.tunio.write_batch(self.tun.as_fd(), pkts[..n].iter().flatten().copied());
            if n < BATCH {
                return segments;
            }
        }
        // Only full batches: the turn's share ended with the socket maybe
        // not empty.
        self.moderation.backlog();
        segments
    }

    /// Packets from this thread's tun queue: its sessions' encrypted into
    /// their trains, the others' handed over to their threads.
    pub fn on_tun(&mut self, plane: &Mutex<Plane>) {
        let t = now();
        let me = self.index;
        let mut handed = 0u64;
        let Shard { tunio, listeners, tx, tun, .. } = self;
        for i in 0..PER_TURN {
            // Locked per read, from its first packet on: the read itself
            // runs unlocked, the other threads wait no longer than one
            // super-packet's encryption (and, at times, the send of a
            // full train), and a 64 KB read takes the lock once, not once
            // per packet.
            let mut held: Option<MutexGuard<'_, Plane>> = None;
            let read = tunio.read(tun.as_fd(), &mut |pkt: &Piece| {
                let p = match &mut held {
                    Some(p) => p,
                    None => {
                        // What waits for us goes before the ids we take
                        // in this hold; nothing can join it while we hold.
                        let mut p = lock(plane);
                        p.take_queued(me, t, tx, listeners);
                        held.insert(p)
                    }
                };
                let Some(id) = p.tun_destination(pkt.head()) else {
                    return;
                };
                let owner = p.shard_of(id);
                if owner != me {
                    if p.hand_off(owner, pkt, t.mono) {
                        handed |= 1 << owner;
                    }
                    return;
                }
                p.seal(t, id, pkt, tx, listeners);
            });
            // Sealing touched the sessions' timers: whether the main
            // thread must look again is known before the lock goes.
            if me != 0 && held.as_ref().is_some_and(|p| p.wants_main(t.mono)) {
                handed |= 1;
            }
            drop(held);
            match read {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    log::debug!("tun read: {e}");
                    break;
                }
            }
            if i + 1 == PER_TURN {
                // The turn's share ended with the queue maybe not empty.
                self.moderation.backlog();
            }
        }
        self.flush();
        for i in (0..self.wakes.len()).filter(|i| handed & 1 << i != 0) {
            self.wake(i);
        }
    }

    /// Sends what waits for this thread in the plane (its sessions' pings,
    /// packets handed over), after a wake-up that said so.
    pub fn send_queued(&mut self, plane: &Mutex<Plane>) {
        let wake = self.take_queued(&mut lock(plane));
        self.send_and_wake(wake);
    }

    /// Under the lock: puts what waits for this thread into its trains.
    /// Returns the threads to wake once they are sent: from the main
    /// thread, the data threads with work waiting (the pings its timers
    /// built); from a data thread, the main one if sealing touched a
    /// session's timers earlier than its wake-up.
    pub fn take_queued(&mut self, p: &mut Plane) -> u64 {
        let t = now();
        p.take_queued(self.index, t, &mut self.tx, &self.listeners);
        if self.index == 0 {
            p.waiting()
        } else {
            u64::from(p.wants_main(t.mono))
        }
    }

    /// Sends the trains, then wakes the threads of `wake` (one bit each).
    pub fn send_and_wake(&mut self, wake: u64) {
        self.flush();
        for i in (0..self.wakes.len()).filter(|&i| i != self.index && wake & 1 << i != 0) {
            self.wake(i);
        }
    }

    /// Reads this thread's wake-ups.
    pub fn drain_wakes(&self) {
        let mut buf = [0u8; 64];
        while self.woken.recv(&mut buf).is_ok() {}
    }

    fn flush(&mut self) {
        for (tx, l) in self.tx.iter_mut().zip(self.listeners.iter()) {
            tx.flush(&mut l.as_fd());
        }
    }

    /// A byte to thread `i`; a full pair means it has some to read
    /// already.
    fn wake(&self, i: usize) {
        if let Some(w) = self.wakes.get(i) {
            if let Err(e) = w.send(&[0]) {
                if e.kind() != io::ErrorKind::WouldBlock {
                    log::debug!("data thread {}: waking thread {i}: {e}", self.index);
                }
            }
        }
    }
}

/// Each of `n` threads' end of its wake-up pair, and the end the others
/// write to. Made before the sandbox, which forbids new sockets.
pub fn wake_pairs(n: usize) -> io::Result<Vec<(UnixDatagram, UnixDatagram)>> {
    (0..n)
        .map(|_| {
            let (a, b) = UnixDatagram::pair()?;
            a.set_nonblocking(true)?;
            b.set_nonblocking(true)?;
            Ok((a, b))
        })
        .collect()
}

/// Starts a data thread on `shard`. It runs as long as the process; a
/// panic in it ends the process, as it would the single-threaded engine.
pub fn spawn(mut shard: Shard, plane: Arc<Mutex<Plane>>, ack_filter: bool) -> io::Result<()> {
    let n = shard.index;
    std::thread::Builder::new().name(format!("data{n}")).spawn(move || {
        let run = std::panic::AssertUnwindSafe(|| shard.run(&plane, ack_filter));
        if std::panic::catch_unwind(run).is_err() {
            log::error!("data thread {n} panicked: the engine exits");
            std::process::exit(1);
        }
    })?;
    Ok(())
}

impl Shard {
    /// A data thread's loop: wait for its sockets, its tun queue and its
    /// wake-ups, serve them.
    fn run(&mut self, plane: &Mutex<Plane>, ack_filter: bool) {
        /// The wait when nothing flows: only packets end it.
        const IDLE: Duration = Duration::from_secs(3600);
        loop {
            let hold = self.moderation.holding();
            let ev = if hold { PollFlags::empty() } else { PollFlags::POLLIN };
            let mut pfds: Vec<PollFd<'_>> = self.listeners.iter().map(|l| PollFd::new(l.as_fd(), ev)).collect();
            pfds.push(PollFd::new(self.tun.as_fd(), ev));
            pfds.push(PollFd::new(self.woken.as_fd(), PollFlags::POLLIN));
            match crate::moderate::wait(&mut pfds, self.moderation.timeout(IDLE)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("data thread: poll: {e}");
                    std::process::exit(1);
                }
            }
            let ready: Vec<bool> = pfds.iter().map(|p| p.revents().is_some_and(|r| !r.is_empty())).collect();
            drop(pfds);
            let links = self.listeners.len();
            if ready[links + 1] {
                self.drain_wakes();
                self.send_queued(plane);
            }
            if hold || ready[links] {
                self.on_tun(plane);
            }
            let mut segments = 0;
            for li in (0..links).filter(|&li| hold || ready[li]) {
                segments += self.on_link(plane, li, ack_filter);
            }
            self.moderation.saw(segments);
        }
    }
}
