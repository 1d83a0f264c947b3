//! Every map the programs use. Types and names come from `netbpf-common`;
//! capacities here are defaults that the loader overrides from the config.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use netbpf_common::{
    Counter, Endpoint, FRAG_STASH_SLOTS, FlowKey, FlowValue, FragKey, FragStash, FragStashKey,
    FragValue, HairpinFrag, HopKey, HopValue, IccPort, IsolationNet, MappingValue, MasqPrefix,
    MasqRule, PORT_PROBE_BUCKETS, PublishKey, PublishRule, ReplyKey, ReplyValue, Settings,
    SockRevKey, SockRevValue, capacity,
};

/// `EEXIST`, as map updates return it (negated).
pub(crate) const EEXIST: i32 = 17;

/// Masquerade source CIDRs, written by userspace.
#[map]
pub(crate) static MASQ_RULES: LpmTrie<MasqPrefix, MasqRule> =
    LpmTrie::with_max_entries(capacity::MASQ_RULES, 0);

/// Published ports, written by userspace.
#[map]
pub(crate) static PUBLISH: LpmTrie<PublishKey, PublishRule> =
    LpmTrie::with_max_entries(capacity::PUBLISH, 0);

/// Isolated container networks' subnets, written by userspace.
#[map]
pub(crate) static ISOLATION: LpmTrie<[u8; 4], IsolationNet> =
    LpmTrie::with_max_entries(capacity::ISOLATION, 0);

/// Bridge ports (ifindex) of networks with inter-container communication
/// off, written by userspace.
#[map]
pub(crate) static ICC_PORTS: HashMap<u32, IccPort> =
    HashMap::with_max_entries(capacity::ICC_PORTS, 0);

/// The host's own addresses, written by userspace.
#[map]
pub(crate) static LOCAL_ADDRS: HashMap<[u8; 4], u32> =
    HashMap::with_max_entries(capacity::LOCAL_ADDRS, 0);

/// Translations of fragmented datagrams for their non-first fragments.
#[map]
pub(crate) static FRAGS: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(capacity::FRAGS, 0);

/// Session events for the daemon (written only when enabled).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Whether session events are enabled (index 0, non-zero = on).
#[map]
pub(crate) static EVENTS_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Fragments held until their first fragment arrives.
#[map]
pub(crate) static FRAG_STASH: LruHashMap<FragStashKey, FragStash> =
    LruHashMap::with_max_entries(1024 * FRAG_STASH_SLOTS, 0);

/// How many fragments of a datagram are held.
#[map]
pub(crate) static FRAG_HELD: LruHashMap<FragKey, u32> = LruHashMap::with_max_entries(1024, 0);

/// Scratch space to copy a frame into before holding it.
#[map]
pub(crate) static FRAG_SCRATCH: PerCpuArray<FragStash> = PerCpuArray::with_max_entries(1, 0);

/// The network namespace (cookie) whose sockets reach published ports.
#[map]
pub(crate) static SOCK_NETNS: Array<u64> = Array::with_max_entries(1, 0);

/// What redirected host sockets asked for.
#[map]
pub(crate) static SOCK_REVNAT: LruHashMap<SockRevKey, SockRevValue> =
    LruHashMap::with_max_entries(capacity::SOCK_REVNAT, 0);

/// Inside endpoint → outside endpoint (one per inside endpoint: EIM).
#[map]
pub(crate) static NAT_MAPPINGS: HashMap<Endpoint, MappingValue> =
    HashMap::with_max_entries(capacity::NAT_MAPPINGS, 0);

/// Outside endpoint → inside endpoint. Inserted first with `BPF_NOEXIST`:
/// whoever inserts it owns the port.
#[map]
pub(crate) static NAT_REVERSE: HashMap<Endpoint, Endpoint> =
    HashMap::with_max_entries(capacity::NAT_MAPPINGS, 0);

/// Per-flow state, written by the programs, expired by userspace. An LRU
/// map: when it is full (or no daemon expires flows), a new flow takes the
/// place of the least recently used one instead of being refused.
#[map]
pub(crate) static CONNTRACK: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(capacity::CONNTRACK, 0);

/// Each flow's reply half: its inbound tuple → the inside endpoint and the
/// inbound direction's state (`netbpf_common::reply`). As large as
/// [`CONNTRACK`]. A plain hash map: when it is full a half is refused, and
/// its flow's inbound packets keep taking the long way (an LRU map would
/// evict a live flow's half instead, and did evict fresh ones in the
/// bench's nearly full 1M-flow table); the daemon's collector removes
/// halves with their flows, and those whose flow was evicted.
#[map]
pub(crate) static CONNTRACK_REPLY: HashMap<ReplyKey, ReplyValue> =
    HashMap::with_max_entries(capacity::CONNTRACK, 0);

/// Counters indexed by [`Counter`].
#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Port allocations by number of probes needed.
#[map]
pub(crate) static PORT_PROBES: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(PORT_PROBE_BUCKETS, 0);

/// Routed container address → its veth and MACs, written by userspace.
#[map]
pub(crate) static CONTAINERS: HashMap<[u8; 4], netbpf_common::ContainerEntry> =
    HashMap::with_max_entries(capacity::CONTAINERS, 0);

/// Host-side veth ifindex → the container behind it, written by userspace.
#[map]
pub(crate) static CONTAINER_IFS: HashMap<u32, netbpf_common::ContainerIf> =
    HashMap::with_max_entries(capacity::CONTAINERS, 0);

/// Next hop on the uplink → its MAC, mirrored from the kernel's neighbour
/// table by userspace.
#[map]
pub(crate) static NEIGHBOURS: HashMap<[u8; 4], netbpf_common::Neighbour> =
    HashMap::with_max_entries(capacity::NEIGHBOURS, 0);

/// Routed container IPv6 address → its veth and MACs, written by
/// userspace.
#[map]
pub(crate) static CONTAINERS6: HashMap<[u8; 16], netbpf_common::ContainerEntry> =
    HashMap::with_max_entries(capacity::CONTAINERS, 0);

/// Host-side veth ifindex → the IPv6 address of the container behind it,
/// written by userspace.
#[map]
pub(crate) static CONTAINER_IFS6: HashMap<u32, netbpf_common::ContainerIf6> =
    HashMap::with_max_entries(capacity::CONTAINERS, 0);

/// IPv6 next hop on the uplink → its MAC, mirrored from the kernel's
/// neighbour table by userspace.
#[map]
pub(crate) static NEIGHBOURS6: HashMap<[u8; 16], netbpf_common::Neighbour> =
    HashMap::with_max_entries(capacity::NEIGHBOURS, 0);

/// The uplink's ifindex and MAC (index 0), written by userspace.
#[map]
pub(crate) static ROUTE_UPLINK: Array<netbpf_common::RouteUplink> = Array::with_max_entries(1, 0);

/// Bytes of [`CSUM_SCRATCH`]: the longest ICMP error whose checksums are
/// verified.
pub(crate) const CSUM_SCRATCH_BYTES: usize = 1024;

/// Scratch space to sum an ICMP error's bytes in.
#[map]
pub(crate) static CSUM_SCRATCH: PerCpuArray<[u32; CSUM_SCRATCH_BYTES / 4]> =
    PerCpuArray::with_max_entries(1, 0);

/// The config's policies (index 0), written by userspace.
#[map]
pub(crate) static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Per outside source: when its next new flow is due (GCRA state).
#[map]
pub(crate) static SOURCE_BUDGET: LruHashMap<[u8; 4], u64> =
    LruHashMap::with_max_entries(capacity::SOURCE_BUDGET, 0);

/// Both new addresses of hairpinned fragmented datagrams.
#[map]
pub(crate) static HAIRPIN_FRAGS: LruHashMap<FragKey, HairpinFrag> =
    LruHashMap::with_max_entries(capacity::HAIRPIN_FRAGS, 0);

/// The fast path's cache of `bpf_fib_lookup` answers.
#[map]
pub(crate) static FAST_HOPS: LruHashMap<HopKey, HopValue> =
    LruHashMap::with_max_entries(capacity::FAST_HOPS, 0);

/// The bench's floor program's next hop by ingress ifindex, written by the
/// bench; the daemon never fills it.
#[map]
pub(crate) static BENCH_HOPS: HashMap<u32, HopValue> = HashMap::with_max_entries(8, 0);
/// The container-side interfaces the uplink's XDP program may redirect to
/// (ifindex → the same ifindex), written by userspace: only devices that
/// take XDP frames without loss (see `crate::xdp`).
#[map]
pub(crate) static XDP_TARGETS: DevMapHash = DevMapHash::with_max_entries(capacity::XDP_TARGETS, 0);
