//! `netbpf containers list|add|del`, `netbpf neigh list` and `netbpf bgp
//! status`: per-container-IP routing on the running datapath and across
//! hosts.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    path::PathBuf,
};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use netbpf::{
    config::{self, Config},
    containers::{self as c, ContainerRow},
    neigh::{self, NeighRow},
    table,
};

use super::shared::OutputArgs;

#[derive(Debug, Subcommand)]
pub enum ContainersCommand {
    /// Routed containers: address, veth, MACs, whether the daemon attached to the veth.
    List(OutputArgs),
    /// Route a container's own IP on the running daemon (not written to the config).
    Add(ContainerAddArgs),
    /// Stop routing a container's IP on the running daemon.
    Del(ContainerDelArgs),
}

#[derive(Debug, Args)]
pub struct ContainerAddArgs {
    /// The container's IPv4 address.
    #[arg(long)]
    address: Ipv4Addr,
    /// Host side of the container's veth.
    #[arg(long)]
    interface: String,
    /// The container's IPv6 address, routed too (optional).
    #[arg(long)]
    ipv6: Option<Ipv6Addr>,
}

#[derive(Debug, Args)]
pub struct ContainerDelArgs {
    /// The container's IPv4 address.
    #[arg(long)]
    address: Ipv4Addr,
}

#[derive(Debug, Subcommand)]
pub enum NeighCommand {
    /// Next hops on the uplink and their MACs, as the datapath holds them.
    List(OutputArgs),
}

#[derive(Debug, Subcommand)]
pub enum BgpCommand {
    /// BIRD's BGP sessions, the routes this host announces and those it
    /// learned, from BIRD's control socket.
    Status(BgpStatusArgs),
}

#[derive(Debug, Args)]
pub struct BgpStatusArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// BIRD's control socket (default: `[bgp] socket` of --config, else
    /// /run/bird/bird.ctl).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// netbpf config file whose `[bgp] socket` to use; with it the status
    /// also shows this host's role (full mesh, route-reflector client or
    /// reflector) and each session's.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub fn containers(command: ContainersCommand, pin_dir: &Path) -> Result<()> {
    match command {
        ContainersCommand::List(args) => {
            let rows = c::list(pin_dir)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let cells: Vec<Vec<String>> = rows.iter().map(ContainerRow::cells).collect();
                print!("{}", table::render(&ContainerRow::HEADER, &cells));
                println!("{} routed container(s)", rows.len());
            }
        }
        ContainersCommand::Add(args) => {
            let row = c::add(pin_dir, args.address, &args.interface, args.ipv6)?;
            match row.ipv6 {
                Some(v6) => println!(
                    "routing {} and {v6} via {} (container MAC {})",
                    row.address, row.interface, row.mac
                ),
                None => println!(
                    "routing {} via {} (container MAC {})",
                    row.address, row.interface, row.mac
                ),
            }
        }
        ContainersCommand::Del(args) => {
            c::del(pin_dir, args.address)?;
            println!("no longer routing {}", args.address);
        }
    }
    Ok(())
}

pub fn neigh(command: NeighCommand, pin_dir: &Path) -> Result<()> {
    let NeighCommand::List(args) = command;
    let rows = neigh::list(pin_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let cells: Vec<Vec<String>> = rows.iter().map(NeighRow::cells).collect();
        print!("{}", table::render(&NeighRow::HEADER, &cells));
        println!("{} neighbour(s)", rows.len());
    }
    Ok(())
}

pub fn bgp(command: BgpCommand) -> Result<()> {
    let BgpCommand::Status(args) = command;
    let bgp = match &args.config {
        Some(path) => match Config::load(path)?.bgp {
            Some(b) => Some(b),
            None => bail!("{}: no [bgp] table", path.display()),
        },
        None => None,
    };
    let socket = match (&args.socket, &bgp) {
        (Some(s), _) => s.clone(),
        (None, Some(b)) => b.socket.clone(),
        (None, None) => PathBuf::from(config::DEFAULT_BIRD_SOCKET),
    };
    let mut status = netbpf::bgp::status(&socket)?;
    if let Some(b) = &bgp {
        status = status.with_config(b);
    }
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}
