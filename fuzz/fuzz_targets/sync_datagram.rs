//! Received sync datagrams: the opener and the syncer core must refuse,
//! never panic, on any input; a plaintext sealed with the cluster key must
//! open to exactly what `decode` makes of it.
#![no_main]

use std::time::{Duration, Instant};

use vpnsyncd_syncer::core::{Core, Params, Transport};
use vpnsyncd_syncer::key::SyncKey;
use vpnsyncd_syncer::proto::{decode, Opener, Reject, Sealer};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = SyncKey::parse(&[b'5'; 64]).expect("64 hex digits");
    let mut opener = Opener::new(key.clone(), [1; 16]);
    let _ = opener.open(data);

    let now = Instant::now();
    let peer = "198.18.0.2:1196".parse().expect("an address");
    let mut core = Core::new(
        Some((Transport::Unicast(vec![peer]), key.clone())),
        Params { member: 1, lifetime: Duration::from_secs(20), limit: 1000 },
        [1; 16],
        now,
        0,
    );
    core.on_datagram(peer, data, now);
    core.tick(now);
    let _ = core.take_output();

    if data.len() <= 65507 {
        let sealed = Sealer::new(&key, [2; 16]).seal(data);
        let want = decode(data).map(|m| ([2; 16], m)).map_err(|_| Reject::Malformed);
        assert_eq!(opener.open(&sealed), want);
        core.on_datagram(peer, &sealed, now);
        let _ = core.take_output();
    }
});
