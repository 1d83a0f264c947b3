//! The bench's summary (markdown) and plot (SVG).

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    bgp, chart::*, flood, fmt::*, kernel::PATHS, packets::*, router_report::router_summary,
};

// ---------------------------------------------------------------------------
// Report

/// The markdown summary; `plot` is the SVG's path relative to it.
pub fn summary(results: &Value, plot: &str) -> String {
    let mut s = String::new();
    let env = &results["environment_start"];
    let env_end = &results["environment_end"];
    let _ = writeln!(
        s,
        "# netbpf bench {}\n",
        results["started"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        s,
        "- command: `{}` ({} mode)",
        results["command"].as_str().unwrap_or(""),
        if results["quick"].as_bool().unwrap_or(false) {
            "quick"
        } else {
            "full"
        }
    );
    let _ = writeln!(
        s,
        "- machine: {} × {}, {} MiB; kernel {}; clocksource {}; cpuidle {}",
        env["cpus"],
        env["cpu_model"].as_str().unwrap_or("?"),
        env["mem_mib"],
        env["kernel"].as_str().unwrap_or("?"),
        env["clocksource"].as_str().unwrap_or("?"),
        env["cpuidle_driver"].as_str().unwrap_or("none"),
    );
    let _ = writeln!(
        s,
        "- commit {}{}",
        env["git_commit"].as_str().unwrap_or("?"),
        if env["git_dirty"].as_bool().unwrap_or(false) {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "- load average at start `{}`, at end `{}`",
        env["loadavg"].as_str().unwrap_or("?"),
        env_end["loadavg"].as_str().unwrap_or("?")
    );
    if env["high_load"].as_bool().unwrap_or(false)
        || env_end["high_load"].as_bool().unwrap_or(false)
    {
        let _ = writeln!(
            s,
            "\n**WARNING: high load** (1-minute load average above a quarter of the CPUs at \
             start or end): other work shared the CPUs; treat the figures as noisy upper \
             bounds.\n"
        );
    }

    // Part 1.
    let k = &results["kernel"];
    let _ = writeln!(s, "\n## In-kernel cost per path (BPF_PROG_TEST_RUN)\n");
    if let Some(why) = k["skipped"].as_str() {
        let _ = writeln!(s, "Skipped: {why}.");
    } else {
        let tables = k["tables"].as_array().cloned().unwrap_or_default();
        let mut header = String::from("| path |");
        let mut rule = String::from("|---|");
        for t in &tables {
            let _ = write!(header, " ct {} |", t["conntrack_entries"]);
            rule.push_str("---:|");
        }
        let _ = writeln!(
            s,
            "Warm, with `repeat` ({} runs on one packet; the rewriting paths ping-pong \
         between a flow and a mirror entry so that every run translates, checked with the \
         counters), ns per packet, by conntrack entries:\n",
            k["repeat"]
        );
        let _ = writeln!(s, "{header}\n{rule}");
        for (key, desc) in PATHS {
            if tables
                .first()
                .is_none_or(|t| t["paths"][*key]["repeat_ns"].is_null())
            {
                continue;
            }
            let estimated = tables
                .first()
                .is_some_and(|t| t["paths"][*key]["repeat_estimated"].as_bool() == Some(true));
            let mut line = format!("| {desc}{} |", if estimated { " †" } else { "" });
            for t in &tables {
                let _ = write!(
                    line,
                    " {} |",
                    fmt_ns(t["paths"][*key]["repeat_ns"].as_f64().unwrap_or(f64::NAN))
                );
            }
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(
            s,
            "\nRouted forward: {} runs per call on a TTL-255 frame (the TTL only goes down), \
         median of the calls' averages. † estimate: the reply is not a request, so `repeat` \
         cannot time it; single-shot median minus the XDP floor (the ARP miss's single shot \
         minus its `repeat` time).",
            ROUTED_RUNS_PER_CALL
        );
        let _ = writeln!(
            s,
            "\nSingle-shot (repeat = 1, a distinct packet per run for new flows): median over {} \
         runs minus the single-shot floor (includes cold-cache effects of one run per \
         syscall):\n",
            k["samples_per_path"]
        );
        let _ = writeln!(s, "{header}\n{rule}");
        for (key, desc) in PATHS {
            let mut line = format!("| {desc} |");
            for t in &tables {
                let _ = write!(
                    line,
                    " {} |",
                    fmt_ns(t["paths"][*key]["cost_ns"].as_f64().unwrap_or(f64::NAN))
                );
            }
            let _ = writeln!(s, "{line}");
        }
        let mut line = String::from("| *single-shot floor subtracted* |");
        for t in &tables {
            let _ = write!(
                line,
                " {} |",
                fmt_ns(t["single_shot_floor_ns"].as_f64().unwrap_or(f64::NAN))
            );
        }
        let _ = writeln!(s, "{line}");
        let mut line = String::from("| *XDP floor (ARP rows)* |");
        for t in &tables {
            let _ = write!(
                line,
                " {} |",
                fmt_ns(t["xdp_single_shot_floor_ns"].as_f64().unwrap_or(f64::NAN))
            );
        }
        let _ = writeln!(s, "{line}");
        if let Some(ladder) = k["ladder"].as_array().filter(|l| !l.is_empty()) {
            let _ = writeln!(
                s,
                "\nCost ladder (warm, `repeat`, empty conntrack): cheap exits of the real \
             programs; the difference between consecutive rows of one program prices the \
             step.\n\n| step | ns |\n|---|---:|"
            );
            for l in ladder {
                let _ = writeln!(
                    s,
                    "| {} | {} |",
                    l["what"].as_str().unwrap_or("?"),
                    fmt_ns(l["repeat_ns"].as_f64().unwrap_or(f64::NAN))
                );
            }
        }
        if let Some(progs) = k["programs"].as_array().filter(|p| !p.is_empty()) {
            let _ = writeln!(
                s,
                "\n| program | verified insns | xlated insns | JIT bytes | maps |\n|---|---:|---:|---:|---:|"
            );
            for p in progs {
                let _ = writeln!(
                    s,
                    "| `{}` | {} | {} | {} | {} |",
                    p["program"].as_str().unwrap_or("?"),
                    p["verified_insns"],
                    p["xlated_insns"],
                    p["jited_bytes"],
                    p["maps"]
                );
            }
        }
    }

    // Part 2.
    router_summary(&mut s, &results["router"], plot);
    // Part 3.
    let i = &results["install"];
    if let Some(why) = i["skipped"].as_str() {
        let _ = writeln!(s, "\n## Install time\n\nSkipped: {why}.");
    } else {
        let _ = writeln!(s, "\n## Install time, {} published ports\n", i["ports"]);
        let _ = writeln!(
            s,
            "| what | time |\n|---|---:|\n| netbpf: parse config | {:.3} s |\n| netbpf: fill PUBLISH | {:.3} s |\n| iptables-nft-restore | {:.3} s |",
            i["netbpf_config_parse_s"].as_f64().unwrap_or(f64::NAN),
            i["netbpf_map_fill_s"].as_f64().unwrap_or(f64::NAN),
            i["iptables_nft_restore_s"].as_f64().unwrap_or(f64::NAN),
        );
    }

    // Part 4.
    flood::summary(&mut s, &results["flood"]);

    // Part 5 (absent from runs before it existed).
    if !results["bgp"].is_null() {
        bgp::summary(&mut s, &results["bgp"]);
    }
    s
}

/// A log-scale bar chart of router CPU per new flow (or, without the
/// router bench, of the in-kernel cost per path).
pub fn plot(results: &Value) -> String {
    let mut bars: Vec<Bar> = Vec::new();
    let title;
    if let Some(summary) = results["router"]["summary"].as_array() {
        title = "Router CPU per new inbound flow, 64-byte frames (log scale, median)";
        for a in summary
            .iter()
            .filter(|a| a["direction"] == "inbound" && a["frame"] == "64B")
        {
            let colour = match a["variant"].as_str() {
                Some("netbpf-fast") => "#2a7ab0",
                Some("netbpf-stack") => "#7fb3d5",
                Some("iptables-nft") => "#c0504d",
                _ => "#888888",
            };
            bars.push((
                format!(
                    "{} {}",
                    a["variant"].as_str().unwrap_or("?"),
                    a["published_ports"]
                ),
                a["new_flow_ns"]["median"].as_f64().unwrap_or(f64::NAN),
                colour,
                String::new(),
            ));
        }
    } else {
        title = "In-kernel cost per path, empty conntrack (log scale)";
        if let Some(t) = results["kernel"]["tables"].get(0) {
            for (key, _) in PATHS {
                bars.push((
                    (*key).to_owned(),
                    t["paths"][*key]["cost_ns"].as_f64().unwrap_or(f64::NAN),
                    "#2a7ab0",
                    String::new(),
                ));
            }
        }
    }
    let (mut body, mut h) = if bars.is_empty() {
        (String::new(), 0.0)
    } else {
        chart(title, &bars, fmt_ns)
    };
    let flood_bars = flood::plot_bars(&results["flood"]);
    if !flood_bars.is_empty() {
        let (second, h2) = chart(
            "Flows in the table at the end of a SYN flood (log scale); legit connections that worked",
            &flood_bars,
            |v| format!("{v:.0}"),
        );
        let _ = write!(
            body,
            "<g transform=\"translate(0,{h:.1})\">\n{second}</g>\n"
        );
        h += h2;
    }
    let w = CHART_WIDTH;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}
