//! Part 2's figures from its rows: medians per variant, the ratios against
//! iptables-nft and plain routing, and what was delivered of what was sent.

use serde_json::{Value, json};

use super::{
    packets::median,
    rig::{Direction, Frame, RigPlan, Variant},
};

/// The phases of a row, by their key in it.
pub(crate) const PHASES: [&str; 2] = ["established", "new_flow"];

/// Whether `row` (or a summary entry) is of this variant, ports, frame and
/// direction.
/// The least that iptables-nft must add over plain routing, in ns per
/// packet, for a share of it to be reported (one step of the quick mode's
/// softirq clock).
const MIN_EXTRA_NS: f64 = 200.0;

pub(crate) fn is(row: &Value, variant: &str, ports: u32, frame: &str, direction: &str) -> bool {
    row["variant"] == variant
        && row["published_ports"] == ports
        && row["frame"] == frame
        && row["direction"] == direction
}

/// Median, min, max and count of `v`.
fn stat(v: &[f64]) -> Value {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({"median": median(v), "min": min, "max": max, "n": v.len()})
}

/// Per variant, ports, frame and direction: the medians (with min–max) of
/// the router cost of each phase, and the packets sent and delivered over
/// all runs (`summary`); per frame, direction and ports, the ratios of
/// both netbpf variants against iptables-nft and plain routing
/// (`ratios`).
pub(crate) fn aggregate(rows: &[Value], plans: &[RigPlan]) -> (Vec<Value>, Vec<Value>) {
    let mut summary = Vec::new();
    for plan in plans {
        for direction in plan.directions() {
            let (variant, frame, dir) = (plan.variant.name(), plan.frame.name(), direction.name());
            let mine: Vec<&Value> = rows
                .iter()
                .filter(|r| is(r, variant, plan.ports, frame, dir))
                .collect();
            let mut entry = json!({
                "variant": variant,
                "published_ports": plan.ports,
                "frame": frame,
                "direction": dir,
            });
            for phase in PHASES {
                let of = |key: &str| -> Vec<f64> {
                    mine.iter().filter_map(|r| r[phase][key].as_f64()).collect()
                };
                let total =
                    |key: &str| -> u64 { mine.iter().filter_map(|r| r[phase][key].as_u64()).sum() };
                entry[format!("{phase}_ns")] = stat(&of("router_ns_per_packet"));
                entry[format!("{phase}_all_ns")] = stat(&of("all_cpus_ns_per_packet"));
                entry[format!("{phase}_sent")] = json!(total("sent"));
                entry[format!("{phase}_delivered")] = json!(total("delivered"));
            }
            let of_rows = |path: &[&str]| -> Vec<f64> {
                mine.iter()
                    .filter_map(|r| path.iter().fold(*r, |v, k| &v[*k]).as_f64())
                    .collect()
            };
            entry["saturation_pps"] = stat(&of_rows(&["saturation", "delivered_pps"]));
            let p50 = of_rows(&["latency", "p50_us"]);
            if !p50.is_empty() {
                entry["latency_p50_us"] = stat(&p50);
                entry["latency_p99_us"] = stat(&of_rows(&["latency", "p99_us"]));
            }
            summary.push(entry);
        }
    }
    // The median of `figure` ("ns": router CPU, "all_ns": both CPUs).
    let med = |variant: Variant,
               ports: u32,
               frame: Frame,
               direction: Direction,
               phase: &str,
               figure: &str| {
        summary
            .iter()
            .find(|a| is(a, variant.name(), ports, frame.name(), direction.name()))
            .and_then(|a| a[format!("{phase}_{figure}")]["median"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let mut ratios = Vec::new();
    for plan in plans.iter().filter(|p| p.variant == Variant::Iptables) {
        for direction in plan.directions() {
            let mut r = json!({
                "published_ports": plan.ports,
                "frame": plan.frame.name(),
                "direction": direction.name(),
            });
            for phase in PHASES {
                let at = |variant: Variant, ports: u32| {
                    med(variant, ports, plan.frame, direction, phase, "ns")
                };
                let all = |variant: Variant, ports: u32| {
                    med(variant, ports, plan.frame, direction, phase, "all_ns")
                };
                let plain = at(Variant::Plain, 0);
                let ipt = at(Variant::Iptables, plan.ports);
                let fast = at(Variant::NetbpfFast, plan.ports);
                let stack = at(Variant::NetbpfStack, plan.ports);
                // A share of nothing is no figure: when iptables-nft adds
                // less than the softirq clock can see over plain routing
                // (the quick mode's step is 0.2 µs), there is no ratio.
                let share = |netbpf: f64| {
                    if ipt - plain >= MIN_EXTRA_NS {
                        json!((netbpf - plain) / (ipt - plain))
                    } else {
                        Value::Null
                    }
                };
                r[phase] = json!({
                    "netbpf_fast_over_iptables": fast / ipt,
                    "netbpf_stack_over_iptables": stack / ipt,
                    "netbpf_fast_extra_over_iptables_extra": share(fast),
                    "netbpf_stack_extra_over_iptables_extra": share(stack),
                    "netbpf_fast_over_plain": fast / plain,
                    "vs_xdp_floor": floor_ratios(
                        all(Variant::XdpFloor, 0),
                        all(Variant::Iptables, plan.ports),
                        all(Variant::NetbpfFast, plan.ports),
                        all(Variant::NetbpfNative, plan.ports),
                        all(Variant::NetbpfTc, plan.ports),
                        all(Variant::NetbpfStack, plan.ports),
                        all(Variant::Plain, 0),
                        all(Variant::Routed, 0),
                    ),
                });
            }
            ratios.push(r);
        }
    }
    (summary, ratios)
}

/// Issue 16's figures against the XDP floor, on both CPUs' softirq time
/// per packet: each variant over the floor, and what netbpf adds over the
/// floor as a share of what iptables-nft adds (null when iptables-nft adds
/// less than the clock can see).
#[allow(clippy::too_many_arguments)]
fn floor_ratios(
    floor: f64,
    ipt: f64,
    fast: f64,
    native: f64,
    tc: f64,
    stack: f64,
    plain: f64,
    routed: f64,
) -> Value {
    let share = |netbpf: f64| {
        if ipt - floor >= MIN_EXTRA_NS {
            json!((netbpf - floor) / (ipt - floor))
        } else {
            Value::Null
        }
    };
    json!({
        "xdp_floor_ns": floor,
        "netbpf_fast_over_floor": fast / floor,
        "netbpf_native_over_floor": native / floor,
        "netbpf_tc_over_floor": tc / floor,
        "netbpf_stack_over_floor": stack / floor,
        "iptables_over_floor": ipt / floor,
        "plain_over_floor": plain / floor,
        "routed_over_floor": routed / floor,
        "netbpf_fast_extra_over_iptables_extra": share(fast),
        "netbpf_native_extra_over_iptables_extra": share(native),
        "netbpf_tc_extra_over_iptables_extra": share(tc),
        "netbpf_stack_extra_over_iptables_extra": share(stack),
    })
}
