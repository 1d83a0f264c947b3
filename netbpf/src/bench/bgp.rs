//! Part 5 of the bench: BGP convergence on changes (issue 20). Two labs of
//! the multi-host kind (docs/multi-host.md), one after the other: a 3-host
//! iBGP full mesh, and 10 hosts that are clients of a route reflector
//! (BIRD alone in a router namespace). In each, once BIRD's sessions are
//! up and every route is in every kernel (BIRD's start excluded, recorded
//! apart as the cold start), rounds of `netbpf containers add` and `del`
//! of a new container on host 1 measure how long until every other host
//! reaches it over TCP and how long until every other host's kernel has
//! dropped its route ([`crate::multihost::converge`] has the method).
//!
//! Namespaces are `nbb-bgp{mesh,rr}-<pid>-*`, pins
//! `/sys/fs/bpf/nbb-bgp*-<pid>-h*`; both go when each lab is dropped.

use std::{fmt::Write as _, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::options::Options;
use crate::multihost::{MultiHost, Topology, converge};

/// The target of issue 20, for both figures.
const TARGET_MS: f64 = 1000.0;

/// How long BIRD may take to bring every session up and carry every route.
const COLD_START_BOUND: Duration = Duration::from_secs(90);

/// Runs both labs; `skipped` when BIRD is not installed.
pub fn bench(opts: &Options) -> Result<Value> {
    if Command::new("bird").arg("--version").output().is_err() {
        return Ok(json!({"skipped": "bird is not installed (cargo xtask setup installs bird2)"}));
    }
    let rounds = if opts.quick { 3 } else { 10 };
    let exe = std::path::absolute(&opts.netbpf_exe)
        .with_context(|| format!("locating {}", opts.netbpf_exe.display()))?;
    let full_mesh = one_lab(&exe, "mesh", 3, Topology::FullMesh, rounds)?;
    let reflector = one_lab(&exe, "rr", 10, Topology::Reflector, rounds)?;
    Ok(json!({
        "method": "per round: a container wired on host 1, then `netbpf containers add` (clock \
                   starts just before it); a TCP connection tried every 10 ms from a container on \
                   every other host until accepted; then `netbpf containers del` (clock starts \
                   again) until `ip monitor route` on every other host reports the route \
                   deleted. The slowest host is the round's figure. BIRD's start excluded.",
        "rounds": rounds,
        "target_ms": TARGET_MS,
        "full_mesh": full_mesh,
        "reflector": reflector,
    }))
}

fn one_lab(
    exe: &Path,
    tag: &str,
    hosts: usize,
    topology: Topology,
    rounds: usize,
) -> Result<Value> {
    let prefix = format!("nbb-bgp{tag}-{}", std::process::id());
    eprintln!(
        "bench: bgp: {hosts} hosts ({}), {rounds} rounds",
        converge::topology_name(topology)
    );
    let mut lab = MultiHost::build_with(&prefix, hosts, 1, topology)
        .with_context(|| format!("building the {hosts}-host lab"))?;
    lab.start(exe).context("starting netbpf and BIRD")?;
    let cold = lab
        .wait_converged(COLD_START_BOUND)
        .context("BIRD's cold start")?;
    let figures = converge::measure(&mut lab, exe, rounds).context("measuring convergence")?;
    eprint!("{}", figures.render());
    let mut v = serde_json::to_value(&figures)?;
    v["cold_start_ms"] = json!(cold.as_secs_f64() * 1000.0);
    Ok(v)
}

/// The part's section of the summary.
pub fn summary(s: &mut String, v: &Value) {
    let _ = writeln!(s, "\n## BGP convergence on changes\n");
    if let Some(why) = v["skipped"].as_str() {
        let _ = writeln!(s, "Skipped: {why}.");
        return;
    }
    let _ = writeln!(
        s,
        "{} rounds per lab; figures in ms from the command's start to the slowest other host \
         (target < {:.0} ms). BIRD's start excluded (cold start shown apart).\n",
        v["rounds"],
        v["target_ms"].as_f64().unwrap_or(TARGET_MS)
    );
    let _ = writeln!(
        s,
        "| lab | reachable median | reachable max | route installed median | withdrawn median | withdrawn max | cold start |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for key in ["full_mesh", "reflector"] {
        let l = &v[key];
        let f = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "| {} hosts, {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            l["hosts"],
            l["topology"].as_str().unwrap_or("?"),
            f("reachable_median_ms"),
            f("reachable_max_ms"),
            f("route_installed_median_ms"),
            f("withdrawn_median_ms"),
            f("withdrawn_max_ms"),
            f("cold_start_ms"),
        );
    }
}
