//! The IPv6 side of the parse: the fixed header (RFC 8200 §3) of an skb
//! or an XDP frame, through the same bounds-checked [`Cursor`] as IPv4.

use aya_ebpf::programs::{TcContext, XdpContext};
use netbpf_common::Counter;
use network_types::eth::EthHdr;

use crate::parse::{Cursor, ETH_P_IPV6, ParseError};

/// Length of the fixed IPv6 header.
pub(crate) const IPV6_HDR_LEN: usize = 40;
/// Offset of the hop limit in the IPv6 header.
pub(crate) const IPV6_HOP_LIMIT: usize = 7;
/// Bytes of headers an IPv6 program needs in the linear area: Ethernet,
/// the fixed IPv6 header, a Neighbour Solicitation with its options.
const MAX_HDR6_LEN: u32 = (EthHdr::LEN + IPV6_HDR_LEN + 56) as u32;

/// An IPv6 packet's fixed header (RFC 8200 §3). Extension headers are not
/// walked: forwarding does not need them, and NDP is only answered when
/// ICMPv6 follows the fixed header directly (an NDP message behind an
/// extension header goes to the kernel).
#[derive(Clone, Copy)]
pub(crate) struct Packet6 {
    /// Offset of the IPv6 header.
    pub l3_off: usize,
    /// Offset of what follows the fixed header.
    pub l4_off: usize,
    /// The fixed header's next header.
    pub next_hdr: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Payload length (everything after the fixed header).
    pub payload_len: usize,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
}

impl Packet6 {
    /// All zero: what a parse fills in.
    pub(crate) const EMPTY: Packet6 = Packet6 {
        l3_off: 0,
        l4_off: 0,
        next_hdr: 0,
        hop_limit: 0,
        payload_len: 0,
        src: [0; 16],
        dst: [0; 16],
    };
}

/// Parses the fixed IPv6 header of the untagged frame `[start, end)` of
/// `pkt_len` bytes into `out` (an out parameter, not an `Option`: LLVM
/// reads the payload of a `None` on paths the verifier then rejects).
/// `Ok(false)`: not IPv6; `Short`: not all in the linear area; malformed:
/// version not 6, or a payload length past the packet's end (a
/// jumbogram's zero included: netbpf does not forward those).
#[inline(always)]
fn parse6(start: usize, end: usize, pkt_len: usize, out: &mut Packet6) -> Result<bool, ParseError> {
    let cur = Cursor::new(start, end);
    let ether_type: [u8; 2] = cur.read(12).ok_or(ParseError::Short)?;
    if ether_type != ETH_P_IPV6 {
        return Ok(false);
    }
    let l3_off = EthHdr::LEN;
    // Three reads rather than one of 40 bytes: the fields land where they
    // are kept, with no copy of the whole header on the BPF stack.
    let head: [u8; 8] = cur.read(l3_off).ok_or(ParseError::Short)?;
    out.src = cur.read(l3_off + 8).ok_or(ParseError::Short)?;
    out.dst = cur.read(l3_off + 24).ok_or(ParseError::Short)?;
    let payload_len = u16::from_be_bytes([head[4], head[5]]) as usize;
    if head[0] >> 4 != 6 || l3_off + IPV6_HDR_LEN + payload_len > pkt_len {
        return Err(ParseError::Malformed(Counter::DropMalformedIp));
    }
    out.l3_off = l3_off;
    out.l4_off = l3_off + IPV6_HDR_LEN;
    out.next_hdr = head[6];
    out.hop_limit = head[IPV6_HOP_LIMIT];
    out.payload_len = payload_len;
    Ok(true)
}

/// [`parse6`] for an skb, pulling the headers into the linear area when
/// they are not there. `Ok(false)`: not IPv6; `Err`: malformed or
/// truncated.
#[inline(always)]
pub(crate) fn parse_ipv6_tc(ctx: &TcContext, out: &mut Packet6) -> Result<bool, Counter> {
    let len = ctx.len() as usize;
    match parse6(ctx.data(), ctx.data_end(), len, out) {
        Ok(v6) => Ok(v6),
        Err(ParseError::Malformed(reason)) => Err(reason),
        Err(_) => {
            let want = if (len as u32) < MAX_HDR6_LEN {
                len as u32
            } else {
                MAX_HDR6_LEN
            };
            if ctx.pull_data(want).is_err() {
                return Err(Counter::DropMalformedIp);
            }
            match parse6(ctx.data(), ctx.data_end(), len, out) {
                Ok(v6) => Ok(v6),
                Err(ParseError::Malformed(reason)) => Err(reason),
                Err(_) => Err(Counter::DropMalformedIp),
            }
        }
    }
}

/// Whether the XDP frame is untagged IPv6 (by its EtherType alone).
#[inline(always)]
pub(crate) fn is_ipv6_xdp(ctx: &XdpContext) -> bool {
    let cur = Cursor::new(ctx.data(), ctx.data_end());
    cur.read::<[u8; 2]>(12) == Some(ETH_P_IPV6)
}

/// [`parse6`] for an XDP frame. `false`: not IPv6, or anything the kernel
/// should judge (malformed, truncated); the caller passes it untouched.
#[inline(always)]
pub(crate) fn parse_ipv6_xdp(ctx: &XdpContext, out: &mut Packet6) -> bool {
    let (start, end) = (ctx.data(), ctx.data_end());
    matches!(parse6(start, end, end - start, out), Ok(true))
}
