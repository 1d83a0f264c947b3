//! Reply halves (`CONNTRACK_REPLY`): an inbound packet of an established
//! flow is found by its own tuple, in one lookup; the half is written by
//! the first inbound packet that finds the flow the long way (a new flow
//! is one insert).

use super::*;

impl Dp {
    /// Every reply half.
    fn replies(&self) -> Vec<(ReplyKey, ReplyValue)> {
        let map: HashMap<&MapData, ReplyKey, ReplyValue> =
            HashMap::try_from(self.ebpf.map(map_names::CONNTRACK_REPLY).expect("cr"))
                .expect("type");
        map.iter().map(|r| r.expect("entry")).collect()
    }

    fn replies_mut(&mut self) -> HashMap<&mut MapData, ReplyKey, ReplyValue> {
        HashMap::try_from(self.ebpf.map_mut(map_names::CONNTRACK_REPLY).expect("cr")).expect("type")
    }

    fn remove_reverse(&mut self, outside: Endpoint) {
        let mut map: HashMap<&mut MapData, Endpoint, Endpoint> =
            HashMap::try_from(self.ebpf.map_mut(map_names::NAT_REVERSE).expect("rev"))
                .expect("type");
        map.remove(&outside).expect("reverse entry");
    }
}

/// The reply half a masqueraded TCP flow C1:40000 → REMOTE:443 (kept port)
/// gets.
fn c1_reply_key() -> ReplyKey {
    ReplyKey::new(TCP, REMOTE.octets(), 443, UPLINK.octets(), 40000)
}

#[test]
fn a_reply_is_translated_by_its_flows_reply_half_alone() {
    require_root!();
    let mut dp = Dp::new("");
    let (rc, _) = dp.egress(&simple(C1, REMOTE, &tcp(40000, 443, SYN)));
    assert_eq!(rc, TC_OK);
    assert!(dp.replies().is_empty(), "a new flow is one insert");
    // The first reply finds the flow the long way and writes its half.
    let syn_ack = tcp(443, 40000, SYN | ACK);
    let (rc, back) = dp.ingress(&simple(REMOTE, UPLINK, &syn_ack));
    assert_eq!(rc, TC_OK);
    assert_bytes(&back, &simple(REMOTE, C1, &syn_ack), "SYN-ACK back");
    let halves = dp.replies();
    assert_eq!(halves.len(), 1);
    let (key, half) = halves[0];
    assert_eq!(key, c1_reply_key());
    assert_eq!(half.inside, Endpoint::new(TCP, C1.octets(), 40000));
    assert_eq!(half.flags, flow_flags::SEEN_IN | flow_flags::SYN_IN);
    assert_eq!((half.packets, half.bytes), (1, 40));
    // Without the mapping's reverse entry the long way cannot find the
    // flow any more: only the half can.
    dp.remove_reverse(Endpoint::new(TCP, UPLINK.octets(), 40000));
    let ack = tcp(443, 40000, ACK);
    let (rc, back) = dp.ingress(&simple(REMOTE, UPLINK, &ack));
    assert_eq!(rc, TC_OK);
    assert_bytes(&back, &simple(REMOTE, C1, &ack), "ACK back");
    let (_, flow) = dp.flows()[0];
    assert_eq!(
        flow.flags,
        flow_flags::SEEN_OUT
            | flow_flags::SYN_OUT
            | flow_flags::SEEN_IN
            | flow_flags::SYN_IN
            | flow_flags::ACK_IN,
        "the flow as userspace reads it: both halves"
    );
    assert_eq!((flow.packets_out, flow.packets_in), (1, 2));
    assert_eq!(dp.counter(Counter::ReversePackets), 2);
}

#[test]
fn a_flow_without_its_reply_half_is_found_the_long_way_and_gets_it_back() {
    require_root!();
    let mut dp = Dp::new("");
    dp.egress(&simple(C1, REMOTE, &tcp(40000, 443, SYN)));
    dp.ingress(&simple(REMOTE, UPLINK, &tcp(443, 40000, SYN | ACK)));
    // The half gone (a full map refused it, or the flow was carried over
    // from a netbpf before reply halves).
    dp.replies_mut().remove(&c1_reply_key()).expect("half");
    let ack = tcp(443, 40000, ACK);
    let (rc, back) = dp.ingress(&simple(REMOTE, UPLINK, &ack));
    assert_eq!(rc, TC_OK);
    assert_bytes(&back, &simple(REMOTE, C1, &ack), "ACK back");
    let halves = dp.replies();
    assert_eq!(halves.len(), 1, "written again");
    assert_eq!(halves[0].0, c1_reply_key());
    assert_eq!(halves[0].1.packets, 1, "and the packet recorded on it");
    assert_eq!(
        dp.flows()[0].1.packets_in,
        1,
        "the removed half's count went with it"
    );
}

#[test]
fn a_published_flow_is_found_by_its_reply_half_and_counted_as_dnat() {
    require_root!();
    let mut dp = publish_dp();
    let (rc, _) = dp.ingress(&simple(REMOTE, UPLINK, &tcp(50000, 8080, SYN)));
    assert_eq!(rc, TC_OK);
    assert!(dp.replies().is_empty(), "the opening packet: one insert");
    let (_, flow) = dp.flows()[0];
    assert_eq!(flow.packets_in, 1, "recorded on the flow itself");
    assert_ne!(flow.flags & flow_flags::SYN_IN, 0);
    let ack = tcp(50000, 8080, ACK);
    let (rc, out) = dp.ingress(&simple(REMOTE, UPLINK, &ack));
    assert_eq!(rc, TC_OK);
    assert_bytes(&out, &simple(REMOTE, C1, &tcp(50000, 4000, ACK)), "ACK in");
    let halves = dp.replies();
    assert_eq!(halves.len(), 1, "the second packet writes the half");
    let (key, half) = halves[0];
    assert_eq!(
        key,
        ReplyKey::new(TCP, REMOTE.octets(), 50000, UPLINK.octets(), 8080)
    );
    assert_eq!(half.inside, Endpoint::new(TCP, C1.octets(), 4000));
    assert_eq!(
        half.flags & flow_flags::HOW_OPENED,
        flow_flags::HOW_OPENED,
        "opened from outside, to a published port"
    );
    // The half alone translates: even with the flow's own entry gone.
    let (flow_key, _) = dp.flows()[0];
    let mut ct: HashMap<&mut MapData, FlowKey, FlowValue> =
        HashMap::try_from(dp.ebpf.map_mut(map_names::CONNTRACK).expect("ct")).expect("type");
    ct.remove(&flow_key).expect("flow");
    let (rc, out) = dp.ingress(&simple(REMOTE, UPLINK, &ack));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &out,
        &simple(REMOTE, C1, &tcp(50000, 4000, ACK)),
        "by the half",
    );
    assert_eq!(dp.counter(Counter::DnatPackets), 3);
    assert_eq!(dp.counter(Counter::ReversePackets), 0);
}

#[test]
fn a_fin_is_judged_against_the_other_halfs_acknowledgment() {
    require_root!();
    let dp = Dp::new("");
    dp.egress(&simple(C1, REMOTE, &tcp(40000, 443, SYN)));
    dp.ingress(&simple(REMOTE, UPLINK, &tcp(443, 40000, SYN | ACK)));
    // The container acknowledges up to 5000 (recorded in the flow's
    // outbound half): the remote's FIN (found by the reply half) must be
    // near it.
    dp.egress(&tcp_seq(C1, REMOTE, (40000, 443), ACK, 1, 5000));
    let far = tcp_seq(REMOTE, UPLINK, (443, 40000), FIN | ACK, 5000 + (1 << 24), 1);
    let (rc, _) = dp.ingress(&far);
    assert_eq!(rc, TC_OK, "forwarded");
    assert_eq!(dp.counter(Counter::TcpCloseIgnored), 1);
    assert_eq!(dp.flows()[0].1.flags & flow_flags::FIN_IN, 0, "state kept");
    dp.ingress(&tcp_seq(REMOTE, UPLINK, (443, 40000), FIN | ACK, 5000, 1));
    assert_ne!(dp.flows()[0].1.flags & flow_flags::FIN_IN, 0, "believed");
    assert_eq!(dp.counter(Counter::TcpCloseIgnored), 1);
}
