//! netbpf: container networking in the kernel with eBPF.
//!
//! The library behind the `netbpf` command: configuration
//! ([`config`]), the loader that attaches the programs and fills their maps
//! ([`datapath`]), the daemon's loop and reload ([`daemon`]), readers of
//! the pinned maps ([`maps`]), conntrack state and expiry ([`conntrack`]), Prometheus metrics ([`metrics`]), `netbpf
//! explain` ([`explain`]). With the `lab` feature (on by default), also
//! the namespace lab ([`lab`], [`multihost`], [`netns`], [`live`]) and the
//! benchmark ([`bench`]): tools around the product, not part of it; the
//! library builds without them (`default-features = false`).

pub mod batch;
#[cfg(feature = "lab")]
pub mod bench;
pub mod bgp;
pub mod cni;
pub mod coexist;
pub mod config;
pub mod conntrack;
pub mod containers;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod docker;
pub mod earlydrop;
pub mod events;
pub mod explain;
pub mod flows;
pub mod import;
#[cfg(feature = "lab")]
pub mod lab;
pub mod links;
#[cfg(feature = "lab")]
pub mod live;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod migrate;
pub mod mountns;
#[cfg(feature = "lab")]
pub mod multihost;
pub mod neigh;
pub mod netdev;
#[cfg(feature = "lab")]
pub mod netns;
pub mod notify;
pub mod occupancy;
pub mod origins;
pub mod owners;
pub mod pins;
pub mod rows;
pub mod rtnl;
pub mod ruleslock;
pub mod table;

/// The compiled eBPF object (all programs and maps), embedded at build time.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netbpf"))
}

/// Default bpffs directory where a running datapath pins its maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/netbpf";
