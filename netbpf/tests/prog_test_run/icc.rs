//! `netbpf_icc`: Docker's `enable_icc=false` at a bridge port.

use aya::maps::HashMap as BpfHashMap;
use netbpf_common::IccPort;

use super::*;

/// BPF_PROG_TEST_RUN hands the program the loopback device of the test
/// thread's namespace: the "port" the entry is made for.
const LO: u32 = 1;

/// The subnet of the containers (C1, C2) with the bridge's address.
fn guard_port(dp: &mut Dp) {
    let mut ports: BpfHashMap<&mut MapData, u32, IccPort> =
        BpfHashMap::try_from(dp.ebpf.map_mut(map_names::ICC_PORTS).expect("map")).expect("type");
    let port = IccPort {
        subnet: [10, 77, 0, 0],
        gateway: [10, 77, 0, 1],
        prefix_len: 24,
        _pad: [0; 3],
    };
    ports.insert(&LO, &port, 0).expect("insert");
}

#[test]
fn containers_of_a_network_with_icc_off_reach_the_gateway_and_published_ports_not_each_other() {
    require_root!();
    let mut dp = publish_dp();
    load_tc(&mut dp.ebpf, &[programs::ICC]);
    hairpin_routes();
    let direct = simple(C2, C1, &tcp(45000, 4000, SYN));
    // A port not listed: everything passes.
    assert_eq!(dp.run(programs::ICC, &direct).0, TC_NEXT);
    guard_port(&mut dp);
    // To another container of the subnet, and to its broadcast: dropped.
    let (rc, out) = dp.run(programs::ICC, &direct);
    assert_eq!(rc, TC_SHOT, "C2 → C1 directly");
    assert_eq!(out, direct, "dropped untouched");
    let bcast = simple(C2, Ipv4Addr::new(10, 77, 0, 255), &udp(41000, 4000, b"x"));
    assert_eq!(dp.run(programs::ICC, &bcast).0, TC_SHOT, "broadcast");
    assert_eq!(dp.counter(Counter::DropIcc), 2);
    // Through C1's published port on the host's address: passes the port,
    // and the bridge's netbpf_inside hairpins it as before.
    let published = simple(C2, UPLINK, &tcp(45000, 8080, SYN));
    assert_eq!(dp.run(programs::ICC, &published).0, TC_NEXT);
    assert_eq!(dp.run(programs::INSIDE, &published).0, TC_REDIRECT);
    // The gateway, another network (isolation's business), the outside:
    // left to the rest of the datapath.
    for dst in [
        Ipv4Addr::new(10, 77, 0, 1),
        Ipv4Addr::new(172, 19, 0, 3),
        REMOTE,
    ] {
        let pkt = simple(C2, dst, &tcp(45001, 80, SYN));
        assert_eq!(dp.run(programs::ICC, &pkt).0, TC_NEXT, "to {dst}");
    }
    // ARP for the other container (not IPv4) and IPv6: passed.
    let who_has = routing::arp([0xff; 6], MAC_C2, 1, MAC_C2, C2, [0; 6], C1);
    assert_eq!(dp.run(programs::ICC, &who_has).0, TC_NEXT, "ARP");
    let mut v6 = vec![0xffu8; 6];
    v6.extend_from_slice(&MAC_C2);
    v6.extend_from_slice(&[0x86, 0xdd, 0x60]);
    v6.resize(14 + 40, 0);
    assert_eq!(dp.run(programs::ICC, &v6).0, TC_NEXT, "IPv6");
    assert_eq!(dp.counter(Counter::DropIcc), 2, "nothing else dropped");
    assert_eq!(
        dp.counter(Counter::Passed),
        0,
        "a port's pass is not counted"
    );
}

/// The container's MAC in these frames.
const MAC_C2: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
