//! Per-container-IP routing, the Calico way: packets for a routed container
//! go straight from the uplink to its veth, and packets from it go straight
//! to the next hop, with no trip through the kernel's routing and netfilter.
//!
//! * [`inbound`] (tc ingress of the uplink): an IPv4 packet addressed (MAC
//!   and IP) to a container in `CONTAINERS` gets the container's MAC as
//!   destination, the host veth's MAC as source, its TTL decremented and
//!   is redirected to the veth's egress, which delivers it to the container.
//!   Its source must be one that can come from outside: not the host's,
//!   not a routed container of this host, not behind the NAT, not
//!   loopback, unspecified, multicast or broadcast (else
//!   `drop_spoofed_from_outside`).
//! * [`container`] (tc ingress of a container's veth): ARP is answered
//!   ([`crate::arp`]); an IPv4 packet must come from the container's own
//!   address (else `drop_spoofed`). To another routed container it is
//!   forwarded like [`inbound`] does; otherwise `bpf_fib_lookup` picks the
//!   next hop, and if that is on the uplink and in `NEIGHBOURS`, the packet
//!   is rewritten and redirected to the uplink's egress (where the NAT
//!   program still sees it, and passes it: routed addresses are never in a
//!   masquerade CIDR).
//!
//! Anything the fast path cannot finish goes to the kernel unchanged
//! (`TC_ACT_UNSPEC`): TTL 1 or 0 (the kernel sends time exceeded), a next
//! hop the neighbour map does not know yet (the kernel resolves it and the
//! daemon copies the result into the map), a route not via the uplink,
//! a packet larger than the egress device's MTU (`route_mtu_exceeded`:
//! the kernel fragments it or answers "fragmentation needed"), forwarding
//! disabled, an 802.1Q-tagged frame on the uplink. A tagged frame from a
//! container is dropped (`drop_vlan_tagged`): a redirect would carry the
//! tag onto the uplink.
//!
//! Why tc and not XDP for the IPv4 paths: an `XDP_REDIRECT` into a veth
//! only delivers when the container-side peer has NAPI enabled (an XDP
//! program or GRO on an interface inside the container, which netbpf does
//! not own) and silently drops otherwise; frames from a container carry
//! `CHECKSUM_PARTIAL` skb state that only the tc helpers keep right. tc's
//! `bpf_redirect` works for every veth and keeps the skb's metadata.

use aya_ebpf::{bindings::BPF_FIB_LKUP_RET_SUCCESS, programs::TcContext};
use netbpf_common::{ContainerEntry, ContainerIf, Counter};

use crate::{
    Verdict, arp, fib,
    hop::{self, Hop},
    maps::{CONTAINER_IFS, CONTAINERS, LOCAL_ADDRS, NEIGHBOURS, ROUTE_UPLINK},
    parse::{self, Packet},
    rules::masquerade_source,
    stats,
};

/// EtherType of IPv4, as on the wire.
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
/// tc ingress of the uplink: forward packets for routed containers.
#[inline(always)]
pub(crate) fn inbound(ctx: &TcContext) -> Result<Verdict, Counter> {
    let Some(peek) = parse::peek(ctx) else {
        return Ok(Verdict::Pass);
    };
    if peek.ether_type == parse::ETH_P_IPV6 {
        return crate::route6::inbound(ctx, peek.eth_dst);
    }
    if peek.ether_type != ETH_P_IP {
        return Ok(Verdict::Pass);
    }
    // SAFETY: the value is copied out at once.
    let Some(c) = (unsafe { CONTAINERS.get(&peek.ip_dst) }).copied() else {
        return Ok(Verdict::Pass);
    };
    let Some(up) = ROUTE_UPLINK.get(0).copied() else {
        return Ok(Verdict::Pass);
    };
    // Only frames sent to this host (not broadcast, not another host's
    // seen in promiscuous mode), and only once the container's MAC is known.
    if peek.eth_dst != up.mac || c.mac == [0; 6] {
        return Ok(Verdict::Pass);
    }
    // A tagged frame belongs to a VLAN device; redirecting would hand the
    // tag to the container.
    if fib::skb_vlan_present(ctx) {
        return Ok(Verdict::Pass);
    }
    let Some(pkt) = parse::parse_tc(ctx)? else {
        return Ok(Verdict::Pass);
    };
    if !plausible_outside_source(pkt.src) {
        return Err(Counter::DropSpoofedFromOutside);
    }
    forward(ctx, &pkt, hop_to(&c), Counter::RoutedIn)
}

/// tc ingress of a routed container's veth: ARP, anti-spoofing, outbound
/// forwarding.
#[inline(always)]
pub(crate) fn container(ctx: &TcContext) -> Result<Verdict, Counter> {
    let ifindex = fib::skb_ifindex(ctx);
    // SAFETY: the value is copied out at once.
    let Some(cif) = (unsafe { CONTAINER_IFS.get(&ifindex) }).copied() else {
        return Ok(Verdict::Pass);
    };
    let Some(eth) = parse::peek(ctx) else {
        return Ok(Verdict::Pass);
    };
    // The kernel has moved an 802.1Q tag into the skb's metadata, and a
    // redirect would carry it onto the uplink (a trunk, perhaps).
    if fib::skb_vlan_present(ctx) {
        return Err(Counter::DropVlanTagged);
    }
    let ether_type = eth.ether_type;
    if ether_type == arp::ETH_P_ARP {
        return arp::from_container(ctx, &cif, ifindex);
    }
    if ether_type == parse::ETH_P_IPV6 {
        return crate::route6::container(ctx, ifindex, eth.eth_dst);
    }
    if ether_type != ETH_P_IP {
        // The rest: not routed by netbpf; the kernel decides.
        return Ok(Verdict::Pass);
    }
    let Some(pkt) = parse::parse_tc(ctx)? else {
        return Ok(Verdict::Pass);
    };
    outbound(ctx, &pkt, &cif, eth.eth_dst)
}

/// Whether `src` can be the source of a packet arriving on the uplink for a
/// routed container: not unspecified, loopback, multicast or broadcast
/// (RFC 1122 §3.2.1.3), not one of the host's own addresses, not another
/// routed container of this host, not behind the NAT.
#[inline(always)]
fn plausible_outside_source(src: [u8; 4]) -> bool {
    if src[0] == 0 || src[0] == 127 || src[0] >= 224 {
        return false;
    }
    LOCAL_ADDRS.get_ptr(&src).is_none()
        && CONTAINERS.get_ptr(&src).is_none()
        && !masquerade_source(src)
}

/// An IPv4 packet from a routed container.
#[inline(always)]
fn outbound(
    ctx: &TcContext,
    pkt: &Packet,
    cif: &ContainerIf,
    eth_dst: [u8; 6],
) -> Result<Verdict, Counter> {
    if pkt.src != cif.addr {
        return Err(Counter::DropSpoofed);
    }
    // Broadcast and multicast (DHCP, mDNS, ...) are the kernel's.
    if eth_dst != cif.host_mac {
        return Ok(Verdict::Pass);
    }
    // SAFETY: the value is copied out at once.
    if let Some(c) = (unsafe { CONTAINERS.get(&pkt.dst) }).copied() {
        if c.mac == [0; 6] {
            return Ok(Verdict::Pass);
        }
        return forward(ctx, pkt, hop_to(&c), Counter::RoutedLocal);
    }
    let Some(up) = ROUTE_UPLINK.get(0).copied() else {
        return Ok(Verdict::Pass);
    };
    if up.ifindex == 0 {
        return Ok(Verdict::Pass);
    }
    let Some(next_hop) = next_hop_via(ctx, pkt, up.ifindex) else {
        return Ok(Verdict::Pass);
    };
    // SAFETY: the value is copied out at once.
    let Some(n) = (unsafe { NEIGHBOURS.get(&next_hop) }).copied() else {
        stats::inc(Counter::RouteNoNeighbour);
        return Ok(Verdict::Pass);
    };
    forward(
        ctx,
        pkt,
        Hop {
            ifindex: up.ifindex,
            dst_mac: n.mac,
            src_mac: up.mac,
        },
        Counter::RoutedOut,
    )
}

/// The next hop of `pkt` if the kernel's FIB sends it out of `uplink`
/// (`bpf_fib_lookup` also checks that forwarding is enabled on the input
/// interface and that the packet fits the output MTU). Every other result
/// — local delivery, another interface, blackhole/unreachable/prohibit,
/// fragmentation needed, forwarding disabled, unsupported — is `None`:
/// the kernel handles it.
#[inline(always)]
fn next_hop_via(ctx: &TcContext, pkt: &Packet, uplink: u32) -> Option<[u8; 4]> {
    let (rc, params) = fib::lookup(ctx, pkt, pkt.dst);
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 || params.ifindex != uplink {
        return None;
    }
    // On success the kernel has replaced the destination with the next hop
    // (the gateway, or the destination itself when it is on-link).
    // SAFETY: plain integer union field.
    Some(unsafe { params.__bindgen_anon_4.ipv4_dst }.to_ne_bytes())
}

/// The hop to a routed container: its veth, its MAC, the veth's MAC.
#[inline(always)]
fn hop_to(c: &ContainerEntry) -> Hop {
    Hop {
        ifindex: c.ifindex,
        dst_mac: c.mac,
        src_mac: c.host_mac,
    }
}

/// Routes `pkt` one hop: TTL minus one (TTL <= 1 goes to the kernel, which
/// sends time exceeded), new Ethernet addresses, redirect to `ifindex`'s
/// egress.
#[inline(always)]
fn forward(ctx: &TcContext, pkt: &Packet, hop: Hop, counter: Counter) -> Result<Verdict, Counter> {
    let Some(ttl) = crate::rewrite::forwardable_ttl(ctx, pkt)? else {
        stats::inc(Counter::RouteTtlExpired);
        return Ok(Verdict::Pass);
    };
    // Too big for the egress device: the kernel fragments it or sends
    // "fragmentation needed" (a redirect would drop it silently).
    if !fib::fits_mtu(ctx, hop.ifindex) {
        stats::inc(Counter::RouteMtuExceeded);
        return Ok(Verdict::Pass);
    }
    hop::send(ctx, pkt, ttl, &hop, counter)
}
