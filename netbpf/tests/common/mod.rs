//! Shared test helpers: packets built from scratch with independently
//! computed checksums, and the root check.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::Ipv4Addr;

/// Returns from the calling test unless it runs as root (see
/// [`require_root`]); the test's name comes from its thread, which the
/// test harness names after the test.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::require_root(std::thread::current().name().unwrap_or("a root test")) {
            return;
        }
    };
}

/// Whether the test can run: it needs root for BPF and namespaces. On CI
/// (which runs as root) a missing privilege is a failure, not a skip.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root (BPF, network namespaces) and CI must not skip it");
    }
    eprintln!("SKIPPED {test}: needs root (BPF_PROG_TEST_RUN, network namespaces)");
    false
}

/// Verdicts as BPF_PROG_TEST_RUN reports them.
pub const TC_OK: u32 = 0;
/// `TC_ACT_SHOT`: dropped.
pub const TC_SHOT: u32 = 2;
/// `TC_ACT_REDIRECT`.
pub const TC_REDIRECT: u32 = 7;
/// `TC_ACT_UNSPEC` (-1): not ours, pass on (tcx "next").
pub const TC_NEXT: u32 = u32::MAX;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;

/// The NAT tests' addresses: the host's uplink, a remote, two containers
/// behind the NAT, an unrelated address. (The routed-container tests use
/// their own, on a routed segment.)
pub const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// A remote host on the internet side.
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The first container behind the NAT.
pub const C1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The second container behind the NAT.
pub const C2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// An address nothing is configured for.
pub const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 9, 9);

/// The `netbpf` binary under test.
pub fn exe() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_netbpf"))
}

/// Runs `netbpf ARGS` on the lab's pins from the test's own namespace
/// (no `--netns`), whether it succeeds or not.
pub fn cli_pins(lab: &netbpf::lab::Lab, args: &[&str]) -> std::process::Output {
    std::process::Command::new(exe())
        .arg("--pin-dir")
        .arg(&lab.pin_dir)
        .args(args)
        .output()
        .expect("run netbpf")
}

/// Runs `netbpf ARGS` against the lab's datapath (in its host namespace,
/// on its pins), whether it succeeds or not.
pub fn cli_output(lab: &netbpf::lab::Lab, args: &[&str]) -> std::process::Output {
    std::process::Command::new(exe())
        .arg("--netns")
        .arg(lab.host.name())
        .arg("--pin-dir")
        .arg(&lab.pin_dir)
        .args(args)
        .output()
        .expect("run netbpf")
}

/// Runs `netbpf ARGS` against the lab's datapath (in its host namespace,
/// on its pins); it must succeed. Its standard output.
pub fn cli(lab: &netbpf::lab::Lab, args: &[&str]) -> String {
    let out = cli_output(lab, args);
    assert!(
        out.status.success(),
        "netbpf {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `addr:port`.
pub fn sa(addr: Ipv4Addr, port: u16) -> std::net::SocketAddrV4 {
    std::net::SocketAddrV4::new(addr, port)
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

/// RFC 1071 sum of `data`, not yet complemented.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for chunk in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
        ]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

/// TCP/UDP checksum over the pseudo header and `segment` (whose checksum
/// field must be zero).
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.push(0);
    pseudo.push(proto);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    fold(sum16(segment, sum16(&pseudo, 0)))
}

/// A transport segment to put in a packet.
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        no_checksum: bool,
    },
    IcmpEcho {
        reply: bool,
        id: u16,
        seq: u16,
        payload: Vec<u8>,
    },
    Raw {
        proto: u8,
        bytes: Vec<u8>,
    },
}

impl L4 {
    pub fn proto(&self) -> u8 {
        match self {
            L4::Tcp { .. } => TCP,
            L4::Udp { .. } => UDP,
            L4::IcmpEcho { .. } => ICMP,
            L4::Raw { proto, .. } => *proto,
        }
    }

    /// The segment with its checksum computed for `src` → `dst`.
    pub fn bytes(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        match self {
            L4::Tcp {
                sport,
                dport,
                flags,
                payload,
            } => {
                let mut s = Vec::new();
                s.extend_from_slice(&sport.to_be_bytes());
                s.extend_from_slice(&dport.to_be_bytes());
                s.extend_from_slice(&0x1000_0000u32.to_be_bytes()); // seq
                s.extend_from_slice(
                    &(if flags & ACK != 0 { 0x1000_0001u32 } else { 0 }).to_be_bytes(),
                );
                s.push(5 << 4);
                s.push(*flags);
                s.extend_from_slice(&64240u16.to_be_bytes());
                s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                s.extend_from_slice(payload);
                let c = l4_checksum(src, dst, TCP, &s);
                s[16..18].copy_from_slice(&c.to_be_bytes());
                s
            }
            L4::Udp {
                sport,
                dport,
                payload,
                no_checksum,
            } => {
                let mut s = Vec::new();
                s.extend_from_slice(&sport.to_be_bytes());
                s.extend_from_slice(&dport.to_be_bytes());
                s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                s.extend_from_slice(&[0, 0]);
                s.extend_from_slice(payload);
                if !no_checksum {
                    let mut c = l4_checksum(src, dst, UDP, &s);
                    if c == 0 {
                        c = 0xffff;
                    }
                    s[6..8].copy_from_slice(&c.to_be_bytes());
                }
                s
            }
            L4::IcmpEcho {
                reply,
                id,
                seq,
                payload,
            } => {
                let mut s = vec![if *reply { 0 } else { 8 }, 0, 0, 0];
                s.extend_from_slice(&id.to_be_bytes());
                s.extend_from_slice(&seq.to_be_bytes());
                s.extend_from_slice(payload);
                let c = checksum(&s);
                s[2..4].copy_from_slice(&c.to_be_bytes());
                s
            }
            L4::Raw { bytes, .. } => bytes.clone(),
        }
    }
}

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Options for the IPv4 header.
#[derive(Clone, Debug, Default)]
pub struct IpOpts {
    /// Extra option bytes (multiple of 4).
    pub options: Vec<u8>,
    /// Fragment field (flags + offset), host order.
    pub frag: u16,
    pub ttl: Option<u8>,
}

/// An Ethernet + IPv4 frame carrying `l4` from `src` to `dst`.
pub fn frame(src: Ipv4Addr, dst: Ipv4Addr, l4: &L4, opts: &IpOpts) -> Vec<u8> {
    let seg = l4.bytes(src, dst);
    let ihl = 20 + opts.options.len();
    let mut ip = Vec::with_capacity(ihl + seg.len());
    ip.push(0x40 | (ihl / 4) as u8);
    ip.push(0);
    ip.extend_from_slice(&((ihl + seg.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&0x1234u16.to_be_bytes());
    ip.extend_from_slice(&opts.frag.to_be_bytes());
    ip.push(opts.ttl.unwrap_or(63));
    ip.push(l4.proto());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&opts.options);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&seg);
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

/// Shorthand for a frame without IP options.
pub fn simple(src: Ipv4Addr, dst: Ipv4Addr, l4: &L4) -> Vec<u8> {
    frame(src, dst, l4, &IpOpts::default())
}

pub fn tcp(sport: u16, dport: u16, flags: u8) -> L4 {
    L4::Tcp {
        sport,
        dport,
        flags,
        payload: Vec::new(),
    }
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> L4 {
    L4::Udp {
        sport,
        dport,
        payload: payload.to_vec(),
        no_checksum: false,
    }
}

pub fn echo(reply: bool, id: u16, seq: u16) -> L4 {
    L4::IcmpEcho {
        reply,
        id,
        seq,
        payload: b"netbpf-ping".to_vec(),
    }
}

/// Byte-by-byte comparison that names the first differing offset.
#[track_caller]
pub fn assert_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let first = actual
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "{what}: packets differ at byte {first} (len {} vs expected {})\n actual:   {:02x?}\n expected: {:02x?}",
            actual.len(),
            expected.len(),
            actual,
            expected
        );
    }
}

/// The IPv4 packet (no Ethernet header) carrying `l4` from `src` to `dst`.
pub fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, l4: &L4) -> Vec<u8> {
    frame(src, dst, l4, &IpOpts::default())[14..].to_vec()
}

/// An ICMP error of `icmp_type`/`code` quoting `quoted` (an IPv4 packet,
/// possibly cut short as routers do), with its checksum computed.
pub fn icmp_error(icmp_type: u8, code: u8, rest: [u8; 4], quoted: &[u8]) -> L4 {
    let mut b = vec![icmp_type, code, 0, 0];
    b.extend_from_slice(&rest);
    b.extend_from_slice(quoted);
    let c = checksum(&b);
    b[2..4].copy_from_slice(&c.to_be_bytes());
    L4::Raw {
        proto: ICMP,
        bytes: b,
    }
}

/// The first `ihl + n` bytes of an IPv4 packet: what a router quotes.
pub fn quote(packet: &[u8], n: usize) -> Vec<u8> {
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    packet[..(ihl + n).min(packet.len())].to_vec()
}
