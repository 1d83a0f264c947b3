//! explain against maps held in memory: every path, with the steps it
//! names and the outcome it predicts.
//!
//! Each case is spelled out (the packet, explain, what it must say) rather
//! than tabled: most check more than the outcome, so they look alike.

use super::{lookup::*, model::*, *};
use std::net::{Ipv4Addr, SocketAddrV4};

use netbpf_common::{
    ContainerEntry, ContainerIf, Endpoint, FlowKey, FlowValue, MappingValue, Neighbour, PublishKey,
    PublishRule, RouteUplink, proto,
};

use crate::{
    maps::{MasqEntry, PublishEntry},
    neigh::format_mac,
};

use netbpf_common::{MasqRule, PUBLISH_KEY_BITS, flow_flags::*};

const C1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const UP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const OUT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

fn rules(port_min: u16, port_max: u16) -> Rules {
    let rule = PublishRule {
        to_addr: C1.octets(),
        to_port: 4000,
        host_port_min: 8081,
        host_port_max: 8081,
        _pad: 0,
    };
    Rules {
        masquerade: vec![MasqEntry {
            prefix_len: 24,
            source: [10, 77, 0, 0],
            rule: MasqRule {
                to_addr: UP.octets(),
                port_min,
                port_max,
            },
        }],
        publish: vec![PublishEntry {
            prefix_len: PUBLISH_KEY_BITS,
            key: PublishKey::new(proto::TCP, [0; 4], 8081),
            rule,
        }],
        local_addrs: vec![UP],
        conntrack_full: false,
        mappings_full: false,
        settings: netbpf_common::Settings::default(),
    }
}

fn q(p: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), tcp: TcpFlags) -> Query {
    Query {
        proto: p,
        src: SocketAddrV4::new(src.0, src.1),
        dst: SocketAddrV4::new(dst.0, dst.1),
        tcp,
        ttl: DEFAULT_TTL,
        iif: None,
        icmp_error: None,
    }
}

fn translated(e: &Explanation) -> (SocketAddrV4, SocketAddrV4, &'static str) {
    match e.outcome {
        Outcome::Translated {
            src, dst, counter, ..
        } => (src, dst, counter),
        ref other => panic!("not translated: {other:?}\n{e}"),
    }
}

fn dropped(counter: &'static str) -> Outcome {
    Outcome::Dropped { counter }
}

/// C1:`inside_port` mapped to UP:`outside_port`: the mapping and its
/// reverse entry.
fn add_mapping(m: &mut MemMaps, p: u8, inside_port: u16, outside_port: u16) {
    let inside = Endpoint::new(p, C1.octets(), inside_port);
    let outside = Endpoint::new(p, UP.octets(), outside_port);
    m.mappings.insert(
        inside,
        MappingValue {
            outside,
            last_used_ns: 0,
        },
    );
    m.reverse.insert(outside, inside);
}

/// A flow of C1 with OUT (`ports`: C1's, OUT's), seen outside as
/// UP:`outside_port`.
fn add_flow(m: &mut MemMaps, p: u8, ports: (u16, u16), outside_port: u16, flags: u64) {
    m.flows.insert(
        FlowKey::new(p, C1.octets(), ports.0, OUT.octets(), ports.1),
        FlowValue {
            outside_addr: UP.octets(),
            outside_port,
            flags,
            ..Default::default()
        },
    );
}

#[test]
fn a_new_flow_keeps_its_port_then_uses_the_mapping() {
    let r = rules(0, 0);
    let mut m = MemMaps::default();
    let pkt = q(proto::TCP, (C1, 40000), (OUT, 4000), TcpFlags::Syn);
    assert_eq!(infer_direction(&r, &m, &pkt), Direction::FromContainer);
    let e = explain(&r, &m, &pkt, Direction::FromContainer);
    assert_eq!(
        translated(&e),
        (SocketAddrV4::new(UP, 40000), pkt.dst, "snat_packets")
    );
    assert!(e.to_string().contains("keeps port 40000"), "{e}");
    assert!(
        e.to_string().contains("1024-65535 (class-preserving)"),
        "{e}"
    );
    // Port taken by someone else: a random one.
    let other = Endpoint::new(proto::TCP, [10, 77, 0, 3], 40000);
    m.reverse
        .insert(Endpoint::new(proto::TCP, UP.octets(), 40000), other);
    let e = explain(&r, &m, &pkt, Direction::Egress);
    assert_eq!(translated(&e).0, SocketAddrV4::new(UP, 0));
    assert!(e.to_string().contains("port 40000 is taken"), "{e}");
    // An existing mapping is used for every destination.
    add_mapping(&mut m, proto::TCP, 40000, 50000);
    let e = explain(&r, &m, &pkt, Direction::Egress);
    assert_eq!(translated(&e).0, SocketAddrV4::new(UP, 50000));
    assert!(e.to_string().contains("existing mapping"), "{e}");
    // Replies come back; an unsolicited ACK from elsewhere does not.
    let reply = q(proto::TCP, (OUT, 4000), (UP, 50000), TcpFlags::NotSyn);
    add_flow(&mut m, proto::TCP, (40000, 4000), 50000, SEEN_OUT | SYN_OUT);
    assert_eq!(infer_direction(&r, &m, &reply), Direction::Ingress);
    let e = explain(&r, &m, &reply, Direction::Ingress);
    assert_eq!(
        translated(&e),
        (reply.src, SocketAddrV4::new(C1, 40000), "reverse_packets")
    );
    let stranger = q(
        proto::TCP,
        (Ipv4Addr::new(198, 51, 100, 9), 1),
        (UP, 50000),
        TcpFlags::NotSyn,
    );
    let e = explain(&r, &m, &stranger, Direction::Ingress);
    assert_eq!(e.outcome, dropped("drop_tcp_no_flow"));
    let syn = Query {
        tcp: TcpFlags::Syn,
        ..stranger
    };
    let e = explain(&r, &m, &syn, Direction::Ingress);
    assert!(
        e.to_string().contains("endpoint-independent filtering"),
        "{e}"
    );
    assert_eq!(translated(&e).1, SocketAddrV4::new(C1, 40000));
}

#[test]
fn explain_follows_the_inbound_policies() {
    let mut r = rules(61000, 61001);
    let m = MemMaps::default();
    let syn = q(proto::TCP, (OUT, 5555), (UP, 22), TcpFlags::Syn);
    let e = explain(&r, &m, &syn, Direction::Ingress);
    assert_eq!(e.outcome, dropped("drop_unsolicited_syn"));
    // [inbound] unsolicited_syn = "pass", as the kernel reads it.
    r.settings.flags = netbpf_common::settings_flags::PASS_UNSOLICITED_SYN;
    let e = explain(&r, &m, &syn, Direction::Ingress);
    assert_eq!(e.outcome, Outcome::Passed);
    assert!(e.to_string().contains("unsolicited_syn = \"pass\""), "{e}");
}

#[test]
fn published_ports_and_guards() {
    let r = rules(61000, 61001);
    let m = MemMaps::default();
    let e = explain(
        &r,
        &m,
        &q(proto::TCP, (OUT, 5555), (UP, 8081), TcpFlags::Syn),
        Direction::Ingress,
    );
    assert_eq!(
        translated(&e),
        (
            SocketAddrV4::new(OUT, 5555),
            SocketAddrV4::new(C1, 4000),
            "dnat_packets"
        )
    );
    assert!(e.to_string().contains("*:8081"), "{e}");
    let e = explain(
        &r,
        &m,
        &q(proto::TCP, (OUT, 5555), (UP, 8081), TcpFlags::NotSyn),
        Direction::Ingress,
    );
    assert_eq!(e.outcome, dropped("drop_tcp_no_flow"));
    // UDP is not published on 8081; loopback never.
    let e = explain(
        &r,
        &m,
        &q(proto::UDP, (OUT, 5555), (UP, 8081), TcpFlags::Syn),
        Direction::Ingress,
    );
    assert_eq!(e.outcome, Outcome::Passed);
    let e = explain(
        &r,
        &m,
        &q(
            proto::TCP,
            (OUT, 5555),
            (Ipv4Addr::LOCALHOST, 8081),
            TcpFlags::Syn,
        ),
        Direction::Ingress,
    );
    assert_eq!(e.outcome, Outcome::Passed);
    assert!(e.to_string().contains("127.0.0.0/8"), "{e}");
    let e = explain(
        &r,
        &m,
        &q(proto::TCP, (OUT, 5555), (C1, 4000), TcpFlags::Syn),
        Direction::Ingress,
    );
    assert_eq!(e.outcome, dropped("drop_direct_to_inside"));
    // The range has two ports; both taken: exhausted.
    let mut m = MemMaps::default();
    for port in [61000, 61001] {
        m.reverse.insert(
            Endpoint::new(proto::UDP, UP.octets(), port),
            Endpoint::new(proto::UDP, [10, 77, 0, 9], port),
        );
    }
    let e = explain(
        &r,
        &m,
        &q(proto::UDP, (C1, 5353), (OUT, 53), TcpFlags::Syn),
        Direction::Egress,
    );
    assert_eq!(e.outcome, dropped("drop_port_exhausted"));
    // Not masqueraded: passed.
    let e = explain(
        &r,
        &m,
        &q(proto::UDP, (UP, 5353), (OUT, 53), TcpFlags::Syn),
        Direction::Egress,
    );
    assert_eq!(e.outcome, Outcome::Passed);
}

#[test]
fn hairpin_to_a_published_port() {
    let r = rules(0, 0);
    let m = MemMaps::default();
    let pkt = q(proto::TCP, (C1, 40000), (UP, 8081), TcpFlags::Syn);
    let e = explain(&r, &m, &pkt, Direction::FromContainer);
    let (src, dst, counter) = translated(&e);
    assert_eq!(
        (src, dst, counter),
        (
            SocketAddrV4::new(UP, 40000),
            SocketAddrV4::new(C1, 4000),
            "hairpin_packets"
        )
    );
    // ICMP echo out, and its reply in.
    let ping = q(proto::ICMP, (C1, 7), (OUT, 0), TcpFlags::Syn);
    let e = explain(&r, &m, &ping, Direction::FromContainer);
    assert_eq!(translated(&e).0, SocketAddrV4::new(UP, 7));
    assert!(e.to_string().contains("0-65535"), "{e}");
}

const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 101);
const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 102);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
const UPLINK_IF: u32 = 2;
const R1_IF: u32 = 11;
const R2_IF: u32 = 12;
const UPLINK_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const R1_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x65];
const R1_HOST_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x65];
const R2_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x66];
const R2_HOST_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x66];
const PEER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];

/// Two routed containers (R1, R2) and the uplink's routing entry.
fn routed() -> MemMaps {
    let mut m = MemMaps {
        route_uplink: Some(RouteUplink {
            ifindex: UPLINK_IF,
            mac: UPLINK_MAC,
            _pad: [0; 2],
        }),
        ..Default::default()
    };
    for (addr, ifindex, mac, host_mac) in [
        (R1, R1_IF, R1_MAC, R1_HOST_MAC),
        (R2, R2_IF, R2_MAC, R2_HOST_MAC),
    ] {
        m.containers.insert(
            addr,
            ContainerEntry {
                ifindex,
                host_mac,
                mac,
            },
        );
        m.container_ifs.insert(
            ifindex,
            ContainerIf {
                addr: addr.octets(),
                host_mac,
                flags: 0,
            },
        );
    }
    m
}

fn forwarded(e: &Explanation) -> (u32, String, String, u8, &'static str) {
    match &e.outcome {
        Outcome::Forwarded {
            ifindex,
            src_mac,
            dst_mac,
            ttl,
            counter,
            ..
        } => (*ifindex, src_mac.clone(), dst_mac.clone(), *ttl, *counter),
        other => panic!("not forwarded: {other:?}\n{e}"),
    }
}

#[test]
fn from_outside_to_a_routed_container() {
    let r = rules(0, 0);
    let mut m = routed();
    let pkt = q(proto::TCP, (PEER, 5555), (R1, 4000), TcpFlags::Syn);
    assert_eq!(infer_direction(&r, &m, &pkt), Direction::Ingress);
    let e = explain(&r, &m, &pkt, Direction::Ingress);
    assert_eq!(
        forwarded(&e),
        (
            R1_IF,
            format_mac(&R1_HOST_MAC),
            format_mac(&R1_MAC),
            63,
            "routed_in"
        )
    );
    // The NAT program looked first and passed it on.
    assert_eq!(e.steps[1].program, INGRESS, "{e}");
    assert!(e.steps[1].detail.contains("passed on"), "{e}");
    assert_eq!(e.steps[2].program, ROUTE_IN, "{e}");
    assert!(e.to_string().contains("#11"), "{e}");
    assert!(e.to_string().contains("02:aa:00:00:00:01"), "{e}");
    // TTL 1: the kernel's (time exceeded).
    let expiring = Query { ttl: 1, ..pkt };
    let e = explain(&r, &m, &expiring, Direction::Ingress);
    assert_eq!(
        e.outcome,
        Outcome::ToKernel {
            counter: "route_ttl_expired"
        }
    );
    // The container's MAC not known yet: the kernel routes it.
    if let Some(c) = m.containers.get_mut(&R1) {
        c.mac = [0; 6];
    }
    let e = explain(&r, &m, &pkt, Direction::Ingress);
    assert_eq!(e.outcome, Outcome::Passed);
    assert!(e.to_string().contains("MAC is not known yet"), "{e}");
    // Not a routed container: the host's, with no routing step. A TCP
    // SYN no host socket takes is dropped (RFC 5382 REQ-4); UDP passes.
    let e = explain(
        &r,
        &m,
        &q(proto::TCP, (PEER, 5555), (UP, 22), TcpFlags::Syn),
        Direction::Ingress,
    );
    assert_eq!(e.outcome, dropped("drop_unsolicited_syn"));
    assert!(e.to_string().contains("unless a host socket"), "{e}");
    let e = explain(
        &r,
        &m,
        &q(proto::UDP, (PEER, 5555), (UP, 53), TcpFlags::NotSyn),
        Direction::Ingress,
    );
    assert_eq!(e.outcome, Outcome::Passed);
    assert!(e.steps.iter().all(|s| s.program != ROUTE_IN), "{e}");
    // A masqueraded source arriving from outside is spoofed.
    let e = explain(
        &r,
        &m,
        &q(proto::TCP, (C1, 5555), (R1, 4000), TcpFlags::Syn),
        Direction::Ingress,
    );
    assert_eq!(e.outcome, dropped("drop_spoofed_from_outside"));
}

#[test]
fn from_a_routed_container() {
    let r = rules(0, 0);
    let mut m = routed();
    let out = q(proto::TCP, (R1, 40000), (OUT, 4000), TcpFlags::Syn);
    assert_eq!(
        infer_direction(&r, &m, &out),
        Direction::FromRoutedContainer
    );
    // Spoofed: a source that is not the veth's container.
    let spoofed = Query {
        iif: Some(R1_IF),
        ..q(proto::UDP, (R2, 1), (OUT, 53), TcpFlags::Syn)
    };
    assert_eq!(
        infer_direction(&r, &m, &spoofed),
        Direction::FromRoutedContainer
    );
    let e = explain(&r, &m, &spoofed, Direction::FromRoutedContainer);
    assert_eq!(e.outcome, dropped("drop_spoofed"));
    // To another routed container here: straight to its veth.
    let local = q(proto::TCP, (R1, 40000), (R2, 4000), TcpFlags::Syn);
    let e = explain(&r, &m, &local, Direction::FromRoutedContainer);
    assert_eq!(
        forwarded(&e),
        (
            R2_IF,
            format_mac(&R2_HOST_MAC),
            format_mac(&R2_MAC),
            63,
            "routed_local"
        )
    );
    // Out of the uplink via a gateway the neighbour map knows.
    m.fib.insert(
        OUT,
        Fib::Via {
            ifindex: UPLINK_IF,
            gateway: Some(GW),
        },
    );
    let e = explain(&r, &m, &out, Direction::FromRoutedContainer);
    assert_eq!(
        e.outcome,
        Outcome::ToKernel {
            counter: "route_no_neighbour"
        }
    );
    assert!(e.to_string().contains("next hop 203.0.113.254"), "{e}");
    m.neighbours.insert(
        GW,
        Neighbour {
            mac: PEER_MAC,
            state: 2,
            ifindex: UPLINK_IF,
        },
    );
    let e = explain(&r, &m, &out, Direction::FromRoutedContainer);
    assert_eq!(
        forwarded(&e),
        (
            UPLINK_IF,
            format_mac(&UPLINK_MAC),
            format_mac(&PEER_MAC),
            63,
            "routed_out"
        )
    );
    // netbpf_egress sees it on the way out, and passes it.
    let last = e.steps.last().expect("steps");
    assert_eq!(last.program, EGRESS, "{e}");
    assert!(last.detail.contains("not a NAT flow"), "{e}");
    // On-link: the destination is the next hop.
    m.fib.insert(
        PEER,
        Fib::Via {
            ifindex: UPLINK_IF,
            gateway: None,
        },
    );
    let e = explain(
        &r,
        &m,
        &q(proto::UDP, (R1, 1), (PEER, 53), TcpFlags::Syn),
        Direction::FromRoutedContainer,
    );
    assert_eq!(
        e.outcome,
        Outcome::ToKernel {
            counter: "route_no_neighbour"
        }
    );
    assert!(e.to_string().contains("on-link: next hop 10.0.1.2"), "{e}");
    // Another interface, or not forwarded, or unknown: the kernel's.
    for fib in [
        Fib::Via {
            ifindex: 99,
            gateway: None,
        },
        Fib::NotForwarded("local route".into()),
    ] {
        m.fib.insert(OUT, fib);
        let e = explain(&r, &m, &out, Direction::FromRoutedContainer);
        assert_eq!(e.outcome, Outcome::Passed, "{e}");
    }
    m.fib.clear();
    let e = explain(&r, &m, &out, Direction::FromRoutedContainer);
    assert_eq!(e.outcome, Outcome::Passed, "{e}");
    assert!(
        e.to_string().contains("next hop: the kernel's route"),
        "{e}"
    );
    // A veth that is not a routed container's.
    let other = Query {
        iif: Some(42),
        ..out
    };
    let e = explain(&r, &m, &other, Direction::FromRoutedContainer);
    assert_eq!(e.outcome, Outcome::Passed);
    assert!(e.to_string().contains("not in CONTAINER_IFS"), "{e}");
}

#[test]
fn route_get_output_is_parsed() {
    assert!(matches!(
        parse_route_get("local 10.0.1.1 from 10.0.1.101 dev lo table local"),
        Fib::NotForwarded(_)
    ));
    let lo = parse_route_get("1.2.3.4 from 10.0.1.101 via 10.0.1.254 dev lo cache iif x");
    assert_eq!(
        lo,
        Fib::Via {
            ifindex: 1,
            gateway: Some(Ipv4Addr::new(10, 0, 1, 254)),
        }
    );
    assert!(matches!(
        parse_route_get("10.0.1.2 from 10.0.1.101 dev no-such-if0"),
        Fib::Unknown(_)
    ));
}

fn icmp_error(outer: (Ipv4Addr, Ipv4Addr), t: u8, quoted: Quoted) -> Query {
    Query {
        icmp_error: Some(IcmpError {
            icmp_type: t,
            quoted,
        }),
        ..q(proto::ICMP, (outer.0, 0), (outer.1, 0), TcpFlags::NotSyn)
    }
}

fn quoted(p: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Quoted {
    Quoted {
        proto: p,
        src: SocketAddrV4::new(src.0, src.1),
        dst: SocketAddrV4::new(dst.0, dst.1),
    }
}

/// C1:40000 → OUT:4000 mapped to UP:50000, with its flow.
fn mapped() -> MemMaps {
    let mut m = MemMaps::default();
    add_mapping(&mut m, proto::UDP, 40000, 50000);
    add_flow(&mut m, proto::UDP, (40000, 4000), 50000, SEEN_OUT);
    m
}

#[test]
fn icmp_errors_coming_in() {
    let r = rules(0, 0);
    let mut m = mapped();
    let router = Ipv4Addr::new(198, 51, 100, 1);
    // Time exceeded from a router about C1's packet as it left.
    let pkt = icmp_error(
        (router, UP),
        11,
        quoted(proto::UDP, (UP, 50000), (OUT, 4000)),
    );
    assert_eq!(infer_direction(&r, &m, &pkt), Direction::Ingress);
    let e = explain(&r, &m, &pkt, Direction::Ingress);
    assert_eq!(
        e.outcome,
        Outcome::Translated {
            src: SocketAddrV4::new(router, 0),
            dst: SocketAddrV4::new(C1, 0),
            counter: "icmp_errors_translated",
            quoted: Some(QuotedAfter {
                src: SocketAddrV4::new(C1, 40000),
                dst: SocketAddrV4::new(OUT, 4000),
            }),
        }
    );
    assert!(e.to_string().contains("quoting 10.77.0.2:40000"), "{e}");
    // The outer destination must be the quoted source.
    let elsewhere = icmp_error(
        (router, Ipv4Addr::new(203, 0, 113, 9)),
        3,
        quoted(proto::UDP, (UP, 50000), (OUT, 4000)),
    );
    let e = explain(&r, &m, &elsewhere, Direction::Ingress);
    assert_eq!(e.outcome, Outcome::Passed, "{e}");
    assert!(
        e.to_string().contains("is not the outer destination"),
        "{e}"
    );
    // About a destination the mapping has no flow with: dropped.
    let stranger = icmp_error(
        (router, UP),
        3,
        quoted(proto::UDP, (UP, 50000), (Ipv4Addr::new(192, 0, 2, 7), 53)),
    );
    let e = explain(&r, &m, &stranger, Direction::Ingress);
    assert_eq!(e.outcome, dropped("drop_icmp_no_flow"));
    // Through a published port (the reply left as UP:8081).
    let client = SocketAddrV4::new(OUT, 5555);
    add_flow(
        &mut m,
        proto::TCP,
        (4000, 5555),
        8081,
        PUBLISHED | OPENED_IN,
    );
    let e = explain(
        &r,
        &m,
        &icmp_error(
            (router, UP),
            3,
            quoted(proto::TCP, (UP, 8081), (*client.ip(), client.port())),
        ),
        Direction::Ingress,
    );
    assert_eq!(translated(&e).1, SocketAddrV4::new(C1, 0), "{e}");
    assert!(e.to_string().contains("published port tcp"), "{e}");
    // A quoted echo request: the identifier's mapping, else the host's.
    let echo = icmp_error((router, UP), 11, quoted(proto::ICMP, (UP, 7), (OUT, 0)));
    let e = explain(&r, &m, &echo, Direction::Ingress);
    assert_eq!(e.outcome, Outcome::Passed);
    assert!(e.to_string().contains("no mapping holds ICMP id 7"), "{e}");
    let inside = Endpoint::new(proto::ICMP, C1.octets(), 7);
    let outside = Endpoint::new(proto::ICMP, UP.octets(), 7);
    m.reverse.insert(outside, inside);
    add_flow(&mut m, proto::ICMP, (7, 0), 7, 0);
    let e = explain(&r, &m, &echo, Direction::Ingress);
    assert_eq!(translated(&e).2, "icmp_errors_translated", "{e}");
}

#[test]
fn icmp_errors_going_out() {
    let r = rules(0, 0);
    let mut m = MemMaps::default();
    // OUT:5555 reached C1:4000 through the published port 8081; C1
    // answers port unreachable.
    add_flow(
        &mut m,
        proto::UDP,
        (4000, 5555),
        8081,
        PUBLISHED | OPENED_IN,
    );
    let about = quoted(proto::UDP, (OUT, 5555), (C1, 4000));
    let pkt = icmp_error((C1, OUT), 3, about);
    assert_eq!(infer_direction(&r, &m, &pkt), Direction::FromContainer);
    let e = explain(&r, &m, &pkt, Direction::FromContainer);
    assert_eq!(
        e.outcome,
        Outcome::Translated {
            src: SocketAddrV4::new(UP, 0),
            dst: SocketAddrV4::new(OUT, 0),
            counter: "icmp_errors_translated",
            quoted: Some(QuotedAfter {
                src: SocketAddrV4::new(OUT, 5555),
                dst: SocketAddrV4::new(UP, 8081),
            }),
        },
        "{e}"
    );
    // This host (forwarding to C1) reports on it: the outer source stays.
    let host = icmp_error((UP, OUT), 3, about);
    let e = explain(&r, &m, &host, Direction::Egress);
    assert_eq!(translated(&e).0, SocketAddrV4::new(UP, 0), "{e}");
    assert!(e.to_string().contains("is not the container: kept"), "{e}");
    // Another inside host reporting on C1's flow: dropped.
    let other = icmp_error((Ipv4Addr::new(10, 77, 0, 3), OUT), 3, about);
    let e = explain(&r, &m, &other, Direction::Egress);
    assert_eq!(e.outcome, dropped("drop_icmp_no_flow"));
    // No flow: dropped from a masqueraded sender, else left alone.
    let unknown = quoted(proto::UDP, (OUT, 5556), (C1, 4000));
    let e = explain(
        &r,
        &m,
        &icmp_error((C1, OUT), 3, unknown),
        Direction::Egress,
    );
    assert_eq!(e.outcome, dropped("drop_icmp_no_flow"));
    let e = explain(
        &r,
        &m,
        &icmp_error((UP, OUT), 3, unknown),
        Direction::Egress,
    );
    assert_eq!(e.outcome, Outcome::Passed);
    // Going out, only TCP and UDP quotes are translated.
    let echo = quoted(proto::ICMP, (OUT, 9), (C1, 0));
    let e = explain(&r, &m, &icmp_error((C1, OUT), 11, echo), Direction::Egress);
    assert_eq!(e.outcome, dropped("drop_icmp_no_flow"));
    // JSON carries the quoted header.
    let json = serde_json::to_value(explain(&r, &m, &pkt, Direction::FromContainer)).expect("json");
    assert_eq!(json["quoted"]["dst"], "203.0.113.1:8081", "{json}");
    assert_eq!(json["verdict"], "translated");
}
