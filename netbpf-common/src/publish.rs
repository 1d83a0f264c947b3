//! Published ports: the trie key and rule, the blocks a port range is stored as, the trie match; host sockets redirected to them.

use core::mem::size_of;

/// Data of the published-ports LPM key, compared most significant bit
/// first: protocol, then the host address (0.0.0.0 = any local address),
/// then the host port in network order. A port range is stored as the few
/// prefix-aligned blocks that cover it, all with the same [`PublishRule`],
/// so a lookup is one trie walk whatever the number of rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PublishKey {
    /// IP protocol number (TCP or UDP).
    pub proto: u8,
    /// Host address the port answers on, network order; 0.0.0.0 = any of
    /// the host's addresses ([`map_names::LOCAL_ADDRS`]).
    pub addr: [u8; 4],
    /// Host port, **network order** (so prefixes cover port ranges).
    pub port_be: [u8; 2],
    /// Always zero (never part of a prefix).
    pub _pad: u8,
}

const _: () = assert!(size_of::<PublishKey>() == 8);

/// Bits of a [`PublishKey`] before the port: protocol and address.
pub const PUBLISH_KEY_FIXED_BITS: u32 = 40;

/// Bits of a [`PublishKey`] that a full-port lookup matches.
pub const PUBLISH_KEY_BITS: u32 = PUBLISH_KEY_FIXED_BITS + 16;

impl PublishKey {
    /// A key with zeroed padding; `port` in host order.
    pub const fn new(proto: u8, addr: [u8; 4], port: u16) -> Self {
        Self {
            proto,
            addr,
            port_be: port.to_be_bytes(),
            _pad: 0,
        }
    }

    /// The key's bits as the trie compares them, most significant first
    /// (protocol, address, port) in the low 56 bits.
    #[inline(always)]
    const fn bits(&self) -> u64 {
        ((self.proto as u64) << 48)
            | ((u32::from_be_bytes(self.addr) as u64) << 16)
            | (u16::from_be_bytes(self.port_be) as u64)
    }

    /// Whether this key, as a trie entry of `prefix_len` bits, matches the
    /// full-length key `want`: the LPM rule the kernel applies. Entries
    /// shorter than protocol + address never match.
    pub const fn covers(&self, prefix_len: u32, want: &PublishKey) -> bool {
        let len = if prefix_len < PUBLISH_KEY_BITS {
            prefix_len
        } else {
            PUBLISH_KEY_BITS
        };
        if len < PUBLISH_KEY_FIXED_BITS {
            return false;
        }
        let shift = PUBLISH_KEY_BITS - len;
        (self.bits() >> shift) == (want.bits() >> shift)
    }

    /// The host ports (inclusive) this key covers as a trie entry of
    /// `prefix_len` bits (port bits past the prefix are ignored).
    pub const fn ports(&self, prefix_len: u32) -> (u16, u16) {
        let bits = prefix_len.saturating_sub(PUBLISH_KEY_FIXED_BITS);
        let bits = if bits > 16 { 16 } else { bits };
        let size = 1u32 << (16 - bits);
        let base = (u16::from_be_bytes(self.port_be) as u32) & !(size - 1);
        (base as u16, (base + size - 1) as u16)
    }
}

/// The trie entries of a published port range: the fewest prefix-aligned
/// blocks that cover `[start, end]`, each `(prefix length, key)`. A block
/// of `2^k` ports aligned on `2^k` is one entry with `16 - k` port bits.
pub const fn publish_blocks(proto_num: u8, addr: [u8; 4], start: u16, end: u16) -> PublishBlocks {
    PublishBlocks {
        proto: proto_num,
        addr,
        cur: start as u32,
        end: end as u32,
    }
}

/// Iterator of [`publish_blocks`].
#[derive(Clone, Debug)]
pub struct PublishBlocks {
    proto: u8,
    addr: [u8; 4],
    cur: u32,
    end: u32,
}

impl Iterator for PublishBlocks {
    type Item = (u32, PublishKey);

    fn next(&mut self) -> Option<Self::Item> {
        if self.cur > self.end {
            return None;
        }
        let mut size: u32 = if self.cur == 0 {
            1 << 16
        } else {
            1 << self.cur.trailing_zeros().min(16)
        };
        while self.cur + size - 1 > self.end {
            size >>= 1;
        }
        let item = (
            PUBLISH_KEY_FIXED_BITS + 16 - size.trailing_zeros(),
            PublishKey::new(self.proto, self.addr, self.cur as u16),
        );
        self.cur += size;
        Some(item)
    }
}

/// Where a published port (range) goes: host port `p` in
/// `[host_port_min, host_port_max]` maps to `to_addr:(to_port + p - host_port_min)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishRule {
    /// Container address, network order.
    pub to_addr: [u8; 4],
    /// Container port of the first host port, host order.
    pub to_port: u16,
    /// First host port of the range, host order.
    pub host_port_min: u16,
    /// Last host port of the range, host order (for listing; lookups use the
    /// trie).
    pub host_port_max: u16,
    /// Always zero.
    pub _pad: u16,
}

const _: () = assert!(size_of::<PublishRule>() == 12);

impl PublishRule {
    /// Host ports `[min, max]` to `to_addr:to_port` onwards, one to one.
    pub const fn new(
        to_addr: [u8; 4],
        to_port: u16,
        host_port_min: u16,
        host_port_max: u16,
    ) -> Self {
        Self {
            to_addr,
            to_port,
            host_port_min,
            host_port_max,
            _pad: 0,
        }
    }

    /// The container port that host port `port` of this rule maps to.
    #[inline(always)]
    pub const fn container_port(&self, port: u16) -> u16 {
        self.to_port
            .wrapping_add(port.wrapping_sub(self.host_port_min))
    }
}

/// A host socket talking to a container it was redirected to: the
/// socket's cookie and the container endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockRevKey {
    /// `bpf_get_socket_cookie` of the socket.
    pub cookie: u64,
    /// Container address, network order.
    pub addr: [u8; 4],
    /// Container port, host order.
    pub port: u16,
    /// Always zero.
    pub _pad: u16,
}

const _: () = assert!(size_of::<SockRevKey>() == 16);

/// The published address and port the socket asked for, which
/// `getpeername()` and `recvmsg()` report instead of the container's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevValue {
    /// Address the application used, network order.
    pub addr: [u8; 4],
    /// Port the application used, host order.
    pub port: u16,
    /// Always zero.
    pub _pad: u16,
}

const _: () = assert!(size_of::<SockRevValue>() == 8);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{names::proto, nat::MasqRule};

    /// The ports a list of blocks covers, one by one; each block aligned.
    fn covered(blocks: PublishBlocks) -> std::vec::Vec<u32> {
        blocks
            .flat_map(|(len, key)| {
                let (lo, hi) = key.ports(len);
                let size = u32::from(hi) - u32::from(lo) + 1;
                assert_eq!(u32::from(lo) % size, 0, "block {lo}/{len} aligned");
                assert_eq!(u16::from_be_bytes(key.port_be), lo, "base port");
                u32::from(lo)..=u32::from(hi)
            })
            .collect()
    }

    #[test]
    fn publish_blocks_cover_exactly_the_range() {
        for (a, b) in [
            (8080, 8080),
            (8000, 8010),
            (1, 65535),
            (0, 65535),
            (1024, 2047),
            (32768, 60999),
            (1023, 1025),
        ] {
            let want: std::vec::Vec<u32> = (u32::from(a)..=u32::from(b)).collect();
            assert_eq!(covered(publish_blocks(6, [0; 4], a, b)), want, "{a}-{b}");
            assert!(publish_blocks(6, [0; 4], a, b).count() <= 32);
        }
        let one: std::vec::Vec<_> = publish_blocks(6, [1, 2, 3, 4], 8080, 8080).collect();
        assert_eq!(
            one,
            [(PUBLISH_KEY_BITS, PublishKey::new(6, [1, 2, 3, 4], 8080))]
        );
        let all: std::vec::Vec<_> = publish_blocks(6, [0; 4], 0, 65535).collect();
        assert_eq!(
            all,
            [(PUBLISH_KEY_FIXED_BITS, PublishKey::new(6, [0; 4], 0))]
        );
    }

    #[test]
    fn a_block_covers_its_ports_for_its_protocol_and_address_only() {
        let (len, key) = publish_blocks(6, [0; 4], 8000, 8007)
            .next()
            .expect("one block");
        assert!(key.covers(len, &PublishKey::new(6, [0; 4], 8005)));
        assert!(!key.covers(len, &PublishKey::new(6, [0; 4], 8008)));
        assert!(!key.covers(len, &PublishKey::new(17, [0; 4], 8005)));
        assert!(!key.covers(len, &PublishKey::new(6, [1, 1, 1, 1], 8005)));
        // Entries shorter than protocol + address never match.
        assert!(!key.covers(PUBLISH_KEY_FIXED_BITS - 1, &key));
    }

    #[test]
    fn a_published_range_maps_one_to_one_and_masquerade_keeps_the_class() {
        let rule = PublishRule::new([10, 77, 0, 3], 5000, 9000, 9010);
        assert_eq!(rule.container_port(9000), 5000);
        assert_eq!(rule.container_port(9010), 5010);
        let linux = MasqRule::default();
        assert_eq!(linux.port_range(proto::TCP, 22), (1, 1023));
        assert_eq!(linux.port_range(proto::UDP, 40000), (1024, 65535));
        assert_eq!(linux.port_range(proto::ICMP, 7), (0, 65535));
        let ranged = MasqRule {
            port_min: 61000,
            port_max: 65535,
            ..MasqRule::default()
        };
        assert_eq!(ranged.port_range(proto::TCP, 22), (61000, 65535));
    }
}
