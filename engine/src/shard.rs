//! The receive side of the data plane, on one thread or several
//! (`data-threads`). Each thread owns a shard: its socket of every listen
//! address (the parent bound them with SO_REUSEPORT, so Linux hands each
//! client's datagrams, by the hash of their addresses, always to the same
//! socket), its batch buffers, its tun writer and ACK filter. The session
//! table stays one: a [`Server`] under a mutex, the [`Plane`].
//!
//! What runs where (docs/DATAPATH.md, "The data threads"):
//! - under the lock, per receive batch: the control packets, whole; for a
//!   data packet only the lookup of its session and receive key
//!   ([`Server::receive`]), then, after the opening, its replay check and
//!   source checks ([`Server::opened`]);
//! - outside it: recvmmsg, the authentication and decryption of the data
//!   packets ([`crate::server::DataTicket::open`], which changes nothing),
//!   the ACK filter and the tun writes, where the kernel's own receive path
//!   of the inner packets runs.
//!
//! The packet-id of every packet sent is still allocated in one place
//! under the lock (crate::data), and tun -> UDP stays on the main thread,
//! so a session's packets leave in packet-id order (the client's replay
//! window would count a reordering beyond 64 packets as replays). The
//! main thread keeps the control socket, the timers and the sync: a data
//! thread whose batch left it work (a datagram to send, a record for the
//! syncer, a password check, a timer earlier than its next wake-up) wakes
//! it through a socket pair.

use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

use crate::ackfilter::AckFilter;
use crate::batch::{Batch, BATCH, PER_TURN};
use crate::moderate::Moderation;
use crate::server::{DataTicket, Server};
use crate::session::Now;
use crate::sleep::Sleep;
use crate::tunio::TunIo;

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
        Arc::new(Mutex::new(Plane { server, main_wakes: Instant::now(), sleep: Sleep::default(), hold }))
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

/// One thread's part of the receive side.
pub struct Shard {
    /// One socket per listen address, in the configuration's order.
    pub listeners: Vec<OwnedFd>,
    /// Buffers of the tun side, and the coalescer of the receive batches.
    pub tunio: TunIo,
    /// Thins the clients' pure TCP ACKs of each receive batch (`ack-filter`).
    acks: AckFilter,
    /// ACKs dropped by the filters of all shards, for `show summary`.
    acks_dropped: Arc<AtomicU64>,
    rx: Batch,
    /// Whether a wait leaves the data descriptors out (crate::moderate),
    /// and the `rx-moderation` it was made for.
    pub moderation: Moderation,
    hold: Duration,
    /// A data thread's end of the main thread's wake-up pair (one for
    /// all: duplicating it would take fcntl F_DUPFD, which the sandbox
    /// forbids).
    wake: Option<Arc<UnixDatagram>>,
}

impl Shard {
    pub fn new(listeners: Vec<OwnedFd>, vnet: bool, hold: Duration, acks_dropped: Arc<AtomicU64>) -> Shard {
        Shard {
            listeners,
            tunio: TunIo::new(vnet),
            acks: AckFilter::new(),
            acks_dropped,
            rx: Batch::new(),
            moderation: Moderation::new(hold),
            hold,
            wake: None,
        }
    }

    /// Datagrams from clients on listener `li`: data to the tun device,
    /// control through the sessions. Returns how many TCP data segments
    /// went to the coalescer.
    pub fn on_link(&mut self, plane: &Mutex<Plane>, tun: BorrowedFd<'_>, li: usize, ack_filter: bool) -> usize {
        let mut segments = 0;
        for _ in 0..PER_TURN / BATCH {
            let n = match self.rx.recv(self.listeners[li].as_fd()) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log::debug!("listener: {e}");
                    }
                    break;
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
                self.wake.is_some() && p.wants_main(t.mono)
            };
            if wake {
                self.wake_main();
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
            segments += self.tunio.write_batch(tun, pkts[..n].iter().flatten().copied());
            if n < BATCH {
                break;
            }
        }
        segments
    }

    /// A byte to the main thread; a full pair means it has some to read
    /// already.
    fn wake_main(&self) {
        if let Some(w) = &self.wake {
            if let Err(e) = w.send(&[0]) {
                if e.kind() != io::ErrorKind::WouldBlock {
                    log::debug!("data thread: waking the main thread: {e}");
                }
            }
        }
    }
}

/// The main thread's end of the wake-up pair, and the data threads' end.
/// Made before the sandbox, which forbids new sockets.
pub fn wake_pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
    let (a, b) = UnixDatagram::pair()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((a, b))
}

/// Reads the main thread's wake-ups.
pub fn drain_wakes(main: &UnixDatagram) {
    let mut buf = [0u8; 64];
    while main.recv(&mut buf).is_ok() {}
}

/// Starts a data thread on `shard`. It runs as long as the process; a
/// panic in it ends the process, as it would the single-threaded engine.
pub fn spawn(
    n: usize,
    mut shard: Shard,
    plane: Arc<Mutex<Plane>>,
    tun: Arc<OwnedFd>,
    ack_filter: bool,
    wake: Arc<UnixDatagram>,
) -> io::Result<()> {
    shard.wake = Some(wake);
    std::thread::Builder::new().name(format!("data{n}")).spawn(move || {
        let run = std::panic::AssertUnwindSafe(|| shard.run(&plane, tun.as_fd(), ack_filter));
        if std::panic::catch_unwind(run).is_err() {
            log::error!("data thread {n} panicked: the engine exits");
            std::process::exit(1);
        }
    })?;
    Ok(())
}

impl Shard {
    /// A data thread's loop: wait for its sockets, read them.
    fn run(&mut self, plane: &Mutex<Plane>, tun: BorrowedFd<'_>, ack_filter: bool) {
        /// The wait when nothing flows: only datagrams end it.
        const IDLE: Duration = Duration::from_secs(3600);
        loop {
            let hold = self.moderation.holding();
            let ev = if hold { PollFlags::empty() } else { PollFlags::POLLIN };
            let mut pfds: Vec<PollFd<'_>> = self.listeners.iter().map(|l| PollFd::new(l.as_fd(), ev)).collect();
            match crate::moderate::wait(&mut pfds, self.moderation.timeout(IDLE)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("data thread: poll: {e}");
                    std::process::exit(1);
                }
            }
            let ready: Vec<bool> = pfds.iter().map(|p| hold || p.revents().is_some_and(|r| !r.is_empty())).collect();
            drop(pfds);
            let mut segments = 0;
            for (li, _) in ready.iter().enumerate().filter(|(_, r)| **r) {
                segments += self.on_link(plane, tun, li, ack_filter);
            }
            self.moderation.saw(segments);
        }
    }
}
