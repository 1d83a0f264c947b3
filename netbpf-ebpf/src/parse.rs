//! Packet parsing: one bounds-checked cursor, one `parse_*` per layer.
//!
//! Contract: every read goes through [`Cursor`], which checks the read
//! against `data_end` before it happens (the verifier requires it, and it is
//! what keeps a truncated packet from being misread). A parser either returns
//! the header it read and advances, or fails with the [`Counter`] that names
//! why the packet is malformed. Offsets are relative to the start of the
//! Ethernet header, so the rewrite layer can use them with
//! `bpf_skb_store_bytes` and the checksum helpers.

use core::mem::{offset_of, size_of};

use aya_ebpf::programs::{TcContext, XdpContext};
use netbpf_common::{Counter, FragKey, proto};
use network_types::{eth::EthHdr, icmp::Icmpv4Hdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

/// EtherType of IPv4, as it appears in memory on a little-endian host.
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();

/// ICMP echo reply.
pub(crate) const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP echo request.
pub(crate) const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP destination unreachable (incl. fragmentation needed).
pub(crate) const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP time exceeded.
pub(crate) const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP parameter problem.
pub(crate) const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// TCP flag bits in the 13th byte of the header.
pub(crate) mod tcp_flags {
    pub(crate) const FIN: u8 = 0x01;
    pub(crate) const SYN: u8 = 0x02;
    pub(crate) const RST: u8 = 0x04;
    pub(crate) const ACK: u8 = 0x10;
}

/// Offset of the TCP data offset (high nibble) in the header.
const TCP_DOFF_OFF: usize = 12;
/// Offset of the TCP flags byte.
const TCP_FLAGS_OFF: usize = 13;

/// Bytes of headers the parser may need in the linear part of an skb:
/// Ethernet + the longest IPv4 header + a TCP header.
const MAX_HDR_LEN: u32 = (EthHdr::LEN + 60 + TcpHdr::LEN) as u32;

/// The largest IPv4 header offset a direct write accepts (Ethernet plus
/// two VLAN tags): a bound the verifier can see.
pub(crate) const MAX_L3_OFF: usize = 22;

/// The largest transport header offset a direct write accepts: the
/// largest IPv4 header (with options) at [`MAX_L3_OFF`].
pub(crate) const MAX_L4_OFF: usize = MAX_L3_OFF + 60;

/// A bounds-checked read position in packet memory.
pub(crate) struct Cursor {
    start: usize,
    end: usize,
}

impl Cursor {
    /// A cursor over the packet bytes `[start, end)`.
    #[inline(always)]
    pub(crate) fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// A pointer to a `T` at byte `off` from the start of the packet, if
    /// the packet holds one there.
    #[inline(always)]
    pub(crate) fn ptr<T>(&self, off: usize) -> Option<*const T> {
        let at = self.start + off;
        if at + size_of::<T>() > self.end {
            return None;
        }
        Some(at as *const T)
    }

    /// Reads a `T` at byte `off` from the start of the packet.
    #[inline(always)]
    pub(crate) fn read<T: Copy>(&self, off: usize) -> Option<T> {
        let at = self.start + off;
        if at + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: bounds checked above; the header types are byte arrays
        // (alignment 1), so an unaligned read is fine.
        Some(unsafe { core::ptr::read_unaligned(at as *const T) })
    }
}

/// The transport part of a parsed packet.
#[derive(Clone, Copy)]
pub(crate) enum L4 {
    /// TCP or UDP ports (host order) and, for TCP, the flags byte.
    Ports {
        src: u16,
        dst: u16,
        tcp_flags: u8,
        /// TCP sequence number (0 for UDP).
        seq: u32,
        /// TCP acknowledgment number (0 for UDP).
        ack: u32,
    },
    /// ICMP with its type; `id` is the echo identifier (host order) for
    /// echo request/reply, 0 otherwise.
    Icmp { icmp_type: u8, id: u16 },
    /// A protocol netbpf does not parse.
    Other,
    /// A fragment other than the first: no transport header.
    Fragment,
}

/// An IPv4 packet's fields and where they are.
#[derive(Clone, Copy)]
pub(crate) struct Packet {
    /// Offset of the IPv4 header.
    pub l3_off: usize,
    /// Offset of the transport header.
    pub l4_off: usize,
    /// IP protocol number.
    pub proto: u8,
    /// Source address, network order.
    pub src: [u8; 4],
    /// Destination address, network order.
    pub dst: [u8; 4],
    /// IP total length (for byte counters).
    pub tot_len: u32,
    /// Transport header.
    pub l4: L4,
    /// IP identification (memory order), which ties fragments together.
    pub ip_id: [u8; 2],
    /// The first fragment of a fragmented datagram (MF set, offset 0): its
    /// transport header is parsed; the translation it gets is remembered
    /// for the fragments that follow.
    pub first_fragment: bool,
}

impl Packet {
    /// The datagram this packet (or fragment) belongs to, as on the wire.
    #[inline(always)]
    pub(crate) fn frag_key(&self) -> FragKey {
        FragKey {
            src: self.src,
            dst: self.dst,
            id: self.ip_id,
            proto: self.proto,
            _pad: 0,
        }
    }
}

/// The first bytes of a frame, read before (or instead of) a full parse:
/// the programs that see every frame of an interface decide from these
/// whether it is theirs at all.
#[derive(Clone, Copy)]
pub(crate) struct Peek {
    /// Ethernet destination.
    pub eth_dst: [u8; 6],
    /// EtherType, as on the wire.
    pub ether_type: [u8; 2],
    /// IPv4 destination (only for an IPv4 frame with a whole minimal
    /// header; zero otherwise).
    pub ip_dst: [u8; 4],
}

/// Reads the Ethernet header and, for IPv4, the destination address, in
/// one `bpf_skb_load_bytes` (paged data is fine). `None`: shorter than an
/// Ethernet header.
#[inline(always)]
pub(crate) fn peek(ctx: &TcContext) -> Option<Peek> {
    const DST: usize = EthHdr::LEN + offset_of!(Ipv4Hdr, dst_addr);
    const LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN;
    let (eth, ip_dst) = match ctx.load::<[u8; LEN]>(0) {
        Ok(b) => {
            let ip_dst = if u16::from_ne_bytes([b[12], b[13]]) == ETH_P_IP_BE {
                [b[DST], b[DST + 1], b[DST + 2], b[DST + 3]]
            } else {
                [0; 4]
            };
            let mut eth = [0u8; EthHdr::LEN];
            eth.copy_from_slice(&b[..EthHdr::LEN]);
            (eth, ip_dst)
        }
        // A runt: an Ethernet header at most.
        Err(_) => (ctx.load::<[u8; EthHdr::LEN]>(0).ok()?, [0; 4]),
    };
    Some(Peek {
        eth_dst: [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]],
        ether_type: [eth[12], eth[13]],
        ip_dst,
    })
}

/// Why parsing did not produce a packet to work on.
pub(crate) enum ParseError {
    /// Not IPv4 (ARP, IPv6, ...): not ours.
    NotIpv4,
    /// The headers are not all in the linear part of the buffer; pulling
    /// more of the skb may help.
    Short,
    /// The packet is malformed; the counter says how.
    Malformed(Counter),
}

/// Parses the Ethernet + IPv4 + transport headers of an skb. Non-IPv4
/// frames come back as `Ok(None)`.
#[inline(always)]
pub(crate) fn parse_tc(ctx: &TcContext) -> Result<Option<Packet>, Counter> {
    let len = ctx.len() as usize;
    match parse(ctx.data(), ctx.data_end(), len) {
        Ok(pkt) => Ok(Some(pkt)),
        Err(ParseError::NotIpv4) => Ok(None),
        Err(ParseError::Malformed(reason)) => Err(reason),
        Err(ParseError::Short) => {
            // Headers may sit in paged data (GRO, some drivers): pull the
            // header bytes into the linear area and parse again.
            let want = if (len as u32) < MAX_HDR_LEN {
                len as u32
            } else {
                MAX_HDR_LEN
            };
            if ctx.pull_data(want).is_err() {
                return Err(Counter::DropMalformedIp);
            }
            match parse(ctx.data(), ctx.data_end(), len) {
                Ok(pkt) => Ok(Some(pkt)),
                Err(ParseError::NotIpv4) => Ok(None),
                Err(ParseError::Malformed(reason)) => Err(reason),
                // Still short after the pull: the packet really is truncated.
                Err(ParseError::Short) => Err(Counter::DropMalformedIp),
            }
        }
    }
}

/// Parses the Ethernet + IPv4 + transport headers of an XDP frame (all in
/// `[data, data_end)`: netbpf loads no multi-buffer XDP program). `None`:
/// not IPv4, or anything the tc programs should judge (malformed,
/// truncated); the caller passes it on untouched.
#[inline(always)]
pub(crate) fn parse_xdp(ctx: &XdpContext) -> Option<Packet> {
    let (start, end) = (ctx.data(), ctx.data_end());
    parse(start, end, end - start).ok()
}

/// Parses one frame in `[start, end)` (the linear part of a packet of
/// `pkt_len` bytes in all).
#[inline(always)]
fn parse(start: usize, end: usize, pkt_len: usize) -> Result<Packet, ParseError> {
    let cur = Cursor { start, end };
    let eth: EthHdr = cur.read(0).ok_or(ParseError::Short)?;
    if eth.ether_type != ETH_P_IP_BE {
        return Err(ParseError::NotIpv4);
    }
    let l3_off = EthHdr::LEN;
    parse_ipv4(&cur, l3_off, pkt_len)
}

/// Parses the IPv4 header at `l3_off` and the transport header after it.
/// The IP total length must fit in the `pkt_len` bytes of the packet
/// (RFC 1812 §5.2.2: a packet shorter than its header says is invalid).
#[inline(always)]
fn parse_ipv4(cur: &Cursor, l3_off: usize, pkt_len: usize) -> Result<Packet, ParseError> {
    let ip: Ipv4Hdr = cur.read(l3_off).ok_or(ParseError::Short)?;
    let ihl = ((ip.vihl & 0x0f) as usize) * 4;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return Err(ParseError::Malformed(Counter::DropMalformedIp));
    }
    let mut tot_len = u16::from_be_bytes(ip.tot_len) as usize;
    if tot_len == 0 && pkt_len > l3_off + 0xffff {
        // IPv4 BIG TCP: a GSO packet over 64 KiB carries total length 0.
        tot_len = pkt_len - l3_off;
    }
    if tot_len < ihl || l3_off + tot_len > pkt_len {
        return Err(ParseError::Malformed(Counter::DropMalformedIp));
    }
    let l4_off = l3_off + ihl;
    // The options (if any) must be present too.
    let _: u8 = cur.read(l4_off - 1).ok_or(ParseError::Short)?;

    let frag = u16::from_be_bytes(ip.frags);
    let more_fragments = frag & 0x2000 != 0;
    let frag_offset = frag & 0x1fff;
    let mut pkt = Packet {
        l3_off,
        l4_off,
        proto: ip.proto,
        src: ip.src_addr,
        dst: ip.dst_addr,
        tot_len: tot_len as u32,
        l4: L4::Other,
        ip_id: ip.id,
        first_fragment: more_fragments && frag_offset == 0,
    };
    if frag_offset != 0 {
        // Only the first fragment carries the transport header.
        pkt.l4 = L4::Fragment;
        return Ok(pkt);
    }
    // Length the transport header may use, per the IP header.
    let l4_room = tot_len - ihl;
    pkt.l4 = match ip.proto {
        proto::TCP => parse_tcp(cur, l4_off, l4_room)?,
        proto::UDP => parse_udp(cur, l4_off, l4_room, pkt.first_fragment)?,
        proto::ICMP => parse_icmp(cur, l4_off, l4_room)?,
        _ => L4::Other,
    };
    Ok(pkt)
}

#[inline(always)]
fn parse_tcp(cur: &Cursor, off: usize, room: usize) -> Result<L4, ParseError> {
    if room < TcpHdr::LEN {
        return Err(ParseError::Malformed(Counter::DropMalformedL4));
    }
    // Read the fixed header as bytes: one bounds check covers the ports,
    // the data offset and the flags.
    let tcp: [u8; TcpHdr::LEN] = cur.read(off).ok_or(ParseError::Short)?;
    let doff = ((tcp[TCP_DOFF_OFF] >> 4) as usize) * 4;
    if doff < TcpHdr::LEN || doff > room {
        return Err(ParseError::Malformed(Counter::DropMalformedL4));
    }
    Ok(L4::Ports {
        src: u16::from_be_bytes([tcp[0], tcp[1]]),
        dst: u16::from_be_bytes([tcp[2], tcp[3]]),
        tcp_flags: tcp[TCP_FLAGS_OFF],
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
    })
}

#[inline(always)]
fn parse_udp(cur: &Cursor, off: usize, room: usize, fragment: bool) -> Result<L4, ParseError> {
    if room < UdpHdr::LEN {
        return Err(ParseError::Malformed(Counter::DropMalformedL4));
    }
    let udp: UdpHdr = cur.read(off).ok_or(ParseError::Short)?;
    let len = u16::from_be_bytes(udp.len) as usize;
    // A first fragment holds only part of the datagram its length covers.
    if len < UdpHdr::LEN || (len > room && !fragment) {
        return Err(ParseError::Malformed(Counter::DropMalformedL4));
    }
    Ok(L4::Ports {
        src: u16::from_be_bytes(udp.src),
        dst: u16::from_be_bytes(udp.dst),
        tcp_flags: 0,
        seq: 0,
        ack: 0,
    })
}

#[inline(always)]
fn parse_icmp(cur: &Cursor, off: usize, room: usize) -> Result<L4, ParseError> {
    if room < Icmpv4Hdr::LEN {
        return Err(ParseError::Malformed(Counter::DropMalformedL4));
    }
    let icmp: Icmpv4Hdr = cur.read(off).ok_or(ParseError::Short)?;
    let id = match icmp.type_ {
        ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => u16::from_be_bytes([icmp.data[0], icmp.data[1]]),
        _ => 0,
    };
    Ok(L4::Icmp {
        icmp_type: icmp.type_,
        id,
    })
}

/// Bytes of headers an ICMP error needs in the linear area: Ethernet, outer
/// IPv4 with options, ICMP header, quoted IPv4 with options, 8 bytes of
/// the quoted transport header (plus room for a TCP checksum).
const MAX_ICMP_ERR_HDR_LEN: u32 = (EthHdr::LEN + 60 + 8 + 60 + 20) as u32;

/// The packet quoted in an ICMP error (RFC 792: its IP header and at least
/// the first 8 bytes of its payload).
#[derive(Clone, Copy)]
pub(crate) struct Quoted {
    /// Offset of the quoted IPv4 header.
    pub l3_off: usize,
    /// Offset of the quoted transport header.
    pub l4_off: usize,
    /// Bytes of the quoted transport header present in the packet.
    pub l4_len: usize,
    /// Its protocol.
    pub proto: u8,
    /// Its source address.
    pub src: [u8; 4],
    /// Its destination address.
    pub dst: [u8; 4],
    /// TCP/UDP source port, or the identifier of a quoted echo request.
    pub sport: u16,
    /// TCP/UDP destination port (0 for ICMP).
    pub dport: u16,
    /// Type of a quoted ICMP message.
    pub icmp_type: u8,
}

/// Parses the packet quoted in the ICMP error `pkt`. Options in the quoted
/// header are stepped over (RFC 5508 REQ-3b); a quoted non-first fragment
/// has no transport header and is malformed for NAT purposes.
#[inline(always)]
pub(crate) fn parse_quoted(ctx: &TcContext, pkt: &Packet) -> Result<Quoted, Counter> {
    let end = pkt.l3_off + pkt.tot_len as usize;
    let off = pkt.l4_off + Icmpv4Hdr::LEN;
    match quoted(ctx.data(), ctx.data_end(), off, end) {
        Err(ParseError::Short) => {
            let len = ctx.len();
            let want = if len < MAX_ICMP_ERR_HDR_LEN {
                len
            } else {
                MAX_ICMP_ERR_HDR_LEN
            };
            if ctx.pull_data(want).is_err() {
                return Err(Counter::DropMalformedL4);
            }
            quoted(ctx.data(), ctx.data_end(), off, end).map_err(|_| Counter::DropMalformedL4)
        }
        other => other.map_err(|_| Counter::DropMalformedL4),
    }
}

#[inline(always)]
fn quoted(start: usize, end: usize, off: usize, pkt_end: usize) -> Result<Quoted, ParseError> {
    let cur = Cursor { start, end };
    let ip: Ipv4Hdr = cur.read(off).ok_or(ParseError::Short)?;
    let ihl = ((ip.vihl & 0x0f) as usize) * 4;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return Err(ParseError::Malformed(Counter::DropMalformedL4));
    }
    if u16::from_be_bytes(ip.frags) & 0x1fff != 0 {
        return Err(ParseError::Malformed(Counter::DropMalformedL4));
    }
    let l4_off = off + ihl;
    if l4_off + 8 > pkt_end {
        return Err(ParseError::Malformed(Counter::DropMalformedL4));
    }
    let l4: [u8; 8] = cur.read(l4_off).ok_or(ParseError::Short)?;
    let mut q = Quoted {
        l3_off: off,
        l4_off,
        l4_len: pkt_end - l4_off,
        proto: ip.proto,
        src: ip.src_addr,
        dst: ip.dst_addr,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        icmp_type: 0,
    };
    if ip.proto == proto::ICMP {
        q.icmp_type = l4[0];
        q.sport = u16::from_be_bytes([l4[4], l4[5]]);
        q.dport = 0;
    }
    Ok(q)
}

/// EtherType of IPv6, as on the wire.
pub(crate) const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];

/// Offsets of fields the rewrite layer changes, relative to their header.
pub(crate) mod off {
    use super::*;

    /// IPv4 source address.
    pub(crate) const IP_SRC: usize = offset_of!(Ipv4Hdr, src_addr);
    /// IPv4 destination address.
    pub(crate) const IP_DST: usize = offset_of!(Ipv4Hdr, dst_addr);
    /// IPv4 header checksum.
    pub(crate) const IP_CHECK: usize = offset_of!(Ipv4Hdr, check);
    /// IPv4 TTL (followed by the protocol: one 16-bit checksum word).
    pub(crate) const IP_TTL: usize = offset_of!(Ipv4Hdr, ttl);
    /// TCP source port.
    pub(crate) const TCP_SRC: usize = offset_of!(TcpHdr, source);
    /// TCP destination port.
    pub(crate) const TCP_DST: usize = offset_of!(TcpHdr, dest);
    /// TCP checksum.
    pub(crate) const TCP_CHECK: usize = offset_of!(TcpHdr, check);
    /// UDP source port.
    pub(crate) const UDP_SRC: usize = offset_of!(UdpHdr, src);
    /// UDP destination port.
    pub(crate) const UDP_DST: usize = offset_of!(UdpHdr, dst);
    /// UDP checksum.
    pub(crate) const UDP_CHECK: usize = offset_of!(UdpHdr, check);
    /// ICMP checksum.
    pub(crate) const ICMP_CHECK: usize = offset_of!(Icmpv4Hdr, check);
    /// ICMP echo identifier (first two bytes of the rest-of-header).
    pub(crate) const ICMP_ID: usize = offset_of!(Icmpv4Hdr, data);
}
