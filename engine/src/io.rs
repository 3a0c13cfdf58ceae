//! The engine's I/O shell: one single-threaded poll(2) loop over the parent
//! channel, the syncer channel, the control socket, the tun device and the
//! client listeners. Protocol work is done by the sans-IO layers; this module
//! only moves bytes and answers the control socket.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{sendto, MsgFlags, SockaddrStorage};
use vpnsyncd_common::child::Startup;
use vpnsyncd_common::codec::{DecodeError, Reader};
use vpnsyncd_common::ctl::{self, Summary};
use vpnsyncd_common::heartbeat::{Beats, ParentWatch};
use vpnsyncd_common::imsg::{Imsg, ImsgBuf};
use vpnsyncd_common::msg::{FdKind, ImsgType, KeyKind, Role};
use vpnsyncd_common::secret::Secret;
use vpnsyncd_config::{Config, SyncTransport};

use crate::control::Control;
use crate::server::Server;
use crate::session::Now;
use crate::shard::{lock, Plane, Shard};

/// Everything the engine process holds.
struct Engine {
    conf: Config,
    parent: ImsgBuf,
    syncer: ImsgBuf,
    control: Control,
    /// The management socket (`management`), if configured.
    mgmt: Option<crate::mgmt::Mgmt>,
    /// The session table, shared with the data threads (crate::shard).
    plane: Arc<Mutex<Plane>>,
    /// This thread's part of the data plane: its listeners, tun queue,
    /// buffers and trains.
    shard: Shard,
    /// ACKs dropped by every shard's filter.
    acks_dropped: Arc<AtomicU64>,
    role: Role,
    started: u64,
    /// Key files received for a reload, applied with the `Reload` message.
    pending_keys: Vec<(KeyKind, Secret)>,
    /// client-config-dir files received since the last `CcdDone`.
    ccd: crate::ccd::Loading,
    /// The parent's heartbeats: we exit when they stop.
    watch: ParentWatch,
    /// What the last heartbeat said of every child, for `show summary`.
    beats: Beats,
    /// When the status file is rendered next (`status` statement).
    status_due: Instant,
    /// The syncer said the session table is complete.
    synced: bool,
}

fn bad(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The engine process: runs until the parent goes away.
pub fn main(parent: ImsgBuf, mut st: Startup) -> i32 {
    // One tun queue per thread; their wake-up pairs before the sandbox,
    // which forbids new sockets.
    let vnet = st.fds.iter().any(|(k, _)| *k == FdKind::TunVnet);
    let tun = st.take_fds(if vnet { FdKind::TunVnet } else { FdKind::Tun });
    let pairs = match crate::shard::wake_pairs(tun.len()) {
        Ok(p) => p,
        Err(e) => {
            log::error!("the data threads' wake-up pairs: {e}");
            return 1;
        }
    };
    if let Err(e) = vpnsyncd_common::sandbox::pledge("stdio inet unix") {
        log::error!("pledge: {e}");
        return 1;
    }
    let conf = match vpnsyncd_config::from_parent(&st.conf) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let one = |st: &mut Startup, kind: FdKind| {
        st.take_fds(kind).pop().ok_or_else(|| format!("no {kind:?} descriptor from the parent"))
    };
    let fds = (|| Ok::<_, String>((one(&mut st, FdKind::Control)?, one(&mut st, FdKind::Peer)?)))();
    let (control, peer) = match fds {
        Ok(f) => f,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let mut syncer = ImsgBuf::new(peer);
    syncer.set_maxsize(1 << 20);
    let (session, wrap) = match crate::settings::build(&conf, &st.keys) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    // The settings hold what they need; the received files are zeroized now.
    st.keys.clear();
    // One listener per address and a tun queue for each data thread,
    // thread by thread (parent/src/sockets.rs); this thread's first.
    let listeners = st.take_fds(FdKind::Listener);
    let (per, threads) = (conf.listen.len(), conf.data_threads as usize);
    if listeners.len() != per * threads || tun.len() != threads {
        log::error!(
            "{} listeners and {} tun queues from the parent, not {per} and 1 for each of {threads} data threads",
            listeners.len(),
            tun.len()
        );
        return 1;
    }
    let hold = Duration::from_micros(conf.rx_moderation.into());
    let acks_dropped = Arc::new(AtomicU64::new(0));
    let mut shards = Shard::all(listeners, tun, pairs, vnet, hold, &acks_dropped).into_iter();
    let Some(shard) = shards.next() else {
        log::error!("data-threads is 0");
        return 1;
    };
    let plane = Plane::new(Server::new(&conf, session, wrap), hold);
    for s in shards {
        if let Err(e) = crate::shard::spawn(s, plane.clone(), conf.ack_filter) {
            log::error!("data thread: {e}");
            return 1;
        }
    }
    let mgmt = st.take_fds(FdKind::Management).pop().map(crate::mgmt::Mgmt::new);
    let mut e = Engine {
        plane,
        shard,
        acks_dropped,
        watch: ParentWatch::new(conf.watchdog, Instant::now()),
        conf,
        parent,
        syncer,
        control: Control::new(control),
        mgmt,
        role: Role::Init,
        started: vpnsyncd_common::unix_now(),
        pending_keys: Vec::new(),
        ccd: crate::ccd::Loading::default(),
        beats: Beats::default(),
        status_due: Instant::now(),
        synced: false,
    };
    log::info!("engine ready: {per} listener(s), {threads} data thread(s), tun {}", e.conf.tun_device);
    match e.run() {
        Ok(()) => 0,
        Err(err) => {
            log::error!("{err}");
            1
        }
    }
}

/// What a poll slot belongs to.
#[derive(Clone, Copy)]
enum Slot {
    Parent,
    Syncer,
    Listener,
    Conn(usize),
    Tun,
    Link(usize),
    /// A data thread left work (crate::shard).
    Wake,
    MgmtListener,
    Mgmt(usize),
}

fn now() -> Now {
    Now { mono: Instant::now(), unix: vpnsyncd_common::unix_now() }
}

fn interest(ibuf: &ImsgBuf) -> PollFlags {
    if ibuf.queued() > 0 {
        PollFlags::POLLIN | PollFlags::POLLOUT
    } else {
        PollFlags::POLLIN
    }
}

/// Reads what is available on a channel; EOF is an error (the peer died).
fn read_channel(ibuf: &mut ImsgBuf, name: &str) -> io::Result<Vec<Imsg>> {
    match ibuf.read() {
        Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{name} closed the channel"))),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{name}: {e}"))),
    }
    ibuf.buffered()
}

impl Engine {
    fn run(&mut self) -> io::Result<()> {
        // What came with the start-up messages (a role), then the current
        // role in case it was sent before we were started.
        for m in self.parent.buffered()? {
            self.on_parent(m)?;
        }
        self.parent.compose(ImsgType::RoleRequest as u32, 0, None, &[])?;
        loop {
            let mut slots: Vec<(Slot, BorrowedFd<'_>, PollFlags)> = vec![
                (Slot::Parent, self.parent.as_fd(), interest(&self.parent)),
                (Slot::Syncer, self.syncer.as_fd(), interest(&self.syncer)),
            ];
            if self.control.listening(Instant::now()) {
                slots.push((Slot::Listener, self.control.listener_fd(), PollFlags::POLLIN));
            }
            for (i, c) in self.control.conns.iter().enumerate() {
                // A connection that must drain first is not read: only its
                // writes (and hang-ups, which poll reports anyway) matter.
                let mut ev = interest(&c.ibuf);
                if !c.ready() {
                    ev.remove(PollFlags::POLLIN);
                }
                slots.push((Slot::Conn(i), c.ibuf.as_fd(), ev));
            }
            if let Some(m) = &self.mgmt {
                if m.listening(Instant::now()) {
                    slots.push((Slot::MgmtListener, m.listener_fd(), PollFlags::POLLIN));
                }
                slots.extend(m.conns.iter().enumerate().map(|(i, c)| (Slot::Mgmt(i), c.fd(), c.interest())));
            }
            // While holding, the data descriptors are not watched (only
            // their errors would wake us) and are read after the wait.
            let hold = self.shard.moderation.holding();
            let data = if hold { PollFlags::empty() } else { PollFlags::POLLIN };
            slots.push((Slot::Tun, self.shard.tun.as_fd(), data));
            for (i, l) in self.shard.listeners.iter().enumerate() {
                slots.push((Slot::Link(i), l.as_fd(), data));
            }
            slots.push((Slot::Wake, self.shard.woken.as_fd(), PollFlags::POLLIN));
            let mut pfds: Vec<PollFd<'_>> = slots.iter().map(|(_, fd, ev)| PollFd::new(*fd, *ev)).collect();
            let wait = {
                let mut p = lock(&self.plane);
                let t = Instant::now();
                // A takeover under way only looks for what arrived meanwhile.
                let wait = match p.promoting() {
                    true => Duration::ZERO,
                    false => self.shard.moderation.timeout(p.sleep.timeout(t, &self.deadlines(&p, t))),
                };
                // Under the lock: a data thread that queues an earlier
                // timer after this sees when we wake, and wakes us.
                p.main_wakes = t + wait;
                wait
            };
            match crate::moderate::wait(&mut pfds, wait) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<(Slot, PollFlags)> = slots
                .iter()
                .zip(&pfds)
                .map(|((s, _, _), p)| {
                    let ev = p.revents().unwrap_or(PollFlags::empty());
                    match s {
                        Slot::Tun | Slot::Link(_) if hold => (*s, ev | PollFlags::POLLIN),
                        _ => (*s, ev),
                    }
                })
                .collect();
            drop(pfds);
            drop(slots);
            let mut dead_conns = Vec::new();
            let mut segments = 0;
            for (slot, ev) in ready {
                if ev.is_empty() {
                    continue;
                }
                match slot {
                    Slot::Parent => {
                        if ev.contains(PollFlags::POLLOUT) {
                            self.parent.write()?;
                        }
                        for m in read_channel(&mut self.parent, "parent")? {
                            self.on_parent(m)?;
                        }
                    }
                    Slot::Syncer => {
                        if ev.contains(PollFlags::POLLOUT) {
                            self.syncer.write()?;
                        }
                        for m in read_channel(&mut self.syncer, "syncer")? {
                            self.on_syncer(m)?;
                        }
                    }
                    Slot::Listener => self.control.accept(Instant::now()),
                    Slot::Tun => {
                        self.shard.on_tun(&self.plane);
                        self.send_control();
                    }
                    Slot::MgmtListener => self.mgmt.iter_mut().for_each(|m| m.accept(Instant::now())),
                    Slot::Mgmt(i) => self.on_mgmt(i),
                    Slot::Link(i) => {
                        segments += self.shard.on_link(&self.plane, i, self.conf.ack_filter);
                        self.send_control();
                    }
                    Slot::Wake => {
                        self.shard.drain_wakes();
                        self.send_control();
                    }
                    Slot::Conn(i) => {
                        let res = (|| {
                            if ev.contains(PollFlags::POLLOUT) {
                                self.control.conns[i].ibuf.write()?;
                            }
                            if ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                                self.control.read(i)?;
                            }
                            // Also after a write: requests left buffered
                            // while the connection drained.
                            let id = self.control.conns[i].id;
                            while let Some(m) = self.control.next_request(i)? {
                                self.ctl_request(id, m)?;
                            }
                            Ok::<_, io::Error>(())
                        })();
                        if let Err(e) = res {
                            if e.kind() != io::ErrorKind::UnexpectedEof {
                                log::debug!("control: connection {}: {e}", self.control.conns[i].id);
                            }
                            dead_conns.push(i);
                        }
                    }
                }
            }
            self.shard.moderation.saw(segments);
            for i in dead_conns.into_iter().rev() {
                self.control.conns.remove(i);
            }
            if let Some(m) = &mut self.mgmt {
                m.sweep(Instant::now());
            }
            // Between the reads of two turns: the next ghosts of a takeover.
            if lock(&self.plane).promoting() {
                lock(&self.plane).promote_slice(now());
                self.send_control();
            }
            // After the parent's messages, so a heartbeat that arrived
            // with this wake-up counts.
            self.watch.check(Instant::now())?;
            let t = Instant::now();
            let ran = {
                let mut p = lock(&self.plane);
                let deadline = p.next_deadline(t);
                let due = p.sleep.due(t, deadline);
                if due {
                    p.on_timer(now());
                }
                due
            };
            if ran {
                self.send_control();
            }
            self.status_tick()?;
        }
    }

    /// What the loop waits for besides descriptors: the sessions' timers,
    /// the status file, the parent watchdog.
    fn deadlines(&self, server: &Server, t: Instant) -> [Option<Instant>; 3] {
        let status = self.conf.status.as_ref().map(|_| self.status_due);
        [server.next_deadline(t), status, Some(t + self.watch.next_check(t))]
    }

    /// What the sessions queued for the syncer, the parent and the
    /// clients (the control channel's datagrams). The queues are taken
    /// under the lock and sent after it.
    fn send_control(&mut self) {
        let (sync, checks, outbox, wake) = {
            let mut p = lock(&self.plane);
            // This thread's sessions' pings and the packets handed over to
            // it, sent first, then the data threads' wake-ups for theirs.
            let wake = self.shard.take_queued(&mut p);
            let sync = crate::syncglue::drain(&mut p);
            (sync, std::mem::take(&mut p.checks.out), std::mem::take(&mut p.outbox), wake)
        };
        self.shard.send_and_wake(wake);
        for (ty, data) in sync {
            if let Err(e) = self.syncer.compose(ty as u32, 0, None, &data) {
                log::error!("sync: {e}");
                break;
            }
        }
        for c in checks {
            if let Err(e) = self.parent.compose(ImsgType::AuthCheck as u32, 0, None, &c.encode()) {
                log::error!("password check: {e}");
            }
        }
        for (li, to, bytes) in outbox {
            let Some(fd) = self.shard.listeners.get(li) else {
                continue;
            };
            let addr: SockaddrStorage = SocketAddr::into(to);
            if let Err(e) = sendto(fd.as_fd().as_raw_fd(), &bytes, &addr, MsgFlags::MSG_DONTWAIT) {
                log::debug!("send to {to}: {e}");
            }
        }
    }

    fn on_parent(&mut self, m: Imsg) -> io::Result<()> {
        match ImsgType::from_u32(m.hdr.ty).map_err(bad)? {
            ImsgType::Role => {
                let role = Role::from_u8(Reader::new(&m.data).u8().map_err(bad)?).map_err(bad)?;
                log::info!("role {}", role.name());
                lock(&self.plane).set_role(now(), role);
                self.role = role;
                self.send_control();
            }
            ImsgType::Heartbeat => {
                let mut r = Reader::new(&m.data);
                self.beats = Beats::decode(&mut r).map_err(bad)?;
                r.end().map_err(bad)?;
                self.watch.on_heartbeat(&mut self.parent, Instant::now())?;
            }
            ImsgType::Verbose => vpnsyncd_common::child::on_verbose(Reader::new(&m.data).u8().map_err(bad)?),
            ImsgType::KeyMaterial => self.pending_keys.push(vpnsyncd_common::child::key_material(m.data).map_err(bad)?),
            ImsgType::CcdFile => {
                if let Err(e) = self.ccd.add(&m.data, self.conf.network) {
                    log::error!("client-config-dir: {e}");
                }
            }
            ImsgType::CcdDone => {
                let table = std::mem::take(&mut self.ccd).finish();
                log::info!("client-config-dir: {} client file(s)", table.len());
                lock(&self.plane).set_client_configs(table);
            }
            ImsgType::Reload => {
                let text = std::str::from_utf8(&m.data).map_err(|_| bad(DecodeError("configuration is not UTF-8")))?;
                let conf = vpnsyncd_config::from_parent(text)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let keys = std::mem::take(&mut self.pending_keys);
                match crate::settings::build(&conf, &keys) {
                    Ok((session, wrap)) => {
                        let mut p = lock(&self.plane);
                        p.reconfigure(&conf, session, wrap);
                        p.hold = Duration::from_micros(conf.rx_moderation.into());
                        drop(p);
                        self.conf = conf;
                        log::info!("configuration reloaded ({} key files)", keys.len());
                    }
                    Err(e) => log::error!("reload: {e}; keeping the running settings"),
                }
            }
            ImsgType::AuthVerdict => {
                let v = vpnsyncd_common::auth::AuthVerdict::decode(&m.data).map_err(bad)?;
                lock(&self.plane).on_auth_verdict(now(), &v);
                self.send_control();
            }
            ImsgType::CtlResult => {
                self.control.answered(m.hdr.peerid);
                self.control.reply(m.hdr.peerid, ImsgType::CtlResult, &m.data);
            }
            other => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {other:?} from the parent")))
            }
        }
        Ok(())
    }

    /// Commands on management connection `i`, answered at once; the
    /// sessions a `kill` ended say goodbye and go to the syncer as deletes.
    fn on_mgmt(&mut self, i: usize) {
        let t = now();
        let view = crate::mgmt::answer::View {
            now: t,
            cluster: self.cluster(),
            started: self.started,
            local: self.conf.server_address(),
            local6: self.conf.network6.map(|n| n.server()),
            listen: self.conf.listen.first().copied(),
        };
        let Some(m) = &mut self.mgmt else { return };
        let mut p = lock(&self.plane);
        m.on_ready(i, t.mono, |line| crate::mgmt::answer::answer(&crate::mgmt::command::parse(line), &mut p, &view));
        drop(p);
        self.send_control();
    }

    /// Renders the status file when it is due and hands it to the parent,
    /// which writes it (the engine has no filesystem).
    fn status_tick(&mut self) -> io::Result<()> {
        let Some(st) = &self.conf.status else { return Ok(()) };
        if Instant::now() < self.status_due {
            return Ok(());
        }
        self.status_due = Instant::now() + Duration::from_secs(st.interval.into());
        let t = now();
        let text = crate::status::render(
            st.version,
            t.unix,
            &crate::status::rows(&lock(&self.plane), t),
            self.cluster(),
            "\n",
        );
        for part in text.as_bytes().chunks(crate::status::PART) {
            self.parent.compose(ImsgType::StatusPart as u32, 0, None, part)?;
        }
        self.parent.compose(ImsgType::StatusCommit as u32, 0, None, &[])
    }

    /// The role and sync state for the status report's GLOBAL_STATS.
    fn cluster(&self) -> crate::status::Cluster {
        let sync = match (&self.conf.sync, self.synced) {
            (None, _) => "standalone",
            (Some(_), true) => "ready",
            (Some(_), false) => "incomplete",
        };
        crate::status::Cluster { role: self.role, sync }
    }

    fn on_syncer(&mut self, m: Imsg) -> io::Result<()> {
        let ty = ImsgType::from_u32(m.hdr.ty).map_err(bad)?;
        self.synced |= ty == ImsgType::SyncReady;
        match ty {
            ty @ (ImsgType::SyncUpsert | ImsgType::SyncProgress | ImsgType::SyncDelete | ImsgType::SyncReady) => {
                crate::syncglue::apply(&mut lock(&self.plane), now(), ty, &m.data).map_err(bad)?
            }
            ImsgType::CtlSync => {
                self.control.answered(m.hdr.peerid);
                self.control.reply(m.hdr.peerid, ImsgType::CtlSync, &m.data);
                self.control.reply(m.hdr.peerid, ImsgType::CtlEnd, &[]);
            }
            other => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {other:?} from the syncer")))
            }
        }
        Ok(())
    }

    fn summary(&self) -> Summary {
        let sync = match &self.conf.sync {
            None => "standalone".to_string(),
            Some(s) => match &s.transport {
                SyncTransport::Multicast { group, port, interface } => {
                    format!("multicast {group}:{port} on {interface}")
                }
                SyncTransport::Unicast { peers } => format!("unicast to {} peer(s)", peers.len()),
            },
        };
        let p = lock(&self.plane);
        Summary {
            version: vpnsyncd_common::VERSION.to_string(),
            role: self.role,
            started: self.started,
            clients: p.client_count() as u32,
            max_clients: self.conf.max_clients,
            tun_device: self.conf.tun_device.clone(),
            server_address: format!("{}/{}", self.conf.server_address(), self.conf.network.prefix),
            listen: self.conf.listen.iter().map(|a| a.to_string()).collect(),
            sync,
            ghosts: p.ghost_count() as u32,
            refused_packets: p.refused_first_packets(),
            refused_records: p.refusals().total(),
            refused_renegotiations: p.refused_renegotiations(),
            wrong_source: p.wrong_source_packets(),
            acks_filtered: self.acks_dropped.load(Ordering::Relaxed),
            watchdog: self.watch.limit_secs(),
            parent_heard: self.watch.heard_ms(),
            heartbeats: self.beats.clone(),
        }
    }

    /// Serves one control request from connection `id`.
    fn ctl_request(&mut self, id: u32, m: Imsg) -> io::Result<()> {
        let ty = match ImsgType::from_u32(m.hdr.ty) {
            Ok(t) => t,
            Err(_) => {
                self.control.reply(
                    id,
                    ImsgType::CtlResult,
                    &ctl::encode_result(&Err(format!("unknown request type {}", m.hdr.ty))),
                );
                return Ok(());
            }
        };
        match ty {
            ImsgType::CtlShowSummary => {
                let s = self.summary().encode();
                self.control.reply(id, ImsgType::CtlSummary, &s);
                self.control.reply(id, ImsgType::CtlEnd, &[]);
            }
            ImsgType::CtlShowClients => {
                let clients = lock(&self.plane).client_infos();
                for c in clients {
                    self.control.reply(id, ImsgType::CtlClient, &c.encode());
                }
                self.control.reply(id, ImsgType::CtlEnd, &[]);
            }
            ImsgType::CtlShowSync => {
                self.control.forwarded(id);
                self.syncer.compose(ImsgType::CtlShowSync as u32, id, None, &[])?
            }
            ImsgType::CtlReload => {
                self.control.forwarded(id);
                self.parent.compose(ImsgType::CtlReload as u32, id, None, &[])?
            }
            ImsgType::CtlLog => {
                let verbose = Reader::new(&m.data).bool().map_err(bad)?;
                self.parent.compose(ImsgType::Verbose as u32, 0, None, &[u8::from(verbose)])?;
                let msg = if verbose { "logging verbose" } else { "logging brief" };
                self.control.reply(id, ImsgType::CtlResult, &ctl::encode_result(&Ok(msg.to_string())));
            }
            ImsgType::CtlKillClient => {
                let name = Reader::new(&m.data).str().map_err(bad)?.to_owned();
                let killed = lock(&self.plane).kill_client(now(), &name);
                let res = match killed {
                    0 => Err(format!("no client with common name \"{name}\"")),
                    n => Ok(format!("disconnected {n} session(s) of \"{name}\"")),
                };
                self.control.reply(id, ImsgType::CtlResult, &ctl::encode_result(&res));
            }
            other => {
                self.control.reply(
                    id,
                    ImsgType::CtlResult,
                    &ctl::encode_result(&Err(format!("{other:?} is not a control request"))),
                );
            }
        }
        Ok(())
    }
}
