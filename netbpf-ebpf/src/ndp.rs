//! Neighbour Discovery answered in the datapath for routed containers'
//! IPv6 addresses: the IPv6 counterpart of `crate::arp`.
//!
//! * **the uplink** (XDP, [`uplink`]): a node on the segment solicits a
//!   routed container's IPv6 address; netbpf answers with a Neighbour
//!   Advertisement carrying the uplink's MAC (solicited, override, a
//!   target link-layer address option) and sends it back out of the same
//!   port (`XDP_TX`). A duplicate address detection probe for it (source
//!   `::`) is answered to all nodes, which defends the address.
//! * **a container's veth** (tc ingress, [`from_container`]): the
//!   container solicits its gateway (`fe80::1`, or whatever it routes
//!   through); netbpf answers with the host-side veth's MAC (router flag
//!   set) and redirects the reply back to the container, as ARP is
//!   answered there.
//!
//! A solicitation is read once, through the parse cursor, at fixed
//! offsets: untagged Ethernet, the fixed IPv6 header, ICMPv6 directly
//! after it, at most [`NS_MAX_OPTION_BYTES`] of options (one bounded loop).
//! The RFC 4861 §7.1.1 checks and the reply's bytes are
//! `netbpf_common::ndp`'s. A solicitation that netbpf would answer but
//! that fails a check is dropped with its reason counted
//! (`drop_ndp_hop_limit`, `drop_ndp_bad_checksum`, `drop_ndp_invalid`);
//! every other NDP message passes to the kernel untouched.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{bpf_csum_diff, bpf_redirect, bpf_xdp_adjust_tail},
    programs::{TcContext, XdpContext},
};
use netbpf_common::{
    Advert, ContainerIf6, Counter, ICMPV6_NS, NA_FRAME_LEN, NA_IP_HEAD, NEXT_HDR_ICMPV6, NS_LEN,
    NS_MAX_OPTION_BYTES, NsFacts, OPT_SOURCE_LLADDR, check_ns, csum_fold, is_unspecified6,
    na_destination, na_head, na_option,
};
use network_types::eth::EthHdr;

use crate::{
    Verdict,
    maps::{CONTAINERS6, ROUTE_UPLINK},
    parse::{Cursor, ETH_P_IPV6},
    parse6::{IPV6_HDR_LEN, Packet6, parse_ipv6_xdp},
    stats,
};

/// Offset of the ICMPv6 message: untagged Ethernet, the fixed IPv6 header.
const ICMP: usize = EthHdr::LEN + IPV6_HDR_LEN;
/// Option units (8 bytes each) read at most.
const MAX_UNITS: usize = NS_MAX_OPTION_BYTES / 8;

/// What netbpf reads of a solicitation besides its addresses (which stay
/// where they are: in the parsed IPv6 header, the caller's target, the
/// packet). Link-layer addresses are pointers into the packet: valid until
/// its size changes, and read only before that.
struct NsView {
    code: u8,
    len: usize,
    options_ok: bool,
    /// The source link-layer address option's address, or null.
    source_lladdr: *const [u8; 6],
    checksum_ok: bool,
    /// The Ethernet source.
    eth_src: *const [u8; 6],
}

impl NsView {
    /// The facts `netbpf_common::check_ns` takes.
    ///
    /// # Safety
    /// The packet must not have changed size since [`read_ns`].
    #[inline(always)]
    unsafe fn facts<'a>(&self, ip: &'a Packet6, target: &'a [u8; 16]) -> NsFacts<'a> {
        NsFacts {
            hop_limit: ip.hop_limit,
            src: &ip.src,
            dst: &ip.dst,
            code: self.code,
            len: self.len,
            target,
            options_ok: self.options_ok,
            // SAFETY: bounds-checked packet memory (the caller's contract).
            source_lladdr: unsafe { self.source_lladdr.as_ref() },
            checksum_ok: self.checksum_ok,
        }
    }
}

/// The one's-complement sum (`bpf_csum_diff`, 32-bit words in memory
/// order) of the `N` bytes of the packet at `off`; `None` if the packet is
/// shorter. The kernel sums, so no packet byte passes through a register
/// of this program (and none through its stack).
#[inline(always)]
fn csum_at<const N: usize>(cur: &Cursor, off: usize) -> Option<u64> {
    let at = cur.ptr::<[u8; N]>(off)?;
    // SAFETY: `at` points at `N` bounds-checked bytes of packet memory;
    // the helper only reads them.
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, at as *mut u32, N as u32, 0) };
    if sum < 0 {
        return None;
    }
    Some(sum as u64)
}

/// Whether the ICMPv6 checksum of the solicitation in `cur` (`len` bytes
/// of message, a multiple of 8 from [`NS_LEN`] to [`NS_LEN`] +
/// [`NS_MAX_OPTION_BYTES`]) verifies: the addresses of the IPv6 header
/// (which are the pseudo-header's), its length and next header, and the
/// message, summed in memory order, fold to all ones in either order.
#[inline(always)]
fn checksum_ok(cur: &Cursor, len: usize) -> Option<bool> {
    const ADDRS: usize = EthHdr::LEN + 8;
    let message = match len {
        24 => csum_at::<24>(cur, ICMP)?,
        32 => csum_at::<32>(cur, ICMP)?,
        40 => csum_at::<40>(cur, ICMP)?,
        48 => csum_at::<48>(cur, ICMP)?,
        56 => csum_at::<56>(cur, ICMP)?,
        _ => return Some(false),
    };
    let rest = u16::from_ne_bytes((len as u16).to_be_bytes()) as u64
        + u16::from_ne_bytes([0, NEXT_HDR_ICMPV6]) as u64;
    Some(csum_fold(csum_at::<32>(cur, ADDRS)? + message + rest) == 0xffff)
}
const _: () = assert!(NS_LEN + NS_MAX_OPTION_BYTES == 56);

/// Reads the target of the Neighbour Solicitation in `cur` whose IPv6
/// header is `ip`. `None`: not a solicitation netbpf reads (not ICMPv6
/// right after the fixed header, not type 135, truncated), which the
/// kernel handles.
#[inline(always)]
fn ns_target(cur: &Cursor, ip: &Packet6) -> Option<[u8; 16]> {
    if ip.l4_off != ICMP || ip.next_hdr != NEXT_HDR_ICMPV6 {
        return None;
    }
    let kind: u8 = cur.read(ICMP)?;
    if kind != ICMPV6_NS {
        return None;
    }
    cur.read(ICMP + 8)
}

/// Reads the rest of the solicitation [`ns_target`] found: code, length,
/// options (one bounded loop over at most [`MAX_UNITS`] units) and the
/// checksum. `None`: more options than netbpf reads, or truncated.
#[inline(always)]
fn read_ns(cur: &Cursor, ip: &Packet6) -> Option<NsView> {
    let len = ip.payload_len;
    if len > NS_LEN + NS_MAX_OPTION_BYTES {
        return None;
    }
    let code: u8 = cur.read(ICMP + 1)?;
    let eth_src = cur.ptr::<[u8; 6]>(6)?;
    // Options: whole 8-byte units, each of a non-zero length.
    let mut options_ok = len >= NS_LEN && (len - NS_LEN).is_multiple_of(8);
    let units = if options_ok { (len - NS_LEN) / 8 } else { 0 };
    let mut source_lladdr = core::ptr::null();
    let mut next_option = 0;
    let mut i = 0;
    while i < MAX_UNITS {
        if i >= units {
            break;
        }
        if i == next_option {
            let off = ICMP + NS_LEN + 8 * i;
            let kind: u8 = cur.read(off)?;
            let units_long: u8 = cur.read(off + 1)?;
            let units_long = units_long as usize;
            if units_long == 0 || i + units_long > units {
                options_ok = false;
                next_option = MAX_UNITS;
            } else {
                if kind == OPT_SOURCE_LLADDR && units_long == 1 {
                    source_lladdr = cur.ptr::<[u8; 6]>(off + 2)?;
                }
                next_option = i + units_long;
            }
        }
        i += 1;
    }
    // A malformed length is reported as such, not as a checksum.
    let checksum_ok = !options_ok || checksum_ok(cur, len)?;
    Some(NsView {
        code,
        len,
        options_ok,
        source_lladdr,
        checksum_ok,
        eth_src,
    })
}

/// Turns the valid solicitation `ns` (in `[start, end)`, read by
/// [`read_ns`]) into the advertisement that answers it, in two steps
/// around the resize: first [`readdress`] writes the addresses that come
/// from the solicitation (Ethernet and IPv6 destination, the target as
/// IPv6 source), then, the frame [`NA_FRAME_LEN`] bytes long, [`finish`]
/// writes the rest and the checksum. The target stays where it is: a
/// solicitation and an advertisement carry it at the same offset. The
/// result is `netbpf_common::na_frame`'s, byte for byte.
///
/// Returns the advertisement's flags (`router`: the router flag, set when
/// netbpf answers for the container's gateway); `false`-like `None`: the
/// frame is too short, nothing written.
///
/// # Safety
/// `ns` must come from this packet, unchanged in size since.
#[inline(always)]
unsafe fn readdress(
    start: usize,
    end: usize,
    ns: &NsFacts<'_>,
    eth_src: &[u8; 6],
    router: bool,
) -> Option<u8> {
    if start + ICMP + 8 > end {
        return None;
    }
    let (eth_dst, ip_dst, flags) = na_destination(ns, eth_src, router);
    // SAFETY: within the bounds checked above; the sources are the
    // solicitation's own bytes past these (link-layer addresses) or the
    // BPF stack, so nothing is overwritten before it is read.
    unsafe {
        put(start, *eth_dst);
        put(start + 22 + 16, *ip_dst);
        put(start + 22, *ns.target);
    }
    Some(flags)
}

/// The second step of [`readdress`]: the advertisement's fixed fields,
/// `mac` as Ethernet source and target link-layer address, the checksum.
/// `false`: the frame is shorter than [`NA_FRAME_LEN`], nothing written.
#[inline(always)]
fn finish(start: usize, end: usize, mac: &[u8; 6], flags: u8) -> bool {
    if start + NA_FRAME_LEN > end {
        return false;
    }
    // SAFETY: every access lies within the `NA_FRAME_LEN` bytes from
    // `start` checked above; byte arrays have alignment 1.
    unsafe {
        put(start + 6, *mac);
        put(start + 12, ETH_P_IPV6);
        put(start + 14, NA_IP_HEAD);
        let a = Advert {
            eth_dst: &*(start as *const [u8; 6]),
            mac,
            target: &*((start + 22) as *const [u8; 16]),
            ip_dst: &*((start + 38) as *const [u8; 16]),
            flags,
        };
        put(start + ICMP + 24, na_option(&a));
        put(start + ICMP, na_head(&a));
    }
    true
}

/// Writes the byte array `v` at `at`.
///
/// # Safety
/// `[at, at + N)` must be writable packet memory.
#[inline(always)]
unsafe fn put<const N: usize>(at: usize, v: [u8; N]) {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::write_unaligned(at as *mut [u8; N], v) }
}

/// XDP on the uplink, for an IPv6 frame: answer solicitations for routed
/// containers' addresses; pass everything else. A BPF function of its own
/// (not inlined): the reply frame it builds would not fit the stack of
/// the XDP entry point next to the NAT fast path's.
#[inline(never)]
pub(crate) fn uplink(ctx: &XdpContext) -> u32 {
    match try_uplink(ctx) {
        Ok(action) => action,
        Err(reason) => {
            stats::inc(reason);
            XDP_DROP
        }
    }
}

#[inline(always)]
fn try_uplink(ctx: &XdpContext) -> Result<u32, Counter> {
    let mut ip = Packet6::EMPTY;
    if !parse_ipv6_xdp(ctx, &mut ip) {
        return Ok(XDP_PASS);
    }
    let cur = Cursor::new(ctx.data(), ctx.data_end());
    let Some(target) = ns_target(&cur, &ip) else {
        return Ok(XDP_PASS);
    };
    if CONTAINERS6.get_ptr(&target).is_none() {
        return Ok(XDP_PASS);
    }
    if ROUTE_UPLINK.get(0).is_none_or(|up| up.ifindex == 0) {
        return Ok(XDP_PASS);
    }
    let Some(view) = read_ns(&cur, &ip) else {
        return Ok(XDP_PASS);
    };
    // SAFETY: the packet is unchanged since `read_ns`.
    let facts = unsafe { view.facts(&ip, &target) };
    check_ns(&facts)?;
    // SAFETY: as above; `eth_src` points into it.
    let Some(flags) =
        (unsafe { readdress(ctx.data(), ctx.data_end(), &facts, &*view.eth_src, false) })
    else {
        return Ok(XDP_PASS);
    };
    let delta = NA_FRAME_LEN as i32 - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: plain helper call on this program's frame; packet pointers
    // are re-read below.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        // No tailroom to grow into: half rewritten, it cannot go on.
        return Err(Counter::DropRewriteFailed);
    }
    // SAFETY: a map value pointer, valid for this run.
    let Some(up) = ROUTE_UPLINK.get(0) else {
        return Err(Counter::DropRewriteFailed);
    };
    if !finish(ctx.data(), ctx.data_end(), &up.mac, flags) {
        return Err(Counter::DropRewriteFailed);
    }
    stats::inc(Counter::NdpReplies);
    Ok(XDP_TX)
}

/// tc ingress on a container's veth, for an IPv6 packet `ip` whose source
/// the caller has checked (the container's own address, link-local, or
/// unspecified): answer the container's solicitations for anything but its
/// own address with the veth's MAC; pass everything else. A BPF function
/// of its own, for the stack (as [`uplink`]).
#[inline(never)]
pub(crate) fn from_container(
    ctx: &TcContext,
    ip: &Packet6,
    cif: &ContainerIf6,
    ifindex: u32,
) -> Result<Verdict, Counter> {
    let cur = Cursor::new(ctx.data(), ctx.data_end());
    let Some(target) = ns_target(&cur, ip) else {
        return Ok(Verdict::Pass);
    };
    // Its own duplicate address detection and its own address are the
    // kernel's business.
    if is_unspecified6(&ip.src) || target == cif.addr {
        return Ok(Verdict::Pass);
    }
    let Some(view) = read_ns(&cur, ip) else {
        return Ok(Verdict::Pass);
    };
    // SAFETY: the packet is unchanged since `read_ns`.
    let facts = unsafe { view.facts(ip, &target) };
    check_ns(&facts)?;
    // SAFETY: as above; `eth_src` points into it.
    let Some(flags) =
        (unsafe { readdress(ctx.data(), ctx.data_end(), &facts, &*view.eth_src, true) })
    else {
        return Ok(Verdict::Pass);
    };
    ctx.change_tail(NA_FRAME_LEN as u32, 0)
        .map_err(|_| Counter::DropRewriteFailed)?;
    ctx.pull_data(NA_FRAME_LEN as u32)
        .map_err(|_| Counter::DropRewriteFailed)?;
    if !finish(ctx.data(), ctx.data_end(), &cif.host_mac, flags) {
        return Err(Counter::DropRewriteFailed);
    }
    stats::inc(Counter::NdpReplies);
    // SAFETY: plain helper call; egress of the veth the solicitation came
    // in on is the way back to the container.
    let rc = unsafe { bpf_redirect(ifindex, 0) };
    Ok(Verdict::Redirect(rc as i32))
}
