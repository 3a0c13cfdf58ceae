//! vpnsyncd-loadgen: N OpenVPN clients in one process, each on its own
//! UDP socket, for benchmarks of vpnsyncd and stock OpenVPN servers alike.
//! Every client is the engine's client core (`vpnsyncd_engine::client`):
//! a full TLS handshake with a client certificate, key method 2, the
//! push, then keepalive pings, and with `--ping-interval` an ICMP echo
//! through the tunnel. One thread waits on every socket (epoll) on the
//! real clock. At the end (or at SIGTERM/SIGINT) a report goes to stdout,
//! one `name value` a line.

mod args;
mod epoll;
mod mark;
mod probe;
mod report;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vpnsyncd_engine::client::{self, Client, ClientOptions, ClientWrap};
use vpnsyncd_engine::session::Now;
use vpnsyncd_engine::wrap::StaticKey;

use crate::mark::{AfterMark, Mark};
use crate::probe::Probe;
use crate::report::{Report, Slot};

/// A handshake not done by then starts over, as a stock client's
/// `hand-window` (60 s) would.
const HAND_WINDOW: Duration = Duration::from_secs(60);
/// Without `ping-restart` pushed: a stock client's default
/// (`ping-restart 120` of `keepalive` is what servers push).
const DEFAULT_PING_RESTART: Duration = Duration::from_secs(120);
/// How often a client in its handshake runs its timers (retransmissions).
const TICK: Duration = Duration::from_millis(100);
/// An established client runs them (pings, ping-restart) at every
/// IDLE_ROUNDS-th tick only, a share of the clients at each tick: at
/// 10,000 clients, running all of them 10 times a second would cost the
/// generator more than the sessions do.
const IDLE_ROUNDS: usize = 10;

/// Set by SIGTERM or SIGINT: the run ends early, with its report, so a
/// benchmark stops the generator when it has measured what it needs.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn stop_on_signals() {
    let handler: extern "C" fn(libc::c_int) = on_stop;
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&argv) {
        eprintln!("vpnsyncd-loadgen: {e}");
        std::process::exit(1);
    }
}

fn now() -> Now {
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Now { mono: Instant::now(), unix }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn options(a: &args::Args) -> Result<ClientOptions, String> {
    let (ca, cert, key) = (read(&a.ca)?, read(&a.cert)?, read(&a.key)?);
    let tls = client::tls_config(&ca, Some((&cert, &key)), false)?;
    let static_key = |p: &std::path::Path| StaticKey::parse(&read(p)?).map_err(|e| format!("{}: {e}", p.display()));
    let wrap = match &a.wrap {
        args::WrapFile::None => ClientWrap::None,
        args::WrapFile::TlsAuth(p) => ClientWrap::TlsAuth(static_key(p)?, a.auth),
        args::WrapFile::TlsCrypt(p) => ClientWrap::TlsCrypt(static_key(p)?),
    };
    Ok(ClientOptions {
        peer_info: client::peer_info_26(&a.ciphers),
        wrap,
        auth: a.auth,
        push_request_delay: Duration::from_secs(1),
        user_pass: (String::new(), String::new()),
        tls,
    })
}

/// Raises the soft limit of open files to what `n` sockets need.
fn raise_nofile(n: usize) -> Result<(), String> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
        }
        let want = (n as libc::rlim_t + 64).min(lim.rlim_max);
        if want > lim.rlim_cur {
            lim.rlim_cur = want;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
            }
        }
        if (lim.rlim_cur as usize) < n + 16 {
            return Err(format!("{n} clients need {} open files; the hard limit is {}", n + 16, lim.rlim_max));
        }
    }
    Ok(())
}

fn socket(a: &args::Args, i: usize) -> Result<UdpSocket, String> {
    let local = match a.bind.get(i % a.bind.len().max(1)) {
        Some(ip) => SocketAddr::new(*ip, 0),
        None if a.remote.is_ipv4() => "0.0.0.0:0".parse().expect("an address"),
        None => "[::]:0".parse().expect("an address"),
    };
    let s = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
    s.connect(a.remote).map_err(|e| format!("connect {}: {e}", a.remote))?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Sends what the client has queued; a send error (ICMP unreachable,
/// full buffer) is a lost datagram, which the protocol retransmits.
fn send_out(sock: &UdpSocket, c: &mut Client) {
    for p in c.outbox.drain(..) {
        let _ = sock.send(&p);
    }
}

fn run(argv: &[String]) -> Result<(), String> {
    let a = args::parse(argv)?;
    let opts = options(&a)?;
    raise_nofile(a.clients)?;
    let socks: Vec<UdpSocket> = (0..a.clients).map(|i| socket(&a, i)).collect::<Result<_, _>>()?;
    let mut ep = epoll::Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    for (i, s) in socks.iter().enumerate() {
        ep.add(s.as_fd(), i as u64).map_err(|e| format!("epoll: {e}"))?;
    }
    let mut slots: Vec<Slot> = Vec::with_capacity(a.clients);
    let mut report = Report::new(a.clients);
    let start = Instant::now();
    let end = start + a.duration;
    let spacing = Duration::from_secs_f64(1.0 / a.rate);
    let mut next_tick = start;
    let mut round = 0usize;
    let mut buf = [0u8; 2048];
    let mut probes: Vec<Probe> = (0..a.clients).map(|_| Probe::new()).collect();
    let mut mark = a.mark_file.clone().map(Mark::new);
    let mut after: Option<AfterMark> = None;
    stop_on_signals();
    while Instant::now() < end && !STOP.load(Ordering::Relaxed) {
        let t = now();
        // Start clients at the rate asked.
        while slots.len() < a.clients && start + spacing * slots.len() as u32 <= t.mono {
            let i = slots.len();
            let mut c = Client::new(opts.clone(), t);
            send_out(&socks[i], &mut c);
            slots.push(Slot::new(c, t.mono));
        }
        let next_start = start + spacing * slots.len() as u32;
        let wake = if slots.len() < a.clients { next_tick.min(next_start) } else { next_tick };
        let ready: Vec<u64> =
            ep.wait(wake.saturating_duration_since(t.mono)).map_err(|e| format!("epoll: {e}"))?.collect();
        let t = now();
        let started = slots.len();
        for i in ready.into_iter().map(|i| i as usize).filter(|&i| i < started) {
            while let Ok(len) = socks[i].recv(&mut buf) {
                let slot = &mut slots[i];
                slot.answered(t.mono);
                slot.client.on_datagram(t, &mut buf[..len]);
                send_out(&socks[i], &mut slot.client);
                let echoed =
                    a.ping.is_some_and(|(_, to)| slot.client.received.iter().any(|p| probe::is_echo_reply(p, to)));
                slot.client.received.clear();
                let p = &mut probes[i];
                if echoed
                    && p.armed
                    && p.resumed.is_none()
                    && mark.as_ref().and_then(|m| m.at).is_some_and(|at| t.mono >= at)
                {
                    p.resumed = Some(t.mono);
                }
            }
            let slot = &mut slots[i];
            if slot.note_progress(t.mono, &mut report) {
                report.up(t.mono.duration_since(start));
            }
        }
        if let Some((interval, to)) = a.ping {
            for (i, slot) in slots.iter_mut().enumerate() {
                let Some(src) = slot.client.address().filter(|_| slot.client.connected()) else {
                    continue;
                };
                let p = &probes[i];
                let fast = a.ping_fast.filter(|_| after.is_some() && p.armed && p.resumed.is_none());
                if let Some(echo) = probes[i].due(t.mono, interval, fast, i as u16, src, to) {
                    slot.client.send_data(t, &echo);
                    send_out(&socks[i], &mut slot.client);
                }
            }
        }
        if let Some(after) = after.as_mut() {
            after.check_all(&probes);
        }
        if t.mono >= next_tick {
            next_tick = t.mono + TICK;
            round += 1;
            if round.is_multiple_of(10) {
                report.progress(t.mono.duration_since(start));
            }
            if let Some(m) = mark.as_mut() {
                if m.poll()? {
                    let at = m.at.expect("a mark just set");
                    for (p, slot) in probes.iter_mut().zip(&slots) {
                        p.armed = slot.client.connected();
                    }
                    after = Some(AfterMark::new(at, a.duration));
                }
            }
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.is_up() && i % IDLE_ROUNDS != round % IDLE_ROUNDS {
                    continue;
                }
                slot.client.on_timer(t);
                send_out(&socks[i], &mut slot.client);
                if slot.note_progress(t.mono, &mut report) {
                    report.up(t.mono.duration_since(start));
                }
                let key_id = slot.client.send_key_id().filter(|_| slot.client.connected());
                if let (Some(after), Some(_)) = (after.as_mut(), probes[i].key_id) {
                    if key_id.is_some() && key_id != probes[i].key_id {
                        after.rekeyed(t.mono);
                    }
                }
                probes[i].key_id = key_id.or(probes[i].key_id);
                if slot.must_restart(t.mono, HAND_WINDOW, DEFAULT_PING_RESTART) {
                    slot.restart(Client::new(opts.clone(), t), t.mono, &mut report);
                    probes[i].reset();
                    send_out(&socks[i], &mut slot.client);
                }
            }
        }
    }
    report.finish(&slots, start.elapsed());
    match &after {
        Some(after) => after.finish(&probes, a.resume_file.as_deref())?,
        None if mark.is_some() => {
            eprintln!("vpnsyncd-loadgen: the mark file never appeared");
            println!("mark_clients 0");
        }
        None => {}
    }
    Ok(())
}
