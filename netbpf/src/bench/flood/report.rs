//! Part 4's summary section and chart bars.

use serde_json::Value;

use super::super::chart::Bar;

use super::plan::*;

pub(crate) fn fmt_rate(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "–".to_owned(), |r| format!("{r:.0}"))
}

pub(crate) fn fmt_recovered(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "not in 10 s".to_owned(), |s| format!("{s:.2} s"))
}

/// Part 4 of the markdown summary.
pub fn summary(s: &mut String, f: &Value) {
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "\n## SYN flood: what each datapath absorbs before anyone else's new flow fails\n"
    );
    if let Some(why) = f["skipped"].as_str() {
        let _ = writeln!(s, "Skipped: {why}.");
        return;
    }
    let _ = writeln!(
        s,
        "{}\n\nnetbpf conntrack capacity {}; this machine's `nf_conntrack_max` {} (not \
         changed). Legit connection = a new TCP connection whose greeting arrives within {} s; \
         *in* = the outside's own address to the published port, *out* = the container to the \
         outside.\n",
        f["method"].as_str().unwrap_or(""),
        f["netbpf_conntrack_capacity"],
        f["nf_conntrack_max"],
        f["probe_timeout_s"],
    );
    let _ = writeln!(
        s,
        "| datapath | flood | SYN/s asked | SYN/s sent | s | flows at end (flood's) | drop counters | legit during in / out | works again in / out | after in / out | older connection |\n\
         |---|---|---:|---:|---:|---:|---|---:|---:|---:|---|"
    );
    for r in f["rows"].as_array().cloned().unwrap_or_default() {
        let counters = r["counters"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, v)| *k != "flows" && *k != "flood_flows" && v.as_u64() != Some(0))
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let flood_flows = if r["flood_flows_at_end"].is_null() {
            String::new()
        } else {
            format!(" ({})", r["flood_flows_at_end"])
        };
        let d = &r["during"];
        let a = &r["after"];
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.1} | {}{flood_flows} | {} | {}/{} / {}/{} | {} / {} | {}/{} / {}/{} | {} |",
            r["variant"].as_str().unwrap_or("?"),
            r["sources"].as_str().unwrap_or("?"),
            rate_label(&r["rate_pps"]),
            r["offered_pps"].as_f64().unwrap_or(f64::NAN),
            r["flood_s"].as_f64().unwrap_or(f64::NAN),
            r["flows_at_end"],
            if counters.is_empty() {
                "–"
            } else {
                &counters
            },
            d["inbound"]["ok"],
            d["inbound"]["tried"],
            d["outbound"]["ok"],
            d["outbound"]["tried"],
            fmt_recovered(&a["inbound_recovered_s"]),
            fmt_recovered(&a["outbound_recovered_s"]),
            a["inbound_ok"],
            a["probes"],
            a["outbound_ok"],
            a["probes"],
            if r["established_survived"].as_bool() == Some(true) {
                "echoes"
            } else {
                "**lost**"
            },
        );
    }
    let _ = writeln!(
        s,
        "\nThe figure: the highest flood rate (SYN/s sent) after which, and during which, every \
         legit connection worked, up to the first rate where one failed (\"≥\" when none \
         failed: the datapath absorbed the largest flood the bench sent).\n\n\
         | datapath | one source: absorbed SYN/s | flows at end | first failure | many sources: absorbed SYN/s | flows at end | first failure |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    if let Some(figs) = f["figures"].as_object() {
        for (name, fig) in figs {
            let cell = |k: &str| {
                let x = &fig[k];
                let ge = if x["every_flood_absorbed"].as_bool() == Some(true) {
                    "≥ "
                } else {
                    ""
                };
                format!(
                    "{ge}{} | {} | {}",
                    fmt_rate(&x["absorbed_pps"]),
                    x["flows_at_end"],
                    fmt_rate(&x["first_failure_pps"])
                )
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {} |",
                cell("one_source"),
                cell("many_sources")
            );
        }
    }
    let _ = writeln!(
        s,
        "\n| flood | SYN/s asked | flows at end netbpf/iptables | legit during, netbpf | legit during, iptables |\n|---|---:|---:|---:|---:|"
    );
    for q in f["ratios"].as_array().cloned().unwrap_or_default() {
        let pct = |k: &str| {
            q[k].as_f64()
                .map_or_else(|| "–".to_owned(), |v| format!("{:.0} %", v * 100.0))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            q["sources"].as_str().unwrap_or("?"),
            rate_label(&q["rate_pps"]),
            q["flows_netbpf_over_iptables"]
                .as_f64()
                .map_or_else(|| "–".to_owned(), |v| format!("{v:.3}")),
            pct("legit_ok_during_netbpf"),
            pct("legit_ok_during_iptables"),
        );
    }
}

/// The plot's bars for part 4: flows in the table at the end of each
/// flood, with the share of legit connections that worked during it.
pub fn plot_bars(f: &Value) -> Vec<Bar> {
    let mut bars = Vec::new();
    for r in f["rows"].as_array().cloned().unwrap_or_default() {
        let colour = if r["variant"] == "netbpf" {
            "#2a7ab0"
        } else {
            "#c0504d"
        };
        let d = &r["during"];
        let tried = d["inbound"]["tried"].as_f64().unwrap_or(0.0)
            + d["outbound"]["tried"].as_f64().unwrap_or(0.0);
        let ok = d["inbound"]["ok"].as_f64().unwrap_or(0.0)
            + d["outbound"]["ok"].as_f64().unwrap_or(0.0);
        bars.push((
            format!(
                "{} {} {}",
                r["variant"].as_str().unwrap_or("?"),
                if r["sources"] == "one" {
                    "1 src"
                } else {
                    "many"
                },
                match r["rate_pps"].as_u64() {
                    Some(MAX) | None => "max".to_owned(),
                    Some(v) => format!("{}k/s", v / 1000),
                }
            ),
            r["flows_at_end"].as_f64().unwrap_or(f64::NAN),
            colour,
            format!(" flows, legit {:.0} %", 100.0 * ok / tried.max(1.0)),
        ));
    }
    bars
}
