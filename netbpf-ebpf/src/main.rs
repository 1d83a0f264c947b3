//! netbpf's eBPF programs.
//!
//! Entry points are thin: each one parses the packet once, hands it to the
//! layer that owns the decision, and turns the result into a verdict in one
//! place. Every drop carries a [`Counter`] naming its reason and is counted.
//!
//! | program          | hook               | does                                   |
//! |------------------|--------------------|----------------------------------------|
//! | `netbpf_egress`  | tc (tcx) egress of the uplink  | masquerade (SNAT) outbound |
//! | `netbpf_ingress` | tc (tcx) ingress of the uplink | translate replies back, DNAT |
//! | `netbpf_inside`  | tc (tcx) ingress of container-side interfaces | hairpinning |
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    reason = "atomic intrinsics: the BPF target has no AtomicU64 RMW ops"
)]

mod conntrack;
mod hairpin;
mod icmp;
mod maps;
mod nat;
mod parse;
mod rewrite;
mod stats;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
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
}

/// Maps a layer's result to a tc verdict and counts drops.
#[inline(always)]
fn tc_verdict(result: Result<Verdict, Counter>) -> i32 {
    match result {
        Ok(Verdict::Pass) => {
            stats::inc(Counter::Passed);
            // TCX_NEXT: other tcx programs (and then the stack) still run.
            TC_ACT_UNSPEC
        }
        Ok(Verdict::Translated) => TC_ACT_OK,
        Ok(Verdict::Redirect(action)) => action,
        Err(reason) => {
            stats::inc(reason);
            TC_ACT_SHOT
        }
    }
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
#[classifier]
pub fn netbpf_ingress(ctx: TcContext) -> i32 {
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves panics unreachable; this only satisfies no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
