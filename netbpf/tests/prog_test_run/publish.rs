//! Published ports: DNAT in, the replies out, ranges, bound addresses.

use super::*;

#[test]
fn published_port_dnat_in_and_reply_out() {
    require_root!();
    let dp = publish_dp();
    let syn = tcp(50000, 8080, SYN);
    let (rc, out) = dp.ingress(&simple(REMOTE, UPLINK, &syn));
    assert_eq!(rc, TC_OK);
    // The container sees the real client address.
    assert_bytes(
        &out,
        &simple(REMOTE, C1, &tcp(50000, 4000, SYN)),
        "SYN to container",
    );
    let (rc, out) = dp.egress(&simple(C1, REMOTE, &tcp(4000, 50000, SYN | ACK)));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &out,
        &simple(UPLINK, REMOTE, &tcp(8080, 50000, SYN | ACK)),
        "SYN-ACK out",
    );
    let (k, v) = dp.flows()[0];
    assert_eq!(
        k,
        FlowKey::new(TCP, C1.octets(), 4000, REMOTE.octets(), 50000)
    );
    assert_eq!((v.outside_addr, v.outside_port), (UPLINK.octets(), 8080));
    assert_ne!(v.flags & flow_flags::PUBLISHED, 0);
    assert_ne!(v.flags & flow_flags::OPENED_IN, 0);
    assert_eq!(dp.counter(Counter::DnatPackets), 1);
    assert_eq!(dp.counter(Counter::SnatPackets), 1);
    // Mid-stream TCP to a published port without a flow: dropped.
    let (rc, _) = dp.ingress(&simple(REMOTE, UPLINK, &tcp(50001, 8080, ACK)));
    assert_eq!(rc, TC_SHOT);
}

#[test]
fn published_range_maps_one_to_one() {
    require_root!();
    let dp = publish_dp();
    for host_port in [9000u16, 9007, 9010] {
        let q = udp(40000 + host_port, host_port, b"ping");
        let (rc, out) = dp.ingress(&simple(REMOTE, UPLINK, &q));
        assert_eq!(rc, TC_OK, "port {host_port}");
        let to = 5000 + (host_port - 9000);
        assert_bytes(
            &out,
            &simple(REMOTE, C2, &udp(40000 + host_port, to, b"ping")),
            "range",
        );
    }
    // Just outside the range: not published, left to the host.
    let pkt = simple(REMOTE, UPLINK, &udp(1, 9011, b"x"));
    let (rc, out) = dp.ingress(&pkt);
    assert_eq!(rc, TC_NEXT);
    assert_bytes(&out, &pkt, "9011 untouched");
}

#[test]
fn published_port_bound_to_an_address() {
    require_root!();
    let dp = publish_dp();
    let other = Ipv4Addr::new(203, 0, 113, 9);
    let pkt = simple(REMOTE, UPLINK, &udp(1000, 8443, b"x"));
    let (rc, out) = dp.ingress(&pkt);
    assert_eq!(rc, TC_NEXT, "not published on the uplink address");
    assert_bytes(&out, &pkt, "untouched");
    // A TCP SYN there finds no socket either: dropped silently.
    let (rc, _) = dp.ingress(&simple(REMOTE, UPLINK, &tcp(1000, 8443, SYN)));
    assert_eq!(rc, TC_SHOT);
    let (rc, out) = dp.ingress(&simple(REMOTE, other, &tcp(1000, 8443, SYN)));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &out,
        &simple(REMOTE, C1, &tcp(1000, 443, SYN)),
        "bound address",
    );
}

#[test]
fn unsolicited_inbound_never_reaches_a_container() {
    require_root!();
    let dp = publish_dp();
    // Not published, no mapping, no host socket: a SYN is dropped silently
    // (RFC 5382 REQ-4: the NAT must not answer; Linux would send a RST).
    let pkt = simple(REMOTE, UPLINK, &tcp(1000, 8081, SYN));
    assert_eq!(dp.ingress(&pkt).0, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropUnsolicitedSyn), 1);
    // A host service listening there still gets its SYNs (the test
    // thread's private namespace is the one the program looks in).
    let listener = std::net::TcpListener::bind("0.0.0.0:8082").expect("listen");
    let pkt = simple(REMOTE, UPLINK, &tcp(1000, 8082, SYN));
    assert_eq!(dp.ingress(&pkt).0, TC_NEXT, "host listener");
    drop(listener);
    // Other packets to the host are the host's business.
    let pkt = simple(REMOTE, UPLINK, &udp(1000, 8081, b"x"));
    assert_eq!(dp.ingress(&pkt).0, TC_NEXT);
    // Straight to a container address: dropped.
    for l4 in [tcp(1000, 4000, SYN), udp(1000, 53, b"x"), echo(false, 1, 1)] {
        assert_eq!(dp.ingress(&simple(REMOTE, C1, &l4)).0, TC_SHOT);
    }
    assert_eq!(dp.counter(Counter::DropDirectToInside), 3);
    assert!(dp.flows().is_empty());
}

#[test]
fn mappings_never_take_a_published_port() {
    require_root!();
    let dp = publish_dp();
    let p = dp.out_port(C1, &udp(5353, 53, b"q"));
    assert_ne!(p, 5353, "5353/udp is published");
    let p = dp.out_port(C1, &tcp(8080, 443, SYN));
    assert_ne!(p, 8080, "8080/tcp is published");
    // Same port numbers on the other protocol are free to keep.
    assert_eq!(dp.out_port(C1, &udp(8080, 53, b"q")), 8080);
}
