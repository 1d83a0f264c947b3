//! Part 1's ladder (cost against table size), the programs' own run-time statistics, and CPU spin calibration.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use netbpf_common::{Endpoint, FlowKey, flow_flags, proto};
use serde_json::{Value, json};

use crate::{containers::programs as route_programs, datapath::programs};

use super::{kernel_dp::*, packets::*};

/// The warm cost ladder: cheap exits of the real programs on frames they
/// leave unchanged, timed with `repeat`. Each step adds one kind of work
/// to the one before, so differences price a helper or a map lookup.
pub(crate) const LADDER: &[(&str, &str)] = &[
    (
        "xdp_not_arp",
        "XDP netbpf_arp, IPv4 frame: bounds check, compare, XDP_PASS (no helper, no map)",
    ),
    (
        "xdp_arp_miss",
        "XDP netbpf_arp, request for another address: + CONTAINERS hash lookup (miss)",
    ),
    (
        "tc_route_not_ip",
        "tc netbpf_route_in, ARP frame: one bpf_skb_load_bytes (34 B), pass",
    ),
    (
        "tc_route_not_routed",
        "tc netbpf_route_in, IPv4 to another address: + CONTAINERS hash lookup (miss)",
    ),
    (
        "tc_route_other_mac",
        "tc netbpf_route_in, to a routed container, another MAC: + hit + ROUTE_UPLINK array lookup",
    ),
    (
        "tc_route_ttl1",
        "tc netbpf_route_in, TTL 1: + parse_tc + bpf_skb_load_bytes (TTL) + STATS add",
    ),
    (
        "tc_egress_not_ip",
        "tc netbpf_egress, ARP frame: direct-access Ethernet parse + STATS add (passed)",
    ),
    (
        "tc_ingress_not_ip",
        "tc netbpf_ingress, ARP frame: + skb->mark check",
    ),
    (
        "tc_ingress_spoofed",
        "tc netbpf_ingress, source in the masquerade CIDR: IPv4+TCP parse + MASQ_RULES LPM hit + STATS add (drop)",
    ),
];

pub(crate) fn ladder(dp: &KernelDp, repeat: u32) -> Result<Vec<Value>> {
    let arp_any = arp_frame([0xff; 6], 1, PEER_MAC, PEER, [0; 6], OTHER);
    let ip_to = |dst: Ipv4Addr, mac: [u8; 6], ttl: u8| {
        with_ttl_macs(tcp_frame(PEER, 443, dst, 40000, ACK), ttl, mac, PEER_MAC)
    };
    const TC_SHOT: u32 = 2;
    let cases: [(&str, &str, Vec<u8>, u32); 9] = [
        (
            "xdp_not_arp",
            route_programs::ARP,
            ip_to(ROUTED, ROUTE_UPLINK_MAC, 64),
            XDP_PASS,
        ),
        (
            "xdp_arp_miss",
            route_programs::ARP,
            arp_any.clone(),
            XDP_PASS,
        ),
        (
            "tc_route_not_ip",
            route_programs::ROUTE_IN,
            arp_any.clone(),
            TC_NEXT,
        ),
        (
            "tc_route_not_routed",
            route_programs::ROUTE_IN,
            ip_to(OTHER, ROUTE_UPLINK_MAC, 64),
            TC_NEXT,
        ),
        (
            "tc_route_other_mac",
            route_programs::ROUTE_IN,
            ip_to(ROUTED, [0x02, 9, 9, 9, 9, 9], 64),
            TC_NEXT,
        ),
        (
            "tc_route_ttl1",
            route_programs::ROUTE_IN,
            ip_to(ROUTED, ROUTE_UPLINK_MAC, 1),
            TC_NEXT,
        ),
        (
            "tc_egress_not_ip",
            programs::EGRESS,
            arp_any.clone(),
            TC_NEXT,
        ),
        ("tc_ingress_not_ip", programs::INGRESS, arp_any, TC_NEXT),
        (
            "tc_ingress_spoofed",
            programs::INGRESS,
            tcp_frame(C1, 40000, UPLINK, 22, ACK),
            TC_SHOT,
        ),
    ];
    // Rounds interleaved over the cases, median per case: the steps are a
    // few ns, less than the drift of a loaded machine over the ladder.
    const ROUNDS: usize = 5;
    let mut times = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for _ in 0..ROUNDS {
        for (i, (key, prog, pkt, want)) in cases.iter().enumerate() {
            let (rc, ns, got) = dp.run(prog, pkt, repeat)?;
            if rc != *want || got != *pkt {
                bail!("ladder {key}: verdict {rc}, expected {want} and the frame unchanged");
            }
            times[i].push(ns);
        }
    }
    let mut out = Vec::new();
    for ((key, ..), t) in cases.iter().zip(&times) {
        let desc = LADDER
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, d)| *d);
        out.push(json!({
            "key": key,
            "what": desc,
            "repeat_ns": median(t),
            "rounds_ns": t,
            "repeat": repeat,
        }));
    }
    Ok(out)
}

/// The programs part 1 loads.
const PROGRAMS: [&str; 5] = [
    programs::EGRESS,
    programs::INGRESS,
    programs::INSIDE,
    route_programs::ROUTE_IN,
    route_programs::ARP,
];

/// Verifier and JIT figures of the loaded programs.
pub(crate) fn program_stats(dp: &KernelDp) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for prog in PROGRAMS {
        let info = dp.info(prog)?;
        out.push(json!({
            "program": prog,
            "id": info.id(),
            "verified_insns": info.verified_instruction_count(),
            "xlated_bytes": info.size_translated(),
            "xlated_insns": info.size_translated().map(|b| b / 8),
            "jited_bytes": info.size_jitted(),
            "maps": info.map_ids().ok().flatten().map(|m| m.len()),
        }));
    }
    Ok(out)
}

/// Opens the SNAT flow C1:40000 -> REMOTE:443 with a SYN; returns the
/// outside port it was given.
pub(crate) fn open_snat(dp: &KernelDp) -> Result<u16> {
    let (rc, _, out) = dp.run(programs::EGRESS, &tcp_frame(C1, 40000, REMOTE, 443, SYN), 1)?;
    if rc != TC_OK || out.len() < 38 {
        bail!("snat_established: the opening SYN was not translated ({rc})");
    }
    Ok(u16::from_be_bytes([out[34], out[35]]))
}

/// Opens the DNAT flow REMOTE:50000 -> UPLINK:PUBLISHED_PORT with a SYN.
pub(crate) fn open_dnat(dp: &KernelDp) -> Result<()> {
    let (rc, _, _) = dp.run(
        programs::INGRESS,
        &tcp_frame(REMOTE, 50000, UPLINK, PUBLISHED_PORT, SYN),
        1,
    )?;
    if rc != TC_OK {
        bail!("dnat_established: the opening SYN was not translated ({rc})");
    }
    Ok(())
}

// The mirror entries of the three established paths: with them the packet
// a run rewrites translates back on the next, so `repeat` can time them.

/// SNAT: the flow UPLINK:q -> REMOTE:443 leaves as C1:40000.
pub(crate) fn mirror_snat(dp: &mut KernelDp, q: u16) -> Result<()> {
    dp.insert_flow(
        FlowKey::new(proto::TCP, UPLINK.octets(), q, REMOTE.octets(), 443),
        (C1, 40000),
        flow_flags::SEEN_OUT | flow_flags::SEEN_IN,
    )
}

/// Reply: C1:40000 is also an outside endpoint of UPLINK:q.
pub(crate) fn mirror_reply(dp: &mut KernelDp, q: u16) -> Result<()> {
    dp.insert_reverse(
        Endpoint::new(proto::TCP, C1.octets(), 40000),
        Endpoint::new(proto::TCP, UPLINK.octets(), q),
    )
}

/// DNAT: C1:4000 published (bound to that address) to UPLINK:8080, with
/// its flow.
pub(crate) fn mirror_dnat(dp: &mut KernelDp) -> Result<()> {
    dp.insert_publish(C1, CONTAINER_PORT, (UPLINK, PUBLISHED_PORT))?;
    dp.insert_flow(
        FlowKey::new(
            proto::TCP,
            UPLINK.octets(),
            PUBLISHED_PORT,
            REMOTE.octets(),
            50000,
        ),
        (C1, CONTAINER_PORT),
        flow_flags::SEEN_IN | flow_flags::OPENED_IN | flow_flags::PUBLISHED,
    )
}

/// Paths [`spin`] can run.
pub const SPIN_PATHS: &[&str] = &[
    "snat_established",
    "reply_reverse",
    "dnat_established",
    "hairpin_not_needed",
    "miss_egress",
    "miss_ingress",
    "routed_forward",
    "arp_miss",
];

/// Runs one warm path (as part 1 sets it up, empty conntrack) back to back
/// for `secs` seconds, for a profiler to sample: `perf record -e cpu-clock`
/// on its CPU, `bpftool prog show|dump|profile` on the printed ids. Returns
/// the mean kernel-timed ns per run.
pub fn spin(path: &str, secs: u64) -> Result<f64> {
    if !nix::unistd::geteuid().is_root() {
        bail!("loading BPF programs needs root");
    }
    let mut dp = KernelDp::new(262_144)?;
    // The established flows and their mirror entries, as in part 1.
    let q = open_snat(&dp)?;
    mirror_snat(&mut dp, q)?;
    mirror_reply(&mut dp, q)?;
    open_dnat(&dp)?;
    mirror_dnat(&mut dp)?;
    let (prog, pkt, repeat) = match path {
        "snat_established" => (
            programs::EGRESS,
            tcp_frame(C1, 40000, REMOTE, 443, ACK),
            100_000,
        ),
        "reply_reverse" => (
            programs::INGRESS,
            tcp_frame(REMOTE, 443, UPLINK, q, ACK),
            100_000,
        ),
        "dnat_established" => (
            programs::INGRESS,
            tcp_frame(REMOTE, 50000, UPLINK, PUBLISHED_PORT, ACK),
            100_000,
        ),
        "hairpin_not_needed" => (
            programs::INSIDE,
            tcp_frame(C1, 40000, REMOTE, 443, ACK),
            100_000,
        ),
        "miss_egress" => (
            programs::EGRESS,
            tcp_frame(OTHER, 5555, REMOTE, 80, ACK),
            100_000,
        ),
        "miss_ingress" => (
            programs::INGRESS,
            tcp_frame(REMOTE, 80, UPLINK, 22, ACK),
            100_000,
        ),
        "routed_forward" => (
            route_programs::ROUTE_IN,
            with_ttl_macs(
                tcp_frame(PEER, 443, ROUTED, 40000, ACK),
                255,
                ROUTE_UPLINK_MAC,
                PEER_MAC,
            ),
            ROUTED_RUNS_PER_CALL,
        ),
        "arp_miss" => (
            route_programs::ARP,
            arp_frame([0xff; 6], 1, PEER_MAC, PEER, [0; 6], OTHER),
            100_000,
        ),
        other => bail!("unknown path {other:?}; one of {}", SPIN_PATHS.join(", ")),
    };
    for name in PROGRAMS {
        eprintln!("bench: spin: {name} is program id {}", dp.info(name)?.id());
    }
    eprintln!(
        "bench: spin: {path} ({prog}) for {secs} s, pid {}",
        std::process::id()
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut total_ns) = (0u64, 0f64);
    while Instant::now() < deadline {
        let (_, ns, _) = dp.run(prog, &pkt, repeat)?;
        runs += u64::from(repeat);
        total_ns += ns * f64::from(repeat);
    }
    Ok(total_ns / runs.max(1) as f64)
}
