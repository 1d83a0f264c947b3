//! Docker's state → the netbpf rules Docker's iptables rules would be:
//! a masquerade rule per bridge subnet that asks for it (POSTROUTING
//! MASQUERADE), a published entry per run of container ports (the DOCKER
//! chain's DNAT), the bridges to hairpin on, and those whose containers
//! must not talk to each other (`enable_icc=false`). Pure: every rule is built
//! and checked by the config's own parsers and overlap rule, and a rule
//! that conflicts with one held by someone else (the config file, a live
//! change, another container) is refused with a message naming both.

use std::net::Ipv4Addr;

use crate::{
    config::{Ipv4Cidr, Masquerade, Publish, masquerade_entry, publish_collides, publish_entry},
    datapath::IccBridge,
    owners::{OwnedEntry, OwnedRule},
};

use super::model::{Binding, DockerState};

/// The owner name Docker's rules are registered under.
pub const DOCKER_OWNER: &str = "docker";

/// Rules already in the datapath that Docker does not own, with their
/// origins (`config`, `live`, ...).
#[derive(Debug, Clone, Default)]
pub struct Others {
    /// Masquerade sources.
    pub masquerade: Vec<(String, Ipv4Cidr)>,
    /// Published entries.
    pub publish: Vec<(String, Publish)>,
}

/// What Docker's state asks for, and what was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The rules, each with its origin (`docker:<container>`,
    /// `docker:network:<name>`).
    pub entries: Vec<OwnedEntry>,
    /// One line per refused rule, naming both sides of a conflict.
    pub refused: Vec<String>,
    /// Every bridge network's subnets with its isolation number.
    pub isolation: Vec<(Ipv4Cidr, u32)>,
    /// The bridges of networks with `enable_icc=false`.
    pub icc_off: Vec<IccBridge>,
}

/// The origin of a container's rules.
pub fn container_origin(name: &str) -> String {
    format!("{DOCKER_OWNER}:{name}")
}

/// The origin of a network's rules.
pub fn network_origin(name: &str) -> String {
    format!("{DOCKER_OWNER}:network:{name}")
}

/// Translates `state`, refusing what conflicts with `others` or with an
/// earlier container (containers in name order: the first keeps the port).
pub fn translate(state: &DockerState, others: &Others) -> Desired {
    let mut out = Desired::default();
    let mut masq: Vec<(String, Masquerade)> = Vec::new();
    for n in &state.networks {
        let origin = network_origin(&n.name);
        out.entries.push(OwnedEntry {
            origin: origin.clone(),
            rule: OwnedRule::Interface {
                name: n.bridge.clone(),
            },
        });
        out.isolation
            .extend(n.subnets.iter().map(|s| (*s, n.isolation_id())));
        // Docker's bridge driver allows one IPv4 subnet per network.
        if let (false, Some(subnet)) = (n.icc, n.subnets.first()) {
            out.icc_off.push(IccBridge {
                bridge: n.bridge.clone(),
                subnet: *subnet,
            });
        }
        if !n.masquerade || n.internal {
            continue;
        }
        for subnet in &n.subnets {
            let m = match masquerade_entry(&subnet.to_string(), None) {
                Ok(m) => m,
                Err(e) => {
                    out.refused
                        .push(format!("{origin}: masquerade of {subnet} refused: {e}"));
                    continue;
                }
            };
            let clash = others
                .masquerade
                .iter()
                .map(|(o, c)| (o.as_str(), *c))
                .chain(masq.iter().map(|(o, h)| (o.as_str(), h.source)))
                .find(|(_, c)| c.overlaps(&m.source));
            if let Some((held_by, held)) = clash {
                out.refused.push(format!(
                    "{origin}: masquerade of {subnet} refused: it overlaps {held} from {held_by}"
                ));
                continue;
            }
            masq.push((origin.clone(), m));
        }
    }
    out.entries
        .extend(masq.iter().map(|(origin, m)| OwnedEntry {
            origin: origin.clone(),
            rule: OwnedRule::masquerade(m),
        }));
    let mut accepted: Vec<(String, Publish)> = Vec::new();
    for c in &state.containers {
        let origin = container_origin(&c.name);
        let Some(addr) = c.addr else {
            if !c.bindings.is_empty() {
                out.refused.push(format!(
                    "{origin}: published ports refused: it has no IPv4 address on a bridge network"
                ));
            }
            continue;
        };
        let binding_default = c
            .network
            .as_ref()
            .and_then(|name| state.networks.iter().find(|n| &n.name == name))
            .and_then(|n| n.host_binding);
        for run in runs(&c.bindings) {
            let host = run.first.host_addr.or(binding_default);
            let port = if run.last == run.first.host_port {
                run.first.host_port.to_string()
            } else {
                format!("{}-{}", run.first.host_port, run.last)
            };
            let to = format!("{addr}:{}", run.first.container_port);
            let what = format!("{} {}:{port} → {to}", run.first.proto, any(host));
            let p = match publish_entry(&run.first.proto.to_string(), &port, &to, host) {
                Ok(p) => p,
                Err(e) => {
                    out.refused.push(format!("{origin}: {what} refused: {e}"));
                    continue;
                }
            };
            let clash = others
                .publish
                .iter()
                .chain(accepted.iter())
                .find(|(_, held)| {
                    publish_collides(
                        (held.proto.number(), held.address, held.port),
                        (p.proto.number(), p.address, p.port),
                    )
                });
            if let Some((held_by, held)) = clash {
                out.refused.push(format!(
                    "{origin}: {what} refused: it collides with {} {}:{} → {}:{} from {held_by}",
                    held.proto,
                    any(held.address),
                    held.port,
                    held.to_addr,
                    held.to_port
                ));
                continue;
            }
            accepted.push((origin.clone(), p));
        }
    }
    out.entries
        .extend(accepted.iter().map(|(origin, p)| OwnedEntry {
            origin: origin.clone(),
            rule: OwnedRule::publish(p),
        }));
    out
}

fn any(addr: Option<Ipv4Addr>) -> String {
    addr.map_or_else(|| "*".to_owned(), |a| a.to_string())
}

/// Consecutive bindings (same protocol and host address, host and
/// container ports both one up) merged: Docker lists `-p 8000-8010:...`
/// port by port; netbpf holds it as one range.
struct Run {
    first: Binding,
    last: u16,
}

fn runs(bindings: &[Binding]) -> Vec<Run> {
    let mut sorted = bindings.to_vec();
    sorted.sort_by_key(|b| (b.proto.number(), b.host_addr, b.host_port, b.container_port));
    sorted.dedup();
    let mut out: Vec<Run> = Vec::new();
    for b in sorted {
        if let Some(run) = out.last_mut() {
            let offset = u32::from(run.last - run.first.host_port) + 1;
            if run.first.proto == b.proto
                && run.first.host_addr == b.host_addr
                && u32::from(b.host_port) == u32::from(run.last) + 1
                && u32::from(b.container_port) == u32::from(run.first.container_port) + offset
            {
                run.last = b.host_port;
                continue;
            }
        }
        out.push(Run {
            first: b,
            last: b.host_port,
        });
    }
    out
}

#[cfg(test)]
mod tests;
