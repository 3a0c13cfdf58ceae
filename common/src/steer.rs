//! Which data thread serves a session (`data-threads`): the one its
//! peer-id names. The engine sends a session's data packets from that
//! thread only, so they leave in packet-id order (engine/src/shard.rs);
//! the parent attaches [`reuseport_program`] to the listeners, so Linux
//! hands that thread the session's datagrams too, wherever the client's
//! address floats.
//!
//! Peer-ids come in the residue classes of the cluster's members
//! (`peer-id = member - 1 + k * MAX_MEMBERS`), so the thread is `k` modulo
//! the threads, not the peer-id itself: every member spreads its own
//! sessions over all its threads.

use vpnsyncd_config::MAX_MEMBERS;

/// The P_DATA_V2 opcode (the first byte's upper five bits), which carries
/// the peer-id in the next three bytes.
pub const DATA_V2: u8 = 9;

/// The thread of `threads` that serves peer-id `peer_id`.
pub fn shard_of(peer_id: u32, threads: usize) -> usize {
    if threads <= 1 {
        return 0;
    }
    ((peer_id / u32::from(MAX_MEMBERS)) as usize) % threads
}

/// One classic BPF instruction: code, jump if true, jump if false, k.
pub type Insn = (u16, u8, u8, u32);

// From <linux/filter.h> (classic BPF), the same on every Linux: class
// (BPF_LD 0x00, BPF_ALU 0x04, BPF_JMP 0x05, BPF_RET 0x06) | size or
// operation | source.
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const LD_B_ABS: u16 = BPF_LD | 0x10 | 0x20;
const LD_W_ABS: u16 = BPF_LD | 0x20;
const ALU_RSH_K: u16 = BPF_ALU | 0x70;
const ALU_AND_K: u16 = BPF_ALU | 0x50;
const ALU_DIV_K: u16 = BPF_ALU | 0x30;
const ALU_MOD_K: u16 = BPF_ALU | 0x90;
const JEQ_K: u16 = BPF_JMP | 0x10;
const RET_A: u16 = BPF_RET | 0x10;
const RET_K: u16 = BPF_RET;

/// The SO_ATTACH_REUSEPORT_CBPF program of a listen address shared by
/// `threads` sockets (bound thread by thread, so a socket's index in the
/// group is its thread). It runs on the UDP payload: a P_DATA_V2 datagram
/// goes to [`shard_of`] its peer-id; anything else (the control channel,
/// P_DATA_V1 of clients without a peer-id, a datagram too short to read)
/// to thread 0, the main thread, which holds the control channel anyway.
pub fn reuseport_program(threads: usize) -> Vec<Insn> {
    vec![
        (LD_B_ABS, 0, 0, 0),
        (ALU_RSH_K, 0, 0, 3),
        // Not P_DATA_V2: to the last instruction.
        (JEQ_K, 0, 5, u32::from(DATA_V2)),
        // A short datagram ends the program here, returning 0.
        (LD_W_ABS, 0, 0, 0),
        (ALU_AND_K, 0, 0, 0x00ff_ffff),
        (ALU_DIV_K, 0, 0, u32::from(MAX_MEMBERS)),
        (ALU_MOD_K, 0, 0, threads.max(1) as u32),
        (RET_A, 0, 0, 0),
        (RET_K, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program's instructions the way the kernel does, on `p`.
    fn run(prog: &[Insn], p: &[u8]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let (code, jt, jf, k) = prog[pc];
            pc += 1;
            match code {
                LD_B_ABS => match p.get(k as usize) {
                    Some(&b) => a = u32::from(b),
                    None => return 0,
                },
                LD_W_ABS => match p.get(k as usize..k as usize + 4) {
                    Some(w) => a = u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
                    None => return 0,
                },
                ALU_RSH_K => a >>= k,
                ALU_AND_K => a &= k,
                ALU_DIV_K => a /= k,
                ALU_MOD_K => a %= k,
                JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                RET_A => return a,
                RET_K => return k,
                _ => panic!("instruction {code:#x}"),
            }
        }
    }

    fn data_v2(peer_id: u32) -> Vec<u8> {
        let mut p = vec![DATA_V2 << 3 | 1];
        p.extend_from_slice(&peer_id.to_be_bytes()[1..]);
        p.extend_from_slice(&[0xaa; 20]);
        p
    }

    #[test]
    fn the_program_picks_the_thread_of_the_peer_id() {
        for threads in [1, 2, 3, 4, 64] {
            let prog = reuseport_program(threads);
            for peer_id in (0..2000).chain([0xff_fffe, 0xff_ffff]) {
                assert_eq!(run(&prog, &data_v2(peer_id)) as usize, shard_of(peer_id, threads), "{threads} {peer_id}");
            }
        }
    }

    #[test]
    fn everything_else_goes_to_the_main_thread() {
        let prog = reuseport_program(4);
        // P_CONTROL_HARD_RESET_CLIENT_V2, P_DATA_V1, P_ACK_V1 with an
        // odd key id, a short DATA_V2, an empty datagram.
        for p in [&[7u8 << 3, 1, 2, 3, 4][..], &[6 << 3 | 2, 0, 0, 9, 9], &[5 << 3 | 7, 1], &[DATA_V2 << 3, 0, 9], &[]]
        {
            assert_eq!(run(&prog, p), 0, "{p:?}");
        }
    }

    #[test]
    fn each_member_spreads_its_sessions_over_every_thread() {
        for member in 0..u32::from(MAX_MEMBERS) {
            let ids = (0..8).map(|k| member + k * u32::from(MAX_MEMBERS));
            let mut seen: Vec<usize> = ids.map(|id| shard_of(id, 4)).collect();
            seen.sort_unstable();
            assert_eq!(seen, [0, 0, 1, 1, 2, 2, 3, 3], "member {member}");
        }
    }
}
