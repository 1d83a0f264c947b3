//! Hairpinning: container to container through the host's address.

use super::*;

#[test]
fn hairpin_packet_is_translated_both_ways_and_redirected() {
    require_root!();
    let dp = publish_dp();
    hairpin_routes();
    // c2 → host:8080 (published to c1:4000): c2's mapping as the source,
    // c1 as the destination, TTL one less.
    let syn = tcp(45000, 8080, SYN);
    let (rc, out) = dp.run(programs::INSIDE, &simple(C2, UPLINK, &syn));
    assert_eq!(rc, 7, "TC_ACT_REDIRECT");
    let p = u16::from_be_bytes([out[34], out[35]]);
    let want = frame(
        UPLINK,
        C1,
        &tcp(p, 4000, SYN),
        &IpOpts {
            ttl: Some(62),
            ..Default::default()
        },
    );
    assert_bytes(&out, &want, "hairpinned SYN");
    // c1's answer goes back to c2 as if from the published port.
    let (rc, back) = dp.run(
        programs::INSIDE,
        &simple(C1, UPLINK, &tcp(4000, p, SYN | ACK)),
    );
    assert_eq!(rc, 7);
    let want = frame(
        UPLINK,
        C2,
        &tcp(8080, 45000, SYN | ACK),
        &IpOpts {
            ttl: Some(62),
            ..Default::default()
        },
    );
    assert_bytes(&back, &want, "hairpinned SYN-ACK");
    assert_eq!(dp.counter(Counter::HairpinPackets), 2);
    // Traffic to anything else is left to the stack.
    let pkt = simple(C2, REMOTE, &tcp(45001, 443, SYN));
    assert_eq!(dp.run(programs::INSIDE, &pkt).0, TC_NEXT);
}

#[test]
fn icmp_errors_about_hairpinned_packets_reach_the_other_container() {
    require_root!();
    let dp = publish_dp();
    hairpin_routes();
    // C1 → host:9000/udp, published to C2:5000: hairpinned from C1's
    // mapping (UPLINK:p).
    let dgram = simple(C1, UPLINK, &udp(41000, 9000, b"hello"));
    let (rc, out) = dp.run(programs::INSIDE, &dgram);
    assert_eq!(rc, 7, "hairpinned");
    let p = u16::from_be_bytes([out[34], out[35]]);
    // C2 has no socket on 5000 and says so, quoting what it received.
    let received = ip_packet(UPLINK, C2, &udp(p, 5000, b"hello"));
    let err = simple(C2, UPLINK, &icmp_error(3, 3, [0; 4], &quote(&received, 8)));
    let (rc, out) = dp.run(programs::INSIDE, &err);
    assert_eq!(rc, 7, "redirected to C1 (RFC 5508 REQ-7)");
    // C1 gets it from the host, quoting the datagram as C1 sent it.
    let sent = ip_packet(C1, UPLINK, &udp(41000, 9000, b"hello"));
    let want = frame(
        UPLINK,
        C1,
        &icmp_error(3, 3, [0; 4], &quote(&sent, 8)),
        &IpOpts {
            ttl: Some(err[22] - 1),
            ..Default::default()
        },
    );
    assert_bytes(&out, &want, "translated error");
    assert_eq!(dp.counter(Counter::IcmpErrorsTranslated), 1);
    // An error quoting a flow nobody has is not invented into one.
    let stray = ip_packet(UPLINK, C2, &udp(p + 1, 5000, b"x"));
    let err = simple(C2, UPLINK, &icmp_error(3, 3, [0; 4], &quote(&stray, 8)));
    assert_eq!(dp.run(programs::INSIDE, &err).0, TC_NEXT, "the stack's");
}

#[test]
fn hairpinned_fragments_follow_their_first_fragment() {
    require_root!();
    let dp = publish_dp();
    hairpin_routes();
    let payload: Vec<u8> = (0..100u8).collect();
    let (first, rest) = udp_fragments(C1, UPLINK, 41000, 9000, &payload);
    let (rc, out_first) = dp.run(programs::INSIDE, &first);
    assert_eq!(rc, 7, "first fragment hairpinned");
    let p = u16::from_be_bytes([out_first[34], out_first[35]]);
    let (rc, out_rest) = dp.run(programs::INSIDE, &rest);
    assert_eq!(rc, 7, "the rest follows it (before: left to the host)");
    let (want_first, want_rest) = udp_fragments(UPLINK, C2, p, 5000, &payload);
    let with_ttl = |mut f: Vec<u8>, ttl: u8| {
        // The expected frames carry the decremented TTL: fix the header
        // checksum from scratch.
        f[22] = ttl;
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    assert_bytes(&out_first, &with_ttl(want_first, first[22] - 1), "first");
    assert_bytes(&out_rest, &with_ttl(want_rest, rest[22] - 1), "rest");
}

/// Puts `addr/32` in isolated network `id`.
fn isolate(dp: &mut Dp, addr: Ipv4Addr, id: u32) {
    let mut trie: aya::maps::LpmTrie<&mut MapData, [u8; 4], netbpf_common::IsolationNet> =
        aya::maps::LpmTrie::try_from(dp.ebpf.map_mut(map_names::ISOLATION).expect("isolation"))
            .expect("type");
    let key = aya::maps::lpm_trie::Key::new(32, addr.octets());
    trie.insert(&key, &netbpf_common::IsolationNet { id }, 0)
        .expect("insert");
}

#[test]
fn isolated_networks_reach_each_other_only_through_published_ports() {
    require_root!();
    let mut dp = publish_dp();
    hairpin_routes();
    isolate(&mut dp, C1, 1);
    isolate(&mut dp, C2, 2);
    // C1 → C2 directly: two networks, dropped where it enters the host.
    let syn = simple(C1, C2, &tcp(45000, 5000, SYN));
    assert_eq!(dp.run(programs::INSIDE, &syn).0, TC_SHOT);
    let dgram = simple(C2, C1, &udp(41000, 4000, b"x"));
    assert_eq!(dp.run(programs::INSIDE, &dgram).0, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropIsolated), 2);
    // Through C2's published port (host:9000/udp → C2:5000): hairpinned.
    let published = simple(C1, UPLINK, &udp(41000, 9000, b"hello"));
    assert_eq!(dp.run(programs::INSIDE, &published).0, TC_REDIRECT);
    // Elsewhere (an address in no network): the stack's, as before.
    let out = simple(C1, REMOTE, &tcp(45001, 443, SYN));
    assert_eq!(dp.run(programs::INSIDE, &out).0, TC_NEXT);
    // One network: not isolated.
    isolate(&mut dp, C2, 1);
    assert_eq!(dp.run(programs::INSIDE, &syn).0, TC_NEXT);
    assert_eq!(dp.counter(Counter::DropIsolated), 2);
}
