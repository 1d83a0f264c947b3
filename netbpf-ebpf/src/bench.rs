//! Two XDP programs for `cargo xtask bench` only; the daemon never loads
//! or attaches them.
//!
//! * [`floor`]: the router bench's *floor* variant. Every IPv4 frame that
//!   enters the router is given the next hop's MACs and redirected to the
//!   egress device, with nothing else done (no lookup, no TTL, no
//!   checksum). What the lab costs per packet with this program is the
//!   least any datapath can cost on it; the other variants are measured
//!   against it (issue 16's targets).
//! * [`transmit`]: the saturation generator. Run through
//!   `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`, it sends the
//!   test frame out of the generator's interface as fast as the kernel can
//!   build frames, far faster than trafgen's `sendto`.

use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_TX},
    helpers::bpf_redirect,
    programs::XdpContext,
};

use crate::maps::BENCH_HOPS;

/// EtherType of IPv4, as on the wire.
const ETH_P_IP: [u8; 2] = [0x08, 0x00];

/// Rewrites the MACs of an IPv4 frame to those of its ingress interface's
/// entry in [`BENCH_HOPS`] and redirects it to that entry's interface;
/// anything else (ARP, an interface with no entry) passes to the stack.
#[inline(always)]
pub(crate) fn floor(ctx: &XdpContext) -> u32 {
    let ingress = ctx.ingress_ifindex() as u32;
    // SAFETY: the value is only read, and the map's entries are not removed
    // while the bench runs.
    let Some(hop) = (unsafe { BENCH_HOPS.get(&ingress) }) else {
        return XDP_PASS;
    };
    let (start, end) = (ctx.data(), ctx.data_end());
    if hop.ifindex == 0 || start + 14 > end {
        return XDP_PASS;
    }
    // SAFETY: the 14 bytes of the Ethernet header are checked above to lie
    // within the frame, which an XDP program may read and write.
    unsafe {
        if core::ptr::read_unaligned((start + 12) as *const [u8; 2]) != ETH_P_IP {
            return XDP_PASS;
        }
        core::ptr::write_unaligned(start as *mut [u8; 6], hop.dst_mac);
        core::ptr::write_unaligned((start + 6) as *mut [u8; 6], hop.src_mac);
    }
    // SAFETY: plain helper call; flags 0 = the device's transmit.
    unsafe { bpf_redirect(hop.ifindex, 0) as u32 }
}

/// Sends the frame back out of the interface it is run on.
#[inline(always)]
pub(crate) fn transmit() -> u32 {
    XDP_TX
}
