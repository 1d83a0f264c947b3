//! The router bench's receiving end: count and drop at the receiving
//! interface's tc ingress, so that the receiver's own stack (IP input,
//! netfilter, a socket) does not add to, or hide, the router's cost.
//!
//! This kernel has neither `cls_matchall` nor the `gact` action
//! (`CONFIG_NET_CLS_MATCHALL`, `CONFIG_NET_ACT_GACT` unset), so the filter
//! is `cls_bpf` in direct-action mode with a one-instruction *classic* BPF
//! program, `ret #2` (`TC_ACT_SHOT`), given inline as bytecode: no BPF
//! object to build or load. It matches IPv4 only (`protocol ip`), so ARP
//! still reaches the namespace and the router can resolve its neighbour.
//! The clsact qdisc counts what its filters drop (`drops` in
//! `tc -s qdisc show`); that is the count. No tcx program runs in these
//! namespaces, so nothing sees the packets before it.

use anyhow::{Context as _, Result, anyhow};
use serde_json::Value;

use crate::netns::Netns;

/// Classic BPF `ret #2`: one instruction (opcode 6 = `BPF_RET | BPF_K`,
/// k = 2 = `TC_ACT_SHOT`), in tc's `bytecode` notation.
const DROP_ALL: &str = "1,6 0 0 2,";

/// Installs the count-and-drop filter on `dev`'s tc ingress in `ns`.
pub(crate) fn install(ns: &Netns, dev: &str) -> Result<()> {
    ns.exec("tc", &["qdisc", "add", "dev", dev, "clsact"])
        .with_context(|| format!("adding clsact on {dev} in {}", ns.name()))?;
    ns.exec(
        "tc",
        &[
            "filter", "add", "dev", dev, "ingress", "protocol", "ip", "pref", "1", "bpf", "da",
            "bytecode", DROP_ALL,
        ],
    )
    .with_context(|| format!("adding the count-and-drop filter on {dev} in {}", ns.name()))?;
    Ok(())
}

/// Packets the filter on `dev` in `ns` has dropped so far.
pub(crate) fn count(ns: &Netns, dev: &str) -> Result<u64> {
    let out = ns.exec("tc", &["-s", "-j", "qdisc", "show", "dev", dev])?;
    let qdiscs: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing `tc -s -j qdisc show dev {dev}` in {}", ns.name()))?;
    qdiscs
        .as_array()
        .into_iter()
        .flatten()
        .find(|q| q["kind"] == "clsact")
        .and_then(|q| q["drops"].as_u64())
        .ok_or_else(|| anyhow!("no clsact qdisc with drop counts on {dev} in {}", ns.name()))
}

/// Takes the count-and-drop filter off `dev` in `ns` (with its clsact
/// qdisc), so that the namespace receives again.
pub(crate) fn remove(ns: &Netns, dev: &str) -> Result<()> {
    ns.exec("tc", &["qdisc", "del", "dev", dev, "clsact"])
        .with_context(|| format!("removing clsact on {dev} in {}", ns.name()))?;
    Ok(())
}
