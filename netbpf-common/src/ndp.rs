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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsFacts {
    /// IPv6 hop limit.
    pub hop_limit: u8,
    /// IPv6 source.
    pub src: Ipv6Bytes,
    /// IPv6 destination.
    pub dst: Ipv6Bytes,
    /// ICMPv6 code.
    pub code: u8,
    /// ICMPv6 length (the IPv6 payload length).
    pub len: usize,
    /// The target address.
    pub target: Ipv6Bytes,
    /// The options are well formed (none of length zero, none past the end).
    pub options_ok: bool,
    /// The source link-layer address option, if present.
    pub source_lladdr: Option<[u8; 6]>,
    /// The ICMPv6 checksum verifies (pseudo-header included).
    pub checksum_ok: bool,
}

/// RFC 4861 §7.1.1: whether a solicitation is valid, else the counted
/// reason it is dropped.
#[inline(always)]
pub fn check_ns(ns: &NsFacts) -> Result<(), Counter> {
    if ns.hop_limit != NDP_HOP_LIMIT {
        return Err(Counter::DropNdpHopLimit);
    }
    if !ns.checksum_ok {
        return Err(Counter::DropNdpBadChecksum);
    }
    if ns.code != 0 || ns.len < NS_LEN || !ns.options_ok || is_multicast6(&ns.target) {
        return Err(Counter::DropNdpInvalid);
    }
    // Duplicate address detection: to the solicited-node group, without a
    // link-layer address.
    if is_unspecified6(&ns.src)
        && (ns.dst != solicited_node(&ns.target) || ns.source_lladdr.is_some())
    {
        return Err(Counter::DropNdpInvalid);
    }
    Ok(())
}

/// Where and how to answer a valid solicitation (RFC 4861 §7.2.4): to its
/// sender, solicited; a duplicate address detection probe (unspecified
/// source) to all nodes, unsolicited. `eth_src` is the solicitation's
/// Ethernet source, used when it carries no link-layer address option.
/// Returns (Ethernet destination, IPv6 destination, flags).
#[inline(always)]
pub fn na_destination(ns: &NsFacts, eth_src: [u8; 6], router: bool) -> ([u8; 6], Ipv6Bytes, u8) {
    let mut flags = na_flags::OVERRIDE;
    if router {
        flags |= na_flags::ROUTER;
    }
    if is_unspecified6(&ns.src) {
        return (multicast_mac(&ALL_NODES), ALL_NODES, flags);
    }
    let mac = match ns.source_lladdr {
        Some(mac) => mac,
        None => eth_src,
    };
    (mac, ns.src, flags | na_flags::SOLICITED)
}

/// The Neighbour Advertisement frame "`target` is at `mac`", from `mac`
/// and `target`, to `eth_dst` / `ip_dst`, with `flags` and a target
/// link-layer address option, hop limit 255 and its ICMPv6 checksum.
#[inline(always)]
pub fn na_frame(
    eth_dst: [u8; 6],
    mac: [u8; 6],
    target: &Ipv6Bytes,
    ip_dst: &Ipv6Bytes,
    flags: u8,
) -> [u8; NA_FRAME_LEN] {
    let mut f = [0u8; NA_FRAME_LEN];
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&mac);
    f[12] = 0x86;
    f[13] = 0xdd;
    // IPv6: version 6, no traffic class or flow label.
    f[14] = 0x60;
    f[18..20].copy_from_slice(&(NA_LEN as u16).to_be_bytes());
    f[20] = NEXT_HDR_ICMPV6;
    f[21] = NDP_HOP_LIMIT;
    f[22..38].copy_from_slice(target);
    f[38..54].copy_from_slice(ip_dst);
    // The advertisement.
    f[54] = ICMPV6_NA;
    f[58] = flags;
    f[62..78].copy_from_slice(target);
    f[78] = OPT_TARGET_LLADDR;
    f[79] = 1; // length in units of 8 bytes
    f[80..86].copy_from_slice(&mac);
    let sum = pseudo_sum6(target, ip_dst, NA_LEN as u32, NEXT_HDR_ICMPV6) + sum_words(&f[54..86]);
    let check = !csum_fold(sum);
    f[56..58].copy_from_slice(&check.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn b(s: &str) -> Ipv6Bytes {
        s.parse::<Ipv6Addr>().expect("address").octets()
    }

    fn ns() -> NsFacts {
        NsFacts {
            hop_limit: 255,
            src: b("2001:db8::1"),
            dst: b("ff02::1:ff00:5"),
            code: 0,
            len: 32,
            target: b("2001:db8::5"),
            options_ok: true,
            source_lladdr: Some([2, 0, 0, 0, 0, 1]),
            checksum_ok: true,
        }
    }

    #[test]
    fn valid_solicitation_passes_each_rule_names_its_drop() {
        assert_eq!(check_ns(&ns()), Ok(()));
        let cases: [(fn(&mut NsFacts), Counter); 7] = [
            (|n| n.hop_limit = 64, Counter::DropNdpHopLimit),
            (|n| n.checksum_ok = false, Counter::DropNdpBadChecksum),
            (|n| n.code = 1, Counter::DropNdpInvalid),
            (|n| n.len = 20, Counter::DropNdpInvalid),
            (|n| n.options_ok = false, Counter::DropNdpInvalid),
            (|n| n.target = b("ff02::1"), Counter::DropNdpInvalid),
            // DAD with a link-layer address option.
            (|n| n.src = [0; 16], Counter::DropNdpInvalid),
        ];
        for (i, (change, want)) in cases.iter().enumerate() {
            let mut n = ns();
            change(&mut n);
            assert_eq!(check_ns(&n), Err(*want), "case {i}");
        }
        // DAD done right; and to a unicast destination, wrong.
        let mut dad = ns();
        dad.src = [0; 16];
        dad.source_lladdr = None;
        assert_eq!(check_ns(&dad), Ok(()));
        dad.dst = b("2001:db8::5");
        assert_eq!(check_ns(&dad), Err(Counter::DropNdpInvalid));
    }

    #[test]
    fn reply_goes_to_the_sender_or_to_all_nodes() {
        let (mac, ip, flags) = na_destination(&ns(), [9; 6], false);
        assert_eq!(
            (mac, ip, flags),
            (
                [2, 0, 0, 0, 0, 1],
                b("2001:db8::1"),
                na_flags::SOLICITED | na_flags::OVERRIDE
            )
        );
        let mut no_opt = ns();
        no_opt.source_lladdr = None;
        assert_eq!(na_destination(&no_opt, [9; 6], true).0, [9; 6]);
        assert_eq!(
            na_destination(&no_opt, [9; 6], true).2,
            na_flags::ROUTER | na_flags::SOLICITED | na_flags::OVERRIDE
        );
        let mut dad = ns();
        dad.src = [0; 16];
        dad.source_lladdr = None;
        assert_eq!(
            na_destination(&dad, [9; 6], false),
            ([0x33, 0x33, 0, 0, 0, 1], b("ff02::1"), na_flags::OVERRIDE)
        );
    }

    /// Every byte written out by hand from RFC 4861 §4.4 and RFC 8200;
    /// the checksum (0x89c3) computed apart, with an RFC 1071 sum in
    /// Python over the pseudo-header and the message.
    #[test]
    fn advertisement_is_byte_exact() {
        let f = na_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 0xaa],
            &b("2001:db8::5"),
            &b("2001:db8::1"),
            na_flags::SOLICITED | na_flags::OVERRIDE,
        );
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
