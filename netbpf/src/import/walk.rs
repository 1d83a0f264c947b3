//! Following the nat chains from PREROUTING and POSTROUTING to netbpf's rules: masquerade sources, published ports, what cannot be carried over.

use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::config::{Ipv4Cidr, PortRange, Proto};

use super::{error::*, parse::*};

// ---------------------------------------------------------------------------
// Walking the chains
// ---------------------------------------------------------------------------

/// Which hook a walk started from, and the interface a packet of interest
/// has there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    /// Packets arriving on the uplink.
    Prerouting,
    /// The host's own packets (no input interface).
    Output,
    /// Packets leaving through the uplink.
    Postrouting,
}

pub(crate) fn iface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether every interface condition holds for `name` ("" = none).
pub(crate) fn admits(conds: &[Neg<String>], name: &str) -> bool {
    conds.iter().all(|c| iface_matches(&c.v, name) != c.neg)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MasqEntry {
    pub(crate) source: Ipv4Cidr,
    pub(crate) ports: Option<PortRange>,
    /// `Some` for SNAT.
    pub(crate) address: Option<Ipv4Addr>,
    pub(crate) line: usize,
    pub(crate) text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishEntry {
    pub(crate) proto: Proto,
    pub(crate) port: PortRange,
    pub(crate) to_addr: Ipv4Addr,
    pub(crate) to_port: u16,
    pub(crate) address: Option<Ipv4Addr>,
    pub(crate) origin: Vec<(usize, String)>,
}

pub(crate) struct Walker<'a> {
    pub(crate) chains: &'a [(String, Chain)],
    pub(crate) uplink: String,
    pub(crate) skip: bool,
    pub(crate) skipped: Vec<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) masq: Vec<MasqEntry>,
    /// DNAT rule line -> entry, with the hooks it was reached from.
    pub(crate) publish: Vec<(PublishEntry, Vec<Hook>)>,
    pub(crate) reached: BTreeSet<String>,
    /// DNAT rules that exclude the containers' interfaces (`! -i docker0`).
    pub(crate) hairpin_lines: Vec<usize>,
}

impl Walker<'_> {
    pub(crate) fn unsupported(&mut self, rule: &Rule, reason: String) -> Result<(), ImportError> {
        self.unsupported_raw(rule.line, &rule.text, reason)
    }

    pub(crate) fn unsupported_raw(
        &mut self,
        line: usize,
        text: &str,
        reason: String,
    ) -> Result<(), ImportError> {
        if self.skip {
            self.skipped
                .push(format!("line {line}: skipped: {reason}: {text}"));
            Ok(())
        } else {
            Err(ImportError::Unsupported {
                line,
                rule: text.to_owned(),
                reason,
            })
        }
    }

    pub(crate) fn note(&mut self, rule: &Rule, what: &str) {
        let n = format!("line {}: {what}", rule.line);
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    pub(crate) fn walk(
        &mut self,
        chain: &str,
        ctx: &Matches,
        hook: Hook,
        stack: &mut Vec<String>,
    ) -> Result<(), ImportError> {
        if stack.iter().any(|c| c == chain) || stack.len() > 32 {
            return Err(ImportError::Dump(format!(
                "chain {chain} jumps back into itself ({})",
                stack.join(" -> ")
            )));
        }
        let Some(idx) = self.chains.iter().position(|(n, _)| n == chain) else {
            return Err(ImportError::Dump(format!("chain {chain} is not declared")));
        };
        self.reached.insert(chain.to_owned());
        stack.push(chain.to_owned());
        let chains = self.chains;
        let rules = &chains[idx].1.rules;
        for (k, rule) in rules.iter().enumerate() {
            let rule = match rule {
                Ok(r) => r,
                Err((line, text, reason)) => {
                    self.unsupported_raw(*line, text, reason.clone())?;
                    continue;
                }
            };
            let last = k + 1 == rules.len();
            let m = ctx.and(&rule.matches);
            self.rule(rule, &m, hook, last, stack)?;
        }
        stack.pop();
        Ok(())
    }

    /// Whether the matches can hold for a packet of interest at `hook`
    /// (by interface and destination only).
    pub(crate) fn relevant(&self, m: &Matches, hook: Hook) -> bool {
        let ok_if = match hook {
            Hook::Prerouting => admits(&m.iif, &self.uplink),
            Hook::Output => admits(&m.iif, ""),
            Hook::Postrouting => admits(&m.oif, &self.uplink),
        };
        ok_if && !m.dst_unsatisfiable()
    }

    pub(crate) fn rule(
        &mut self,
        rule: &Rule,
        m: &Matches,
        hook: Hook,
        last: bool,
        stack: &mut Vec<String>,
    ) -> Result<(), ImportError> {
        match &rule.target {
            Target::Jump(chain) => {
                if BUILTIN.contains(&chain.as_str()) {
                    return self.unsupported(rule, format!("a jump to built-in chain {chain}"));
                }
                if self.relevant(m, hook) {
                    self.walk(chain, m, hook, stack)?;
                } else {
                    self.reached.insert(chain.clone());
                }
                Ok(())
            }
            Target::Return | Target::Accept => {
                if last || !self.relevant(m, hook) {
                    if !last {
                        self.note(
                            rule,
                            "only concerns traffic that netbpf handles on its own (not from the \
                             uplink): ignored",
                        );
                    }
                    return Ok(());
                }
                self.unsupported(
                    rule,
                    "an exception (RETURN/ACCEPT) for traffic on the uplink before later NAT \
                     rules: netbpf has no exceptions"
                        .into(),
                )
            }
            Target::Masquerade { .. } | Target::Snat { .. } => match hook {
                Hook::Postrouting => self.masquerade(rule, m),
                _ => self.unsupported(rule, "source NAT outside POSTROUTING".into()),
            },
            Target::Dnat {
                addr,
                ports,
                random,
            } => match hook {
                Hook::Prerouting | Hook::Output => self.dnat(rule, m, hook, *addr, *ports, *random),
                Hook::Postrouting => self.unsupported(rule, "DNAT in POSTROUTING".into()),
            },
        }
    }

    pub(crate) fn masquerade(&mut self, rule: &Rule, m: &Matches) -> Result<(), ImportError> {
        // Docker's hairpin rule: a container reaching its own published
        // port through the host. netbpf hairpins published ports itself.
        let src32: Vec<_> = m.src.iter().filter(|s| !s.neg).collect();
        let dst32: Vec<_> = m.dst.iter().filter(|d| !d.neg).collect();
        if let ([s], [d]) = (&src32[..], &dst32[..])
            && s.v == d.v
            && s.v.prefix_len == 32
            && !m.dport.is_empty()
        {
            self.note(
                rule,
                "Docker's hairpin MASQUERADE: netbpf hairpins published ports itself (the \
                 container sees the host's uplink address, not the bridge's)",
            );
            return Ok(());
        }
        // Docker's `-o BRIDGE -m addrtype --src-type LOCAL`: the host's own
        // connections into the containers.
        if !admits(&m.oif, &self.uplink) {
            if m.src_type.iter().any(|t| !t.neg && t.v == "LOCAL") {
                self.note(
                    rule,
                    "source NAT of the host's own connections into the containers: netbpf \
                     redirects those with socket hooks (the container sees the host's address)",
                );
                return Ok(());
            }
            return self.unsupported(
                rule,
                format!(
                    "source NAT out of another interface than the uplink {}",
                    self.uplink
                ),
            );
        }
        if m.oif.is_empty() || m.oif.iter().any(|o| o.neg) {
            let n = format!(
                "netbpf masquerades only what leaves through the uplink {}",
                self.uplink
            );
            self.note(rule, &n);
        }
        if !m.proto.is_empty() || !m.dport.is_empty() {
            return self.unsupported(
                rule,
                "source NAT of one protocol or port: netbpf masquerades all of a source's \
                 traffic"
                    .into(),
            );
        }
        if !m.dst_type.is_empty() || !m.src_type.is_empty() {
            return self.unsupported(rule, "-m addrtype on source NAT".into());
        }
        let sources: Vec<Ipv4Cidr> = m
            .src
            .iter()
            .filter(|s| !s.neg && s.v.prefix_len > 0)
            .map(|s| s.v)
            .collect();
        if m.src.iter().any(|s| s.neg) {
            return self.unsupported(rule, "a negated source (! -s)".into());
        }
        let source = match sources[..] {
            [s] => s,
            [] => {
                return self.unsupported(
                    rule,
                    "no source (-s): netbpf masquerades the container subnets it is given".into(),
                );
            }
            _ => return self.unsupported(rule, "more than one -s".into()),
        };
        for d in &m.dst {
            if d.v.prefix_len == 0 && !d.neg {
                continue;
            }
            if d.neg && d.v.prefix_len <= source.prefix_len && d.v.contains(source.addr) {
                // `! -d <own subnet>`: that traffic never leaves the uplink.
                continue;
            }
            return self.unsupported(
                rule,
                format!(
                    "a destination match ({}-d {}): netbpf masquerades every destination",
                    if d.neg { "! " } else { "" },
                    d.v
                ),
            );
        }
        let (ports, address, random) = match &rule.target {
            Target::Masquerade { ports, random } => (*ports, None, *random),
            Target::Snat {
                addr,
                ports,
                random,
            } => (*ports, Some(*addr), *random),
            _ => return Ok(()),
        };
        if random {
            self.note(
                rule,
                "--random/--random-fully: netbpf keeps the source port when it is free and \
                 otherwise probes from a random start",
            );
        }
        let entry = MasqEntry {
            source,
            ports,
            address,
            line: rule.line,
            text: rule.text.clone(),
        };
        for prev in &self.masq {
            if prev.line == entry.line {
                return Ok(());
            }
            if prev.source == entry.source
                && prev.ports == entry.ports
                && prev.address == entry.address
            {
                self.note(rule, &format!("same as line {}: merged", prev.line));
                return Ok(());
            }
            if prev.source.overlaps(&entry.source) {
                let why = format!(
                    "source {} overlaps line {} ({}), whose rule comes first",
                    entry.source, prev.line, prev.source
                );
                return self.unsupported(rule, why);
            }
            if prev.address != entry.address {
                let why = format!(
                    "translates to {} but line {} to {}: netbpf has one outside address",
                    show_addr(entry.address),
                    prev.line,
                    show_addr(prev.address)
                );
                return self.unsupported(rule, why);
            }
        }
        self.masq.push(entry);
        Ok(())
    }

    pub(crate) fn dnat(
        &mut self,
        rule: &Rule,
        m: &Matches,
        hook: Hook,
        to_addr: Ipv4Addr,
        to_ports: Option<PortRange>,
        random: bool,
    ) -> Result<(), ImportError> {
        if !self.relevant(m, hook) {
            if hook == Hook::Prerouting && !m.dst_unsatisfiable() {
                return self.unsupported(
                    rule,
                    format!(
                        "DNAT only for traffic arriving on other interfaces than the uplink {}",
                        self.uplink
                    ),
                );
            }
            return Ok(());
        }
        if let Some((_, hooks)) = self
            .publish
            .iter_mut()
            .find(|(e, _)| e.origin.first().map(|o| o.0) == Some(rule.line))
        {
            hooks.push(hook);
            return Ok(());
        }
        let protos: BTreeSet<&str> = m.proto.iter().map(|p| p.v.as_str()).collect();
        if m.proto.iter().any(|p| p.neg) || protos.len() != 1 {
            return self.unsupported(
                rule,
                "DNAT needs exactly one -p tcp or -p udp: netbpf publishes TCP and UDP ports"
                    .into(),
            );
        }
        let proto = match protos.first().copied() {
            Some("tcp" | "6") => Proto::Tcp,
            Some("udp" | "17") => Proto::Udp,
            Some(p) => {
                return self
                    .unsupported(rule, format!("protocol {p}: netbpf publishes TCP and UDP"));
            }
            None => return Ok(()),
        };
        let port = match m.dport[..] {
            [Neg { neg: false, v }] => v,
            [] => {
                return self.unsupported(
                    rule,
                    "DNAT without --dport: netbpf publishes ports, not whole addresses".into(),
                );
            }
            _ => return self.unsupported(rule, "a negated or repeated --dport".into()),
        };
        if m.src.iter().any(|s| s.neg || s.v.prefix_len > 0) {
            return self.unsupported(
                rule,
                "a source match on DNAT: netbpf publishes a port to every client".into(),
            );
        }
        if m.dst.iter().any(|d| d.neg && hook == Hook::Prerouting) {
            return self.unsupported(rule, "a negated destination (! -d) on DNAT".into());
        }
        if m.dst_type.iter().any(|t| t.neg || t.v != "LOCAL") || !m.src_type.is_empty() {
            return self.unsupported(
                rule,
                "-m addrtype other than --dst-type LOCAL on DNAT".into(),
            );
        }
        let address = match m.dst_pos()[..] {
            [] => None,
            [d] if d.prefix_len == 32 => Some(d.addr),
            [d] => {
                return self.unsupported(
                    rule,
                    format!("destination {d}: netbpf publishes on one host address or all of them"),
                );
            }
            _ => return self.unsupported(rule, "more than one -d".into()),
        };
        if address.is_none() && m.dst_type.is_empty() {
            self.note(
                rule,
                "DNAT without -d or --dst-type LOCAL also catches traffic routed through the \
                 host; netbpf publishes on the host's own addresses only",
            );
        }
        let to_port = match to_ports {
            None => port.start,
            Some(r) if r.start == r.end && port.start == port.end => r.start,
            Some(r) if r.start == r.end => {
                return self.unsupported(
                    rule,
                    format!(
                        "host ports {port} all to port {}: netbpf maps a range 1:1",
                        r.start
                    ),
                );
            }
            Some(r) if r.start <= port.start && port.end <= r.end && !random => port.start,
            Some(r) => {
                return self.unsupported(
                    rule,
                    format!(
                        "host ports {port} to ports {r}: the kernel picks a port in the range; \
                         netbpf maps a range 1:1"
                    ),
                );
            }
        };
        if random {
            self.note(rule, "--random on DNAT to one port has no effect");
        }
        if hook == Hook::Prerouting && m.iif.iter().any(|i| i.neg) {
            // Excludes the container interfaces (Docker's `! -i docker0`).
            self.hairpin_lines.push(rule.line);
        }
        let entry = PublishEntry {
            proto,
            port,
            to_addr,
            to_port,
            address,
            origin: vec![(rule.line, rule.text.clone())],
        };
        for (prev, _) in &self.publish {
            let collide = match (prev.address, entry.address) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            if prev.proto == entry.proto && collide && prev.port.overlaps(&entry.port) {
                let line = prev.origin.first().map_or(0, |o| o.0);
                let why = format!(
                    "{} port {} overlaps line {line} ({} {}), which comes first",
                    entry.proto, entry.port, prev.proto, prev.port
                );
                return self.unsupported(rule, why);
            }
        }
        self.publish.push((entry, vec![hook]));
        Ok(())
    }
}

pub(crate) fn show_addr(a: Option<Ipv4Addr>) -> String {
    a.map_or("the interface's address (MASQUERADE)".into(), |a| {
        a.to_string()
    })
}
