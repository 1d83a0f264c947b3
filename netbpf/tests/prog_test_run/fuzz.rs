//! 100,000 mutated packets per program: no leak, no mistranslation, no abort.

use super::*;

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
    require_root!();
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
