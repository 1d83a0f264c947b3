//! netbpf: container networking in the kernel with eBPF.
//!
//! The library behind the `netbpf` command: configuration
//! ([`config`]), the loader that attaches the programs and fills their maps
//! ([`datapath`]), readers of the pinned maps ([`maps`]), conntrack state and
//! expiry ([`conntrack`]), and the namespace lab ([`lab`]).

pub mod config;
pub mod conntrack;
pub mod datapath;
pub mod lab;
pub mod maps;
pub mod netdev;
pub mod netns;
pub mod table;

/// The compiled eBPF object (all programs and maps), embedded at build time.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netbpf"))
}

/// Default bpffs directory where a running datapath pins its maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/netbpf";
