//! Part 4 of the bench: how big a SYN flood each datapath absorbs before
//! anyone else's new flow fails (issue 14).
//!
//! For every variant (netbpf, iptables-nft) and every flood the lab is
//! built afresh under `nbb-flood-<pid>`: the outside machine, the host with
//! the uplink, one container serving TCP port 4000 published on the host's
//! port 8080. trafgen in the outside namespace sends TCP SYNs to the
//! published port at a fixed rate, from one address (random source ports)
//! or from random addresses of 198.18.0.0/16. Nobody owns those addresses:
//! the host routes the container's SYN-ACKs to the outside machine, which
//! does not forward and drops them silently, so the flood never answers
//! with a RST or an ACK, like a real SYN flood.
//!
//! While the flood runs and after it, legitimate clients try new
//! connections: the outside machine's own address to the published port
//! (inbound) and the container to a server on the outside machine
//! (outbound). A connection counts when the server's greeting line arrives
//! within a second. A connection opened before the flood must still echo
//! after it. Recorded per flood: the offered rate, the flows in the table at
//! the end of the flood, the datapath's drop counters, the legitimate
//! connections that worked during and after, and the time after the flood
//! until each kind works again.
//!
//! netbpf runs with `[conntrack] capacity = 16384` (so that the table fills
//! within a flood) and its default per-source budget; iptables-nft runs with
//! the kernel's conntrack at the machine's `nf_conntrack_max`, which is
//! global and read-only inside a namespace: it is read and recorded, never
//! changed. Each datapath is therefore compared at its own limit.

mod plan;
mod probe;
mod report;
mod rig;

use std::fs::{self};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::options::Options;
use plan::*;
pub use report::{plot_bars, summary};
use rig::*;

/// The datapaths the flood bench compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Iptables,
    Netbpf,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Iptables => "iptables-nft",
            Kind::Netbpf => "netbpf",
        }
    }
}

/// Runs part 4.
pub fn bench(opts: &Options) -> Result<Value> {
    let nf_max: u64 = fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut rows = Vec::new();
    for f in matrix(opts.quick) {
        // Interleaved: both variants see the machine in the same state.
        for kind in [Kind::Netbpf, Kind::Iptables] {
            let row = run_flood(opts, kind, f).with_context(|| {
                format!(
                    "flood: {} {} at {} SYN/s",
                    kind.name(),
                    f.sources.name(),
                    rate_label(&json!(f.rate))
                )
            })?;
            rows.push(row);
        }
    }
    let mut figures = serde_json::Map::new();
    for kind in [Kind::Netbpf, Kind::Iptables] {
        figures.insert(
            kind.name().to_owned(),
            json!({
                "one_source": absorbed(&rows, kind, Sources::One),
                "many_sources": absorbed(&rows, kind, Sources::Many),
            }),
        );
    }
    let mut ratios = Vec::new();
    let (nb, ipt): (Vec<&Value>, Vec<&Value>) = rows.iter().partition(|r| r["variant"] == "netbpf");
    for (a, b) in nb.iter().zip(ipt) {
        let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let legit = |r: &Value| {
            let n = r["during"]["inbound"]["tried"].as_f64().unwrap_or(0.0)
                + r["during"]["outbound"]["tried"].as_f64().unwrap_or(0.0);
            let ok = r["during"]["inbound"]["ok"].as_f64().unwrap_or(0.0)
                + r["during"]["outbound"]["ok"].as_f64().unwrap_or(0.0);
            ok / n
        };
        ratios.push(json!({
            "sources": a["sources"],
            "rate_pps": a["rate_pps"],
            "flows_netbpf_over_iptables": f(a, "flows_at_end") / f(b, "flows_at_end"),
            "legit_ok_during_netbpf": legit(a),
            "legit_ok_during_iptables": legit(b),
        }));
    }
    Ok(json!({
        "method": "Lab topology (outside -- host -- container c1 serving TCP 4000, published on \
                   host port 8080), rebuilt per variant and flood under nbb-flood-<pid>. trafgen \
                   in the outside namespace (CPU 0) sends TCP SYNs to 203.0.113.1:8080 at a fixed \
                   rate (or as fast as it can: \"max\") for a fixed time, from 198.51.100.7 with random source ports (one source) \
                   or from random 198.18.0.0/16 addresses (many sources); the SYN-ACKs are routed \
                   to the outside namespace, which does not forward and drops them, so the flood \
                   never answers. During the flood the outside's own address connects to the \
                   published port and the container connects to a server on the outside, every \
                   100 ms each; a connection counts when the server's greeting arrives within 1 s. \
                   After the flood: time until each kind works again (at most 10 s), then 10 more \
                   of each, and whether a connection opened before the flood still echoes. \
                   netbpf: [conntrack] capacity = 16384, default [inbound] budget (100 new flows/s \
                   per source, bursts of 1000). iptables-nft: DNAT + MASQUERADE in the host \
                   namespace, the kernel's conntrack at the machine's nf_conntrack_max (global, \
                   read-only in a namespace, not changed): each datapath at its own limit.",
        "netbpf_conntrack_capacity": NETBPF_CAPACITY,
        "nf_conntrack_max": nf_max,
        "probe_timeout_s": PROBE_TIMEOUT.as_secs_f64(),
        "rows": rows,
        "figures": figures,
        "ratios": ratios,
    }))
}
