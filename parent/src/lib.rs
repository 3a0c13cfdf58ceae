//! The privileged parent of vpnsyncd: reads the configuration and key files,
//! opens every device and socket, starts the children with what each needs,
//! relays role changes and control requests, and tears everything down when
//! told to or when any child dies.

mod auth;
mod auth_helper;
mod ccd;
mod children;
pub mod demote;
mod route;
mod sockets;
mod status;
mod tun;
mod tun6;
mod watchdog;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use vpnsyncd_common::codec::Reader;
use vpnsyncd_common::ctl;
use vpnsyncd_common::imsg::{CHILD_MAXSIZE, HEADER_SIZE};
use vpnsyncd_common::msg::{FdKind, ImsgType, KeyKind, Role};
use vpnsyncd_common::secret::Secret;
use vpnsyncd_config::{ConfError, ConfErrors, Config, FileKind, KeyFile, Loaded, SyncTransport};

use children::{Child, ChildKind, ExecArgs};
use demote::Demoter;
use watchdog::Watchdog;

/// Command-line options of the parent.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub foreground: bool,
    pub verbose: u8,
    pub configtest: bool,
    pub file: PathBuf,
    pub macros: Vec<(String, String)>,
}

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/vpnsyncd.conf";

/// The key files named by a configuration, read into memory (zeroized when
/// dropped: after start-up and after each reload has sent them).
struct KeyFiles(Vec<(KeyKind, Secret)>);

/// The largest key file fits one `KeyMaterial` message (kind byte and
/// imsg header included) on a child's channel.
const _: () = assert!(
    FileKind::Certificate.max_size() as usize + 1 + HEADER_SIZE <= CHILD_MAXSIZE
        && FileKind::PrivateKey.max_size() <= FileKind::Certificate.max_size()
        && FileKind::StaticKey.max_size() <= FileKind::Certificate.max_size()
);

impl KeyFiles {
    fn new(keys: Vec<(KeyFile, Vec<u8>)>) -> KeyFiles {
        let kind = |f: KeyFile| match f {
            KeyFile::Ca => KeyKind::Ca,
            KeyFile::Certificate => KeyKind::Certificate,
            KeyFile::Key => KeyKind::Key,
            KeyFile::Crl => KeyKind::Crl,
            KeyFile::Wrap => KeyKind::Wrap,
            KeyFile::Sync => KeyKind::Sync,
        };
        // The buffers become zeroized ones without a copy.
        KeyFiles(keys.into_iter().map(|(f, b)| (kind(f), Secret::new(b))).collect())
    }

    /// With `password token`, the token key the engine checks tokens
    /// with, made from the key files (crate::auth::token_key).
    fn with_token_key(mut self, conf: &Config) -> KeyFiles {
        if conf.password_token.is_some() {
            let find = |kind| self.0.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.as_slice());
            let key = auth::token_key(find(KeyKind::Sync), find(KeyKind::Key).unwrap_or_default());
            self.0.push((KeyKind::AuthToken, key));
        }
        self
    }

    /// Which key files each child gets: the engine the TLS and wrap keys, the
    /// syncer only the sync key, carpwatch nothing.
    fn for_child(&self, kind: ChildKind) -> impl Iterator<Item = &(KeyKind, Secret)> {
        self.0.iter().filter(move |(k, _)| match kind {
            ChildKind::Engine => *k != KeyKind::Sync,
            ChildKind::Syncer => *k == KeyKind::Sync,
            ChildKind::Carpwatch => false,
        })
    }
}

/// The canonical text of `conf`, which the children receive in one
/// message: refused when it would not fit their channel (a start would
/// fail there).
fn canonical(conf: &Config, file: &Path) -> Result<String, ConfErrors> {
    let text = conf.to_string();
    if text.len() + HEADER_SIZE > CHILD_MAXSIZE {
        let msg = format!(
            "the canonical configuration is {} bytes, more than the {} bytes a child's channel carries: shorten it",
            text.len(),
            CHILD_MAXSIZE - HEADER_SIZE
        );
        return Err(ConfErrors(vec![ConfError { file: file.display().to_string(), pos: None, msg }]));
    }
    Ok(text)
}

/// The configuration, its canonical text and its key files, checked as a
/// start needs them. Key files that cannot be read are in `unreadable`.
fn load_config(opts: &Options) -> Result<(Loaded, String), ConfErrors> {
    let loaded = vpnsyncd_config::load(&opts.file, &opts.macros)?;
    let text = canonical(&loaded.config, &opts.file)?;
    Ok((loaded, text))
}

pub use auth_helper::helper_main;

/// `vpnsyncd -n`: check everything a start checks and print the canonical
/// configuration. Key files that cannot be read are reported as warnings,
/// not errors, so that a configuration can be checked away from the
/// machine that holds the keys (the daemon itself refuses to start without
/// them); key files of the wrong type or size are errors. Returns the exit
/// status.
pub fn configtest(opts: &Options) -> i32 {
    let (loaded, text) = match load_config(opts) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return 1;
        }
    };
    for e in &loaded.unreadable.0 {
        eprintln!("warning: {e}");
    }
    print!("{text}");
    0
}

/// The descriptors the parent created for the children.
struct Resources {
    /// The tun device's queues, one per data thread, and how they were
    /// opened (`FdKind::Tun` or `TunVnet`).
    tun: (FdKind, Vec<OwnedFd>),
    listeners: Vec<OwnedFd>,
    control: OwnedFd,
    sync: Option<OwnedFd>,
    route: Option<OwnedFd>,
    management: Option<OwnedFd>,
}

fn open_resources(conf: &Config) -> io::Result<Resources> {
    let threads = conf.data_threads as usize;
    let (tun, vnet) = tun::open(&conf.tun_device, conf.server_address(), conf.network.prefix, threads)?;
    let tun = (if vnet { FdKind::TunVnet } else { FdKind::Tun }, tun);
    log::info!("{}: {}/{} up", conf.tun_device, conf.server_address(), conf.network.prefix);
    if let Some(n6) = conf.network6 {
        tun6::configure(&conf.tun_device, n6)?;
        log::info!("{}: {}/{} up", conf.tun_device, n6.server(), n6.prefix);
    }
    let listeners = sockets::listeners(&conf.listen, threads)?;
    let control = sockets::control(&conf.socket)?;
    let management = conf.management.as_ref().map(sockets::management).transpose()?;
    let (sync, route) = match &conf.sync {
        None => (None, None),
        Some(s) => {
            let sock = match &s.transport {
                SyncTransport::Multicast { group, port, interface } => sockets::sync(*port, Some((*group, interface)))?,
                SyncTransport::Unicast { peers } => sockets::sync(peers.first().map_or(1196, |p| p.port()), None)?,
            };
            (Some(sock), Some(sockets::route_events()?))
        }
    };
    Ok(Resources { tun, listeners, control, sync, route, management })
}

/// Signals arrive as bytes on these sockets (signal-hook's self-pipe).
struct SignalPipes {
    term: UnixStream,
    hup: UnixStream,
    chld: UnixStream,
}

impl SignalPipes {
    fn register() -> io::Result<SignalPipes> {
        let pipe = |sigs: &[i32]| -> io::Result<UnixStream> {
            let (r, w) = UnixStream::pair()?;
            r.set_nonblocking(true)?;
            for s in sigs {
                signal_hook::low_level::pipe::register(*s, w.try_clone()?)?;
            }
            Ok(r)
        };
        Ok(SignalPipes {
            term: pipe(&[libc::SIGTERM, libc::SIGINT])?,
            hup: pipe(&[libc::SIGHUP])?,
            chld: pipe(&[libc::SIGCHLD])?,
        })
    }
}

fn drain(s: &UnixStream) {
    use std::io::Read;
    let mut buf = [0u8; 64];
    while matches!((&mut &*s).read(&mut buf), Ok(n) if n > 0) {}
}

/// Why the main loop ended.
enum Exit {
    Shutdown,
    /// A child died or stopped answering heartbeats.
    ChildDied,
}

struct Parent {
    opts: Options,
    conf: Config,
    children: Vec<Child>,
    demoter: Option<Demoter>,
    control_path: PathBuf,
    /// The management socket bound at start, removed at exit.
    management_path: Option<PathBuf>,
    /// The last role carpwatch reported.
    role: Option<Role>,
    /// Password checks for the engine under way.
    scripts: auth::Scripts,
    status: status::StatusWriter,
    /// The kernel routes of the client-config-dir's iroutes.
    routes: route::Routes,
}

/// Runs the daemon. Returns the exit status.
pub fn run(opts: Options) -> i32 {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("vpnsyncd: need root privileges");
        return 1;
    }
    let (conf, keys, conf_text) = match load_config(&opts) {
        Ok((l, _)) if !l.unreadable.0.is_empty() => {
            eprint!("{}", l.unreadable);
            return 1;
        }
        Ok((l, text)) => {
            let keys = KeyFiles::new(l.keys).with_token_key(&l.config);
            (l.config, keys, text)
        }
        Err(e) => {
            eprint!("{e}");
            return 1;
        }
    };
    let (uid, gid) = match vpnsyncd_common::sandbox::resolve_user(&conf.user) {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("vpnsyncd: {e}");
            return 1;
        }
    };
    if let Err(e) = vpnsyncd_common::sandbox::prepare_chroot(Path::new(vpnsyncd_common::sandbox::CHROOT_DIR)) {
        eprintln!("vpnsyncd: {e}");
        return 1;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vpnsyncd: cannot find my own executable to re-execute: {e}");
            return 1;
        }
    };
    if !opts.foreground {
        if let Err(e) = nix::unistd::daemon(false, false) {
            eprintln!("vpnsyncd: daemon: {e}");
            return 1;
        }
    }
    vpnsyncd_common::log::init(opts.foreground, opts.verbose, "parent");
    // After current_exe: on OpenBSD it reads argv[0], which the title replaces.
    vpnsyncd_common::proctitle::set(vpnsyncd_common::proctitle::Title::Parent);
    log::info!("starting vpnsyncd {}", vpnsyncd_common::VERSION);

    let mut demoter =
        conf.sync.as_ref().map(|s| Demoter::new(s.demote.group.clone(), s.demote.file.clone(), s.demote.value));
    // A member that joins must not become master before it holds the
    // cluster's sessions: demoted until the syncer reports the table complete.
    if let Some(d) = &mut demoter {
        if let Err(e) = d.set(true) {
            log::error!("demote: {e}");
        }
    }
    let tun = route::Device { name: conf.tun_device.clone(), addr: conf.server_address() };
    let mut parent = Parent {
        routes: route::Routes::new(tun),
        control_path: conf.socket.clone(),
        management_path: conf.management.as_ref().map(|m| m.path.clone()),
        opts,
        conf,
        children: Vec::new(),
        demoter,
        role: None,
        scripts: auth::Scripts::new(auth::DEFAULT_DIR, &exe),
        status: Default::default(),
    };
    let code = match parent.start(&exe, uid, gid, &keys, &conf_text) {
        Ok(signals) => match parent.main_loop(&signals) {
            Exit::Shutdown => 0,
            Exit::ChildDied => 1,
        },
        Err(e) => {
            log::error!("{e}");
            1
        }
    };
    parent.teardown(code != 0);
    code
}

impl Parent {
    fn start(&mut self, exe: &Path, uid: u32, gid: u32, keys: &KeyFiles, conf_text: &str) -> io::Result<SignalPipes> {
        let signals = SignalPipes::register()?;
        let res = open_resources(&self.conf)?;
        let args = ExecArgs { exe, uid, gid, foreground: self.opts.foreground, verbose: self.opts.verbose };
        for kind in ChildKind::ALL {
            let child = children::spawn(kind, &args)?;
            log::debug!("started {} (pid {})", kind.name(), child.pid);
            self.children.push(child);
        }
        let (engine_peer, syncer_peer) = vpnsyncd_common::imsg::socketpair()?;
        let Resources { tun, listeners, control, sync, route, management } = res;
        for child in &mut self.children {
            child.ibuf.compose(ImsgType::Conf as u32, 0, None, conf_text.as_bytes())?;
            for (kind, bytes) in keys.for_child(child.kind) {
                send_key(child, *kind, bytes)?;
            }
        }
        let mut fds: Vec<(ChildKind, FdKind, OwnedFd)> =
            tun.1.into_iter().map(|q| (ChildKind::Engine, tun.0, q)).collect();
        fds.extend([
            (ChildKind::Engine, FdKind::Control, control),
            (ChildKind::Engine, FdKind::Peer, engine_peer),
            (ChildKind::Syncer, FdKind::Peer, syncer_peer),
        ]);
        fds.extend(listeners.into_iter().map(|l| (ChildKind::Engine, FdKind::Listener, l)));
        fds.extend(sync.map(|s| (ChildKind::Syncer, FdKind::Sync, s)));
        fds.extend(route.map(|r| (ChildKind::Carpwatch, FdKind::Route, r)));
        fds.extend(management.map(|m| (ChildKind::Engine, FdKind::Management, m)));
        for (to, kind, fd) in fds {
            let child = self.child_mut(to);
            child.ibuf.compose(ImsgType::Fd as u32, 0, Some(fd), &[kind as u8])?;
        }
        for child in &mut self.children {
            child.ibuf.compose(ImsgType::ConfDone as u32, 0, None, &[])?;
        }
        // After ConfDone: the engine takes the directory in its event loop
        // (its start-up read knows only the configuration, keys and fds).
        let conf = self.conf.clone();
        let iroutes = ccd::send(self.child_mut(ChildKind::Engine), &conf)?;
        self.routes.apply(&iroutes);
        for child in &mut self.children {
            child.ibuf.flush().map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", child.kind.name())))?;
        }
        log::info!("started engine, syncer and carpwatch");
        Ok(signals)
    }

    fn child_mut(&mut self, kind: ChildKind) -> &mut Child {
        self.children.iter_mut().find(|c| c.kind == kind).expect("every kind is started")
    }

    fn main_loop(&mut self, sig: &SignalPipes) -> Exit {
        let mut watchdog = Watchdog::new(self.conf.watchdog, Instant::now());
        loop {
            let mut fds = vec![
                PollFd::new(sig.term.as_fd(), PollFlags::POLLIN),
                PollFd::new(sig.hup.as_fd(), PollFlags::POLLIN),
                PollFd::new(sig.chld.as_fd(), PollFlags::POLLIN),
            ];
            for c in &self.children {
                let mut ev = PollFlags::POLLIN;
                if c.ibuf.queued() > 0 {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.ibuf.as_fd(), ev));
            }
            let mut wait = watchdog.timeout(Instant::now(), &self.children);
            if let Some(w) = self.scripts.wait() {
                wait = wait.min(w);
            }
            match poll(&mut fds, PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("poll: {e}");
                    return Exit::ChildDied;
                }
            }
            let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
            drop(fds);
            if !ready[2].is_empty() {
                drain(&sig.chld);
                if !self.reap(false).is_empty() {
                    return Exit::ChildDied;
                }
            }
            if !ready[0].is_empty() {
                drain(&sig.term);
                log::info!("terminating on signal");
                return Exit::Shutdown;
            }
            if !ready[1].is_empty() {
                drain(&sig.hup);
                match self.reload() {
                    Ok(m) => log::info!("{m}"),
                    Err(e) => log::error!("{e}"),
                }
            }
            for (i, ev) in ready[3..].iter().enumerate() {
                if ev.is_empty() {
                    continue;
                }
                if let Err(e) = self.handle_child(i, *ev) {
                    log::error!("{}: {e}", self.children[i].kind.name());
                    // The child is gone or broken: stop at once, so that
                    // the demotion is not delayed. Its channel closes
                    // before it can be reaped; teardown logs how it ended.
                    return Exit::ChildDied;
                }
            }
            // After the children's messages, so that answers that arrived
            // with this wake-up count.
            let now = Instant::now();
            if let Some((i, why)) = watchdog.hung(now, &self.children) {
                // Continued after a stop of our own, we may find the
                // children gone rather than hung: say so.
                if !self.reap(false).is_empty() {
                    return Exit::ChildDied;
                }
                log::error!("{why}; demoting and stopping");
                // It could not act on SIGTERM: kill it now, which also
                // closes the tun device when it is the engine.
                let _ = kill(Pid::from_raw(self.children[i].pid), Signal::SIGKILL);
                return Exit::ChildDied;
            }
            if let Err(e) = self.send_verdicts(now) {
                log::error!("engine: {e}");
                return Exit::ChildDied;
            }
            if let Err(e) = watchdog.beat(now, &mut self.children) {
                log::error!("heartbeat: {e}");
                return Exit::ChildDied;
            }
        }
    }

    /// The verdicts of the password scripts that ended, to the engine.
    fn send_verdicts(&mut self, now: Instant) -> io::Result<()> {
        for v in self.scripts.poll(now) {
            self.child_mut(ChildKind::Engine).ibuf.compose(ImsgType::AuthVerdict as u32, 0, None, &v.encode())?;
        }
        Ok(())
    }

    /// Collects the children that ended and logs how each did; returns
    /// their pids and statuses. Each is waited for by its pid: password
    /// scripts (crate::auth) collect their own exit status. `stopping`:
    /// teardown asked them to end, so an end by its SIGTERM is no error.
    fn reap(&mut self, stopping: bool) -> Vec<(i32, WaitStatus)> {
        let mut ended = Vec::new();
        let mut i = 0;
        while i < self.children.len() {
            match waitpid(Pid::from_raw(self.children[i].pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => i += 1,
                Ok(status) => {
                    let c = self.children.remove(i);
                    let line = format!("{} (pid {}) {}", c.kind.name(), c.pid, children::describe_exit(status));
                    if stopping && children::stopped_as_told(status) {
                        log::info!("{line}");
                    } else {
                        log::error!("{line}");
                    }
                    ended.push((c.pid, status));
                }
            }
        }
        ended
    }

    fn handle_child(&mut self, i: usize, ev: PollFlags) -> io::Result<()> {
        if ev.contains(PollFlags::POLLOUT) {
            self.children[i].ibuf.write()?;
        }
        if ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match self.children[i].ibuf.read() {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "channel closed")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        while let Some(m) = self.children[i].ibuf.get()? {
            self.dispatch(self.children[i].kind, m)?;
        }
        Ok(())
    }

    /// Handles one message from a child, checking that this child may send it.
    fn dispatch(&mut self, from: ChildKind, m: vpnsyncd_common::imsg::Imsg) -> io::Result<()> {
        let bad = |e: vpnsyncd_common::codec::DecodeError| io::Error::new(io::ErrorKind::InvalidData, e);
        let ty = ImsgType::from_u32(m.hdr.ty).map_err(bad)?;
        match (from, ty) {
            (_, ImsgType::Heartbeat) => Watchdog::answered(self.child_mut(from), Instant::now()),
            (ChildKind::Carpwatch, ImsgType::Role) => {
                let role = Role::from_u8(Reader::new(&m.data).u8().map_err(bad)?).map_err(bad)?;
                log::info!("role is now {}", role.name());
                self.role = Some(role);
                for to in [ChildKind::Engine, ChildKind::Syncer] {
                    self.child_mut(to).ibuf.compose(ImsgType::Role as u32, 0, None, &[role as u8])?;
                }
            }
            // A child that starts asks for the role; before carpwatch
            // knows it, the child learns it with the first `Role`.
            (ChildKind::Engine | ChildKind::Syncer, ImsgType::RoleRequest) => {
                if let Some(role) = self.role {
                    self.child_mut(from).ibuf.compose(ImsgType::Role as u32, 0, None, &[role as u8])?;
                }
            }
            (ChildKind::Engine, ImsgType::CtlReload) => {
                let res = self.reload();
                match &res {
                    Ok(m) => log::info!("{m}"),
                    Err(e) => log::error!("{e}"),
                }
                let reply = ctl::encode_result(&res);
                self.child_mut(ChildKind::Engine).ibuf.compose(
                    ImsgType::CtlResult as u32,
                    m.hdr.peerid,
                    None,
                    &reply,
                )?;
            }
            (ChildKind::Syncer, ImsgType::SyncReady) => {
                if let Some(d) = &mut self.demoter {
                    d.set(false).map_err(|e| io::Error::new(e.kind(), format!("demote: {e}")))?;
                }
            }
            (ChildKind::Syncer, ImsgType::SyncUnready) => {
                log::warn!("demoted: {}", String::from_utf8_lossy(&m.data));
                if let Some(d) = &mut self.demoter {
                    d.set(true).map_err(|e| io::Error::new(e.kind(), format!("demote: {e}")))?;
                }
            }
            (ChildKind::Engine, ImsgType::AuthCheck) => {
                let c = vpnsyncd_common::auth::AuthCheck::decode(&m.data).map_err(bad)?;
                let refused = match &self.conf.password {
                    Some(how) => self.scripts.start(&c, how, Instant::now()),
                    None => Some(vpnsyncd_common::auth::AuthVerdict {
                        id: c.id,
                        accepted: false,
                        reason: "no password check configured".into(),
                    }),
                };
                if let Some(v) = refused {
                    self.child_mut(ChildKind::Engine).ibuf.compose(
                        ImsgType::AuthVerdict as u32,
                        0,
                        None,
                        &v.encode(),
                    )?;
                }
            }
            (ChildKind::Engine, ImsgType::StatusPart) => self.status.part(&m.data),
            (ChildKind::Engine, ImsgType::StatusCommit) => {
                if let Some(st) = &self.conf.status {
                    if let Err(e) = self.status.commit(&st.path) {
                        log::warn!("{e}");
                    }
                }
            }
            (ChildKind::Engine, ImsgType::Verbose) => {
                let level = Reader::new(&m.data).u8().map_err(bad)?;
                vpnsyncd_common::log::set_verbose(level);
                for c in &mut self.children {
                    c.ibuf.compose(ImsgType::Verbose as u32, 0, None, &[level])?;
                }
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected {ty:?} from {}", from.name()),
                ));
            }
        }
        Ok(())
    }

    /// Re-reads the configuration and key files and hands them to the
    /// children. An invalid configuration is refused and the old one stays.
    fn reload(&mut self) -> Result<String, String> {
        let refused = |e: &ConfErrors| format!("reload refused, keeping the running configuration:\n{e}");
        let (loaded, text) = load_config(&self.opts).map_err(|e| refused(&e))?;
        if !loaded.unreadable.0.is_empty() {
            return Err(refused(&loaded.unreadable));
        }
        let keys = KeyFiles::new(loaded.keys).with_token_key(&loaded.config);
        let conf = loaded.config;
        for what in restart_needed(&self.conf, &conf) {
            log::warn!("reload: {what} changed; restart vpnsyncd to apply it");
        }
        let send = |c: &mut Child| -> io::Result<()> {
            for (kind, bytes) in keys.for_child(c.kind) {
                send_key(c, *kind, bytes)?;
            }
            c.ibuf.compose(ImsgType::Reload as u32, 0, None, text.as_bytes())
        };
        for c in &mut self.children {
            send(c).map_err(|e| format!("reload: {}: {e}", c.kind.name()))?;
        }
        let iroutes =
            ccd::send(self.child_mut(ChildKind::Engine), &conf).map_err(|e| format!("reload: engine: {e}"))?;
        self.routes.apply(&iroutes);
        self.conf = conf;
        Ok(format!("reloaded {}", self.opts.file.display()))
    }

    /// Sends every child SIGTERM and collects them all (SIGKILL after
    /// 3 s), logging how each ended; returns that. A child that died on
    /// its own may become reapable only now: its channel closes before
    /// the kernel lets it be reaped (a dying engine first takes its tun
    /// device down, which on a loaded machine takes longer than any fixed
    /// wait, while the syncer, seeing the engine's channel close, exits at
    /// once). A SIGTERM to a process already exiting does not change how
    /// it ends, so its own end is what is logged.
    fn stop_children(&mut self) -> Vec<(i32, WaitStatus)> {
        for c in &self.children {
            let _ = kill(Pid::from_raw(c.pid), Signal::SIGTERM);
        }
        let mut ended = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            ended.extend(self.reap(true));
            if self.children.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in self.children.drain(..) {
            log::warn!("{} (pid {}) did not stop; killing it", c.kind.name(), c.pid);
            let _ = kill(Pid::from_raw(c.pid), Signal::SIGKILL);
            if let Ok(status) = waitpid(Pid::from_raw(c.pid), None) {
                ended.push((c.pid, status));
            }
        }
        ended
    }

    /// Stops the children and removes what we created. `failed`: demote so
    /// that another cluster member takes over.
    fn teardown(&mut self, failed: bool) {
        if let Some(d) = &mut self.demoter {
            if let Err(e) = d.set(true) {
                log::error!("demote: {e}");
            }
        }
        // While the device is there (the engine holds it).
        self.routes.clear();
        self.stop_children();
        let _ = std::fs::remove_file(&self.control_path);
        if let Some(m) = &self.management_path {
            let _ = std::fs::remove_file(m);
        }
        log::info!("{}", if failed { "exiting after a failure" } else { "terminated" });
    }
}

/// Queues one key file for a child: its kind, then its bytes, copied once,
/// into the queued message (which is zeroized once written).
fn send_key(c: &mut Child, kind: KeyKind, bytes: &[u8]) -> io::Result<()> {
    c.ibuf.compose_parts(ImsgType::KeyMaterial as u32, 0, None, &[&[kind as u8], bytes])
}

/// The settings a reload cannot change in place (they are devices and
/// sockets the parent opened at start).
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    if old.listen != new.listen {
        v.push("listen");
    }
    if old.data_threads != new.data_threads {
        v.push("data-threads");
    }
    if old.tun_device != new.tun_device || old.network != new.network {
        v.push("tun device or client network");
    }
    if old.user != new.user {
        v.push("user");
    }
    if old.socket != new.socket {
        v.push("socket");
    }
    if old.management != new.management {
        v.push("management");
    }
    if old.watchdog != new.watchdog {
        v.push("watchdog");
    }
    let transport = |c: &Config| c.sync.as_ref().map(|s| (s.transport.clone(), s.role.clone()));
    if transport(old) != transport(new) {
        v.push("sync transport or role source");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use vpnsyncd_common::imsg::{Imsg, ImsgBuf, ImsgHdr};

    /// A parent with three children whose other ends are returned.
    fn parent() -> (Parent, Vec<ImsgBuf>) {
        let conf = vpnsyncd_config::parse_str("t.conf", "ca /k/ca\ncertificate /k/c\nkey /k/k\n", &[]).unwrap();
        let (mut children, mut ends) = (Vec::new(), Vec::new());
        for kind in ChildKind::ALL {
            let (ours, theirs) = vpnsyncd_common::imsg::socketpair().unwrap();
            children.push(Child::new(kind, 0, ImsgBuf::new(ours)));
            ends.push(ImsgBuf::new(theirs));
        }
        let p = Parent {
            routes: route::Routes::new(route::Device { name: conf.tun_device.clone(), addr: conf.server_address() }),
            opts: Options::default(),
            control_path: conf.socket.clone(),
            management_path: None,
            conf,
            children,
            demoter: None,
            role: None,
            scripts: auth::Scripts::new(auth::DEFAULT_DIR, "/nonexistent/vpnsyncd"),
            status: Default::default(),
        };
        (p, ends)
    }

    fn msg(ty: ImsgType, data: &[u8]) -> Imsg {
        Imsg { hdr: ImsgHdr { ty: ty as u32, len: 0, peerid: 0, pid: 0 }, data: data.to_vec().into(), fd: None }
    }

    /// What the parent queued for each child, as (type, payload).
    fn sent(p: &mut Parent, ends: &mut [ImsgBuf]) -> Vec<Vec<(u32, Vec<u8>)>> {
        let mut out = Vec::new();
        for (c, end) in p.children.iter_mut().zip(ends.iter_mut()) {
            c.ibuf.flush().unwrap();
            let mut got = Vec::new();
            while end.read().is_ok_and(|n| n > 0) {}
            for m in end.buffered().unwrap() {
                got.push((m.hdr.ty, m.data.to_vec()));
            }
            out.push(got);
        }
        out
    }

    /// The engine's password checks: refused at once without a `password`
    /// statement (or a script that cannot start), answered when the script
    /// ends; only the engine may ask, and garbage is a protocol error.
    #[test]
    fn password_checks_go_to_the_script_and_back_to_the_engine() {
        use vpnsyncd_common::auth::{AuthCheck, AuthVerdict};
        let (mut p, mut ends) = parent();
        let dir = std::env::temp_dir().join(format!("vpnsyncd-parent-auth-{}", std::process::id()));
        p.scripts = auth::Scripts::new(&dir, "/nonexistent/vpnsyncd");
        let check = |id| AuthCheck {
            id,
            username: Secret::new(b"bob".to_vec()),
            password: Secret::new(b"pw".to_vec()),
            common_name: "alice".into(),
            peer: "192.0.2.1:1".parse().unwrap(),
        };
        let verdict = |id, accepted, reason: &str| {
            (ImsgType::AuthVerdict as u32, AuthVerdict { id, accepted, reason: reason.into() }.encode())
        };
        p.dispatch(ChildKind::Engine, msg(ImsgType::AuthCheck, &check(1).encode())).unwrap();
        assert_eq!(sent(&mut p, &mut ends)[0], vec![verdict(1, false, "no password check configured")]);
        p.conf.password = Some(vpnsyncd_config::PasswordCheck::Script { path: "/bin/true".into(), timeout: 5 });
        p.dispatch(ChildKind::Engine, msg(ImsgType::AuthCheck, &check(2).encode())).unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
            p.send_verdicts(Instant::now()).unwrap();
            got = sent(&mut p, &mut ends).remove(0);
        }
        assert_eq!(got, vec![verdict(2, true, "script exit 0")]);
        assert!(p.dispatch(ChildKind::Syncer, msg(ImsgType::AuthCheck, &check(3).encode())).is_err());
        assert!(p.dispatch(ChildKind::Engine, msg(ImsgType::AuthCheck, b"junk")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Teardown collects every child with its own end: one that ended
    /// before it, one stopped by its SIGTERM, and one that dies of its own
    /// signal only 300 ms later (past the 50 ms the parent once waited
    /// before reaping once) while its SIGTERM changes nothing, as for an
    /// engine killed by its seccomp filter that is still taking its tun
    /// device down.
    #[test]
    fn teardown_collects_every_child_with_its_own_end() {
        let (mut p, _ends) = parent();
        let spawn = |script: &str| Command::new("sh").args(["-c", script]).spawn().unwrap().id() as i32;
        let dying = spawn("trap '' TERM; sleep 0.3; kill -USR1 $$");
        let (running, ended) = (spawn("exec sleep 30"), spawn("exit 3"));
        for (c, pid) in p.children.iter_mut().zip([dying, running, ended]) {
            c.pid = pid;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut got = p.stop_children();
        got.sort_by_key(|(pid, _)| *pid);
        let mut want = vec![
            (dying, WaitStatus::Signaled(Pid::from_raw(dying), Signal::SIGUSR1, false)),
            (running, WaitStatus::Signaled(Pid::from_raw(running), Signal::SIGTERM, false)),
            (ended, WaitStatus::Exited(Pid::from_raw(ended), 3)),
        ];
        want.sort_by_key(|(pid, _)| *pid);
        assert_eq!(got, want);
        assert!(p.children.is_empty());
    }

    /// A child that asks for the role gets the current one, whenever it
    /// was reported; one that asks before carpwatch knows gets it with the
    /// first report.
    #[test]
    fn every_child_learns_the_current_role() {
        let (mut p, mut ends) = parent();
        let role = (ImsgType::Role as u32, vec![Role::Backup as u8]);
        p.dispatch(ChildKind::Syncer, msg(ImsgType::RoleRequest, &[])).unwrap();
        assert_eq!(sent(&mut p, &mut ends), [vec![], vec![], vec![]]);
        p.dispatch(ChildKind::Carpwatch, msg(ImsgType::Role, &[Role::Backup as u8])).unwrap();
        assert_eq!(sent(&mut p, &mut ends), [vec![role.clone()], vec![role.clone()], vec![]]);
        p.dispatch(ChildKind::Syncer, msg(ImsgType::RoleRequest, &[])).unwrap();
        p.dispatch(ChildKind::Engine, msg(ImsgType::RoleRequest, &[])).unwrap();
        assert_eq!(sent(&mut p, &mut ends), [vec![role.clone()], vec![role], vec![]]);
        assert!(p.dispatch(ChildKind::Carpwatch, msg(ImsgType::RoleRequest, &[])).is_err());
    }
}
