//! The tun side of the data path. A tun opened with a virtio_net_hdr
//! (FdKind::TunVnet, Linux) reads TSO/USO super-packets, split here into
//! plain packets before encryption, and takes coalesced TCP super-packets
//! of each receive batch (crate::offload); a plain tun (OpenBSD, or a
//! kernel that refused the header) moves one packet per read and write.

use std::io;
use std::io::IoSlice;
use std::os::fd::BorrowedFd;

use crate::batch::MAX_DATAGRAM;
use crate::offload::{self, Coalescer, VnetHdr, VNET_HDR_LEN};

/// The largest read: a header and an IPv6 super-packet (40-byte header and
/// a 64 KB payload).
const READ_MAX: usize = VNET_HDR_LEN + 40 + 65535;

/// Buffers and state of the tun side; allocated once.
pub struct TunIo {
    vnet: bool,
    rbuf: Vec<u8>,
    /// One segment of a super-packet at a time.
    scratch: Vec<u8>,
    gro: Coalescer,
}

impl TunIo {
    pub fn new(vnet: bool) -> Self {
        let rbuf = vec![0; if vnet { READ_MAX } else { MAX_DATAGRAM }];
        TunIo { vnet, rbuf, scratch: vec![0; MAX_DATAGRAM], gro: Coalescer::new() }
    }

    /// Reads one packet or super-packet and hands every plain IP packet in
    /// it to `each`. `Ok(false)`: nothing was waiting.
    pub fn read(&mut self, tun: BorrowedFd<'_>, each: &mut dyn FnMut(&[u8])) -> io::Result<bool> {
        let n = match nix::unistd::read(tun, &mut self.rbuf) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => return Ok(false),
            Ok(n) => n,
            Err(e) => return Err(e.into()),
        };
        if !self.vnet {
            each(&self.rbuf[..n]);
            return Ok(true);
        }
        let (hdr, pkt) = self.rbuf[..n].split_at_mut(VNET_HDR_LEN.min(n));
        let res = VnetHdr::decode(hdr).and_then(|h| offload::segment(&h, pkt, &mut self.scratch, each));
        if let Err(e) = res {
            log::debug!("tun read: {e}; {n} bytes dropped");
        }
        Ok(true)
    }

    /// Takes one decrypted packet of a receive batch for the tun: written
    /// at once on a plain tun, else possibly held to be coalesced until
    /// [`TunIo::flush`]. True when it was held (a TCP data segment).
    pub fn write(&mut self, tun: BorrowedFd<'_>, pkt: &[u8]) -> bool {
        if !self.vnet {
            if let Err(e) = nix::unistd::write(tun, pkt) {
                log::debug!("tun write: {e}");
            }
            return false;
        }
        self.gro.push(pkt, &mut |h, p| write_vnet(tun, h, p))
    }

    /// Writes what the batch left held; call once per receive batch.
    pub fn flush(&mut self, tun: BorrowedFd<'_>) {
        self.gro.flush(&mut |h, p| write_vnet(tun, h, p));
    }
}

/// One tun write of a header and its packet, with no copy (writev).
fn write_vnet(tun: BorrowedFd<'_>, h: &VnetHdr, pkt: &[u8]) {
    let hdr = h.encode();
    if let Err(e) = nix::sys::uio::writev(tun, &[IoSlice::new(&hdr), IoSlice::new(pkt)]) {
        log::debug!("tun write ({} bytes, gso {}): {e}", pkt.len(), h.gso_type);
    }
}
