//! Per-flow state: which TCP events were seen, when, and how much traffic.
//!
//! The kernel side only records facts: it ORs [`flow_flags`] bits, stamps
//! `last_seen_ns` and adds to the counters, each direction in its own half
//! of the flow (`netbpf_common::reply`), so a packet touches only the
//! entry its one lookup found. Userspace turns the bits into a
//! state and a timeout and removes expired flows, so timeouts can change
//! without reloading the programs.

use core::{
    intrinsics::{AtomicOrdering, atomic_or, atomic_xadd},
    mem::offset_of,
};

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use netbpf_common::{
    Counter, FlowKey, FlowValue, ReplyKey, ReplyValue, flow_flags, proto, tcp_close_in_window,
};

use crate::{
    maps::{CONNTRACK, CONNTRACK_REPLY},
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

/// One half of a flow: the flow's value (its outbound direction) or its
/// reply half (the inbound one, `netbpf_common::reply`). Each records its
/// own direction's bits, time, counters and acknowledgment number.
#[derive(Clone, Copy)]
enum Half {
    Out(*mut FlowValue),
    In(*mut ReplyValue),
    /// The inbound direction of a flow without a reply half yet (the
    /// packet that opened it from outside): the flow's own `*_in` fields,
    /// which userspace adds to the half's.
    InOnFlow(*mut FlowValue),
}

/// The field at byte offset `off` of the value `p` points to. No
/// dereference here: the caller's `unsafe` uses it, on a pointer into a
/// map value that is valid for this run.
#[inline(always)]
fn field<T, F>(p: *mut T, off: usize) -> *mut F {
    p.wrapping_byte_add(off).cast()
}

impl Half {
    #[inline(always)]
    fn dir(self) -> Dir {
        match self {
            Half::Out(_) => Dir::Out,
            Half::In(_) | Half::InOnFlow(_) => Dir::In,
        }
    }

    #[inline(always)]
    fn flags(self) -> *mut u64 {
        match self {
            Half::Out(f) | Half::InOnFlow(f) => field(f, offset_of!(FlowValue, flags)),
            Half::In(r) => field(r, offset_of!(ReplyValue, flags)),
        }
    }

    #[inline(always)]
    fn ack(self) -> *mut u32 {
        match self {
            Half::Out(f) => field(f, offset_of!(FlowValue, ack_out)),
            Half::InOnFlow(f) => field(f, offset_of!(FlowValue, ack_in)),
            Half::In(r) => field(r, offset_of!(ReplyValue, ack)),
        }
    }

    #[inline(always)]
    fn last_seen(self) -> *mut u64 {
        match self {
            Half::Out(f) | Half::InOnFlow(f) => field(f, offset_of!(FlowValue, last_seen_ns)),
            Half::In(r) => field(r, offset_of!(ReplyValue, last_seen_ns)),
        }
    }

    /// Packets and bytes of the half's direction.
    #[inline(always)]
    fn counters(self) -> (*mut u64, *mut u64) {
        match self {
            Half::Out(f) => (
                field(f, offset_of!(FlowValue, packets_out)),
                field(f, offset_of!(FlowValue, bytes_out)),
            ),
            Half::InOnFlow(f) => (
                field(f, offset_of!(FlowValue, packets_in)),
                field(f, offset_of!(FlowValue, bytes_in)),
            ),
            Half::In(r) => (
                field(r, offset_of!(ReplyValue, packets)),
                field(r, offset_of!(ReplyValue, bytes)),
            ),
        }
    }
}

/// Whether recording `pkt` needs the flow's other half: a TCP SYN (a
/// closed tuple's reuse depends on both directions), FIN or RST (the close
/// window is the other direction's acknowledgment). Every other packet
/// touches only the half it was found by.
#[inline(always)]
fn needs_other_half(pkt: &Packet) -> bool {
    matches!(
        tcp_flags_of(pkt),
        Some(f) if f & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) != 0
    )
}

/// Records an outbound packet on its flow `flow` (key `key`): flags, time
/// and counters (see [`record`]).
#[inline(always)]
pub(crate) fn touch_out(key: &FlowKey, flow: *mut FlowValue, pkt: &Packet, now: u64) {
    let reply = if needs_other_half(pkt) {
        // SAFETY: map value pointer, valid for this run.
        let (addr, port) = unsafe { ((*flow).outside_addr, (*flow).outside_port) };
        CONNTRACK_REPLY.get_ptr_mut(&ReplyKey::of_flow(key, addr, port))
    } else {
        None
    };
    if record(Half::Out(flow), reply.map(Half::In), pkt, now) {
        // SAFETY: as above.
        unsafe { (*flow).created_ns = now };
    }
}

/// Records an inbound packet on the reply half `reply` (key `key`) of its
/// flow (see [`record`]).
#[inline(always)]
pub(crate) fn touch_in(key: &ReplyKey, reply: *mut ReplyValue, pkt: &Packet, now: u64) {
    let flow = if needs_other_half(pkt) {
        // SAFETY: map value pointer, valid for this run.
        let inside = unsafe { (*reply).inside };
        CONNTRACK.get_ptr_mut(&key.flow_key(&inside))
    } else {
        None
    };
    if record(Half::In(reply), flow.map(Half::Out), pkt, now)
        && let Some(flow) = flow
    {
        // SAFETY: as above.
        unsafe { (*flow).created_ns = now };
    }
}

/// Records the packet that opened the flow `flow` on the flow itself,
/// going `dir` (out: a masqueraded flow; in: a published port, or a remote
/// new to a mapping): it has no reply half yet, and no other direction to
/// judge a close or a reuse by, so nothing else is looked up.
#[inline(always)]
pub(crate) fn touch_new(flow: *mut FlowValue, dir: Dir, pkt: &Packet, now: u64) {
    let own = match dir {
        Dir::Out => Half::Out(flow),
        Dir::In => Half::InOnFlow(flow),
    };
    record(own, None, pkt, now);
}

/// Records a packet on the half `own` of its flow: flags, time and
/// counters. A TCP RST or FIN too far from the other direction's last
/// acknowledgment (read from `other`, the flow's other half when the
/// packet needs it: [`needs_other_half`]) is forwarded but leaves the
/// flow's state alone (counted as `tcp_close_ignored`). An opening SYN on
/// a tuple that closed starts the flow over in both halves; returns
/// whether it did (the caller restamps the flow's creation time).
#[inline(always)]
fn record(own: Half, other: Option<Half>, pkt: &Packet, now: u64) -> bool {
    let mut tcp = None;
    // The BPF target has no `core::sync::atomic` read-modify-write types,
    // hence the intrinsics (they compile to BPF_ATOMIC instructions) for
    // the flags and counters; the rest are plain stores (a race leaves one
    // of two recent values).
    // SAFETY: the `Half` field pointers point into map values, valid for
    // this run, naturally aligned (the layouts are asserted in
    // netbpf-common).
    unsafe {
        if let Some((flags, seq, ack)) = tcp_of(pkt) {
            let expected = match other {
                Some(o) => *o.ack(),
                None => 0,
            };
            let closing = flags & (tcp_flags::RST | tcp_flags::FIN) != 0;
            if closing && !tcp_close_in_window(seq, expected) {
                stats::inc(Counter::TcpCloseIgnored);
                tcp = Some(flags & !(tcp_flags::RST | tcp_flags::FIN));
            } else {
                tcp = Some(flags);
            }
            if flags & tcp_flags::ACK != 0 && flags & tcp_flags::RST == 0 {
                *own.ack() = ack;
            }
        }
        let mut restarted = false;
        if let Some(t) = tcp
            && is_syn(t)
        {
            let closed = flow_flags::FIN_OUT | flow_flags::FIN_IN | flow_flags::RST;
            let seen = *own.flags() | other.map_or(0, |o| *o.flags());
            if seen & closed != 0 {
                // A new connection reusing the tuple of a closed one: start
                // over, keeping only how it was opened.
                *own.flags() &= flow_flags::HOW_OPENED;
                *own.ack() = 0;
                if let Some(o) = other {
                    *o.flags() &= flow_flags::HOW_OPENED;
                    *o.ack() = 0;
                }
                restarted = true;
            }
        }
        atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(own.flags(), bits_for(own.dir(), tcp));
        *own.last_seen() = now;
        let (packets, bytes) = own.counters();
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(bytes, pkt.tot_len as u64);
        restarted
    }
}
