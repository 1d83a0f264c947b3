//! Fragments: the datagram key, the translation its first fragment got, the held early fragments, and the coarse clock their entries are stamped with.

use core::mem::size_of;

/// How long a fragmented datagram's first-fragment translation is used for
/// the fragments that follow (Linux's `ipfrag_time` default). Older
/// entries are ignored, so a reused IP ID never inherits a stale
/// translation.
pub const FRAG_TIMEOUT_S: u32 = 30;

/// Seconds of `CLOCK_MONOTONIC` as the datapath stamps short-lived entries
/// (a shift, not a division: 2^30 ns, about 1.07 s per unit).
#[inline(always)]
pub const fn coarse_seconds(ns: u64) -> u32 {
    (ns >> 30) as u32
}

/// Whether an entry stamped `stamp` (with [`coarse_seconds`]) is older than
/// `limit_s` seconds at `now` (also [`coarse_seconds`]). Wrapping-safe.
#[inline(always)]
pub const fn coarse_expired(stamp: u32, now: u32, limit_s: u32) -> bool {
    now.wrapping_sub(stamp) > limit_s
}

/// Value of [`map_names::HAIRPIN_FRAGS`]: the addresses a hairpinned
/// datagram's first fragment was translated to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HairpinFrag {
    /// New source address (the host's), network order.
    pub src: [u8; 4],
    /// New destination address (the target container), network order.
    pub dst: [u8; 4],
    /// When it was recorded ([`coarse_seconds`]).
    pub stamp_s: u32,
    /// Always zero.
    pub _pad: u32,
}

const _: () = assert!(size_of::<HairpinFrag>() == 16);

/// A fragmented datagram as it appears on the wire (RFC 791: source,
/// destination, protocol and identification tie its fragments together).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address, network order.
    pub src: [u8; 4],
    /// Destination address, network order.
    pub dst: [u8; 4],
    /// IP identification, as on the wire.
    pub id: [u8; 2],
    /// IP protocol number.
    pub proto: u8,
    /// Always zero.
    pub _pad: u8,
}

const _: () = assert!(size_of::<FragKey>() == 12);

/// What the first fragment's address was translated to; the fragments that
/// follow get the same address (they carry no ports).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    /// The new address (source going out, destination coming in); the
    /// datagram's own destination when its first fragment was the host's.
    pub addr: [u8; 4],
    /// When it was recorded ([`coarse_seconds`]); entries older than
    /// [`FRAG_TIMEOUT_S`] are ignored.
    pub stamp_s: u32,
}

const _: () = assert!(size_of::<FragValue>() == 8);

/// Most bytes of a frame [`FragStash`] holds (an Ethernet frame of a
/// 1500-byte MTU plus slack).
pub const FRAG_STASH_BYTES: usize = 1536;

/// Most early fragments held per datagram.
pub const FRAG_STASH_SLOTS: u32 = 4;

/// skb mark of a fragment netbpf re-injects after its first fragment
/// arrived: the ingress program lets it through (and clears the mark).
pub const FRAG_REPLAY_MARK: u32 = 0x6e62_7066;

/// A fragment that arrived before its datagram's first fragment: which
/// datagram, and which of its held fragments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragStashKey {
    /// The datagram, as on the wire.
    pub frag: FragKey,
    /// Slot, 0..[`FRAG_STASH_SLOTS`].
    pub slot: u32,
}

const _: () = assert!(size_of::<FragStashKey>() == 16);

/// A held fragment: the whole Ethernet frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragStash {
    /// Bytes used in `frame`.
    pub len: u32,
    /// Always zero.
    pub _pad: u32,
    /// The frame.
    pub frame: [u8; FRAG_STASH_BYTES],
}

const _: () = assert!(size_of::<FragStash>() == 8 + FRAG_STASH_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_stamps_expire_after_the_limit_and_wrap() {
        let ns = 100u64 << 30;
        let stamp = coarse_seconds(ns);
        assert!(!coarse_expired(
            stamp,
            stamp + FRAG_TIMEOUT_S,
            FRAG_TIMEOUT_S
        ));
        assert!(coarse_expired(
            stamp,
            stamp + FRAG_TIMEOUT_S + 1,
            FRAG_TIMEOUT_S
        ));
        assert!(
            !coarse_expired(u32::MAX, 3, FRAG_TIMEOUT_S),
            "across the wrap"
        );
    }
}
