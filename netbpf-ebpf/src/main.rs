//! netbpf's eBPF programs.
//!
//! Entry points are thin: each one parses the packet once, hands it to the
//! layer that owns the decision, and turns the result into a verdict in one
//! place. Every drop carries a [`Counter`] naming its reason and is counted.
//!
//! | program          | hook               | does                                   |
//! |------------------|--------------------|----------------------------------------|
//! | `netbpf_egress`  | tc (tcx) egress of the uplink  | masquerade (SNAT) outbound |
//! | `netbpf_ingress` | tc (tcx) ingress of the uplink | translate replies back, DNAT; send on what XDP translated (native mode) |
//! | `netbpf_inside`  | tc (tcx) ingress of container-side interfaces | hairpinning |
//! | `netbpf_fast_out` | the same, after `netbpf_inside` | masquerade and straight to the uplink (the fast path) |
//! | `netbpf_icc`     | tc (tcx) ingress of the ports of a Docker bridge with `enable_icc=false` | drops container-to-container packets inside the network |
//! | `netbpf_arp`     | XDP on the uplink | ARP and NDP for routed containers, then established inbound NAT flows straight to the container (the XDP fast path) |
//! | `netbpf_route_in` | tc (tcx) ingress of the uplink | forward to routed containers (IPv4 and IPv6) |
//! | `netbpf_container` | tc (tcx) ingress of routed containers' veths | ARP and NDP, anti-spoofing, forward out (IPv4 and IPv6) |
//! | `netbpf_bench_floor`, `netbpf_bench_tx` | XDP, `cargo xtask bench` only | the router bench's floor and generator |
//! | `netbpf_connect4`, `_sendmsg4`, `_recvmsg4`, `_getpeername4` | cgroup sock_addr hooks | published ports from the host's own sockets |
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    reason = "atomic intrinsics: the BPF target has no AtomicU64 RMW ops"
)]

mod arp;
mod bench;
mod conntrack;
mod csum;
mod fast;
mod fib;
mod fragment;
mod guard;
mod hairpin;
mod handoff;
mod hop;
mod icc;
mod icmp;
mod maps;
mod nat;
mod ndp;
mod parse;
mod parse6;
mod ports;
mod quote;
mod reorder;
mod rewrite;
mod route;
mod route6;
mod rules;
mod sock;
mod stats;
mod tuple;
mod unreach;
mod xdp;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::{cgroup_sock_addr, classifier},
    programs::{SockAddrContext, TcContext},
};
use netbpf_common::Counter;

/// What a layer decided for a packet.
pub(crate) enum Verdict {
    /// Not ours: leave it untouched and let the next program or the stack
    /// have it.
    Pass,
    /// Rewritten: send it on.
    Translated,
    /// Rewritten and redirected; the value is the helper's tc verdict.
    Redirect(i32),
    /// Taken over (held, or sent on as clones): the original is not passed
    /// on, and it is not a drop.
    Consumed,
}

/// Maps a layer's result to a tc verdict and counts drops (and, for the
/// NAT programs, passes: `count_pass`). The routing programs see every
/// packet of the uplink before NAT does, so their "not ours" is not
/// counted as `passed`.
#[inline(always)]
fn tc_verdict_of(result: Result<Verdict, Counter>, count_pass: bool) -> i32 {
    match result {
        Ok(Verdict::Pass) => {
            if count_pass {
                stats::inc(Counter::Passed);
            }
            // TCX_NEXT: other tcx programs (and then the stack) still run.
            TC_ACT_UNSPEC
        }
        Ok(Verdict::Translated) => TC_ACT_OK,
        Ok(Verdict::Redirect(action)) => action,
        Ok(Verdict::Consumed) => TC_ACT_SHOT,
        Err(reason) => {
            stats::inc(reason);
            TC_ACT_SHOT
        }
    }
}

/// [`tc_verdict_of`] for the NAT programs.
#[inline(always)]
fn tc_verdict(result: Result<Verdict, Counter>) -> i32 {
    tc_verdict_of(result, true)
}

/// tc egress on the uplink: masquerade packets from the configured CIDRs.
#[classifier]
pub fn netbpf_egress(ctx: TcContext) -> i32 {
    tc_verdict(parse::parse_tc(&ctx).and_then(|pkt| match pkt {
        Some(pkt) => nat::snat(&ctx, &pkt),
        None => Ok(Verdict::Pass),
    }))
}

/// tc ingress on the uplink: translate replies to masqueraded flows back.
/// A packet the XDP program translated in native mode carries a record of
/// where it goes (`handoff`), read before anything else.
#[classifier]
pub fn netbpf_ingress(ctx: TcContext) -> i32 {
    if let Some(verdict) = handoff::take(&ctx) {
        return verdict;
    }
    // A held fragment netbpf re-injected: already translated.
    if reorder::is_replay(&ctx) {
        return TC_ACT_UNSPEC;
    }
    tc_verdict(parse::parse_tc(&ctx).and_then(|pkt| match pkt {
        Some(pkt) => nat::reverse(&ctx, &pkt),
        None => Ok(Verdict::Pass),
    }))
}

/// tc ingress on the interfaces that lead to containers: hairpinning.
#[classifier]
pub fn netbpf_inside(ctx: TcContext) -> i32 {
    tc_verdict(parse::parse_tc(&ctx).and_then(|pkt| match pkt {
        Some(pkt) => hairpin::inside(&ctx, &pkt),
        None => Ok(Verdict::Pass),
    }))
}

/// tc ingress on the interfaces that lead to containers, after
/// `netbpf_inside` (what it passes): the fast path out, masquerade here and
/// straight to the uplink. A program of its own so that each has the whole
/// stack; its "not ours" was counted as `passed` by `netbpf_inside`.
#[classifier]
pub fn netbpf_fast_out(ctx: TcContext) -> i32 {
    tc_verdict_of(
        parse::parse_tc(&ctx).and_then(|pkt| match pkt {
            Some(pkt) => fast::from_container(&ctx, &pkt),
            None => Ok(Verdict::Pass),
        }),
        false,
    )
}

/// tc ingress on a bridge port (a container's host-side veth) of a network
/// with inter-container communication off: drops what the container sends
/// to the other containers of its subnet, which the bridge would switch
/// without any other program seeing it.
#[classifier]
pub fn netbpf_icc(ctx: TcContext) -> i32 {
    tc_verdict_of(icc::from_port(&ctx), false)
}

/// cgroup connect4: host sockets connecting to a published port.
#[cgroup_sock_addr(connect4)]
pub fn netbpf_connect4(ctx: SockAddrContext) -> i32 {
    sock::redirect(&ctx);
    1 // allow
}

/// cgroup sendmsg4: unconnected UDP from the host to a published port.
#[cgroup_sock_addr(sendmsg4)]
pub fn netbpf_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::redirect(&ctx);
    1
}

/// cgroup recvmsg4: UDP replies show the published address.
#[cgroup_sock_addr(recvmsg4)]
pub fn netbpf_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::restore(&ctx);
    1
}

/// cgroup getpeername4: connected sockets report the published address.
#[cgroup_sock_addr(getpeername4)]
pub fn netbpf_getpeername4(ctx: SockAddrContext) -> i32 {
    sock::restore(&ctx);
    1
}

/// XDP on the uplink: answer ARP (and, for IPv6 frames, Neighbour
/// Solicitations) for routed containers, then send packets
/// of established inbound NAT flows straight to their container; pass the
/// rest.
#[aya_ebpf::macros::xdp]
pub fn netbpf_arp(ctx: aya_ebpf::programs::XdpContext) -> u32 {
    if parse6::is_ipv6_xdp(&ctx) {
        return ndp::uplink(&ctx);
    }
    arp::uplink(&ctx)
}

/// tc ingress on the uplink: forward packets to routed containers.
#[classifier]
pub fn netbpf_route_in(ctx: TcContext) -> i32 {
    tc_verdict_of(route::inbound(&ctx), false)
}

/// tc ingress on a routed container's veth: ARP, anti-spoofing, forward.
#[classifier]
pub fn netbpf_container(ctx: TcContext) -> i32 {
    tc_verdict_of(route::container(&ctx), false)
}

/// XDP, the router bench's floor variant only: MACs and redirect.
#[aya_ebpf::macros::xdp]
pub fn netbpf_bench_floor(ctx: aya_ebpf::programs::XdpContext) -> u32 {
    bench::floor(&ctx)
}

/// XDP, the router bench's saturation generator only (live frames).
#[aya_ebpf::macros::xdp]
pub fn netbpf_bench_tx(_ctx: aya_ebpf::programs::XdpContext) -> u32 {
    bench::transmit()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves panics unreachable; this only satisfies no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
