//! Per-container-IP routing for IPv6, the Calico way: the IPv6 side of
//! `crate::route`, with the same decisions.
//!
//! * [`inbound`] (tc ingress of the uplink): an IPv6 packet addressed (MAC
//!   and IP) to a container in `CONTAINERS6` gets the container's MAC as
//!   destination, the host veth's MAC as source, its hop limit decremented
//!   and is redirected to the veth. Its source must be one a router
//!   forwards (not unspecified, loopback, multicast, link-local or
//!   IPv4-mapped) and not a routed container of this host (else
//!   `drop_spoofed_from_outside`).
//! * [`container`] (tc ingress of a container's veth with an IPv6 address
//!   in `CONTAINER_IFS6`): the source must be the container's IPv6
//!   address, or link-local or unspecified (NDP, router solicitations,
//!   which never leave the link), else `drop_spoofed`. Solicitations are
//!   answered ([`crate::ndp`]); other link-local traffic is the kernel's.
//!   To another routed container a packet is forwarded like [`inbound`]
//!   does; otherwise `bpf_fib_lookup` (`AF_INET6`) picks the next hop, and
//!   if that is on the uplink and in `NEIGHBOURS6`, the packet is rewritten
//!   and redirected to the uplink.
//!
//! What the fast path cannot finish goes to the kernel unchanged, counted
//! as for IPv4: hop limit 1 or 0 (`route_ttl_expired`: the kernel sends
//! Time Exceeded), a next hop `NEIGHBOURS6` does not know yet
//! (`route_no_neighbour`), a packet larger than the egress MTU
//! (`route_mtu_exceeded`: the kernel sends Packet Too Big), a route not via
//! the uplink, an 802.1Q tag on the uplink. A container without an IPv6
//! address in `CONTAINER_IFS6` has its IPv6 left to the kernel, as before.
//!
//! IPv6 has no header checksum: the hop limit is written with
//! `BPF_F_RECOMPUTE_CSUM`, so an skb's `CHECKSUM_COMPLETE` sum follows it.

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_F_RECOMPUTE_CSUM, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH, bpf_fib_lookup,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    programs::TcContext,
};
use netbpf_common::{
    Counter, NEXT_HDR_ICMPV6, forwardable_source6, is_link_local6, is_multicast6, is_unspecified6,
};

use crate::{
    Verdict, fib,
    maps::{CONTAINER_IFS6, CONTAINERS6, NEIGHBOURS6, ROUTE_UPLINK},
    ndp,
    parse6::{self, IPV6_HDR_LEN, IPV6_HOP_LIMIT, Packet6},
    stats,
};

/// `AF_INET6` for `bpf_fib_lookup`.
const AF_INET6: u8 = 10;

/// tc ingress of the uplink, for an IPv6 frame sent to `eth_dst`: forward
/// packets for routed containers. A BPF function of its own: the IPv4
/// path's stack is the entry point's.
#[inline(never)]
pub(crate) fn inbound(ctx: &TcContext, eth_dst: [u8; 6]) -> Result<Verdict, Counter> {
    let Some(up) = ROUTE_UPLINK.get(0) else {
        return Ok(Verdict::Pass);
    };
    // Only frames sent to this host, untagged.
    if eth_dst != up.mac || fib::skb_vlan_present(ctx) {
        return Ok(Verdict::Pass);
    }
    let mut pkt = Packet6::EMPTY;
    if !parse6::parse_ipv6_tc(ctx, &mut pkt)? {
        return Ok(Verdict::Pass);
    }
    let Some(c) = CONTAINERS6.get_ptr(&pkt.dst) else {
        return Ok(Verdict::Pass);
    };
    // SAFETY: map value pointer, valid for this run.
    let c = unsafe { &*c };
    if c.mac == [0; 6] {
        return Ok(Verdict::Pass);
    }
    if !forwardable_source6(&pkt.src) || CONTAINERS6.get_ptr(&pkt.src).is_some() {
        return Err(Counter::DropSpoofedFromOutside);
    }
    forward(ctx, &pkt, c.ifindex, &c.mac, &c.host_mac, Counter::RoutedIn)
}

/// tc ingress of a routed container's veth (`ifindex`), for an IPv6 frame
/// sent to `eth_dst`: anti-spoofing, then NDP ([`ndp::from_container`]) or
/// forwarding ([`outbound`]). Inlined into the entry point, so that each
/// of the two (BPF functions of their own) adds only its own stack to it.
#[inline(always)]
pub(crate) fn container(
    ctx: &TcContext,
    ifindex: u32,
    eth_dst: [u8; 6],
) -> Result<Verdict, Counter> {
    // SAFETY: the value is copied out at once.
    let Some(cif) = (unsafe { CONTAINER_IFS6.get(&ifindex) }).copied() else {
        return Ok(Verdict::Pass);
    };
    let mut pkt = Packet6::EMPTY;
    if !parse6::parse_ipv6_tc(ctx, &mut pkt)? {
        return Ok(Verdict::Pass);
    }
    let own = pkt.src == cif.addr;
    if !own && !is_link_local6(&pkt.src) && !is_unspecified6(&pkt.src) {
        return Err(Counter::DropSpoofed);
    }
    if pkt.next_hdr == NEXT_HDR_ICMPV6 {
        match ndp::from_container(ctx, &pkt, &cif, ifindex) {
            Ok(Verdict::Pass) => {}
            done => return done,
        }
    }
    // Link-local traffic, multicast and frames for other MACs: the
    // kernel's.
    if !own || eth_dst != cif.host_mac || is_multicast6(&pkt.dst) {
        return Ok(Verdict::Pass);
    }
    outbound(ctx, &pkt)
}

/// A packet from a routed container's own IPv6 address to a unicast
/// destination, sent to the veth's MAC: to another routed container, or
/// to its next hop on the uplink. A BPF function of its own (see
/// [`container`]).
#[inline(never)]
fn outbound(ctx: &TcContext, pkt: &Packet6) -> Result<Verdict, Counter> {
    if let Some(c) = CONTAINERS6.get_ptr(&pkt.dst) {
        // SAFETY: map value pointer, valid for this run.
        let c = unsafe { &*c };
        if c.mac == [0; 6] {
            return Ok(Verdict::Pass);
        }
        return forward(
            ctx,
            pkt,
            c.ifindex,
            &c.mac,
            &c.host_mac,
            Counter::RoutedLocal,
        );
    }
    let Some(up) = ROUTE_UPLINK.get(0) else {
        return Ok(Verdict::Pass);
    };
    if up.ifindex == 0 {
        return Ok(Verdict::Pass);
    }
    let Some(next_hop) = next_hop_via(ctx, pkt, up.ifindex) else {
        return Ok(Verdict::Pass);
    };
    let Some(n) = NEIGHBOURS6.get_ptr(&next_hop) else {
        stats::inc(Counter::RouteNoNeighbour);
        return Ok(Verdict::Pass);
    };
    // SAFETY: map value pointer, valid for this run.
    let n = unsafe { &*n };
    forward(ctx, pkt, up.ifindex, &n.mac, &up.mac, Counter::RoutedOut)
}

/// The next hop of `pkt` if the kernel's FIB sends it out of `uplink`
/// (`bpf_fib_lookup` with `AF_INET6` also checks that forwarding is on
/// and the MTU); every other answer is `None`, for the kernel.
#[inline(always)]
fn next_hop_via(ctx: &TcContext, pkt: &Packet6, uplink: u32) -> Option<[u8; 16]> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid "nothing set" request.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET6;
    params.l4_protocol = pkt.next_hdr;
    params.ifindex = fib::skb_ifindex(ctx);
    params.__bindgen_anon_1.tot_len = (IPV6_HDR_LEN + pkt.payload_len) as u16;
    params.__bindgen_anon_3.ipv6_src = words(&pkt.src);
    params.__bindgen_anon_4.ipv6_dst = words(&pkt.dst);
    // SAFETY: params is a properly sized, initialised bpf_fib_lookup.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 || params.ifindex != uplink {
        return None;
    }
    // On success the kernel has replaced the destination with the next
    // hop (the gateway, or the destination itself when on-link).
    // SAFETY: plain integer array union field.
    let w = unsafe { params.__bindgen_anon_4.ipv6_dst };
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        out[4 * i..4 * i + 4].copy_from_slice(&w[i].to_ne_bytes());
        i += 1;
    }
    Some(out)
}

/// An address as the FIB's four network-order words.
#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// Routes `pkt` one hop: hop limit minus one (1 or 0 goes to the kernel,
/// which sends Time Exceeded), `dst_mac` and `src_mac` as Ethernet
/// addresses (written from where they are kept: map values), redirect to
/// `ifindex`'s egress.
#[inline(always)]
fn forward(
    ctx: &TcContext,
    pkt: &Packet6,
    ifindex: u32,
    dst_mac: &[u8; 6],
    src_mac: &[u8; 6],
    counter: Counter,
) -> Result<Verdict, Counter> {
    if pkt.hop_limit <= 1 {
        stats::inc(Counter::RouteTtlExpired);
        return Ok(Verdict::Pass);
    }
    // Too big for the egress device: the kernel sends Packet Too Big (a
    // redirect would drop it silently).
    if !fib::fits_mtu(ctx, ifindex) {
        stats::inc(Counter::RouteMtuExceeded);
        return Ok(Verdict::Pass);
    }
    let fail = |_| Counter::DropRewriteFailed;
    ctx.store(
        pkt.l3_off + IPV6_HOP_LIMIT,
        &[pkt.hop_limit - 1],
        BPF_F_RECOMPUTE_CSUM as u64,
    )
    .map_err(fail)?;
    ctx.store(0, dst_mac, 0).map_err(fail)?;
    ctx.store(6, src_mac, 0).map_err(fail)?;
    stats::inc(counter);
    // SAFETY: plain helper call; flags 0 = the device's egress.
    let rc = unsafe { bpf_redirect(ifindex, 0) };
    Ok(Verdict::Redirect(rc as i32))
}
