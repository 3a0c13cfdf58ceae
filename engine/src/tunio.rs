//! The tun side of the data path. A tun opened with a virtio_net_hdr
//! (FdKind::TunVnet, Linux) reads TSO/USO super-packets, split here into
//! plain packets as they are written into the datagrams that carry them,
//! and takes coalesced TCP super-packets of each receive batch, written
//! from where they were decrypted (crate::offload); a plain tun (OpenBSD,
//! or a kernel that refused the header) moves one packet per read and write.

use std::io;
use std::io::IoSlice;
use std::os::fd::BorrowedFd;

use crate::batch::MAX_DATAGRAM;
use crate::offload::{self, Piece, VnetHdr, MAX_PARTS, VNET_HDR_LEN};

/// The largest read: a header and an IPv6 super-packet (40-byte header and
/// a 64 KB payload).
const READ_MAX: usize = VNET_HDR_LEN + 40 + 65535;

/// The read buffer of the tun side; allocated once.
pub struct TunIo {
    vnet: bool,
    rbuf: Vec<u8>,
}

impl TunIo {
    pub fn new(vnet: bool) -> Self {
        let rbuf = vec![0; if vnet { READ_MAX } else { MAX_DATAGRAM }];
        TunIo { vnet, rbuf }
    }

    /// Reads one packet or super-packet and hands every plain IP packet in
    /// it to `each`, to be written where it is sent from. A segment that
    /// would not fit a datagram is refused. `Ok(false)`: nothing was waiting.
    pub fn read(&mut self, tun: BorrowedFd<'_>, each: &mut dyn FnMut(&Piece)) -> io::Result<bool> {
        let n = match nix::unistd::read(tun, &mut self.rbuf) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => return Ok(false),
            Ok(n) => n,
            Err(e) => return Err(e.into()),
        };
        if !self.vnet {
            each(&Piece::whole(&self.rbuf[..n]));
            return Ok(true);
        }
        let (hdr, pkt) = self.rbuf[..n].split_at_mut(VNET_HDR_LEN.min(n));
        let res = VnetHdr::decode(hdr).and_then(|h| offload::segment(&h, pkt, MAX_DATAGRAM, each));
        if let Err(e) = res {
            log::debug!("tun read: {e}; {n} bytes dropped");
        }
        Ok(true)
    }

    /// Writes the decrypted packets of one receive batch to the tun: one
    /// write each on a plain tun, else TCP segments coalesced
    /// ([`offload::coalesce`]). Returns how many TCP data segments the
    /// coalescer held (crate::moderate).
    pub fn write_batch<'a>(&mut self, tun: BorrowedFd<'_>, pkts: impl IntoIterator<Item = &'a [u8]>) -> usize {
        if !self.vnet {
            for pkt in pkts {
                if let Err(e) = nix::unistd::write(tun, pkt) {
                    log::debug!("tun write: {e}");
                }
            }
            return 0;
        }
        offload::coalesce(pkts, &mut |h, parts| write_vnet(tun, h, parts))
    }
}

/// One tun write of a header and its packet's parts, with no copy (writev).
fn write_vnet(tun: BorrowedFd<'_>, h: &VnetHdr, parts: &[&[u8]]) {
    let hdr = h.encode();
    let mut iov = [IoSlice::new(&[]); MAX_PARTS + 3];
    iov[0] = IoSlice::new(&hdr);
    let n = 1 + parts.len().min(MAX_PARTS + 2);
    for (v, p) in iov[1..n].iter_mut().zip(parts) {
        *v = IoSlice::new(p);
    }
    if let Err(e) = nix::sys::uio::writev(tun, &iov[..n]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        log::debug!("tun write ({len} bytes, gso {}): {e}", h.gso_type);
    }
}
