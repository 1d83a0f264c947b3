//! What the tc programs ask of the skb and of the kernel's FIB.

use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH,
        bpf_fib_lookup,
    },
    helpers::{bpf_check_mtu, bpf_fib_lookup as fib_lookup, bpf_redirect_neigh},
    programs::{TcContext, XdpContext},
};
use netbpf_common::Counter;

use crate::{Verdict, parse::Packet};

/// `AF_INET` for `bpf_fib_lookup`.
const AF_INET: u8 = 2;

/// A context `bpf_fib_lookup` takes: a tc program's skb or an XDP
/// program's frame.
pub(crate) trait FibCtx: EbpfContext {
    /// The interface the packet arrived on.
    fn ifindex_in(&self) -> u32;
    /// The length the FIB checks against the egress MTU: none for an skb
    /// (the kernel checks the skb itself, each GSO segment), the IP total
    /// length for an XDP frame (one packet, as on the wire).
    fn fib_tot_len(&self, pkt: &Packet) -> u16;
}

impl FibCtx for TcContext {
    #[inline(always)]
    fn ifindex_in(&self) -> u32 {
        skb_ifindex(self)
    }
    #[inline(always)]
    fn fib_tot_len(&self, _pkt: &Packet) -> u16 {
        0
    }
}

impl FibCtx for XdpContext {
    #[inline(always)]
    fn ifindex_in(&self) -> u32 {
        self.ingress_ifindex() as u32
    }
    #[inline(always)]
    fn fib_tot_len(&self, pkt: &Packet) -> u16 {
        pkt.tot_len as u16
    }
}

/// The context of a tc program as the kernel's `__sk_buff`.
#[inline(always)]
pub(crate) fn skb(ctx: &TcContext) -> *mut __sk_buff {
    ctx.as_ptr() as *mut __sk_buff
}

/// The ifindex the skb is on.
#[inline(always)]
pub(crate) fn skb_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context of a tc program is an __sk_buff.
    unsafe { (*skb(ctx)).ifindex }
}

/// The skb's mark.
#[inline(always)]
pub(crate) fn skb_mark(ctx: &TcContext) -> u32 {
    // SAFETY: the context of a tc program is an __sk_buff.
    unsafe { (*skb(ctx)).mark }
}

/// Whether the skb carries an 802.1Q tag in its metadata (the kernel moves
/// the tag there before tc runs, and a redirect keeps it).
#[inline(always)]
pub(crate) fn skb_vlan_present(ctx: &TcContext) -> bool {
    // SAFETY: the context of a tc program is an __sk_buff.
    unsafe { (*skb(ctx)).vlan_present != 0 }
}

/// Whether the skb fits the MTU of `ifindex` (a GSO skb: each segment).
/// Only a definite "too big" answer says no: an error (no such device)
/// is left to the redirect, which fails the same way.
#[inline(always)]
pub(crate) fn fits_mtu(ctx: &TcContext, ifindex: u32) -> bool {
    let mut mtu_len = 0u32;
    // SAFETY: plain helper call on the skb; `mtu_len` is a valid out
    // parameter (0 = check the skb's own length).
    let rc = unsafe { bpf_check_mtu(ctx.as_ptr(), ifindex, &mut mtu_len, 0, 0) };
    rc <= 0
}

/// Asks the kernel's FIB where `pkt`, arriving on the skb's interface,
/// would go if its destination were `dst` (no neighbour resolution:
/// `BPF_FIB_LOOKUP_SKIP_NEIGH`). Returns the helper's result code and the
/// answered request (output interface, next hop in `ipv4_dst`).
#[inline(always)]
pub(crate) fn lookup(ctx: &TcContext, pkt: &Packet, dst: [u8; 4]) -> (i64, bpf_fib_lookup) {
    ask(ctx, pkt, dst, pkt.tot_len as u16, BPF_FIB_LOOKUP_SKIP_NEIGH)
}

/// Asks the kernel's FIB for the next hop of `pkt` if its destination were
/// `dst`, neighbour included (the MACs to use on success), and checked
/// against the egress MTU ([`FibCtx::fib_tot_len`]: an skb itself, GSO
/// aware; an XDP frame by its length).
#[inline(always)]
pub(crate) fn route<C: FibCtx>(ctx: &C, pkt: &Packet, dst: [u8; 4]) -> (i64, bpf_fib_lookup) {
    ask(ctx, pkt, dst, ctx.fib_tot_len(pkt), 0)
}

/// One `bpf_fib_lookup` for `pkt` towards `dst` from the interface it
/// arrived on.
#[inline(always)]
fn ask<C: FibCtx>(
    ctx: &C,
    pkt: &Packet,
    dst: [u8; 4],
    tot_len: u16,
    flags: u32,
) -> (i64, bpf_fib_lookup) {
    // SAFETY: an all-zero bpf_fib_lookup is a valid "nothing set" request.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = pkt.proto;
    params.ifindex = ctx.ifindex_in();
    params.__bindgen_anon_1.tot_len = tot_len;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(pkt.src);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    // SAFETY: params is a properly sized, initialised bpf_fib_lookup.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    (rc, params)
}

/// Sends the packet straight to the interface that leads to `dst`, with
/// the kernel filling in the Ethernet addresses (hairpinned packets, and
/// errors netbpf sends back to a container).
#[inline(always)]
pub(crate) fn redirect_to(ctx: &TcContext, pkt: &Packet, dst: [u8; 4]) -> Result<Verdict, Counter> {
    let ifindex = egress_for(ctx, pkt, dst).ok_or(Counter::DropHairpinNoRoute)?;
    redirect_neigh(ifindex).ok_or(Counter::DropHairpinNoRoute)
}

/// The interface the kernel's FIB sends `dst` out of, if it has a route
/// (the neighbour may still be unresolved: the redirect resolves it).
#[inline(always)]
pub(crate) fn egress_for(ctx: &TcContext, pkt: &Packet, dst: [u8; 4]) -> Option<u32> {
    let (rc, params) = lookup(ctx, pkt, dst);
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return None;
    }
    Some(params.ifindex)
}

/// Redirects the skb to `ifindex`'s egress, the kernel filling in the
/// Ethernet addresses from the packet's destination.
#[inline(always)]
pub(crate) fn redirect_neigh(ifindex: u32) -> Option<Verdict> {
    // SAFETY: plain helper call; NULL params make the kernel resolve the
    // next hop from the packet's destination.
    let rc = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
    (rc >= 0).then_some(Verdict::Redirect(rc as i32))
}
