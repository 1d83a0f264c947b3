//! The NAT's view of a packet: its protocol, addresses and ports (for ICMP
//! echo, the identifier as a port), and what one side is translated to.

use crate::parse::{ICMP_ECHO_REQUEST, L4, Packet};

/// The addresses and ports of a packet as the NAT sees them. For TCP/UDP
/// the ports; for ICMP echo the identifier as the source port of a request
/// (and destination port of a reply), the other port 0.
#[derive(Clone, Copy)]
pub(crate) struct Tuple {
    pub proto: u8,
    pub src: [u8; 4],
    pub sport: u16,
    pub dst: [u8; 4],
    pub dport: u16,
}

impl Tuple {
    /// The tuple of `pkt` with these ports (or echo identifier).
    #[inline(always)]
    pub(crate) fn of(pkt: &Packet, sport: u16, dport: u16) -> Tuple {
        Tuple {
            proto: pkt.proto,
            src: pkt.src,
            sport,
            dst: pkt.dst,
            dport,
        }
    }
}

/// What one side of a packet is translated to.
#[derive(Clone, Copy)]
pub(crate) struct Translation {
    pub addr: [u8; 4],
    pub port: u16,
    /// The flow goes to a published port (DNAT) rather than a mapping.
    pub published: bool,
}

/// The tuple of a packet the masquerade translates as a flow: TCP or UDP
/// (its ports), or an ICMP echo request (the identifier as the source
/// "port"). `None` for everything else (errors, fragments, other types).
#[inline(always)]
pub(crate) fn out_tuple(pkt: &Packet) -> Option<Tuple> {
    match pkt.l4 {
        L4::Ports { src, dst, .. } => Some(Tuple::of(pkt, src, dst)),
        L4::Icmp {
            icmp_type: ICMP_ECHO_REQUEST,
            id,
        } => Some(Tuple::of(pkt, id, 0)),
        _ => None,
    }
}
