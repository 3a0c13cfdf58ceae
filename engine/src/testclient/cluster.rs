//! The randomized cluster simulation of takeover safety (issue 7).
//!
//! Three to five members, each a real engine [`Server`] and a real syncer
//! [`Core`], joined the way the daemon joins them: the engine's sync
//! messages go through [`syncglue`] (the imsg payloads `io.rs` sends) into
//! `Core::on_engine`; sealed datagrams cross a simulated sync network with
//! loss, duplication, delay and reordering; `Core::on_datagram` hands the
//! updates back as `Output::Engine`, which [`syncglue::apply`] installs. Role
//! changes reach both as the parent sends them (`Server::set_role`,
//! `Core::set_role`). Two to four test clients talk to "the VIP": whichever
//! member the switch currently sends VIP traffic to.
//!
//! Each seed picks its faults: sync loss, duplication, delay and jitter;
//! client loss; a master that dies with its pending sync; a member that
//! restarts (a new Server and Core, a new boot id); two members told MASTER
//! at once; split brains of 0.5 to 5 s; stray traffic reaching a backup.
//! Then the faults stop, one master remains, and the members must converge.
//!
//! Safety, checked on every seed: no (data key, packet id) pair is sent
//! twice by the cluster (every `DataKey::encrypt` of a member is logged
//! through [`crate::data::sent`]), and the engine and syncer accept each
//! other's messages.
//!
//! Liveness: no client refuses a data packet (as a replay or as
//! unauthentic) unless it was sent while two members were master or the
//! id it had came from one; every client keeps its session (traffic passes
//! both ways at the end, after the rekey window if the first try fails);
//! after the faults every live member holds a ghost of each session the
//! master serves, not behind the master's last report, and no ghost the
//! master does not serve. A failure on a fair schedule fails the test; on
//! a hard one (`Scenario::hard`: a split brain, two masters at once, over
//! 20 % sync loss, or a master that fails while no member left is sync
//! ready) it is counted and printed.
//!
//! `SIM_SEED=N cargo test -p vpnsyncd-engine cluster_simulation -- --nocapture`
//! replays one seed with its whole trace; `SIM_SEEDS=N` sets how many seeds
//! the full run takes; `SIM_REPORT=FILE` writes every failing seed's report
//! there. A seed fixes the schedule (members, clients, faults, every loss
//! and delay); session ids and TLS randomness still come from the OS, so a
//! replay follows the same schedule without being bit for bit the same.
//!
//! Everything that touches the engine's Server/Session API is in the
//! "Probes" section below, so an API change is adapted there.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use vpnsyncd_common::msg::{ImsgType, Role};
use vpnsyncd_config::Digest;
use vpnsyncd_syncer::core::{Core, Output, Transport};
use vpnsyncd_syncer::key::SyncKey;

use super::{ipv4, server, static_key, ClientOptions, ClientWrap, Rng, TestClient, LAN_HOST, UNIX0};
use crate::data::sent;
use crate::record::{Progress, SessionRecord};
use crate::server::Server;
use crate::session::Now;
use crate::syncglue;

/// One step of the virtual clock.
const STEP_MS: u64 = 10;
/// The engine runs its session timers this often (io.rs `TICK`).
const ENGINE_TICK_MS: u64 = 200;
/// The syncer's loop wakes at least this often (its poll timeout).
const SYNCER_TICK_MS: u64 = 100;
/// Each connected client sends a packet, and the inside host one to it.
const TRAFFIC_MS: u64 = 50;
/// How long the clients may take to connect before the faults start: the
/// hand window, as a stock client gives up then.
const CONNECT_LIMIT_MS: u64 = 60_000;
/// After the faults: the members must agree within this.
const CONVERGE_MS: u64 = 4_000;
/// Violations kept per seed (one bug tends to repeat itself).
const MAX_VIOLATIONS: usize = 6;

fn group() -> SocketAddr {
    "239.0.2.0:1196".parse().expect("an address")
}

fn sync_addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(198, 19, 0, 1 + i as u8), 1196))
}

fn client_addr(c: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(198, 18, 0, 100 + c as u8), 40000))
}

fn sync_key() -> SyncKey {
    SyncKey::parse("5a".repeat(32).as_bytes()).expect("a hex key")
}

// ---------------------------------------------------------------------------
// Probes: the only code that reads the engine's Server and Session.

/// What a member holds of one session.
#[derive(Clone, Debug)]
struct SessionView {
    sid: [u8; 8],
    ghost: bool,
    /// (key_id, last packet id sent) per key.
    keys: Vec<(u8, u32)>,
}

fn sessions_of(s: &Server) -> Vec<SessionView> {
    s.sessions()
        .filter(|s| s.virtual_ip.is_some())
        .map(|s| SessionView {
            sid: s.local_sid,
            ghost: s.is_ghost(),
            keys: s.progress().keys.iter().map(|k| (k.key_id, k.send)).collect(),
        })
        .collect()
}

/// (key_id, last packet id sent) of each key of a session.
type Counters = Vec<(u8, u32)>;

/// The counters a sync message reports, per session: `Some` for a record
/// or progress, `None` for a delete.
fn reported(ty: ImsgType, data: &[u8]) -> Vec<([u8; 8], Option<Counters>)> {
    let keys = |p: &Progress| p.keys.iter().map(|k| (k.key_id, k.send)).collect::<Vec<_>>();
    let sid = |d: &[u8]| -> [u8; 8] { d[..8].try_into().expect("8 bytes") };
    match ty {
        ImsgType::SyncUpsert => {
            let rec = SessionRecord::decode(&data[16..]).expect("the engine's own record decodes");
            let mut k: Vec<(u8, u32)> = rec.keys.iter().map(|k| (k.key_id, k.send)).collect();
            for (id, send) in keys(&rec.progress) {
                match k.iter_mut().find(|(i, _)| *i == id) {
                    Some(e) => e.1 = e.1.max(send),
                    None => k.push((id, send)),
                }
            }
            vec![(sid(data), Some(k))]
        }
        ImsgType::SyncProgress => {
            let mut out = Vec::new();
            let mut rest = data;
            while rest.len() >= 18 {
                let n = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
                let p = Progress::decode(&rest[18..18 + n]).expect("the engine's own progress decodes");
                out.push((sid(rest), Some(keys(&p))));
                rest = &rest[18 + n..];
            }
            out
        }
        ImsgType::SyncDelete => vec![(sid(data), None)],
        _ => Vec::new(),
    }
}

fn peer_id_of(c: &TestClient) -> Option<u32> {
    c.pushed.as_ref().and_then(|p| p.peer_id)
}

// ---------------------------------------------------------------------------
// The seed's choices.

/// Per-mille rates and delays of one network.
#[derive(Clone, Copy, Debug)]
struct NetFaults {
    loss: u32,
    dup: u32,
    delay_ms: u64,
    /// Each datagram waits up to this much more: later ones overtake it.
    jitter_ms: u64,
}

const CLEAN_NET: NetFaults = NetFaults { loss: 0, dup: 0, delay_ms: 1, jitter_ms: 0 };

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The master stops; a backup is told MASTER after the VRRP detection
    /// time.
    MasterFails,
    /// The master stops; two backups are told MASTER at once, one of them
    /// is demoted a little later.
    TwoPromote,
    /// A backup is told MASTER while the master still is, for a while.
    SplitBrain,
    /// A member stops and boots again (or a dead one boots).
    Rejoin,
    /// A backup sees traffic for a client: from its own tun device, or a
    /// forged DATA_V2 with a ghost's peer id from anywhere.
    Stray,
}

#[derive(Clone, Debug)]
struct Scenario {
    members: usize,
    clients: usize,
    sync: NetFaults,
    client_loss: u32,
    rekey_window: u32,
    /// (ms after the faults start, fault).
    faults: Vec<(u64, Fault)>,
    faults_for_ms: u64,
    /// Per-mille chance per 100 ms that the switch flips between masters.
    flap: u32,
    /// Ghosts a takeover promotes per engine loop turn (`None`: the
    /// daemon's slice, which holds every session of the simulation): with
    /// one, packets, tunnel traffic, records and role changes reach a
    /// takeover half done (crate::takeover).
    slice: Option<usize>,
}

impl Scenario {
    /// A schedule under which liveness cannot be promised: two members
    /// master at once (the client takes whichever packets come higher; a
    /// survivor learns how far the other got only when the sync link
    /// carries it), or so much sync loss that a record may never reach a
    /// backup before the master fails. Safety is asserted on these too.
    fn hard(&self) -> bool {
        self.sync.loss > 200 || self.faults.iter().any(|(_, f)| matches!(f, Fault::SplitBrain | Fault::TwoPromote))
    }

    fn pick(rng: &mut Rng) -> Scenario {
        let faults_for_ms = 3_000 + rng.below(5_000);
        let n = 1 + rng.below(4);
        let mut faults: Vec<(u64, Fault)> = (0..n)
            .map(|_| {
                let f = match rng.below(10) {
                    0..=2 => Fault::MasterFails,
                    3 => Fault::TwoPromote,
                    4..=6 => Fault::SplitBrain,
                    7..=8 => Fault::Rejoin,
                    _ => Fault::Stray,
                };
                (rng.below(faults_for_ms), f)
            })
            .collect();
        faults.sort_by_key(|(t, _)| *t);
        let delay_ms = rng.below(501);
        Scenario {
            members: 3 + rng.below(3) as usize,
            clients: 2 + rng.below(3) as usize,
            sync: NetFaults {
                loss: rng.below(501) as u32,
                dup: rng.below(201) as u32,
                jitter_ms: rng.below(delay_ms + 1),
                delay_ms: delay_ms / 2,
            },
            client_loss: rng.below(151) as u32,
            rekey_window: if rng.chance(300) { 2 + rng.below(4) as u32 } else { 60 },
            faults,
            faults_for_ms,
            flap: rng.below(400) as u32,
            // From a stream of its own, so that every other choice of a
            // seed stays what it was before this one existed (a sliced
            // seed's schedule still diverges after its first takeover).
            slice: Rng::new(rng.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)).chance(500).then_some(1),
        }
    }
}

// ---------------------------------------------------------------------------
// The cluster.

/// A datagram on its way, and when it arrives.
struct InFlight<T> {
    at: u64,
    what: T,
}

/// One simulated network: datagrams with a delay, lost or doubled.
struct Wire<T>(Vec<InFlight<T>>);

impl<T: Clone> Wire<T> {
    fn send(&mut self, rng: &mut Rng, f: NetFaults, now: u64, what: T) {
        if rng.chance(f.loss) {
            return;
        }
        let copies = if rng.chance(f.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let at = now + f.delay_ms + rng.below(f.jitter_ms + 1);
            self.0.push(InFlight { at: at.max(now + 1), what: what.clone() });
        }
    }

    /// What arrived by `now`, in arrival order.
    fn arrived(&mut self, now: u64) -> Vec<T> {
        let (mut due, later): (Vec<_>, Vec<_>) = self.0.drain(..).partition(|d| d.at <= now);
        self.0 = later;
        due.sort_by_key(|d| d.at);
        due.into_iter().map(|d| d.what).collect()
    }
}

#[derive(Clone)]
struct SyncDatagram {
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

#[derive(Clone)]
struct ToClient {
    client: usize,
    member: usize,
    /// Sent while two members were master.
    split: bool,
    bytes: Vec<u8>,
}

struct Member {
    server: Server,
    core: Core,
    role: Role,
    alive: bool,
    /// Boots so far (1: the first).
    boot: u32,
    /// The syncer said its table is complete (the parent lifts the demotion).
    ready: bool,
    /// The last counters this member's engine reported per session.
    reports: HashMap<[u8; 8], Vec<(u8, u32)>>,
    /// Phase of the engine and syncer timers.
    phase: u64,
}

struct Client {
    tc: TestClient,
    addr: SocketAddr,
    /// The server's session id, once connected: it must never change.
    session: Option<[u8; 8]>,
    seq: u16,
    /// Its packets that reached a member's tun device.
    up_ok: u64,
    /// The highest data packet it accepted per key_id: (pid, member, when,
    /// sent while two members were master).
    highest: HashMap<u8, (u32, usize, u64, bool)>,
}

/// What one seed saw, for the summary.
#[derive(Default, Debug)]
struct Figures {
    packets: u64,
    takeovers: u64,
    split_brains: u64,
    excused: u64,
    /// Seeds whose schedule is hard (a split brain, two masters at once,
    /// or more than 20 % sync loss), and those of them that lost liveness.
    hard: u64,
    hard_liveness_lost: u64,
}

enum Action {
    Role(usize, Role),
    Boot(usize),
    /// End of a split brain: one of the two masters goes back to BACKUP, the
    /// sync link between them heals.
    EndSplit(usize, usize),
}

struct Cluster {
    scen: Scenario,
    rng: Rng,
    start: Instant,
    t: u64,
    conf: String,
    members: Vec<Member>,
    clients: Vec<Client>,
    sync_net: NetFaults,
    client_net: NetFaults,
    sync_wire: Wire<SyncDatagram>,
    up: Wire<(usize, Vec<u8>)>,
    down: Wire<ToClient>,
    /// The member the switch sends VIP traffic (client and inside) to.
    reach: Option<usize>,
    /// Sync datagrams between these two are dropped (a partition).
    cut: Option<(usize, usize)>,
    actions: Vec<(u64, Action)>,
    /// Every (key fingerprint, packet id) a member sent: who and when.
    sent: HashMap<(u64, u32), (usize, u32, u64)>,
    duplicates: u64,
    violations: Vec<String>,
    /// Liveness broken (a refused packet, a session that no longer passes
    /// traffic, members that do not converge): a failure on a fair
    /// schedule, a figure on a hard one ([`Scenario::hard`]).
    liveness: Vec<String>,
    trace: Vec<String>,
    verbose: bool,
    /// No client or inside traffic (while the convergence is checked: the
    /// master's counters hold still).
    quiet: bool,
    /// A master failed while no member left was sync ready (it had not
    /// said it holds every session yet): liveness cannot be promised, the
    /// seed counts as hard.
    unready_takeover: bool,
    fig: Figures,
}

impl Cluster {
    fn new(seed: u64, scen: Option<Scenario>, verbose: bool) -> Cluster {
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5851_f42d);
        let picked = Scenario::pick(&mut rng);
        let scen = scen.unwrap_or(picked);
        let conf = format!(
            "tls-auth \"/k/ta.key\" direction 0\nsync {{\n role vip 198.18.0.10 interface eth0\n \
             multicast interface eth1\n key \"/k/sync.key\"\n rekey-window {}\n}}\n",
            scen.rekey_window
        );
        let start = Instant::now();
        let mut c = Cluster {
            sync_net: scen.sync,
            // Loss on the client side starts with the faults: the handshake
            // under loss is tested elsewhere (testclient) and can take the
            // whole hand window.
            client_net: NetFaults { loss: 0, dup: 0, delay_ms: 5, jitter_ms: 10 },
            scen,
            rng,
            start,
            t: 0,
            conf,
            members: Vec::new(),
            clients: Vec::new(),
            sync_wire: Wire(Vec::new()),
            up: Wire(Vec::new()),
            down: Wire(Vec::new()),
            reach: None,
            cut: None,
            actions: Vec::new(),
            sent: HashMap::new(),
            duplicates: 0,
            violations: Vec::new(),
            liveness: Vec::new(),
            trace: Vec::new(),
            verbose,
            quiet: false,
            unready_takeover: false,
            fig: Figures::default(),
        };
        c.note(format!("seed {seed}: {:?}", c.scen));
        for i in 0..c.scen.members {
            let m = c.new_member(i, 1);
            c.members.push(m);
            c.tell(i, if i == 0 { Role::Master } else { Role::Backup });
        }
        c
    }

    fn now(&self) -> Now {
        let d = Duration::from_millis(self.t);
        Now { mono: self.start + d, unix: UNIX0 + d.as_secs() }
    }

    fn note(&mut self, line: String) {
        let line = format!("t={:>6} {line}", self.t);
        if self.verbose {
            println!("{line}");
        }
        self.trace.push(line);
    }

    fn liveness_lost(&mut self, v: String) {
        if self.liveness.len() < MAX_VIOLATIONS {
            self.note(format!("LIVENESS {v}"));
            self.liveness.push(v);
        }
    }

    fn violation(&mut self, v: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.note(format!("VIOLATION {v}"));
            self.violations.push(v);
        }
    }

    fn new_member(&mut self, i: usize, boot: u32) -> Member {
        let now = self.now();
        let member = i as u8 + 1;
        let mut random = [0u8; 7];
        random.iter_mut().for_each(|b| *b = self.rng.next() as u8);
        // A reboot is a later start of the same member.
        let boot_id = vpnsyncd_syncer::proto::boot_id(member, u64::from(boot), random);
        let params = vpnsyncd_syncer::core::Params { member, lifetime: Duration::from_secs(120), limit: 100_000 };
        let transport = Transport::Multicast { group: group(), interface: "sim0".into() };
        let mut server = server(
            &self.conf.replace(" rekey-window", &format!(" member {member}\n rekey-window")),
            Some(&static_key(7)),
        );
        if let Some(n) = self.scen.slice {
            server.set_takeover_slice(n);
        }
        Member {
            server,
            core: Core::new(Some((transport, sync_key())), params, boot_id, now.mono, now.unix),
            role: Role::Init,
            alive: true,
            boot,
            ready: false,
            reports: HashMap::new(),
            phase: (i as u64 * 7 + self.rng.below(20)) % (ENGINE_TICK_MS / STEP_MS) * STEP_MS,
        }
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.members.len()).filter(|&i| self.members[i].alive && self.members[i].role == Role::Master).collect()
    }

    // -- members ------------------------------------------------------------

    /// Runs `f` on member `i`'s server, then logs the data packets it sent
    /// and routes its control datagrams.
    fn on_server<R>(&mut self, i: usize, f: impl FnOnce(&mut Server, Now) -> R) -> R {
        sent::take(); // what a client encrypted
        let now = self.now();
        let r = f(&mut self.members[i].server, now);
        self.sent_by(i);
        let out = self.members[i].server.take_sends();
        for (_, to, bytes) in out {
            self.send_to_client(i, to, bytes);
        }
        r
    }

    fn sent_by(&mut self, i: usize) {
        let (boot, t) = (self.members[i].boot, self.t);
        for pair in sent::take() {
            self.fig.packets += 1;
            if let Some(&(m, b, at)) = self.sent.get(&pair) {
                self.duplicates += 1;
                self.violation(format!(
                    "(key {:016x}, pid {}) sent by member {m} (boot {b}) at t={at} and by member {i} (boot {boot})",
                    pair.0, pair.1
                ));
            } else {
                self.sent.insert(pair, (i, boot, t));
            }
        }
    }

    fn send_to_client(&mut self, member: usize, to: SocketAddr, bytes: Vec<u8>) {
        let Some(client) = self.clients.iter().position(|c| c.addr == to) else {
            return; // an answer to a forged source address
        };
        let split = self.masters().len() > 1;
        let f = self.client_net;
        self.down.send(&mut self.rng, f, self.t, ToClient { client, member, split, bytes });
    }

    /// A role change, as the parent sends it to the engine and the syncer.
    fn tell(&mut self, i: usize, role: Role) {
        let old = self.members[i].role;
        if !self.members[i].alive || old == role {
            return;
        }
        self.note(format!("member {i} -> {}", role.name()));
        self.on_server(i, |s, now| s.set_role(now, role));
        let m = &mut self.members[i];
        m.role = role;
        m.core.set_role(role);
        if role == Role::Master {
            if self.t > 0 {
                self.fig.takeovers += 1;
            }
            // Its gratuitous ARP: the switch sends VIP traffic to it now.
            self.reach = Some(i);
        } else if self.reach == Some(i) {
            self.reach = self.masters().first().copied();
        }
        self.pump(i);
    }

    fn kill(&mut self, i: usize) {
        self.note(format!("member {i} stops (boot {}), its pending sync lost", self.members[i].boot));
        self.members[i].alive = false;
        self.sync_wire.0.retain(|d| d.what.from != i && d.what.to != i);
        if self.reach == Some(i) {
            self.reach = self.masters().first().copied();
        }
    }

    fn boot(&mut self, i: usize) {
        let boot = self.members[i].boot + 1;
        self.members[i] = self.new_member(i, boot);
        self.note(format!("member {i} boots (boot {boot})"));
        self.tell(i, Role::Backup);
    }

    /// Moves what the engine queued to its syncer, what the syncer produced
    /// to the network and back to the engine, until nothing moves.
    fn pump(&mut self, i: usize) {
        for _ in 0..16 {
            if !self.members[i].alive {
                return;
            }
            let msgs = syncglue::drain(&mut self.members[i].server);
            for (ty, data) in &msgs {
                for (sid, keys) in reported(*ty, data) {
                    match keys {
                        Some(k) => self.members[i].reports.insert(sid, k),
                        None => self.members[i].reports.remove(&sid),
                    };
                }
                let now = self.now().mono;
                if let Err(e) = self.members[i].core.on_engine(*ty, data, now) {
                    self.violation(format!("member {i}: the syncer refused the engine's {ty:?}: {}", e.0));
                }
            }
            let outs = self.members[i].core.take_output();
            if msgs.is_empty() && outs.is_empty() {
                return;
            }
            for o in outs {
                match o {
                    Output::Send { to, bytes } => {
                        for j in 0..self.members.len() {
                            if j != i && (to == group() || to == sync_addr(j)) {
                                let f = self.sync_net;
                                let d = SyncDatagram { from: i, to: j, bytes: bytes.clone() };
                                self.sync_wire.send(&mut self.rng, f, self.t, d);
                            }
                        }
                    }
                    Output::Engine { ty, data } => {
                        let r = self.on_server(i, |s, now| syncglue::apply(s, now, ty, &data));
                        if let Err(e) = r {
                            self.violation(format!("member {i}: the engine refused the syncer's {ty:?}: {}", e.0));
                        }
                    }
                    Output::Parent { ty: ImsgType::SyncReady, .. } => {
                        self.members[i].ready = true;
                        self.note(format!("member {i}: sync ready"));
                    }
                    Output::Parent { .. } => {}
                }
            }
        }
    }

    // -- the clients ----------------------------------------------------------

    fn add_client(&mut self, c: usize) {
        let opts = ClientOptions::v26(ClientWrap::TlsAuth(static_key(7), Digest::Sha1));
        let tc = TestClient::new(opts, self.now());
        self.clients.push(Client {
            tc,
            addr: client_addr(c),
            session: None,
            seq: 0,
            up_ok: 0,
            highest: HashMap::new(),
        });
        self.client_out(c);
    }

    fn client_out(&mut self, c: usize) {
        let out: Vec<_> = self.clients[c].tc.outbox.drain(..).collect();
        for p in out {
            let f = self.client_net;
            self.up.send(&mut self.rng, f, self.t, (c, p));
        }
    }

    fn all_connected(&self) -> bool {
        self.clients.iter().all(|c| c.session.is_some())
    }

    fn deliver_send_to_client(&mut self, d: ToClient) {
        let now = self.now();
        let c = &mut self.clients[d.client];
        let (replays, rejected) = (c.tc.replays, c.tc.data_rejected);
        let mut bytes = d.bytes.clone();
        c.tc.on_datagram(now, &mut bytes);
        if c.session.is_none() && c.tc.connected() {
            c.session = c.tc.remote_sid;
        }
        let (replay, refused) = (c.tc.replays > replays, c.tc.data_rejected > rejected);
        let (key_id, pid) = data_header(&d.bytes);
        let is_data = d.bytes.first().is_some_and(|b| matches!(b >> 3, 6 | 9));
        if !refused {
            let h = c.highest.entry(key_id).or_insert((0, d.member, self.t, d.split));
            // A lower id that the client accepted: a new key under this key_id.
            if is_data && (pid > h.0 || pid < h.0 >> 8) {
                *h = (pid, d.member, self.t, d.split);
            }
            return;
        }
        let seen = c.highest.get(&key_id).copied();
        // During a split brain, or after one while the survivor has not yet
        // heard how far the other master got (its reports may be lost):
        // liveness, not safety; the end-of-run check that every session
        // passes traffic again catches a survivor that never recovers.
        let after_split = seen.is_some_and(|(_, m, _, split)| split && m != d.member);
        if d.split || after_split {
            self.fig.excused += 1;
            return;
        }
        let what = if replay { "as a replay" } else { "as unauthentic" };
        let seen = match seen {
            Some((p, m, at, _)) => format!("(it had pid {p} from member {m} at t={at})"),
            None => String::new(),
        };
        self.liveness_lost(format!(
            "client {} refused a data packet {what}: key_id {key_id}, pid {pid}, from member {} {seen}",
            d.client, d.member
        ));
    }

    // -- time -----------------------------------------------------------------

    fn step(&mut self) {
        self.t += STEP_MS;
        let t = self.t;
        let due: Vec<Action> = {
            let (due, later): (Vec<_>, Vec<_>) = self.actions.drain(..).partition(|(at, _)| *at <= t);
            self.actions = later;
            due.into_iter().map(|(_, a)| a).collect()
        };
        for a in due {
            self.act(a);
        }
        for d in self.sync_wire.arrived(t) {
            let cut = self.cut.is_some_and(|(a, b)| (a, b) == (d.from, d.to) || (b, a) == (d.from, d.to));
            if self.members[d.to].alive && !cut {
                let now = self.now().mono;
                self.members[d.to].core.on_datagram(sync_addr(d.from), &d.bytes, now);
                self.pump(d.to);
            }
        }
        for (c, mut p) in self.up.arrived(t) {
            if let Some(m) = self.reach {
                let addr = self.clients[c].addr;
                let tun = self.on_server(m, |s, now| s.on_datagram(now, 0, addr, &mut p).is_some());
                self.clients[c].up_ok += u64::from(tun);
                self.pump(m);
            }
        }
        for i in 0..self.members.len() {
            if !self.members[i].alive {
                continue;
            }
            let phase = self.members[i].phase;
            if (t + phase).is_multiple_of(SYNCER_TICK_MS) {
                let now = self.now().mono;
                self.members[i].core.tick(now);
            }
            if (t + phase).is_multiple_of(ENGINE_TICK_MS) {
                self.on_server(i, |s, now| s.on_timer(now));
            } else if self.members[i].server.promoting() {
                // The engine's loop turns between its timer runs.
                self.on_server(i, |s, now| s.promote_slice(now));
            }
            self.pump(i);
        }
        if t.is_multiple_of(TRAFFIC_MS) && !self.quiet {
            self.traffic();
        }
        if t.is_multiple_of(100) && self.masters().len() > 1 && self.rng.chance(self.scen.flap) {
            let ms = self.masters();
            self.reach = Some(ms[self.rng.below(ms.len() as u64) as usize]);
            self.note(format!("the switch flips to member {:?}", self.reach));
        }
        for d in self.down.arrived(t) {
            self.deliver_send_to_client(d);
        }
        for c in 0..self.clients.len() {
            let now = self.now();
            self.clients[c].tc.on_timer(now);
            self.client_out(c);
        }
    }

    /// A packet each way per connected client, through the VIP holder.
    fn traffic(&mut self) {
        for c in 0..self.clients.len() {
            let Some(me) = self.clients[c].tc.address().filter(|_| self.clients[c].tc.connected()) else {
                continue;
            };
            let seq = self.clients[c].seq;
            self.clients[c].seq = seq.wrapping_add(1);
            let now = self.now();
            self.clients[c].tc.send_data(now, &ipv4(me, LAN_HOST, seq, c as u8));
            self.client_out(c);
            if let Some(m) = self.reach {
                self.inside_sends(m, me, seq, c as u8);
            }
        }
    }

    /// The inside host's packet to a client address reaches member `m`.
    fn inside_sends(&mut self, m: usize, to: Ipv4Addr, seq: u16, tag: u8) -> bool {
        let pkt = ipv4(LAN_HOST, to, seq, tag);
        let sent = self.on_server(m, |s, now| {
            let mut out = [0u8; 2048];
            s.seal_tun_packet(now, &pkt, &mut out).map(|(_, to, n)| (to, out[..n].to_vec()))
        });
        self.pump(m);
        match sent {
            Some((to, bytes)) => {
                self.send_to_client(m, to, bytes);
                true
            }
            None => false,
        }
    }

    fn run(&mut self, ms: u64) {
        let end = self.t + ms;
        while self.t < end {
            self.step();
        }
    }

    // -- faults ---------------------------------------------------------------

    fn schedule(&mut self, after: u64, a: Action) {
        self.actions.push((self.t + after, a));
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Role(i, r) => self.tell(i, r),
            Action::Boot(i) => self.boot(i),
            Action::EndSplit(a, b) => {
                self.cut = None;
                let both: Vec<usize> = self.masters().into_iter().filter(|m| [a, b].contains(m)).collect();
                if both.len() == 2 {
                    let loser = both[self.rng.below(2) as usize];
                    self.note(format!("split brain ends: member {loser} demoted"));
                    self.tell(loser, Role::Backup);
                }
            }
        }
    }

    /// Alive members that are not master, the ready ones first.
    fn candidates(&mut self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].alive && self.members[i].role != Role::Master)
            .collect();
        // A random order, then the ones whose table is complete first (the
        // others are demoted: VRRP elects them only if nobody else is left).
        for k in (1..v.len()).rev() {
            v.swap(k, self.rng.below(k as u64 + 1) as usize);
        }
        v.sort_by_key(|&i| !self.members[i].ready);
        v
    }

    fn fault(&mut self, f: Fault) {
        match f {
            Fault::MasterFails | Fault::TwoPromote => {
                let alive = self.members.iter().filter(|m| m.alive).count();
                let Some(&m) = self.masters().first() else { return };
                if alive < 2 {
                    return;
                }
                self.kill(m);
                if !self.masters().is_empty() {
                    return; // the other master of a split brain carries on
                }
                let detect = 100 + self.rng.below(1400);
                let cands = self.candidates();
                if !self.members[cands[0]].ready {
                    // Nobody left has said it holds every session.
                    self.unready_takeover = true;
                    self.note(format!("member {} takes over before its sync is ready: a hard schedule", cands[0]));
                }
                let two = cands.len() >= 2 && f == Fault::TwoPromote;
                self.schedule(detect, Action::Role(cands[0], Role::Master));
                if two {
                    self.fig.split_brains += 1;
                    self.note(format!("members {} and {} will both be told MASTER", cands[0], cands[1]));
                    self.schedule(detect, Action::Role(cands[1], Role::Master));
                    let loser = cands[self.rng.below(2) as usize];
                    let end = detect + 100 + self.rng.below(900);
                    self.schedule(end, Action::Role(loser, Role::Backup));
                }
            }
            Fault::SplitBrain => {
                let (Some(&m), Some(&b)) = (self.masters().first(), self.candidates().first()) else { return };
                if self.cut.is_some() {
                    return;
                }
                self.fig.split_brains += 1;
                let len = 500 + self.rng.below(4500);
                let partition = self.rng.chance(500);
                self.note(format!(
                    "split brain of {len} ms: members {m} and {b}{}",
                    if partition { ", sync link between them cut" } else { "" }
                ));
                if partition {
                    self.cut = Some((m, b));
                }
                self.tell(b, Role::Master);
                self.schedule(len, Action::EndSplit(m, b));
            }
            Fault::Rejoin => {
                if let Some(dead) = self.members.iter().position(|m| !m.alive) {
                    self.boot(dead);
                    return;
                }
                let backups: Vec<usize> =
                    (0..self.members.len()).filter(|&i| self.members[i].role != Role::Master).collect();
                if let Some(&i) = backups.get(self.rng.below(backups.len().max(1) as u64) as usize) {
                    self.kill(i);
                    let after = 200 + self.rng.below(1800);
                    self.schedule(after, Action::Boot(i));
                }
            }
            Fault::Stray => {
                let backups: Vec<usize> = (0..self.members.len())
                    .filter(|&i| self.members[i].alive && self.members[i].role != Role::Master)
                    .collect();
                let Some(&b) = backups.get(self.rng.below(backups.len().max(1) as u64) as usize) else { return };
                let c = self.rng.below(self.clients.len() as u64) as usize;
                if self.rng.chance(500) {
                    let Some(me) = self.clients[c].tc.address() else { return };
                    self.note(format!("member {b} routes a packet for client {c} from its own tun"));
                    self.inside_sends(b, me, 0xffff, 0xee);
                } else {
                    let Some(peer_id) = peer_id_of(&self.clients[c].tc) else { return };
                    self.note(format!("a forged DATA_V2 with client {c}'s peer-id {peer_id} reaches member {b}"));
                    let mut junk = ((9u32 << 27) | peer_id).to_be_bytes().to_vec();
                    junk.extend((0..40).map(|_| self.rng.next() as u8));
                    let from: SocketAddr = "203.0.113.66:666".parse().expect("an address");
                    self.on_server(b, |s, now| {
                        s.on_datagram(now, 0, from, &mut junk);
                    });
                    self.pump(b);
                }
            }
        }
    }

    /// The faults stop: a clean network, pending faults dropped, exactly
    /// one master.
    fn heal(&mut self) {
        self.note("faults stop".into());
        self.actions.retain(|(_, a)| matches!(a, Action::Boot(_)));
        for (_, a) in std::mem::take(&mut self.actions) {
            self.act(a);
        }
        self.cut = None;
        self.sync_net = CLEAN_NET;
        self.client_net = CLEAN_NET;
        let masters = self.masters();
        if let Some((&keep, rest)) = masters.split_first() {
            for &i in rest {
                self.tell(i, Role::Backup);
            }
            self.reach = Some(keep);
        } else if let Some(&i) = self.candidates().first() {
            self.tell(i, Role::Master);
        }
    }

    // -- the checks after the faults ------------------------------------------

    /// Every live member holds each session the master serves, not behind
    /// the master's last report, and nothing else.
    fn converged(&self) -> Result<(), String> {
        let [m] = self.masters()[..] else { return Err(format!("masters: {:?}", self.masters())) };
        let served: Vec<SessionView> = sessions_of(&self.members[m].server).into_iter().filter(|s| !s.ghost).collect();
        for (b, member) in self.members.iter().enumerate().filter(|(b, mem)| *b != m && mem.alive) {
            let held = sessions_of(&member.server);
            for s in &served {
                let Some(report) = self.members[m].reports.get(&s.sid) else {
                    return Err(format!("master {m} never reported session {}", hex(&s.sid)));
                };
                let Some(g) = held.iter().find(|g| g.sid == s.sid) else {
                    return Err(format!("member {b} has no ghost of session {} served by {m}", hex(&s.sid)));
                };
                if !g.ghost {
                    return Err(format!("member {b} serves session {} too", hex(&s.sid)));
                }
                for &(k, send) in report {
                    let have = g.keys.iter().find(|(i, _)| *i == k).map(|(_, n)| *n);
                    if have.is_none_or(|n| n < send) {
                        return Err(format!(
                            "member {b}: session {} key_id {k} at {have:?}, master {m} reported {send}",
                            hex(&s.sid)
                        ));
                    }
                }
            }
            if let Some(g) = held.iter().find(|g| !served.iter().any(|s| s.sid == g.sid)) {
                return Err(format!(
                    "member {b} holds session {} (ghost: {}) that master {m} does not serve",
                    hex(&g.sid),
                    g.ghost
                ));
            }
        }
        Ok(())
    }

    /// Each client still has its session: five packets each way pass. A
    /// failure is a violation on the `last` try only; returns success.
    fn sessions_alive(&mut self, last: bool) -> bool {
        let mut ok = true;
        let mut fail = |c: &mut Cluster, v: String| {
            ok = false;
            if last {
                c.liveness_lost(v);
            }
        };
        let Some(m) = self.reach else {
            fail(self, "no member holds the VIP".into());
            return false;
        };
        for c in 0..self.clients.len() {
            if !self.clients[c].tc.errors.is_empty() {
                let e = format!("client {c}: {:?}", self.clients[c].tc.errors);
                fail(self, e);
            }
            let (me, session) = (self.clients[c].tc.address(), self.clients[c].session);
            let Some(me) = me else { continue };
            let serves = sessions_of(&self.members[m].server).iter().any(|s| Some(s.sid) == session && !s.ghost);
            if !serves {
                fail(self, format!("client {c}: master {m} does not serve its session any more"));
                continue;
            }
            let (rx0, up0) = (self.clients[c].tc.received.len(), self.clients[c].up_ok);
            let mut down = 0;
            for i in 0..5 {
                down += usize::from(self.inside_sends(m, me, 0xf000 + i, 0xdd));
            }
            self.run(200);
            // Byte 28 of the test packets is their tag.
            let got = self.clients[c].tc.received[rx0..].iter().filter(|p| p.get(28) == Some(&0xdd)).count();
            let up = self.clients[c].up_ok - up0;
            if down < 5 || got < 5 || up < 3 {
                let v = format!(
                    "client {c}: {got} of 5 packets reached it ({down} sent by master {m}), {up} of 4 came through"
                );
                fail(self, v);
            }
        }
        ok
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// (key_id, packet id) of an AEAD data packet, for the trace.
fn data_header(p: &[u8]) -> (u8, u32) {
    let at = if p.first().is_some_and(|b| b >> 3 == 9) { 4 } else { 1 };
    let pid = p.get(at..at + 4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    (p.first().map_or(0, |b| b & 7), pid)
}

/// One seed from boot to the last check.
struct Outcome {
    /// Safety broken: always a failure.
    violations: Vec<String>,
    liveness: Vec<String>,
    hard: bool,
    trace: Vec<String>,
    fig: Figures,
}

impl Outcome {
    fn failed(&self) -> bool {
        !self.violations.is_empty() || (!self.hard && !self.liveness.is_empty())
    }
}

fn run_seed(seed: u64, verbose: bool) -> Outcome {
    run_scenario(seed, None, verbose)
}

/// One seed; `scen` replaces the seed's own choice of faults.
fn run_scenario(seed: u64, scen: Option<Scenario>, verbose: bool) -> Outcome {
    sent::start();
    let mut c = Cluster::new(seed, scen, verbose);
    for i in 0..c.scen.clients {
        c.add_client(i);
        let wait = 10 + c.rng.below(150);
        c.run(wait);
    }
    let limit = c.t + CONNECT_LIMIT_MS;
    while !c.all_connected() && c.t < limit {
        c.step();
    }
    if !c.all_connected() {
        let stuck: Vec<String> = (c.clients.iter().enumerate())
            .filter(|(_, cl)| cl.session.is_none())
            .map(|(i, cl)| {
                format!(
                    "client {i} (server session {:?}, pushed {}, send key {:?}, errors {:?})",
                    cl.tc.remote_sid.map(|s| hex(&s)),
                    cl.tc.pushed.is_some(),
                    cl.tc.send_key_id(),
                    cl.tc.errors
                )
            })
            .collect();
        let sessions = c.members[0].server.client_count();
        c.violation(format!("not connected before any fault: {} (member 0 has {sessions} sessions)", stuck.join(", ")));
    } else {
        c.note("every client connected".into());
        c.run(1_000);
        c.client_net.loss = c.scen.client_loss;
        let t0 = c.t;
        for (at, f) in c.scen.faults.clone() {
            c.run((t0 + at).saturating_sub(c.t));
            c.note(format!("fault: {f:?}"));
            c.fault(f);
        }
        c.run((t0 + c.scen.faults_for_ms).saturating_sub(c.t));
        c.heal();
        c.quiet = true;
        let until = c.t + CONVERGE_MS;
        let mut last = Ok(());
        while c.t < until {
            c.run(100);
            last = c.converged();
            if last.is_ok() {
                break;
            }
        }
        match last {
            Ok(()) => c.note("converged".into()),
            Err(e) => c.liveness_lost(format!("not converged {CONVERGE_MS} ms after the faults: {e}")),
        }
        c.quiet = false;
        // Every copied key is replaced within the rekey window: a session
        // whose newest key never reached the new master (lost with the old
        // one) works again by then.
        if !c.sessions_alive(false) {
            c.note("a session does not pass traffic yet: again after the rekey window".into());
            c.run(u64::from(c.scen.rekey_window) * 1000 + 2000);
            c.sessions_alive(true);
        }
    }
    sent::stop();
    let hard = c.scen.hard() || c.unready_takeover;
    c.fig.hard = u64::from(hard);
    c.fig.hard_liveness_lost = u64::from(hard && !c.liveness.is_empty());
    Outcome { violations: c.violations, liveness: c.liveness, hard, trace: c.trace, fig: c.fig }
}

/// A failing seed: its violations and the start of its schedule.
fn report(seed: u64, o: &Outcome) -> String {
    let all: Vec<&String> = o.violations.iter().chain(&o.liveness).collect();
    let mut s = format!("seed {seed}: {}\n", all.iter().map(|v| v.as_str()).collect::<Vec<_>>().join("\n    "));
    let events: Vec<&String> = o.trace.iter().filter(|l| !l.contains("switch flips")).take(30).collect();
    for l in events {
        s.push_str(&format!("    | {l}\n"));
    }
    s
}

/// Runs seeds `first..first + n` on two threads (the thread-local packet
/// log keeps them apart); returns the failures and the summed figures.
fn run_seeds(first: u64, n: u64) -> (Vec<(u64, String)>, Figures) {
    let results: Vec<(Vec<(u64, String)>, Figures)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..2u64)
            .map(|k| {
                sc.spawn(move || {
                    let mut fails = Vec::new();
                    let mut fig = Figures::default();
                    for seed in (first..first + n).filter(|s| s % 2 == k) {
                        let o = run_seed(seed, false);
                        fig.packets += o.fig.packets;
                        fig.takeovers += o.fig.takeovers;
                        fig.split_brains += o.fig.split_brains;
                        fig.excused += o.fig.excused;
                        fig.hard += o.fig.hard;
                        fig.hard_liveness_lost += o.fig.hard_liveness_lost;
                        if o.failed() {
                            fails.push((seed, report(seed, &o)));
                        }
                    }
                    (fails, fig)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a seed panicked")).collect()
    });
    let mut fails = Vec::new();
    let mut fig = Figures::default();
    for (f, g) in results {
        fails.extend(f);
        fig.packets += g.packets;
        fig.takeovers += g.takeovers;
        fig.split_brains += g.split_brains;
        fig.excused += g.excused;
        fig.hard += g.hard;
        fig.hard_liveness_lost += g.hard_liveness_lost;
    }
    fails.sort_by_key(|(s, _)| *s);
    (fails, fig)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.parse().unwrap_or_else(|_| panic!("{name}={v:?}: expected a number")))
}

/// The full randomized run: safety on every seed, liveness on every fair
/// one (and a figure of how often hard schedules lost it).
#[test]
fn cluster_simulation_keeps_every_invariant() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let o = run_seed(seed, true);
        println!("seed {seed}: {:?}", o.fig);
        assert!(!o.failed(), "{}", report(seed, &o));
        assert!(o.liveness.is_empty(), "(hard schedule) {}", report(seed, &o));
        return;
    }
    let n = env_u64("SIM_SEEDS").unwrap_or(2000);
    let t0 = Instant::now();
    let (fails, fig) = run_seeds(1, n);
    println!(
        "cluster simulation: {n} seeds in {:.1} s, {} data packets checked, {} takeovers, {} split brains \
         ({} refusals during split brains excused), {} seeds failed; liveness lost in {} of {} hard seeds \
         (split brains, two masters, over 20 % sync loss, a takeover before sync was ready)",
        t0.elapsed().as_secs_f64(),
        fig.packets,
        fig.takeovers,
        fig.split_brains,
        fig.excused,
        fails.len(),
        fig.hard_liveness_lost,
        fig.hard
    );
    for (_, r) in fails.iter().take(20) {
        println!("{r}");
    }
    if let Ok(path) = std::env::var("SIM_REPORT") {
        let all: String = fails.iter().map(|(_, r)| r.as_str()).collect();
        std::fs::write(&path, all).unwrap_or_else(|e| panic!("SIM_REPORT={path}: {e}"));
    }
    let seeds: Vec<u64> = fails.iter().map(|(s, _)| *s).collect();
    assert!(fails.is_empty(), "{} seeds failed: {seeds:?}; replay one with SIM_SEED=N", seeds.len());
}

/// The log of sent pairs sees a packet id used twice under one key, and
/// only under the same key.
#[test]
fn the_packet_log_catches_a_reused_pair() {
    use crate::data::{DataHeader, DataKey};
    use vpnsyncd_config::Cipher;
    let key2 = [7u8; 256];
    let mut a = DataKey::new(Cipher::Aes256Gcm, Digest::Sha1, &key2, true);
    let mut b = DataKey::new(Cipher::Aes256Gcm, Digest::Sha1, &[8u8; 256], true);
    let hdr = DataHeader { key_id: 0, peer_id: Some(0) };
    let mut out = [0u8; 128];
    sent::start();
    for k in [&mut a, &mut b] {
        k.encrypt(hdr, b"x", &mut out).unwrap();
        k.encrypt(hdr, b"y", &mut out).unwrap();
    }
    // A second holder of a's key (a copy on another member) from scratch.
    let mut copy = DataKey::new(Cipher::Aes256Gcm, Digest::Sha1, &key2, true);
    copy.encrypt(hdr, b"z", &mut out).unwrap();
    let log = sent::take();
    sent::stop();
    assert_eq!(log.len(), 5);
    assert_eq!((log[0].1, log[1].1, log[2].1, log[3].1, log[4].1), (1, 2, 1, 2, 1));
    assert_ne!(log[0].0, log[2].0, "two keys, two fingerprints");
    assert_eq!(log[0], log[4], "the copy reuses (key, 1)");
    assert!(sent::take().is_empty(), "stopped");
}

/// The harness itself: with sync loss, duplication and delay but no member
/// failing, every invariant holds on the current engine, data flows and
/// the backups follow the master.
#[test]
fn a_cluster_without_failures_keeps_every_invariant() {
    let mut packets = 0;
    for seed in [3, 4, 5] {
        let mut rng = Rng::new(seed);
        let scen = Scenario { faults: Vec::new(), ..Scenario::pick(&mut rng) };
        let o = run_scenario(seed, Some(scen), false);
        assert!(o.violations.is_empty(), "{}", report(seed, &o));
        assert!(o.trace.iter().any(|l| l.ends_with("converged")), "{}", report(seed, &o));
        packets += o.fig.packets;
    }
    assert!(packets > 1000, "{packets} data packets");
}

/// The faults of `faults` alone, on a clean sync network.
fn scripted(seed: u64, faults: Vec<(u64, Fault)>) -> Outcome {
    let mut rng = Rng::new(seed);
    let scen = Scenario { faults, sync: CLEAN_NET, client_loss: 0, ..Scenario::pick(&mut rng) };
    run_scenario(seed, Some(scen), false)
}

/// A master failure with one successor and a clean sync network: the
/// takeover the engine was built for keeps every invariant today.
#[test]
fn a_clean_takeover_keeps_every_invariant() {
    for seed in 1..=8 {
        let o = scripted(seed, vec![(1000, Fault::MasterFails)]);
        assert!(o.violations.is_empty(), "{}", report(seed, &o));
        assert_eq!(o.fig.takeovers, 1, "{}", report(seed, &o));
    }
}

/// Finding 3 of issue 7: two backups told MASTER at once both continue
/// from the same record and send the same packet ids under the same key.
#[test]
fn two_members_promoted_at_once_never_share_a_packet_id() {
    for seed in 1..=8 {
        let o = scripted(seed, vec![(1000, Fault::TwoPromote)]);
        assert!(o.violations.is_empty(), "{}", report(seed, &o));
    }
}

/// A served session and a backup holding its ghost, in-process (no
/// syncer): the lab's server is member 1 and MASTER, the backup member 2.
fn master_and_backup(seed: u64) -> (super::Lab, Server) {
    let opts = super::ClientOptions::v26(super::ClientWrap::TlsAuth(static_key(7), Digest::Sha1));
    let mut lab = super::Lab::new(super::member(1), opts, super::CLEAN, super::CLEAN, seed);
    lab.server.set_role(lab.now, Role::Master);
    lab.connect(Duration::from_secs(5));
    assert_eq!(lab.exchange(10, 1), (10, 10));
    let mut backup = super::member(2);
    backup.set_role(lab.now, Role::Backup);
    (lab, backup)
}

/// The backup gets what the master queued for the syncer, the master dies
/// and the backup, told MASTER, serves in its place. Returns what it got.
fn take_over(lab: &mut super::Lab, mut backup: Server) -> Vec<(ImsgType, Vec<u8>)> {
    let sync = syncglue::drain(&mut lab.server);
    for (ty, d) in &sync {
        assert_eq!(syncglue::apply(&mut backup, lab.now, *ty, d), Ok(()));
    }
    lab.server = backup;
    lab.server.set_role(lab.now, Role::Master);
    sync
}

/// Stops the log of sent pairs; no pair may be in it twice. Returns how
/// many packets it holds.
fn assert_no_pair_twice() -> usize {
    let log = sent::take();
    sent::stop();
    let mut seen = std::collections::HashSet::new();
    let reused: Vec<_> = log.iter().filter(|p| !seen.insert(**p)).collect();
    assert!(reused.is_empty(), "{} pairs sent twice, first {:?}", reused.len(), reused.first());
    log.len()
}

/// Finding 1 of issue 7: promotion only by the role change or by a packet
/// that authenticates. A junk DATA_V2 carrying the ghost's peer-id, from
/// anywhere, and a packet for the client from the backup's own tun device
/// leave the ghost a ghost, and the backup sends nothing.
#[test]
fn unauthenticated_traffic_never_promotes_a_ghost() {
    let (mut lab, mut backup) = master_and_backup(21);
    super::sync(&mut lab.server, &mut backup, lab.now);
    let peer_id = peer_id_of(&lab.client).expect("a pushed peer-id");
    let mut junk = ((9u32 << 27) | peer_id).to_be_bytes().to_vec();
    junk.extend([0x41u8; 40]);
    let from: SocketAddr = "203.0.113.66:666".parse().expect("an address");
    assert!(backup.on_datagram(lab.now, 0, from, &mut junk).is_none());
    assert!(sessions_of(&backup).iter().all(|s| s.ghost), "a forged packet promoted the ghost");
    let me = lab.client.address().expect("an address");
    let mut out = [0u8; 2048];
    let sent = backup.seal_tun_packet(lab.now, &ipv4(LAN_HOST, me, 1, 1), &mut out);
    assert!(sent.is_none(), "a backup sent a data packet with a copied key");
    assert!(sessions_of(&backup).iter().all(|s| s.ghost), "local traffic promoted the ghost");
}

/// Finding 2 of issue 7: a record of the old master that arrives late (in
/// flight when it died) must not turn the session the new master serves
/// back into a ghost with old counters, which then restarts from the same
/// packet ids.
#[test]
fn a_late_record_never_rolls_back_a_served_session() {
    let (mut lab, backup) = master_and_backup(22);
    // The master dies; the backup is told MASTER and serves.
    let late = take_over(&mut lab, backup);
    sent::start();
    let me = lab.client.address().expect("an address");
    let mut sends = 0;
    for round in 0..2u8 {
        for i in 0..30 {
            sends += usize::from(lab.server_sends(&ipv4(LAN_HOST, me, i, round)));
            lab.step();
        }
        // The old master's record, late on the sync network.
        for (ty, d) in &late {
            assert_eq!(syncglue::apply(&mut lab.server, lab.now, *ty, d), Ok(()));
        }
    }
    assert_no_pair_twice();
    assert_eq!(sends, 60, "the new master served every packet");
    assert_eq!(lab.client.replays, 0, "the client refused packets as replays");
    assert!(sessions_of(&lab.server).iter().all(|s| !s.ghost), "the served session became a ghost");
}

/// Found by the simulation (seed 26 of an early run): a member took a key
/// over, sent under it, dropped it (its ghost went), and a late record
/// brought the key back. Counting from the record again it repeated its
/// own packet ids. The member's memory of what it sent under each key
/// (crate::sentkeys) outlives the key state.
#[test]
fn a_key_that_comes_back_after_it_was_dropped_never_repeats_an_id() {
    let (mut lab, backup) = master_and_backup(23);
    let first = take_over(&mut lab, backup);
    sent::start();
    let me = lab.client.address().expect("an address");
    for i in 0..20 {
        assert!(lab.server_sends(&ipv4(LAN_HOST, me, i, 1)));
        lab.step();
    }
    // Back to BACKUP; the session ends on the master (a delete of a newer
    // generation); then the first record arrives again, late.
    lab.server.set_role(lab.now, Role::Backup);
    let sid: [u8; 8] = first.iter().find(|(ty, _)| *ty == ImsgType::SyncUpsert).unwrap().1[..8].try_into().unwrap();
    let mut delete = sid.to_vec();
    delete.extend_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(syncglue::apply(&mut lab.server, lab.now, ImsgType::SyncDelete, &delete), Ok(()));
    assert!(sessions_of(&lab.server).is_empty(), "the ghost went");
    for (ty, d) in &first {
        assert_eq!(syncglue::apply(&mut lab.server, lab.now, *ty, d), Ok(()));
    }
    lab.server.set_role(lab.now, Role::Master);
    for i in 0..20 {
        assert!(lab.server_sends(&ipv4(LAN_HOST, me, i, 2)));
        lab.step();
    }
    assert!(assert_no_pair_twice() >= 40);
}
