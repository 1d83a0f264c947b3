//! Part 2's section of the summary: router CPU per packet per variant, the
//! ratios, what the fast path did, and what was lost.

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    fmt::{fmt_ns, fmt_ratio},
    packets::median,
    router_stats::{PHASES, is},
};

const FRAMES: [&str; 2] = ["64B", "1500B"];
const DIRECTIONS: [&str; 2] = ["inbound", "outbound"];

fn frame_text(frame: &str) -> &str {
    match frame {
        "64B" => "64 B",
        "1500B" => "1500 B",
        other => other,
    }
}

/// `delivered/sent`, bold when something was lost.
fn delivered(a: &Value, phase: &str) -> String {
    let d = a[format!("{phase}_delivered")].as_u64().unwrap_or(0);
    let s = a[format!("{phase}_sent")].as_u64().unwrap_or(0);
    if d < s {
        format!("**{d}/{s}**")
    } else {
        format!("{d}/{s}")
    }
}

/// A cost cell: median, with min–max over several runs.
fn cost(a: &Value, phase: &str) -> String {
    let p = &a[format!("{phase}_ns")];
    let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
    if p["n"].as_u64().unwrap_or(0) > 1 {
        format!(
            "{} ({}–{})",
            fmt_ns(f("median")),
            fmt_ns(f("min")),
            fmt_ns(f("max"))
        )
    } else {
        fmt_ns(f("median"))
    }
}

/// The rows of one summary entry.
fn rows_of<'a>(r: &'a Value, a: &Value) -> Vec<&'a Value> {
    let (variant, ports) = (
        a["variant"].as_str().unwrap_or(""),
        a["published_ports"].as_u64().unwrap_or(0) as u32,
    );
    let (frame, dir) = (
        a["frame"].as_str().unwrap_or(""),
        a["direction"].as_str().unwrap_or(""),
    );
    r["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|row| is(row, variant, ports, frame, dir))
                .collect()
        })
        .unwrap_or_default()
}

/// netbpf's counter `name` in `phase`, summed over `rows`.
fn counter(rows: &[&Value], phase: &str, name: &str) -> u64 {
    rows.iter()
        .filter_map(|row| row[phase]["netbpf_counters"][name].as_u64())
        .sum()
}

/// The non-zero counters with `prefix` (but not those in `except`) over
/// both phases of `rows`, as "name N, ...".
/// [`moved`] for several prefixes, in one list.
fn moved_any(rows: &[&Value], prefixes: &[(&str, &[&str])]) -> String {
    let parts: Vec<String> = prefixes
        .iter()
        .map(|(prefix, except)| moved(rows, prefix, except))
        .filter(|text| text != "–")
        .collect();
    if parts.is_empty() {
        "–".to_owned()
    } else {
        parts.join(", ")
    }
}

fn moved(rows: &[&Value], prefix: &str, except: &[&str]) -> String {
    let mut sums: Vec<(String, u64)> = Vec::new();
    for row in rows {
        for phase in PHASES {
            let Some(m) = row[phase]["netbpf_counters"].as_object() else {
                continue;
            };
            for (name, v) in m {
                if !name.starts_with(prefix) || except.contains(&name.as_str()) {
                    continue;
                }
                let v = v.as_u64().unwrap_or(0);
                match sums.iter_mut().find(|(n, _)| n == name) {
                    Some((_, total)) => *total += v,
                    None => sums.push((name.clone(), v)),
                }
            }
        }
    }
    let text: Vec<String> = sums
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(n, v)| format!("`{n}` {v}"))
        .collect();
    if text.is_empty() {
        "–".to_owned()
    } else {
        text.join(", ")
    }
}

/// Part 2 of the summary; `plot` is the SVG's path relative to it.
pub(crate) fn router_summary(s: &mut String, r: &Value, plot: &str) {
    let _ = writeln!(
        s,
        "\n## Router cost: plain routing, iptables-nft, netbpf through the stack, netbpf's fast path\n"
    );
    if let Some(why) = r["skipped"].as_str() {
        let _ = writeln!(s, "Skipped: {why}.");
        return;
    }
    let summary = r["summary"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        s,
        "Router CPU (softirq time of the router CPU) per delivered packet, the receiver \
         counting and dropping at its tc ingress; median (min–max) over {} run(s), {} s per \
         phase at {} pps. Inbound: outside → published port → container (plain: straight to \
         the container); outbound: container → outside, masqueraded (plain: forwarded as is).\n\n\
         ![plot]({plot})\n",
        r["runs"], r["seconds_per_phase"], r["rate_pps"]
    );
    let _ = writeln!(
        s,
        "| direction | frame | variant | published ports | established | new flow | delivered/sent (established; new) | install (netbpf: daemon start; iptables: restore; floor: load + attach) |\n\
         |---|---|---|---:|---:|---:|---:|---:|"
    );
    for frame in FRAMES {
        for dir in DIRECTIONS {
            for a in summary
                .iter()
                .filter(|a| a["frame"] == frame && a["direction"] == dir)
            {
                let installs: Vec<f64> = rows_of(r, a)
                    .iter()
                    .filter_map(|row| row["install_s"].as_f64())
                    .collect();
                let install = if a["variant"] == "plain" {
                    "–".to_owned()
                } else {
                    format!("{:.3} s", median(&installs))
                };
                let _ = writeln!(
                    s,
                    "| {dir} | {} | {} | {} | {} | {} | {}; {} | {install} |",
                    frame_text(frame),
                    a["variant"].as_str().unwrap_or("?"),
                    a["published_ports"],
                    cost(a, "established"),
                    cost(a, "new_flow"),
                    delivered(a, "established"),
                    delivered(a, "new_flow"),
                );
            }
        }
    }

    let _ = writeln!(
        s,
        "\nRatios of the medians (plain: the same direction and frame without NAT; \
         \"extra\" = (netbpf − plain) / (iptables − plain), the share of what iptables-nft \
         adds over plain routing that netbpf adds):\n\n\
         | direction | frame | published ports | flows | fast / iptables | stack / iptables | fast extra / iptables extra | stack extra / iptables extra | fast / plain |\n\
         |---|---|---:|---|---:|---:|---:|---:|---:|"
    );
    for q in r["ratios"].as_array().cloned().unwrap_or_default() {
        for (phase, flows) in [("established", "established"), ("new_flow", "new")] {
            let f = |k: &str| fmt_ratio(q[phase][k].as_f64().unwrap_or(f64::NAN));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {flows} | {} | {} | {} | {} | {} |",
                q["direction"].as_str().unwrap_or("?"),
                frame_text(q["frame"].as_str().unwrap_or("?")),
                q["published_ports"],
                f("netbpf_fast_over_iptables"),
                f("netbpf_stack_over_iptables"),
                f("netbpf_fast_extra_over_iptables_extra"),
                f("netbpf_stack_extra_over_iptables_extra"),
                f("netbpf_fast_over_plain"),
            );
        }
    }

    let _ = writeln!(
        s,
        "\nAgainst the XDP floor (issue 16's targets), on softirq time of both CPUs per \
         delivered packet (an XDP program on a veth runs on the CPU that sent to it, the \
         generator's, so the router CPU alone would not see the floor's cost): each variant \
         over the floor, and \"extra\" = (netbpf − floor) / (iptables − floor). Targets: \
         established fast / floor ≤ 1.1 and fast extra ≤ 0.33; new flows fast extra ≤ 0.2.\n\n\
         | direction | frame | published ports | flows | floor (ns) | plain / floor | routed / floor | iptables / floor | fast / floor | native / floor | tc / floor | stack / floor | fast extra / iptables extra | native extra / iptables extra | tc extra / iptables extra | stack extra / iptables extra |\n\
         |---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for q in r["ratios"].as_array().cloned().unwrap_or_default() {
        for (phase, flows) in [("established", "established"), ("new_flow", "new")] {
            let v = &q[phase]["vs_xdp_floor"];
            let f = |k: &str| fmt_ratio(v[k].as_f64().unwrap_or(f64::NAN));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {flows} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                q["direction"].as_str().unwrap_or("?"),
                frame_text(q["frame"].as_str().unwrap_or("?")),
                q["published_ports"],
                v["xdp_floor_ns"].as_f64().unwrap_or(f64::NAN),
                f("plain_over_floor"),
                f("routed_over_floor"),
                f("iptables_over_floor"),
                f("netbpf_fast_over_floor"),
                f("netbpf_native_over_floor"),
                f("netbpf_tc_over_floor"),
                f("netbpf_stack_over_floor"),
                f("netbpf_fast_extra_over_iptables_extra"),
                f("netbpf_native_extra_over_iptables_extra"),
                f("netbpf_tc_extra_over_iptables_extra"),
                f("netbpf_stack_extra_over_iptables_extra"),
            );
        }
    }

    let _ = writeln!(
        s,
        "\nSaturation (the most packets per second delivered while live frames flood the \
         router: for every variant but the floor bounded by the generator's CPU, which \
         receives the frames first, see docs/performance.md) and UDP request/response \
         latency at 1,000 requests/s (64 B rigs with no extra published ports); medians \
         (min–max):\n\n\
         | direction | frame | variant | published ports | saturation (kpps) | latency p50 (µs) | latency p99 (µs) |\n\
         |---|---|---|---:|---:|---:|---:|"
    );
    for a in &summary {
        let range = |key: &str, scale: f64| {
            let v = &a[key];
            match v["median"].as_f64() {
                Some(m) => format!(
                    "{:.0} ({:.0}–{:.0})",
                    m / scale,
                    v["min"].as_f64().unwrap_or(f64::NAN) / scale,
                    v["max"].as_f64().unwrap_or(f64::NAN) / scale
                ),
                None => "–".to_owned(),
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            a["direction"].as_str().unwrap_or("?"),
            frame_text(a["frame"].as_str().unwrap_or("?")),
            a["variant"].as_str().unwrap_or("?"),
            a["published_ports"],
            range("saturation_pps", 1e3),
            range("latency_p50_us", 1.0),
            range("latency_p99_us", 1.0),
        );
    }

    let _ = writeln!(
        s,
        "\nnetbpf's counters over the measured phases (all runs; warm-ups not included): \
         the packets its fast path sent straight to their egress device (of them, from the \
         uplink's XDP program), the reasons it left others to the stack or XDP left them to tc, \
         and its drops.\n\n\
         | variant | direction | frame | published ports | fast path, established (XDP) | fast path, new (XDP) | fell back to the stack, or from XDP to tc | drops |\n\
         |---|---|---|---:|---:|---:|---|---|"
    );
    for a in summary.iter().filter(|a| {
        a["variant"]
            .as_str()
            .is_some_and(|v| v.starts_with("netbpf"))
    }) {
        let rows = rows_of(r, a);
        let taken = |phase: &str| {
            format!(
                "{} ({})",
                counter(&rows, phase, "fast_path_in") + counter(&rows, phase, "fast_path_out"),
                counter(&rows, phase, "xdp_fast_in")
            )
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            a["variant"].as_str().unwrap_or("?"),
            a["direction"].as_str().unwrap_or("?"),
            frame_text(a["frame"].as_str().unwrap_or("?")),
            a["published_ports"],
            taken("established"),
            taken("new_flow"),
            moved_any(
                &rows,
                &[
                    ("fast_path_", &["fast_path_in", "fast_path_out"]),
                    ("xdp_pass_", &[]),
                ]
            ),
            moved(&rows, "drop_", &[]),
        );
    }

    // Nothing lost: every packet delivered or counted with a reason.
    let mut losses = Vec::new();
    let mut total = 0u64;
    for row in r["rows"].as_array().cloned().unwrap_or_default() {
        for phase in PHASES {
            let p = &row[phase];
            let (sent, got) = (
                p["sent"].as_u64().unwrap_or(0),
                p["delivered"].as_u64().unwrap_or(0),
            );
            total += sent;
            if got >= sent {
                continue;
            }
            let reasons: Vec<String> = p["lost"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect()
                })
                .unwrap_or_default();
            losses.push(format!(
                "run {} {} {} {} {} {phase}: {} of {sent} not delivered ({})",
                row["run"],
                row["variant"].as_str().unwrap_or("?"),
                row["published_ports"],
                row["frame"].as_str().unwrap_or("?"),
                row["direction"].as_str().unwrap_or("?"),
                sent - got,
                if reasons.is_empty() {
                    "no counter moved".to_owned()
                } else {
                    reasons.join(", ")
                }
            ));
        }
    }
    if losses.is_empty() {
        let _ = writeln!(
            s,
            "\nEvery packet sent was delivered in every phase ({total} packets)."
        );
    } else {
        let _ = writeln!(s, "\nNot delivered:\n");
        for l in losses {
            let _ = writeln!(s, "- {l}");
        }
    }
    throughput_summary(s, &r["tcp_throughput"]);
}

/// The TCP throughput table.
fn throughput_summary(s: &mut String, t: &Value) {
    let Some(rows) = t["rows"].as_array() else {
        return;
    };
    let _ = writeln!(
        s,
        "\nTCP throughput through the NAT, one iperf3 stream for {} s (iperf3's received \
         rate; the client on CPU 0, the host's receive processing on CPU 1):\n\n\
         | variant | inbound | outbound |\n|---|---:|---:|",
        t["seconds"]
    );
    let mut variants: Vec<&str> = Vec::new();
    for row in rows {
        if let Some(v) = row["variant"].as_str()
            && !variants.contains(&v)
        {
            variants.push(v);
        }
    }
    for v in variants {
        let cell = |dir: &str| {
            let row = rows
                .iter()
                .find(|r| r["variant"] == v && (r["direction"] == dir || r["direction"].is_null()));
            match row {
                Some(r) => match r["received_bits_per_second"].as_f64() {
                    Some(bps) => format!("{:.2} Gbit/s", bps / 1e9),
                    None => format!("failed: {}", r["error"].as_str().unwrap_or("?")),
                },
                None => "–".to_owned(),
            }
        };
        let _ = writeln!(s, "| {v} | {} | {} |", cell("inbound"), cell("outbound"));
    }
}
