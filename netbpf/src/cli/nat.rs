//! `netbpf publish add|del`, `netbpf masquerade add|del` and `netbpf nat
//! list`: the NAT rules of the running datapath. A rule's values are
//! checked by the config file's own checks ([`netbpf::config::publish_entry`]
//! and its kin), then written by [`netbpf::control`].

use std::{net::Ipv4Addr, path::Path};

use anyhow::Result;
use clap::Subcommand;
use netbpf::{
    config,
    control::{self, ControlError},
};

use super::shared::OutputArgs;

// The rule's values stay text here: they are checked, and named in
// messages, as the keys of a config file entry (`publish[0].proto`).
#[derive(Debug, Subcommand)]
pub enum PublishCommand {
    /// Like a [[publish]] entry: `--proto tcp --port 8080 --to 10.77.0.2:4000`.
    Add {
        /// tcp or udp.
        #[arg(long)]
        proto: String,
        /// Host port or range "8000-8010".
        #[arg(long)]
        port: String,
        /// Container address:port (a range maps 1:1).
        #[arg(long)]
        to: String,
        /// Only answer on this host address.
        #[arg(long)]
        address: Option<Ipv4Addr>,
    },
    /// Remove the rule with exactly this protocol, port (range) and address.
    Del {
        /// tcp or udp.
        #[arg(long)]
        proto: String,
        /// Host port or range, as added.
        #[arg(long)]
        port: String,
        /// The address it was bound to, if any.
        #[arg(long)]
        address: Option<Ipv4Addr>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MasqueradeCommand {
    /// Like a [[masquerade]] entry: `--source 10.78.0.0/24 [--ports A-B]`.
    Add {
        /// Source CIDR.
        #[arg(long)]
        source: String,
        /// SNAT source-port range.
        #[arg(long)]
        ports: Option<String>,
        /// Address to translate to (default: the one the datapath's other
        /// masquerade rules use, the uplink's).
        #[arg(long)]
        to: Option<Ipv4Addr>,
    },
    /// Remove the rule for exactly this source CIDR.
    Del {
        /// Source CIDR, as added.
        #[arg(long)]
        source: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NatCommand {
    /// Masquerade rules (source CIDR, address, ports) and published ports
    /// (proto, host address and port, container address and port), as the
    /// datapath holds them.
    List(OutputArgs),
}

/// The rules lock, so a live change never interleaves with the daemon's
/// fills or a CNI plugin's (see `netbpf::ruleslock`).
fn rules_lock(pin_dir: &Path) -> Result<netbpf::ruleslock::RulesLock> {
    Ok(netbpf::ruleslock::RulesLock::acquire(
        pin_dir,
        std::time::Duration::from_secs(10),
    )?)
}

pub fn publish(command: PublishCommand, pin_dir: &Path) -> Result<()> {
    let _lock = rules_lock(pin_dir)?;
    match command {
        PublishCommand::Add {
            proto,
            port,
            to,
            address,
        } => {
            let rule = config::publish_entry(&proto, &port, &to, address)
                .map_err(ControlError::Invalid)?;
            control::publish_add(pin_dir, &rule)?;
            println!(
                "published {} {} → {}:{}",
                rule.proto, rule.port, rule.to_addr, rule.to_port
            );
        }
        PublishCommand::Del {
            proto,
            port,
            address,
        } => {
            let (proto, port, address) =
                config::publish_key(&proto, &port, address).map_err(ControlError::Invalid)?;
            control::publish_del(pin_dir, proto, port, address)?;
            println!("removed the published {proto} {port}");
        }
    }
    Ok(())
}

pub fn masquerade(command: MasqueradeCommand, pin_dir: &Path) -> Result<()> {
    let _lock = rules_lock(pin_dir)?;
    match command {
        MasqueradeCommand::Add { source, ports, to } => {
            let rule = config::masquerade_entry(&source, ports.as_deref())
                .map_err(ControlError::Invalid)?;
            let to = control::masquerade_add(pin_dir, &rule, to)?;
            println!("masquerading {} to {to}", rule.source);
        }
        MasqueradeCommand::Del { source } => {
            let rule = config::masquerade_entry(&source, None).map_err(ControlError::Invalid)?;
            control::masquerade_del(pin_dir, rule.source)?;
            println!("stopped masquerading {}", rule.source);
        }
    }
    Ok(())
}

pub fn list(command: NatCommand, pin_dir: &Path) -> Result<()> {
    let NatCommand::List(args) = command;
    let rules = netbpf::origins::nat_rules(pin_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rules)?);
    } else {
        print!("{}", rules.render());
    }
    Ok(())
}
