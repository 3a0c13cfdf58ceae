//! The idle cost (issue 10, item 2e): N established, silent-but-for-their
//! pings sessions on the virtual clock, with the server woken the way the
//! engine's poll loop wakes it (crate::sleep: at its next deadline, or
//! when a datagram arrives). Over a simulated minute the wake-ups and the
//! sessions run must follow the keepalive traffic, not N × 5 a second as
//! under the old fixed 200 ms tick.

use super::*;
use crate::sleep::{Sleep, MAX_SLEEP};

const N: usize = 40;

/// Client `i`'s address.
pub(super) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 18, 1, i as u8 + 1], 40000))
}

/// What the server handed to which client; returns how many datagrams.
pub(super) fn deliver(server: &mut Server, clients: &mut [TestClient], now: Now) -> u64 {
    let mut n = 0;
    for (_, to, mut p) in server.take_sends() {
        let i = clients.iter().enumerate().position(|(i, _)| addr(i) == to).expect("a datagram to one of ours");
        clients[i].on_datagram(now, &mut p);
        n += 1;
    }
    n
}

/// The clients' queued datagrams to the server; returns how many.
pub(super) fn send_all(server: &mut Server, clients: &mut [TestClient], now: Now) -> u64 {
    let mut n = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        for mut p in c.outbox.drain(..) {
            server.on_datagram(now, 0, addr(i), &mut p);
            n += 1;
        }
    }
    n
}

/// `n` clients connected to `server` in lockstep, as the other labs do,
/// and a quiet second for the handshakes' last acknowledgements.
pub(super) fn connect_all(server: &mut Server, opts: &ClientOptions, n: usize, now: &mut Now) -> Vec<TestClient> {
    let start = now.mono;
    let mut clients: Vec<TestClient> = (0..n).map(|_| TestClient::new(opts.clone(), *now)).collect();
    let limit = now.mono + Duration::from_secs(20);
    let step = |server: &mut Server, clients: &mut [TestClient], now: &mut Now| {
        now.mono += STEP;
        now.unix = UNIX0 + now.mono.duration_since(start).as_secs();
        send_all(server, clients, *now);
        server.on_timer(*now);
        deliver(server, clients, *now);
    };
    while !(clients.iter().all(TestClient::connected) && server.client_count() == n) {
        assert!(now.mono < limit, "{} of {n} connected", server.client_count());
        step(server, &mut clients, now);
        clients.iter_mut().for_each(|c| c.on_timer(*now));
    }
    let settle = now.mono + Duration::from_secs(1);
    while now.mono < settle {
        step(server, &mut clients, now);
    }
    clients
}

#[test]
fn idle_wake_ups_follow_the_keepalive_traffic_not_the_sessions() {
    let k = static_key(9);
    let mut server = server("tls-auth \"/k/ta.key\" direction 0\nkeepalive 10 60\n", Some(&k));
    let opts = ClientOptions::v26(ClientWrap::TlsAuth(k, Digest::Sha1));
    let start = Instant::now();
    let mut now = Now { mono: start, unix: UNIX0 };
    let mut clients = connect_all(&mut server, &opts, N, &mut now);

    // The idle minute, event-driven: the server wakes at its next deadline
    // (or its poll cap) or when datagrams arrive; the clients' timers run
    // once a second.
    let mut sleep = Sleep::default();
    let (runs0, t0) = (server.timer_runs(), now.mono);
    let (mut wakeups, mut from_clients, mut to_clients) = (0u64, 0u64, 0u64);
    let mut clients_due = now.mono;
    let end = now.mono + Duration::from_secs(60);
    while now.mono < end {
        let server_at = now.mono + sleep.timeout(now.mono, &[server.next_deadline(now.mono)]);
        now.mono = server_at.min(clients_due);
        now.unix = UNIX0 + now.mono.duration_since(start).as_secs();
        let mut woken = now.mono == server_at;
        if now.mono == clients_due {
            clients_due += Duration::from_secs(1);
            clients.iter_mut().for_each(|c| c.on_timer(now));
            let n = send_all(&mut server, &mut clients, now);
            from_clients += n;
            woken |= n > 0;
        }
        if sleep.due(now.mono, server.next_deadline(now.mono)) {
            server.on_timer(now);
        }
        to_clients += deliver(&mut server, &mut clients, now);
        wakeups += u64::from(woken);
    }
    let runs = server.timer_runs() - runs0;
    let events = from_clients + to_clients;
    let minute = now.mono.duration_since(t0).as_secs();
    assert_eq!(server.client_count(), N, "every session stays up");
    assert!(to_clients >= 5 * N as u64, "the server pinged each session every 10 s: {to_clients} pings");
    assert!(from_clients >= 5 * N as u64, "and each client pinged it: {from_clients}");
    let cap = minute * (1000 / MAX_SLEEP.as_millis() as u64) + 1;
    assert!(wakeups <= events + cap, "{wakeups} wake-ups for {events} keepalive datagrams");
    assert!(runs <= events + N as u64, "{runs} session runs for {events} keepalive datagrams");
    let old_tick = N as u64 * 5 * minute;
    assert!(runs * 10 < old_tick, "{runs} session runs, against {old_tick} under the 200 ms tick");
}
