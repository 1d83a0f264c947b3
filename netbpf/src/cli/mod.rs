//! The `netbpf` command line (part of the binary, not the library): the
//! clap types, one file per command group, each with the code that turns
//! its arguments into calls to the library and prints the result.
//! `main.rs` parses and dispatches; the groups import only [`shared`].

pub mod cni;
pub mod conntrack;
pub mod daemon;
pub mod explain;
pub mod import;
#[cfg(feature = "lab")]
pub mod lab;
pub mod nat;
pub mod routing;
pub mod shared;
pub mod stats;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use netbpf::DEFAULT_PIN_DIR;

/// Container networking in the kernel with eBPF: NAT the Docker way and
/// per-container-IP routing the Calico way.
#[derive(Debug, Parser)]
#[command(name = "netbpf", version)]
pub struct Cli {
    /// bpffs directory where the running datapath pins its maps.
    #[arg(long, global = true, env = "NETBPF_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Enter this named network namespace (as made by `ip netns add`)
    /// before doing anything else. Unlike `ip netns exec`, this keeps the
    /// caller's mount namespace, so pins stay visible to other processes.
    #[arg(long, global = true)]
    pub netns: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the datapath (or adopt the one a previous daemon left pinned),
    /// fill its maps, expire flows. Ctrl-C or SIGTERM stops the daemon; the
    /// datapath stays attached until `netbpf down`.
    Daemon(daemon::DaemonArgs),
    /// Remove the pinned datapath: detach every program and drop the maps
    /// (and with them every flow). Stop the daemon first.
    Down,
    /// Publish a port on the running datapath, or remove one (not written
    /// to the config file: a SIGHUP reload or restart applies the file).
    Publish {
        #[command(subcommand)]
        command: nat::PublishCommand,
    },
    /// Masquerade a source CIDR on the running datapath, or stop.
    Masquerade {
        #[command(subcommand)]
        command: nat::MasqueradeCommand,
    },
    /// Show the conntrack table of the running datapath.
    Conntrack {
        #[command(subcommand)]
        command: conntrack::ConntrackCommand,
    },
    /// Show the NAT rules of the running datapath: masquerade and published ports.
    Nat {
        #[command(subcommand)]
        command: nat::NatCommand,
    },
    /// Show the datapath's counters (drops by reason, translations, port
    /// probes), table fill and port-range use.
    Stats(stats::StatsArgs),
    /// Say what the running datapath would do with a packet, and why.
    Explain(explain::ExplainArgs),
    /// Routed containers (per-container-IP routing): list, add, del.
    Containers {
        #[command(subcommand)]
        command: routing::ContainersCommand,
    },
    /// The neighbour map (next hops on the uplink) the routing uses.
    Neigh {
        #[command(subcommand)]
        command: routing::NeighCommand,
    },
    /// Run the self-contained lab demo in network namespaces (what `cargo xtask run` starts).
    #[cfg(feature = "lab")]
    Lab(lab::LabArgs),
    /// Container routes across hosts over BGP (through BIRD): sessions and routes.
    Bgp {
        #[command(subcommand)]
        command: routing::BgpCommand,
    },
    /// Be a CNI plugin for one invocation (what runtimes call as
    /// `netbpf-cni`): `CNI_COMMAND` and the rest from the environment, the
    /// network config on stdin. See docs/cni.md.
    Cni(cni::CniArgs),
    /// Turn another tool's NAT rules into netbpf config (printed on stdout).
    Import {
        #[command(subcommand)]
        command: import::ImportCommand,
    },
}

impl Command {
    /// Whether the command shows what the pinned datapath holds.
    pub fn reads_the_datapath(&self) -> bool {
        matches!(
            self,
            Command::Conntrack { .. }
                | Command::Explain(_)
                | Command::Nat { .. }
                | Command::Stats(_)
                | Command::Containers {
                    command: routing::ContainersCommand::List(_),
                }
                | Command::Neigh { .. }
        )
    }
}
