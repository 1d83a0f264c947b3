//! `netbpf conntrack list|top`: the flows of the running datapath, with
//! their filters and output formats.

use std::{net::Ipv4Addr, path::Path, path::PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use netbpf::{
    config::{Config, Timeouts},
    conntrack::{self, FlowState},
    maps::NatMaps,
    table,
};

use super::shared::{self, OutputArgs};

#[derive(Debug, Subcommand)]
pub enum ConntrackCommand {
    /// One line per flow: proto, inside, outside, remote, state, age, packets/bytes.
    List(ConntrackListArgs),
    /// Which inside addresses hold the most outside ports, per destination.
    Top(ConntrackTopArgs),
}

#[derive(Debug, Args)]
pub struct ConntrackTopArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Show at most this many rows.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    /// Only this protocol (tcp, udp, icmp).
    #[arg(long, value_parser = shared::proto)]
    proto: Option<u8>,
}

/// How `conntrack list` prints its rows (without `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// netbpf's table.
    Table,
    /// Lines shaped like `conntrack -L`.
    Conntrack,
}

#[derive(Debug, Args)]
pub struct ConntrackListArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Config file whose timeouts to show expiry with (default timeouts otherwise).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only flows of this protocol (tcp, udp, icmp).
    #[arg(long, value_parser = shared::proto)]
    proto: Option<u8>,
    /// Only flows with this address on any side (inside, outside, remote).
    #[arg(long)]
    addr: Option<Ipv4Addr>,
    /// Only flows with this port on any side (ICMP: echo identifier).
    #[arg(long)]
    port: Option<u16>,
    /// Only flows in this state (SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT,
    /// CLOSING, RESET, UDP, ICMP).
    #[arg(long, value_parser = flow_state)]
    state: Option<FlowState>,
    /// Output format: `table`, or `conntrack` for lines shaped like `conntrack -L`.
    #[arg(long, value_enum, default_value_t = ListFormat::Table, conflicts_with = "json")]
    format: ListFormat,
}

/// A flow state by name, any case: the value parser of `--state`.
fn flow_state(name: &str) -> Result<FlowState, String> {
    FlowState::parse(name).ok_or_else(|| {
        let names: Vec<&str> = FlowState::ALL.iter().map(|s| s.name()).collect();
        format!("{name:?}: expected one of {}", names.join(", "))
    })
}

pub fn run(command: ConntrackCommand, pin_dir: &Path) -> Result<()> {
    match command {
        ConntrackCommand::List(args) => list(args, pin_dir),
        ConntrackCommand::Top(args) => top(args, pin_dir),
    }
}

fn list(args: ConntrackListArgs, pin_dir: &Path) -> Result<()> {
    let timeouts = match &args.config {
        Some(path) => Config::load(path)?.conntrack.timeouts,
        None => Timeouts::default(),
    };
    let filter = conntrack::FlowFilter {
        proto: args.proto,
        addr: args.addr,
        port: args.port,
        state: args.state,
    };
    let nat = NatMaps::open_pinned(pin_dir)?;
    let mut rows = conntrack::list(&nat, &timeouts)?;
    rows.retain(|r| filter.matches(r));
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    match args.format {
        ListFormat::Conntrack => {
            for r in &rows {
                println!("{}", r.conntrack_line());
            }
            eprintln!("netbpf: {} flow entries have been shown.", rows.len());
        }
        ListFormat::Table => {
            let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells()).collect();
            print!("{}", table::render(&conntrack::FlowRow::HEADER, &cells));
            println!("{} flow(s)", rows.len());
        }
    }
    Ok(())
}

fn top(args: ConntrackTopArgs, pin_dir: &Path) -> Result<()> {
    let nat = NatMaps::open_pinned(pin_dir)?;
    let mut rows = conntrack::list(&nat, &Timeouts::default())?;
    if args.proto.is_some() {
        let filter = conntrack::FlowFilter {
            proto: args.proto,
            ..Default::default()
        };
        rows.retain(|r| filter.matches(r));
    }
    let top = conntrack::top(&rows, args.limit);
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&top)?);
    } else {
        let cells: Vec<Vec<String>> = top.iter().map(|r| r.cells()).collect();
        print!("{}", table::render(&conntrack::TopRow::HEADER, &cells));
    }
    Ok(())
}
