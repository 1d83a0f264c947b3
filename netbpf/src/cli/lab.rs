//! `netbpf lab`: the namespace demo, one host or several.

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use netbpf::multihost::{MAX_RACKS, Racks, Topology, tcp_md5_supported};

#[derive(Debug, Args)]
pub struct LabArgs {
    /// Prefix of the namespaces the lab creates; the lab's daemon pins its
    /// maps at /sys/fs/bpf/PREFIX (the global --pin-dir does not apply).
    #[arg(long, default_value = "netbpf-lab")]
    prefix: String,
    /// Run the demo once and exit instead of showing live counters.
    #[arg(long)]
    once: bool,
    /// Run the multi-host lab instead: this many container hosts (2-10) on
    /// one segment, carrying each other's container routes over BGP with
    /// BIRD (docs/multi-host.md); it ends by measuring how fast a new
    /// container is reachable from every other host and a removed one is
    /// withdrawn.
    #[arg(long, default_value_t = 1)]
    hosts: usize,
    /// With --hosts: the hosts peer with a route reflector instead of an
    /// iBGP full mesh; each client's config has one [[bgp.reflector]].
    /// `router` (the default): BIRD alone in a router namespace at
    /// 10.0.0.2; `host`: host 1, a netbpf host with [[bgp.client]]s.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "router")]
    reflector: Option<ReflectorKind>,
    /// With --hosts: split the hosts into this many racks (2-4), each on
    /// its own segment behind a top-of-rack router (BIRD, its own AS);
    /// every host peers over eBGP with its rack's router (its own AS,
    /// MD5 in rack 1, multihop for the last host), the routers with each
    /// other.
    #[arg(long, conflicts_with_all = ["reflector", "docker"])]
    racks: Option<usize>,
    /// Run the Docker lab instead: a real dockerd (Debian's docker.io,
    /// iptables off, its own data root) in the lab's host namespace, two
    /// `docker run -p` containers, and netbpf following dockerd
    /// (docs/docker.md).
    #[arg(long, conflicts_with = "hosts")]
    docker: bool,
}

/// Where the multi-host lab's route reflector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReflectorKind {
    /// BIRD alone in a router namespace.
    Router,
    /// Host 1, a netbpf host.
    Host,
}

/// Runs the one-host lab, or the multi-host lab for `--hosts` above 1.
pub async fn run(args: LabArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding the netbpf binary")?;
    if args.docker {
        netbpf::lab::run_docker_demo(&exe, &args.prefix, args.once).await
    } else if args.hosts > 1 {
        let topology = match (args.reflector, args.racks) {
            (_, Some(racks)) => Topology::Racks(racks_plan(args.hosts, racks)?),
            (None, None) => Topology::FullMesh,
            (Some(ReflectorKind::Router), None) => Topology::Reflector,
            (Some(ReflectorKind::Host), None) => Topology::HostReflector,
        };
        netbpf::multihost::run_demo(&exe, &args.prefix, args.hosts, topology, args.once).await
    } else if args.reflector.is_some() || args.racks.is_some() {
        anyhow::bail!("--reflector and --racks are for the multi-host lab: give --hosts 2 or more")
    } else {
        netbpf::lab::run_demo(&exe, &args.prefix, args.once).await
    }
}

/// The racks of `lab --hosts N --racks R`; TCP MD5 where the kernel has it.
fn racks_plan(hosts: usize, racks: usize) -> Result<Racks> {
    if !(2..=MAX_RACKS).contains(&racks) || racks > hosts {
        anyhow::bail!("--racks {racks}: give 2..={MAX_RACKS} racks, at most one per host");
    }
    Ok(Racks {
        hosts,
        racks,
        md5: tcp_md5_supported(),
    })
}
