//! The bench's fixed addresses and the frames it sends, built with their checksums.

use std::net::Ipv4Addr;

use netbpf_common::proto;

/// tc verdicts as `BPF_PROG_TEST_RUN` reports them.
pub(crate) const TC_OK: u32 = 0;

/// `TC_ACT_UNSPEC` (-1): not ours, pass on.
pub(crate) const TC_NEXT: u32 = u32::MAX;

pub(crate) const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

pub(crate) const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

pub(crate) const C1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

pub(crate) const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 9, 9);

pub(crate) const PUBLISHED_PORT: u16 = 8080;

pub(crate) const CONTAINER_PORT: u16 = 4000;

pub(crate) const SYN: u8 = 0x02;

pub(crate) const ACK: u8 = 0x10;

/// `TC_ACT_REDIRECT`: the routing programs' verdict after `bpf_redirect`.
pub(crate) const TC_REDIRECT: u32 = 7;

/// XDP verdicts.
pub(crate) const XDP_PASS: u32 = 2;

pub(crate) const XDP_TX: u32 = 3;
/// `XDP_REDIRECT`.
pub(crate) const XDP_REDIRECT: u32 = 4;

/// Routing state for the routed-forward and ARP paths: one routed
/// container `ROUTED` behind ifindex `ROUTED_IFINDEX`, a peer on the
/// uplink's segment. The container's MAC in `CONTAINERS` is the uplink's
/// own, so a forwarded frame is again addressed to the uplink and `repeat`
/// forwards it again (see [`KernelDp::routed_warm`]).
pub(crate) const ROUTED: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 5);

pub(crate) const PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

pub(crate) const ROUTE_UPLINK_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];

pub(crate) const PEER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x02];

pub(crate) const VETH_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x05];

pub(crate) const ROUTED_IFINDEX: u32 = 1;

pub(crate) const UPLINK_IFINDEX: u32 = 5;

/// Runs per `BPF_PROG_TEST_RUN` of the routed forward: a TTL of 255
/// forwards 254 times (255 → 1), the next run would pass it to the kernel.
pub(crate) const ROUTED_RUNS_PER_CALL: u32 = 254;

/// First host port of the extra published ports (20000..20000+N).
pub(crate) const EXTRA_PORT_BASE: u16 = 20000;

// ---------------------------------------------------------------------------
// Packets

/// RFC 1071 sum, not complemented.
pub(crate) fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for chunk in data.chunks(2) {
        let hi = chunk[0];
        let lo = chunk.get(1).copied().unwrap_or(0);
        acc += u32::from(u16::from_be_bytes([hi, lo]));
    }
    acc
}

/// The Internet checksum of a running sum (the one fold, netbpf-common's).
pub(crate) fn fold(acc: u32) -> u16 {
    !netbpf_common::csum_fold(u64::from(acc))
}

/// An Ethernet + IPv4 + TCP frame (no payload) with correct checksums.
pub(crate) fn tcp_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&0x1000_0000u32.to_be_bytes());
    let ack: u32 = if flags & ACK != 0 { 0x2000_0001 } else { 0 };
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, flags]);
    tcp.extend_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    ip_frame(src, dst, proto::TCP, tcp, 16)
}

/// `f` (an Ethernet + IPv4 + TCP frame, no IP options) as a container's
/// stack hands it to a veth with checksum offload (`CHECKSUM_PARTIAL`):
/// the TCP checksum field holds the pseudo header's seed, which the NAT
/// updates through the kernel's checksum helpers.
pub(crate) fn with_seed(mut f: Vec<u8>) -> Vec<u8> {
    let (src, dst) = ([f[26], f[27], f[28], f[29]], [f[30], f[31], f[32], f[33]]);
    let l4_len = (f.len() - 34) as u16;
    let seed = netbpf_common::pseudo_header_seed(src, dst, proto::TCP, l4_len);
    f[50..52].copy_from_slice(&seed);
    f
}

/// An Ethernet + IPv4 + UDP frame whose IP packet is `ip_bytes` long (the
/// payload 0x42 bytes), with correct checksums: what trafgen sends.
pub(crate) fn udp_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    ip_bytes: u16,
) -> Vec<u8> {
    let len = ip_bytes.saturating_sub(20).max(8);
    let mut udp = Vec::with_capacity(usize::from(len));
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.resize(usize::from(len), 0x42);
    ip_frame(src, dst, proto::UDP, udp, 6)
}

/// An Ethernet + IPv4 frame around `l4` (`proto`), whose checksum (at
/// `check_at` in it) is computed here over the pseudo header and `l4`.
fn ip_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, mut l4: Vec<u8>, check_at: usize) -> Vec<u8> {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let c = fold(sum16(&l4, sum16(&pseudo, 0)));
    l4[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());

    let mut ip = Vec::with_capacity(20 + l4.len());
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 63, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&l4);

    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

/// `frame` with new Ethernet addresses and IPv4 TTL (header checksum
/// recomputed).
pub(crate) fn with_ttl_macs(mut f: Vec<u8>, ttl: u8, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[14 + 8] = ttl;
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let c = fold(sum16(&f[14..34], 0));
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    f
}

/// Whether the IPv4 header checksum of an Ethernet + IPv4 frame is right.
pub(crate) fn ip_checksum_ok(f: &[u8]) -> bool {
    f.len() >= 34 && fold(sum16(&f[14..34], 0)) == 0
}

/// An ARP frame (RFC 826, IPv4 over Ethernet).
pub(crate) fn arp_frame(
    eth_dst: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// Address number `i` in `base` (a /16): `a.b.(i >> 8).(i & 0xff)`, skipping
/// .0 and .255 host bytes is not needed for the programs.
pub(crate) fn addr_in(base: [u8; 2], i: u32) -> Ipv4Addr {
    Ipv4Addr::new(base[0], base[1], (i >> 8) as u8, i as u8)
}

// ---------------------------------------------------------------------------
// Part 1: in-kernel cost per path

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}
