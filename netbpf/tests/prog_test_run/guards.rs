//! Issue 14's guards: the host's sockets, the per-source budget, half-open flows, RST and FIN checks, ICMP 3/13.

use super::*;

#[test]
fn a_container_never_gets_a_port_a_host_socket_uses() {
    require_root!();
    let dp = Dp::new("");
    // Without a host socket the original port is kept ...
    assert_eq!(dp.out_port(C1, &tcp(2222, 80, SYN)), 2222);
    // ... but a port the host listens on (sshd on 22, a resolver on 53)
    // is never handed to a container.
    let _sockets = host_sockets(22);
    let _dns = host_sockets(53);
    let p = dp.out_port(C1, &tcp(22, 80, SYN));
    assert!(p != 22 && (1..1024).contains(&p), "TCP 22 → {p}");
    let p = dp.out_port(C1, &udp(53, 53, b"q"));
    assert!(p != 53 && (1..1024).contains(&p), "UDP 53 → {p}");
}

#[test]
fn host_sockets_win_over_a_mapping_on_inbound() {
    require_root!();
    let dp = publish_dp();
    let p = dp.out_port(C1, &tcp(40000, 80, SYN));
    assert_eq!(p, 40000);
    // The host starts listening on the port the mapping holds.
    let _sockets = host_sockets(40000);
    // A new remote's SYN is the host's (before: endpoint-independent
    // filtering sent it to the container) ...
    let syn = simple(OTHER, UPLINK, &tcp(1234, 40000, SYN));
    let (rc, out) = dp.ingress(&syn);
    assert_eq!(rc, TC_NEXT, "to the host's listener");
    assert_bytes(&out, &syn, "untouched");
    // ... and so is a UDP datagram to the host's bound socket.
    dp.out_port(C1, &udp(40001, 53, b"q"));
    let _udp = std::net::UdpSocket::bind("0.0.0.0:40001").expect("udp");
    let dgram = simple(OTHER, UPLINK, &udp(53, 40001, b"r"));
    let (rc, _) = dp.ingress(&dgram);
    assert_eq!(rc, TC_NEXT, "to the host's UDP socket");
    assert_eq!(dp.counter(Counter::HostPortsKept), 2);
    // The container's own flow still gets its replies.
    let (rc, back) = dp.ingress(&simple(REMOTE, UPLINK, &tcp(80, 40000, SYN | ACK)));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &back,
        &simple(REMOTE, C1, &tcp(80, 40000, SYN | ACK)),
        "the mapping's own flow",
    );
}

#[test]
fn a_published_port_wins_over_an_older_mapping() {
    require_root!();
    // A container took outside port 8080 before 8080 was published.
    let mut dp = Dp::new("");
    assert_eq!(dp.out_port(C2, &tcp(8080, 80, SYN)), 8080);
    let config = Config::from_toml(&format!("{BASE_CONFIG}{PUBLISH_CONFIG}")).expect("config");
    datapath::fill_publish(&mut dp.ebpf, &config, &[UPLINK]).expect("fill publish");
    // A client's SYN to 8080 goes to the published container, not to C2.
    let (rc, out) = dp.ingress(&simple(OTHER, UPLINK, &tcp(5555, 8080, SYN)));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &out,
        &simple(OTHER, C1, &tcp(5555, 4000, SYN)),
        "to the published target",
    );
    // C2's own flow is untouched.
    let (rc, out) = dp.ingress(&simple(REMOTE, UPLINK, &tcp(80, 8080, SYN | ACK)));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &out,
        &simple(REMOTE, C2, &tcp(80, 8080, SYN | ACK)),
        "C2's flow",
    );
}

#[test]
fn one_source_cannot_open_more_than_its_budget() {
    require_root!();
    let dp = publish_dp_with("[inbound]\nnew_flows_per_source = 1\nnew_flows_burst = 3\n");
    for port in 0..3u16 {
        let (rc, _) = dp.ingress(&simple(REMOTE, UPLINK, &tcp(50000 + port, 8080, SYN)));
        assert_eq!(rc, TC_OK, "SYN {port} within the burst");
    }
    let (rc, _) = dp.ingress(&simple(REMOTE, UPLINK, &tcp(50003, 8080, SYN)));
    assert_eq!(rc, TC_SHOT, "over the budget");
    assert_eq!(dp.counter(Counter::DropSourceLimit), 1);
    // An existing flow of that source still works, and other sources open
    // flows.
    let (rc, _) = dp.ingress(&simple(REMOTE, UPLINK, &tcp(50000, 8080, ACK)));
    assert_eq!(rc, TC_OK, "established flow of the flooding source");
    let (rc, _) = dp.ingress(&simple(OTHER, UPLINK, &tcp(50000, 8080, SYN)));
    assert_eq!(rc, TC_OK, "another client");
    // Flows opened through a mapping (endpoint-independent filtering) count
    // against the same budget.
    dp.out_port(C1, &udp(41000, 53, b"q"));
    let (rc, _) = dp.ingress(&simple(REMOTE, UPLINK, &udp(999, 41000, b"spray")));
    assert_eq!(rc, TC_SHOT, "a UDP spray at a mapping");
    assert_eq!(dp.counter(Counter::DropSourceLimit), 2);
}

#[test]
fn a_handshake_is_complete_only_when_the_opener_acks() {
    require_root!();
    let dp = publish_dp();
    let flags = |dp: &Dp| {
        let flows = dp.flows();
        assert_eq!(flows.len(), 1);
        flows[0].1.flags
    };
    dp.ingress(&simple(REMOTE, UPLINK, &tcp(50000, 8080, SYN)));
    dp.egress(&simple(C1, REMOTE, &tcp(4000, 50000, SYN | ACK)));
    let f = flags(&dp);
    assert_eq!(
        f & (flow_flags::ACK_IN | flow_flags::ACK_OUT),
        0,
        "half open"
    );
    assert_eq!(
        netbpf::conntrack::FlowState::of(TCP, f),
        netbpf::conntrack::FlowState::SynRecv,
        "a SYN flood the container answers stays transitory"
    );
    dp.ingress(&simple(REMOTE, UPLINK, &tcp(50000, 8080, ACK)));
    let f = flags(&dp);
    assert_ne!(f & flow_flags::ACK_IN, 0);
    assert_eq!(
        netbpf::conntrack::FlowState::of(TCP, f),
        netbpf::conntrack::FlowState::Established
    );
}

#[test]
fn unsolicited_syns_are_a_policy() {
    require_root!();
    let syn = simple(REMOTE, UPLINK, &tcp(50000, 30080, SYN));
    let dp = publish_dp();
    assert_eq!(dp.ingress(&syn).0, TC_SHOT, "dropped by default");
    assert_eq!(dp.counter(Counter::DropUnsolicitedSyn), 1);
    // kube-proxy NodePorts, IPVS or a firewalld forward may own it.
    let dp = publish_dp_with("[inbound]\nunsolicited_syn = \"pass\"\n");
    let (rc, out) = dp.ingress(&syn);
    assert_eq!(rc, TC_NEXT, "to the stack");
    assert_bytes(&out, &syn, "untouched");
    assert_eq!(dp.counter(Counter::UnsolicitedSynsPassed), 1);
    assert_eq!(dp.counter(Counter::DropUnsolicitedSyn), 0);
}

#[test]
fn a_blind_rst_does_not_close_a_live_flow() {
    require_root!();
    let dp = Dp::new("");
    // An established connection: the container acknowledges up to 5000.
    let p = dp.out_port(C1, &tcp(7000, 443, SYN));
    dp.ingress(&tcp_seq(REMOTE, UPLINK, (443, p), SYN | ACK, 4999, 1001));
    dp.egress(&tcp_seq(C1, REMOTE, (7000, 443), ACK, 1001, 5000));
    // A RST from someone who knows the 4-tuple but not the sequence number
    // is forwarded (the container judges it too) but changes nothing here.
    let blind = tcp_seq(REMOTE, UPLINK, (443, p), RST, 0x8000_0000, 0);
    let (rc, _) = dp.ingress(&blind);
    assert_eq!(rc, TC_OK, "forwarded");
    assert_eq!(
        dp.flows()[0].1.flags & flow_flags::RST,
        0,
        "state unchanged"
    );
    assert_eq!(dp.counter(Counter::TcpCloseIgnored), 1);
    // So does a blind FIN.
    dp.ingress(&tcp_seq(
        REMOTE,
        UPLINK,
        (443, p),
        FIN | ACK,
        0x9000_0000,
        1001,
    ));
    assert_eq!(dp.flows()[0].1.flags & flow_flags::FIN_IN, 0);
    // The real peer's RST, at the acknowledged sequence number, counts.
    dp.ingress(&tcp_seq(REMOTE, UPLINK, (443, p), RST, 5000, 0));
    assert_ne!(dp.flows()[0].1.flags & flow_flags::RST, 0);
    assert_eq!(dp.counter(Counter::TcpCloseIgnored), 2);
}

#[test]
fn a_containers_rst_to_an_unsolicited_syn_is_no_sign_of_life() {
    require_root!();
    let dp = Dp::new("");
    let p_tcp = dp.out_port(C1, &tcp(40001, 443, SYN));
    // Someone else reaches the TCP mapping (endpoint-independent
    // filtering); the container has nothing listening and resets.
    dp.ingress(&simple(OTHER, UPLINK, &tcp(999, p_tcp, SYN)));
    let (rc, _) = dp.egress(&simple(C1, OTHER, &tcp(40001, 999, RST | ACK)));
    assert_eq!(rc, TC_OK, "the RST is translated (RFC 7857 §2.2)");
    let flows = dp.flows();
    let (_, v) = flows
        .iter()
        .find(|(k, _)| k.remote_addr == OTHER.octets())
        .expect("the inbound flow");
    assert_ne!(v.flags & flow_flags::RST, 0);
    assert_eq!(v.flags & flow_flags::SEEN_OUT, 0, "not an answer");
    assert!(
        !netbpf::conntrack::keeps_mapping_alive(v.flags),
        "so it does not hold the mapping (RFC 7857 §7)"
    );
}

#[test]
fn a_container_whose_flow_gets_no_session_is_told_so() {
    require_root!();
    let dp = Dp::new("ports = \"40000-40000\"\n");
    hairpin_routes();
    dp.out_port(C1, &udp(1111, 53, b"a"));
    // The range is taken: C2's datagram cannot get a session.
    let pkt = simple(C2, REMOTE, &udp(2222, 53, b"query"));
    let (rc, out) = dp.egress(&pkt);
    assert_eq!(
        rc, 7,
        "an ICMP error redirected back to C2 (RFC 5508 REQ-8)"
    );
    // ICMP 3/13 from the NAT's address to C2, quoting the IP header and
    // the first eight bytes; Ethernet addresses are the redirect's to fill.
    let mut icmp = vec![3, 13, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&pkt[14..14 + 28]);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0xc0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, ICMP, 0, 0]);
    ip.extend_from_slice(&UPLINK.octets());
    ip.extend_from_slice(&C2.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut want = vec![0u8; 12];
    want.extend_from_slice(&[0x08, 0x00]);
    want.extend_from_slice(&ip);
    want.extend_from_slice(&icmp);
    assert_bytes(&out, &want, "administratively prohibited");
    assert_eq!(
        dp.counter(Counter::DropPortExhausted),
        1,
        "still a counted drop"
    );
    assert_eq!(dp.counter(Counter::IcmpProhibitedSent), 1);
    assert_eq!(dp.counter(Counter::SnatPackets), 1, "only C1's");
}
