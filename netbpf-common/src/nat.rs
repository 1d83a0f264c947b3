//! NAT state: masquerade rules, endpoints, mappings, flows and their flag bits, session events, the RST/FIN window.

use core::mem::size_of;

use crate::names::proto;

/// Key of the masquerade LPM trie: the source prefix in network order. The
/// prefix length is carried by aya's LPM `Key` wrapper around this.
pub type MasqPrefix = [u8; 4];

/// What to do with packets whose source lies in a masquerade CIDR when they
/// leave the uplink.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasqRule {
    /// Source address to translate to (the uplink address), network order.
    pub to_addr: [u8; 4],
    /// First port of the SNAT range; `0` together with `port_max == 0`
    /// means "Linux style": keep the original port's class (1–1023 or
    /// 1024–65535).
    pub port_min: u16,
    /// Last port of the SNAT range (inclusive).
    pub port_max: u16,
}

const _: () = assert!(size_of::<MasqRule>() == 8);

impl MasqRule {
    /// The outside ports (inclusive) a mapping of an inside `proto` port
    /// (or ICMP echo identifier) may get: the configured range, else the
    /// original port's class (RFC 4787 REQ-3a: 1–1023 or 1024–65535; any
    /// identifier for ICMP).
    #[inline(always)]
    pub const fn port_range(&self, proto_num: u8, port: u16) -> (u32, u32) {
        if self.port_min != 0 || self.port_max != 0 {
            return (self.port_min as u32, self.port_max as u32);
        }
        if proto_num == proto::ICMP {
            (0, 65535)
        } else if port < 1024 {
            (1, 1023)
        } else {
            (1024, 65535)
        }
    }
}

/// Kinds of [`NatEvent`].
pub mod event_kind {
    /// A mapping was created (from the kernel).
    pub const MAPPING_CREATED: u32 = 1;
    /// A mapping was released after its last flow expired (from userspace).
    pub const MAPPING_EXPIRED: u32 = 2;
    /// A TCP flow that had closed (FIN both ways, or RST) was removed (from
    /// userspace).
    pub const FLOW_CLOSED: u32 = 3;
}

/// A NAT session event (the RFC 8158 idea: who held which outside port
/// when), as the kernel writes it into [`map_names::EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatEvent {
    /// [`event_kind`].
    pub kind: u32,
    /// Always zero.
    pub _pad: u32,
    /// The inside endpoint.
    pub inside: Endpoint,
    /// The outside endpoint.
    pub outside: Endpoint,
    /// CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
}

const _: () = assert!(size_of::<NatEvent>() == 32);

/// One side of a translation: protocol, address and port (or ICMP id).
/// Key and value of [`map_names::NAT_REVERSE`], key of
/// [`map_names::NAT_MAPPINGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// IPv4 address, network order.
    pub addr: [u8; 4],
    /// Port (TCP/UDP) or echo identifier (ICMP), host order.
    pub port: u16,
    /// IP protocol number ([`proto`]).
    pub proto: u8,
    /// Always zero.
    pub _pad: u8,
}

const _: () = assert!(size_of::<Endpoint>() == 8);

impl Endpoint {
    /// An endpoint with zeroed padding.
    pub const fn new(proto: u8, addr: [u8; 4], port: u16) -> Self {
        Self {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }
}

/// Value of [`map_names::NAT_MAPPINGS`]: the outside endpoint that an inside
/// endpoint is translated to, for every destination (RFC 4787 REQ-1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingValue {
    /// The outside endpoint (uplink address and allocated port).
    pub outside: Endpoint,
    /// When a flow last started using this mapping. Garbage collection keeps
    /// a mapping while any flow references it, and for a grace period after
    /// this time, so a flow created during a collection pass is never left
    /// without its mapping.
    pub last_used_ns: u64,
}

const _: () = assert!(size_of::<MappingValue>() == 16);

/// Key of [`map_names::CONNTRACK`]: one flow as seen from the inside.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Inside (container) address, network order.
    pub inside_addr: [u8; 4],
    /// Remote (outside) address, network order.
    pub remote_addr: [u8; 4],
    /// Inside port or ICMP echo identifier, host order.
    pub inside_port: u16,
    /// Remote port, host order; 0 for ICMP.
    pub remote_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}

const _: () = assert!(size_of::<FlowKey>() == 16);

impl FlowKey {
    /// A flow key with zeroed padding.
    pub const fn new(
        proto: u8,
        inside_addr: [u8; 4],
        inside_port: u16,
        remote_addr: [u8; 4],
        remote_port: u16,
    ) -> Self {
        Self {
            inside_addr,
            remote_addr,
            inside_port,
            remote_port,
            proto,
            _pad: [0; 3],
        }
    }
}

/// Bits of [`FlowValue::flags`]. The kernel sets bits with an atomic OR, and
/// clears them (all but [`flow_flags::OPENED_IN`]) only when an opening SYN
/// reuses the tuple of a closed or reset TCP flow; userspace derives the
/// connection state and its timeout from them.
pub mod flow_flags {
    /// A packet went out (inside → remote).
    pub const SEEN_OUT: u64 = 1 << 0;
    /// A packet came in (remote → inside).
    pub const SEEN_IN: u64 = 1 << 1;
    /// TCP SYN seen going out.
    pub const SYN_OUT: u64 = 1 << 2;
    /// TCP SYN seen coming in.
    pub const SYN_IN: u64 = 1 << 3;
    /// TCP FIN seen going out.
    pub const FIN_OUT: u64 = 1 << 4;
    /// TCP FIN seen coming in.
    pub const FIN_IN: u64 = 1 << 5;
    /// TCP RST seen in either direction.
    pub const RST: u64 = 1 << 6;
    /// The flow was opened from outside (endpoint-independent filtering let
    /// a remote reach an existing mapping, or a published port).
    pub const OPENED_IN: u64 = 1 << 7;
    /// The flow goes to a published port (DNAT): its outside endpoint is
    /// the host address and port the client used.
    pub const PUBLISHED: u64 = 1 << 8;
    /// TCP: a segment with ACK and without SYN went out. With
    /// [`ACK_IN`], it tells a completed handshake from a half-open one
    /// (a SYN answered by a SYN-ACK that the opener never acknowledged).
    pub const ACK_OUT: u64 = 1 << 9;
    /// TCP: a segment with ACK and without SYN came in.
    pub const ACK_IN: u64 = 1 << 10;
    /// How the flow was opened: the bits both halves of a flow carry
    /// (`crate::reply`), and the ones a closed tuple's reuse keeps.
    pub const HOW_OPENED: u64 = OPENED_IN | PUBLISHED;
}

/// Value of [`map_names::CONNTRACK`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Outside address the inside endpoint is translated to, network order.
    pub outside_addr: [u8; 4],
    /// Outside port or ICMP identifier, host order.
    pub outside_port: u16,
    /// Always zero.
    pub _pad0: u16,
    /// [`flow_flags`] bits (64 bits wide so the kernel can OR them
    /// atomically: the BPF target has 64-bit atomics only).
    pub flags: u64,
    /// When the flow was created.
    pub created_ns: u64,
    /// When the last packet of the flow was seen, in either direction.
    pub last_seen_ns: u64,
    /// Packets inside → remote.
    pub packets_out: u64,
    /// Bytes (IP total length) inside → remote.
    pub bytes_out: u64,
    /// Packets remote → inside.
    pub packets_in: u64,
    /// Bytes (IP total length) remote → inside.
    pub bytes_in: u64,
    /// TCP: the acknowledgment number of the last segment that went out
    /// (what the inside expects next from the remote); 0 = not seen. An
    /// RST or FIN coming in is believed only near it.
    pub ack_out: u32,
    /// TCP: the acknowledgment number of the last segment that came in.
    pub ack_in: u32,
}

const _: () = assert!(size_of::<FlowValue>() == 72);

/// How far (in sequence space) from the receiver's last acknowledgment a
/// RST or FIN may claim to be and still change a flow's state. A blind
/// RST must guess a sequence number within this distance (a chance of
/// 2^21 in 2^32), where without the check any RST knowing the 4-tuple
/// moved a live flow to the transitory timeout.
pub const TCP_CLOSE_WINDOW: u32 = 1 << 20;

/// Whether a RST or FIN with sequence number `seq` is close enough to
/// `expected` (the receiving side's last acknowledgment, 0 = unknown) to
/// be believed. Wrapping arithmetic, as sequence numbers wrap.
#[inline(always)]
pub const fn tcp_close_in_window(seq: u32, expected: u32) -> bool {
    if expected == 0 {
        return true;
    }
    let d = seq.wrapping_sub(expected);
    d < TCP_CLOSE_WINDOW || d > u32::MAX - TCP_CLOSE_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_is_believed_only_near_the_receivers_acknowledgment() {
        assert!(tcp_close_in_window(1000, 0), "nothing known: believed");
        assert!(tcp_close_in_window(1000, 1000));
        assert!(tcp_close_in_window(1000 + TCP_CLOSE_WINDOW - 1, 1000));
        assert!(!tcp_close_in_window(1000 + TCP_CLOSE_WINDOW, 1000));
        assert!(tcp_close_in_window(1000 - 10, 1000), "a little behind");
        // Across the wrap of the sequence space.
        assert!(tcp_close_in_window(5, u32::MAX - 5));
        assert!(!tcp_close_in_window(0x8000_0000, 1000), "a blind guess");
    }
}
