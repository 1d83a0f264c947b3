//! Fragments following their first fragment, and the host's own.

use super::*;

#[test]
fn fragments_follow_their_first_fragment_both_ways() {
    require_root!();
    let dp = Dp::new("");
    let payload: Vec<u8> = (0..100u8).collect();
    // Two containers with the same source port: the second is re-ported,
    // which changes the checksum in the first fragment only.
    dp.out_port(C1, &udp(3478, 3478, b"x"));
    let (first, rest) = udp_fragments(C2, REMOTE, 3478, 3478, &payload);
    let (rc, out_first) = dp.egress(&first);
    assert_eq!(rc, TC_OK);
    let p = u16::from_be_bytes([out_first[34], out_first[35]]);
    assert_ne!(p, 3478);
    let (want_first, want_rest) = udp_fragments(UPLINK, REMOTE, p, 3478, &payload);
    assert_bytes(&out_first, &want_first, "first fragment out");
    let (rc, out_rest) = dp.egress(&rest);
    assert_eq!(rc, TC_OK);
    assert_bytes(&out_rest, &want_rest, "second fragment out");

    // A large reply comes back in fragments.
    let (first, rest) = udp_fragments(REMOTE, UPLINK, 3478, p, &payload);
    let (want_first, want_rest) = udp_fragments(REMOTE, C2, 3478, 3478, &payload);
    let (rc, back) = dp.ingress(&first);
    assert_eq!(rc, TC_OK);
    assert_bytes(&back, &want_first, "first fragment in");
    let (rc, back) = dp.ingress(&rest);
    assert_eq!(rc, TC_OK);
    assert_bytes(&back, &want_rest, "second fragment in");
    assert_eq!(dp.counter(Counter::FragmentsTranslated), 2);
}

#[test]
fn fragments_for_the_host_arriving_in_order_reach_the_host() {
    require_root!();
    let dp = publish_dp();
    let payload: Vec<u8> = (0..100u8).collect();
    // `ping -s 3000` or a large DNS reply to the host itself.
    let (first, rest) = udp_fragments(REMOTE, UPLINK, 53, 33333, &payload);
    let (rc, out) = dp.ingress(&first);
    assert_eq!(rc, TC_NEXT, "first fragment: the host's");
    assert_bytes(&out, &first, "untouched");
    let (rc, out) = dp.ingress(&rest);
    assert_eq!(rc, TC_NEXT, "the rest follows it to the host, not held");
    assert_bytes(&out, &rest, "untouched");
    assert_eq!(dp.counter(Counter::FragmentsHeld), 0);
}

#[test]
fn a_stale_fragment_translation_is_not_used() {
    require_root!();
    let mut dp = publish_dp();
    let payload: Vec<u8> = (0..100u8).collect();
    let (_, rest) = udp_fragments(REMOTE, UPLINK, 53, 33333, &payload);
    // An entry left by an earlier datagram with the same IP ID, 60 s ago.
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    let now_ns = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
    let key = netbpf_common::FragKey {
        src: REMOTE.octets(),
        dst: UPLINK.octets(),
        id: [rest[18], rest[19]],
        proto: UDP,
        _pad: 0,
    };
    let stale = netbpf_common::FragValue {
        addr: C1.octets(),
        stamp_s: netbpf_common::coarse_seconds(now_ns) - 60,
    };
    let mut frags: HashMap<&mut MapData, netbpf_common::FragKey, netbpf_common::FragValue> =
        HashMap::try_from(dp.ebpf.map_mut(map_names::FRAGS).expect("frags")).expect("type");
    frags.insert(&key, &stale, 0).expect("insert");
    let (rc, _) = dp.ingress(&rest);
    assert_ne!(rc, TC_OK, "not sent to the container");
    assert_eq!(dp.counter(Counter::FragmentsTranslated), 0);
    // Treated as a fragment with no first fragment seen: held for the host.
    assert_eq!(rc, TC_SHOT, "held (consumed), not passed on");
    assert_eq!(dp.counter(Counter::FragmentsHeld), 1);
}
