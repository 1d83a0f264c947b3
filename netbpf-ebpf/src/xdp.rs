//! The fast path in XDP: established inbound NAT flows on the uplink,
//! before the kernel makes an skb.
//!
//! `netbpf_arp` (XDP on the uplink) hands every frame that is not ARP for
//! a routed container to [`inbound`]. It takes only what it can finish
//! without the skb: an unfragmented IPv4 packet without options, TCP (not
//! an opening SYN) or UDP, of a flow that already exists (a reply to a
//! masqueraded flow, or an established flow to a published port: one
//! lookup of its reply half, [`nat::established_in`]), whose
//! next hop the FIB (or `FAST_HOPS`) knows, with TTL above 1, within the
//! egress MTU. For such a packet: conntrack touched
//! ([`conntrack::touch_in`], as the tc path does), the destination address
//! and port rewritten in place with RFC 1624 updates of the IP and
//! transport checksums (a zero UDP checksum stays zero), and then one of
//! two ways on, chosen by the mode the daemon attached the program in:
//! * **redirect** (generic mode, a veth uplink): TTL minus one, the hop's
//!   MACs, and `bpf_redirect_map` into `XDP_TARGETS` (the egress device
//!   must be there);
//! * **hand-off** (native mode, `XDP_HANDOFF` in `SETTINGS`): the hop
//!   goes into an [`XdpHandoff`] record in front of the packet
//!   (`bpf_xdp_adjust_meta`, reserved before anything is written; a driver
//!   without metadata support gets `xdp_pass_no_metadata` and the packet
//!   takes tc whole), and `XDP_PASS`. The uplink's tc ingress program
//!   reads the record first (`crate::handoff`) and redirects the packet,
//!   TTL minus one and the MACs, without a lookup. The TTL and the MACs
//!   stay as they came until then, so a translated packet that tc does
//!   not redirect is an ordinary packet to the container, which the stack
//!   forwards.
//!
//! Everything else is `XDP_PASS`, untouched, and the tc programs handle
//! it exactly as without XDP: new flows, ICMP, fragments, IP options,
//! malformed packets, routed containers, the host's own traffic. A packet
//! of an established flow that XDP cannot send is counted by reason
//! (`xdp_pass_*`) and, still untouched, goes the tc way (which counts its
//! own reason again if it cannot go fast either). All decisions come
//! before the first write, so a passed packet is never half-translated and
//! its flow is touched once, by whichever path sends it.
//!
//! Two things only tc can see decide what XDP must leave alone:
//! * **the checksum state.** A sender that leaves the transport checksum
//!   to the device (`CHECKSUM_PARTIAL`, as over a veth with offload)
//!   writes only the pseudo header's sum into the field; an incremental
//!   update of that is wrong, and a redirected XDP frame loses the state.
//!   Such a field equals [`pseudo_header_seed`]; XDP passes it
//!   (`xdp_pass_checksum`) and tc's helpers handle it. A complete checksum
//!   equals the seed by a 1-in-65536 chance: that packet takes tc.
//! * **the egress device.** A native XDP redirect into a veth delivers
//!   only when the veth's peer has NAPI (GRO or an XDP program on the
//!   container's side); otherwise the frame is dropped. Generic (skb) XDP
//!   has no such condition. Userspace fills `XDP_TARGETS` with the devices
//!   that take the frames without loss in generic mode; any other egress
//!   device passes (`xdp_pass_not_forwarded`). In native mode nothing is
//!   redirected from XDP: tc redirects the skb, which every device takes.

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS, helpers::bpf_xdp_adjust_meta, programs::XdpContext,
};
use netbpf_common::{
    Counter, ReplyKey, ReplyValue, XdpHandoff, csum_update, proto, pseudo_header_seed,
    settings_flags, udp_csum_update,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

use crate::{
    conntrack, guard,
    hop::{Hop, next_hop},
    maps::XDP_TARGETS,
    nat,
    parse::{self, L4, Packet, off},
    stats,
    tuple::{Translation, Tuple},
};

/// Offset of the IPv4 header: XDP takes untagged frames only.
const IP: usize = EthHdr::LEN;
/// Offset of the transport header: XDP takes IPv4 without options only.
const L4_OFF: usize = IP + Ipv4Hdr::LEN;

/// The uplink's XDP verdict for a frame that is not ARP.
#[inline(always)]
pub(crate) fn inbound(ctx: &XdpContext) -> u32 {
    match try_inbound(ctx) {
        Ok(action) => action,
        Err(reason) => {
            stats::inc(reason);
            XDP_PASS
        }
    }
}

/// [`inbound`]'s work: `Ok(XDP_PASS)` for a packet XDP does not take,
/// `Err(reason)` for an established one it cannot send (passed too).
#[inline(always)]
fn try_inbound(ctx: &XdpContext) -> Result<u32, Counter> {
    let flags = guard::settings().flags;
    if flags & (settings_flags::VIA_STACK | settings_flags::NO_XDP) != 0 {
        return Ok(XDP_PASS);
    }
    let handoff = flags & settings_flags::XDP_HANDOFF != 0;
    let Some(pkt) = parse::parse_xdp(ctx) else {
        return Ok(XDP_PASS);
    };
    if pkt.l3_off != IP || pkt.l4_off != L4_OFF || pkt.first_fragment {
        return Ok(XDP_PASS);
    }
    let L4::Ports {
        src: sport,
        dst: dport,
        tcp_flags,
        ..
    } = pkt.l4
    else {
        // ICMP, later fragments, other protocols.
        return Ok(XDP_PASS);
    };
    // An opening SYN may open or restart a flow: tc's to decide. (Packets
    // from addresses behind the NAT have no reply half: tc drops and
    // counts them.)
    if pkt.proto == proto::TCP && conntrack::is_syn(tcp_flags) {
        return Ok(XDP_PASS);
    }
    let tuple = Tuple::of(&pkt, sport, dport);
    let Some((key, half, to)) = nat::established_in(&tuple) else {
        return Ok(XDP_PASS);
    };
    let flow = (&key, half);
    match pkt.proto {
        proto::TCP => send::<{ off::TCP_CHECK }, { TcpHdr::LEN }>(ctx, &pkt, flow, &to, handoff),
        _ => send::<{ off::UDP_CHECK }, { UdpHdr::LEN }>(ctx, &pkt, flow, &to, handoff),
    }
}

/// The destination port's offset in a TCP or a UDP header.
const DST_PORT: usize = off::UDP_DST;
const _: () = assert!(off::TCP_DST == off::UDP_DST);

/// Checks, translates and sends on (redirects, or hands off to tc when
/// `handoff`) a packet of the established flow whose reply half is `flow`
/// (key and value), or fails (`Err`: why it goes to tc) without writing
/// anything. `CHECK` is the transport checksum's offset in its header,
/// `HDR` the header's length: constants, so the verifier sees every
/// access in range.
#[inline(always)]
fn send<const CHECK: usize, const HDR: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    flow: (&ReplyKey, *mut ReplyValue),
    to: &Translation,
    handoff: bool,
) -> Result<u32, Counter> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + L4_OFF + HDR > end {
        // The parse saw the header, so never; the verifier needs it here.
        return Ok(XDP_PASS);
    }
    // SAFETY: within [start, start + L4_OFF + HDR), checked above; the
    // fields are byte arrays (alignment 1).
    let (ttl, l4_check) = unsafe {
        (
            core::ptr::read_unaligned((start + IP + off::IP_TTL) as *const [u8; 2]),
            core::ptr::read_unaligned((start + L4_OFF + CHECK) as *const [u8; 2]),
        )
    };
    if ttl[0] <= 1 {
        // The kernel sends time exceeded.
        return Err(Counter::XdpPassTtl);
    }
    let l4_len = (pkt.tot_len as usize - Ipv4Hdr::LEN) as u16;
    if l4_check != [0, 0] && l4_check == pseudo_header_seed(pkt.src, pkt.dst, pkt.proto, l4_len) {
        return Err(Counter::XdpPassChecksum);
    }
    let hop = hop_for(ctx, pkt, to.addr, handoff)?;
    // Nothing was written before this point.
    if handoff {
        return hand_off::<CHECK, HDR>(ctx, pkt, flow, to, &hop);
    }
    // SAFETY: `start` and `end` are still the frame's (no helper that
    // moves it was called), checked above.
    unsafe {
        translate::<CHECK>(start, pkt, to);
        let ip = start + IP;
        let ttl_at = (ip + off::IP_TTL) as *mut [u8; 2];
        let check_at = (ip + off::IP_CHECK) as *mut [u8; 2];
        let new_ttl = [ttl[0] - 1, ttl[1]];
        let check = csum_update(core::ptr::read_unaligned(check_at), &ttl, &new_ttl);
        core::ptr::write_unaligned(check_at, check);
        core::ptr::write_unaligned(ttl_at, new_ttl);
        // Ethernet: the hop's addresses.
        core::ptr::write_unaligned(start as *mut [u8; 6], hop.dst_mac);
        core::ptr::write_unaligned((start + 6) as *mut [u8; 6], hop.src_mac);
    }
    went_on(flow, pkt, to);
    stats::inc(Counter::FastPathIn);
    stats::inc(Counter::XdpFastIn);
    // XDP_REDIRECT. The device was checked above; were it removed since,
    // the translated packet goes to the stack, which routes it.
    Ok(XDP_TARGETS
        .redirect(hop.ifindex, XDP_PASS as u64)
        .unwrap_or(XDP_PASS))
}

/// Native mode: reserves the metadata record (`Err` if the driver has no
/// room for it: nothing is written), translates, writes the record and
/// passes the packet to the uplink's tc ingress program, which redirects
/// it (`crate::handoff`). The TTL and the MACs are tc's to write.
#[inline(always)]
fn hand_off<const CHECK: usize, const HDR: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    flow: (&ReplyKey, *mut ReplyValue),
    to: &Translation,
    hop: &Hop,
) -> Result<u32, Counter> {
    const LEN: usize = size_of::<XdpHandoff>();
    // SAFETY: plain helper call on this program's context.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(LEN as i32)) } != 0 {
        return Err(Counter::XdpPassNoMetadata);
    }
    // The helper moved the metadata pointer: every bound is checked again.
    let (meta, start, end) = (ctx.metadata(), ctx.data(), ctx.data_end());
    if meta + LEN > start || start + L4_OFF + HDR > end {
        // Never (the helper made the room, the parse saw the header); the
        // room is given back, so no stale bytes pose as a record.
        // SAFETY: as above.
        let _ = unsafe { bpf_xdp_adjust_meta(ctx.ctx, LEN as i32) };
        return Ok(XDP_PASS);
    }
    let record = XdpHandoff::new(hop.ifindex, hop.dst_mac, hop.src_mac);
    // SAFETY: the record's room and the headers were checked above.
    unsafe {
        core::ptr::write_unaligned(meta as *mut XdpHandoff, record);
        translate::<CHECK>(start, pkt, to);
    }
    went_on(flow, pkt, to);
    stats::inc(Counter::XdpHandoffIn);
    Ok(XDP_PASS)
}

/// Writes the destination address and port `to` into the frame at
/// `start`, with RFC 1624 updates of the IP header's and the transport
/// checksums.
///
/// # Safety
/// `[start, start + L4_OFF + HDR)` must be the frame's, `CHECK` and the
/// destination port within the transport header of `HDR` bytes.
#[inline(always)]
unsafe fn translate<const CHECK: usize>(start: usize, pkt: &Packet, to: &Translation) {
    let ip = start + IP;
    let l4 = start + L4_OFF;
    let check_at = (l4 + CHECK) as *mut [u8; 2];
    let port_at = (l4 + DST_PORT) as *mut [u8; 2];
    let ip_check_at = (ip + off::IP_CHECK) as *mut [u8; 2];
    let (d, a, p) = (pkt.dst, to.addr, to.port.to_be_bytes());
    // SAFETY: the caller's.
    unsafe {
        let old_port = core::ptr::read_unaligned(port_at);
        // Transport checksum: the pseudo header's destination and the
        // port (each word-aligned in what the checksum covers).
        let old = [d[0], d[1], d[2], d[3], old_port[0], old_port[1]];
        let new = [a[0], a[1], a[2], a[3], p[0], p[1]];
        let l4_check = core::ptr::read_unaligned(check_at);
        let l4_check = if pkt.proto == proto::UDP {
            udp_csum_update(l4_check, &old, &new)
        } else {
            csum_update(l4_check, &old, &new)
        };
        core::ptr::write_unaligned(check_at, l4_check);
        core::ptr::write_unaligned(port_at, p);
        // IP header: the destination.
        let ip_check = csum_update(core::ptr::read_unaligned(ip_check_at), &d, &a);
        core::ptr::write_unaligned(ip_check_at, ip_check);
        core::ptr::write_unaligned((ip + off::IP_DST) as *mut [u8; 4], a);
    }
}

/// The packet goes on: recorded on its flow, as the tc path does, and
/// counted.
#[inline(always)]
fn went_on(flow: (&ReplyKey, *mut ReplyValue), pkt: &Packet, to: &Translation) {
    conntrack::touch_in(flow.0, flow.1, pkt, conntrack::now_ns());
    nat::count_inbound(pkt, to);
}

/// The next hop towards the container `dst`, if XDP may send the packet
/// there (any device when tc redirects it: `handoff`); `Err` is why not.
#[inline(always)]
fn hop_for(ctx: &XdpContext, pkt: &Packet, dst: [u8; 4], handoff: bool) -> Result<Hop, Counter> {
    let hop = match next_hop(ctx, pkt, dst, None) {
        Ok(Some(hop)) => hop,
        Ok(None) => return Err(Counter::XdpPassNotForwarded),
        Err(Counter::FastPathNoNeighbour) => return Err(Counter::XdpPassNoNeighbour),
        Err(Counter::FastPathMtu) => return Err(Counter::XdpPassMtu),
        Err(_) => return Err(Counter::XdpPassNotForwarded),
    };
    if !handoff && XDP_TARGETS.get_ifindex(hop.ifindex).is_none() {
        return Err(Counter::XdpPassNotForwarded);
    }
    Ok(hop)
}
