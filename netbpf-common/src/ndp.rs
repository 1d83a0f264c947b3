//! Neighbour Discovery (RFC 4861) as netbpf answers it: which Neighbour
//! Solicitations are valid, and the Neighbour Advertisement that answers
//! one, byte for byte (ICMPv6 checksum over the pseudo-header included).
//! Pure functions: the eBPF programs build replies with them and the
//! host's unit tests check them.

use crate::routing6::ALL_NODES;
use crate::{
    Counter, Ipv6Bytes, csum_fold, is_multicast6, is_unspecified6, multicast_mac, solicited_node,
};

/// IP protocol number of ICMPv6 (the IPv6 "next header").
pub const NEXT_HDR_ICMPV6: u8 = 58;
/// ICMPv6 type: Neighbour Solicitation.
pub const ICMPV6_NS: u8 = 135;
/// ICMPv6 type: Neighbour Advertisement.
pub const ICMPV6_NA: u8 = 136;
/// NDP option: source link-layer address.
pub const OPT_SOURCE_LLADDR: u8 = 1;
/// NDP option: target link-layer address.
pub const OPT_TARGET_LLADDR: u8 = 2;
/// The hop limit every NDP message carries, and requires on receipt
/// (RFC 4861 §7.1.1: proof it was not forwarded).
pub const NDP_HOP_LIMIT: u8 = 255;

/// Bytes of a Neighbour Solicitation before its options.
pub const NS_LEN: usize = 24;
/// Option bytes of a solicitation netbpf reads (four 8-byte units: a
/// source link-layer address, a nonce, room for more). A solicitation
/// with more goes to the kernel untouched.
pub const NS_MAX_OPTION_BYTES: usize = 32;
/// Bytes of the advertisement netbpf sends: the fixed part and one target
/// link-layer address option.
pub const NA_LEN: usize = 32;
/// Bytes of the whole reply frame: Ethernet, IPv6, the advertisement.
pub const NA_FRAME_LEN: usize = 14 + 40 + NA_LEN;

/// Bits of the advertisement's flags byte.
pub mod na_flags {
    /// The sender is a router.
    pub const ROUTER: u8 = 0x80;
    /// Sent in answer to a solicitation.
    pub const SOLICITED: u8 = 0x40;
    /// Replaces the link-layer address a neighbour cached.
    pub const OVERRIDE: u8 = 0x20;
}

/// The one's-complement sum of `data` as 16-bit big-endian words (a last
/// odd byte is the high half of a word). A bounded loop.
#[inline(always)]
pub fn sum_words(data: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i + 1 < data.len() {
        sum += u16::from_be_bytes([data[i], data[i + 1]]) as u64;
        i += 2;
    }
    if i < data.len() {
        sum += (data[i] as u64) << 8;
    }
    sum
}

/// The sum of the IPv6 pseudo-header (RFC 8200 §8.1) for an upper-layer
/// packet of `len` bytes with next header `next`.
#[inline(always)]
pub fn pseudo_sum6(src: &Ipv6Bytes, dst: &Ipv6Bytes, len: u32, next: u8) -> u64 {
    sum_words(src) + sum_words(dst) + (len >> 16) as u64 + (len & 0xffff) as u64 + next as u64
}

/// What a program read of a Neighbour Solicitation, for [`check_ns`].
/// The addresses are borrowed where the program keeps them: the BPF stack
/// is 512 bytes, and copies of three addresses would take a tenth of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsFacts<'a> {
    /// IPv6 hop limit.
    pub hop_limit: u8,
    /// IPv6 source.
    pub src: &'a Ipv6Bytes,
    /// IPv6 destination.
    pub dst: &'a Ipv6Bytes,
    /// ICMPv6 code.
    pub code: u8,
    /// ICMPv6 length (the IPv6 payload length).
    pub len: usize,
    /// The target address.
    pub target: &'a Ipv6Bytes,
    /// The options are well formed (none of length zero, none past the end).
    pub options_ok: bool,
    /// The source link-layer address option, if present.
    pub source_lladdr: Option<&'a [u8; 6]>,
    /// The ICMPv6 checksum verifies (pseudo-header included).
    pub checksum_ok: bool,
}

/// RFC 4861 §7.1.1: whether a solicitation is valid, else the counted
/// reason it is dropped.
#[inline(always)]
pub fn check_ns(ns: &NsFacts<'_>) -> Result<(), Counter> {
    if ns.hop_limit != NDP_HOP_LIMIT {
        return Err(Counter::DropNdpHopLimit);
    }
    if !ns.checksum_ok {
        return Err(Counter::DropNdpBadChecksum);
    }
    if ns.code != 0 || ns.len < NS_LEN || !ns.options_ok || is_multicast6(ns.target) {
        return Err(Counter::DropNdpInvalid);
    }
    // Duplicate address detection: to the solicited-node group, without a
    // link-layer address.
    if is_unspecified6(ns.src)
        && (*ns.dst != solicited_node(ns.target) || ns.source_lladdr.is_some())
    {
        return Err(Counter::DropNdpInvalid);
    }
    Ok(())
}

/// The Ethernet address of `ff02::1` ([`multicast_mac`] of [`ALL_NODES`]).
pub const ALL_NODES_MAC: [u8; 6] = multicast_mac(&ALL_NODES);

/// Where and how to answer a valid solicitation (RFC 4861 §7.2.4): to its
/// sender, solicited; a duplicate address detection probe (unspecified
/// source) to all nodes, unsolicited. `eth_src` is the solicitation's
/// Ethernet source, used when it carries no link-layer address option.
/// Returns (Ethernet destination, IPv6 destination, flags).
#[inline(always)]
pub fn na_destination<'a>(
    ns: &NsFacts<'a>,
    eth_src: &'a [u8; 6],
    router: bool,
) -> (&'a [u8; 6], &'a Ipv6Bytes, u8) {
    let mut flags = na_flags::OVERRIDE;
    if router {
        flags |= na_flags::ROUTER;
    }
    if is_unspecified6(ns.src) {
        return (&ALL_NODES_MAC, &ALL_NODES, flags);
    }
    let mac = match ns.source_lladdr {
        Some(mac) => mac,
        None => eth_src,
    };
    (mac, ns.src, flags | na_flags::SOLICITED)
}

/// A Neighbour Advertisement netbpf sends: "`target` is at `mac`", from
/// `mac` and `target`, to `eth_dst` / `ip_dst`, with `flags`, one target
/// link-layer address option and hop limit 255.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert<'a> {
    /// Ethernet destination.
    pub eth_dst: &'a [u8; 6],
    /// The answered link-layer address (also the Ethernet source).
    pub mac: &'a [u8; 6],
    /// The answered address (also the IPv6 source).
    pub target: &'a Ipv6Bytes,
    /// IPv6 destination.
    pub ip_dst: &'a Ipv6Bytes,
    /// [`na_flags`] bits.
    pub flags: u8,
}

/// The first 8 bytes of the advertisement's ICMPv6 message: type, code,
/// checksum, flags, reserved.
#[inline(always)]
pub fn na_head(a: &Advert<'_>) -> [u8; 8] {
    let check = na_checksum(a);
    [ICMPV6_NA, 0, check[0], check[1], a.flags, 0, 0, 0]
}

/// The advertisement's target link-layer address option.
#[inline(always)]
pub fn na_option(a: &Advert<'_>) -> [u8; 8] {
    let m = a.mac;
    [OPT_TARGET_LLADDR, 1, m[0], m[1], m[2], m[3], m[4], m[5]]
}

/// The advertisement's fixed IPv6 header fields before the addresses:
/// version 6, no traffic class or flow label, payload length, ICMPv6, hop
/// limit 255.
pub const NA_IP_HEAD: [u8; 8] = [
    0x60,
    0,
    0,
    0,
    0,
    NA_LEN as u8,
    NEXT_HDR_ICMPV6,
    NDP_HOP_LIMIT,
];

/// The advertisement's ICMPv6 checksum (RFC 4443 §2.3: over the IPv6
/// pseudo-header and the message), as on the wire.
#[inline(always)]
pub fn na_checksum(a: &Advert<'_>) -> [u8; 2] {
    let sum = pseudo_sum6(a.target, a.ip_dst, NA_LEN as u32, NEXT_HDR_ICMPV6)
        + ((ICMPV6_NA as u64) << 8)
        + ((a.flags as u64) << 8)
        + sum_words(a.target)
        + (((OPT_TARGET_LLADDR as u64) << 8) | 1)
        + sum_words(a.mac);
    (!csum_fold(sum)).to_be_bytes()
}

/// The whole advertisement frame, byte for byte (Ethernet, IPv6, ICMPv6),
/// as the programs write it in place.
pub fn na_frame(a: &Advert<'_>) -> [u8; NA_FRAME_LEN] {
    let mut f = [0u8; NA_FRAME_LEN];
    f[0..6].copy_from_slice(a.eth_dst);
    f[6..12].copy_from_slice(a.mac);
    f[12] = 0x86;
    f[13] = 0xdd;
    f[14..22].copy_from_slice(&NA_IP_HEAD);
    f[22..38].copy_from_slice(a.target);
    f[38..54].copy_from_slice(a.ip_dst);
    f[54..62].copy_from_slice(&na_head(a));
    f[62..78].copy_from_slice(a.target);
    f[78..86].copy_from_slice(&na_option(a));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn b(s: &str) -> Ipv6Bytes {
        s.parse::<Ipv6Addr>().expect("address").octets()
    }

    const SRC: Ipv6Bytes = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const SNM: Ipv6Bytes = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 5];
    const TARGET: Ipv6Bytes = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
    const ZERO: Ipv6Bytes = [0; 16];
    const SLLA: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const ETH_SRC: [u8; 6] = [9; 6];

    fn ns() -> NsFacts<'static> {
        NsFacts {
            hop_limit: 255,
            src: &SRC,
            dst: &SNM,
            code: 0,
            len: 32,
            target: &TARGET,
            options_ok: true,
            source_lladdr: Some(&SLLA),
            checksum_ok: true,
        }
    }

    #[test]
    fn valid_solicitation_passes_each_rule_names_its_drop() {
        assert_eq!(check_ns(&ns()), Ok(()));
        /// A change to a valid solicitation, and the drop it must cause.
        type Case = (fn(&mut NsFacts<'static>), Counter);
        let cases: [Case; 7] = [
            (|n| n.hop_limit = 64, Counter::DropNdpHopLimit),
            (|n| n.checksum_ok = false, Counter::DropNdpBadChecksum),
            (|n| n.code = 1, Counter::DropNdpInvalid),
            (|n| n.len = 20, Counter::DropNdpInvalid),
            (|n| n.options_ok = false, Counter::DropNdpInvalid),
            (|n| n.target = &ALL_NODES, Counter::DropNdpInvalid),
            // DAD with a link-layer address option.
            (|n| n.src = &ZERO, Counter::DropNdpInvalid),
        ];
        for (i, (change, want)) in cases.iter().enumerate() {
            let mut n = ns();
            change(&mut n);
            assert_eq!(check_ns(&n), Err(*want), "case {i}");
        }
        // DAD done right; and to a unicast destination, wrong.
        let mut dad = ns();
        dad.src = &ZERO;
        dad.source_lladdr = None;
        assert_eq!(check_ns(&dad), Ok(()));
        dad.dst = &TARGET;
        assert_eq!(check_ns(&dad), Err(Counter::DropNdpInvalid));
    }

    #[test]
    fn reply_goes_to_the_sender_or_to_all_nodes() {
        let (mac, ip, flags) = na_destination(&ns(), &ETH_SRC, false);
        assert_eq!(
            (*mac, *ip, flags),
            (
                [2, 0, 0, 0, 0, 1],
                b("2001:db8::1"),
                na_flags::SOLICITED | na_flags::OVERRIDE
            )
        );
        let mut no_opt = ns();
        no_opt.source_lladdr = None;
        assert_eq!(*na_destination(&no_opt, &ETH_SRC, true).0, [9; 6]);
        assert_eq!(
            na_destination(&no_opt, &ETH_SRC, true).2,
            na_flags::ROUTER | na_flags::SOLICITED | na_flags::OVERRIDE
        );
        let mut dad = ns();
        dad.src = &ZERO;
        dad.source_lladdr = None;
        let (mac, ip, flags) = na_destination(&dad, &ETH_SRC, false);
        assert_eq!(
            (*mac, *ip, flags),
            ([0x33, 0x33, 0, 0, 0, 1], b("ff02::1"), na_flags::OVERRIDE)
        );
    }

    /// Every byte written out by hand from RFC 4861 §4.4 and RFC 8200;
    /// the checksum (0x89c3) computed apart, with an RFC 1071 sum in
    /// Python over the pseudo-header and the message.
    #[test]
    fn advertisement_is_byte_exact() {
        let f = na_frame(&Advert {
            eth_dst: &SLLA,
            mac: &[2, 0, 0, 0, 0, 0xaa],
            target: &TARGET,
            ip_dst: &SRC,
            flags: na_flags::SOLICITED | na_flags::OVERRIDE,
        });
        let mut want = std::vec::Vec::new();
        want.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xaa, 0x86, 0xdd]);
        want.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
        want.extend_from_slice(&b("2001:db8::5"));
        want.extend_from_slice(&b("2001:db8::1"));
        want.extend_from_slice(&[136, 0, 0, 0, 0x60, 0, 0, 0]);
        want.extend_from_slice(&b("2001:db8::5"));
        want.extend_from_slice(&[2, 1, 2, 0, 0, 0, 0, 0xaa]);
        // Everything but the checksum field.
        let mut got = f;
        got[56] = 0;
        got[57] = 0;
        assert_eq!(&got[..], &want[..]);
        // The checksum verifies: the sum over pseudo-header and message
        // folds to all ones.
        let sum = pseudo_sum6(&b("2001:db8::5"), &b("2001:db8::1"), 32, 58) + sum_words(&f[54..]);
        assert_eq!(csum_fold(sum), 0xffff);
        assert_eq!([f[56], f[57]], [0x89, 0xc3]);
    }
}
