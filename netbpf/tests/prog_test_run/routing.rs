//! Per-container-IP routing in the kernel: ARP answered in XDP, the
//! uplink's forward to a routed container, a container's own packets
//! (ARP for its gateway, anti-spoofing, container to container), and the
//! guards of issue 14 (impossible sources, the MTU fallback).

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
    programs::Xdp,
};
use netbpf::{config::Config, containers::programs, datapath};
use netbpf_common::{ContainerEntry, ContainerIf, Counter, Neighbour, RouteUplink, map_names};

use super::*;

pub(super) const UPLINK_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];
pub(super) const PEER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x02];
pub(super) const C1_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x65];
pub(super) const C1_HOST_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x65];
pub(super) const C2_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x66];
pub(super) const C2_HOST_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x66];
const C1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 101);
const C2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 102);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 200);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// BPF_PROG_TEST_RUN runs tc programs on a packet "arriving" on loopback.
pub(super) const TEST_IFINDEX: u32 = 1;
const C1_IFINDEX: u32 = 1;
pub(super) const C2_IFINDEX: u32 = 77;

/// A loaded (not attached) object with two routed containers: C1 behind
/// the test's input interface, C2 behind ifindex 77.
struct Dp {
    ebpf: Ebpf,
}

impl Dp {
    fn new() -> Dp {
        let ebpf = routed_object(
            (map_names::CONTAINERS, map_names::NEIGHBOURS),
            [C1.octets(), C2.octets(), PEER.octets()],
            |ebpf| test_veth(ebpf, C1),
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

/// C1's host-side veth (the test's input interface) in `CONTAINER_IFS`,
/// with the container's IPv4 address `addr`.
pub(super) fn test_veth(ebpf: &mut Ebpf, addr: Ipv4Addr) {
    let mut i: HashMap<&mut MapData, u32, ContainerIf> =
        HashMap::try_from(ebpf.map_mut(map_names::CONTAINER_IFS).expect("map")).expect("type");
    let cif = ContainerIf {
        addr: addr.octets(),
        host_mac: C1_HOST_MAC,
        flags: 0,
    };
    i.insert(&TEST_IFINDEX, &cif, 0).expect("veth");
}

/// The object every routing test loads, for either family (`N`: 4 or 16
/// address bytes): the uplink (ifindex 5, [`UPLINK_MAC`]) in
/// `ROUTE_UPLINK`; `addrs` = [C1, C2, the peer]: C1 behind the test's
/// input interface and C2 behind ifindex 77 in the family's containers
/// map, the peer (at [`PEER_MAC`]) in its neighbour map (`maps`: those two
/// map names); `veths` fills the veth entries; then the routing programs
/// loaded.
pub(super) fn routed_object<const N: usize>(
    maps: (&str, &str),
    addrs: [[u8; N]; 3],
    veths: impl FnOnce(&mut Ebpf),
) -> Ebpf {
    let config = Config::from_toml("[uplink]\ninterface = \"eth0\"\naddress = \"203.0.113.1\"\n")
        .expect("config");
    let mut ebpf = datapath::load(&config).expect("load object");
    {
        let mut up: Array<&mut MapData, RouteUplink> =
            Array::try_from(ebpf.map_mut(map_names::ROUTE_UPLINK).expect("map")).expect("type");
        let uplink = RouteUplink {
            ifindex: 5,
            mac: UPLINK_MAC,
            _pad: [0; 2],
        };
        up.set(0, &uplink, 0).expect("uplink");
    }
    {
        let mut c: HashMap<&mut MapData, [u8; N], ContainerEntry> =
            HashMap::try_from(ebpf.map_mut(maps.0).expect("map")).expect("type");
        for (addr, ifindex, host_mac, mac) in [
            (addrs[0], C1_IFINDEX, C1_HOST_MAC, C1_MAC),
            (addrs[1], C2_IFINDEX, C2_HOST_MAC, C2_MAC),
        ] {
            let entry = ContainerEntry {
                ifindex,
                host_mac,
                mac,
            };
            c.insert(&addr, &entry, 0).expect("container");
        }
    }
    veths(&mut ebpf);
    {
        let mut n: HashMap<&mut MapData, [u8; N], Neighbour> =
            HashMap::try_from(ebpf.map_mut(maps.1).expect("map")).expect("type");
        let peer = Neighbour {
            mac: PEER_MAC,
            state: 2,
            ifindex: 5,
        };
        n.insert(&addrs[2], &peer, 0).expect("neighbour");
    }
    let xdp: &mut Xdp = ebpf
        .program_mut(programs::ARP)
        .expect("program")
        .try_into()
        .expect("type");
    xdp.load().expect("verifier accepts netbpf_arp");
    load_tc(&mut ebpf, &[programs::ROUTE_IN, programs::CONTAINER]);
    ebpf
}

/// An ARP frame (RFC 826, IPv4 over Ethernet). The bench builds the
/// same frame (`bench/packets.rs`, `arp_frame`); that one is private to
/// the bench, and the tests keep a builder of their own, with the Ethernet
/// source spelled out, rather than trust the code they check.
pub(super) fn arp(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// `frame` with its Ethernet addresses replaced.
fn with_macs(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

fn ip_frame(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, macs: ([u8; 6], [u8; 6])) -> Vec<u8> {
    let opts = IpOpts {
        ttl: Some(ttl),
        ..Default::default()
    };
    with_macs(
        frame(src, dst, &udp(5353, 4000, b"hello"), &opts),
        macs.0,
        macs.1,
    )
}

#[test]
fn arp_request_for_a_container_is_answered_in_xdp() {
    require_root!();
    let dp = Dp::new();
    let req = arp([0xff; 6], PEER_MAC, 1, PEER_MAC, PEER, [0; 6], C1);
    let (rc, out) = dp.xdp(&req);
    assert_eq!(rc, XDP_TX, "answered on the spot");
    // Every field: to the requester, from the uplink, opcode 2, the
    // container's address at the uplink's MAC, target = the requester.
    let want = arp(PEER_MAC, UPLINK_MAC, 2, UPLINK_MAC, C1, PEER_MAC, PEER);
    assert_bytes(&out, &want, "ARP reply");
    assert_eq!(dp.counter(Counter::ArpReplies), 1);
}

#[test]
fn arp_for_other_addresses_and_non_requests_pass_untouched() {
    require_root!();
    let dp = Dp::new();
    for (what, pkt) in [
        (
            "request for another address",
            arp([0xff; 6], PEER_MAC, 1, PEER_MAC, PEER, [0; 6], OTHER),
        ),
        (
            "a reply about a container",
            arp(UPLINK_MAC, PEER_MAC, 2, PEER_MAC, C1, UPLINK_MAC, PEER),
        ),
        (
            "someone else announcing a container's address",
            arp([0xff; 6], PEER_MAC, 1, PEER_MAC, C1, [0; 6], C1),
        ),
        ("IPv4", ip_frame(PEER, C1, 64, (UPLINK_MAC, PEER_MAC))),
        ("runt", vec![0xff; 20]),
    ] {
        let (rc, out) = dp.xdp(&pkt);
        assert_eq!(rc, XDP_PASS, "{what}");
        assert_bytes(&out, &pkt, what);
    }
    assert_eq!(dp.counter(Counter::ArpReplies), 0);
}

#[test]
fn inbound_packet_is_forwarded_to_the_container() {
    require_root!();
    let dp = Dp::new();
    let pkt = ip_frame(PEER, C1, 64, (UPLINK_MAC, PEER_MAC));
    let (rc, out) = dp.tc(programs::ROUTE_IN, &pkt);
    assert_eq!(rc, TC_REDIRECT, "redirected to the container's veth");
    // To the container's MAC from the host veth's, TTL 63, IP checksum
    // recomputed from scratch for the expected packet; UDP untouched.
    let want = ip_frame(PEER, C1, 63, (C1_MAC, C1_HOST_MAC));
    assert_bytes(&out, &want, "forwarded packet");
    assert_eq!(dp.counter(Counter::RoutedIn), 1);
}

#[test]
fn inbound_ttl_one_goes_to_the_kernel() {
    require_root!();
    let dp = Dp::new();
    for ttl in [1, 0] {
        let pkt = ip_frame(PEER, C1, ttl, (UPLINK_MAC, PEER_MAC));
        let (rc, out) = dp.tc(programs::ROUTE_IN, &pkt);
        assert_eq!(rc, TC_NEXT, "TTL {ttl}: the kernel sends time exceeded");
        assert_bytes(&out, &pkt, "unchanged");
    }
    assert_eq!(dp.counter(Counter::RouteTtlExpired), 2);
    assert_eq!(dp.counter(Counter::RoutedIn), 0);
}

#[test]
fn inbound_not_for_a_routed_container_passes_untouched() {
    require_root!();
    let dp = Dp::new();
    for (what, pkt) in [
        (
            "another address",
            ip_frame(PEER, OTHER, 64, (UPLINK_MAC, PEER_MAC)),
        ),
        (
            "another host's MAC",
            ip_frame(PEER, C1, 64, ([0x02, 9, 9, 9, 9, 9], PEER_MAC)),
        ),
        (
            "ARP",
            arp([0xff; 6], PEER_MAC, 1, PEER_MAC, PEER, [0; 6], C1),
        ),
    ] {
        let (rc, out) = dp.tc(programs::ROUTE_IN, &pkt);
        assert_eq!(rc, TC_NEXT, "{what}");
        assert_bytes(&out, &pkt, what);
    }
}

#[test]
fn container_arp_for_its_gateway_is_answered_with_the_veth_mac() {
    require_root!();
    let dp = Dp::new();
    let req = arp([0xff; 6], C1_MAC, 1, C1_MAC, C1, [0; 6], GATEWAY);
    let (rc, out) = dp.tc(programs::CONTAINER, &req);
    assert_eq!(rc, TC_REDIRECT, "sent back to the container");
    let want = arp(C1_MAC, C1_HOST_MAC, 2, C1_HOST_MAC, GATEWAY, C1_MAC, C1);
    assert_bytes(&out, &want, "ARP reply on the veth");
    // Its own address (duplicate address detection) is not answered.
    let probe = arp(
        [0xff; 6],
        C1_MAC,
        1,
        C1_MAC,
        Ipv4Addr::UNSPECIFIED,
        [0; 6],
        C1,
    );
    let (rc, out) = dp.tc(programs::CONTAINER, &probe);
    assert_eq!(rc, TC_NEXT);
    assert_bytes(&out, &probe, "probe untouched");
    assert_eq!(dp.counter(Counter::ArpReplies), 1);
}

#[test]
fn spoofed_sources_from_a_container_are_dropped() {
    require_root!();
    let dp = Dp::new();
    let pkt = ip_frame(OTHER, PEER, 64, (C1_HOST_MAC, C1_MAC));
    let (rc, _) = dp.tc(programs::CONTAINER, &pkt);
    assert_eq!(rc, TC_SHOT, "IPv4 from another source");
    let pkt = ip_frame(C2, PEER, 64, (C1_HOST_MAC, C1_MAC));
    let (rc, _) = dp.tc(programs::CONTAINER, &pkt);
    assert_eq!(rc, TC_SHOT, "IPv4 claiming another container's address");
    let req = arp([0xff; 6], C1_MAC, 1, C1_MAC, C2, [0; 6], GATEWAY);
    let (rc, _) = dp.tc(programs::CONTAINER, &req);
    assert_eq!(rc, TC_SHOT, "ARP claiming another container's address");
    assert_eq!(dp.counter(Counter::DropSpoofed), 3);
}

#[test]
fn container_to_container_is_forwarded_directly() {
    require_root!();
    let dp = Dp::new();
    let pkt = ip_frame(C1, C2, 64, (C1_HOST_MAC, C1_MAC));
    let (rc, out) = dp.tc(programs::CONTAINER, &pkt);
    assert_eq!(rc, TC_REDIRECT);
    let want = ip_frame(C1, C2, 63, (C2_MAC, C2_HOST_MAC));
    assert_bytes(&out, &want, "container to container");
    assert_eq!(dp.counter(Counter::RoutedLocal), 1);
    // Broadcast frames (DHCP and the like) are the kernel's.
    let bcast = ip_frame(C1, C2, 64, ([0xff; 6], C1_MAC));
    let (rc, out) = dp.tc(programs::CONTAINER, &bcast);
    assert_eq!(rc, TC_NEXT);
    assert_bytes(&out, &bcast, "broadcast untouched");
}

// ---------------------------------------------------------------------------
// Hardening (issue 14): each failed before the fix.
// ---------------------------------------------------------------------------

#[test]
fn inbound_sources_that_cannot_come_from_outside_are_dropped() {
    require_root!();
    let mut dp = Dp::new();
    {
        let mut local: HashMap<&mut MapData, [u8; 4], u32> =
            HashMap::try_from(dp.ebpf.map_mut(map_names::LOCAL_ADDRS).expect("map")).expect("type");
        local
            .insert(&[203, 0, 113, 1], &1, 0)
            .expect("host address");
    }
    for (what, src) in [
        ("the host's own address", Ipv4Addr::new(203, 0, 113, 1)),
        ("another routed container of this host", C2),
        ("loopback", Ipv4Addr::LOCALHOST),
        ("unspecified", Ipv4Addr::UNSPECIFIED),
        ("multicast", Ipv4Addr::new(224, 0, 0, 5)),
        ("broadcast", Ipv4Addr::BROADCAST),
    ] {
        let pkt = ip_frame(src, C1, 64, (UPLINK_MAC, PEER_MAC));
        let (rc, _) = dp.tc(programs::ROUTE_IN, &pkt);
        assert_eq!(rc, TC_SHOT, "{what}");
    }
    assert_eq!(dp.counter(Counter::DropSpoofedFromOutside), 6);
    assert_eq!(dp.counter(Counter::RoutedIn), 0);
    // A peer's packet still goes through.
    let (rc, _) = dp.tc(
        programs::ROUTE_IN,
        &ip_frame(PEER, C1, 64, (UPLINK_MAC, PEER_MAC)),
    );
    assert_eq!(rc, TC_REDIRECT);
}

#[test]
fn a_packet_larger_than_the_containers_mtu_goes_to_the_kernel() {
    require_root!();
    // C1 sits behind ifindex 1: loopback of a private namespace whose MTU
    // this test lowers to 1280.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("private netns");
    in_test_netns("ip", &["link", "set", "lo", "mtu", "1280"]);
    let dp = Dp::new();
    let big = with_macs(
        frame(
            PEER,
            C1,
            &udp(5000, 6000, &[7u8; 1400]),
            &IpOpts {
                ttl: Some(64),
                ..Default::default()
            },
        ),
        UPLINK_MAC,
        PEER_MAC,
    );
    let (rc, out) = dp.tc(programs::ROUTE_IN, &big);
    assert_eq!(
        rc, TC_NEXT,
        "the kernel fragments it or answers frag-needed"
    );
    assert_bytes(&out, &big, "untouched");
    assert_eq!(dp.counter(Counter::RouteMtuExceeded), 1);
    // One that fits is still forwarded.
    let (rc, _) = dp.tc(
        programs::ROUTE_IN,
        &ip_frame(PEER, C1, 64, (UPLINK_MAC, PEER_MAC)),
    );
    assert_eq!(rc, TC_REDIRECT);
}
