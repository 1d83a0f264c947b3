//! The benchmark behind `cargo xtask bench` (see docs/performance.md).
//!
//! Three parts, each written to one JSON file with a markdown summary and
//! an SVG plot:
//!
//! 1. **In-kernel cost per path**: the real programs run through
//!    `BPF_PROG_TEST_RUN` on packets built here, with the `CONNTRACK` map
//!    pre-filled from userspace with 0, 10k and 1M flows.
//! 2. **Router cost, netbpf vs iptables-nft**: the lab topology (outside
//!    machine, host, one container) rebuilt for every variant (plain
//!    routing, iptables-nft, netbpf through the stack, netbpf's fast path);
//!    trafgen on CPU 0 sends UDP inbound to a published port and outbound
//!    from the container, RPS steers the host's receive processing to
//!    CPU 1, the receiver counts and drops at its tc ingress, and CPU 1's
//!    softirq time is divided by the packets it received.
//! 3. **Install time** of 10k published ports: netbpf's map fill and daemon
//!    start against `iptables-nft-restore`.
//! 4. **Flood**: how big a SYN flood, from one source and from many, each
//!    datapath (netbpf, iptables-nft) absorbs before anyone else's new
//!    flow fails ([`flood`]).
//!
//! 5. **BGP convergence on changes**: in a 3-host full mesh and a 10-host
//!    lab with a route reflector, how long a new container takes to be
//!    reachable from every other host and a removed one to be withdrawn
//!    ([`bgp`]).
//!
//! `--only PART` runs one of them (`kernel`, `router`, `install`, `flood`,
//! `bgp`).
//!
//! Namespaces are named `nbb-*-<pid>` and pins live in
//! `/sys/fs/bpf/nbb-*-<pid>`; both are removed when the bench ends (also on
//! errors, through [`Netns`]'s and [`Lab`]'s drops).

mod bgp;
mod chart;
mod fmt;
mod install;
mod kernel;
mod kernel_dp;
mod ladder;
mod latency;
mod measure;
mod options;
mod packets;
mod phase;
mod report;
mod rig;
mod router;
mod router_report;
mod router_stats;
mod saturation;
mod sink;
mod throughput;
mod xdp;

use std::{
    fs,
    process::{Command, Stdio},
    thread,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

mod flood;

use install::install_bench;
use kernel::kernel_bench;
pub use ladder::spin;
pub use options::*;
pub use report::{plot, summary};
use router::router_bench;

/// Runs everything, writes `<out_dir>/<timestamp>/` and returns the summary.
pub fn run(opts: &Options) -> Result<String> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the bench loads BPF programs and creates network namespaces: run it as root");
    }
    let stamp = utc_stamp();
    let dir = opts.out_dir.join(&stamp);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let env_start = environment(opts)?;
    eprintln!(
        "bench: {} mode, results in {}",
        if opts.quick { "quick" } else { "full" },
        dir.display()
    );

    let runs = |part: Part| opts.only.is_none_or(|only| only == part);
    let not_run = |part: Part| json!({"skipped": format!("--only {}", opts.only.map_or(part.name(), Part::name))});
    let kernel = if runs(Part::Kernel) {
        eprintln!("bench: part 1, in-kernel cost per path (BPF_PROG_TEST_RUN)");
        kernel_bench(opts.quick)?
    } else {
        not_run(Part::Kernel)
    };
    let install = if runs(Part::Install) {
        eprintln!("bench: part 3, install time of 10k published ports");
        install_bench()?
    } else {
        not_run(Part::Install)
    };
    let router = if !runs(Part::Router) {
        not_run(Part::Router)
    } else if opts.skip_router {
        json!({"skipped": "--skip-router"})
    } else if num_cpus() < 2 {
        json!({"skipped": "needs 2 CPUs (generator on one, router on the other)"})
    } else {
        eprintln!("bench: part 2, router cost netbpf vs iptables-nft (trafgen)");
        router_bench(opts)?
    };
    let flood = if runs(Part::Flood) {
        eprintln!("bench: part 4, SYN flood netbpf vs iptables-nft (trafgen)");
        flood::bench(opts)?
    } else {
        not_run(Part::Flood)
    };
    let bgp = if runs(Part::Bgp) {
        eprintln!(
            "bench: part 5, BGP convergence on changes (3-host full mesh, 10 hosts with a reflector)"
        );
        bgp::bench(opts)?
    } else {
        not_run(Part::Bgp)
    };
    let env_end = environment(opts)?;
    let results = json!({
        "schema": "netbpf-bench/1",
        "started": stamp,
        "quick": opts.quick,
        "command": opts.command,
        "environment_start": env_start,
        "environment_end": env_end,
        "kernel": kernel,
        "router": router,
        "install": install,
        "flood": flood,
        "bgp": bgp,
    });
    let text = serde_json::to_string_pretty(&results)?;
    fs::write(dir.join("bench.json"), text + "\n")?;
    let svg = plot(&results);
    fs::write(dir.join("plot.svg"), &svg)?;
    let summary = summary(&results, "plot.svg");
    fs::write(dir.join("summary.md"), &summary)?;
    // `results/latest` points at the newest run.
    let latest = opts.out_dir.join("latest");
    let _ = fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(&stamp, &latest);
    eprintln!("bench: wrote {}", dir.display());
    Ok(summary)
}

/// Writes the summary of an earlier run in `dir` again from its
/// `bench.json`, with the router part's figures recomputed from its rows
/// (so a summary gains what this version of the bench reports), and
/// returns it.
pub fn render(dir: &std::path::Path) -> Result<String> {
    let path = dir.join("bench.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut results: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if let Some(rows) = results["router"]["rows"].as_array().cloned() {
        let (summary, ratios) = router_stats::aggregate(&rows, &rig::plans());
        results["router"]["summary"] = json!(summary);
        results["router"]["ratios"] = json!(ratios);
    }
    let summary = summary(&results, "plot.svg");
    fs::write(dir.join("summary.md"), &summary)?;
    Ok(summary)
}

// ---------------------------------------------------------------------------
// Environment

fn num_cpus() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

fn read_trim(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Machine, kernel, load and the command: recorded at start and end.
fn environment(opts: &Options) -> Result<Value> {
    let cpuinfo = read_trim("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(String::new, |s| s.trim().to_owned());
    let mem_kib: u64 = read_trim("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let loadavg = read_trim("/proc/loadavg");
    let load1: f64 = loadavg
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let cpus = num_cpus();
    // More than a quarter of the machine busy with other work before we
    // start makes CPU-time figures unreliable.
    let high_load = load1 > 0.25 * cpus as f64;
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    Ok(json!({
        "command": opts.command,
        "cpu_model": model,
        "cpus": cpus,
        "mem_mib": mem_kib / 1024,
        "kernel": read_trim("/proc/sys/kernel/osrelease"),
        "kernel_version": read_trim("/proc/sys/kernel/version"),
        "clocksource": read_trim("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "cpuidle_driver": read_trim("/sys/devices/system/cpu/cpuidle/current_driver"),
        "loadavg": loadavg,
        "high_load": high_load,
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty(),
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    }))
}

/// `YYYYMMDDTHHMMSSZ` for now (UTC).
fn utc_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
