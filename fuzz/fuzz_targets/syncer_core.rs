//! The syncer's core driven by a sequence of events decoded from the input:
//! datagrams from three peers, raw or sealed with the cluster key under the
//! peer's boot id (so that the fuzzer reaches the table, bulk and heartbeat
//! logic), peers that restart, engine messages, role changes, key reloads,
//! and ticks of a virtual clock. Nothing may panic, and every datagram the
//! core sends must open at a peer that holds the same key.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vpnsyncd_common::msg::{ImsgType, Role};
use vpnsyncd_syncer::core::{Core, Output, Params, Transport};
use vpnsyncd_syncer::key::SyncKey;
use vpnsyncd_syncer::proto::{boot_id, Opener, Sealer};

const OWN_BOOT: [u8; 16] = [1; 16];

#[path = "../src/input.rs"]
mod input;
use input::Input;

fn key(b: u8) -> SyncKey {
    SyncKey::parse(format!("{b:02x}").repeat(32).as_bytes()).expect("64 hex digits")
}

/// One peer's sending side; a restart gives it a new boot id (a later or,
/// as a replay would, an earlier start).
struct Peer {
    addr: SocketAddr,
    member: u8,
    start: u64,
    boot: [u8; 16],
    sealer: Sealer,
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(setup) = input.byte() else { return };
    let keys = [key(7), key(8)];
    let mut current = 0;
    let mut peers: Vec<Peer> = (0..3u8)
        .map(|i| {
            // Member 1 is ours; the fuzzer may also make a peer claim it.
            let (member, start) = (2 + i, 1_000);
            let boot = boot_id(member, start, [i; 7]);
            Peer {
                addr: SocketAddr::from(([198, 18, 0, 2 + i], 1196)),
                member,
                start,
                boot,
                sealer: Sealer::new(&keys[current], boot),
            }
        })
        .collect();
    let transport = if setup & 1 == 0 {
        Transport::Multicast { group: "239.0.2.0:1196".parse().expect("an address"), interface: "eth0".into() }
    } else {
        Transport::Unicast(peers.iter().map(|p| p.addr).collect())
    };
    let start = Instant::now();
    let mut now = start;
    let params = Params { member: 1, lifetime: Duration::from_secs(20), limit: 1000 };
    let mut core = Core::new(Some((transport, keys[current].clone())), params, OWN_BOOT, now, 1_790_000_000);
    while let Some(op) = input.byte() {
        let p = usize::from(op >> 3) % peers.len();
        match op & 7 {
            0 => {
                let Some(d) = input.bytes(4096) else { break };
                core.on_datagram(peers[p].addr, d, now);
            }
            1 | 2 => {
                let Some(plain) = input.bytes(4096) else { break };
                let d = peers[p].sealer.seal(plain);
                core.on_datagram(peers[p].addr, &d, now);
            }
            3 => {
                let Some(b) = input.byte() else { break };
                let peer = &mut peers[p];
                match b % 4 {
                    0 => peer.start = peer.start.saturating_sub(u64::from(b)),
                    1 => peer.member = 1 + b % 8,
                    _ => peer.start += u64::from(b),
                }
                peer.boot = boot_id(peer.member, peer.start, [b; 7]);
                peer.sealer = Sealer::new(&keys[current], peer.boot);
            }
            4 => {
                let (Some(t), Some(d)) = (input.byte(), input.bytes(4096)) else { break };
                let ty = [ImsgType::SyncUpsert, ImsgType::SyncProgress, ImsgType::SyncDelete][usize::from(t % 3)];
                let _ = core.on_engine(ty, d, now);
            }
            5 => {
                let Some(r) = input.byte() else { break };
                match r % 4 {
                    0 => core.set_role(Role::Init),
                    1 => core.set_role(Role::Backup),
                    2 => core.set_role(Role::Master),
                    // A reload with the other key: the whole cluster changes it.
                    _ => {
                        current ^= 1;
                        core.set_key(keys[current].clone());
                        for peer in &mut peers {
                            peer.sealer = Sealer::new(&keys[current], peer.boot);
                        }
                    }
                }
            }
            _ => {
                let Some(ms) = input.u16() else { break };
                now += Duration::from_millis(u64::from(ms));
                core.tick(now);
            }
        }
        for out in core.take_output() {
            if let Output::Send { bytes, .. } = out {
                let opened = Opener::new(keys[current].clone(), [0xee; 16]).open(&bytes);
                assert!(opened.is_ok(), "a datagram we sent does not open: {opened:?}");
            }
        }
    }
    let _ = core.info(now);
});
