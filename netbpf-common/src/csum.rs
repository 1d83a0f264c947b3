//! The Internet checksum fold (RFC 1071), the one every checksum in netbpf uses.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_carries_until_sixteen_bits() {
        assert_eq!(csum_fold(0), 0);
        assert_eq!(csum_fold(0x1_fffe), 0xffff);
        assert_eq!(csum_fold(0xffff_ffff), 0xffff);
        // RFC 1071's example: words 0001 f203 f4f5 f6f7 sum to 2ddf0 → ddf2.
        assert_eq!(csum_fold(0x0001 + 0xf203 + 0xf4f5 + 0xf6f7), 0xddf2);
    }
}
