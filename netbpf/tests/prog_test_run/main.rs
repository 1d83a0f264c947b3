//! In-kernel tests: the real programs run through BPF_PROG_TEST_RUN on
//! packets built from scratch; every test asserts the verdict and every
//! byte of the packet that comes out (checksums are recomputed from scratch
//! for the expected packet, so an incremental update that is off by one bit
//! fails). Needs root and a kernel with BPF_PROG_TEST_RUN for tc programs
//! (4.12+) and tcx-era helpers (tested on 6.18).

#[path = "../common/mod.rs"]
#[macro_use]
mod common;

mod fast;
mod fragments;
mod fuzz;
mod guards;
mod hairpin;
mod handoff;
mod icc;
mod icmp;
mod nat;
mod publish;
mod reply;
mod routing;
mod routing6;
mod xdp;

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use common::*;
use netbpf::{
    config::Config,
    datapath::{self, programs},
};
use netbpf_common::{
    Counter, Endpoint, FlowKey, FlowValue, ReplyKey, ReplyValue, flow_flags, map_names, merge,
};

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
        load_tc(
            &mut ebpf,
            &[
                programs::EGRESS,
                programs::INGRESS,
                programs::INSIDE,
                programs::FAST_OUT,
            ],
        );
        Dp { ebpf }
    }

    /// Runs a program once: its verdict and the packet that comes out, or
    /// the error BPF_PROG_TEST_RUN gave (it rejects some runt frames before
    /// any program sees them).
    fn test_run(
        &self,
        prog: &str,
        pkt: &[u8],
    ) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let p: &SchedClassifier = self
            .ebpf
            .program(prog)
            .expect("program")
            .try_into()
            .expect("type");
        run_once(p, pkt)
    }

    /// [`Dp::test_run`], or `None` if BPF_PROG_TEST_RUN refuses the input.
    fn try_run(&self, prog: &str, pkt: &[u8]) -> Option<(u32, Vec<u8>)> {
        self.test_run(prog, pkt).ok()
    }

    /// [`Dp::test_run`], which must run.
    fn run(&self, prog: &str, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.test_run(prog, pkt)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} bytes {pkt:02x?}: {e}", pkt.len()))
    }

    fn egress(&self, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.run(programs::EGRESS, pkt)
    }

    fn ingress(&self, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.run(programs::INGRESS, pkt)
    }

    fn counter(&self, c: Counter) -> u64 {
        counter_of(&self.ebpf, c)
    }

    /// Every flow, its reply half folded in (as `netbpf conntrack` shows
    /// it).
    fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        let map: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map(map_names::CONNTRACK).expect("ct")).expect("type");
        let replies: HashMap<&MapData, ReplyKey, ReplyValue> =
            HashMap::try_from(self.ebpf.map(map_names::CONNTRACK_REPLY).expect("cr"))
                .expect("type");
        map.iter()
            .map(|r| {
                let (key, value) = r.expect("entry");
                let reply = ReplyKey::of_flow(&key, value.outside_addr, value.outside_port);
                match replies.get(&reply, 0) {
                    Ok(half) if half.belongs_to(&key) => (key, merge(&value, &half)),
                    _ => (key, value),
                }
            })
            .collect()
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

/// Runs `program args` in the calling test thread's network namespace (a
/// private one: `Dp::new` or the test made it) and asserts that it worked.
#[track_caller]
fn in_test_netns(program: &str, args: &[&str]) {
    let ns = format!(
        "/proc/{}/task/{}/ns/net",
        std::process::id(),
        nix::unistd::gettid()
    );
    let status = std::process::Command::new("nsenter")
        .arg(format!("--net={ns}"))
        .arg(program)
        .args(args)
        .status()
        .expect("nsenter");
    assert!(
        status.success(),
        "{program} {args:?} in the test's namespace"
    );
}

/// Loads the tc programs `names` of `ebpf`; the verifier must accept each.
fn load_tc(ebpf: &mut Ebpf, names: &[&str]) {
    for name in names {
        let p: &mut SchedClassifier = ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("type");
        netbpf::loader::load_retrying(p).expect("verifier accepts the program");
    }
}

// Config text as a user writes it: the config's unit tests have examples
// that look alike, and a test crate cannot share them.
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

/// Two containers send UDP from port 5353 to REMOTE:53; the second is
/// re-ported. Returns its outside port.
fn two_udp_senders(dp: &Dp) -> u16 {
    let q = udp(5353, 53, b"query");
    assert_eq!(dp.out_port(C1, &q), 5353);
    let p = dp.out_port(C2, &q);
    assert_ne!(p, 5353);
    p
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

/// A TCP listener and a bound UDP socket on the test thread's private
/// network namespace (Dp::new entered it): the "host's" sockets.
fn host_sockets(port: u16) -> (std::net::TcpListener, std::net::UdpSocket) {
    let any = std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    (
        std::net::TcpListener::bind(any).expect("host TCP listener"),
        std::net::UdpSocket::bind(any).expect("host UDP socket"),
    )
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

/// One `BPF_PROG_TEST_RUN` of `prog` (tc or XDP) on `pkt`: its verdict and
/// the packet it leaves, or the error the kernel gave.
fn run_once<P>(prog: &P, pkt: &[u8]) -> Result<(u32, Vec<u8>), aya::programs::ProgramError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    let mut out = vec![0u8; pkt.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(pkt);
    opts.data_out = Some(&mut out);
    let r = prog.test_run(opts)?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}

/// The value of counter `c` of a loaded datapath, summed over the CPUs.
fn counter_of(ebpf: &Ebpf, c: Counter) -> u64 {
    let map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map(map_names::STATS).expect("stats")).expect("type");
    map.get(&(c as u32), 0).expect("read").iter().sum()
}

/// One run of the XDP program `netbpf_arp` (the uplink's) on `pkt`.
fn xdp_of(ebpf: &Ebpf, pkt: &[u8]) -> (u32, Vec<u8>) {
    let p: &Xdp = ebpf
        .program(programs::ARP)
        .expect("program")
        .try_into()
        .expect("type");
    run_once(p, pkt).expect("BPF_PROG_TEST_RUN")
}

/// One run of the tc program `name` on `pkt`.
fn tc_of(ebpf: &Ebpf, name: &str, pkt: &[u8]) -> (u32, Vec<u8>) {
    let p: &SchedClassifier = ebpf
        .program(name)
        .expect("program")
        .try_into()
        .expect("type");
    run_once(p, pkt).expect("BPF_PROG_TEST_RUN")
}
