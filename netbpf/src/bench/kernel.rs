//! Part 1: the in-kernel cost per path at 0, 10k and 1M flows.

use std::time::Instant;

use anyhow::{Result, bail};
use netbpf_common::Counter;
use serde_json::{Value, json};

use crate::{containers::programs as route_programs, datapath::programs, netns::Netns};

use super::{kernel_dp::*, ladder::*, packets::*};

/// Single-shot samples (repeat = 1) of `make(i)` for i in 0..n, each
/// checked for verdict `want`.
pub(crate) fn single_shots(
    dp: &KernelDp,
    prog: &str,
    n: u32,
    want: u32,
    path: &str,
    make: impl Fn(u32) -> Vec<u8>,
) -> Result<Vec<f64>> {
    // Build the packets first so the loop measures only the runs.
    let pkts: Vec<Vec<u8>> = (0..n).map(make).collect();
    let mut out = Vec::with_capacity(pkts.len());
    for pkt in &pkts {
        let (rc, ns, _) = dp.run(prog, pkt, 1)?;
        if rc != want {
            bail!("{path}: verdict {rc}, expected {want}: the bench is not measuring that path");
        }
        out.push(ns);
    }
    Ok(out)
}

/// Records a path's warm (`repeat`) time.
pub(crate) fn set_repeat(
    paths: &mut serde_json::Map<String, Value>,
    key: &str,
    ns: f64,
    repeat: u32,
) {
    if let Some(p) = paths.get_mut(key) {
        p["repeat_ns"] = json!(ns);
        p["repeat"] = json!(repeat & !1);
    }
}

pub(crate) fn dist(samples: &[f64]) -> Value {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    json!({
        "n": v.len(),
        "median_ns": percentile(&v, 50.0),
        "p10_ns": percentile(&v, 10.0),
        "p90_ns": percentile(&v, 90.0),
    })
}

/// The paths, in report order: (key, description).
pub(crate) const PATHS: &[(&str, &str)] = &[
    (
        "snat_new",
        "SNAT, new flow (egress SYN, new mapping + flow)",
    ),
    ("snat_established", "SNAT, established (egress ACK)"),
    ("reply_reverse", "reply reverse-translation (ingress ACK)"),
    (
        "dnat_new",
        "DNAT, new flow (ingress SYN to a published port)",
    ),
    ("dnat_established", "DNAT, established (ingress ACK)"),
    (
        "snat_fast",
        "SNAT, established, fast path (netbpf_fast_out: translate + FIB + redirect to the uplink)",
    ),
    (
        "snat_fast_seed",
        "SNAT, established, fast path, CHECKSUM_PARTIAL seed (a container's packet over a veth: the checksum helpers)",
    ),
    (
        "reply_fast",
        "reply, fast path (ingress ACK: translate + FIB + redirect to the container's link)",
    ),
    (
        "dnat_fast",
        "DNAT, established, fast path (ingress ACK: translate + FIB + redirect)",
    ),
    (
        "reply_xdp",
        "reply, XDP, generic-mode redirect (netbpf_arp: lookup + translate + FIB + redirect_map)",
    ),
    ("dnat_xdp", "DNAT, established, XDP, generic-mode redirect"),
    (
        "reply_xdp_handoff",
        "reply, XDP, native hand-off (netbpf_arp: lookup + translate + FIB + metadata record, pass to tc)",
    ),
    (
        "dnat_xdp_handoff",
        "DNAT, established, XDP, native hand-off",
    ),
    (
        "hairpin_not_needed",
        "inside ingress, no hairpin (container to outside)",
    ),
    ("miss_egress", "miss, egress (source not masqueraded)"),
    ("miss_ingress", "miss, ingress (host port, not published)"),
    (
        "routed_forward",
        "routed forward (uplink tc ingress to a routed container)",
    ),
    (
        "arp_reply",
        "ARP reply (XDP, request for a routed container)",
    ),
    ("arp_miss", "miss, XDP ARP (request for another address)"),
];

/// The namespace part 1 runs in (`nbb-k-<pid>`, removed on drop): what
/// the fast path's FIB lookups need to succeed, as on a real host. The
/// containers' link `nbb-kin` (10.77.0.1/16, C1's MAC known) and an uplink
/// `nbb-kup` (REMOTE on-link, its MAC known), forwarding on. Packets never
/// leave it: BPF_PROG_TEST_RUN returns the verdict without redirecting.
fn fib_netns() -> Result<Netns> {
    let ns = Netns::create(&format!("nbb-k-{}", std::process::id()))?;
    for (dev, peer, addr, neigh, mac) in [
        ("nbb-kin", "nbb-kinp", "10.77.0.1/16", C1, FAST_C1_MAC),
        (
            "nbb-kup",
            "nbb-kupp",
            "198.51.100.1/24",
            REMOTE,
            FAST_REMOTE_MAC,
        ),
    ] {
        ns.ip(&["link", "add", dev, "type", "veth", "peer", "name", peer])?;
        ns.ip(&["addr", "add", addr, "dev", dev])?;
        ns.ip(&["link", "set", dev, "up"])?;
        ns.ip(&["link", "set", peer, "up"])?;
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        let neigh = neigh.to_string();
        ns.ip(&[
            "neigh",
            "add",
            &neigh,
            "lladdr",
            &mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }
    ns.sysctl("net.ipv4.conf.all.forwarding=1")?;
    Ok(ns)
}

/// C1's MAC in [`fib_netns`].
const FAST_C1_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x02];
/// REMOTE's MAC in [`fib_netns`].
const FAST_REMOTE_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x07];

pub(crate) fn kernel_bench(quick: bool) -> Result<Value> {
    let ns = fib_netns()?;
    ns.run(move || kernel_bench_here(quick))?
}

/// [`kernel_bench`], on a thread inside its namespace.
fn kernel_bench_here(quick: bool) -> Result<Value> {
    let uplink_ifindex = nix::net::if_::if_nametoindex("nbb-kup")?;
    let samples: u32 = if quick { 2000 } else { 20000 };
    let repeat: u32 = if quick { 20_000 } else { 200_000 };
    let fills: [u32; 3] = [0, 10_000, 1_000_000];
    let mut tables = Vec::new();
    let mut ladder_out = Vec::new();
    let mut programs_out = Vec::new();
    for fill in fills {
        // Room for the pre-filled flows, the new flows of the two new-flow
        // paths and a margin (a full hash map would make inserts fail).
        let capacity = (fill + 2 * samples + 4096).max(262_144);
        let load_start = Instant::now();
        let mut dp = KernelDp::new(capacity)?;
        dp.set_uplink_ifindex(uplink_ifindex)?;
        // The paths as before the fast path (translate, then the stack);
        // the fast path's rows come after them.
        dp.set_via_stack(true)?;
        let load = load_start.elapsed();
        let prefill = dp.prefill(fill)?;
        eprintln!(
            "bench:   conntrack {fill} entries (capacity {capacity}): loaded in {:.2} s, filled in {:.2} s",
            load.as_secs_f64(),
            prefill.as_secs_f64()
        );
        let mut paths = serde_json::Map::new();

        // Paths that leave the packet unchanged: also with `repeat` (the
        // kernel reruns the program on the same skb, so this is only valid
        // when the program does not rewrite it).
        let miss_e = tcp_frame(OTHER, 5555, REMOTE, 80, ACK);
        let miss_i = tcp_frame(REMOTE, 80, UPLINK, 22, ACK);
        let hairpin = tcp_frame(C1, 40000, REMOTE, 443, ACK);
        let unchanged: [(&str, &str, &Vec<u8>, u32); 3] = [
            ("miss_egress", programs::EGRESS, &miss_e, TC_NEXT),
            ("miss_ingress", programs::INGRESS, &miss_i, TC_NEXT),
            ("hairpin_not_needed", programs::INSIDE, &hairpin, TC_NEXT),
        ];
        let mut repeat_ns = std::collections::HashMap::new();
        for (key, prog, pkt, want) in unchanged {
            let (rc, ns, _) = dp.run(prog, pkt, repeat)?;
            if rc != want {
                bail!("{key}: verdict {rc}, expected {want}");
            }
            repeat_ns.insert(key, ns);
            let shots = single_shots(&dp, prog, samples, want, key, |_| pkt.clone())?;
            paths.insert(
                key.to_owned(),
                json!({"single": dist(&shots), "repeat_ns": ns, "repeat": repeat}),
            );
        }

        // SNAT new flow: a distinct inside endpoint per packet.
        let shots = single_shots(&dp, programs::EGRESS, samples, TC_OK, "snat_new", |i| {
            tcp_frame(
                addr_in([10, 77], 256 + i),
                10000 + (i % 50000) as u16,
                REMOTE,
                443,
                SYN,
            )
        })?;
        paths.insert("snat_new".into(), json!({"single": dist(&shots)}));

        // SNAT established and its reply.
        let outside_port = open_snat(&dp)?;
        let est = tcp_frame(C1, 40000, REMOTE, 443, ACK);
        let shots = single_shots(
            &dp,
            programs::EGRESS,
            samples,
            TC_OK,
            "snat_established",
            |_| est.clone(),
        )?;
        paths.insert("snat_established".into(), json!({"single": dist(&shots)}));
        let reply = tcp_frame(REMOTE, 443, UPLINK, outside_port, ACK);
        let shots = single_shots(
            &dp,
            programs::INGRESS,
            samples,
            TC_OK,
            "reply_reverse",
            |_| reply.clone(),
        )?;
        paths.insert("reply_reverse".into(), json!({"single": dist(&shots)}));

        // DNAT new flow: a distinct client endpoint per SYN.
        let shots = single_shots(&dp, programs::INGRESS, samples, TC_OK, "dnat_new", |i| {
            tcp_frame(
                addr_in([198, 18], 1 + i),
                20000 + (i % 40000) as u16,
                UPLINK,
                PUBLISHED_PORT,
                SYN,
            )
        })?;
        paths.insert("dnat_new".into(), json!({"single": dist(&shots)}));
        open_dnat(&dp)?;
        let est = tcp_frame(REMOTE, 50000, UPLINK, PUBLISHED_PORT, ACK);
        let shots = single_shots(
            &dp,
            programs::INGRESS,
            samples,
            TC_OK,
            "dnat_established",
            |_| est.clone(),
        )?;
        paths.insert("dnat_established".into(), json!({"single": dist(&shots)}));

        // The same three established paths warm, with `repeat`: mirror
        // entries make the rewritten packet translate back.
        mirror_snat(&mut dp, outside_port)?;
        let ns = dp.ping_pong(
            programs::EGRESS,
            &tcp_frame(C1, 40000, REMOTE, 443, ACK),
            Counter::SnatPackets,
            repeat,
            "snat_established",
        )?;
        set_repeat(&mut paths, "snat_established", ns, repeat);
        mirror_reply(&mut dp, outside_port)?;
        let ns = dp.ping_pong(
            programs::INGRESS,
            &reply,
            Counter::ReversePackets,
            repeat,
            "reply_reverse",
        )?;
        set_repeat(&mut paths, "reply_reverse", ns, repeat);
        mirror_dnat(&mut dp)?;
        let ns = dp.ping_pong(
            programs::INGRESS,
            &est,
            Counter::DnatPackets,
            repeat,
            "dnat_established",
        )?;
        set_repeat(&mut paths, "dnat_established", ns, repeat);

        // The same established flows on the fast path: each run also
        // decrements the TTL and rewrites the MACs (and SNAT the source),
        // so no repeat: single shots only.
        dp.set_via_stack(false)?;
        let fast: [(&str, &str, Vec<u8>); 4] = [
            (
                "snat_fast",
                programs::FAST_OUT,
                tcp_frame(C1, 40000, REMOTE, 443, ACK),
            ),
            (
                "snat_fast_seed",
                programs::FAST_OUT,
                with_seed(tcp_frame(C1, 40000, REMOTE, 443, ACK)),
            ),
            ("reply_fast", programs::INGRESS, reply.clone()),
            ("dnat_fast", programs::INGRESS, est.clone()),
        ];
        for (key, prog, pkt) in fast {
            let shots = single_shots(&dp, prog, samples, TC_REDIRECT, key, |_| pkt.clone())?;
            paths.insert(key.to_owned(), json!({"single": dist(&shots)}));
        }
        // The same two inbound flows in the uplink's XDP program (their
        // reply halves were written above): redirected (generic mode) and
        // handed off to tc (native mode). Each run rewrites the frame:
        // single shots only.
        let kin = nix::net::if_::if_nametoindex("nbb-kin")?;
        for (handoff, want, suffix) in [
            (false, XDP_REDIRECT, "xdp"),
            (true, XDP_PASS, "xdp_handoff"),
        ] {
            dp.set_xdp(handoff, kin)?;
            for (flow, pkt) in [("reply", &reply), ("dnat", &est)] {
                let key = format!("{flow}_{suffix}");
                let sent = dp.counter(Counter::XdpFastIn)? + dp.counter(Counter::XdpHandoffIn)?;
                let shots = single_shots(&dp, route_programs::ARP, samples, want, &key, |_| {
                    pkt.clone()
                })?;
                let taken =
                    dp.counter(Counter::XdpFastIn)? + dp.counter(Counter::XdpHandoffIn)? - sent;
                if taken != u64::from(samples) {
                    bail!("{key}: XDP took {taken} of {samples}: not measuring that path");
                }
                paths.insert(key, json!({"single": dist(&shots)}));
            }
        }
        dp.set_via_stack(true)?;

        // Routed forward (netbpf_route_in): the TTL only goes down, so no
        // mirror entry can undo a run; instead each call forwards a TTL-255
        // frame 254 times (see `KernelDp::routed_warm`), and there are as
        // many calls as make `repeat` runs in all.
        let calls = (repeat / ROUTED_RUNS_PER_CALL).max(16);
        let per_call = dp.routed_warm(calls)?;
        let fwd = with_ttl_macs(
            tcp_frame(PEER, 443, ROUTED, 40000, ACK),
            64,
            ROUTE_UPLINK_MAC,
            PEER_MAC,
        );
        let shots = single_shots(
            &dp,
            route_programs::ROUTE_IN,
            samples,
            TC_REDIRECT,
            "routed_forward",
            |_| fwd.clone(),
        )?;
        paths.insert(
            "routed_forward".into(),
            json!({
                "single": dist(&shots),
                "repeat_ns": median(&per_call),
                "repeat": calls * ROUTED_RUNS_PER_CALL,
                "repeat_calls": calls,
                "repeat_runs_per_call": ROUTED_RUNS_PER_CALL,
                "repeat_per_call": dist(&per_call),
            }),
        );

        // ARP (XDP netbpf_arp). A request for a routed container becomes a
        // reply, which the next run passes: `repeat` cannot time the
        // answer. It is timed single-shot, minus an XDP floor taken from
        // the ARP miss (a request for another address: unchanged, so
        // measured both ways) the same way as the tc floor below.
        let req = arp_frame([0xff; 6], 1, PEER_MAC, PEER, [0; 6], ROUTED);
        let want = arp_frame(PEER_MAC, 2, ROUTE_UPLINK_MAC, ROUTED, PEER_MAC, PEER);
        let (rc, _, out) = dp.run(route_programs::ARP, &req, 1)?;
        if rc != XDP_TX || out != want {
            bail!("arp_reply: verdict {rc} or a wrong reply: not measuring that path");
        }
        let miss = arp_frame([0xff; 6], 1, PEER_MAC, PEER, [0; 6], OTHER);
        let (rc, arp_miss_ns, out) = dp.run(route_programs::ARP, &miss, repeat)?;
        if rc != XDP_PASS || out != miss {
            bail!("arp_miss: verdict {rc}, expected {XDP_PASS} and the frame unchanged");
        }
        let shots = single_shots(
            &dp,
            route_programs::ARP,
            samples,
            XDP_PASS,
            "arp_miss",
            |_| miss.clone(),
        )?;
        paths.insert(
            "arp_miss".into(),
            json!({"single": dist(&shots), "repeat_ns": arp_miss_ns, "repeat": repeat}),
        );
        let before = dp.counter(Counter::ArpReplies)?;
        let shots = single_shots(
            &dp,
            route_programs::ARP,
            samples,
            XDP_TX,
            "arp_reply",
            |_| req.clone(),
        )?;
        if dp.counter(Counter::ArpReplies)? - before != u64::from(samples) {
            bail!("arp_reply: not every request was answered");
        }
        paths.insert("arp_reply".into(), json!({"single": dist(&shots)}));

        // The timer floor of a single shot: what a one-run measurement adds
        // to the program's own cost (entering the timed section, one
        // clock read, a cold first run), from the miss path measured both
        // ways.
        let miss_single = paths["miss_egress"]["single"]["median_ns"]
            .as_f64()
            .unwrap_or(0.0);
        let floor = (miss_single - repeat_ns["miss_egress"]).max(0.0);
        // The XDP program's own floor, from its miss path.
        let arp_miss_single = paths["arp_miss"]["single"]["median_ns"]
            .as_f64()
            .unwrap_or(0.0);
        let xdp_floor = (arp_miss_single - arp_miss_ns).max(0.0);
        for (key, _) in PATHS {
            let f = if key.starts_with("arp_") {
                xdp_floor
            } else {
                floor
            };
            if let Some(p) = paths.get_mut(*key) {
                let m = p["single"]["median_ns"].as_f64().unwrap_or(0.0);
                p["cost_ns"] = json!((m - f).max(0.0));
            }
        }
        // The ARP answer's warm figure is an estimate: its single shot
        // minus the XDP floor.
        if let Some(p) = paths.get_mut("arp_reply") {
            p["repeat_ns"] = p["cost_ns"].clone();
            p["repeat_estimated"] = json!(true);
        }
        // The cost ladder and the programs' sizes do not depend on the
        // table: once, with the empty one.
        if tables.is_empty() {
            ladder_out = ladder(&dp, repeat)?;
            programs_out = program_stats(&dp)?;
        }
        tables.push(json!({
            "conntrack_entries": fill,
            "capacity": capacity,
            "load_s": load.as_secs_f64(),
            "prefill_s": prefill.as_secs_f64(),
            "single_shot_floor_ns": floor,
            "xdp_single_shot_floor_ns": xdp_floor,
            "paths": paths,
        }));
    }
    Ok(json!({
        "method": "BPF_PROG_TEST_RUN on the loaded (not attached) programs, CONNTRACK \
                   pre-filled from userspace. repeat_ns: kernel-timed average of `repeat` runs \
                   on one skb; valid for paths that leave the packet unchanged (misses, no \
                   hairpin) and, for the established translations, made valid by mirror \
                   entries that translate the rewritten packet back (checked: the path's \
                   counter grew by `repeat` and the packet came back unchanged). single: \
                   repeat=1, one syscall per packet (new flows need a distinct tuple per \
                   run); cost_ns = its median minus the single-shot floor (miss_egress single \
                   median minus its repeat time). routed_forward: the TTL only goes down, so \
                   repeat = 254 on a TTL-255 frame per call (every run forwards; the routed \
                   container's MAC is the uplink's so the frame stays addressed to the uplink; \
                   checked: routed_in grew by 254 per call, TTL 1 and a valid checksum at the \
                   end), repeat_ns = median of the per-call averages. arp_reply: a reply is \
                   not a request, so repeat cannot time it; repeat_ns is an estimate, its \
                   single-shot median minus the XDP floor (arp_miss single median minus its \
                   repeat time). ladder: warm costs of cheap exits of the real programs, whose \
                   differences price one step (a helper, a map lookup). programs: the \
                   kernel's sizes of the loaded programs. Part 1 runs in a namespace of its \
                   own whose FIB knows the container and the remote (veths, permanent \
                   neighbours, forwarding on); the rows without `_fast` run with \
                   [datapath] fast_path = false (translate, hand to the stack), the `_fast` \
                   rows with the fast path (translate, FIB lookup, TTL, MACs, redirect).",
        "samples_per_path": samples,
        "repeat": repeat,
        "tables": tables,
        "ladder": ladder_out,
        "programs": programs_out,
    }))
}
