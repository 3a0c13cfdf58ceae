//! A whole server driven by a sequence of events decoded from the input:
//! datagrams from a few client addresses, raw or wrapped with the client's
//! side of tls-auth/tls-crypt (so that the fuzzer gets past the wrapping
//! into the reliability layer, TLS and the session table), packets from the
//! tun device, timer runs and steps of a virtual clock. Nothing may panic.
//!
//! Only the server's public constructor, `on_datagram`, `tun_destination`,
//! `on_tun_packet` and `on_timer` are used, so the target follows the engine
//! as it changes (the session table and its limits are being reworked). What
//! the server sends collects in its outbox and its threads' queues of pings
//! for the length of one input, which bounds it.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use vpnsyncd_common::msg::KeyKind;
use vpnsyncd_engine::server::Server;
use vpnsyncd_engine::session::{Now, SessionConfig};
use vpnsyncd_engine::settings;
use vpnsyncd_engine::tls::testpki;
use vpnsyncd_engine::wrap::{StaticKey, Wrapper};

/// Fewer than the client addresses, so that the limit is reached.
const MAX_CLIENTS: usize = 3;
const CLIENTS: [&str; 5] =
    ["198.18.0.7:40000", "198.18.0.7:40001", "198.18.0.8:1194", "[2001:db8::1]:5000", "198.18.0.9:9"];
const UNIX0: u64 = 1_790_000_000;

#[path = "../src/input.rs"]
mod input;
use input::Input;

/// What a server is made of, per wrapping mode, and the clients' side of
/// the wrapping; built once, since parsing the PKI costs more than a run.
struct Setup {
    conf: vpnsyncd_config::Config,
    session: Arc<SessionConfig>,
    wrap: Wrapper,
    client: Wrapper,
}

fn setup(mode: u8) -> (Server, Vec<Wrapper>) {
    static SETUPS: OnceLock<Vec<Setup>> = OnceLock::new();
    let setups = SETUPS.get_or_init(|| (0..3).map(build).collect());
    let s = &setups[usize::from(mode % 3)];
    (Server::new(&s.conf, s.session.clone(), s.wrap.clone()), vec![s.client.clone(); CLIENTS.len()])
}

fn build(mode: u8) -> Setup {
    let key = StaticKey::parse(testpki::STATIC_KEY).expect("the test key parses");
    let (line, client) = match mode {
        0 => ("", Wrapper::none()),
        1 => ("tls-auth \"/k/ta.key\" direction 0\n", Wrapper::tls_auth(&key, Some(1), vpnsyncd_config::Digest::Sha1)),
        _ => ("tls-crypt \"/k/tc.key\"\n", Wrapper::tls_crypt(&key, false)),
    };
    let text = format!(
        "ca \"/k/ca.crt\"\ncertificate \"/k/server.crt\"\nkey \"/k/server.key\"\nmax clients {MAX_CLIENTS}\n{line}"
    );
    let conf = vpnsyncd_config::parse_str("fuzz", &text, &[]).expect("the fuzz configuration parses");
    let keys = vec![
        (KeyKind::Ca, testpki::CA.to_vec()),
        (KeyKind::Certificate, testpki::SERVER_CRT.to_vec()),
        (KeyKind::Key, testpki::SERVER_KEY.to_vec()),
        (KeyKind::Wrap, testpki::STATIC_KEY.to_vec()),
    ];
    let (session, wrap) = settings::build(&conf, &keys).expect("the test PKI builds");
    Setup { conf, session, wrap, client }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(mode) = input.byte() else { return };
    let (mut server, mut clients) = setup(mode);
    let addrs: Vec<SocketAddr> = CLIENTS.iter().map(|a| a.parse().expect("an address")).collect();
    let start = Instant::now();
    let mut now = Now { mono: start, unix: UNIX0 };
    let mut buf = vec![0u8; 4096];
    let mut out = vec![0u8; 4096];
    while let Some(op) = input.byte() {
        let from = usize::from(op >> 3) % addrs.len();
        match op & 7 {
            // A datagram as it came.
            0 | 1 => {
                let Some(d) = input.bytes(2048) else { break };
                buf[..d.len()].copy_from_slice(d);
                let _ = server.on_datagram(now, 0, addrs[from], &mut buf[..d.len()]);
            }
            // A control packet the client side wrapped: first byte, session id, body.
            2 | 3 => {
                let (Some(first), Some(sid), Some(body)) = (input.byte(), input.u16(), input.bytes(2048)) else {
                    break;
                };
                // A few session ids, so that the fuzzer can repeat one.
                let sid = [u8::try_from(sid % 4).unwrap_or(0), 0, 0, 0, 0, 0, 0, u8::try_from(from).unwrap_or(0)];
                if let Ok(mut p) = clients[from].wrap(first, &sid, body, now.unix as u32) {
                    let _ = server.on_datagram(now, 0, addrs[from], &mut p);
                }
            }
            // A packet from the tun device.
            4 => {
                let Some(p) = input.bytes(2048) else { break };
                let id = server.tun_destination(p);
                if let Some(o) = id.and_then(|id| server.on_tun_packet(now, id, p.len())) {
                    let _ = o.seal(now, &mut out, |b| b.copy_from_slice(p));
                }
            }
            5 => server.on_timer(now),
            // Time passes: up to 655 s, past keepalive and reneg-sec.
            _ => {
                let Some(ms) = input.u16() else { break };
                let step = Duration::from_millis(u64::from(ms) * 10);
                now.mono += step;
                now.unix = UNIX0 + (now.mono - start).as_secs();
                server.on_timer(now);
            }
        }
    }
});
