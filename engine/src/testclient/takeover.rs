//! A takeover of many sessions in slices (issue 10, crate::takeover): the
//! new master answers a client whose ghost is queued last before the
//! other ghosts are promoted, tunnel traffic toward a queued ghost is sent
//! at once, no (key, packet id) pair is used twice, and the copied keys
//! are still replaced spread over the rekey window.

use super::idle::{addr, connect_all, deliver, send_all};
use super::*;

const N: usize = 24;
/// Ghosts per slice: a takeover of N takes several turns.
const SLICE: usize = 4;
/// The default `rekey-window`.
const WINDOW: Duration = Duration::from_secs(60);

/// Client `i` sends `server` one IP packet; true if it came out of the
/// tunnel intact.
fn up(server: &mut Server, clients: &mut [TestClient], i: usize, now: Now, tag: u8) -> bool {
    let me = clients[i].address().expect("an address");
    let ip = ipv4(me, LAN_HOST, i as u16, tag);
    assert!(clients[i].send_data(now, &ip), "client {i} has a key to send with");
    let mut arrived = false;
    for mut p in std::mem::take(&mut clients[i].outbox) {
        arrived |= server.on_datagram(now, 0, addr(i), &mut p) == Some(&ip[..]);
    }
    arrived
}

/// `server` sends client `i` one IP packet from its tun device; true if
/// the client accepted it.
fn down(server: &mut Server, clients: &mut [TestClient], i: usize, now: Now, tag: u8) -> bool {
    let ip = ipv4(LAN_HOST, clients[i].address().expect("an address"), i as u16, tag);
    let mut out = [0u8; 2048];
    let Some((_, to, n)) = server.seal_tun_packet(now, &ip, &mut out) else { return false };
    assert_eq!(to, addr(i));
    clients[i].on_datagram(now, &mut out[..n]);
    clients[i].received.last() == Some(&ip)
}

fn live(s: &Server) -> usize {
    s.sessions().filter(|s| !s.is_ghost()).count()
}

/// The clients whose sessions `s` holds as ghosts, last in the takeover's
/// order (the highest peer-id) first.
fn queued(s: &Server) -> Vec<usize> {
    let mut g: Vec<(u32, SocketAddr)> = s.sessions().filter(|s| s.is_ghost()).map(|s| (s.peer_id, s.peer)).collect();
    g.sort_unstable_by(|a, b| b.cmp(a));
    g.into_iter().map(|(_, peer)| (0..N).find(|&i| addr(i) == peer).expect("one of ours")).collect()
}

#[test]
fn a_queued_ghost_is_answered_before_the_takeover_is_done() {
    crate::data::sent::start();
    let opts = ClientOptions::v26(ClientWrap::TlsAuth(static_key(7), Digest::Sha1));
    let mut now = Now { mono: Instant::now(), unix: UNIX0 };
    let mut a = member(1);
    a.set_role(now, Role::Master);
    let mut clients = connect_all(&mut a, &opts, N, &mut now);
    let mut b = member(2);
    b.set_role(now, Role::Backup);
    for i in 0..N {
        assert!(up(&mut a, &mut clients, i, now, 1) && down(&mut a, &mut clients, i, now, 1));
    }
    a.on_timer(now);
    sync(&mut a, &mut b, now);
    assert_eq!(b.ghost_count(), N);
    // A serves on; these counters never reach B: A dies with them.
    for tag in 2..5 {
        for i in 0..N {
            assert!(up(&mut a, &mut clients, i, now, tag) && down(&mut a, &mut clients, i, now, tag));
        }
    }
    drop(a);
    now.mono += Duration::from_millis(300);
    now.unix += 1;
    let takeover = now.mono;

    b.set_takeover_slice(SLICE);
    b.set_role(now, Role::Master);
    assert_eq!(live(&b), SLICE, "the role change promotes the first slice only");
    let order = queued(&b);
    let (last, next) = (order[0], order[1]);
    assert!(up(&mut b, &mut clients, last, now, 5), "the client queued last is answered at once");
    assert!(down(&mut b, &mut clients, last, now, 5), "and B sends to it");
    assert!(down(&mut b, &mut clients, next, now, 5), "tunnel traffic toward a queued ghost goes out at once");
    assert!(b.promoting(), "before the other ghosts are promoted");
    assert_eq!(live(&b), SLICE + 2);

    let mut turns = 0;
    while b.promoting() {
        b.promote_slice(now);
        turns += 1;
    }
    assert_eq!(turns, (N - SLICE - 2).div_ceil(SLICE), "a slice per turn");
    assert_eq!(live(&b), N);
    let upserts = b.sync_out.iter().filter(|o| matches!(o, crate::server::SyncOut::Upsert(..))).count();
    assert_eq!(upserts, N, "each promotion's record goes to the syncer");
    for i in 0..N {
        assert!(up(&mut b, &mut clients, i, now, 6) && down(&mut b, &mut clients, i, now, 6), "client {i} on B");
    }

    // The copied keys are replaced over the rekey window, each at its
    // slot: the client promoted out of turn keeps the last one.
    let mut renegotiated: Vec<Option<Duration>> = vec![None; N];
    while now.mono < takeover + WINDOW + Duration::from_secs(5) {
        now.mono += STEP;
        now.unix = UNIX0 + now.mono.duration_since(takeover).as_secs() + 100;
        send_all(&mut b, &mut clients, now);
        b.on_timer(now);
        deliver(&mut b, &mut clients, now);
        clients.iter_mut().for_each(|c| c.on_timer(now));
        for info in b.client_infos().into_iter().filter(|c| c.key_id != 0) {
            let i = (0..N).find(|&i| addr(i).to_string() == info.real_address).unwrap();
            renegotiated[i].get_or_insert(now.mono.duration_since(takeover));
        }
    }
    let at: Vec<u64> = renegotiated.iter().map(|t| t.expect("every copied key replaced").as_secs()).collect();
    let busiest = (0..=WINDOW.as_secs() + 5).map(|s| at.iter().filter(|&&t| t == s).count()).max().unwrap();
    assert!(busiest <= 2, "renegotiations spread over the window, not a storm: {at:?}");
    assert!(at[last] + 5 >= WINDOW.as_secs(), "the client promoted out of turn keeps its slot: {at:?}");
    for i in 0..N {
        assert!(up(&mut b, &mut clients, i, now, 7) && down(&mut b, &mut clients, i, now, 7), "client {i} on new keys");
    }
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c.data_rejected, 0, "client {i} refused a data packet");
        assert!(c.errors.is_empty(), "client {i}: {:?}", c.errors);
    }
    let mut pairs = crate::data::sent::take();
    crate::data::sent::stop();
    let n = pairs.len();
    pairs.sort_unstable();
    pairs.dedup();
    assert_eq!(pairs.len(), n, "a (key, packet id) pair was used twice");
}
