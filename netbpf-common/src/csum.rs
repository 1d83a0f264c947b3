//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624),
//! the arithmetic every checksum in netbpf uses. Pure functions, so the
//! host's unit tests check them against sums computed from scratch.

/// Folds a 32-bit (or wider) one's-complement sum of 16-bit words into
/// 16 bits (RFC 1071). The Internet checksum is the complement of this.
#[inline(always)]
pub const fn csum_fold(sum: u64) -> u16 {
    let mut s = (sum & 0xffff) + (sum >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// RFC 1624 (eqn. 3) incremental update of a checksum field (bytes as on
/// the wire) for 16-bit words changing from `old` to `new`:
/// HC' = ~(~HC + ~m + m'). `old` and `new` are the same length and start
/// on 16-bit word boundaries of the summed data (several fields may be
/// concatenated, each word-aligned). A bounded loop: the verifier sees at
/// most `old.len() / 2` rounds.
#[inline(always)]
pub fn csum_update(check: [u8; 2], old: &[u8], new: &[u8]) -> [u8; 2] {
    let mut sum = u32::from(!u16::from_be_bytes(check));
    let mut i = 0;
    while i + 1 < old.len() && i + 1 < new.len() {
        sum += u32::from(!u16::from_be_bytes([old[i], old[i + 1]]));
        sum += u32::from(u16::from_be_bytes([new[i], new[i + 1]]));
        i += 2;
    }
    (!csum_fold(sum as u64)).to_be_bytes()
}

/// [`csum_update`] for a UDP checksum (RFC 768): zero means "no checksum"
/// and stays zero; a computed zero is sent as all ones.
#[inline(always)]
pub fn udp_csum_update(check: [u8; 2], old: &[u8], new: &[u8]) -> [u8; 2] {
    if check == [0, 0] {
        return check;
    }
    match csum_update(check, old, new) {
        [0, 0] => [0xff, 0xff],
        c => c,
    }
}

/// The value a TCP or UDP checksum field holds while the checksum is left
/// to the device (`CHECKSUM_PARTIAL`): the folded, uncomplemented sum of
/// the pseudo header alone (source, destination, protocol, `l4_len`, the
/// transport length), the seed Linux writes (`~tcp_v4_check(len, s, d,
/// 0)`). A complete checksum equals it only by a 1-in-65536 chance.
#[inline(always)]
pub const fn pseudo_header_seed(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> [u8; 2] {
    let sum = u16::from_be_bytes([src[0], src[1]]) as u64
        + u16::from_be_bytes([src[2], src[3]]) as u64
        + u16::from_be_bytes([dst[0], dst[1]]) as u64
        + u16::from_be_bytes([dst[2], dst[3]]) as u64
        + proto as u64
        + l4_len as u64;
    csum_fold(sum).to_be_bytes()
}

/// How a `CHECKSUM_COMPLETE` skb's sum (the kernel's one's-complement sum
/// of the packet's bytes, 16-bit words in memory order) changes when an
/// address of the transport checksum's pseudo header goes from `old` to
/// `new` and every checksum follows: the IP header's and the ports'
/// changes are offset by their checksums, but the transport checksum also
/// moves by `old - new` for the pseudo header, which the sum does not
/// cover. The value to add with `bpf_csum_update`, folded to 16 bits (the
/// same class of the sum: 2^32 - 1 is a multiple of 2^16 - 1).
#[inline(always)]
pub fn complete_sum_change(old: [u8; 4], new: [u8; 4]) -> u32 {
    let word = |a: [u8; 4], i: usize| u64::from(u16::from_ne_bytes([a[i], a[i + 1]]));
    let sum = word(old, 0) + word(old, 2) + (0xffff - word(new, 0)) + (0xffff - word(new, 2));
    u32::from(csum_fold(sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn a_complete_sum_follows_a_rewrite_by_complete_sum_change() {
        // The kernel's sum of a buffer: memory-order words.
        let total = |b: &[u8]| -> u64 {
            b.chunks(2)
                .map(|w| u64::from(u16::from_ne_bytes([w[0], w[1]])))
                .sum()
        };
        let (src, old_dst, new_dst) = ([198, 51, 100, 7], [203, 0, 113, 1], [10, 77, 0, 2]);
        let mut ip = [
            0x45, 0, 0, 30, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 198, 51, 100, 7, 203, 0, 113, 1,
        ];
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c);
        let mut seg = [0u8; 10];
        seg[0..2].copy_from_slice(&443u16.to_be_bytes());
        seg[2..4].copy_from_slice(&8080u16.to_be_bytes());
        seg[4..6].copy_from_slice(&10u16.to_be_bytes());
        seg[8..10].copy_from_slice(&[0xbe, 0xef]);
        let c = udp_checksum(src, old_dst, &seg);
        seg[6..8].copy_from_slice(&c);
        let before = total(&ip) + total(&seg);
        // DNAT: destination address and port, each checksum by RFC 1624.
        let ip_check = csum_update([ip[10], ip[11]], &old_dst, &new_dst);
        ip[10..12].copy_from_slice(&ip_check);
        ip[16..20].copy_from_slice(&new_dst);
        let old = [
            old_dst[0], old_dst[1], old_dst[2], old_dst[3], seg[2], seg[3],
        ];
        let new = [new_dst[0], new_dst[1], new_dst[2], new_dst[3], 0, 80];
        let l4_check = udp_csum_update([seg[6], seg[7]], &old, &new);
        seg[2..4].copy_from_slice(&80u16.to_be_bytes());
        seg[6..8].copy_from_slice(&l4_check);
        assert_eq!(
            l4_check,
            udp_checksum(src, new_dst, &{
                let mut s = seg;
                s[6..8].copy_from_slice(&[0, 0]);
                s
            })
        );
        let after = total(&ip) + total(&seg);
        assert_ne!(csum_fold(before), csum_fold(after), "the sum moved");
        assert_eq!(
            csum_fold(before + u64::from(complete_sum_change(old_dst, new_dst))),
            csum_fold(after)
        );
    }

    #[test]
    fn folding_carries_until_sixteen_bits() {
        assert_eq!(csum_fold(0), 0);
        assert_eq!(csum_fold(0x1_fffe), 0xffff);
        assert_eq!(csum_fold(0xffff_ffff), 0xffff);
        // RFC 1071's example: words 0001 f203 f4f5 f6f7 sum to 2ddf0 → ddf2.
        assert_eq!(csum_fold(0x0001 + 0xf203 + 0xf4f5 + 0xf6f7), 0xddf2);
    }

    /// The Internet checksum of `data` computed from scratch.
    fn checksum(data: &[u8]) -> [u8; 2] {
        let sum: u64 = data
            .chunks(2)
            .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum();
        (!csum_fold(sum)).to_be_bytes()
    }

    /// A UDP datagram's checksum over the pseudo header, from scratch.
    fn udp_checksum(src: [u8; 4], dst: [u8; 4], seg: &[u8]) -> [u8; 2] {
        let mut b = Vec::new();
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(&[0, 17]);
        b.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        b.extend_from_slice(seg);
        checksum(&b)
    }

    #[test]
    fn an_incremental_update_equals_a_sum_from_scratch() {
        // An IPv4 header: TTL 64 → 63 and the destination changed at once
        // (the TTL/protocol word and the address, each word-aligned).
        let mut h = [
            0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 198, 51, 100, 7, 203, 0, 113, 1,
        ];
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c);
        let old = [h[8], h[9], h[16], h[17], h[18], h[19]];
        let new = [63, 6, 10, 77, 0, 2];
        let updated = csum_update(c, &old, &new);
        h[8] = 63;
        h[16..20].copy_from_slice(&[10, 77, 0, 2]);
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(updated, checksum(&h));
        // And the result sums to all ones with the new fields in place.
        h[10..12].copy_from_slice(&updated);
        assert_eq!(checksum(&h), [0, 0]);
    }

    #[test]
    fn udp_keeps_a_zero_checksum_and_never_computes_zero() {
        assert_eq!(
            udp_csum_update([0, 0], &[1, 2, 3, 4], &[5, 6, 7, 8]),
            [0, 0]
        );
        // Find a datagram whose rewritten checksum comes out zero (0xffff
        // in one's complement): it must be sent as ffff.
        let (src, old_dst, new_dst) = ([198, 51, 100, 7], [203, 0, 113, 1], [10, 77, 0, 2]);
        let mut found = false;
        for payload in 0..=u16::MAX {
            let mut seg = [0u8; 10];
            seg[0..2].copy_from_slice(&443u16.to_be_bytes());
            seg[2..4].copy_from_slice(&5353u16.to_be_bytes());
            seg[4..6].copy_from_slice(&10u16.to_be_bytes());
            seg[8..10].copy_from_slice(&payload.to_be_bytes());
            let before = udp_checksum(src, old_dst, &seg);
            let mut moved = seg;
            moved[2..4].copy_from_slice(&53u16.to_be_bytes());
            let full = udp_checksum(src, new_dst, &moved);
            let old = [
                old_dst[0], old_dst[1], old_dst[2], old_dst[3], seg[2], seg[3],
            ];
            let new = [new_dst[0], new_dst[1], new_dst[2], new_dst[3], 0, 53];
            let got = udp_csum_update(before, &old, &new);
            if full == [0, 0] {
                assert_eq!(got, [0xff, 0xff], "computed zero is sent as ffff");
                found = true;
            } else if before != [0, 0] {
                assert_eq!(got, full, "payload {payload}");
            }
        }
        assert!(found, "some payload sums to zero");
    }

    #[test]
    fn the_seed_is_the_pseudo_header_sum() {
        // Linux's seed for 10.0.0.1 → 10.0.0.2, UDP, 12 bytes:
        // 0a00 + 0001 + 0a00 + 0002 + 0011 + 000c = 0x1420.
        assert_eq!(
            pseudo_header_seed([10, 0, 0, 1], [10, 0, 0, 2], 17, 12),
            [0x14, 0x20]
        );
    }
}
