//! What the host keeps for itself, and what one outside source may take.
//!
//! * The host's own sockets win over a container's mapping: a port a host
//!   socket listens on (or is bound to, for UDP) is never handed out as a
//!   mapping, and a packet to a mapped port that a host socket owns (its
//!   exact 4-tuple, or a listener for an opening SYN) goes to the host
//!   ([`host_socket`]).
//! * An opening SYN that nothing takes is dropped silently (RFC 5382
//!   REQ-4), or passed to the stack when the config says so
//!   ([`unsolicited_syn`]): netfilter DNAT, IPVS or kube-proxy may own it.
//! * One outside source opens at most its budget of new flows
//!   ([`source_admitted`], a GCRA per source address), so a flood from one
//!   address cannot fill the conntrack table.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1},
    helpers::{bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::TcContext,
};
use netbpf_common::{Counter, Settings, proto, settings_flags};

use crate::{
    Verdict,
    maps::{LOCAL_ADDRS, SETTINGS, SOURCE_BUDGET},
    stats,
};

/// The config's policies (all off when userspace has not written them).
#[inline(always)]
pub(crate) fn settings() -> Settings {
    SETTINGS.get(0).copied().unwrap_or_default()
}

/// Whether a host socket owns a packet from `src:sport` to `dst:dport`:
/// a TCP socket with exactly that 4-tuple or listening on `dst:dport`, or
/// a UDP socket connected to it or bound to `dst:dport`. Other protocols
/// have no host sockets to find.
#[inline(always)]
pub(crate) fn host_socket(
    ctx: &TcContext,
    proto_num: u8,
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
) -> bool {
    // SAFETY: an all-zero tuple is valid; the IPv4 half is filled below.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    tuple.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
        saddr: u32::from_ne_bytes(src),
        daddr: u32::from_ne_bytes(dst),
        sport: sport.to_be(),
        dport: dport.to_be(),
    };
    let size = core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    // SAFETY: the context is an skb; the tuple's IPv4 part is initialised
    // and its size is passed; a found socket is released right away.
    let sk = unsafe {
        match proto_num {
            proto::TCP => bpf_skc_lookup_tcp(
                ctx.as_ptr(),
                &mut tuple,
                size,
                BPF_F_CURRENT_NETNS as u64,
                0,
            )
            .cast(),
            proto::UDP => bpf_sk_lookup_udp(
                ctx.as_ptr(),
                &mut tuple,
                size,
                BPF_F_CURRENT_NETNS as u64,
                0,
            ),
            _ => return false,
        }
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: `sk` came from a lookup helper and is released once.
    unsafe { bpf_sk_release(sk.cast()) };
    true
}

/// An opening SYN from outside to one of the host's addresses that no
/// mapping and no published port takes. RFC 5382 REQ-4 says a NAT must not
/// answer it for at least 6 s (a container's outbound SYN may follow: TCP
/// simultaneous open), and Linux would answer with a RST, so by default it
/// is dropped silently unless a host socket (listening or connected) takes
/// it. With `[inbound] unsolicited_syn = "pass"` it goes to the stack.
#[inline(always)]
pub(crate) fn unsolicited_syn(
    ctx: &TcContext,
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
) -> Result<Verdict, Counter> {
    if LOCAL_ADDRS.get_ptr(&dst).is_none() || host_socket(ctx, proto::TCP, src, sport, dst, dport) {
        return Ok(Verdict::Pass);
    }
    if settings().flags & settings_flags::PASS_UNSOLICITED_SYN != 0 {
        stats::inc(Counter::UnsolicitedSynsPassed);
        return Ok(Verdict::Pass);
    }
    Err(Counter::DropUnsolicitedSyn)
}

/// Whether outside address `src` may open one more flow at `now`; records
/// it if so.
#[inline(always)]
pub(crate) fn source_admitted(src: [u8; 4], now: u64) -> bool {
    let s = settings();
    // The host's own addresses (hairpinned flows come from them) have no
    // budget: they are not an outside source.
    if s.source_interval_ns == 0 || LOCAL_ADDRS.get_ptr(&src).is_some() {
        return true;
    }
    match SOURCE_BUDGET.get_ptr_mut(&src) {
        Some(tat) => {
            // SAFETY: map value pointer, valid for this run. Two CPUs may
            // race on it; either result is a valid budget state.
            unsafe {
                match s.admit(*tat, now) {
                    Some(next) => {
                        *tat = next;
                        true
                    }
                    None => false,
                }
            }
        }
        None => {
            if let Some(next) = s.admit(0, now) {
                // LRU map: a full table evicts the least recent source.
                let _ = SOURCE_BUDGET.insert(&src, &next, 0);
            }
            true
        }
    }
}
