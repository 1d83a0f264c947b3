//! Fragments that arrive before their first fragment (RFC 4787 REQ-14).
//!
//! Only the first fragment carries the ports, so a fragment that comes
//! earlier cannot be translated yet. It is copied into `FRAG_STASH` (at
//! most [`FRAG_STASH_SLOTS`] per datagram, LRU-evicted if its first fragment
//! never comes) and dropped. When the first fragment arrives and has been
//! translated (or left to the host), it and every held fragment are
//! re-injected into the uplink's ingress with `bpf_clone_redirect`: the
//! current skb is turned into each held frame in turn (resized, rewritten,
//! given the first fragment's destination). Re-injected frames carry
//! [`FRAG_REPLAY_MARK`], so the ingress program lets them straight through.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, BPF_F_RECOMPUTE_CSUM},
    helpers::{bpf_skb_load_bytes, bpf_skb_store_bytes},
    programs::TcContext,
};
use netbpf_common::{Counter, FRAG_REPLAY_MARK, FRAG_STASH_BYTES, FRAG_STASH_SLOTS, FragStashKey};

use crate::{
    Verdict,
    fib::{skb, skb_ifindex, skb_mark},
    maps::{FRAG_HELD, FRAG_SCRATCH, FRAG_STASH, LOCAL_ADDRS},
    parse::{Packet, off},
    stats,
};

/// Offset of the IPv4 header in a held (Ethernet) frame.
const L3: usize = 14;

/// Whether the frame is one netbpf re-injected; clears the mark.
#[inline(always)]
pub(crate) fn is_replay(ctx: &TcContext) -> bool {
    if skb_mark(ctx) == FRAG_REPLAY_MARK {
        ctx.set_mark(0);
        return true;
    }
    false
}

/// Holds a non-first fragment addressed to this host whose first fragment
/// has not been seen. `None`: not held (not for this host, too big, or the
/// datagram's slots are full); the caller decides.
#[inline(always)]
pub(crate) fn hold(ctx: &TcContext, pkt: &Packet) -> Option<Verdict> {
    LOCAL_ADDRS.get_ptr(&pkt.dst)?;
    let key = pkt.frag_key();
    let len = ctx.len() as usize;
    if len > FRAG_STASH_BYTES || len == 0 {
        return None;
    }
    // SAFETY: map value pointer, valid for this run. Not atomic: the
    // BPF target's v1 instruction set cannot use a fetch-add's result; two
    // CPUs holding fragments of one datagram at the same instant may write
    // one slot, and the datagram is then lost as if a fragment had been.
    let held = FRAG_HELD.get_ptr(&key).map(|c| unsafe { *c }).unwrap_or(0);
    if held >= FRAG_STASH_SLOTS {
        return None;
    }
    let scratch = FRAG_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch value, valid and unshared for this run.
    let scratch = unsafe { &mut *scratch };
    // A power-of-two mask the verifier can follow, then the real bound.
    let n = len & 0x7ff;
    if n > FRAG_STASH_BYTES || n == 0 {
        return None;
    }
    // SAFETY: `n` is in 1..=FRAG_STASH_BYTES, the size of `frame`.
    let rc = unsafe {
        bpf_skb_load_bytes(
            skb(ctx).cast(),
            0,
            scratch.frame.as_mut_ptr().cast(),
            n as u32,
        )
    };
    if rc != 0 {
        return None;
    }
    scratch.len = n as u32;
    scratch._pad = 0;
    let slot = FragStashKey {
        frag: key,
        slot: held,
    };
    FRAG_STASH.insert(&slot, scratch, 0).ok()?;
    FRAG_HELD.insert(&key, &(held + 1), 0).ok()?;
    stats::inc(Counter::FragmentsHeld);
    Some(Verdict::Consumed)
}

/// After a first fragment was handled (`verdict`): if fragments of its
/// datagram are held, re-inject it and them, the held ones with the first
/// fragment's (possibly translated) destination.
#[inline(always)]
pub(crate) fn replay(ctx: &TcContext, pkt: &Packet, verdict: Verdict) -> Result<Verdict, Counter> {
    let key = pkt.frag_key();
    let Some(held) = FRAG_HELD.get_ptr(&key) else {
        return Ok(verdict);
    };
    // SAFETY: map value pointer, valid for this run.
    let held = unsafe { *held }.min(FRAG_STASH_SLOTS);
    let _ = FRAG_HELD.remove(&key);
    let fail = |_| Counter::DropRewriteFailed;
    let new_dst: [u8; 4] = ctx.load(pkt.l3_off + off::IP_DST).map_err(fail)?;
    let ifindex = skb_ifindex(ctx);
    ctx.set_mark(FRAG_REPLAY_MARK);
    ctx.clone_redirect(ifindex, BPF_F_INGRESS as u64)
        .map_err(fail)?;
    let mut slot = 0u32;
    while slot < FRAG_STASH_SLOTS {
        if slot >= held {
            break;
        }
        let skey = FragStashKey { frag: key, slot };
        slot += 1;
        let Some(stash) = FRAG_STASH.get_ptr(&skey) else {
            continue;
        };
        // SAFETY: map value pointer, valid for this run.
        let stash = unsafe { &*stash };
        let n = (stash.len as usize) & 0x7ff;
        if !(L3 + 20..=FRAG_STASH_BYTES).contains(&n) {
            let _ = FRAG_STASH.remove(&skey);
            continue;
        }
        ctx.change_tail(n as u32, 0).map_err(fail)?;
        // SAFETY: `n` is within the stash's frame (checked above), and the
        // skb was just resized to `n` bytes. BPF_F_RECOMPUTE_CSUM keeps a
        // CHECKSUM_COMPLETE skb's sum right for the new bytes.
        let rc = unsafe {
            bpf_skb_store_bytes(
                skb(ctx),
                0,
                stash.frame.as_ptr().cast(),
                n as u32,
                BPF_F_RECOMPUTE_CSUM as u64,
            )
        };
        if rc != 0 {
            return Err(Counter::DropRewriteFailed);
        }
        let old: [u8; 4] = ctx.load(L3 + off::IP_DST).map_err(fail)?;
        if old != new_dst {
            ctx.l3_csum_replace(
                L3 + off::IP_CHECK,
                u32::from_ne_bytes(old) as u64,
                u32::from_ne_bytes(new_dst) as u64,
                4,
            )
            .map_err(fail)?;
            ctx.store(L3 + off::IP_DST, &new_dst, 0).map_err(fail)?;
        }
        ctx.set_mark(FRAG_REPLAY_MARK);
        ctx.clone_redirect(ifindex, BPF_F_INGRESS as u64)
            .map_err(fail)?;
        let _ = FRAG_STASH.remove(&skey);
        stats::inc(Counter::FragmentsReplayed);
    }
    // Every frame went on as a clone; this one is done.
    Ok(Verdict::Consumed)
}
