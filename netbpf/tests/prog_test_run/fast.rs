//! The fast path (`fast.rs`): which packets are redirected, to where, with
//! which bytes, and which go to the stack, counted by reason.
//!
//! BPF_PROG_TEST_RUN runs a tc program on the loopback device (ifindex 1)
//! of the test thread's private namespace ([`Dp::new`] makes it), so that
//! is the interface packets "arrive" on. Each test builds, in that
//! namespace only, what the FIB needs to answer: a veth pair `nbf-in` /
//! `nbf-inp` leading to the containers (10.77.0.0/24) and one `nbf-up` /
//! `nbf-upp` leading to the outside (198.51.100.0/24), forwarding on, and
//! permanent neighbours for C1 and REMOTE.

use aya::maps::{Array, MapData};
use netbpf_common::RouteUplink;

use super::*;

/// The container's MAC, as the neighbour table knows it.
pub(super) const C1_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x02];
/// The outside host's MAC.
pub(super) const REMOTE_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x07];
/// The host side of the containers' link.
pub(super) const IN_MAC: [u8; 6] = [0x02, 0x1a, 0, 0, 0, 0x01];
/// The host side of the uplink.
pub(super) const UP_MAC: [u8; 6] = [0x02, 0x0b, 0, 0, 0, 0x01];

/// Runs `ip` in the test thread's network namespace.
#[track_caller]
pub(super) fn ip(args: &str) {
    in_test_netns("ip", &args.split_whitespace().collect::<Vec<_>>());
}

/// The ifindex of `name` in the test thread's namespace (a socket is
/// made in the calling thread's namespace).
pub(super) fn ifindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).expect("ifindex")
}

/// `dp` (made in this thread: its namespace is the test's) with the FIB
/// sending 10.77.0.0/24 to `nbf-in` and REMOTE to `nbf-up`; the
/// neighbours are known unless `neighbours` is false.
pub(super) fn fast_dp(mut dp: Dp, neighbours: bool) -> Dp {
    ip("link set lo up");
    for (a, b, mac, addr) in [
        ("nbf-in", "nbf-inp", IN_MAC, "10.77.0.1/24"),
        ("nbf-up", "nbf-upp", UP_MAC, "198.51.100.1/24"),
    ] {
        ip(&format!("link add {a} type veth peer name {b}"));
        ip(&format!("link set {a} address {}", mac_text(mac)));
        ip(&format!("addr add {addr} dev {a}"));
        ip(&format!("link set {a} up"));
        ip(&format!("link set {b} up"));
    }
    if neighbours {
        ip(&format!(
            "neigh add {C1} lladdr {} dev nbf-in nud permanent",
            mac_text(C1_MAC)
        ));
        ip(&format!(
            "neigh add {REMOTE} lladdr {} dev nbf-up nud permanent",
            mac_text(REMOTE_MAC)
        ));
    }
    in_test_netns("sysctl", &["-qw", "net.ipv4.conf.all.forwarding=1"]);
    let uplink = ifindex("nbf-up");
    Array::<&mut MapData, RouteUplink>::try_from(
        dp.ebpf.map_mut(map_names::ROUTE_UPLINK).expect("map"),
    )
    .expect("type")
    .set(
        0,
        &RouteUplink {
            ifindex: uplink,
            mac: UP_MAC,
            _pad: [0; 2],
        },
        0,
    )
    .expect("uplink");
    dp
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// `frame` with these MACs and TTL.
pub(super) fn with(f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = f;
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

pub(super) fn ttl(n: u8) -> IpOpts {
    IpOpts {
        ttl: Some(n),
        ..Default::default()
    }
}

/// Opens a flow C1:40000 → REMOTE:443 through the uplink's egress program
/// (the way the stack would send it).
pub(super) fn open_flow(dp: &Dp) {
    let (rc, _) = dp.egress(&simple(C1, REMOTE, &tcp(40000, 443, SYN)));
    assert_eq!(rc, TC_OK);
}

/// An inbound packet `l4` with TTL `hops` to the flow's outside port: it
/// must be translated to C1 and left to the stack (`TC_OK`), TTL and MACs
/// as they were; `why` says why the fast path may not take it.
#[track_caller]
fn assert_translated_only(dp: &Dp, l4: &L4, hops: u8, why: &str) {
    let (rc, out) = dp.ingress(&frame(REMOTE, UPLINK, l4, &ttl(hops)));
    assert_eq!(rc, TC_OK, "{why}");
    assert_bytes(&out, &frame(REMOTE, C1, l4, &ttl(hops)), "translated only");
}

/// `netbpf_fast_out` must leave `pkt` untouched for the stack (`TC_NEXT`).
#[track_caller]
fn assert_untouched_out(dp: &Dp, pkt: &[u8], what: &str) {
    let (rc, out) = dp.run(programs::FAST_OUT, pkt);
    assert_eq!(rc, TC_NEXT, "{what}");
    assert_bytes(&out, pkt, what);
}

#[test]
fn a_reply_goes_straight_to_the_containers_link() {
    require_root!();
    let dp = fast_dp(Dp::new(""), true);
    open_flow(&dp);
    let syn_ack = tcp(443, 40000, SYN | ACK);
    let (rc, out) = dp.ingress(&frame(REMOTE, UPLINK, &syn_ack, &ttl(64)));
    assert_eq!(rc, TC_REDIRECT, "redirected to the containers' link");
    // Translated, one hop older, addressed to the container's MAC from the
    // host side of its link; checksums recomputed from scratch.
    let want = with(frame(REMOTE, C1, &syn_ack, &ttl(63)), C1_MAC, IN_MAC);
    assert_bytes(&out, &want, "SYN-ACK on the fast path");
    assert_eq!(dp.counter(Counter::FastPathIn), 1);
    assert_eq!(dp.counter(Counter::ReversePackets), 1);
}

#[test]
fn a_published_port_goes_straight_to_the_container() {
    require_root!();
    let dp = fast_dp(publish_dp(), true);
    let q = udp(40001, 5353, b"query");
    let (rc, out) = dp.ingress(&frame(REMOTE, UPLINK, &q, &ttl(64)));
    assert_eq!(rc, TC_REDIRECT);
    let want = with(
        frame(REMOTE, C1, &udp(40001, 53, b"query"), &ttl(63)),
        C1_MAC,
        IN_MAC,
    );
    assert_bytes(&out, &want, "DNAT on the fast path");
    assert_eq!(dp.counter(Counter::FastPathIn), 1);
    assert_eq!(dp.counter(Counter::DnatPackets), 1);
}

#[test]
fn a_container_packet_is_masqueraded_and_sent_straight_to_the_uplink() {
    require_root!();
    let dp = fast_dp(Dp::new(""), true);
    let syn = tcp(40000, 443, SYN);
    let (rc, out) = dp.run(programs::FAST_OUT, &frame(C1, REMOTE, &syn, &ttl(64)));
    assert_eq!(rc, TC_REDIRECT, "redirected to the uplink");
    let want = with(frame(UPLINK, REMOTE, &syn, &ttl(63)), REMOTE_MAC, UP_MAC);
    assert_bytes(&out, &want, "SYN on the fast path");
    assert_eq!(dp.counter(Counter::FastPathOut), 1);
    assert_eq!(dp.counter(Counter::SnatPackets), 1);
    // The uplink's egress program then sees a packet from the host's
    // address: not a NAT flow, passed untouched.
    let (rc, again) = dp.egress(&out);
    assert_eq!(rc, TC_NEXT);
    assert_bytes(&again, &out, "not translated twice");
    assert_eq!(dp.counter(Counter::SnatPackets), 1);
    // The reply comes back the fast way too.
    let (rc, _) = dp.ingress(&frame(
        REMOTE,
        UPLINK,
        &tcp(443, 40000, SYN | ACK),
        &ttl(64),
    ));
    assert_eq!(rc, TC_REDIRECT);
}

#[test]
fn without_a_neighbour_packets_take_the_stack_translated() {
    require_root!();
    let dp = fast_dp(Dp::new(""), false);
    open_flow(&dp);
    let syn_ack = tcp(443, 40000, SYN | ACK);
    assert_translated_only(&dp, &syn_ack, 64, "the stack resolves the neighbour");
    assert_eq!(dp.counter(Counter::FastPathNoNeighbour), 1);
    assert_eq!(dp.counter(Counter::FastPathIn), 0);
    // Outbound: left untouched for the stack and the uplink's egress.
    let syn = frame(C1, REMOTE, &tcp(40002, 443, SYN), &ttl(64));
    assert_untouched_out(&dp, &syn, "untouched");
    assert_eq!(dp.counter(Counter::FastPathNoNeighbour), 2);
}

#[test]
fn ttl_one_and_oversized_packets_take_the_stack() {
    require_root!();
    let dp = fast_dp(Dp::new(""), true);
    open_flow(&dp);
    let syn_ack = tcp(443, 40000, SYN | ACK);
    assert_translated_only(&dp, &syn_ack, 1, "the kernel sends time exceeded");
    assert_eq!(dp.counter(Counter::FastPathTtl), 1);

    ip("link set nbf-in mtu 576");
    let ack = L4::Tcp {
        sport: 443,
        dport: 40000,
        flags: ACK,
        payload: vec![7; 1000],
    };
    assert_translated_only(
        &dp,
        &ack,
        64,
        "the kernel fragments it or answers frag-needed",
    );
    assert_eq!(dp.counter(Counter::FastPathMtu), 1);
    assert_eq!(dp.counter(Counter::FastPathIn), 0);
}

#[test]
fn fragments_and_icmp_errors_from_containers_take_the_stack() {
    require_root!();
    let dp = fast_dp(Dp::new(""), true);
    let first = frame(
        C1,
        REMOTE,
        &udp(40003, 53, &[1; 64]),
        &IpOpts {
            frag: 0x2000,
            ttl: Some(64),
            ..Default::default()
        },
    );
    assert_untouched_out(&dp, &first, "first fragment untouched");
    assert_eq!(dp.counter(Counter::FastPathFragment), 1);
    let quoted = ip_packet(REMOTE, C1, &udp(53, 40003, b"x"));
    let err = frame(
        C1,
        REMOTE,
        &icmp_error(3, 3, [0; 4], &quote(&quoted, 28)),
        &ttl(64),
    );
    assert_untouched_out(&dp, &err, "ICMP error untouched");
    assert_eq!(dp.counter(Counter::FastPathIcmpError), 1);
    assert_eq!(dp.counter(Counter::FastPathOut), 0);
}

#[test]
fn fast_path_off_sends_everything_through_the_stack() {
    require_root!();
    let dp = fast_dp(Dp::new("[datapath]\nfast_path = false\n"), true);
    let syn = frame(C1, REMOTE, &tcp(40000, 443, SYN), &ttl(64));
    assert_untouched_out(&dp, &syn, "untouched");
    open_flow(&dp);
    assert_translated_only(&dp, &tcp(443, 40000, SYN | ACK), 64, "fast_path = false");
    for c in Counter::ALL {
        if c.name().starts_with("fast_path") {
            assert_eq!(dp.counter(c), 0, "{}", c.name());
        }
    }
}

#[test]
fn a_remembered_hop_serves_later_packets_and_larger_ones_ask_again() {
    require_root!();
    let dp = fast_dp(Dp::new(""), true);
    ip("link set nbf-in mtu 576");
    open_flow(&dp);
    let ack = tcp(443, 40000, ACK);
    let (rc, _) = dp.ingress(&frame(REMOTE, UPLINK, &ack, &ttl(64)));
    assert_eq!(rc, TC_REDIRECT, "asked the FIB, remembered the hop");
    // Larger than the remembered MTU: the FIB is asked again, and says so.
    let big = L4::Tcp {
        sport: 443,
        dport: 40000,
        flags: ACK,
        payload: vec![7; 1000],
    };
    let (rc, _) = dp.ingress(&frame(REMOTE, UPLINK, &big, &ttl(64)));
    assert_eq!(rc, TC_OK);
    assert_eq!(dp.counter(Counter::FastPathMtu), 1);
    // The neighbour gone from the kernel: the remembered hop still serves
    // (for about a second), with the MAC it had.
    ip(&format!("neigh del {C1} dev nbf-in"));
    let (rc, out) = dp.ingress(&frame(REMOTE, UPLINK, &ack, &ttl(64)));
    assert_eq!(rc, TC_REDIRECT, "from the cache");
    assert_bytes(
        &out,
        &with(frame(REMOTE, C1, &ack, &ttl(63)), C1_MAC, IN_MAC),
        "remembered MACs",
    );
    assert_eq!(dp.counter(Counter::FastPathIn), 2);
    assert_eq!(dp.counter(Counter::FastPathNoNeighbour), 0);
}
