//! The XDP fast path (`xdp.rs` in the kernel crate): `netbpf_arp` on the
//! uplink translates and redirects packets of established inbound NAT
//! flows, and passes everything else untouched to the tc programs.
//!
//! BPF_PROG_TEST_RUN runs the XDP program on the loopback device of the
//! test thread's private namespace, with the links and neighbours of
//! `fast::fast_dp`; `nbf-in` (the containers' link) is the one device in
//! `XDP_TARGETS`. Each redirect is checked byte for byte against a frame
//! whose checksums are computed from scratch, and its flow must have been
//! touched once; each pass must leave the frame and the flow as they were.

use aya::{
    maps::{DevMapHash, MapData},
    programs::Xdp,
};

use super::{
    fast::{C1_MAC, IN_MAC, fast_dp, ifindex, ip, open_flow, ttl, with},
    *,
};

/// `XDP_REDIRECT`.
const XDP_REDIRECT: u32 = 4;

/// The uplink's XDP program, `netbpf_arp`.
pub(super) fn arp_program(dp: &mut Dp) -> &mut Xdp {
    dp.ebpf
        .program_mut(programs::ARP)
        .expect("program")
        .try_into()
        .expect("type")
}

/// [`fast_dp`] with `netbpf_arp` loaded and `nbf-in` in `XDP_TARGETS`
/// (unless `target` is false).
pub(super) fn xdp_dp(dp: Dp, neighbours: bool, target: bool) -> Dp {
    let mut dp = fast_dp(dp, neighbours);
    netbpf::loader::load_retrying(arp_program(&mut dp)).expect("verifier accepts netbpf_arp");
    if target {
        let inside = ifindex("nbf-in");
        DevMapHash::<&mut MapData>::try_from(dp.ebpf.map_mut(map_names::XDP_TARGETS).expect("map"))
            .expect("type")
            .insert(inside, inside, None, 0)
            .expect("target");
    }
    dp
}

impl Dp {
    /// Runs `netbpf_arp` (XDP) on `pkt`.
    fn xdp(&self, pkt: &[u8]) -> (u32, Vec<u8>) {
        super::xdp_of(&self.ebpf, pkt)
    }

    /// Packets recorded inbound on every flow.
    fn packets_in(&self) -> u64 {
        self.flows().iter().map(|(_, v)| v.packets_in).sum()
    }
}

/// `in_frame` must come out of XDP as `want` (C1's MAC, from the host
/// side of its link), redirected, counted once, its flow touched once.
#[track_caller]
fn assert_redirected(dp: &Dp, in_frame: &[u8], want: &[u8], what: &str) {
    let (fast, touched) = (dp.counter(Counter::XdpFastIn), dp.packets_in());
    let (rc, out) = dp.xdp(in_frame);
    assert_eq!(rc, XDP_REDIRECT, "{what}: redirected");
    assert_bytes(&out, &with(want.to_vec(), C1_MAC, IN_MAC), what);
    assert_eq!(dp.counter(Counter::XdpFastIn), fast + 1, "{what}");
    assert_eq!(dp.packets_in(), touched + 1, "{what}: flow touched");
}

/// `pkt` must pass XDP untouched, its flow too.
#[track_caller]
fn assert_passed(dp: &Dp, pkt: &[u8], what: &str) {
    let (fast, touched) = (dp.counter(Counter::XdpFastIn), dp.packets_in());
    let (rc, out) = dp.xdp(pkt);
    assert_eq!(rc, XDP_PASS, "{what}");
    assert_bytes(&out, pkt, what);
    assert_eq!(dp.counter(Counter::XdpFastIn), fast, "{what}");
    assert_eq!(dp.packets_in(), touched, "{what}: flow untouched");
}

/// A masqueraded flow C1:40000 → REMOTE:443 whose first reply tc has
/// translated: XDP finds flows by their reply half, which that first
/// reply writes (a new flow is one insert), so XDP passes it.
fn open_answered_flow(dp: &Dp) {
    open_flow(dp);
    let syn_ack = frame(REMOTE, UPLINK, &tcp(443, 40000, SYN | ACK), &ttl(64));
    assert_passed(dp, &syn_ack, "the first reply: no reply half yet");
    let (rc, _) = dp.ingress(&syn_ack);
    assert!(rc == TC_REDIRECT || rc == TC_OK, "tc translates it: {rc}");
}

#[test]
fn a_tcp_reply_to_a_masqueraded_flow_is_redirected_by_xdp() {
    require_root!();
    let dp = xdp_dp(Dp::new(""), true, true);
    open_answered_flow(&dp);
    let ack = tcp(443, 40000, ACK);
    assert_redirected(
        &dp,
        &frame(REMOTE, UPLINK, &ack, &ttl(64)),
        &frame(REMOTE, C1, &ack, &ttl(63)),
        "reverse SNAT, TCP",
    );
    assert_eq!(dp.counter(Counter::ReversePackets), 2, "tc's and XDP's");
    assert_eq!(dp.counter(Counter::XdpFastIn), 1);
    assert_eq!(dp.counter(Counter::FastPathIn), 2, "part of fast_path_in");
    // The flow saw the ACK: the same bits tc would have set.
    let (_, flow) = dp.flows()[0];
    assert_ne!(flow.flags & flow_flags::ACK_IN, 0);
    assert_ne!(flow.flags & flow_flags::SEEN_IN, 0);
}

#[test]
fn a_udp_reply_to_a_masqueraded_flow_is_redirected_by_xdp() {
    require_root!();
    let dp = xdp_dp(Dp::new(""), true, true);
    let port = dp.out_port(C1, &udp(5000, 53, b"query"));
    // The first answer writes the flow's reply half (tc).
    assert_eq!(
        dp.ingress(&frame(REMOTE, UPLINK, &udp(53, port, b"1"), &ttl(64)))
            .0,
        TC_REDIRECT
    );
    let answer = b"answer with an odd length";
    assert_redirected(
        &dp,
        &frame(REMOTE, UPLINK, &udp(53, port, answer), &ttl(64)),
        &frame(REMOTE, C1, &udp(53, 5000, answer), &ttl(63)),
        "reverse SNAT, UDP",
    );
    assert_eq!(dp.counter(Counter::ReversePackets), 2);
}

#[test]
fn a_zero_udp_checksum_stays_zero() {
    require_root!();
    let dp = xdp_dp(Dp::new(""), true, true);
    let port = dp.out_port(C1, &udp(5000, 53, b"query"));
    let none = |dport| L4::Udp {
        sport: 53,
        dport,
        payload: b"no checksum".to_vec(),
        no_checksum: true,
    };
    // The first answer writes the flow's reply half (tc).
    assert_eq!(
        dp.ingress(&frame(REMOTE, UPLINK, &none(port), &ttl(64))).0,
        TC_REDIRECT
    );
    let (_, out) = dp.xdp(&frame(REMOTE, UPLINK, &none(port), &ttl(64)));
    assert_eq!(&out[40..42], &[0, 0], "still no checksum");
    assert_redirected(
        &dp,
        &frame(REMOTE, UPLINK, &none(port), &ttl(64)),
        &frame(REMOTE, C1, &none(5000), &ttl(63)),
        "UDP without a checksum",
    );
}

#[test]
fn established_published_port_flows_are_redirected_by_xdp() {
    require_root!();
    let dp = xdp_dp(publish_dp(), true, true);
    // UDP 5353 → C1:53: the first datagram opens the flow (tc's job: XDP
    // passes it), the second finds it the long way and writes its reply
    // half (tc), the next ones go the XDP way.
    let first = frame(REMOTE, UPLINK, &udp(40001, 5353, b"query"), &ttl(64));
    assert_passed(&dp, &first, "a new flow is tc's");
    assert_eq!(dp.ingress(&first).0, TC_REDIRECT, "tc opens it");
    assert_passed(&dp, &first, "no reply half yet");
    assert_eq!(dp.ingress(&first).0, TC_REDIRECT, "tc writes the half");
    assert_redirected(
        &dp,
        &frame(REMOTE, UPLINK, &udp(40001, 5353, b"again"), &ttl(64)),
        &frame(REMOTE, C1, &udp(40001, 53, b"again"), &ttl(63)),
        "DNAT, UDP",
    );
    // TCP 8080 → C1:4000: the SYN is tc's, the rest of the flow XDP's.
    let syn = frame(REMOTE, UPLINK, &tcp(40002, 8080, SYN), &ttl(64));
    assert_passed(&dp, &syn, "an opening SYN is tc's");
    assert_eq!(dp.ingress(&syn).0, TC_REDIRECT);
    let first_ack = frame(REMOTE, UPLINK, &tcp(40002, 8080, ACK), &ttl(64));
    assert_eq!(dp.ingress(&first_ack).0, TC_REDIRECT, "tc writes the half");
    let ack = L4::Tcp {
        sport: 40002,
        dport: 8080,
        flags: ACK,
        payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
    };
    let want = L4::Tcp {
        sport: 40002,
        dport: 4000,
        flags: ACK,
        payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
    };
    assert_redirected(
        &dp,
        &frame(REMOTE, UPLINK, &ack, &ttl(64)),
        &frame(REMOTE, C1, &want, &ttl(63)),
        "DNAT, TCP",
    );
    assert_eq!(
        dp.counter(Counter::DnatPackets),
        6,
        "four by tc, two by XDP"
    );
    assert_eq!(dp.counter(Counter::XdpFastIn), 2);
}

#[test]
fn what_xdp_does_not_take_passes_untouched() {
    require_root!();
    let dp = xdp_dp(Dp::new(""), true, true);
    // A container link with a small MTU (set before tc's first reply
    // remembers the hop with its MTU in FAST_HOPS).
    ip("link set nbf-in mtu 576");
    open_answered_flow(&dp);
    let reply = tcp(443, 40000, ACK);
    assert_passed(
        &dp,
        &frame(REMOTE, UPLINK, &tcp(443, 41000, ACK), &ttl(64)),
        "no conntrack entry",
    );
    assert_passed(
        &dp,
        &frame(REMOTE, UPLINK, &reply, &ttl(1)),
        "TTL 1: the kernel sends time exceeded",
    );
    assert_eq!(dp.counter(Counter::XdpPassTtl), 1);
    assert_passed(
        &dp,
        &frame(
            REMOTE,
            UPLINK,
            &reply,
            &IpOpts {
                frag: 0x2000,
                ttl: Some(64),
                ..Default::default()
            },
        ),
        "a first fragment",
    );
    assert_passed(
        &dp,
        &frame(
            REMOTE,
            UPLINK,
            &L4::Raw {
                proto: TCP,
                bytes: vec![0; 24],
            },
            &IpOpts {
                frag: 3,
                ttl: Some(64),
                ..Default::default()
            },
        ),
        "a later fragment",
    );
    assert_passed(
        &dp,
        &frame(
            REMOTE,
            UPLINK,
            &reply,
            &IpOpts {
                options: vec![1, 1, 1, 0],
                ttl: Some(64),
                ..Default::default()
            },
        ),
        "IP options",
    );
    // ICMP: an echo reply to a mapping, and an error about the flow.
    assert_eq!(dp.egress(&simple(C1, REMOTE, &echo(false, 7, 1))).0, TC_OK);
    assert_passed(
        &dp,
        &frame(REMOTE, UPLINK, &echo(true, 7, 1), &ttl(64)),
        "ICMP echo reply",
    );
    let quoted = ip_packet(UPLINK, REMOTE, &tcp(40000, 443, ACK));
    assert_passed(
        &dp,
        &frame(
            REMOTE,
            UPLINK,
            &icmp_error(3, 3, [0; 4], &quote(&quoted, 28)),
            &ttl(64),
        ),
        "ICMP error",
    );
    // An opening SYN on an existing tuple may restart the flow: tc's.
    assert_passed(
        &dp,
        &frame(REMOTE, UPLINK, &tcp(443, 40000, SYN), &ttl(64)),
        "SYN",
    );
    // A checksum left to the device (the pseudo header's sum only, as a
    // sender with offload writes it): only tc sees the skb's state.
    let mut partial = frame(REMOTE, UPLINK, &reply, &ttl(64));
    let seed = netbpf_common::pseudo_header_seed(REMOTE.octets(), UPLINK.octets(), TCP, 20);
    partial[50..52].copy_from_slice(&seed);
    assert_passed(&dp, &partial, "a CHECKSUM_PARTIAL seed");
    assert_eq!(dp.counter(Counter::XdpPassChecksum), 1);
    // Larger than the container link's MTU: the kernel fragments it or
    // answers frag-needed.
    let big = L4::Tcp {
        sport: 443,
        dport: 40000,
        flags: ACK,
        payload: vec![7; 1000],
    };
    assert_passed(&dp, &frame(REMOTE, UPLINK, &big, &ttl(64)), "over the MTU");
    assert_eq!(dp.counter(Counter::XdpPassMtu), 1);
    assert_eq!(dp.counter(Counter::XdpFastIn), 0);
    // tc still does all of it: the established reply goes its fast way.
    assert_eq!(
        dp.ingress(&frame(REMOTE, UPLINK, &reply, &ttl(64))).0,
        TC_REDIRECT
    );
}

#[test]
fn without_a_neighbour_or_a_target_xdp_passes() {
    require_root!();
    let dp = xdp_dp(Dp::new(""), false, true);
    open_answered_flow(&dp);
    let reply = frame(REMOTE, UPLINK, &tcp(443, 40000, ACK), &ttl(64));
    assert_passed(&dp, &reply, "no neighbour");
    assert_eq!(dp.counter(Counter::XdpPassNoNeighbour), 1);

    let dp = xdp_dp(Dp::new(""), true, false);
    open_answered_flow(&dp);
    assert_passed(&dp, &reply, "nbf-in is not in XDP_TARGETS");
    assert_eq!(dp.counter(Counter::XdpPassNotForwarded), 1);
}

#[test]
fn xdp_off_or_fast_path_off_passes_everything() {
    require_root!();
    for config in [
        "[datapath]\nxdp = false\n",
        "[datapath]\nfast_path = false\n",
    ] {
        let dp = xdp_dp(Dp::new(config), true, true);
        open_flow(&dp);
        let reply = frame(REMOTE, UPLINK, &tcp(443, 40000, ACK), &ttl(64));
        assert_passed(&dp, &reply, config);
        for c in Counter::ALL {
            if c.name().starts_with("xdp_") {
                assert_eq!(dp.counter(c), 0, "{config}: {}", c.name());
            }
        }
    }
}
