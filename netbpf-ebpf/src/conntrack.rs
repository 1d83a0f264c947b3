//! Per-flow state: which TCP events were seen, when, and how much traffic.
//!
//! The kernel side only records facts: it ORs [`flow_flags`] bits, stamps
//! `last_seen_ns` and adds to the counters. Userspace turns the bits into a
//! state and a timeout and removes expired flows, so timeouts can change
//! without reloading the programs.

use core::intrinsics::{AtomicOrdering, atomic_or, atomic_xadd};

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use netbpf_common::{Counter, FlowValue, flow_flags, proto, tcp_close_in_window};

use crate::{
    parse::{L4, Packet, tcp_flags},
    stats,
};

/// Direction of a packet relative to the inside endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Inside → remote.
    Out,
    /// Remote → inside.
    In,
}

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC), to the kernel's tick
/// (`bpf_ktime_get_coarse_ns`, 1–10 ms): every use is a timeout of seconds
/// or a rate of at most a few thousand per second, and the fine clock
/// (`bpf_ktime_get_ns`, a fenced TSC read) cost about 30 ns per packet,
/// the largest single item on the established paths (docs/performance.md).
/// It never runs ahead of userspace's `CLOCK_MONOTONIC`, so an age computed
/// there is at most one tick too long.
#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The TCP flags, sequence and acknowledgment numbers of a packet, if it
/// is TCP.
#[inline(always)]
fn tcp_of(pkt: &Packet) -> Option<(u8, u32, u32)> {
    match (pkt.proto, pkt.l4) {
        (
            proto::TCP,
            L4::Ports {
                tcp_flags,
                seq,
                ack,
                ..
            },
        ) => Some((tcp_flags, seq, ack)),
        _ => None,
    }
}

/// The TCP flags byte of a packet, if it is TCP.
#[inline(always)]
pub(crate) fn tcp_flags_of(pkt: &Packet) -> Option<u8> {
    match (pkt.proto, pkt.l4) {
        (proto::TCP, L4::Ports { tcp_flags, .. }) => Some(tcp_flags),
        _ => None,
    }
}

/// Whether a TCP flags byte is an opening SYN (SYN without ACK).
#[inline(always)]
pub(crate) fn is_syn(flags: u8) -> bool {
    flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
}

/// The [`flow_flags`] bits a packet sets.
#[inline(always)]
fn bits_for(dir: Dir, tcp: Option<u8>) -> u64 {
    let (seen, syn, ack, fin) = match dir {
        Dir::Out => (
            flow_flags::SEEN_OUT,
            flow_flags::SYN_OUT,
            flow_flags::ACK_OUT,
            flow_flags::FIN_OUT,
        ),
        Dir::In => (
            flow_flags::SEEN_IN,
            flow_flags::SYN_IN,
            flow_flags::ACK_IN,
            flow_flags::FIN_IN,
        ),
    };
    // A RST answers (or ends) a flow but is no sign of life: it does not
    // count as seen, so a container's RST to an unsolicited SYN does not
    // keep the mapping it came in through alive (RFC 7857 §7).
    let mut bits = match tcp {
        Some(f) if f & tcp_flags::RST != 0 => 0,
        _ => seen,
    };
    if let Some(f) = tcp {
        if f & tcp_flags::SYN != 0 {
            bits |= syn;
        } else if f & tcp_flags::ACK != 0 && f & tcp_flags::RST == 0 {
            bits |= ack;
        }
        if f & tcp_flags::FIN != 0 {
            bits |= fin;
        }
        if f & tcp_flags::RST != 0 {
            bits |= flow_flags::RST;
        }
    }
    bits
}

/// A fresh flow value for a packet that opens a flow.
#[inline(always)]
pub(crate) fn new_flow(
    outside_addr: [u8; 4],
    outside_port: u16,
    extra_flags: u64,
    now: u64,
) -> FlowValue {
    FlowValue {
        outside_addr,
        outside_port,
        _pad0: 0,
        flags: extra_flags,
        created_ns: now,
        last_seen_ns: now,
        packets_out: 0,
        bytes_out: 0,
        packets_in: 0,
        bytes_in: 0,
        ack_out: 0,
        ack_in: 0,
    }
}

/// Records a packet of a flow: flags, time and counters. A TCP RST or FIN
/// too far from the receiving side's last acknowledgment is forwarded but
/// leaves the flow's state alone (counted as `tcp_close_ignored`).
#[inline(always)]
pub(crate) fn touch(flow: *mut FlowValue, dir: Dir, pkt: &Packet, now: u64) {
    let mut tcp = None;
    if let Some((flags, seq, ack)) = tcp_of(pkt) {
        // SAFETY: `flow` points into a map value, valid for this run;
        // plain u32 stores (a race leaves one of two recent values).
        let (expected, mine) = unsafe {
            match dir {
                Dir::Out => ((*flow).ack_in, &mut (*flow).ack_out),
                Dir::In => ((*flow).ack_out, &mut (*flow).ack_in),
            }
        };
        let closing = flags & (tcp_flags::RST | tcp_flags::FIN) != 0;
        if closing && !tcp_close_in_window(seq, expected) {
            stats::inc(Counter::TcpCloseIgnored);
            tcp = Some(flags & !(tcp_flags::RST | tcp_flags::FIN));
        } else {
            tcp = Some(flags);
        }
        if flags & tcp_flags::ACK != 0 && flags & tcp_flags::RST == 0 {
            *mine = ack;
        }
    }
    // SAFETY: `flow` points into a hash map value, valid for this program
    // run; the fields are naturally aligned (the layout is asserted in
    // netbpf-common), so atomic access through them is sound. The BPF target
    // has no `core::sync::atomic` read-modify-write types, hence the
    // intrinsics (they compile to BPF_ATOMIC instructions).
    unsafe {
        let f = &mut *flow;
        if let Some(t) = tcp
            && is_syn(t)
            && f.flags & (flow_flags::FIN_OUT | flow_flags::FIN_IN | flow_flags::RST) != 0
        {
            // A new connection reusing the tuple of a closed one: start over
            // (keeping only how it was opened).
            f.flags &= flow_flags::OPENED_IN;
            f.created_ns = now;
            f.ack_out = 0;
            f.ack_in = 0;
        }
        atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(&mut f.flags, bits_for(dir, tcp));
        f.last_seen_ns = now;
        let (packets, bytes) = match dir {
            Dir::Out => (&mut f.packets_out, &mut f.bytes_out),
            Dir::In => (&mut f.packets_in, &mut f.bytes_in),
        };
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(bytes, pkt.tot_len as u64);
    }
}
