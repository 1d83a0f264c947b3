//! ICMP errors through the NAT, both ways, and the ones that must not pass.

use super::*;

#[test]
fn icmp_port_unreachable_in_translates_outer_and_quoted_headers() {
    require_root!();
    let dp = Dp::new("");
    let p = two_udp_senders(&dp);
    let before = dp.flows();
    // The remote quotes the whole datagram it got (as Linux does).
    let sent = ip_packet(UPLINK, REMOTE, &udp(p, 53, b"query"));
    let err = icmp_error(3, 3, [0; 4], &sent);
    let (rc, out) = dp.ingress(&simple(REMOTE, UPLINK, &err));
    assert_eq!(rc, TC_OK);
    let original = ip_packet(C2, REMOTE, &udp(5353, 53, b"query"));
    let want = simple(REMOTE, C2, &icmp_error(3, 3, [0; 4], &original));
    assert_bytes(&out, &want, "port unreachable to c2");
    assert_eq!(dp.counter(Counter::IcmpErrorsTranslated), 1);
    // Errors neither create nor refresh flows (RFC 5508 REQ-6).
    assert_eq!(dp.flows(), before);
}

#[test]
fn icmp_time_exceeded_in_for_tcp_and_echo() {
    require_root!();
    let dp = Dp::new("");
    // TCP (traceroute -T): the router quotes IP header + 8 bytes, which
    // does not include the TCP checksum.
    let syn = tcp(33434, 80, SYN);
    assert_eq!(dp.out_port(C1, &syn), 33434);
    let (_, out) = dp.egress(&simple(C2, REMOTE, &syn));
    let p = u16::from_be_bytes([out[34], out[35]]);
    let router = Ipv4Addr::new(198, 51, 100, 1);
    let sent = quote(&ip_packet(UPLINK, REMOTE, &with_sport(&syn, p)), 8);
    let (rc, out) = dp.ingress(&simple(router, UPLINK, &icmp_error(11, 0, [0; 4], &sent)));
    assert_eq!(rc, TC_OK);
    let original = quote(&ip_packet(C2, REMOTE, &syn), 8);
    // The quoted IP header's checksum must be the one of the original.
    assert_bytes(
        &out,
        &simple(router, C2, &icmp_error(11, 0, [0; 4], &original)),
        "time exceeded, TCP",
    );
    // ICMP echo (traceroute -I / ping): quoted id and its checksum restored.
    let req = echo(false, 0x2222, 5);
    dp.egress(&simple(C1, REMOTE, &req));
    let (_, out) = dp.egress(&simple(C2, REMOTE, &req));
    let id = u16::from_be_bytes([out[38], out[39]]);
    assert_ne!(id, 0x2222);
    let sent = ip_packet(UPLINK, REMOTE, &echo(false, id, 5));
    let (rc, out) = dp.ingress(&simple(router, UPLINK, &icmp_error(11, 0, [0; 4], &sent)));
    assert_eq!(rc, TC_OK);
    let original = ip_packet(C2, REMOTE, &req);
    assert_bytes(
        &out,
        &simple(router, C2, &icmp_error(11, 0, [0; 4], &original)),
        "time exceeded, echo",
    );
}

#[test]
fn icmp_frag_needed_for_a_published_flow() {
    require_root!();
    let dp = publish_dp();
    dp.ingress(&simple(REMOTE, UPLINK, &tcp(50000, 8080, SYN)));
    dp.egress(&simple(C1, REMOTE, &tcp(4000, 50000, SYN | ACK)));
    // A router on the way back asks for a smaller MTU (PMTU discovery).
    let router = Ipv4Addr::new(198, 51, 100, 1);
    let reply = L4::Tcp {
        sport: 8080,
        dport: 50000,
        flags: ACK,
        payload: vec![0x61; 64],
    };
    let sent = ip_packet(UPLINK, REMOTE, &reply);
    let mtu = [0, 0, 0x05, 0x00]; // next-hop MTU 1280
    let (rc, out) = dp.ingress(&simple(router, UPLINK, &icmp_error(3, 4, mtu, &sent)));
    assert_eq!(rc, TC_OK);
    let L4::Tcp { payload, .. } = reply else {
        unreachable!()
    };
    let original = ip_packet(
        C1,
        REMOTE,
        &L4::Tcp {
            sport: 4000,
            dport: 50000,
            flags: ACK,
            payload,
        },
    );
    assert_bytes(
        &out,
        &simple(router, C1, &icmp_error(3, 4, mtu, &original)),
        "frag needed",
    );
}

#[test]
fn icmp_errors_out_from_a_container_are_translated() {
    require_root!();
    let dp = publish_dp();
    // A remote reaches the published 5353/udp; the container answers with
    // port unreachable, quoting what it received.
    let q = udp(40000, 5353, b"hello");
    dp.ingress(&simple(REMOTE, UPLINK, &q));
    let received = ip_packet(REMOTE, C1, &udp(40000, 53, b"hello"));
    let (rc, out) = dp.egress(&simple(C1, REMOTE, &icmp_error(3, 3, [0; 4], &received)));
    assert_eq!(rc, TC_OK);
    let as_sent = ip_packet(REMOTE, UPLINK, &q);
    assert_bytes(
        &out,
        &simple(UPLINK, REMOTE, &icmp_error(3, 3, [0; 4], &as_sent)),
        "out",
    );
    // An error from a container about nothing netbpf knows: dropped.
    let unknown = ip_packet(REMOTE, C1, &udp(1, 2, b"?"));
    let (rc, _) = dp.egress(&simple(C1, REMOTE, &icmp_error(3, 3, [0; 4], &unknown)));
    assert_eq!(rc, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropIcmpNoFlow), 1);
}

#[test]
fn icmp_errors_without_a_flow_are_not_delivered() {
    require_root!();
    let dp = Dp::new("");
    let p = dp.out_port(C1, &udp(7777, 53, b"q"));
    // Quotes the mapping but a remote it never talked to: dropped.
    let stranger = Ipv4Addr::new(198, 51, 100, 200);
    let sent = ip_packet(UPLINK, stranger, &udp(p, 53, b"q"));
    let (rc, _) = dp.ingress(&simple(stranger, UPLINK, &icmp_error(3, 3, [0; 4], &sent)));
    assert_eq!(rc, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropIcmpNoFlow), 1);
    // Quotes a port netbpf does not own: the host's own traffic, untouched.
    let host = ip_packet(UPLINK, REMOTE, &udp(12345, 53, b"q"));
    let pkt = simple(REMOTE, UPLINK, &icmp_error(3, 3, [0; 4], &host));
    let (rc, out) = dp.ingress(&pkt);
    assert_eq!(rc, TC_NEXT);
    assert_bytes(&out, &pkt, "host's error untouched");
}

#[test]
fn icmp_parameter_problem_and_time_exceeded_both_ways() {
    require_root!();
    let dp = publish_dp();
    let q = udp(6363, 53, b"query");
    assert_eq!(dp.out_port(C1, &q), 6363);
    let p = dp.out_port(C2, &q);
    let router = Ipv4Addr::new(198, 51, 100, 1);
    // Parameter problem from outside, pointer in the rest-of-header.
    let sent = quote(&ip_packet(UPLINK, REMOTE, &udp(p, 53, b"query")), 8);
    let (rc, out) = dp.ingress(&simple(
        router,
        UPLINK,
        &icmp_error(12, 0, [20, 0, 0, 0], &sent),
    ));
    assert_eq!(rc, TC_OK);
    let original = quote(&ip_packet(C2, REMOTE, &udp(6363, 53, b"query")), 8);
    assert_bytes(
        &out,
        &simple(router, C2, &icmp_error(12, 0, [20, 0, 0, 0], &original)),
        "parameter problem in",
    );
    // Time exceeded and parameter problem from a container about what a
    // remote sent to its published port.
    dp.ingress(&simple(REMOTE, UPLINK, &udp(40001, 5353, b"hi")));
    let received = ip_packet(REMOTE, C1, &udp(40001, 53, b"hi"));
    let as_sent = ip_packet(REMOTE, UPLINK, &udp(40001, 5353, b"hi"));
    for (t, code, rest) in [(11u8, 0u8, [0u8; 4]), (12, 0, [8, 0, 0, 0])] {
        let (rc, out) = dp.egress(&simple(C1, REMOTE, &icmp_error(t, code, rest, &received)));
        assert_eq!(rc, TC_OK, "type {t}");
        assert_bytes(
            &out,
            &simple(UPLINK, REMOTE, &icmp_error(t, code, rest, &as_sent)),
            "out",
        );
    }
}

#[test]
fn icmp_errors_with_bad_checksums_are_dropped_not_translated() {
    require_root!();
    let dp = Dp::new("");
    let p = two_udp_senders(&dp);
    let sent = ip_packet(UPLINK, REMOTE, &udp(p, 53, b"query"));
    // A bad ICMP checksum (RFC 5508 REQ-3a).
    let mut err = simple(REMOTE, UPLINK, &icmp_error(3, 3, [0; 4], &sent));
    err[36] ^= 0x40;
    let (rc, _) = dp.ingress(&err);
    assert_eq!(rc, TC_SHOT, "bad ICMP checksum");
    // A bad checksum in the quoted IP header, with the ICMP checksum
    // computed over it (so only the quote is wrong).
    let mut bad_quote = sent.clone();
    bad_quote[10] ^= 0x01;
    let err = simple(REMOTE, UPLINK, &icmp_error(3, 3, [0; 4], &bad_quote));
    let (rc, _) = dp.ingress(&err);
    assert_eq!(rc, TC_SHOT, "bad quoted IP checksum");
    assert_eq!(dp.counter(Counter::DropIcmpBadChecksum), 2);
    assert_eq!(dp.counter(Counter::IcmpErrorsTranslated), 0);
    // A container's error with a bad checksum does not leave either.
    let got = ip_packet(REMOTE, C2, &udp(53, 5353, b"answer"));
    let mut out_err = simple(C2, REMOTE, &icmp_error(3, 3, [0; 4], &got));
    out_err[36] ^= 0x40;
    let (rc, _) = dp.egress(&out_err);
    assert_eq!(rc, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropIcmpBadChecksum), 3);
}
