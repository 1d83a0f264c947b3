//! In-kernel tests: the real programs run through BPF_PROG_TEST_RUN on
//! packets built from scratch; every test asserts the verdict and every
//! byte of the packet that comes out (checksums are recomputed from scratch
//! for the expected packet, so an incremental update that is off by one bit
//! fails). Needs root and a kernel with BPF_PROG_TEST_RUN for tc programs
//! (4.12+) and tcx-era helpers (tested on 6.18).

mod common;

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use common::*;
use netbpf::{
    config::Config,
    datapath::{self, programs},
};
use netbpf_common::{Counter, Endpoint, FlowKey, FlowValue, flow_flags, map_names};

const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const C1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const C2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 9, 9);

/// tc verdicts as BPF_PROG_TEST_RUN reports them.
const TC_OK: u32 = 0;
const TC_SHOT: u32 = 2;
const TC_NEXT: u32 = u32::MAX; // TC_ACT_UNSPEC (-1): not ours, pass on

const BASE_CONFIG: &str = r#"
[uplink]
interface = "eth0"
address = "203.0.113.1"

[[masquerade]]
source = "10.77.0.0/24"
"#;

/// A loaded (not attached) datapath.
struct Dp {
    ebpf: Ebpf,
}

impl Dp {
    fn new(extra: &str) -> Dp {
        // BPF_PROG_TEST_RUN runs on the loopback device of the calling
        // thread's network namespace, and a program that re-injects packets
        // (held fragments, clone_redirect) would hand them to that
        // namespace's stack. Give each test thread a private, empty one so
        // nothing can ever reach the host's network.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("private netns");
        let config = Config::from_toml(&format!("{BASE_CONFIG}{extra}")).expect("config");
        let mut ebpf = datapath::load(&config).expect("load object");
        datapath::fill_masquerade(&mut ebpf, &config, UPLINK).expect("fill rules");
        for name in [programs::EGRESS, programs::INGRESS, programs::INSIDE] {
            let p: &mut SchedClassifier = ebpf
                .program_mut(name)
                .expect("program")
                .try_into()
                .expect("type");
            p.load().expect("verifier accepts the program");
        }
        Dp { ebpf }
    }

    /// Runs a program, or `None` if BPF_PROG_TEST_RUN refuses the input
    /// (it rejects some runt frames before any program sees them).
    fn try_run(&self, prog: &str, pkt: &[u8]) -> Option<(u32, Vec<u8>)> {
        let p: &SchedClassifier = self
            .ebpf
            .program(prog)
            .expect("program")
            .try_into()
            .expect("type");
        let mut out = vec![0u8; pkt.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        opts.data_out = Some(&mut out);
        let r = p.test_run(opts).ok()?;
        out.truncate(r.data_size_out as usize);
        Some((r.return_value, out))
    }

    fn run(&self, prog: &str, pkt: &[u8]) -> (u32, Vec<u8>) {
        let p: &SchedClassifier = self
            .ebpf
            .program(prog)
            .expect("program")
            .try_into()
            .expect("type");
        let mut out = vec![0u8; pkt.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        opts.data_out = Some(&mut out);
        let r = p
            .test_run(opts)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} bytes {pkt:02x?}: {e}", pkt.len()));
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn egress(&self, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.run(programs::EGRESS, pkt)
    }

    fn ingress(&self, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.run(programs::INGRESS, pkt)
    }

    fn counter(&self, c: Counter) -> u64 {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(map_names::STATS).expect("stats")).expect("type");
        map.get(&(c as u32), 0).expect("read").iter().sum()
    }

    fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        let map: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map(map_names::CONNTRACK).expect("ct")).expect("type");
        map.iter().map(|r| r.expect("entry")).collect()
    }

    fn mappings(&self) -> usize {
        let map: HashMap<&MapData, Endpoint, netbpf_common::MappingValue> =
            HashMap::try_from(self.ebpf.map(map_names::NAT_MAPPINGS).expect("m")).expect("type");
        map.keys().count()
    }

    /// Sends `l4` out from `src` and returns the outside port it got.
    #[track_caller]
    fn out_port(&self, src: Ipv4Addr, l4: &L4) -> u16 {
        let (rc, out) = self.egress(&simple(src, REMOTE, l4));
        assert_eq!(rc, TC_OK, "egress verdict");
        assert_eq!(&out[26..30], &UPLINK.octets(), "source translated");
        u16::from_be_bytes([out[34], out[35]])
    }
}

/// Port-rewritten copy of a segment description.
fn with_sport(l4: &L4, port: u16) -> L4 {
    match l4.clone() {
        L4::Tcp {
            dport,
            flags,
            payload,
            ..
        } => L4::Tcp {
            sport: port,
            dport,
            flags,
            payload,
        },
        L4::Udp {
            dport,
            payload,
            no_checksum,
            ..
        } => L4::Udp {
            sport: port,
            dport,
            payload,
            no_checksum,
        },
        L4::IcmpEcho {
            reply,
            seq,
            payload,
            ..
        } => L4::IcmpEcho {
            reply,
            id: port,
            seq,
            payload,
        },
        other => other,
    }
}

#[test]
fn tcp_syn_out_and_syn_ack_back() {
    if !require_root("tcp_syn_out_and_syn_ack_back") {
        return;
    }
    let dp = Dp::new("");
    let syn = tcp(40000, 443, SYN);
    let (rc, out) = dp.egress(&simple(C1, REMOTE, &syn));
    assert_eq!(rc, TC_OK);
    // Port 40000 is free and in its class: kept (port preservation).
    assert_bytes(&out, &simple(UPLINK, REMOTE, &syn), "SYN out");

    let syn_ack = tcp(443, 40000, SYN | ACK);
    let (rc, back) = dp.ingress(&simple(REMOTE, UPLINK, &syn_ack));
    assert_eq!(rc, TC_OK);
    assert_bytes(&back, &simple(REMOTE, C1, &syn_ack), "SYN-ACK back");

    let flows = dp.flows();
    assert_eq!(flows.len(), 1);
    let (k, v) = flows[0];
    assert_eq!(
        k,
        FlowKey::new(TCP, C1.octets(), 40000, REMOTE.octets(), 443)
    );
    assert_eq!((v.outside_addr, v.outside_port), (UPLINK.octets(), 40000));
    let want =
        flow_flags::SEEN_OUT | flow_flags::SYN_OUT | flow_flags::SEEN_IN | flow_flags::SYN_IN;
    assert_eq!(v.flags, want);
    assert_eq!((v.packets_out, v.packets_in), (1, 1));
    assert_eq!(v.bytes_out, 40);
    assert_eq!(dp.counter(Counter::SnatPackets), 1);
    assert_eq!(dp.counter(Counter::ReversePackets), 1);
}

#[test]
fn tcp_with_payload_and_ip_options() {
    if !require_root("tcp_with_payload_and_ip_options") {
        return;
    }
    let dp = Dp::new("");
    // Record-route-ish option bytes (NOP padding) make IHL 6.
    let opts = IpOpts {
        options: vec![1, 1, 1, 0],
        ..Default::default()
    };
    let seg = L4::Tcp {
        sport: 5555,
        dport: 80,
        flags: ACK,
        payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
    };
    let (rc, out) = dp.egress(&frame(C1, REMOTE, &seg, &opts));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &out,
        &frame(UPLINK, REMOTE, &seg, &opts),
        "TCP with options out",
    );
}

#[test]
fn udp_out_and_back() {
    if !require_root("udp_out_and_back") {
        return;
    }
    let dp = Dp::new("");
    let q = udp(53000, 53, b"query");
    let (rc, out) = dp.egress(&simple(C1, REMOTE, &q));
    assert_eq!(rc, TC_OK);
    assert_bytes(&out, &simple(UPLINK, REMOTE, &q), "UDP out");
    let a = udp(53, 53000, b"answer!");
    let (rc, back) = dp.ingress(&simple(REMOTE, UPLINK, &a));
    assert_eq!(rc, TC_OK);
    assert_bytes(&back, &simple(REMOTE, C1, &a), "UDP back");
}

#[test]
fn udp_zero_checksum_stays_zero() {
    if !require_root("udp_zero_checksum_stays_zero") {
        return;
    }
    let dp = Dp::new("");
    let q = L4::Udp {
        sport: 1234,
        dport: 4789,
        payload: b"no csum".to_vec(),
        no_checksum: true,
    };
    let (rc, out) = dp.egress(&simple(C1, REMOTE, &q));
    assert_eq!(rc, TC_OK);
    assert_bytes(&out, &simple(UPLINK, REMOTE, &q), "UDP without checksum");
    assert_eq!(&out[40..42], &[0, 0]);
}

#[test]
fn udp_port_change_is_byte_exact() {
    if !require_root("udp_port_change_is_byte_exact") {
        return;
    }
    let dp = Dp::new("");
    // Both containers use source port 5000 to the same destination: the
    // second gets another port, and its rewrite must be exact too.
    let q = udp(5000, 3478, b"binding request");
    let p1 = dp.out_port(C1, &q);
    assert_eq!(p1, 5000);
    let (rc, out) = dp.egress(&simple(C2, REMOTE, &q));
    assert_eq!(rc, TC_OK);
    let p2 = u16::from_be_bytes([out[34], out[35]]);
    assert_ne!(p2, 5000, "no port overloading (RFC 4787 REQ-3)");
    assert!(p2 >= 1024, "port class kept (RFC 4787 REQ-3a): {p2}");
    assert_bytes(
        &out,
        &simple(UPLINK, REMOTE, &with_sport(&q, p2)),
        "UDP re-ported",
    );
    // Replies reach the right container.
    let (_, b1) = dp.ingress(&simple(REMOTE, UPLINK, &udp(3478, p1, b"r1")));
    assert_bytes(
        &b1,
        &simple(REMOTE, C1, &udp(3478, 5000, b"r1")),
        "reply to c1",
    );
    let (_, b2) = dp.ingress(&simple(REMOTE, UPLINK, &udp(3478, p2, b"r2")));
    assert_bytes(
        &b2,
        &simple(REMOTE, C2, &udp(3478, 5000, b"r2")),
        "reply to c2",
    );
}

#[test]
fn tcp_same_source_port_two_containers_get_two_outside_ports() {
    if !require_root("tcp_same_source_port_two_containers_get_two_outside_ports") {
        return;
    }
    let dp = Dp::new("");
    let syn = tcp(33333, 443, SYN);
    let p1 = dp.out_port(C1, &syn);
    let (rc, out) = dp.egress(&simple(C2, REMOTE, &syn));
    assert_eq!(rc, TC_OK);
    let p2 = u16::from_be_bytes([out[34], out[35]]);
    assert_ne!(p1, p2);
    assert_bytes(
        &out,
        &simple(UPLINK, REMOTE, &with_sport(&syn, p2)),
        "second SYN",
    );
    assert_eq!(dp.counter(Counter::MappingsCreated), 2);
}

#[test]
fn icmp_echo_out_and_back() {
    if !require_root("icmp_echo_out_and_back") {
        return;
    }
    let dp = Dp::new("");
    let req = echo(false, 0x1d2c, 1);
    let (rc, out) = dp.egress(&simple(C1, REMOTE, &req));
    assert_eq!(rc, TC_OK);
    assert_bytes(&out, &simple(UPLINK, REMOTE, &req), "echo out");
    // The same id from another container is re-mapped, with the ICMP
    // checksum updated.
    let (rc, out2) = dp.egress(&simple(C2, REMOTE, &req));
    assert_eq!(rc, TC_OK);
    let id2 = u16::from_be_bytes([out2[38], out2[39]]);
    assert_ne!(id2, 0x1d2c);
    assert_bytes(
        &out2,
        &simple(UPLINK, REMOTE, &echo(false, id2, 1)),
        "echo out, new id",
    );
    let (rc, back) = dp.ingress(&simple(REMOTE, UPLINK, &echo(true, id2, 1)));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &back,
        &simple(REMOTE, C2, &echo(true, 0x1d2c, 1)),
        "echo reply to c2",
    );
}

#[test]
fn traffic_outside_the_masquerade_cidr_is_untouched() {
    if !require_root("traffic_outside_the_masquerade_cidr_is_untouched") {
        return;
    }
    let dp = Dp::new("");
    for l4 in [tcp(1000, 80, SYN), udp(1000, 53, b"x"), echo(false, 7, 1)] {
        let pkt = simple(OTHER, REMOTE, &l4);
        let (rc, out) = dp.egress(&pkt);
        assert_eq!(rc, TC_NEXT);
        assert_bytes(&out, &pkt, "untouched");
    }
    // Inbound to a port with no mapping: the host's own traffic, untouched.
    let pkt = simple(REMOTE, UPLINK, &tcp(443, 41000, SYN | ACK));
    let (rc, out) = dp.ingress(&pkt);
    assert_eq!(rc, TC_NEXT);
    assert_bytes(&out, &pkt, "inbound without mapping");
    assert_eq!(dp.counter(Counter::Passed), 4);
    assert!(dp.flows().is_empty());
}

#[test]
fn exhausted_port_range_drops_and_counts() {
    if !require_root("exhausted_port_range_drops_and_counts") {
        return;
    }
    let dp = Dp::new("ports = \"40000-40000\"\n");
    let first = udp(1111, 53, b"a");
    let (rc, out) = dp.egress(&simple(C1, REMOTE, &first));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &out,
        &simple(UPLINK, REMOTE, &with_sport(&first, 40000)),
        "first gets the port",
    );
    // The same inside endpoint to another destination reuses its mapping.
    let other_dst = Ipv4Addr::new(198, 51, 100, 8);
    let (rc, out) = dp.egress(&simple(C1, other_dst, &first));
    assert_eq!(rc, TC_OK);
    assert_eq!(
        u16::from_be_bytes([out[34], out[35]]),
        40000,
        "endpoint-independent mapping"
    );
    // A second inside endpoint finds the range full: dropped, never leaked.
    let second = udp(2222, 53, b"b");
    let pkt = simple(C2, REMOTE, &second);
    let (rc, out) = dp.egress(&pkt);
    assert_eq!(rc, TC_SHOT);
    assert_bytes(&out, &pkt, "dropped packet not rewritten");
    assert_eq!(dp.counter(Counter::DropPortExhausted), 1);
    assert_eq!(dp.mappings(), 1);
    // A reply for the live mapping still goes to the first endpoint.
    let (rc, back) = dp.ingress(&simple(REMOTE, UPLINK, &udp(53, 40000, b"r")));
    assert_eq!(rc, TC_OK);
    assert_bytes(&back, &simple(REMOTE, C1, &udp(53, 1111, b"r")), "reply");
}

#[test]
fn endpoint_independent_filtering() {
    if !require_root("endpoint_independent_filtering") {
        return;
    }
    let dp = Dp::new("");
    let p = dp.out_port(C1, &udp(6000, 3478, b"stun"));
    // Another remote may send to the mapping (RFC 4787 REQ-8, EIF).
    let stranger = Ipv4Addr::new(198, 51, 100, 99);
    let (rc, back) = dp.ingress(&simple(stranger, UPLINK, &udp(9999, p, b"hi")));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &back,
        &simple(stranger, C1, &udp(9999, 6000, b"hi")),
        "EIF delivery",
    );
    // TCP from a stranger needs an opening SYN; anything else is dropped.
    let tp = dp.out_port(C1, &tcp(6001, 443, SYN));
    let (rc, _) = dp.ingress(&simple(stranger, UPLINK, &tcp(80, tp, ACK)));
    assert_eq!(rc, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropTcpNoFlow), 1);
    let (rc, back) = dp.ingress(&simple(stranger, UPLINK, &tcp(80, tp, SYN)));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &back,
        &simple(stranger, C1, &tcp(80, 6001, SYN)),
        "inbound SYN",
    );
}

#[test]
fn untranslatable_packets_from_the_cidr_are_dropped_not_leaked() {
    if !require_root("untranslatable_packets_from_the_cidr_are_dropped_not_leaked") {
        return;
    }
    let dp = Dp::new("");
    // A non-first fragment whose first fragment was never seen.
    let frag = frame(
        C1,
        REMOTE,
        &L4::Raw {
            proto: UDP,
            bytes: vec![0x55; 16],
        },
        &IpOpts {
            frag: 0x0003,
            ..Default::default()
        },
    );
    assert_eq!(dp.egress(&frag).0, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropFragment), 1);
    // A protocol netbpf does not translate (GRE).
    let gre = simple(
        C1,
        REMOTE,
        &L4::Raw {
            proto: 47,
            bytes: vec![0; 8],
        },
    );
    assert_eq!(dp.egress(&gre).0, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropUnsupportedProto), 1);
    // An ICMP query type netbpf does not translate (timestamp request).
    let timestamp = simple(
        C1,
        REMOTE,
        &L4::Raw {
            proto: ICMP,
            bytes: vec![13, 0, 0xf2, 0xff, 0, 0, 0, 0],
        },
    );
    assert_eq!(dp.egress(&timestamp).0, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropUnsupportedIcmp), 1);
    // An ICMP error whose quoted packet is cut short: cannot be matched.
    let unreach = simple(
        C1,
        REMOTE,
        &L4::Raw {
            proto: ICMP,
            bytes: vec![3, 3, 0xfc, 0xfc, 0, 0, 0, 0],
        },
    );
    assert_eq!(dp.egress(&unreach).0, TC_SHOT);
    // A truncated TCP header (IP says 20 bytes of TCP, only 10 present).
    let mut short = simple(C1, REMOTE, &tcp(1, 2, SYN));
    short.truncate(14 + 20 + 10);
    assert_eq!(dp.egress(&short).0, TC_SHOT);
    // A TCP header whose data offset points past the packet.
    let mut bad_doff = simple(C1, REMOTE, &tcp(1, 2, SYN));
    bad_doff[14 + 20 + 12] = 0xf0;
    assert_eq!(dp.egress(&bad_doff).0, TC_SHOT);
    // IHL below 5.
    let mut bad_ihl = simple(C1, REMOTE, &tcp(1, 2, SYN));
    bad_ihl[14] = 0x44;
    assert_eq!(dp.egress(&bad_ihl).0, TC_SHOT);
    // (The truncated packet is short of its IP total length: malformed IP.)
    assert_eq!(dp.counter(Counter::DropMalformedIp), 2);
    assert!(dp.counter(Counter::DropMalformedL4) >= 1);
    assert!(dp.flows().is_empty(), "nothing half-created");
    assert_eq!(dp.counter(Counter::SnatPackets), 0);
}

#[test]
fn tcp_flags_track_close_and_reset() {
    if !require_root("tcp_flags_track_close_and_reset") {
        return;
    }
    let dp = Dp::new("");
    let p = dp.out_port(C1, &tcp(7000, 443, SYN));
    dp.ingress(&simple(REMOTE, UPLINK, &tcp(443, p, SYN | ACK)));
    dp.egress(&simple(C1, REMOTE, &tcp(7000, 443, FIN | ACK)));
    dp.ingress(&simple(REMOTE, UPLINK, &tcp(443, p, FIN | ACK)));
    let (_, v) = dp.flows()[0];
    assert_ne!(v.flags & flow_flags::FIN_OUT, 0);
    assert_ne!(v.flags & flow_flags::FIN_IN, 0);
    // A new SYN on the closed tuple starts the flow over.
    dp.egress(&simple(C1, REMOTE, &tcp(7000, 443, SYN)));
    let (_, v) = dp.flows()[0];
    assert_eq!(v.flags, flow_flags::SEEN_OUT | flow_flags::SYN_OUT);
    // RST is recorded and translated (RFC 7857 §2.2).
    let (rc, back) = dp.ingress(&simple(REMOTE, UPLINK, &tcp(443, p, RST | ACK)));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &back,
        &simple(REMOTE, C1, &tcp(443, 7000, RST | ACK)),
        "RST back",
    );
    assert_ne!(dp.flows()[0].1.flags & flow_flags::RST, 0);
}

const PUBLISH_CONFIG: &str = r#"
[[publish]]
proto = "tcp"
port = 8080
to = "10.77.0.2:4000"

[[publish]]
proto = "udp"
port = "9000-9010"
to = "10.77.0.3:5000"

[[publish]]
proto = "tcp"
port = 8443
to = "10.77.0.2:443"
address = "203.0.113.9"

[[publish]]
proto = "udp"
port = 5353
to = "10.77.0.2:53"
"#;

/// A datapath with the published ports above; the host's only address is
/// the uplink's.
fn publish_dp() -> Dp {
    publish_dp_with("")
}

/// A datapath with the published ports of [`PUBLISH_CONFIG`], UPLINK as
/// the host's address, and `extra` config (e.g. an `[inbound]` table).
fn publish_dp_with(extra: &str) -> Dp {
    let mut dp = Dp::new(extra);
    let config =
        Config::from_toml(&format!("{BASE_CONFIG}{extra}{PUBLISH_CONFIG}")).expect("config");
    datapath::fill_publish(&mut dp.ebpf, &config, &[UPLINK]).expect("fill publish");
    dp
}

#[test]
fn published_port_dnat_in_and_reply_out() {
    if !require_root("published_port_dnat_in_and_reply_out") {
        return;
    }
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
    if !require_root("published_range_maps_one_to_one") {
        return;
    }
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
    if !require_root("published_port_bound_to_an_address") {
        return;
    }
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
    if !require_root("unsolicited_inbound_never_reaches_a_container") {
        return;
    }
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
    if !require_root("mappings_never_take_a_published_port") {
        return;
    }
    let dp = publish_dp();
    let p = dp.out_port(C1, &udp(5353, 53, b"q"));
    assert_ne!(p, 5353, "5353/udp is published");
    let p = dp.out_port(C1, &tcp(8080, 443, SYN));
    assert_ne!(p, 8080, "8080/tcp is published");
    // Same port numbers on the other protocol are free to keep.
    assert_eq!(dp.out_port(C1, &udp(8080, 53, b"q")), 8080);
}

/// Two containers send UDP from port 5353 to REMOTE:53; the second is
/// re-ported. Returns its outside port.
fn two_udp_senders(dp: &Dp) -> u16 {
    let q = udp(5353, 53, b"query");
    assert_eq!(dp.out_port(C1, &q), 5353);
    let p = dp.out_port(C2, &q);
    assert_ne!(p, 5353);
    p
}

#[test]
fn icmp_port_unreachable_in_translates_outer_and_quoted_headers() {
    if !require_root("icmp_port_unreachable_in_translates_outer_and_quoted_headers") {
        return;
    }
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
    if !require_root("icmp_time_exceeded_in_for_tcp_and_echo") {
        return;
    }
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
    if !require_root("icmp_frag_needed_for_a_published_flow") {
        return;
    }
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
    if !require_root("icmp_errors_out_from_a_container_are_translated") {
        return;
    }
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
    if !require_root("icmp_errors_without_a_flow_are_not_delivered") {
        return;
    }
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

/// A UDP datagram of `payload` split the way Linux splits it: the first
/// fragment carries the UDP header and 24 payload bytes, the rest follows.
fn udp_fragments(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let whole = udp(sport, dport, payload).bytes(src, dst);
    let first = frame(
        src,
        dst,
        &L4::Raw {
            proto: UDP,
            bytes: whole[..32].to_vec(),
        },
        &IpOpts {
            frag: 0x2000,
            ..Default::default()
        },
    );
    let rest = frame(
        src,
        dst,
        &L4::Raw {
            proto: UDP,
            bytes: whole[32..].to_vec(),
        },
        &IpOpts {
            frag: 32 / 8,
            ..Default::default()
        },
    );
    (first, rest)
}

#[test]
fn fragments_follow_their_first_fragment_both_ways() {
    if !require_root("fragments_follow_their_first_fragment_both_ways") {
        return;
    }
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

/// xorshift64*: a small deterministic generator, so a failing case can be
/// replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn in_cidr(addr: &[u8]) -> bool {
    addr.len() >= 3 && addr[0] == 10 && addr[1] == 77 && addr[2] == 0
}

/// Whether an Ethernet+IPv4 frame's IP header checksum is right.
fn ip_csum_ok(f: &[u8]) -> Option<bool> {
    let ihl = usize::from(*f.get(14)? & 0x0f) * 4;
    let hdr = f.get(14..14 + ihl)?;
    (ihl >= 20).then(|| checksum(hdr) == 0)
}

/// Whether a non-fragmented frame's transport checksum is right (None when
/// it cannot be judged: fragments, truncated, other protocols).
fn l4_csum_ok(f: &[u8]) -> Option<bool> {
    let ihl = usize::from(*f.get(14)? & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([*f.get(16)?, *f.get(17)?]));
    let frag = u16::from_be_bytes([*f.get(20)?, *f.get(21)?]);
    if ihl < 20 || frag & 0x3fff != 0 || tot < ihl || 14 + tot > f.len() {
        return None;
    }
    let seg = &f[14 + ihl..14 + tot];
    let (src, dst) = (
        Ipv4Addr::new(f[26], f[27], f[28], f[29]),
        Ipv4Addr::new(f[30], f[31], f[32], f[33]),
    );
    match f[23] {
        TCP if seg.len() >= 20 => Some(l4_checksum(src, dst, TCP, seg) == 0),
        UDP if seg.len() >= 8 => {
            if seg[6..8] == [0, 0] {
                return Some(true);
            }
            Some(l4_checksum(src, dst, UDP, seg) == 0)
        }
        ICMP if seg.len() >= 8 => Some(checksum(seg) == 0),
        _ => None,
    }
}

/// A valid seed packet, or a mutation of one.
fn fuzz_packet(rng: &mut Rng, outbound: bool) -> Vec<u8> {
    let inside = [C1, C2, Ipv4Addr::new(10, 77, 0, 9)][rng.below(3)];
    let remote = [REMOTE, Ipv4Addr::new(198, 51, 100, 99)][rng.below(2)];
    let port = [40000u16, 5353, 8080, 9005, 33434, 1, 65535][rng.below(7)];
    let l4 = match rng.below(7) {
        0 => tcp(
            port,
            443,
            [SYN, ACK, SYN | ACK, FIN | ACK, RST][rng.below(5)],
        ),
        1 => udp(port, 53, b"fuzz-payload"),
        2 => echo(!outbound, port, 1),
        3 => {
            // An ICMP error quoting what would have gone the other way,
            // sometimes itself an ICMP error (errors about errors).
            let quoted = if rng.below(4) == 0 {
                ip_packet(
                    UPLINK,
                    remote,
                    &icmp_error(3, 3, [0; 4], &ip_packet(remote, UPLINK, &udp(1, 2, b"x"))),
                )
            } else if outbound {
                ip_packet(remote, inside, &udp(53, port, b"q"))
            } else {
                ip_packet(UPLINK, remote, &udp(port, 53, b"q"))
            };
            let n = rng.below(quoted.len() + 1);
            icmp_error(
                [3, 11, 12, 5][rng.below(4)],
                rng.below(16) as u8,
                [0; 4],
                &quoted[..n],
            )
        }
        4 => L4::Raw {
            proto: [47, 132, 0, 255][rng.below(4)],
            bytes: vec![0xab; rng.below(40)],
        },
        5 => L4::Raw {
            proto: UDP,
            bytes: vec![0x11; 8 + rng.below(30)],
        },
        _ => tcp(port, 80, ACK),
    };
    let opts = IpOpts {
        options: if rng.below(5) == 0 {
            vec![1; 4 * (1 + rng.below(10))]
        } else {
            Vec::new()
        },
        frag: match rng.below(6) {
            0 => 0x2000,
            1 => rng.below(0x2000) as u16,
            2 => 0x4000,
            _ => 0,
        },
        ttl: Some([0, 1, 64][rng.below(3)]),
    };
    let mut f = if outbound {
        frame(inside, remote, &l4, &opts)
    } else {
        frame(remote, [UPLINK, inside, UPLINK][rng.below(3)], &l4, &opts)
    };
    // Mutate: flip bytes, bend lengths, truncate.
    for _ in 0..rng.below(4) {
        let i = 14 + rng.below(f.len().saturating_sub(14));
        if i < f.len() {
            f[i] ^= 1 << rng.below(8);
        }
    }
    match rng.below(8) {
        0 => {
            let n = 14 + rng.below(f.len() - 13);
            f.truncate(n);
        }
        1 => {
            let v = rng.next() as u16;
            f[16..18].copy_from_slice(&v.to_be_bytes());
        }
        2 => f[14] = (f[14] & 0xf0) | (rng.below(16) as u8),
        3 => f[14] = (rng.below(16) as u8) << 4 | (f[14] & 0x0f),
        _ => {}
    }
    f
}

/// A packet from a container to one of the host's outside endpoints
/// (published ports, live mappings), where hairpinning happens: valid
/// checksums, sometimes fragmented, short-lived or lightly mutated.
fn fuzz_hairpin_packet(rng: &mut Rng) -> Vec<u8> {
    let inside = [C1, C2, Ipv4Addr::new(10, 77, 0, 9)][rng.below(3)];
    let sport = [41000u16, 5353, 40000, 5000][rng.below(4)];
    let target = [8080u16, 9005, 40000, 5353, 443][rng.below(5)];
    let l4 = match rng.below(3) {
        0 => tcp(
            sport,
            target,
            [SYN, ACK, SYN | ACK, FIN | ACK, RST][rng.below(5)],
        ),
        1 => udp(sport, target, b"hairpin"),
        _ => {
            let quoted = ip_packet(UPLINK, inside, &udp(target, sport, b"q"));
            let n = rng.below(quoted.len() + 1);
            icmp_error([3, 11][rng.below(2)], 3, [0; 4], &quoted[..n])
        }
    };
    let opts = IpOpts {
        options: Vec::new(),
        frag: [0, 0, 0x2000, 4][rng.below(4)],
        ttl: Some([1, 64, 64][rng.below(3)]),
    };
    let mut f = frame(inside, UPLINK, &l4, &opts);
    if rng.below(4) == 0 {
        let i = 14 + rng.below(f.len() - 14);
        f[i] ^= 1 << rng.below(8);
    }
    f
}

#[test]
fn fuzzed_packets_never_leak_mistranslate_or_abort() {
    if !require_root("fuzzed_packets_never_leak_mistranslate_or_abort") {
        return;
    }
    let dp = publish_dp();
    hairpin_routes();
    // Live state to hit: mappings and flows both ways.
    dp.out_port(C1, &udp(5353, 53, b"q"));
    dp.out_port(C2, &tcp(40000, 443, SYN));
    dp.ingress(&simple(REMOTE, UPLINK, &tcp(50000, 8080, SYN)));
    let seed = 0x6e65_7462_7066_u64;
    let mut rng = Rng(seed);
    // 100,000 packets for each program: uplink egress, uplink ingress,
    // and the hairpin program on the container side (half of its packets
    // aimed at the host's published ports and mappings).
    let n = 300_000;
    let (mut translated, mut dropped, mut refused, mut hairpinned) = (0, 0, 0, 0);
    for i in 0..n {
        let (prog, outbound) = match i % 3 {
            0 => (programs::EGRESS, true),
            1 => (programs::INGRESS, false),
            _ => (programs::INSIDE, true),
        };
        let pkt = if prog == programs::INSIDE && rng.below(2) == 0 {
            fuzz_hairpin_packet(&mut rng)
        } else {
            fuzz_packet(&mut rng, outbound)
        };
        let Some((rc, out)) = dp.try_run(prog, &pkt) else {
            refused += 1;
            continue;
        };
        let ctx = || {
            format!(
                "packet {i} (seed {seed:#x}, {}): {pkt:02x?}",
                if outbound { "out" } else { "in" }
            )
        };
        if prog == programs::INSIDE {
            // Passed untouched, dropped, or hairpinned: from the host's
            // address to a container, checksums intact.
            match rc {
                TC_SHOT => dropped += 1,
                TC_NEXT => assert_bytes(&out, &pkt, &format!("passed untouched: {}", ctx())),
                7 => {
                    hairpinned += 1;
                    assert_eq!(&out[26..30], &UPLINK.octets(), "source: {}", ctx());
                    assert!(in_cidr(&out[30..34]), "to a container: {}", ctx());
                    if ip_csum_ok(&pkt) == Some(true) {
                        assert_eq!(ip_csum_ok(&out), Some(true), "IP checksum: {}", ctx());
                    }
                    if ip_csum_ok(&pkt) == Some(true) && l4_csum_ok(&pkt) == Some(true) {
                        assert_eq!(l4_csum_ok(&out), Some(true), "L4 checksum: {}", ctx());
                    }
                }
                _ => panic!("inside verdict {rc} for {}", ctx()),
            }
            continue;
        }
        assert!(
            matches!(rc, TC_OK | TC_SHOT | TC_NEXT),
            "verdict {rc} for {}",
            ctx()
        );
        if rc == TC_SHOT {
            dropped += 1;
            continue;
        }
        let ipv4 = out.len() >= 34 && out[12..14] == [0x08, 0x00];
        if outbound && ipv4 {
            assert!(
                !in_cidr(&out[26..30]),
                "private source left the uplink: {}",
                ctx()
            );
        }
        if !outbound && ipv4 && in_cidr(&out[30..34]) {
            assert!(
                rc == TC_OK && pkt[30..34] == UPLINK.octets(),
                "reached a container without a rule or flow: {}",
                ctx()
            );
        }
        if rc == TC_OK {
            translated += 1;
            if ip_csum_ok(&pkt) == Some(true) {
                assert_eq!(
                    ip_csum_ok(&out),
                    Some(true),
                    "IP checksum broken: {}",
                    ctx()
                );
            }
            if ip_csum_ok(&pkt) == Some(true) && l4_csum_ok(&pkt) == Some(true) {
                assert_eq!(
                    l4_csum_ok(&out),
                    Some(true),
                    "L4 checksum broken: {}",
                    ctx()
                );
            }
        }
    }
    eprintln!(
        "fuzz: {n} packets, {translated} translated, {hairpinned} hairpinned, {dropped} dropped, {refused} refused by BPF_PROG_TEST_RUN"
    );
    assert!(hairpinned > n / 100, "the fuzz reaches the hairpin path");
    assert!(refused < n / 10, "most fuzz input reaches the programs");
    assert!(
        translated > n / 20,
        "the fuzz reaches the translation paths"
    );
    assert!(dropped > n / 20, "and the drop paths");
}

#[test]
fn full_tables_drop_new_flows_and_keep_established_ones() {
    if !require_root("full_tables_drop_new_flows_and_keep_established_ones") {
        return;
    }
    let dp = Dp::new("[conntrack]\ncapacity = 1024\n");
    for port in 0..1024u16 {
        let (rc, _) = dp.egress(&simple(C1, REMOTE, &udp(20000 + port, 53, b"q")));
        assert_eq!(rc, TC_OK, "flow {port} fits");
    }
    let pkt = simple(C1, REMOTE, &udp(30000, 53, b"q"));
    let (rc, out) = dp.egress(&pkt);
    assert_eq!(rc, TC_SHOT, "no room: dropped, not leaked");
    assert_bytes(&out, &pkt, "not rewritten");
    let full = dp.counter(Counter::DropConntrackFull) + dp.counter(Counter::DropMappingTableFull);
    assert_eq!(full, 1);
    // Established flows are unaffected, both ways.
    let (rc, out) = dp.egress(&simple(C1, REMOTE, &udp(20007, 53, b"again")));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &out,
        &simple(UPLINK, REMOTE, &udp(20007, 53, b"again")),
        "established out",
    );
    let (rc, back) = dp.ingress(&simple(REMOTE, UPLINK, &udp(53, 20007, b"r")));
    assert_eq!(rc, TC_OK);
    assert_bytes(
        &back,
        &simple(REMOTE, C1, &udp(53, 20007, b"r")),
        "established in",
    );
}

#[test]
fn inside_addresses_arriving_from_outside_are_dropped() {
    if !require_root("inside_addresses_arriving_from_outside_are_dropped") {
        return;
    }
    let dp = Dp::new("");
    let p = dp.out_port(C1, &udp(6000, 53, b"q"));
    // Even aimed at a live mapping, a packet claiming a container source
    // from outside is spoofed.
    let (rc, _) = dp.ingress(&simple(C2, UPLINK, &udp(53, p, b"spoof")));
    assert_eq!(rc, TC_SHOT);
    assert_eq!(dp.counter(Counter::DropSpoofedFromOutside), 1);
}

/// The test thread's private namespace needs a route to the containers
/// for the hairpin redirect's FIB lookup (the namespace, and so these
/// links, go away with the thread).
fn hairpin_routes() {
    for args in [
        &[
            "link", "add", "nbk0", "type", "veth", "peer", "name", "nbk1",
        ][..],
        &["link", "set", "nbk0", "up"],
        &["addr", "add", "10.77.0.1/24", "dev", "nbk0"],
        &["link", "set", "lo", "up"],
    ] {
        let ok = std::process::Command::new("ip")
            .args(args)
            .status()
            .expect("ip");
        assert!(ok.success(), "ip {args:?}");
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("forwarding");
}

#[test]
fn hairpin_packet_is_translated_both_ways_and_redirected() {
    if !require_root("hairpin_packet_is_translated_both_ways_and_redirected") {
        return;
    }
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
fn icmp_parameter_problem_and_time_exceeded_both_ways() {
    if !require_root("icmp_parameter_problem_and_time_exceeded_both_ways") {
        return;
    }
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

// ---------------------------------------------------------------------------
// Hardening (issue 14): each test failed on the datapath before the fix.
// ---------------------------------------------------------------------------

/// A TCP listener and a bound UDP socket on the test thread's private
/// network namespace (Dp::new entered it): the "host's" sockets.
fn host_sockets(port: u16) -> (std::net::TcpListener, std::net::UdpSocket) {
    let any = std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    (
        std::net::TcpListener::bind(any).expect("host TCP listener"),
        std::net::UdpSocket::bind(any).expect("host UDP socket"),
    )
}

#[test]
fn a_container_never_gets_a_port_a_host_socket_uses() {
    if !require_root("a_container_never_gets_a_port_a_host_socket_uses") {
        return;
    }
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
    if !require_root("host_sockets_win_over_a_mapping_on_inbound") {
        return;
    }
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
    if !require_root("a_published_port_wins_over_an_older_mapping") {
        return;
    }
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
fn fragments_for_the_host_arriving_in_order_reach_the_host() {
    if !require_root("fragments_for_the_host_arriving_in_order_reach_the_host") {
        return;
    }
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
    if !require_root("a_stale_fragment_translation_is_not_used") {
        return;
    }
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
}

#[test]
fn one_source_cannot_open_more_than_its_budget() {
    if !require_root("one_source_cannot_open_more_than_its_budget") {
        return;
    }
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
    if !require_root("a_handshake_is_complete_only_when_the_opener_acks") {
        return;
    }
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
    if !require_root("unsolicited_syns_are_a_policy") {
        return;
    }
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
fn icmp_errors_about_hairpinned_packets_reach_the_other_container() {
    if !require_root("icmp_errors_about_hairpinned_packets_reach_the_other_container") {
        return;
    }
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
    if !require_root("hairpinned_fragments_follow_their_first_fragment") {
        return;
    }
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

/// A TCP segment from `src` to `dst` with the given sequence and
/// acknowledgment numbers, checksums computed.
fn tcp_seq(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    flags: u8,
    seq: u32,
    ack: u32,
) -> Vec<u8> {
    let mut seg = tcp(ports.0, ports.1, flags).bytes(src, dst);
    seg[4..8].copy_from_slice(&seq.to_be_bytes());
    seg[8..12].copy_from_slice(&ack.to_be_bytes());
    seg[16..18].copy_from_slice(&[0, 0]);
    let c = l4_checksum(src, dst, TCP, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    frame(
        src,
        dst,
        &L4::Raw {
            proto: TCP,
            bytes: seg,
        },
        &IpOpts::default(),
    )
}

#[test]
fn a_blind_rst_does_not_close_a_live_flow() {
    if !require_root("a_blind_rst_does_not_close_a_live_flow") {
        return;
    }
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
    if !require_root("a_containers_rst_to_an_unsolicited_syn_is_no_sign_of_life") {
        return;
    }
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
fn icmp_errors_with_bad_checksums_are_dropped_not_translated() {
    if !require_root("icmp_errors_with_bad_checksums_are_dropped_not_translated") {
        return;
    }
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

#[test]
fn a_container_whose_flow_gets_no_session_is_told_so() {
    if !require_root("a_container_whose_flow_gets_no_session_is_told_so") {
        return;
    }
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
