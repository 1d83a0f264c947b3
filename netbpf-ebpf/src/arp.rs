//! ARP answered in the datapath for routed containers.
//!
//! Two places need it:
//!
//! * **the uplink** (XDP): a machine on the segment asks who has a routed
//!   container's address; netbpf answers with the uplink's MAC and sends
//!   the reply back out of the same port (`XDP_TX`), before any skb is
//!   made. Requests for any other address pass to the kernel untouched.
//! * **a container's veth** (tc ingress): the container asks for its
//!   gateway (169.254.1.1 with Calico's wiring) or anything else it routes
//!   through the host; netbpf answers with the host-side veth's MAC and
//!   redirects the reply back to the container, so no `proxy_arp` sysctl is
//!   needed.
//!
//! Both build the reply in place in packet memory through one bounds-checked
//! view, [`frame`]; ARP has no checksum, so nothing else changes.

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_TX},
    helpers::bpf_redirect,
    programs::{TcContext, XdpContext},
};
use netbpf_common::{ContainerIf, Counter};

use crate::{
    Verdict,
    maps::{CONTAINERS, ROUTE_UPLINK},
    stats,
};

/// EtherType of ARP, as on the wire.
pub(crate) const ETH_P_ARP: [u8; 2] = [0x08, 0x06];
/// ARP opcode "request", as on the wire.
const OP_REQUEST: [u8; 2] = [0, 1];
/// ARP opcode "reply", as on the wire.
const OP_REPLY: [u8; 2] = [0, 2];

/// An Ethernet frame carrying an ARP packet for IPv4 over Ethernet
/// (RFC 826), as laid out on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ArpFrame {
    /// Ethernet destination.
    pub eth_dst: [u8; 6],
    /// Ethernet source.
    pub eth_src: [u8; 6],
    /// EtherType (ARP).
    pub ether_type: [u8; 2],
    /// Hardware type (1 = Ethernet).
    pub htype: [u8; 2],
    /// Protocol type (0x0800 = IPv4).
    pub ptype: [u8; 2],
    /// Hardware address length (6).
    pub hlen: u8,
    /// Protocol address length (4).
    pub plen: u8,
    /// Opcode.
    pub op: [u8; 2],
    /// Sender hardware address.
    pub sha: [u8; 6],
    /// Sender protocol address.
    pub spa: [u8; 4],
    /// Target hardware address.
    pub tha: [u8; 6],
    /// Target protocol address.
    pub tpa: [u8; 4],
}
const _: () = assert!(size_of::<ArpFrame>() == 42);

impl ArpFrame {
    /// ARP for IPv4 over Ethernet: the only kind netbpf answers.
    #[inline(always)]
    fn is_ipv4_over_ethernet(&self) -> bool {
        self.ether_type == ETH_P_ARP
            && self.htype == [0, 1]
            && self.ptype == [0x08, 0x00]
            && self.hlen == 6
            && self.plen == 4
    }
}

/// The ARP frame at `start`, if the packet `[start, end)` is long enough to
/// hold one (the only bounds check: every field access goes through it).
#[inline(always)]
fn frame(start: usize, end: usize) -> Option<*mut ArpFrame> {
    if start + size_of::<ArpFrame>() > end {
        return None;
    }
    Some(start as *mut ArpFrame)
}

/// Turns the request `req` at `f` into the reply "`req.tpa` is at `mac`",
/// addressed to the requester.
///
/// # Safety
/// `f` must come from [`frame`] on the current packet.
#[inline(always)]
unsafe fn reply_in_place(f: *mut ArpFrame, req: &ArpFrame, mac: [u8; 6]) {
    // SAFETY: `f` points at 42 bounds-checked bytes of packet memory, and
    // every field is a byte array (alignment 1).
    unsafe {
        (*f).eth_dst = req.sha;
        (*f).eth_src = mac;
        (*f).op = OP_REPLY;
        (*f).sha = mac;
        (*f).spa = req.tpa;
        (*f).tha = req.sha;
        (*f).tpa = req.spa;
    }
}

/// XDP on the uplink: answer ARP requests for routed containers; every
/// frame that is not ARP goes to the XDP fast path (`crate::xdp`), other
/// ARP passes. A BPF function of its own, called for every frame that is
/// not IPv6: `crate::ndp::uplink` is the other, and both inlined into
/// `netbpf_arp` would not fit its 512 bytes of stack together.
#[inline(never)]
pub(crate) fn uplink(ctx: &XdpContext) -> u32 {
    let Some(f) = frame(ctx.data(), ctx.data_end()) else {
        // Shorter than an ARP frame: no IPv4 packet XDP takes either.
        return XDP_PASS;
    };
    // SAFETY: bounds checked by `frame`.
    let req = unsafe { *f };
    if req.ether_type != ETH_P_ARP {
        return crate::xdp::inbound(ctx);
    }
    if !req.is_ipv4_over_ethernet() || req.op != OP_REQUEST {
        return XDP_PASS;
    }
    // SAFETY: read-only lookup; the value is not kept.
    if unsafe { CONTAINERS.get(&req.tpa) }.is_none() {
        return XDP_PASS;
    }
    // Someone else announcing a container's address: an address conflict
    // the kernel (and its log) should see, not something to answer.
    if req.spa == req.tpa {
        return XDP_PASS;
    }
    let Some(up) = ROUTE_UPLINK.get(0) else {
        return XDP_PASS;
    };
    if up.ifindex == 0 {
        return XDP_PASS;
    }
    // SAFETY: `f` came from `frame` on this packet.
    unsafe { reply_in_place(f, &req, up.mac) };
    stats::inc(Counter::ArpReplies);
    XDP_TX
}

/// tc ingress on a container's veth, for an ARP frame: answer the
/// container's requests for anything but its own address with the veth's
/// MAC; drop ARP that claims another sender address.
#[inline(always)]
pub(crate) fn from_container(
    ctx: &TcContext,
    cif: &ContainerIf,
    ifindex: u32,
) -> Result<Verdict, Counter> {
    let len = ctx.len();
    if (len as usize) < size_of::<ArpFrame>() {
        // Truncated: the kernel drops it.
        return Ok(Verdict::Pass);
    }
    if frame(ctx.data(), ctx.data_end()).is_none()
        && ctx.pull_data(size_of::<ArpFrame>() as u32).is_err()
    {
        return Ok(Verdict::Pass);
    }
    let Some(f) = frame(ctx.data(), ctx.data_end()) else {
        return Ok(Verdict::Pass);
    };
    // SAFETY: bounds checked by `frame`.
    let req = unsafe { *f };
    if !req.is_ipv4_over_ethernet() {
        return Ok(Verdict::Pass);
    }
    // Anti-spoofing for ARP: a container may only speak for its own
    // address (0.0.0.0 is an RFC 5227 probe).
    if req.spa != cif.addr && req.spa != [0; 4] {
        return Err(Counter::DropSpoofed);
    }
    // Replies, probes and the container's own announcements are the
    // kernel's business.
    if req.op != OP_REQUEST || req.spa == [0; 4] || req.tpa == cif.addr {
        return Ok(Verdict::Pass);
    }
    // SAFETY: `f` came from `frame` on this packet.
    unsafe { reply_in_place(f, &req, cif.host_mac) };
    stats::inc(Counter::ArpReplies);
    // SAFETY: plain helper call; egress of the veth the request came in on
    // is the way back to the container.
    let rc = unsafe { bpf_redirect(ifindex, 0) };
    Ok(Verdict::Redirect(rc as i32))
}
