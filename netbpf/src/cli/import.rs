//! `netbpf import iptables-save`: another tool's NAT rules as netbpf
//! config on stdout, its warnings on stderr.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use log::warn;
use netbpf::import;

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Read an `iptables-save` dump (its nat table: MASQUERADE, SNAT, DNAT,
    /// Docker's chains) and print the equivalent netbpf config. A rule it
    /// cannot express exactly is an error quoting the rule and its line.
    /// Rules of the other tables (filter's DOCKER-USER, ...) are not
    /// imported: each is named in a warning on stderr.
    IptablesSave(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The dump; standard input when absent or `-`.
    file: Option<PathBuf>,
    /// The uplink interface, when the rules do not name it (Docker's
    /// `! -o docker0` does not).
    #[arg(long)]
    uplink: Option<String>,
    /// Skip rules that cannot be expressed, with a warning each on stderr.
    #[arg(long)]
    skip_unsupported: bool,
    /// Take conntrack timeouts from the kernel's nf_conntrack_*_timeout
    /// sysctls (of this network namespace) instead of netbpf's RFC
    /// defaults.
    #[arg(long)]
    adopt_sysctl_timeouts: bool,
}

pub fn run(command: ImportCommand) -> Result<()> {
    let ImportCommand::IptablesSave(args) = command;
    let text = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        _ => std::io::read_to_string(std::io::stdin()).context("reading standard input")?,
    };
    let timeouts = if args.adopt_sysctl_timeouts {
        Some(import::read_sysctl_timeouts(Path::new(
            "/proc/sys/net/netfilter",
        ))?)
    } else {
        None
    };
    let imported = import::import_iptables_save(
        &text,
        &import::ImportOptions {
            uplink: args.uplink,
            skip_unsupported: args.skip_unsupported,
            timeouts,
        },
    )?;
    for w in &imported.skipped {
        warn!("{w}");
    }
    for w in &imported.dropped {
        warn!("{w}");
    }
    for w in &imported.config.warnings {
        warn!("imported config: {w}");
    }
    print!("{}", imported.toml);
    Ok(())
}
