//! The data threads' send side (crate::shard) with its real code paths:
//! two shards on loopback sockets, their tun queues replaced by datagram
//! socket pairs the test writes IP packets into, the main thread's timers
//! run in between. Over many seeded schedules (which thread reads the
//! tunnel, when the timers build pings, when a thread takes what waits
//! for it) a session's data packets must reach its client in packet-id
//! order: the client's replay window takes no reordering for granted.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::AtomicU64;

use super::*;
use crate::shard::{lock, wake_pairs, Plane, Shard};
use vpnsyncd_common::steer::DATA_V2;

/// One seed's schedule; returns (data packets, pings, handed over) seen.
fn schedule(seed: u64) -> (usize, usize, usize) {
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_nonblocking(true).unwrap();
    let mut lab = Lab::tls_auth("data-threads 2\nkeepalive 1 10\n", CLEAN, CLEAN, seed);
    // Every third seed a client without P_DATA_V2 (no IV_PROTO bit 1).
    let v1 = seed.is_multiple_of(3);
    if v1 {
        let mut opts = lab.client.opts.clone();
        opts.peer_info = opts.peer_info.replace("IV_PROTO=990", "IV_PROTO=988");
        lab.up.queue.clear();
        lab.client = TestClient::new(opts, lab.now);
        lab.client_to_link();
    }
    lab.addr = client.local_addr().unwrap();
    lab.connect(Duration::from_secs(5));
    // Every other seed the client connects again, and its new session
    // takes peer-id 8 beside the old one: the data thread's.
    if seed.is_multiple_of(2) {
        lab.client = TestClient::new(lab.client.opts.clone(), lab.now);
        lab.client_to_link();
        lab.run_until(Duration::from_secs(5), |l| l.client.connected() && l.server.client_count() == 1);
    }
    let me = lab.client.address().unwrap();
    let placeholder = server("", None);
    let plane = Plane::new(std::mem::replace(&mut lab.server, placeholder), Duration::ZERO);
    let id = lock(&plane).tun_destination(&ipv4(LAN_HOST, me, 0, 0)).unwrap();
    let owner = lock(&plane).shard_of(id);
    let expected = if seed.is_multiple_of(2) { 8 } else { 0 };
    assert_eq!(id, expected, "seed {seed}: peer-id");
    assert_eq!(
        owner,
        if v1 { 0 } else { id as usize / 8 },
        "seed {seed}: a client without peer-id is the main thread's"
    );
    let listeners: Vec<OwnedFd> =
        (0..2).map(|_| OwnedFd::from(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())).collect();
    let (tun, writers): (Vec<OwnedFd>, Vec<UnixDatagram>) = (0..2)
        .map(|_| {
            let (a, b) = UnixDatagram::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            (OwnedFd::from(a), b)
        })
        .unzip();
    let acks = Arc::new(AtomicU64::new(0));
    let mut shards = Shard::all(listeners, tun, wake_pairs(2).unwrap(), false, Duration::ZERO, &acks);
    let mut rng = Rng::new(seed);
    let (mut pkt_no, mut handed) = (0u16, 0);
    let mut now = lab.now;
    for _ in 0..300 {
        match rng.below(6) {
            // Packets from the tunnel, read by one thread or the other.
            0 | 1 => {
                let reader = rng.below(2) as usize;
                for _ in 0..1 + rng.below(40) {
                    pkt_no = pkt_no.wrapping_add(1);
                    writers[reader].send(&ipv4(LAN_HOST, me, pkt_no, 1)).unwrap();
                }
                handed += usize::from(reader != owner);
                shards[reader].on_tun(&plane);
            }
            // The owner takes what waits for it (as after a wake-up).
            2 => {
                shards[owner].drain_wakes();
                shards[owner].send_queued(&plane);
            }
            // The main thread's timers: pings for an idle session.
            3 => {
                now.mono += Duration::from_millis(rng.below(1500));
                now.unix = UNIX0 + now.mono.duration_since(lab.start).as_secs();
                let mut p = lock(&plane);
                p.on_timer(now);
                p.outbox.clear();
                p.sync_out.clear();
            }
            // Another thread's wake-up that finds nothing for it.
            _ => shards[1 - owner].send_queued(&plane),
        }
    }
    shards[owner].send_queued(&plane);
    let (mut last, mut data, mut pings) = (None, 0, 0);
    let mut buf = [0u8; 2048];
    while let Ok(n) = client.recv(&mut buf) {
        // AES-GCM: the packet id follows the opcode (and peer-id).
        let at = match buf[0] >> 3 {
            DATA_V2 if !v1 => 4,
            6 if v1 => 1,
            _ => continue,
        };
        let pid = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        assert!(last.is_none_or(|l| pid > l), "seed {seed}: packet id {pid} after {last:?}");
        last = Some(pid);
        // A ping: header, packet id, tag and the 16-byte magic.
        if n == at + 4 + 16 + crate::data::PING.len() {
            pings += 1;
        } else {
            data += 1;
        }
    }
    (data, pings, handed)
}

#[test]
fn each_session_s_packets_leave_in_packet_id_order_from_any_schedule() {
    // Seeds of each kind: peer-id 0 or 8, with P_DATA_V2 or without.
    let (mut data, mut pings, mut handed) = (0, 0, 0);
    for seed in 1..=60 {
        let (d, p, h) = schedule(seed);
        assert!(d > 0, "seed {seed}: no data packet reached the client");
        (data, pings, handed) = (data + d, pings + p, handed + h);
    }
    assert!(data > 10_000, "{data} data packets");
    assert!(pings > 100, "{pings} pings among them");
    assert!(handed > 100, "{handed} reads of the other thread's queue");
}
