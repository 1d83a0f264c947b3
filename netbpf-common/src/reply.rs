//! The reply half of a flow: what an inbound packet of an established flow
//! needs, found with one lookup of its own tuple.
//!
//! A NAT flow has two tuples: the inside one (`inside → remote`, how its
//! packets leave the container) and the reply one (`remote → outside`, how
//! the answers arrive on the uplink). [`map_names::CONNTRACK`] is keyed by
//! the first and carries the outside endpoint, so an outbound packet is
//! translated after one lookup. [`map_names::CONNTRACK_REPLY`] is keyed by
//! the second ([`ReplyKey`]) and carries the inside endpoint, so an
//! inbound packet is too, for replies to masqueraded flows and for
//! published ports alike (before it, the reply took `NAT_REVERSE` and
//! `CONNTRACK`, a published port `NAT_REVERSE`'s miss, the `PUBLISH` trie
//! and `CONNTRACK`).
//!
//! Each half records its own direction: the kernel ORs the inbound
//! [`flow_flags`] bits, stamps the time and counts the packets in the reply
//! half ([`ReplyValue`]), the outbound ones in the flow's value. Only a TCP
//! SYN, FIN or RST reads the other half (the close window and a closed
//! tuple's reuse look at both directions). Userspace sees one flow:
//! [`merge`] folds the reply half into the flow's value.
//!
//! A new flow is one insert: its reply half is written by the first
//! inbound packet that finds the flow the old way (its first reply, or
//! the second packet of a flow opened from outside, whose opening packet
//! is recorded in the flow's own `*_in` fields), in the tc program; so is
//! the half of a flow opened by a netbpf before this map (or refused by a
//! full map). The daemon's collector removes halves
//! without their flow before it releases any mapping, so a new flow never
//! meets a half left on its tuple for another container.

use core::mem::size_of;

use crate::nat::{Endpoint, FlowKey, FlowValue, flow_flags};

/// Key of [`map_names::CONNTRACK_REPLY`]: a flow as its inbound packets
/// carry it.
///
/// [`map_names::CONNTRACK_REPLY`]: crate::map_names::CONNTRACK_REPLY
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReplyKey {
    /// Remote address (the packet's source), network order.
    pub remote_addr: [u8; 4],
    /// Outside address (the packet's destination: the uplink's address for
    /// a masqueraded flow, the host address a client used for a published
    /// port), network order.
    pub outside_addr: [u8; 4],
    /// Remote port, host order; 0 for ICMP.
    pub remote_port: u16,
    /// Outside port or ICMP echo identifier, host order.
    pub outside_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}

const _: () = assert!(size_of::<ReplyKey>() == 16);

impl ReplyKey {
    /// A reply key with zeroed padding.
    pub const fn new(
        proto: u8,
        remote_addr: [u8; 4],
        remote_port: u16,
        outside_addr: [u8; 4],
        outside_port: u16,
    ) -> Self {
        Self {
            remote_addr,
            outside_addr,
            remote_port,
            outside_port,
            proto,
            _pad: [0; 3],
        }
    }

    /// The reply half's key of the flow `key` translated to `outside`.
    pub const fn of_flow(key: &FlowKey, outside_addr: [u8; 4], outside_port: u16) -> Self {
        Self::new(
            key.proto,
            key.remote_addr,
            key.remote_port,
            outside_addr,
            outside_port,
        )
    }

    /// The key of the flow whose reply half this is, with `inside` the
    /// half's inside endpoint.
    pub const fn flow_key(&self, inside: &Endpoint) -> FlowKey {
        FlowKey::new(
            self.proto,
            inside.addr,
            inside.port,
            self.remote_addr,
            self.remote_port,
        )
    }
}

/// Value of [`map_names::CONNTRACK_REPLY`]: where an inbound packet goes and
/// what the flow's inbound direction has seen.
///
/// [`map_names::CONNTRACK_REPLY`]: crate::map_names::CONNTRACK_REPLY
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyValue {
    /// The inside endpoint the packet is translated to (protocol, container
    /// address and port or echo identifier).
    pub inside: Endpoint,
    /// The inbound direction's [`flow_flags`] bits, and the flow's
    /// [`flow_flags::HOW_OPENED`] bits copied when the half was written.
    pub flags: u64,
    /// When the last inbound packet was seen (the time the half was
    /// written, before the first).
    pub last_seen_ns: u64,
    /// Packets remote → inside.
    pub packets: u64,
    /// Bytes (IP total length) remote → inside.
    pub bytes: u64,
    /// TCP: the acknowledgment number of the last segment that came in;
    /// 0 = not seen.
    pub ack: u32,
    /// Always zero.
    pub _pad: u32,
}

const _: () = assert!(size_of::<ReplyValue>() == 48);

impl ReplyValue {
    /// The reply half of a flow from `inside` with the flow's `flags` (only the
    /// [`flow_flags::HOW_OPENED`] bits are kept), written at `now`.
    pub const fn new(inside: Endpoint, flags: u64, now: u64) -> Self {
        Self {
            inside,
            flags: flags & flow_flags::HOW_OPENED,
            last_seen_ns: now,
            packets: 0,
            bytes: 0,
            ack: 0,
            _pad: 0,
        }
    }
}

impl ReplyValue {
    /// Whether this is the reply half of the flow `key`: it leads back to
    /// the flow's inside endpoint. (A half left behind by an earlier flow
    /// on the same reply tuple leads elsewhere.)
    pub fn belongs_to(&self, key: &FlowKey) -> bool {
        self.inside == Endpoint::new(key.proto, key.inside_addr, key.inside_port)
    }
}

/// One flow as userspace shows it: the flow's value with its reply half's
/// inbound bits, time, counters and acknowledgment folded in. The counters
/// add up (a flow carried over from a netbpf without reply halves has
/// counted inbound packets in its value).
pub fn merge(flow: &FlowValue, reply: &ReplyValue) -> FlowValue {
    let mut merged = *flow;
    merged.flags |= reply.flags;
    if reply.last_seen_ns > merged.last_seen_ns {
        merged.last_seen_ns = reply.last_seen_ns;
    }
    merged.packets_in = merged.packets_in.wrapping_add(reply.packets);
    merged.bytes_in = merged.bytes_in.wrapping_add(reply.bytes);
    if reply.ack != 0 {
        merged.ack_in = reply.ack;
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{names::proto, nat::flow_flags::*};

    const C1: [u8; 4] = [10, 77, 0, 2];
    const UP: [u8; 4] = [203, 0, 113, 1];
    const REMOTE: [u8; 4] = [198, 51, 100, 7];

    #[test]
    fn the_keys_of_the_two_halves_lead_to_each_other() {
        let key = FlowKey::new(proto::TCP, C1, 40000, REMOTE, 443);
        let reply = ReplyKey::of_flow(&key, UP, 61000);
        assert_eq!(
            reply,
            ReplyKey::new(proto::TCP, REMOTE, 443, UP, 61000),
            "the reply tuple: remote → outside"
        );
        let inside = Endpoint::new(proto::TCP, C1, 40000);
        assert_eq!(reply.flow_key(&inside), key);
        let half = ReplyValue::new(inside, 0, 0);
        assert!(half.belongs_to(&key));
        let other = FlowKey::new(proto::TCP, [10, 77, 0, 3], 40000, REMOTE, 443);
        assert!(!half.belongs_to(&other), "another container's flow");
    }

    #[test]
    fn a_new_half_keeps_only_how_the_flow_was_opened() {
        let inside = Endpoint::new(proto::UDP, C1, 53);
        let half = ReplyValue::new(inside, OPENED_IN | PUBLISHED | SEEN_OUT | SYN_OUT, 7);
        assert_eq!(half.flags, OPENED_IN | PUBLISHED);
        assert_eq!((half.last_seen_ns, half.packets, half.ack), (7, 0, 0));
    }

    #[test]
    fn merging_folds_the_inbound_direction_into_the_flow() {
        let flow = FlowValue {
            outside_addr: UP,
            outside_port: 61000,
            flags: SEEN_OUT | SYN_OUT | ACK_OUT,
            created_ns: 10,
            last_seen_ns: 50,
            packets_out: 3,
            bytes_out: 180,
            packets_in: 1,
            bytes_in: 60,
            ack_out: 1000,
            ack_in: 0,
            ..Default::default()
        };
        let reply = ReplyValue {
            inside: Endpoint::new(proto::TCP, C1, 40000),
            flags: SEEN_IN | SYN_IN | ACK_IN,
            last_seen_ns: 70,
            packets: 2,
            bytes: 120,
            ack: 5000,
            _pad: 0,
        };
        let m = merge(&flow, &reply);
        assert_eq!(
            m.flags,
            SEEN_OUT | SYN_OUT | ACK_OUT | SEEN_IN | SYN_IN | ACK_IN
        );
        assert_eq!(m.last_seen_ns, 70, "the later of the two");
        assert_eq!((m.packets_in, m.bytes_in), (3, 180));
        assert_eq!((m.packets_out, m.ack_out, m.ack_in), (3, 1000, 5000));
        assert_eq!(m.created_ns, 10);
        let older = ReplyValue {
            last_seen_ns: 20,
            ack: 0,
            ..reply
        };
        let m = merge(&flow, &older);
        assert_eq!(m.last_seen_ns, 50);
        assert_eq!(m.ack_in, 0, "an unseen acknowledgment leaves the flow's");
    }
}
