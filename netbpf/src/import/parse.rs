//! Reading `iptables-save`: tokens, the nat table's chains and rules, their matches and targets.

use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::config::{Ipv4Cidr, PortRange};

use super::error::*;

// ---------------------------------------------------------------------------
// Parsed rules
// ---------------------------------------------------------------------------

/// A match that may be negated with `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Neg<T> {
    pub(crate) neg: bool,
    pub(crate) v: T,
}

/// Everything a packet must match: a rule's own matches, or those of a
/// rule and every jump that led to it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matches {
    pub(crate) src: Vec<Neg<Ipv4Cidr>>,
    pub(crate) dst: Vec<Neg<Ipv4Cidr>>,
    pub(crate) iif: Vec<Neg<String>>,
    pub(crate) oif: Vec<Neg<String>>,
    pub(crate) proto: Vec<Neg<String>>,
    pub(crate) dport: Vec<Neg<PortRange>>,
    /// `-m addrtype --dst-type T` (negated, type).
    pub(crate) dst_type: Vec<Neg<String>>,
    /// `-m addrtype --src-type T`.
    pub(crate) src_type: Vec<Neg<String>>,
}

impl Matches {
    pub(crate) fn and(&self, other: &Matches) -> Matches {
        fn join<T: Clone>(a: &[T], b: &[T]) -> Vec<T> {
            [a, b].concat()
        }
        Matches {
            src: join(&self.src, &other.src),
            dst: join(&self.dst, &other.dst),
            iif: join(&self.iif, &other.iif),
            oif: join(&self.oif, &other.oif),
            proto: join(&self.proto, &other.proto),
            dport: join(&self.dport, &other.dport),
            dst_type: join(&self.dst_type, &other.dst_type),
            src_type: join(&self.src_type, &other.src_type),
        }
    }

    /// Positive destinations that are not `0.0.0.0/0`.
    pub(crate) fn dst_pos(&self) -> Vec<Ipv4Cidr> {
        self.dst
            .iter()
            .filter(|d| !d.neg && d.v.prefix_len > 0)
            .map(|d| d.v)
            .collect()
    }

    /// Whether the destination matches cannot all hold (a positive
    /// destination inside a negated one).
    pub(crate) fn dst_unsatisfiable(&self) -> bool {
        self.dst.iter().filter(|d| !d.neg).any(|p| {
            self.dst
                .iter()
                .filter(|n| n.neg)
                .any(|n| n.v.prefix_len <= p.v.prefix_len && n.v.contains(p.v.addr))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Masquerade {
        ports: Option<PortRange>,
        random: bool,
    },
    Snat {
        addr: Ipv4Addr,
        ports: Option<PortRange>,
        random: bool,
    },
    Dnat {
        addr: Ipv4Addr,
        ports: Option<PortRange>,
        random: bool,
    },
    Return,
    Accept,
    Jump(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) line: usize,
    pub(crate) text: String,
    pub(crate) matches: Matches,
    pub(crate) target: Target,
}

#[derive(Debug, Default)]
pub(crate) struct Chain {
    pub(crate) policy: Option<String>,
    pub(crate) declared_line: usize,
    pub(crate) rules: Vec<Result<Rule, (usize, String, String)>>,
}

pub(crate) const BUILTIN: [&str; 4] = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"];

/// Splits a rule into words, honouring iptables-save's double quotes
/// (`--comment "a b"`, with `\"` inside).
pub(crate) fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

pub(crate) fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    let c: Ipv4Cidr = s.parse()?;
    Ok(c.network())
}

/// iptables port ranges are `A:B` (`A-B` is accepted too).
pub(crate) fn parse_ipt_ports(s: &str) -> Result<PortRange, String> {
    s.replace(':', "-").parse()
}

/// `--to-destination A[:P[-Q]]` / `--to-source A[:P[-Q]]`.
pub(crate) fn parse_to(s: &str) -> Result<(Ipv4Addr, Option<PortRange>), String> {
    let (addr, ports) = match s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    if addr.contains('-') {
        return Err(format!(
            "{s:?} is an address range; netbpf translates to one address"
        ));
    }
    if ports.is_some_and(|p| p.contains('/')) {
        return Err(format!(
            "{s:?} has a port offset (/BASE), which netbpf does not reproduce"
        ));
    }
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let ports = ports.map(|p| p.parse::<PortRange>()).transpose()?;
    Ok((addr, ports))
}

/// Parses the words after `-A CHAIN`.
pub(crate) fn parse_rule(args: &[String]) -> Result<(Matches, Target), String> {
    let mut m = Matches::default();
    let mut target_name: Option<String> = None;
    let mut to: Option<String> = None;
    let mut to_ports: Option<String> = None;
    let mut random = false;
    let mut neg = false;
    let mut i = 0;
    let next = |i: &mut usize, opt: &str| -> Result<String, String> {
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| format!("{opt} needs a value"))
    };
    while i < args.len() {
        let a = args[i].as_str();
        if a == "!" {
            neg = true;
            i += 1;
            continue;
        }
        let was_neg = std::mem::take(&mut neg);
        match a {
            "-s" | "--source" => m.src.push(Neg {
                neg: was_neg,
                v: parse_cidr(&next(&mut i, a)?)?,
            }),
            "-d" | "--destination" => m.dst.push(Neg {
                neg: was_neg,
                v: parse_cidr(&next(&mut i, a)?)?,
            }),
            "-i" | "--in-interface" => m.iif.push(Neg {
                neg: was_neg,
                v: next(&mut i, a)?,
            }),
            "-o" | "--out-interface" => m.oif.push(Neg {
                neg: was_neg,
                v: next(&mut i, a)?,
            }),
            "-p" | "--protocol" => m.proto.push(Neg {
                neg: was_neg,
                v: next(&mut i, a)?.to_ascii_lowercase(),
            }),
            "-m" | "--match" => {
                let module = next(&mut i, a)?;
                if !matches!(module.as_str(), "tcp" | "udp" | "addrtype" | "comment") {
                    return Err(format!("match module -m {module} is not supported"));
                }
            }
            "--dport" | "--destination-port" => m.dport.push(Neg {
                neg: was_neg,
                v: parse_ipt_ports(&next(&mut i, a)?)?,
            }),
            "--dst-type" => m.dst_type.push(Neg {
                neg: was_neg,
                v: next(&mut i, a)?,
            }),
            "--src-type" => m.src_type.push(Neg {
                neg: was_neg,
                v: next(&mut i, a)?,
            }),
            "--comment" => {
                next(&mut i, a)?;
            }
            "-j" | "--jump" => target_name = Some(next(&mut i, a)?),
            "--to-destination" | "--to-source" => {
                if to.is_some() {
                    return Err("more than one --to-* address: netbpf translates to one".into());
                }
                to = Some(next(&mut i, a)?);
            }
            "--to-ports" => to_ports = Some(next(&mut i, a)?),
            "--random" | "--random-fully" => random = true,
            "--persistent" => {}
            "-g" | "--goto" => return Err("-g (goto) is not supported".into()),
            other => return Err(format!("option {other} is not supported")),
        }
        if was_neg && matches!(a, "-m" | "-j" | "--comment") {
            return Err(format!("`! {a}` is not valid"));
        }
        i += 1;
    }
    let name = target_name.ok_or("the rule has no -j target")?;
    let target = match name.as_str() {
        "MASQUERADE" => Target::Masquerade {
            ports: to_ports.map(|p| p.parse()).transpose()?,
            random,
        },
        "SNAT" => {
            let (addr, ports) = parse_to(&to.ok_or("SNAT without --to-source")?)?;
            Target::Snat {
                addr,
                ports,
                random,
            }
        }
        "DNAT" => {
            let (addr, ports) = parse_to(&to.ok_or("DNAT without --to-destination")?)?;
            Target::Dnat {
                addr,
                ports,
                random,
            }
        }
        "RETURN" => Target::Return,
        "ACCEPT" => Target::Accept,
        "REDIRECT" | "NETMAP" | "DROP" | "REJECT" | "LOG" | "MARK" | "CONNMARK" | "TPROXY" => {
            return Err(format!("target -j {name} is not supported"));
        }
        chain => Target::Jump(chain.to_owned()),
    };
    Ok((m, target))
}

/// Parses the `*nat` table of a dump into its chains (by name, in order of
/// declaration). The rules of the other tables (and their chains' DROP
/// policies) go to `dropped`, one warning each: netbpf has no packet
/// filter, so Docker's `DOCKER-USER` restrictions and isolation rules are
/// not carried over.
pub(crate) fn parse_nat(
    text: &str,
    notes: &mut Vec<String>,
    dropped: &mut Vec<String>,
) -> Result<Vec<(String, Chain)>, ImportError> {
    let mut chains: Vec<(String, Chain)> = Vec::new();
    let mut table: Option<String> = None;
    let mut saw_nat = false;
    let mut other_tables = BTreeSet::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(t) = l.strip_prefix('*') {
            table = Some(t.to_owned());
            if t == "nat" {
                if saw_nat {
                    return Err(ImportError::Dump(format!(
                        "line {line}: a second *nat table"
                    )));
                }
                saw_nat = true;
            } else {
                other_tables.insert(t.to_owned());
            }
            continue;
        }
        if l == "COMMIT" {
            table = None;
            continue;
        }
        let Some(t) = &table else {
            return Err(ImportError::Dump(format!(
                "line {line}: {l:?} is outside a table (is this iptables-save output?)"
            )));
        };
        // `iptables-save -c` puts counters first.
        let l = if l.starts_with('[') {
            l.split_once(']').map_or(l, |(_, r)| r.trim_start())
        } else {
            l
        };
        if t != "nat" {
            if let Some(decl) = l.strip_prefix(':') {
                let mut w = decl.split_whitespace();
                if let (Some(chain), Some(policy)) = (w.next(), w.next())
                    && policy != "-"
                    && policy != "ACCEPT"
                {
                    dropped.push(format!(
                        "line {line}: *{t} chain {chain} has policy {policy}: not imported \
                         (netbpf has no packet filter)"
                    ));
                }
            } else if l.starts_with("-A ") {
                dropped.push(format!(
                    "line {line}: *{t} rule not imported (netbpf has no packet filter): {l}"
                ));
            }
            continue;
        }
        if let Some(decl) = l.strip_prefix(':') {
            let mut w = decl.split_whitespace();
            let name = w.next().unwrap_or_default().to_owned();
            let policy = w.next().filter(|p| *p != "-").map(str::to_owned);
            chains.push((
                name,
                Chain {
                    policy,
                    declared_line: line,
                    rules: Vec::new(),
                },
            ));
            continue;
        }
        let w = words(l).map_err(|e| ImportError::Dump(format!("line {line}: {e}")))?;
        if w.first().map(String::as_str) != Some("-A") || w.len() < 2 {
            return Err(ImportError::Dump(format!(
                "line {line}: {l:?} is not a chain declaration or an -A rule"
            )));
        }
        let chain = &w[1];
        let Some((_, c)) = chains.iter_mut().find(|(name, _)| name == chain) else {
            return Err(ImportError::Dump(format!(
                "line {line}: chain {chain} is not declared"
            )));
        };
        c.rules.push(match parse_rule(&w[2..]) {
            Ok((matches, target)) => Ok(Rule {
                line,
                text: l.to_owned(),
                matches,
                target,
            }),
            Err(reason) => Err((line, l.to_owned(), reason)),
        });
    }
    if !saw_nat {
        return Err(ImportError::Dump(
            "no *nat table in the dump (use `iptables-save -t nat` or plain `iptables-save`)"
                .into(),
        ));
    }
    if !other_tables.is_empty() {
        notes.push(format!(
            "only the nat table was read; ignored: {} (netbpf has no packet filter: Docker's \
             isolation rules in filter are not imported)",
            other_tables.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(chains)
}
