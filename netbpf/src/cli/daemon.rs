//! `netbpf daemon` and `netbpf down`: their flags, turned into
//! [`netbpf::daemon::DaemonOptions`]; the loop itself is the library's.

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use clap::Args;
use netbpf::daemon::{CgroupChoice, DaemonOptions};

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The TOML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Seconds between conntrack expiry passes.
    #[arg(long, default_value_t = 5)]
    gc_interval: u64,
    /// Write NAT session events (mapping created / expired, TCP flow
    /// closed) as JSON lines to this file (appended), or `-` for standard
    /// output. Off when not given.
    #[arg(long)]
    events: Option<PathBuf>,
    /// cgroup v2 directory whose processes (in this network namespace)
    /// reach published ports through socket hooks, like Docker's OUTPUT
    /// chain DNAT; `auto` = the root of the cgroup v2 mount, `none`
    /// disables.
    #[arg(long, default_value = "auto")]
    cgroup: CgroupChoice,
    /// Follow the dockerd listening on this unix socket (its bridge
    /// networks' masquerade, its containers' published ports), as
    /// `[docker]` in the config does; e.g. /var/run/docker.sock.
    #[arg(long, value_name = "SOCK", value_parser = docker_socket)]
    docker: Option<PathBuf>,
}

/// `--docker`, checked as `[docker] socket` is.
fn docker_socket(text: &str) -> Result<PathBuf, String> {
    netbpf::config::docker_socket("--docker", text).map_err(|e| e.to_string())
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: DaemonArgs, pin_dir: PathBuf) -> Result<()> {
    let options = DaemonOptions {
        config: args.config,
        gc_interval: Duration::from_secs(args.gc_interval),
        events: args.events,
        cgroup: args.cgroup,
        docker: args.docker,
    };
    Ok(netbpf::daemon::run(&options, pin_dir).await?)
}

/// `netbpf down`: detaches the pinned datapath and removes its maps.
pub fn down(pin_dir: &std::path::Path) -> Result<()> {
    let report = netbpf::datapath::down(pin_dir)?;
    println!(
        "netbpf down: detached {} program link(s), removed {} map(s) from {}",
        report.links,
        report.maps,
        pin_dir.display()
    );
    Ok(())
}
