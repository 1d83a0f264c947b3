//! Part 2: router CPU per packet, netbpf (through the stack, on its tc
//! fast path and with XDP) against iptables-nft, plain routing and an XDP
//! redirect-only floor, inbound and outbound, with trafgen in the lab and
//! the receiver reduced to count-and-drop ([`super::sink`]): the run over
//! every lab of the matrix ([`super::rig`]), each with its phases
//! ([`super::phase`]), saturation, latency, and TCP throughput.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    latency,
    measure::*,
    options::*,
    phase::phase,
    rig::{Direction, Frame, PORT_SEQUENCE_LEN, build_rig, plans_of},
    router_stats, saturation, sink, throughput,
};

/// The most outbound new flows per phase: three quarters of the port
/// range. The container's ports count up, so a port whose own number is
/// taken (a published port, an earlier flow's) is moved to a random free
/// one, which lies above the count, and displaces the flow that reaches
/// it in turn: the chain runs to the end of the count, where, with 99 % of
/// the range in use, its last probe fails about half the time
/// (`drop_port_exhausted`). At three quarters, the last probe's 32 tries
/// all fail once in some 10,000 chains.
const OUTBOUND_NEW_FLOWS: u64 = PORT_SEQUENCE_LEN * 3 / 4;

pub(crate) fn router_bench(opts: &Options) -> Result<Value> {
    let (runs, secs, pps): (usize, u64, u64) = if opts.quick {
        (1, 1, 50_000)
    } else {
        (3, 4, 50_000)
    };
    // A router slower than the rate makes trafgen slow down; it is stopped
    // after twice the phase time (plus a second).
    let limit = Duration::from_secs(2 * secs + 1);
    let plans = plans_of(&opts.variants)?;
    let mut rows: Vec<Value> = Vec::new();
    for run in 0..runs {
        // Interleaved: every run goes through every variant, starting at a
        // different one each time.
        for k in 0..plans.len() {
            let plan = plans[(k + run) % plans.len()];
            let label = format!(
                "{} {} {}",
                plan.variant.name(),
                plan.ports,
                plan.frame.name()
            );
            let rig = build_rig(opts, plan.variant, plan.ports)
                .with_context(|| format!("setting up {label}"))?;
            for direction in plan.directions() {
                let what = format!("{label} {}", direction.name());
                let est = phase(&rig, direction, false, plan.frame, pps, pps * secs, limit)
                    .with_context(|| format!("{what}: established phase"))?;
                // The outbound new flows count ports up from 1024.
                let new_count = match direction {
                    Direction::Inbound => pps * secs,
                    Direction::Outbound => (pps * secs).min(OUTBOUND_NEW_FLOWS),
                };
                let new = phase(&rig, direction, true, plan.frame, pps, new_count, limit)
                    .with_context(|| format!("{what}: new-flow phase"))?;
                let saturated = saturation::saturation(&rig, direction, plan.frame)
                    .with_context(|| format!("{what}: saturation"))?;
                eprintln!(
                    "bench:   run {} {what:<32} established {:>6.0} ns/pkt router, {:>6.0} both CPUs ({}/{} delivered), new flow {:>6.0} / {:>6.0} ({}/{}), saturation {:.0} kpps, install {:.3} s",
                    run + 1,
                    est.ns_per_packet(),
                    est.all_ns_per_packet(),
                    est.delivered,
                    est.sent,
                    new.ns_per_packet(),
                    new.all_ns_per_packet(),
                    new.delivered,
                    new.sent,
                    saturated["delivered_pps"].as_f64().unwrap_or(f64::NAN) / 1e3,
                    rig.install_s
                );
                rows.push(json!({
                    "run": run + 1,
                    "variant": plan.variant.name(),
                    "published_ports": plan.ports,
                    "frame": plan.frame.name(),
                    "ip_bytes": plan.frame.ip_bytes(),
                    "direction": direction.name(),
                    "install_s": rig.install_s,
                    "established": est.json(),
                    "new_flow": new.json(),
                    "saturation": saturated,
                }));
            }
            // Last on the rig: it takes the count-and-drop filters away.
            if plan.frame == Frame::Small && plan.ports == 0 {
                sink::remove(&rig.container().ns, "eth0")?;
                sink::remove(rig.far(), "eth0")?;
                for direction in plan.directions() {
                    let l = latency::latency(&rig, direction)
                        .with_context(|| format!("{label} {}: latency", direction.name()))?;
                    eprintln!(
                        "bench:   run {} {label} {:<9} latency p50 {:.1} µs, p99 {:.1} µs ({} lost) at {}/s",
                        run + 1,
                        direction.name(),
                        l["p50_us"].as_f64().unwrap_or(f64::NAN),
                        l["p99_us"].as_f64().unwrap_or(f64::NAN),
                        l["lost"],
                        latency::RATE,
                    );
                    if let Some(row) = rows.iter_mut().rev().find(|r| {
                        router_stats::is(
                            r,
                            plan.variant.name(),
                            0,
                            plan.frame.name(),
                            direction.name(),
                        )
                    }) {
                        row["latency"] = l;
                    }
                }
            }
            drop(rig);
        }
    }
    let (summary, ratios) = router_stats::aggregate(&rows, &plans);
    eprintln!("bench:   TCP throughput through the NAT (iperf3)");
    let tcp = throughput::throughput(opts, &plans);
    Ok(json!({
        "tcp_throughput": tcp,
        "method": METHOD,
        "runs": runs,
        "seconds_per_phase": secs,
        "rate_pps": pps,
        "router_cpu": ROUTER_CPU,
        "generator_cpu": GEN_CPU,
        "rows": rows,
        "summary": summary,
        "ratios": ratios,
    }))
}

const METHOD: &str = "Lab topology (outside -- host -- container c1; for routed: peer -- host \
    -- routed container), rebuilt per variant and frame size. Variants: xdp-floor (a native XDP \
    program on the host's two interfaces that only rewrites MACs and redirects: the floor), \
    plain (routing to the container's own address, no NAT), routed (a [[container]] reached at \
    its own address from a peer on the uplink, netbpf's routing programs), iptables-nft (DNAT \
    of host port 8080 placed after N other DNAT rules, MASQUERADE of 10.77.0.0/24 out of the \
    uplink, conntrack), netbpf-stack ([datapath] fast_path = false: translated packets go \
    through the host's stack), netbpf-tc (xdp = false: the fast path in tc only) and \
    netbpf-fast (the default: translated packets are redirected to their egress device, \
    established inbound flows from the uplink's XDP program, generic mode on the lab's veth \
    uplink), netbpf-native (xdp_mode = \"native\": the uplink's XDP program in driver mode \
    translates established inbound flows and hands them to the uplink's tc ingress in the \
    skb's metadata; inbound only, outbound it is netbpf-fast), netbpf with 8080 plus N other \
    [[publish]] ports. trafgen on CPU 0 sends UDP at a fixed rate: inbound to the container \
    (floor, plain, routed) or to 203.0.113.1:8080; outbound from the container to the far end \
    (no NAT for floor, plain, routed). RPS steers the receive processing of the host's uplink \
    and of the container's host-side veth to CPU 1; both ends have GRO on and transmit \
    checksum offload off; the receiving end counts and drops every IPv4 packet at its tc \
    ingress (clsact + cls_bpf direct-action with the classic BPF program `ret #2`, counted by \
    the qdisc's drop counter). Router cost = CPU 1's softirq time (/proc/stat, tick-sampled) \
    from the first packet sent until the receiver's count stops moving, minus CPU 1's softirq \
    rate in a 0.5 s idle window just before, divided by delivered packets; all_cpus_ns_per_packet \
    is the same over both CPUs (the floor's XDP program runs on the generator's CPU) and is \
    what the vs_xdp_floor ratios use (router_busy_ns_per_packet is from cpuidle residency, \
    which counts other processes too). Established phase: one fixed source tuple. New-flow \
    phase: inbound a random source address (198.18/16) and port per packet; outbound the \
    container's source port counting up from 1024 (a new mapping per packet), at most three \
    quarters of the port range. 64-byte frames, inbound with 0, 1000 and 10000 extra \
    published ports and outbound with 0; 1500-byte IP packets with 0, both directions. \
    Saturation: live frames (BPF_PROG_TEST_RUN, BPF_F_TEST_XDP_LIVE_FRAMES) of the \
    established tuple for 2 s, delivered per second (bounded by the generator's CPU for every \
    variant but the floor). Latency: UDP request/response at 1000/s, 64-byte rigs with 0 \
    ports, after the count-and-drop filters are removed. Lost packets are looked for in the \
    generator's tx_dropped (router backlog full), the host's rx_dropped/tx_dropped on the two \
    interfaces and netbpf's drop_* counters; netbpf's counters that moved (all fast_path_*) \
    are recorded per phase.";
