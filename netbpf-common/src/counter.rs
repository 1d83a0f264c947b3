//! Every counter the datapath keeps, by name and meaning.

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
    /// Dropped: IPv4 header invalid (version, IHL, total length, truncated),
    /// or the IPv6 header of a packet to or from a routed container
    /// (version, a payload length past the packet's end, truncated).
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
    /// Routed packets handed to the kernel because their TTL (IPv6: hop
    /// limit) ran out (it sends the time-exceeded error).
    RouteTtlExpired,
    /// Routed packets handed to the kernel because their next hop is not in
    /// the neighbour map yet (the kernel resolves it; the map learns it).
    RouteNoNeighbour,
    /// Dropped: from a routed container's veth with a source address (IPv4,
    /// ARP sender, or an IPv6 source that is not link-local or unspecified)
    /// that is not the container's.
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
    /// Packets translated on the uplink (reply or published port) and sent
    /// straight to the interface that leads to the container (the fast
    /// path), past the host's routing and netfilter. Not a drop.
    FastPathIn,
    /// Packets from a container masqueraded at the interface it arrived on
    /// and sent straight to the uplink (the fast path). Not a drop.
    FastPathOut,
    /// NAT packets handed to the stack instead of the fast path: the
    /// kernel does not know the next hop's MAC yet (it resolves it; the
    /// next packet goes fast). Not a drop.
    FastPathNoNeighbour,
    /// NAT packets handed to the stack instead of the fast path: larger
    /// than the egress device's MTU (the kernel fragments them or answers
    /// "fragmentation needed"). Not a drop.
    FastPathMtu,
    /// NAT packets handed to the stack instead of the fast path: TTL 1 or 0
    /// (the kernel sends time exceeded). Not a drop.
    FastPathTtl,
    /// NAT packets handed to the stack instead of the fast path: the FIB
    /// does not forward them (a local destination, no route, forwarding
    /// disabled) or they carry an 802.1Q tag. Not a drop.
    FastPathNotForwarded,
    /// NAT fragments handed to the stack instead of the fast path (their
    /// bookkeeping stays with the uplink's programs). Not a drop.
    FastPathFragment,
    /// ICMP errors about NAT flows handed to the stack instead of the fast
    /// path (translated on the uplink as before). Not a drop.
    FastPathIcmpError,
    /// Packets of established inbound NAT flows (replies to masqueraded
    /// flows, published ports) translated by the uplink's XDP program and
    /// redirected to the container's host-side interface before any skb
    /// was made. Also counted in `fast_path_in`. Not a drop.
    XdpFastIn,
    /// Established inbound NAT packets the XDP program passed untouched to
    /// the tc path: TTL 1 or 0. Not a drop.
    XdpPassTtl,
    /// Established inbound NAT packets the XDP program passed untouched to
    /// the tc path: the kernel does not know the next hop's MAC yet. Not a
    /// drop.
    XdpPassNoNeighbour,
    /// Established inbound NAT packets the XDP program passed untouched to
    /// the tc path: larger than the egress device's MTU. Not a drop.
    XdpPassMtu,
    /// Established inbound NAT packets the XDP program passed untouched to
    /// the tc path: the FIB does not forward them, or their egress device
    /// is not one XDP may redirect to (`XDP_TARGETS`). Not a drop.
    XdpPassNotForwarded,
    /// Established inbound NAT packets the XDP program passed untouched to
    /// the tc path: their TCP/UDP checksum field holds only the pseudo
    /// header's sum, as a sender that leaves the checksum to the device
    /// writes it (a veth uplink's peer with checksum offload; only tc sees
    /// the skb's checksum state). Not a drop.
    XdpPassChecksum,
    /// Packets from one isolated container network to another (Docker's
    /// DOCKER-ISOLATION): dropped at the container-side interface.
    DropIsolated,
    /// Packets from one container to another on the same bridge whose
    /// network turns inter-container communication off (Docker's
    /// `enable_icc=false`, `--icc=false`): dropped at the sender's bridge
    /// port (its host-side veth) by `netbpf_icc`.
    DropIcc,
    /// Neighbour Solicitations for a routed container's IPv6 address (on
    /// the uplink) or from one (on its veth) answered by netbpf with a
    /// Neighbour Advertisement.
    NdpReplies,
    /// Dropped: a Neighbour Solicitation netbpf would answer whose hop
    /// limit is not 255 (RFC 4861 §7.1.1: it was forwarded, or forged
    /// off-link).
    DropNdpHopLimit,
    /// Dropped: a Neighbour Solicitation netbpf would answer whose ICMPv6
    /// checksum is wrong.
    DropNdpBadChecksum,
    /// Dropped: a Neighbour Solicitation netbpf would answer that breaks
    /// another rule of RFC 4861 §7.1.1 (code, length, an option of length
    /// zero, a multicast target, duplicate address detection not sent to
    /// the solicited-node group or with a link-layer address).
    DropNdpInvalid,
    /// Packets of established inbound NAT flows translated by the uplink's
    /// XDP program in native mode and handed to the uplink's tc ingress
    /// program with a metadata record (`XdpHandoff`), which redirects them
    /// (and counts them in `fast_path_in`). Not a drop.
    XdpHandoffIn,
    /// Established inbound NAT packets the XDP program passed untouched to
    /// the tc path: in native mode, the driver gives no room for the
    /// metadata record (`bpf_xdp_adjust_meta` failed). Not a drop.
    XdpPassNoMetadata,
}

impl Counter {
    /// Number of counters (the size of the stats map).
    pub const COUNT: u32 = Counter::XdpPassNoMetadata as u32 + 1;

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
        Counter::FastPathIn,
        Counter::FastPathOut,
        Counter::FastPathNoNeighbour,
        Counter::FastPathMtu,
        Counter::FastPathTtl,
        Counter::FastPathNotForwarded,
        Counter::FastPathFragment,
        Counter::FastPathIcmpError,
        Counter::XdpFastIn,
        Counter::XdpPassTtl,
        Counter::XdpPassNoNeighbour,
        Counter::XdpPassMtu,
        Counter::XdpPassNotForwarded,
        Counter::XdpPassChecksum,
        Counter::DropIsolated,
        Counter::DropIcc,
        Counter::NdpReplies,
        Counter::DropNdpHopLimit,
        Counter::DropNdpBadChecksum,
        Counter::DropNdpInvalid,
        Counter::XdpHandoffIn,
        Counter::XdpPassNoMetadata,
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
            Counter::FastPathIn => "fast_path_in",
            Counter::FastPathOut => "fast_path_out",
            Counter::FastPathNoNeighbour => "fast_path_no_neighbour",
            Counter::FastPathMtu => "fast_path_mtu",
            Counter::FastPathTtl => "fast_path_ttl",
            Counter::FastPathNotForwarded => "fast_path_not_forwarded",
            Counter::FastPathFragment => "fast_path_fragment",
            Counter::FastPathIcmpError => "fast_path_icmp_error",
            Counter::XdpFastIn => "xdp_fast_in",
            Counter::XdpPassTtl => "xdp_pass_ttl",
            Counter::XdpPassNoNeighbour => "xdp_pass_no_neighbour",
            Counter::XdpPassMtu => "xdp_pass_mtu",
            Counter::XdpPassNotForwarded => "xdp_pass_not_forwarded",
            Counter::XdpPassChecksum => "xdp_pass_checksum",
            Counter::DropIsolated => "drop_isolated",
            Counter::DropIcc => "drop_icc",
            Counter::NdpReplies => "ndp_replies",
            Counter::DropNdpHopLimit => "drop_ndp_hop_limit",
            Counter::DropNdpBadChecksum => "drop_ndp_bad_checksum",
            Counter::DropNdpInvalid => "drop_ndp_invalid",
            Counter::XdpHandoffIn => "xdp_handoff_in",
            Counter::XdpPassNoMetadata => "xdp_pass_no_metadata",
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
