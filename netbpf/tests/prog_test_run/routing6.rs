//! Per-container-IP routing for IPv6 in the kernel: Neighbour
//! Solicitations answered in XDP on the uplink and on a container's veth
//! (RFC 4861: hop limit 255, duplicate address detection, checksum), the
//! uplink's forward to a routed container, a container's own packets
//! (anti-spoofing, container to container), hop limit 1 to the kernel.
//! Every expected packet is built here from scratch, its ICMPv6 checksum
//! summed by the tests' own RFC 1071 code, not by netbpf's.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use netbpf::containers::programs;
use netbpf_common::{ContainerIf6, Counter, RouteUplink, map_names};

use super::{
    routing::{
        C1_HOST_MAC, C1_MAC, C2_HOST_MAC, C2_MAC, PEER_MAC, TEST_IFINDEX, UPLINK_MAC,
        routed_object, test_veth,
    },
    *,
};

const C1_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 101);
const C1: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x101);
const C2: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x102);
const PEER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2);
const OTHER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x200);
const C1_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xc1);
const GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const UNSPECIFIED: Ipv6Addr = Ipv6Addr::UNSPECIFIED;
/// `XDP_DROP`.
const XDP_DROP: u32 = 1;
/// NA flags.
const ROUTER: u8 = 0x80;
const SOLICITED: u8 = 0x40;
const OVERRIDE: u8 = 0x20;

/// A loaded (not attached) object with two dual-stack routed containers:
/// C1 behind the test's input interface, C2 behind ifindex 77.
struct Dp {
    ebpf: Ebpf,
}

impl Dp {
    fn new() -> Dp {
        let ebpf = routed_object(
            (map_names::CONTAINERS6, map_names::NEIGHBOURS6),
            [C1.octets(), C2.octets(), PEER.octets()],
            |ebpf| {
                // The veth program starts from the IPv4 entry (every routed
                // container has one), then reads the IPv6 one.
                test_veth(ebpf, C1_V4);
                let mut i6: HashMap<&mut MapData, u32, ContainerIf6> =
                    HashMap::try_from(ebpf.map_mut(map_names::CONTAINER_IFS6).expect("map"))
                        .expect("type");
                let cif6 = ContainerIf6 {
                    addr: C1.octets(),
                    host_mac: C1_HOST_MAC,
                    _pad: [0; 2],
                };
                i6.insert(&TEST_IFINDEX, &cif6, 0).expect("veth v6");
            },
        );
        Dp { ebpf }
    }

    fn xdp(&self, pkt: &[u8]) -> (u32, Vec<u8>) {
        super::xdp_of(&self.ebpf, pkt)
    }

    fn tc(&self, name: &str, pkt: &[u8]) -> (u32, Vec<u8>) {
        super::tc_of(&self.ebpf, name, pkt)
    }

    fn counter(&self, c: Counter) -> u64 {
        super::counter_of(&self.ebpf, c)
    }
}

/// An Ethernet frame carrying an IPv6 packet (RFC 8200).
fn ip6(
    macs: ([u8; 6], [u8; 6]),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&macs.0);
    f.extend_from_slice(&macs.1);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(payload);
    f
}

/// `msg` (checksum field zero) with its ICMPv6 checksum over the
/// pseudo-header filled in.
fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, mut msg: Vec<u8>) -> Vec<u8> {
    let mut summed = Vec::new();
    summed.extend_from_slice(&src.octets());
    summed.extend_from_slice(&dst.octets());
    summed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    summed.extend_from_slice(&[0, 0, 0, 58]);
    summed.extend_from_slice(&msg);
    let c = checksum(&summed);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    msg
}

/// A Neighbour Solicitation frame for `target`, with a source link-layer
/// address option when `slla` is given.
fn ns(
    macs: ([u8; 6], [u8; 6]),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    target: Ipv6Addr,
    slla: Option<[u8; 6]>,
) -> Vec<u8> {
    let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&target.octets());
    if let Some(mac) = slla {
        msg.extend_from_slice(&[1, 1]);
        msg.extend_from_slice(&mac);
    }
    ip6(macs, src, dst, 58, hop_limit, &icmp6(src, dst, msg))
}

/// A Neighbour Advertisement frame: `target` at `tlla`.
fn na(
    macs: ([u8; 6], [u8; 6]),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    flags: u8,
    target: Ipv6Addr,
    tlla: [u8; 6],
) -> Vec<u8> {
    let mut msg = vec![136, 0, 0, 0, flags, 0, 0, 0];
    msg.extend_from_slice(&target.octets());
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&tlla);
    ip6(macs, src, dst, 58, 255, &icmp6(src, dst, msg))
}

/// The solicited-node multicast address of `a` and its Ethernet address.
fn solicited(a: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let o = a.octets();
    let snm = Ipv6Addr::from([
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ]);
    (snm, [0x33, 0x33, 0xff, o[13], o[14], o[15]])
}

/// A UDP datagram (its checksum is not checked by routing, and kept).
fn udp6(macs: ([u8; 6], [u8; 6]), src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    let payload = [
        0x14, 0xe9, 0x0f, 0xa0, 0, 13, 0x12, 0x34, b'h', b'e', b'l', b'l', b'o',
    ];
    ip6(macs, src, dst, 17, hop_limit, &payload)
}

#[test]
fn solicitation_for_a_container_is_answered_in_xdp() {
    require_root!();
    let dp = Dp::new();
    let (snm, snm_mac) = solicited(C1);
    // With a source link-layer address option (the usual case: same
    // length as the advertisement) and without one (a unicast probe: the
    // frame grows by 8 bytes), to the sender, solicited and override.
    for (what, req) in [
        (
            "multicast, with an option",
            ns((snm_mac, PEER_MAC), PEER, snm, 255, C1, Some(PEER_MAC)),
        ),
        (
            "unicast probe, no option",
            ns((UPLINK_MAC, PEER_MAC), PEER, C1, 255, C1, None),
        ),
    ] {
        let (rc, out) = dp.xdp(&req);
        assert_eq!(rc, XDP_TX, "{what}: answered on the spot");
        let want = na(
            (PEER_MAC, UPLINK_MAC),
            C1,
            PEER,
            SOLICITED | OVERRIDE,
            C1,
            UPLINK_MAC,
        );
        assert_bytes(&out, &want, what);
    }
    assert_eq!(dp.counter(Counter::NdpReplies), 2);
}

#[test]
fn duplicate_address_detection_is_answered_to_all_nodes() {
    require_root!();
    let dp = Dp::new();
    let (snm, snm_mac) = solicited(C1);
    let req = ns((snm_mac, PEER_MAC), UNSPECIFIED, snm, 255, C1, None);
    let (rc, out) = dp.xdp(&req);
    assert_eq!(rc, XDP_TX, "the address is defended");
    let want = na(
        ([0x33, 0x33, 0, 0, 0, 1], UPLINK_MAC),
        C1,
        ALL_NODES,
        OVERRIDE,
        C1,
        UPLINK_MAC,
    );
    assert_bytes(&out, &want, "unsolicited advertisement to all nodes");
}

#[test]
fn invalid_solicitations_are_dropped_with_their_reason() {
    require_root!();
    let dp = Dp::new();
    let (snm, snm_mac) = solicited(C1);
    let forwarded = ns((snm_mac, PEER_MAC), PEER, snm, 64, C1, Some(PEER_MAC));
    let mut bad_sum = ns((snm_mac, PEER_MAC), PEER, snm, 255, C1, Some(PEER_MAC));
    bad_sum[56] ^= 0x01;
    // An option of length zero, with a checksum that is right for it.
    let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&C1.octets());
    msg.extend_from_slice(&[1, 0]);
    msg.extend_from_slice(&PEER_MAC);
    let zero_option = ip6(
        (snm_mac, PEER_MAC),
        PEER,
        snm,
        58,
        255,
        &icmp6(PEER, snm, msg),
    );
    let dad_with_option = ns(
        (snm_mac, PEER_MAC),
        UNSPECIFIED,
        snm,
        255,
        C1,
        Some(PEER_MAC),
    );
    for (what, pkt, reason) in [
        ("hop limit 64", forwarded, Counter::DropNdpHopLimit),
        ("bad checksum", bad_sum, Counter::DropNdpBadChecksum),
        ("option of length 0", zero_option, Counter::DropNdpInvalid),
        (
            "DAD with a link-layer address",
            dad_with_option,
            Counter::DropNdpInvalid,
        ),
    ] {
        let before = dp.counter(reason);
        let (rc, _) = dp.xdp(&pkt);
        assert_eq!(rc, XDP_DROP, "{what}");
        assert_eq!(dp.counter(reason), before + 1, "{what}: counted");
    }
    assert_eq!(dp.counter(Counter::NdpReplies), 0);
}

#[test]
fn other_ipv6_passes_xdp_untouched() {
    require_root!();
    let dp = Dp::new();
    let (snm, snm_mac) = solicited(OTHER);
    for (what, pkt) in [
        (
            "solicitation for another address",
            ns((snm_mac, PEER_MAC), PEER, snm, 255, OTHER, Some(PEER_MAC)),
        ),
        (
            "an advertisement about a container",
            na((UPLINK_MAC, PEER_MAC), PEER, C1, SOLICITED, C1, PEER_MAC),
        ),
        (
            "UDP to a container",
            udp6((UPLINK_MAC, PEER_MAC), PEER, C1, 64),
        ),
    ] {
        let (rc, out) = dp.xdp(&pkt);
        assert_eq!(rc, XDP_PASS, "{what}");
        assert_bytes(&out, &pkt, what);
    }
}

#[test]
fn container_solicitation_for_its_gateway_is_answered() {
    require_root!();
    let dp = Dp::new();
    let (snm, snm_mac) = solicited(GATEWAY);
    let req = ns((snm_mac, C1_MAC), C1_LL, snm, 255, GATEWAY, Some(C1_MAC));
    let (rc, out) = dp.tc(programs::CONTAINER, &req);
    assert_eq!(rc, TC_REDIRECT, "back to the container");
    let want = na(
        (C1_MAC, C1_HOST_MAC),
        GATEWAY,
        C1_LL,
        ROUTER | SOLICITED | OVERRIDE,
        GATEWAY,
        C1_HOST_MAC,
    );
    assert_bytes(&out, &want, "advertisement of the gateway");
    assert_eq!(dp.counter(Counter::NdpReplies), 1);
    // Its own duplicate address detection is the kernel's.
    let (snm, snm_mac) = solicited(C1);
    let dad = ns((snm_mac, C1_MAC), UNSPECIFIED, snm, 255, C1, None);
    let (rc, out) = dp.tc(programs::CONTAINER, &dad);
    assert_eq!(rc, TC_NEXT, "DAD passes");
    assert_bytes(&out, &dad, "DAD untouched");
}

#[test]
fn inbound_ipv6_is_forwarded_to_the_container() {
    require_root!();
    let dp = Dp::new();
    let pkt = udp6((UPLINK_MAC, PEER_MAC), PEER, C1, 64);
    let (rc, out) = dp.tc(programs::ROUTE_IN, &pkt);
    assert_eq!(rc, TC_REDIRECT, "redirected to the container's veth");
    let want = udp6((C1_MAC, C1_HOST_MAC), PEER, C1, 63);
    assert_bytes(&out, &want, "hop limit 63, the container's MACs");
    assert_eq!(dp.counter(Counter::RoutedIn), 1);
}

#[test]
fn inbound_hop_limit_one_goes_to_the_kernel() {
    require_root!();
    let dp = Dp::new();
    for hop_limit in [1, 0] {
        let pkt = udp6((UPLINK_MAC, PEER_MAC), PEER, C1, hop_limit);
        let (rc, out) = dp.tc(programs::ROUTE_IN, &pkt);
        assert_eq!(rc, TC_NEXT, "hop limit {hop_limit}: time exceeded");
        assert_bytes(&out, &pkt, "unchanged");
    }
    assert_eq!(dp.counter(Counter::RouteTtlExpired), 2);
    assert_eq!(dp.counter(Counter::RoutedIn), 0);
}

#[test]
fn inbound_impossible_sources_are_dropped() {
    require_root!();
    let dp = Dp::new();
    for src in [C2, C1_LL, ALL_NODES, UNSPECIFIED] {
        let pkt = udp6((UPLINK_MAC, PEER_MAC), src, C1, 64);
        let (rc, _) = dp.tc(programs::ROUTE_IN, &pkt);
        assert_eq!(rc, TC_SHOT, "from {src}");
    }
    assert_eq!(dp.counter(Counter::DropSpoofedFromOutside), 4);
    // Not to this host's MAC, or not to a container: untouched.
    for pkt in [
        udp6((PEER_MAC, PEER_MAC), PEER, C1, 64),
        udp6((UPLINK_MAC, PEER_MAC), PEER, OTHER, 64),
    ] {
        let (rc, out) = dp.tc(programs::ROUTE_IN, &pkt);
        assert_eq!(rc, TC_NEXT);
        assert_bytes(&out, &pkt, "not ours");
    }
}

#[test]
fn container_may_only_send_from_its_own_address() {
    require_root!();
    let dp = Dp::new();
    let pkt = udp6((C1_HOST_MAC, C1_MAC), OTHER, PEER, 64);
    let (rc, _) = dp.tc(programs::CONTAINER, &pkt);
    assert_eq!(rc, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropSpoofed), 1);
}

#[test]
fn container_to_container_is_forwarded() {
    require_root!();
    let dp = Dp::new();
    let pkt = udp6((C1_HOST_MAC, C1_MAC), C1, C2, 64);
    let (rc, out) = dp.tc(programs::CONTAINER, &pkt);
    assert_eq!(rc, TC_REDIRECT);
    let want = udp6((C2_MAC, C2_HOST_MAC), C1, C2, 63);
    assert_bytes(&out, &want, "to C2's veth");
    assert_eq!(dp.counter(Counter::RoutedLocal), 1);
    // Hop limit 1: the kernel's.
    let pkt = udp6((C1_HOST_MAC, C1_MAC), C1, C2, 1);
    let (rc, out) = dp.tc(programs::CONTAINER, &pkt);
    assert_eq!(rc, TC_NEXT);
    assert_bytes(&out, &pkt, "unchanged");
}

/// Points `ROUTE_UPLINK` at `ifindex`.
fn set_uplink(dp: &mut Dp, ifindex: u32) {
    let mut up: Array<&mut MapData, RouteUplink> =
        Array::try_from(dp.ebpf.map_mut(map_names::ROUTE_UPLINK).expect("map")).expect("type");
    let uplink = RouteUplink {
        ifindex,
        mac: UPLINK_MAC,
        _pad: [0; 2],
    };
    up.set(0, &uplink, 0).expect("uplink");
}

#[test]
fn container_to_the_segment_goes_to_the_fibs_next_hop() {
    require_root!();
    // A private namespace whose "uplink" is a veth on 2001:db8:0:1::/64
    // (nbv6up0), with IPv6 forwarding on (the FIB checks it); C1's veth
    // is the test run's loopback, as in `Dp::new`.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("private netns");
    for args in [
        &[
            "link", "add", "nbv6up0", "type", "veth", "peer", "name", "nbv6up1",
        ][..],
        &["link", "set", "lo", "up"],
        &["link", "set", "nbv6up1", "up"],
        &["link", "set", "nbv6up0", "up"],
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:0:1::1/64",
            "dev",
            "nbv6up0",
            "nodad",
        ],
    ] {
        in_test_netns("ip", args);
    }
    in_test_netns("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
    let uplink = nix::net::if_::if_nametoindex("nbv6up0").expect("uplink index");
    let mut dp = Dp::new();
    set_uplink(&mut dp, uplink);

    // To the peer, a neighbour the map knows: its MAC, from the uplink's,
    // hop limit 63.
    let pkt = udp6((C1_HOST_MAC, C1_MAC), C1, PEER, 64);
    let (rc, out) = dp.tc(programs::CONTAINER, &pkt);
    assert_eq!(rc, TC_REDIRECT, "to the uplink");
    let want = udp6((PEER_MAC, UPLINK_MAC), C1, PEER, 63);
    assert_bytes(&out, &want, "to the peer's MAC");
    assert_eq!(dp.counter(Counter::RoutedOut), 1);

    // On the segment but not in the neighbour map: the kernel resolves it.
    let pkt = udp6((C1_HOST_MAC, C1_MAC), C1, OTHER, 64);
    let (rc, out) = dp.tc(programs::CONTAINER, &pkt);
    assert_eq!(rc, TC_NEXT);
    assert_bytes(&out, &pkt, "unchanged");
    assert_eq!(dp.counter(Counter::RouteNoNeighbour), 1);

    // No route at all: the kernel's to answer.
    let nowhere = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 1);
    let pkt = udp6((C1_HOST_MAC, C1_MAC), C1, nowhere, 64);
    let (rc, out) = dp.tc(programs::CONTAINER, &pkt);
    assert_eq!(rc, TC_NEXT);
    assert_bytes(&out, &pkt, "unchanged");
    assert_eq!(dp.counter(Counter::RoutedOut), 1);
}
