//! Types shared by the eBPF programs and the userspace loader.
//!
//! Every map key and value lives here with a fixed `#[repr(C)]` layout,
//! explicit padding fields and a compile-time size assertion, so both sides
//! agree byte for byte. Conventions:
//!
//! * IPv4 addresses are `[u8; 4]` in network order (as on the wire).
//! * Ports and ICMP identifiers are `u16` in **host** order.
//! * Times are nanoseconds of `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`).
//! * Padding fields are always zero; keys are compared as raw bytes by the
//!   kernel, so a non-zero pad would make an otherwise equal key miss.
#![cfg_attr(not(test), no_std)]
#[cfg(test)]
extern crate std;

use core::mem::size_of;

mod flow_state;
pub use flow_state::FlowState;

/// IP protocol numbers netbpf translates.
pub mod proto {
    /// ICMP (echo request/reply are translated by identifier).
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// Names of the maps, as declared in the eBPF object and pinned in bpffs.
pub mod map_names {
    /// LPM trie: masquerade source CIDRs → [`crate::MasqRule`].
    pub const MASQ_RULES: &str = "MASQ_RULES";
    /// Hash: inside endpoint → [`crate::MappingValue`] (endpoint-independent mapping).
    pub const NAT_MAPPINGS: &str = "NAT_MAPPINGS";
    /// Hash: outside endpoint → inside [`crate::Endpoint`].
    pub const NAT_REVERSE: &str = "NAT_REVERSE";
    /// Hash: [`crate::FlowKey`] → [`crate::FlowValue`].
    pub const CONNTRACK: &str = "CONNTRACK";
    /// Per-CPU array of u64 indexed by [`crate::Counter`].
    pub const STATS: &str = "STATS";
    /// Per-CPU array of u64: port allocations by number of probes needed.
    pub const PORT_PROBES: &str = "PORT_PROBES";
    /// LPM trie: [`crate::PublishKey`] → [`crate::PublishRule`] (published ports).
    pub const PUBLISH: &str = "PUBLISH";
    /// Hash: the host's own IPv4 addresses (network order) → 1. Published
    /// ports without an address answer on these.
    pub const LOCAL_ADDRS: &str = "LOCAL_ADDRS";
    /// LRU hash: [`crate::FragKey`] → [`crate::FragValue`], the translation
    /// of a fragmented datagram's first fragment, for the ones that follow.
    pub const FRAGS: &str = "FRAGS";
    /// Ring buffer of [`crate::NatEvent`]s (mapping created), read by the
    /// daemon when session events are enabled.
    pub const EVENTS: &str = "EVENTS";
    /// Array of one u32: non-zero when session events are enabled (so the
    /// kernel side costs one lookup per new mapping when they are not).
    pub const EVENTS_ON: &str = "EVENTS_ON";
    /// LRU hash: [`crate::FragStashKey`] → [`crate::FragStash`], fragments
    /// held until their first fragment arrives.
    pub const FRAG_STASH: &str = "FRAG_STASH";
    /// LRU hash: [`crate::FragKey`] → u32, how many fragments of a datagram
    /// are held.
    pub const FRAG_HELD: &str = "FRAG_HELD";
    /// Per-CPU array of one [`crate::FragStash`]: scratch space to copy a
    /// frame into before storing it (the BPF stack is too small).
    pub const FRAG_SCRATCH: &str = "FRAG_SCRATCH";
    /// Array of one u64: the cookie of the network namespace whose sockets
    /// the cgroup hooks redirect to published ports.
    pub const SOCK_NETNS: &str = "SOCK_NETNS";
    /// LRU hash: [`crate::SockRevKey`] → [`crate::SockRevValue`], what a
    /// host socket asked for before the cgroup hook redirected it.
    pub const SOCK_REVNAT: &str = "SOCK_REVNAT";
    /// Hash: routed container address (network order) →
    /// [`crate::ContainerEntry`] (its veth and MACs).
    pub const CONTAINERS: &str = "CONTAINERS";
    /// Hash: host-side veth ifindex → [`crate::ContainerIf`] (the one
    /// address allowed from it, the veth's MAC).
    pub const CONTAINER_IFS: &str = "CONTAINER_IFS";
    /// Hash: next-hop address on the uplink (network order) →
    /// [`crate::Neighbour`], mirrored from the kernel's neighbour table.
    pub const NEIGHBOURS: &str = "NEIGHBOURS";
    /// Array of one [`crate::RouteUplink`]: the uplink's ifindex and MAC.
    pub const ROUTE_UPLINK: &str = "ROUTE_UPLINK";
    /// Per-CPU array of one 1024-byte buffer: scratch space to verify an
    /// ICMP error's checksums in.
    pub const CSUM_SCRATCH: &str = "CSUM_SCRATCH";
    /// Array of one [`crate::Settings`]: policies the config sets (what to
    /// do with unsolicited SYNs, the per-source budget for new flows).
    pub const SETTINGS: &str = "SETTINGS";
    /// LRU hash: outside source address (network order) → u64, the
    /// theoretical arrival time (GCRA) of its next allowed new flow.
    pub const SOURCE_BUDGET: &str = "SOURCE_BUDGET";
    /// LRU hash: [`crate::FragKey`] → [`crate::HairpinFrag`], both new
    /// addresses of a hairpinned datagram, for its non-first fragments.
    pub const HAIRPIN_FRAGS: &str = "HAIRPIN_FRAGS";
    /// Every map netbpf pins, in the order `netbpf` lists them. The last
    /// one is pinned last: its pin means the datapath is ready.
    pub const ALL: [&str; 24] = [
        MASQ_RULES,
        PUBLISH,
        LOCAL_ADDRS,
        FRAGS,
        EVENTS,
        EVENTS_ON,
        FRAG_STASH,
        FRAG_HELD,
        FRAG_SCRATCH,
        SOCK_NETNS,
        SOCK_REVNAT,
        NAT_MAPPINGS,
        NAT_REVERSE,
        CONNTRACK,
        CONTAINERS,
        CONTAINER_IFS,
        NEIGHBOURS,
        ROUTE_UPLINK,
        SETTINGS,
        SOURCE_BUDGET,
        HAIRPIN_FRAGS,
        CSUM_SCRATCH,
        STATS,
        PORT_PROBES,
    ];
}

/// Default capacities (entries); the daemon's config can change them.
pub mod capacity {
    /// Masquerade CIDRs.
    pub const MASQ_RULES: u32 = 1024;
    /// Published-port trie entries (a range takes at most 30).
    pub const PUBLISH: u32 = 16384;
    /// Host addresses.
    pub const LOCAL_ADDRS: u32 = 256;
    /// Fragmented datagrams in flight (least recently used evicted).
    pub const FRAGS: u32 = 16384;
    /// Host sockets redirected to a published port (least recently used
    /// evicted).
    pub const SOCK_REVNAT: u32 = 65536;
    /// Flows tracked at once.
    pub const CONNTRACK: u32 = 262_144;
    /// NAT mappings (and their reverse entries).
    pub const NAT_MAPPINGS: u32 = 262_144;
    /// Routed containers (and their veths).
    pub const CONTAINERS: u32 = 4096;
    /// Neighbours on the uplink.
    pub const NEIGHBOURS: u32 = 4096;
    /// Outside sources whose new-flow budget is tracked (least recently
    /// used evicted: an evicted source starts with a full budget).
    pub const SOURCE_BUDGET: u32 = 65536;
    /// Hairpinned fragmented datagrams in flight (least recently used
    /// evicted).
    pub const HAIRPIN_FRAGS: u32 = 1024;
}

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

/// Bits of [`Settings::flags`].
pub mod settings_flags {
    /// Let unsolicited TCP SYNs to the host's addresses through to the
    /// stack (where netfilter DNAT, IPVS or kube-proxy may take them)
    /// instead of dropping them silently (RFC 5382 REQ-4).
    pub const PASS_UNSOLICITED_SYN: u32 = 1 << 0;
}

/// Value of [`map_names::SETTINGS`] (index 0): the policies the config
/// sets, read by the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// [`settings_flags`] bits.
    pub flags: u32,
    /// Always zero.
    pub _pad: u32,
    /// Emission interval of the per-source new-flow budget (GCRA), in ns:
    /// one new flow opened from outside per interval per source address.
    /// 0 = no limit.
    pub source_interval_ns: u64,
    /// Burst tolerance of the budget, in ns (`(burst - 1) * interval`).
    pub source_tolerance_ns: u64,
}
const _: () = assert!(size_of::<Settings>() == 24);

impl Settings {
    /// The budget for `per_second` new flows per source with bursts of
    /// `burst` (0 = no limit).
    pub const fn with_source_budget(flags: u32, per_second: u32, burst: u32) -> Settings {
        if per_second == 0 {
            return Settings {
                flags,
                _pad: 0,
                source_interval_ns: 0,
                source_tolerance_ns: 0,
            };
        }
        let interval = 1_000_000_000 / per_second as u64;
        let burst = if burst == 0 { 1 } else { burst };
        Settings {
            flags,
            _pad: 0,
            source_interval_ns: interval,
            source_tolerance_ns: (burst as u64 - 1) * interval,
        }
    }

    /// GCRA: whether a new flow arriving at `now` from a source whose
    /// budget state is `tat` (its theoretical arrival time, 0 = unseen)
    /// is allowed, and the state to store if it is.
    #[inline(always)]
    pub const fn admit(&self, tat: u64, now: u64) -> Option<u64> {
        if self.source_interval_ns == 0 {
            return Some(0);
        }
        if tat > now.saturating_add(self.source_tolerance_ns) {
            return None;
        }
        let base = if tat > now { tat } else { now };
        Some(base + self.source_interval_ns)
    }
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

/// How many ports the kernel tries before it gives up allocating a mapping.
/// The first try is the original port (when it lies in the range), the rest
/// walk linearly from a random start.
pub const MAX_PORT_PROBES: u32 = 32;

/// Buckets of [`map_names::PORT_PROBES`]: index `n` counts allocations that
/// succeeded on probe `n` (0 = first try); the last bucket counts failures.
pub const PORT_PROBE_BUCKETS: u32 = MAX_PORT_PROBES + 1;

/// Key of the masquerade LPM trie: the source prefix in network order. The
/// prefix length is carried by aya's LPM `Key` wrapper around this.
pub type MasqPrefix = [u8; 4];

/// What to do with packets whose source lies in a masquerade CIDR when they
/// leave the uplink.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasqRule {
    /// Source address to translate to (the uplink address), network order.
    pub to_addr: [u8; 4],
    /// First port of the SNAT range; `0` together with `port_max == 0`
    /// means "Linux style": keep the original port's class (1–1023 or
    /// 1024–65535).
    pub port_min: u16,
    /// Last port of the SNAT range (inclusive).
    pub port_max: u16,
}
const _: () = assert!(size_of::<MasqRule>() == 8);

impl MasqRule {
    /// The outside ports (inclusive) a mapping of an inside `proto` port
    /// (or ICMP echo identifier) may get: the configured range, else the
    /// original port's class (RFC 4787 REQ-3a: 1–1023 or 1024–65535; any
    /// identifier for ICMP).
    #[inline(always)]
    pub const fn port_range(&self, proto_num: u8, port: u16) -> (u32, u32) {
        if self.port_min != 0 || self.port_max != 0 {
            return (self.port_min as u32, self.port_max as u32);
        }
        if proto_num == proto::ICMP {
            (0, 65535)
        } else if port < 1024 {
            (1, 1023)
        } else {
            (1024, 65535)
        }
    }
}

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

/// Kinds of [`NatEvent`].
pub mod event_kind {
    /// A mapping was created (from the kernel).
    pub const MAPPING_CREATED: u32 = 1;
    /// A mapping was released after its last flow expired (from userspace).
    pub const MAPPING_EXPIRED: u32 = 2;
    /// A TCP flow that had closed (FIN both ways, or RST) was removed (from
    /// userspace).
    pub const FLOW_CLOSED: u32 = 3;
}

/// A NAT session event (the RFC 8158 idea: who held which outside port
/// when), as the kernel writes it into [`map_names::EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatEvent {
    /// [`event_kind`].
    pub kind: u32,
    /// Always zero.
    pub _pad: u32,
    /// The inside endpoint.
    pub inside: Endpoint,
    /// The outside endpoint.
    pub outside: Endpoint,
    /// CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
}
const _: () = assert!(size_of::<NatEvent>() == 32);

/// One side of a translation: protocol, address and port (or ICMP id).
/// Key and value of [`map_names::NAT_REVERSE`], key of
/// [`map_names::NAT_MAPPINGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// IPv4 address, network order.
    pub addr: [u8; 4],
    /// Port (TCP/UDP) or echo identifier (ICMP), host order.
    pub port: u16,
    /// IP protocol number ([`proto`]).
    pub proto: u8,
    /// Always zero.
    pub _pad: u8,
}
const _: () = assert!(size_of::<Endpoint>() == 8);

impl Endpoint {
    /// An endpoint with zeroed padding.
    pub const fn new(proto: u8, addr: [u8; 4], port: u16) -> Self {
        Self {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }
}

/// Value of [`map_names::NAT_MAPPINGS`]: the outside endpoint that an inside
/// endpoint is translated to, for every destination (RFC 4787 REQ-1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingValue {
    /// The outside endpoint (uplink address and allocated port).
    pub outside: Endpoint,
    /// When a flow last started using this mapping. Garbage collection keeps
    /// a mapping while any flow references it, and for a grace period after
    /// this time, so a flow created during a collection pass is never left
    /// without its mapping.
    pub last_used_ns: u64,
}
const _: () = assert!(size_of::<MappingValue>() == 16);

/// Key of [`map_names::CONNTRACK`]: one flow as seen from the inside.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Inside (container) address, network order.
    pub inside_addr: [u8; 4],
    /// Remote (outside) address, network order.
    pub remote_addr: [u8; 4],
    /// Inside port or ICMP echo identifier, host order.
    pub inside_port: u16,
    /// Remote port, host order; 0 for ICMP.
    pub remote_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FlowKey>() == 16);

impl FlowKey {
    /// A flow key with zeroed padding.
    pub const fn new(
        proto: u8,
        inside_addr: [u8; 4],
        inside_port: u16,
        remote_addr: [u8; 4],
        remote_port: u16,
    ) -> Self {
        Self {
            inside_addr,
            remote_addr,
            inside_port,
            remote_port,
            proto,
            _pad: [0; 3],
        }
    }
}

/// Bits of [`FlowValue::flags`]. The kernel sets bits with an atomic OR, and
/// clears them (all but [`flow_flags::OPENED_IN`]) only when an opening SYN
/// reuses the tuple of a closed or reset TCP flow; userspace derives the
/// connection state and its timeout from them.
pub mod flow_flags {
    /// A packet went out (inside → remote).
    pub const SEEN_OUT: u64 = 1 << 0;
    /// A packet came in (remote → inside).
    pub const SEEN_IN: u64 = 1 << 1;
    /// TCP SYN seen going out.
    pub const SYN_OUT: u64 = 1 << 2;
    /// TCP SYN seen coming in.
    pub const SYN_IN: u64 = 1 << 3;
    /// TCP FIN seen going out.
    pub const FIN_OUT: u64 = 1 << 4;
    /// TCP FIN seen coming in.
    pub const FIN_IN: u64 = 1 << 5;
    /// TCP RST seen in either direction.
    pub const RST: u64 = 1 << 6;
    /// The flow was opened from outside (endpoint-independent filtering let
    /// a remote reach an existing mapping, or a published port).
    pub const OPENED_IN: u64 = 1 << 7;
    /// The flow goes to a published port (DNAT): its outside endpoint is
    /// the host address and port the client used.
    pub const PUBLISHED: u64 = 1 << 8;
    /// TCP: a segment with ACK and without SYN went out. With
    /// [`ACK_IN`], it tells a completed handshake from a half-open one
    /// (a SYN answered by a SYN-ACK that the opener never acknowledged).
    pub const ACK_OUT: u64 = 1 << 9;
    /// TCP: a segment with ACK and without SYN came in.
    pub const ACK_IN: u64 = 1 << 10;
}

/// Value of [`map_names::CONNTRACK`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Outside address the inside endpoint is translated to, network order.
    pub outside_addr: [u8; 4],
    /// Outside port or ICMP identifier, host order.
    pub outside_port: u16,
    /// Always zero.
    pub _pad0: u16,
    /// [`flow_flags`] bits (64 bits wide so the kernel can OR them
    /// atomically: the BPF target has 64-bit atomics only).
    pub flags: u64,
    /// When the flow was created.
    pub created_ns: u64,
    /// When the last packet of the flow was seen, in either direction.
    pub last_seen_ns: u64,
    /// Packets inside → remote.
    pub packets_out: u64,
    /// Bytes (IP total length) inside → remote.
    pub bytes_out: u64,
    /// Packets remote → inside.
    pub packets_in: u64,
    /// Bytes (IP total length) remote → inside.
    pub bytes_in: u64,
    /// TCP: the acknowledgment number of the last segment that went out
    /// (what the inside expects next from the remote); 0 = not seen. An
    /// RST or FIN coming in is believed only near it.
    pub ack_out: u32,
    /// TCP: the acknowledgment number of the last segment that came in.
    pub ack_in: u32,
}
const _: () = assert!(size_of::<FlowValue>() == 72);

/// How far (in sequence space) from the receiver's last acknowledgment a
/// RST or FIN may claim to be and still change a flow's state. A blind
/// RST must guess a sequence number within this distance (a chance of
/// 2^21 in 2^32), where without the check any RST knowing the 4-tuple
/// moved a live flow to the transitory timeout.
pub const TCP_CLOSE_WINDOW: u32 = 1 << 20;

/// Whether a RST or FIN with sequence number `seq` is close enough to
/// `expected` (the receiving side's last acknowledgment, 0 = unknown) to
/// be believed. Wrapping arithmetic, as sequence numbers wrap.
#[inline(always)]
pub const fn tcp_close_in_window(seq: u32, expected: u32) -> bool {
    if expected == 0 {
        return true;
    }
    let d = seq.wrapping_sub(expected);
    d < TCP_CLOSE_WINDOW || d > u32::MAX - TCP_CLOSE_WINDOW
}

/// Value of [`map_names::CONTAINERS`]: where a routed container is and the
/// Ethernet addresses a frame to it carries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerEntry {
    /// Index of the host side of the container's veth.
    pub ifindex: u32,
    /// MAC of the host side of the veth (source of frames to the container).
    pub host_mac: [u8; 6],
    /// The container's MAC (destination of frames to it).
    pub mac: [u8; 6],
}
const _: () = assert!(size_of::<ContainerEntry>() == 16);

/// Bits of [`ContainerIf::flags`].
pub mod container_if_flags {
    /// The daemon has attached the container-side program to this veth.
    /// Set and read by userspace only (`netbpf containers add` waits for it).
    pub const ATTACHED: u16 = 1 << 0;
}

/// Value of [`map_names::CONTAINER_IFS`]: the container behind a host-side
/// veth. Packets arriving from the veth must come from `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerIf {
    /// The container's address, network order.
    pub addr: [u8; 4],
    /// MAC of this (host-side) veth: the answer to the container's ARP.
    pub host_mac: [u8; 6],
    /// [`container_if_flags`] bits.
    pub flags: u16,
}
const _: () = assert!(size_of::<ContainerIf>() == 12);

/// Value of [`map_names::NEIGHBOURS`]: a next hop's MAC on the uplink.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Neighbour {
    /// Its MAC.
    pub mac: [u8; 6],
    /// The kernel's `NUD_*` state bits when the entry was copied.
    pub state: u16,
    /// Interface it was learnt on (the uplink).
    pub ifindex: u32,
}
const _: () = assert!(size_of::<Neighbour>() == 12);

/// Value of [`map_names::ROUTE_UPLINK`] (index 0): the uplink as the
/// routing programs see it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteUplink {
    /// Uplink ifindex (0 = routing not configured).
    pub ifindex: u32,
    /// Uplink MAC: what ARP on the uplink answers for containers, and the
    /// source of frames forwarded out of it.
    pub mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<RouteUplink>() == 12);

/// Everything the datapath counts, as indexes into [`map_names::STATS`].
/// Drops are named by reason; every drop the programs make increments
/// exactly one `Drop*` counter.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets the programs looked at and left untouched (no rule matched).
    Passed = 0,
    /// Packets source-translated on the way out.
    SnatPackets,
    /// Bytes (IP total length) source-translated on the way out.
    SnatBytes,
    /// Reply packets translated back to the inside endpoint.
    ReversePackets,
    /// Bytes (IP total length) translated back.
    ReverseBytes,
    /// NAT mappings created.
    MappingsCreated,
    /// Conntrack flows created.
    FlowsCreated,
    /// IPv4 fragments that arrived at the uplink and were passed untouched
    /// (no first fragment seen for them: the host's own, or out of order).
    FragmentsPassed,
    /// Non-first fragments translated like their first fragment.
    FragmentsTranslated,
    /// Fragments that arrived before their first fragment and were held
    /// (RFC 4787 REQ-14: out-of-order fragments must work).
    FragmentsHeld,
    /// Held fragments sent on once their first fragment arrived.
    FragmentsReplayed,
    /// Packets to a published port translated to the container.
    DnatPackets,
    /// Bytes (IP total length) translated to a published container.
    DnatBytes,
    /// ICMP errors translated (outer and embedded headers), both directions.
    IcmpErrorsTranslated,
    /// Packets hairpinned: a container reaching an outside endpoint of the
    /// NAT, translated both ways and redirected to the target.
    HairpinPackets,
    /// Dropped: IPv4 header invalid (version, IHL, total length, truncated).
    DropMalformedIp,
    /// Dropped: the TCP/UDP/ICMP header is truncated or invalid.
    DropMalformedL4,
    /// Dropped: a non-first fragment from a masquerade CIDR whose first
    /// fragment was not seen (it cannot be translated).
    DropFragment,
    /// Dropped: a masquerade source with a protocol netbpf cannot translate.
    DropUnsupportedProto,
    /// Dropped: an ICMP type from a masquerade source that is not translated.
    DropUnsupportedIcmp,
    /// Dropped: every probed port of the SNAT range was taken.
    DropPortExhausted,
    /// Dropped: the mapping table is full.
    DropMappingTableFull,
    /// Dropped: the conntrack table is full.
    DropConntrackFull,
    /// Dropped: inbound TCP without an opening SYN from a remote that has no
    /// flow with the mapping it targets (endpoint-independent filtering only
    /// lets a SYN open a TCP flow).
    DropTcpNoFlow,
    /// Dropped: a kernel helper failed while rewriting the packet.
    DropRewriteFailed,
    /// Dropped: arrived on the uplink addressed straight to an address in a
    /// masquerade CIDR (only published ports and live mappings reach
    /// containers; Docker >= 28 blocks this too).
    DropDirectToInside,
    /// Dropped: an ICMP error about a flow netbpf does not know, coming from
    /// or going to a container (RFC 5508 REQ-4/5: no mapping, no delivery).
    DropIcmpNoFlow,
    /// Dropped: a hairpinned packet whose target has no route.
    DropHairpinNoRoute,
    /// Host sockets redirected to a published container by the cgroup
    /// hooks (one per connect, or per unconnected UDP send). Not a drop.
    HostSocketRedirects,
    /// ARP requests for a routed container (on the uplink) or from one (on
    /// its veth) answered by netbpf.
    ArpReplies,
    /// Packets forwarded from the uplink straight to a routed container.
    RoutedIn,
    /// Packets forwarded from a routed container straight to its next hop
    /// on the uplink.
    RoutedOut,
    /// Packets forwarded from one routed container to another.
    RoutedLocal,
    /// Routed packets handed to the kernel because their TTL ran out (it
    /// sends the time-exceeded error).
    RouteTtlExpired,
    /// Routed packets handed to the kernel because their next hop is not in
    /// the neighbour map yet (the kernel resolves it; the map learns it).
    RouteNoNeighbour,
    /// Dropped: from a routed container's veth with a source address (IPv4
    /// or ARP sender) that is not the container's.
    DropSpoofed,
    /// Dropped: arrived on the uplink with a source address inside a
    /// masquerade CIDR (spoofed: those addresses only exist behind the
    /// NAT).
    DropSpoofedFromOutside,
    /// Dropped silently: an opening TCP SYN from outside to the host's
    /// address that no mapping, published port or host socket takes (RFC
    /// 5382 REQ-4: a NAT must not answer it; Linux would send a RST).
    DropUnsolicitedSyn,
    /// Dropped: a new flow from an outside address that has used up its
    /// budget of new flows (`[inbound] new_flows_per_source`): one source
    /// cannot fill the conntrack table.
    DropSourceLimit,
    /// Packets to a NAT outside port that a host socket owns (listening or
    /// connected), left to the host: the host's sockets win over a
    /// container's mapping. Not a drop.
    HostPortsKept,
    /// Unsolicited SYNs to the host's addresses let through to the stack
    /// (`[inbound] unsolicited_syn = "pass"`), for netfilter DNAT, IPVS or
    /// kube-proxy. Not a drop.
    UnsolicitedSynsPassed,
    /// Dropped: an 802.1Q-tagged frame from a routed container (a redirect
    /// would carry the tag onto the uplink's trunk).
    DropVlanTagged,
    /// Routed packets handed to the kernel because they are larger than
    /// the egress device's MTU (it fragments them or sends "fragmentation
    /// needed"). Not a drop.
    RouteMtuExceeded,
    /// TCP RST or FIN segments too far from the receiver's last
    /// acknowledgment ([`TCP_CLOSE_WINDOW`]): forwarded, but they do not
    /// change the flow's state (a blind RST cannot shorten a live flow's
    /// timeout). Not a drop.
    TcpCloseIgnored,
    /// Dropped: an ICMP error about a NAT flow whose ICMP checksum, or
    /// whose quoted IP header's checksum, is wrong (RFC 5508 REQ-3a: it
    /// must not be translated).
    DropIcmpBadChecksum,
    /// ICMP "communication administratively prohibited" (3/13) sent back
    /// to a container whose new flow could not get a NAT session (RFC 5508
    /// REQ-8); the packet itself is counted by its drop reason. Not a drop.
    IcmpProhibitedSent,
}

impl Counter {
    /// Number of counters (the size of the stats map).
    pub const COUNT: u32 = Counter::IcmpProhibitedSent as u32 + 1;

    /// Every counter, in index order.
    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::Passed,
        Counter::SnatPackets,
        Counter::SnatBytes,
        Counter::ReversePackets,
        Counter::ReverseBytes,
        Counter::MappingsCreated,
        Counter::FlowsCreated,
        Counter::FragmentsPassed,
        Counter::FragmentsTranslated,
        Counter::FragmentsHeld,
        Counter::FragmentsReplayed,
        Counter::DnatPackets,
        Counter::DnatBytes,
        Counter::IcmpErrorsTranslated,
        Counter::HairpinPackets,
        Counter::DropMalformedIp,
        Counter::DropMalformedL4,
        Counter::DropFragment,
        Counter::DropUnsupportedProto,
        Counter::DropUnsupportedIcmp,
        Counter::DropPortExhausted,
        Counter::DropMappingTableFull,
        Counter::DropConntrackFull,
        Counter::DropTcpNoFlow,
        Counter::DropRewriteFailed,
        Counter::DropDirectToInside,
        Counter::DropIcmpNoFlow,
        Counter::DropHairpinNoRoute,
        Counter::HostSocketRedirects,
        Counter::ArpReplies,
        Counter::RoutedIn,
        Counter::RoutedOut,
        Counter::RoutedLocal,
        Counter::RouteTtlExpired,
        Counter::RouteNoNeighbour,
        Counter::DropSpoofed,
        Counter::DropSpoofedFromOutside,
        Counter::DropUnsolicitedSyn,
        Counter::DropSourceLimit,
        Counter::HostPortsKept,
        Counter::UnsolicitedSynsPassed,
        Counter::DropVlanTagged,
        Counter::RouteMtuExceeded,
        Counter::TcpCloseIgnored,
        Counter::DropIcmpBadChecksum,
        Counter::IcmpProhibitedSent,
    ];

    /// Stable snake_case name, used in `netbpf stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Passed => "passed",
            Counter::SnatPackets => "snat_packets",
            Counter::SnatBytes => "snat_bytes",
            Counter::ReversePackets => "reverse_packets",
            Counter::ReverseBytes => "reverse_bytes",
            Counter::MappingsCreated => "mappings_created",
            Counter::FlowsCreated => "flows_created",
            Counter::FragmentsPassed => "fragments_passed",
            Counter::FragmentsTranslated => "fragments_translated",
            Counter::FragmentsHeld => "fragments_held",
            Counter::FragmentsReplayed => "fragments_replayed",
            Counter::DnatPackets => "dnat_packets",
            Counter::DnatBytes => "dnat_bytes",
            Counter::IcmpErrorsTranslated => "icmp_errors_translated",
            Counter::HairpinPackets => "hairpin_packets",
            Counter::DropMalformedIp => "drop_malformed_ip",
            Counter::DropMalformedL4 => "drop_malformed_l4",
            Counter::DropFragment => "drop_fragment",
            Counter::DropUnsupportedProto => "drop_unsupported_proto",
            Counter::DropUnsupportedIcmp => "drop_unsupported_icmp",
            Counter::DropPortExhausted => "drop_port_exhausted",
            Counter::DropMappingTableFull => "drop_mapping_table_full",
            Counter::DropConntrackFull => "drop_conntrack_full",
            Counter::DropTcpNoFlow => "drop_tcp_no_flow",
            Counter::DropRewriteFailed => "drop_rewrite_failed",
            Counter::DropDirectToInside => "drop_direct_to_inside",
            Counter::DropIcmpNoFlow => "drop_icmp_no_flow",
            Counter::DropHairpinNoRoute => "drop_hairpin_no_route",
            Counter::HostSocketRedirects => "host_socket_redirects",
            Counter::ArpReplies => "arp_replies",
            Counter::RoutedIn => "routed_in",
            Counter::RoutedOut => "routed_out",
            Counter::RoutedLocal => "routed_local",
            Counter::RouteTtlExpired => "route_ttl_expired",
            Counter::RouteNoNeighbour => "route_no_neighbour",
            Counter::DropSpoofed => "drop_spoofed",
            Counter::DropSpoofedFromOutside => "drop_spoofed_from_outside",
            Counter::DropUnsolicitedSyn => "drop_unsolicited_syn",
            Counter::DropSourceLimit => "drop_source_limit",
            Counter::HostPortsKept => "host_ports_kept",
            Counter::UnsolicitedSynsPassed => "unsolicited_syns_passed",
            Counter::DropVlanTagged => "drop_vlan_tagged",
            Counter::RouteMtuExceeded => "route_mtu_exceeded",
            Counter::TcpCloseIgnored => "tcp_close_ignored",
            Counter::DropIcmpBadChecksum => "drop_icmp_bad_checksum",
            Counter::IcmpProhibitedSent => "icmp_prohibited_sent",
        }
    }

    /// Whether this counter counts dropped packets.
    pub const fn is_drop(self) -> bool {
        let name = self.name().as_bytes();
        name.len() > 5
            && name[0] == b'd'
            && name[1] == b'r'
            && name[2] == b'o'
            && name[3] == b'p'
            && name[4] == b'_'
    }
}

#[cfg(feature = "user")]
mod pod {
    /// Marks map types as plain old data for aya.
    macro_rules! pod {
        ($($t:ident),* $(,)?) => {$(
            // SAFETY: every map type is repr(C), Copy, holds only integers
            // and byte arrays, and has explicit padding fields, so every bit
            // pattern is valid and there are no uninitialised bytes.
            unsafe impl aya::Pod for super::$t {}
        )*};
    }

    pod!(
        MasqRule,
        PublishKey,
        PublishRule,
        FragKey,
        FragValue,
        NatEvent,
        FragStashKey,
        FragStash,
        SockRevKey,
        SockRevValue,
        Endpoint,
        MappingValue,
        FlowKey,
        FlowValue,
        ContainerEntry,
        ContainerIf,
        Neighbour,
        RouteUplink,
        Settings,
        HairpinFrag,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_is_believed_only_near_the_receivers_acknowledgment() {
        assert!(tcp_close_in_window(1000, 0), "nothing known: believed");
        assert!(tcp_close_in_window(1000, 1000));
        assert!(tcp_close_in_window(1000 + TCP_CLOSE_WINDOW - 1, 1000));
        assert!(!tcp_close_in_window(1000 + TCP_CLOSE_WINDOW, 1000));
        assert!(tcp_close_in_window(1000 - 10, 1000), "a little behind");
        // Across the wrap of the sequence space.
        assert!(tcp_close_in_window(5, u32::MAX - 5));
        assert!(!tcp_close_in_window(0x8000_0000, 1000), "a blind guess");
    }

    #[test]
    fn the_source_budget_allows_a_burst_then_the_rate() {
        let s = Settings::with_source_budget(0, 10, 3);
        assert_eq!(s.source_interval_ns, 100_000_000);
        let t0 = 1_000_000_000;
        let mut tat = 0;
        for i in 0..3 {
            tat = s.admit(tat, t0).unwrap_or_else(|| panic!("burst {i}"));
        }
        assert_eq!(s.admit(tat, t0), None, "over the burst");
        // One interval later there is room for one more.
        let later = t0 + s.source_interval_ns;
        assert!(s.admit(tat, later).is_some());
        // No limit configured: always admitted.
        assert!(
            Settings::with_source_budget(0, 0, 0)
                .admit(u64::MAX, 0)
                .is_some()
        );
    }

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

    #[test]
    fn folding_carries_until_sixteen_bits() {
        assert_eq!(csum_fold(0), 0);
        assert_eq!(csum_fold(0x1_fffe), 0xffff);
        assert_eq!(csum_fold(0xffff_ffff), 0xffff);
        // RFC 1071's example: words 0001 f203 f4f5 f6f7 sum to 2ddf0 → ddf2.
        assert_eq!(csum_fold(0x0001 + 0xf203 + 0xf4f5 + 0xf6f7), 0xddf2);
    }

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
