//! Names and sizes both sides agree on: IP protocols, map names, default capacities.

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
    /// Hash: [`crate::ReplyKey`] → [`crate::ReplyValue`], each flow's
    /// reply half (its inbound tuple → the inside endpoint), as large as
    /// [`CONNTRACK`].
    pub const CONNTRACK_REPLY: &str = "CONNTRACK_REPLY";
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
    /// LRU hash: [`crate::HopKey`] → [`crate::HopValue`], the fast path's
    /// cache of `bpf_fib_lookup` answers.
    pub const FAST_HOPS: &str = "FAST_HOPS";
    /// Hash: ingress ifindex → [`crate::HopValue`], the next hop of the
    /// router bench's floor program (`cargo xtask bench` only; never
    /// pinned, not in [`ALL`]).
    pub const BENCH_HOPS: &str = "BENCH_HOPS";
    /// Device map (hash): ifindex → the same ifindex, the container-side
    /// interfaces the uplink's XDP program may redirect to (written by
    /// userspace: those that take XDP frames without loss).
    pub const XDP_TARGETS: &str = "XDP_TARGETS";
    /// LPM trie: container network subnet → [`crate::IsolationNet`]
    /// (isolation between networks, written by the Docker follower).
    pub const ISOLATION: &str = "ISOLATION";
    /// Hash: ifindex of a bridge port (a container's host-side veth) →
    /// [`crate::IccPort`], the ports of networks with inter-container
    /// communication off (written by the Docker follower).
    pub const ICC_PORTS: &str = "ICC_PORTS";
    /// Hash: routed container IPv6 address (network order) →
    /// [`crate::ContainerEntry`] (its veth and MACs).
    pub const CONTAINERS6: &str = "CONTAINERS6";
    /// Hash: host-side veth ifindex → [`crate::ContainerIf6`] (the one
    /// IPv6 address allowed from it).
    pub const CONTAINER_IFS6: &str = "CONTAINER_IFS6";
    /// Hash: IPv6 next-hop address on the uplink (network order) →
    /// [`crate::Neighbour`], mirrored from the kernel's neighbour table.
    pub const NEIGHBOURS6: &str = "NEIGHBOURS6";
    /// Every map netbpf pins, in the order `netbpf` lists them. The last
    /// one is pinned last: its pin means the datapath is ready.
    pub const ALL: [&str; 32] = [
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
        CONNTRACK_REPLY,
        CONTAINERS,
        CONTAINER_IFS,
        NEIGHBOURS,
        ROUTE_UPLINK,
        CONTAINERS6,
        CONTAINER_IFS6,
        NEIGHBOURS6,
        SETTINGS,
        SOURCE_BUDGET,
        HAIRPIN_FRAGS,
        FAST_HOPS,
        XDP_TARGETS,
        ISOLATION,
        ICC_PORTS,
        CSUM_SCRATCH,
        STATS,
        PORT_PROBES,
    ];
}

/// Default capacities (entries); the daemon's config can change them.
pub mod capacity {
    /// Masquerade CIDRs.
    pub const MASQ_RULES: u32 = 1024;
    /// Isolated container network subnets.
    pub const ISOLATION: u32 = 1024;
    /// Bridge ports of networks with inter-container communication off.
    pub const ICC_PORTS: u32 = 4096;
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
    /// Next hops the fast path remembers (containers inbound, remotes
    /// outbound; the least recently used make room).
    pub const FAST_HOPS: u32 = 16384;
    /// Container-side interfaces the uplink's XDP program may redirect to.
    pub const XDP_TARGETS: u32 = 4096;
}

/// How many ports the kernel tries before it gives up allocating a mapping.
/// The first try is the original port (when it lies in the range), the rest
/// walk linearly from a random start.
pub const MAX_PORT_PROBES: u32 = 32;

/// Buckets of [`map_names::PORT_PROBES`]: index `n` counts allocations that
/// succeeded on probe `n` (0 = first try); the last bucket counts failures.
pub const PORT_PROBE_BUCKETS: u32 = MAX_PORT_PROBES + 1;
