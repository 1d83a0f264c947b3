//! `netbpf import iptables-save`: turns an `iptables-save` dump into an
//! equivalent netbpf config.
//!
//! Only the `*nat` table is read (other tables are skipped with a note).
//! The chains are walked from the built-in ones (PREROUTING, OUTPUT,
//! POSTROUTING) through jumps into user chains (Docker's `DOCKER`), with
//! the jump's matches carried along, so a rule is judged by everything a
//! packet had to match to reach it:
//!
//! * `MASQUERADE` / `SNAT --to-source` in POSTROUTING for packets that leave
//!   through the uplink become `[[masquerade]]` (`--to-ports` / the SNAT
//!   port range become `ports`, the SNAT address `[uplink] address`);
//! * `DNAT --to-destination` reached from PREROUTING for packets arriving
//!   on the uplink become `[[publish]]` (`-d ADDR/32` becomes `address`);
//!   Docker's per-port rules of a published range are merged back into one
//!   range;
//! * what netbpf does by itself is recognised and left out with a note:
//!   Docker's hairpin `MASQUERADE` (`-s C/32 -d C/32 --dport P`), `RETURN`s
//!   that only concern traffic from the containers, the OUTPUT chain's jump
//!   (netbpf redirects the host's own connections with socket hooks).
//!
//! Everything else that changes what happens to traffic through the uplink
//! and that netbpf cannot say exactly is an [`ImportError::Unsupported`]
//! quoting the rule and its line, or, with
//! [`ImportOptions::skip_unsupported`], a warning in
//! [`Imported::skipped`]. The result is validated with
//! [`Config::from_toml`] before it is returned.

use std::{collections::BTreeSet, fmt::Write as _, net::Ipv4Addr, path::Path, time::Duration};

use crate::config::{Config, ConfigError, Ipv4Cidr, PortRange, Proto};

/// What can go wrong importing a dump.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A rule netbpf cannot express exactly (or cannot parse).
    #[error(
        "line {line}: {reason}\n  {rule}\n(pass --skip-unsupported to skip such rules with a warning)"
    )]
    Unsupported {
        /// 1-based line number in the dump.
        line: usize,
        /// The rule as written.
        rule: String,
        /// Why it cannot be imported.
        reason: String,
    },
    /// The dump as a whole cannot be imported.
    #[error("{0}")]
    Dump(String),
    /// The generated config does not validate (a bug, or a combination the
    /// checks here missed).
    #[error("the imported config does not validate: {0}")]
    Config(#[from] ConfigError),
    /// Reading the conntrack sysctls failed.
    #[error("reading {path}: {source}")]
    Sysctl {
        /// The sysctl file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The uplink interface, when the rules do not name it (Docker's
    /// `! -o docker0` does not).
    pub uplink: Option<String>,
    /// Skip rules that cannot be expressed, with a warning each, instead
    /// of failing.
    pub skip_unsupported: bool,
    /// Adopt these conntrack timeouts (the kernel's sysctls, see
    /// [`read_sysctl_timeouts`]) instead of netbpf's RFC defaults.
    pub timeouts: Option<SysctlTimeouts>,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The config, as TOML with comments naming the rules each entry came
    /// from.
    pub toml: String,
    /// The same config, parsed and validated.
    pub config: Config,
    /// One warning per rule skipped with `skip_unsupported`.
    pub skipped: Vec<String>,
    /// One warning per rule of another table than `nat` (filter's
    /// `DOCKER-USER`, `FORWARD`, ...; raw, mangle) and per non-ACCEPT
    /// policy there: not imported, since netbpf has no packet filter. The
    /// command prints each on stderr; the TOML only has a summary note.
    pub dropped: Vec<String>,
    /// Where netbpf's behaviour differs from the rules in ways the
    /// importer accepts (also written into the TOML as comments).
    pub notes: Vec<String>,
    /// The rule (`(line, text)`) each of `config.masquerade` came from, in
    /// the same order.
    pub masquerade_origin: Vec<(usize, String)>,
    /// The rules each of `config.publish` came from, in the same order.
    pub publish_origin: Vec<Vec<(usize, String)>>,
}

/// The kernel's conntrack timeouts, as netbpf's four classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysctlTimeouts {
    /// `nf_conntrack_udp_timeout_stream`.
    pub udp: Duration,
    /// `nf_conntrack_tcp_timeout_established`.
    pub tcp_established: Duration,
    /// The longest of the opening and closing TCP states' timeouts.
    pub tcp_transitory: Duration,
    /// `nf_conntrack_icmp_timeout`.
    pub icmp: Duration,
}

/// The sysctls [`read_sysctl_timeouts`] combines into the transitory TCP
/// timeout (netbpf has one class for all of them).
pub const TCP_TRANSITORY_SYSCTLS: [&str; 6] = [
    "nf_conntrack_tcp_timeout_syn_sent",
    "nf_conntrack_tcp_timeout_syn_recv",
    "nf_conntrack_tcp_timeout_fin_wait",
    "nf_conntrack_tcp_timeout_close_wait",
    "nf_conntrack_tcp_timeout_last_ack",
    "nf_conntrack_tcp_timeout_time_wait",
];

/// Reads the conntrack timeouts from `dir` (normally
/// `/proc/sys/net/netfilter`, which exists once `nf_conntrack` is loaded).
pub fn read_sysctl_timeouts(dir: &Path) -> Result<SysctlTimeouts, ImportError> {
    let read = |name: &str| -> Result<Duration, ImportError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| ImportError::Sysctl {
            path: path.display().to_string(),
            source,
        })?;
        text.trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| ImportError::Sysctl {
                path: path.display().to_string(),
                source: std::io::Error::other(format!("{:?} is not a number", text.trim())),
            })
    };
    let mut transitory = Duration::ZERO;
    for name in TCP_TRANSITORY_SYSCTLS {
        transitory = transitory.max(read(name)?);
    }
    Ok(SysctlTimeouts {
        udp: read("nf_conntrack_udp_timeout_stream")?,
        tcp_established: read("nf_conntrack_tcp_timeout_established")?,
        tcp_transitory: transitory,
        icmp: read("nf_conntrack_icmp_timeout")?,
    })
}

// ---------------------------------------------------------------------------
// Parsed rules
// ---------------------------------------------------------------------------

/// A match that may be negated with `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Neg<T> {
    neg: bool,
    v: T,
}

/// Everything a packet must match: a rule's own matches, or those of a
/// rule and every jump that led to it.
#[derive(Debug, Clone, Default)]
struct Matches {
    src: Vec<Neg<Ipv4Cidr>>,
    dst: Vec<Neg<Ipv4Cidr>>,
    iif: Vec<Neg<String>>,
    oif: Vec<Neg<String>>,
    proto: Vec<Neg<String>>,
    dport: Vec<Neg<PortRange>>,
    /// `-m addrtype --dst-type T` (negated, type).
    dst_type: Vec<Neg<String>>,
    /// `-m addrtype --src-type T`.
    src_type: Vec<Neg<String>>,
}

impl Matches {
    fn and(&self, other: &Matches) -> Matches {
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
    fn dst_pos(&self) -> Vec<Ipv4Cidr> {
        self.dst
            .iter()
            .filter(|d| !d.neg && d.v.prefix_len > 0)
            .map(|d| d.v)
            .collect()
    }

    /// Whether the destination matches cannot all hold (a positive
    /// destination inside a negated one).
    fn dst_unsatisfiable(&self) -> bool {
        self.dst.iter().filter(|d| !d.neg).any(|p| {
            self.dst
                .iter()
                .filter(|n| n.neg)
                .any(|n| n.v.prefix_len <= p.v.prefix_len && n.v.contains(p.v.addr))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
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
struct Rule {
    line: usize,
    text: String,
    matches: Matches,
    target: Target,
}

#[derive(Debug, Default)]
struct Chain {
    policy: Option<String>,
    declared_line: usize,
    rules: Vec<Result<Rule, (usize, String, String)>>,
}

const BUILTIN: [&str; 4] = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"];

/// Splits a rule into words, honouring iptables-save's double quotes
/// (`--comment "a b"`, with `\"` inside).
fn words(s: &str) -> Result<Vec<String>, String> {
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

fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    let c: Ipv4Cidr = s.parse()?;
    Ok(c.network())
}

/// iptables port ranges are `A:B` (`A-B` is accepted too).
fn parse_ipt_ports(s: &str) -> Result<PortRange, String> {
    s.replace(':', "-").parse()
}

/// `--to-destination A[:P[-Q]]` / `--to-source A[:P[-Q]]`.
fn parse_to(s: &str) -> Result<(Ipv4Addr, Option<PortRange>), String> {
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
fn parse_rule(args: &[String]) -> Result<(Matches, Target), String> {
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
fn parse_nat(
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

// ---------------------------------------------------------------------------
// Walking the chains
// ---------------------------------------------------------------------------

/// Which hook a walk started from, and the interface a packet of interest
/// has there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// Packets arriving on the uplink.
    Prerouting,
    /// The host's own packets (no input interface).
    Output,
    /// Packets leaving through the uplink.
    Postrouting,
}

fn iface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether every interface condition holds for `name` ("" = none).
fn admits(conds: &[Neg<String>], name: &str) -> bool {
    conds.iter().all(|c| iface_matches(&c.v, name) != c.neg)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MasqEntry {
    source: Ipv4Cidr,
    ports: Option<PortRange>,
    /// `Some` for SNAT.
    address: Option<Ipv4Addr>,
    line: usize,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PublishEntry {
    proto: Proto,
    port: PortRange,
    to_addr: Ipv4Addr,
    to_port: u16,
    address: Option<Ipv4Addr>,
    origin: Vec<(usize, String)>,
}

struct Walker<'a> {
    chains: &'a [(String, Chain)],
    uplink: String,
    skip: bool,
    skipped: Vec<String>,
    notes: Vec<String>,
    masq: Vec<MasqEntry>,
    /// DNAT rule line -> entry, with the hooks it was reached from.
    publish: Vec<(PublishEntry, Vec<Hook>)>,
    reached: BTreeSet<String>,
    /// DNAT rules that exclude the containers' interfaces (`! -i docker0`).
    hairpin_lines: Vec<usize>,
}

impl Walker<'_> {
    fn unsupported(&mut self, rule: &Rule, reason: String) -> Result<(), ImportError> {
        self.unsupported_raw(rule.line, &rule.text, reason)
    }

    fn unsupported_raw(
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

    fn note(&mut self, rule: &Rule, what: &str) {
        let n = format!("line {}: {what}", rule.line);
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    fn walk(
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
    fn relevant(&self, m: &Matches, hook: Hook) -> bool {
        let ok_if = match hook {
            Hook::Prerouting => admits(&m.iif, &self.uplink),
            Hook::Output => admits(&m.iif, ""),
            Hook::Postrouting => admits(&m.oif, &self.uplink),
        };
        ok_if && !m.dst_unsatisfiable()
    }

    fn rule(
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

    fn masquerade(&mut self, rule: &Rule, m: &Matches) -> Result<(), ImportError> {
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

    fn dnat(
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

fn show_addr(a: Option<Ipv4Addr>) -> String {
    a.map_or("the interface's address (MASQUERADE)".into(), |a| {
        a.to_string()
    })
}

/// Merges Docker's one-rule-per-port expansion of a published range back
/// into ranges: same protocol, host address and container address, host
/// and container ports both consecutive.
fn merge_ranges(mut entries: Vec<PublishEntry>) -> Vec<PublishEntry> {
    entries.sort_by_key(|e| (e.proto.number(), e.address, e.port.start));
    let mut out: Vec<PublishEntry> = Vec::new();
    for e in entries {
        if let Some(p) = out.last_mut()
            && p.proto == e.proto
            && p.address == e.address
            && p.to_addr == e.to_addr
            && u32::from(p.port.end) + 1 == u32::from(e.port.start)
            && u32::from(p.to_port) + p.port.len() == u32::from(e.to_port)
        {
            p.port.end = e.port.end;
            p.origin.extend(e.origin);
            continue;
        }
        out.push(e);
    }
    out
}

/// Finds the uplink: the option, else the one interface positive `-o`
/// matches of source NAT name, else that of `-i` on DNAT.
fn find_uplink(chains: &[(String, Chain)], opt: Option<&str>) -> Result<String, ImportError> {
    if let Some(u) = opt {
        return Ok(u.to_owned());
    }
    let mut found: BTreeSet<String> = BTreeSet::new();
    for pass in ["out", "in"] {
        for (_, chain) in chains {
            for r in chain.rules.iter().flatten() {
                let names = match (&r.target, pass) {
                    (Target::Masquerade { .. } | Target::Snat { .. }, "out") => &r.matches.oif,
                    (Target::Dnat { .. }, "in") => &r.matches.iif,
                    _ => continue,
                };
                for n in names.iter().filter(|n| !n.neg && !n.v.ends_with('+')) {
                    found.insert(n.v.clone());
                }
            }
        }
        if !found.is_empty() {
            break;
        }
    }
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap_or_default()),
        0 => Err(ImportError::Dump(
            "the rules do not name the uplink interface (Docker's `! -o docker0` does not): \
             pass --uplink IFACE"
                .into(),
        )),
        _ => Err(ImportError::Dump(format!(
            "the rules name several outside interfaces ({}); netbpf has one uplink: pass \
             --uplink IFACE",
            found.into_iter().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Imports the `*nat` table of an `iptables-save` dump.
pub fn import_iptables_save(text: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let mut notes = Vec::new();
    let mut dropped = Vec::new();
    let chains = parse_nat(text, &mut notes, &mut dropped)?;
    for (name, chain) in &chains {
        if let Some(p) = &chain.policy
            && p != "ACCEPT"
        {
            return Err(ImportError::Dump(format!(
                "line {}: chain {name} has policy {p}; netbpf expects ACCEPT",
                chain.declared_line
            )));
        }
    }
    let uplink = find_uplink(&chains, opts.uplink.as_deref())?;
    let mut w = Walker {
        chains: &chains,
        uplink: uplink.clone(),
        skip: opts.skip_unsupported,
        skipped: Vec::new(),
        notes,
        masq: Vec::new(),
        publish: Vec::new(),
        reached: BTreeSet::new(),
        hairpin_lines: Vec::new(),
    };
    for (chain, hook) in [
        ("PREROUTING", Hook::Prerouting),
        ("OUTPUT", Hook::Output),
        ("POSTROUTING", Hook::Postrouting),
    ] {
        if chains.iter().any(|(n, _)| n == chain) {
            w.walk(chain, &Matches::default(), hook, &mut Vec::new())?;
        }
    }
    // nat INPUT (source NAT of packets delivered to the host) has no
    // netbpf counterpart.
    if let Some((_, input)) = chains.iter().find(|(n, _)| n == "INPUT") {
        for r in &input.rules {
            let (line, text) = match r {
                Ok(r) => (r.line, r.text.clone()),
                Err((l, t, _)) => (*l, t.clone()),
            };
            w.unsupported_raw(line, &text, "a rule in the nat INPUT chain".into())?;
        }
    }
    for (name, chain) in &chains {
        if !BUILTIN.contains(&name.as_str()) && !w.reached.contains(name) && !chain.rules.is_empty()
        {
            w.notes.push(format!(
                "chain {name} (line {}) is not reached from a built-in chain: ignored",
                chain.declared_line
            ));
        }
    }
    if !w.hairpin_lines.is_empty() {
        let lines: Vec<String> = w.hairpin_lines.iter().map(usize::to_string).collect();
        w.notes.push(format!(
            "line(s) {}: containers reach these ports through the host's address too (netbpf \
             hairpins; with these rules only docker-proxy does that)",
            lines.join(", ")
        ));
    }
    // A DNAT reached only from OUTPUT is for the host's own connections;
    // netbpf's published ports answer the uplink too, unless the rule is
    // for a loopback address.
    let mut publish = Vec::new();
    for (e, hooks) in std::mem::take(&mut w.publish) {
        let only_output = !hooks.contains(&Hook::Prerouting);
        let loopback = e.address.is_some_and(|a| a.is_loopback());
        if only_output && !loopback {
            let (line, text) = e.origin.first().cloned().unwrap_or_default();
            w.unsupported_raw(
                line,
                &text,
                "DNAT for the host's own connections only (OUTPUT): netbpf's published ports \
                 answer the uplink too"
                    .into(),
            )?;
            continue;
        }
        publish.push(e);
    }
    let publish = merge_ranges(publish);
    let toml = render(&uplink, &w.masq, &publish, opts.timeouts, &w.notes);
    let config = Config::from_toml(&toml)?;
    Ok(Imported {
        toml,
        config,
        skipped: w.skipped,
        dropped,
        notes: w.notes,
        masquerade_origin: w.masq.iter().map(|m| (m.line, m.text.clone())).collect(),
        publish_origin: publish.iter().map(|p| p.origin.clone()).collect(),
    })
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render(
    uplink: &str,
    masq: &[MasqEntry],
    publish: &[PublishEntry],
    timeouts: Option<SysctlTimeouts>,
    notes: &[String],
) -> String {
    let mut s = String::new();
    s.push_str(
        "# netbpf config imported from an iptables-save dump (`netbpf import iptables-save`).\n",
    );
    for n in notes {
        let _ = writeln!(s, "# note: {n}");
    }
    s.push_str("\n[uplink]\n");
    let _ = writeln!(s, "interface = {}", quote(uplink));
    match masq.iter().find_map(|m| m.address) {
        Some(a) => {
            let _ = writeln!(s, "address = \"{a}\"  # SNAT --to-source");
        }
        None => s.push_str("# address: the interface's first IPv4 address, as MASQUERADE uses\n"),
    }
    for m in masq {
        let _ = writeln!(s, "\n# line {}: {}", m.line, m.text);
        s.push_str("[[masquerade]]\n");
        let _ = writeln!(s, "source = \"{}\"", m.source);
        if let Some(p) = m.ports {
            let _ = writeln!(s, "ports = \"{p}\"");
        }
    }
    for p in publish {
        s.push('\n');
        for (line, text) in &p.origin {
            let _ = writeln!(s, "# line {line}: {text}");
        }
        s.push_str("[[publish]]\n");
        let _ = writeln!(s, "proto = \"{}\"", p.proto);
        if p.port.start == p.port.end {
            let _ = writeln!(s, "port = {}", p.port.start);
        } else {
            let _ = writeln!(s, "port = \"{}\"", p.port);
        }
        let _ = writeln!(s, "to = \"{}:{}\"", p.to_addr, p.to_port);
        if let Some(a) = p.address {
            let _ = writeln!(s, "address = \"{a}\"");
        }
    }
    s.push('\n');
    match timeouts {
        None => s.push_str(
            "# conntrack timeouts: netbpf's RFC defaults (UDP 5m, TCP established 2h4m, TCP \
             transitory 4m, ICMP 60s);\n# --adopt-sysctl-timeouts takes the kernel's \
             nf_conntrack_*_timeout sysctls instead.\n",
        ),
        Some(t) => {
            s.push_str(
                "# conntrack timeouts: adopted from the kernel's nf_conntrack_*_timeout sysctls \
                 (--adopt-sysctl-timeouts)\n[conntrack]\n",
            );
            let _ = writeln!(
                s,
                "udp_timeout = {}  # nf_conntrack_udp_timeout_stream",
                t.udp.as_secs()
            );
            let _ = writeln!(
                s,
                "tcp_established_timeout = {}  # nf_conntrack_tcp_timeout_established",
                t.tcp_established.as_secs()
            );
            let _ = writeln!(
                s,
                "tcp_transitory_timeout = {}  # the longest of nf_conntrack_tcp_timeout_{{syn_sent,syn_recv,fin_wait,close_wait,last_ack,time_wait}}",
                t.tcp_transitory.as_secs()
            );
            let _ = writeln!(
                s,
                "icmp_timeout = {}  # nf_conntrack_icmp_timeout",
                t.icmp.as_secs()
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(uplink: Option<&str>) -> ImportOptions {
        ImportOptions {
            uplink: uplink.map(str::to_owned),
            ..ImportOptions::default()
        }
    }

    fn import(dump: &str, uplink: Option<&str>) -> Imported {
        let imported = import_iptables_save(dump, &opts(uplink))
            .unwrap_or_else(|e| panic!("import failed: {e}\n{dump}"));
        // The TOML is what the user gets: it must parse to the same config.
        assert_eq!(Config::from_toml(&imported.toml).unwrap(), imported.config);
        imported
    }

    fn unsupported(dump: &str, uplink: Option<&str>) -> (usize, String, String) {
        match import_iptables_save(dump, &opts(uplink)) {
            Err(ImportError::Unsupported { line, rule, reason }) => (line, rule, reason),
            other => panic!("expected an unsupported rule, got {other:?}"),
        }
    }

    fn nat(rules: &str) -> String {
        format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n{rules}COMMIT\n"
        )
    }

    fn publish(
        proto: Proto,
        port: &str,
        to: &str,
        address: Option<&str>,
    ) -> crate::config::Publish {
        let (a, p) = to.split_once(':').unwrap();
        crate::config::Publish {
            proto,
            port: port.parse().unwrap(),
            to_addr: a.parse().unwrap(),
            to_port: p.parse().unwrap(),
            address: address.map(|a| a.parse().unwrap()),
        }
    }

    /// moby's TestIptabler golden file
    /// `hairpin=false,internal=false,icc=true,masq=true,snat=false,gwm=nat,bindlh=false__iptables.golden`
    /// (Docker 28: userland proxy on, one published port).
    const MOBY_PROXY: &str = "*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -d 192.168.0.0/24 -i lo -j ACCEPT
-A PREROUTING -d 192.168.0.0/24 ! -i br-dummy -j DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-BRIDGE - [0:0]
:DOCKER-CT - [0:0]
:DOCKER-FORWARD - [0:0]
:DOCKER-INTERNAL - [0:0]
-A FORWARD -j DOCKER-FORWARD
-A DOCKER -d 192.168.0.2/32 ! -i br-dummy -o br-dummy -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER ! -i br-dummy -o br-dummy -j DROP
-A DOCKER-BRIDGE -o br-dummy -j DOCKER
-A DOCKER-CT -o br-dummy -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-INTERNAL
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i br-dummy -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 192.168.0.0/24 ! -o br-dummy -j MASQUERADE
-A DOCKER ! -i br-dummy -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.168.0.2:80
COMMIT
";

    /// moby's golden file
    /// `hairpin=true,internal=false,icc=true,masq=true,snat=true,gwm=nat,bindlh=true__iptables.golden`
    /// (userland proxy off, host_ipv4 SNAT address, port bound to 127.0.0.1).
    const MOBY_HAIRPIN_SNAT_LOCALHOST: &str = "*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -d 192.168.0.0/24 -i lo -j ACCEPT
-A PREROUTING -d 192.168.0.0/24 ! -i br-dummy -j DROP
-A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -o br-dummy -m addrtype --src-type LOCAL -j SNAT --to-source 192.168.123.0
-A POSTROUTING -s 192.168.0.0/24 ! -o br-dummy -j SNAT --to-source 192.168.123.0
-A POSTROUTING -s 192.168.0.2/32 -d 192.168.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A DOCKER -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.168.0.2:80
COMMIT
";

    /// The shape of Docker before 28 (`iptables-save` of a host with
    /// `docker run -p 8080:80 -p 9000-9002:5000-5002/udp`): RETURN for the
    /// bridge, hairpin MASQUERADE per port, one DNAT rule per port of a
    /// range, a header, counters.
    const DOCKER_LEGACY: &str =
        "# Generated by iptables-save v1.8.9 (nf_tables) on Mon Aug  3 10:00:00 2026
*nat
:PREROUTING ACCEPT [12:720]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [3:180]
:POSTROUTING ACCEPT [3:180]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A POSTROUTING -s 172.17.0.3/32 -d 172.17.0.3/32 -p udp -m udp --dport 5000 -j MASQUERADE
-A POSTROUTING -s 172.17.0.3/32 -d 172.17.0.3/32 -p udp -m udp --dport 5001 -j MASQUERADE
-A POSTROUTING -s 172.17.0.3/32 -d 172.17.0.3/32 -p udp -m udp --dport 5002 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A DOCKER ! -i docker0 -p udp -m udp --dport 9000 -j DNAT --to-destination 172.17.0.3:5000
-A DOCKER ! -i docker0 -p udp -m udp --dport 9001 -j DNAT --to-destination 172.17.0.3:5001
-A DOCKER ! -i docker0 -p udp -m udp --dport 9002 -j DNAT --to-destination 172.17.0.3:5002
COMMIT
# Completed on Mon Aug  3 10:00:00 2026
";

    #[test]
    fn rules_of_other_tables_are_each_reported() {
        let i = import(MOBY_PROXY, Some("eth0"));
        // raw: 2 rules, filter: 9 rules, every one named with its line.
        assert_eq!(i.dropped.len(), 11, "{:#?}", i.dropped);
        assert!(
            i.dropped[0]
                .starts_with("line 4: *raw rule not imported (netbpf has no packet filter): -A PREROUTING -d 192.168.0.0/24 -i lo -j ACCEPT"),
            "{}",
            i.dropped[0]
        );
        assert!(
            i.dropped
                .iter()
                .any(|d| d.ends_with("-A DOCKER ! -i br-dummy -o br-dummy -j DROP")),
            "{:#?}",
            i.dropped
        );
        let user = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n\
                    [3:180] -A DOCKER-USER -s 198.51.100.0/24 -j DROP\n-A FORWARD -j DOCKER-USER\nCOMMIT\n\
                    *nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\nCOMMIT\n";
        let i = import(user, None);
        assert_eq!(
            i.dropped,
            [
                "line 3: *filter chain FORWARD has policy DROP: not imported (netbpf has no packet filter)",
                "line 5: *filter rule not imported (netbpf has no packet filter): -A DOCKER-USER -s 198.51.100.0/24 -j DROP",
                "line 6: *filter rule not imported (netbpf has no packet filter): -A FORWARD -j DOCKER-USER",
            ]
        );
        // Only nat: nothing dropped.
        let i = import(
            "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\nCOMMIT\n",
            None,
        );
        assert!(i.dropped.is_empty());
    }

    #[test]
    fn moby_userland_proxy_golden() {
        let i = import(MOBY_PROXY, Some("eth0"));
        let c = &i.config;
        assert_eq!(c.uplink.interface, "eth0");
        assert_eq!(c.uplink.address, None);
        assert_eq!(c.masquerade.len(), 1);
        assert_eq!(c.masquerade[0].source.to_string(), "192.168.0.0/24");
        assert_eq!(c.masquerade[0].ports, None);
        assert_eq!(
            c.publish,
            vec![publish(Proto::Tcp, "8080", "192.168.0.2:80", None)]
        );
        assert!(i.skipped.is_empty());
        // The exact text, comments included.
        let expected = "\
# netbpf config imported from an iptables-save dump (`netbpf import iptables-save`).
# note: only the nat table was read; ignored: filter, raw (netbpf has no packet filter: Docker's isolation rules in filter are not imported)
# note: line 34: netbpf masquerades only what leaves through the uplink eth0
# note: line(s) 35: containers reach these ports through the host's address too (netbpf hairpins; with these rules only docker-proxy does that)

[uplink]
interface = \"eth0\"
# address: the interface's first IPv4 address, as MASQUERADE uses

# line 34: -A POSTROUTING -s 192.168.0.0/24 ! -o br-dummy -j MASQUERADE
[[masquerade]]
source = \"192.168.0.0/24\"

# line 35: -A DOCKER ! -i br-dummy -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.168.0.2:80
[[publish]]
proto = \"tcp\"
port = 8080
to = \"192.168.0.2:80\"

# conntrack timeouts: netbpf's RFC defaults (UDP 5m, TCP established 2h4m, TCP transitory 4m, ICMP 60s);
# --adopt-sysctl-timeouts takes the kernel's nf_conntrack_*_timeout sysctls instead.
";
        assert_eq!(i.toml, expected);
    }

    #[test]
    fn docker_needs_the_uplink_named() {
        let e = import_iptables_save(MOBY_PROXY, &opts(None)).unwrap_err();
        assert!(e.to_string().contains("--uplink"), "{e}");
    }

    #[test]
    fn moby_hairpin_snat_localhost_golden() {
        let i = import(MOBY_HAIRPIN_SNAT_LOCALHOST, Some("eth0"));
        let c = &i.config;
        assert_eq!(c.uplink.address, Some(Ipv4Addr::new(192, 168, 123, 0)));
        assert_eq!(c.masquerade.len(), 1);
        assert_eq!(c.masquerade[0].source.to_string(), "192.168.0.0/24");
        assert_eq!(
            c.publish,
            vec![publish(
                Proto::Tcp,
                "8080",
                "192.168.0.2:80",
                Some("127.0.0.1")
            )]
        );
        let notes = i.notes.join("\n");
        assert!(
            notes.contains("line 18: Docker's hairpin MASQUERADE"),
            "{notes}"
        );
        assert!(
            notes.contains("line 16: source NAT of the host's own"),
            "{notes}"
        );
        assert!(
            i.toml
                .contains("address = \"192.168.123.0\"  # SNAT --to-source")
        );
    }

    #[test]
    fn docker_legacy_merges_port_ranges() {
        let i = import(DOCKER_LEGACY, Some("eth0"));
        let c = &i.config;
        assert_eq!(c.masquerade[0].source.to_string(), "172.17.0.0/16");
        assert_eq!(
            c.publish,
            vec![
                publish(Proto::Tcp, "8080", "172.17.0.2:80", None),
                publish(Proto::Udp, "9000-9002", "172.17.0.3:5000", None),
            ]
        );
        // Every rule a merged range came from is quoted above it.
        for line in 17..=19 {
            assert!(
                i.toml.contains(&format!("# line {line}: -A DOCKER")),
                "{}",
                i.toml
            );
        }
        let notes = i.notes.join("\n");
        assert!(notes.contains("line 15: only concerns traffic"), "{notes}");
        for line in 11..=14 {
            assert!(
                notes.contains(&format!("line {line}: Docker's hairpin")),
                "{notes}"
            );
        }
        assert!(!notes.contains("ignored: filter"), "only nat in the dump");
    }

    #[test]
    fn hand_written_setup() {
        let dump = nat(
            "-A PREROUTING -i eth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2\n\
             -A PREROUTING -d 203.0.113.1/32 -i eth0 -p udp -m udp --dport 5000:5009 -j DNAT --to-destination 10.0.0.3\n\
             -A PREROUTING -i eth0 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.0.0.4:22\n\
             -A PREROUTING -i eth0 -p tcp -m tcp --dport 7000:7004 -j DNAT --to-destination 10.0.0.5:7000-7010\n\
             -A POSTROUTING -s 10.0.0.0/24 -o eth0 -j SNAT --to-source 203.0.113.1:20000-29999 --random-fully\n\
             -A POSTROUTING -s 10.1.0.0/16 ! -d 10.1.0.0/16 -o eth0 -j SNAT --to-source 203.0.113.1\n",
        );
        let i = import(&dump, None);
        let c = &i.config;
        assert_eq!(c.uplink.interface, "eth0", "found from -o eth0");
        assert_eq!(c.uplink.address, Some(Ipv4Addr::new(203, 0, 113, 1)));
        assert_eq!(c.masquerade.len(), 2);
        assert_eq!(c.masquerade[0].ports, Some("20000-29999".parse().unwrap()));
        assert_eq!(c.masquerade[1].source.to_string(), "10.1.0.0/16");
        assert_eq!(
            c.publish,
            vec![
                publish(Proto::Tcp, "80", "10.0.0.2:80", None),
                publish(Proto::Tcp, "2222", "10.0.0.4:22", None),
                publish(Proto::Tcp, "7000-7004", "10.0.0.5:7000", None),
                publish(
                    Proto::Udp,
                    "5000-5009",
                    "10.0.0.3:5000",
                    Some("203.0.113.1")
                ),
            ]
        );
        let notes = i.notes.join("\n");
        assert!(notes.contains("--random"), "{notes}");
        assert!(
            notes.contains("also catches traffic routed through"),
            "{notes}"
        );
    }

    #[test]
    fn masquerade_with_to_ports_and_comment() {
        let dump = nat(
            "-A POSTROUTING -s 10.0.0.0/24 -o wan0 -m comment --comment \"lan \\\"out\\\"\" -j MASQUERADE --to-ports 1024-65535 --random\n",
        );
        let c = import(&dump, None).config;
        assert_eq!(c.uplink.interface, "wan0");
        assert_eq!(c.masquerade[0].ports, Some("1024-65535".parse().unwrap()));
    }

    #[test]
    fn counters_from_save_dash_c() {
        let dump = nat("[5:300] -A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\n");
        assert_eq!(import(&dump, None).config.masquerade.len(), 1);
    }

    #[test]
    fn unsupported_rules_quote_rule_and_line() {
        let cases = [
            (
                "-A PREROUTING -i eth0 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 8080\n",
                "REDIRECT",
            ),
            (
                "-A PREROUTING -i eth0 -p sctp --dport 80 -j DNAT --to-destination 10.0.0.2\n",
                "sctp",
            ),
            (
                "-A PREROUTING -i eth0 -j DNAT --to-destination 10.0.0.2\n",
                "exactly one -p",
            ),
            (
                "-A PREROUTING -i eth0 -p tcp -j DNAT --to-destination 10.0.0.2\n",
                "without --dport",
            ),
            (
                "-A PREROUTING -s 198.51.100.0/24 -i eth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2\n",
                "source match",
            ),
            (
                "-A PREROUTING -i eth0 -p tcp -m tcp --dport 80:81 -j DNAT --to-destination 10.0.0.2:80\n",
                "all to port 80",
            ),
            (
                "-A PREROUTING -i eth0 -p tcp -m tcp --dport 80:81 -j DNAT --to-destination 10.0.0.2:90-91\n",
                "picks a port",
            ),
            (
                "-A PREROUTING -i eth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2-10.0.0.3\n",
                "address range",
            ),
            (
                "-A PREROUTING -i eth0 -p tcp -m tcp ! --dport 80 -j DNAT --to-destination 10.0.0.2\n",
                "negated",
            ),
            (
                "-A PREROUTING -i eth0 -p tcp -m multiport --dports 80,443 -j DNAT --to-destination 10.0.0.2\n",
                "multiport",
            ),
            (
                "-A PREROUTING -i eth1 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2\n",
                "arriving on other interfaces",
            ),
            ("-A POSTROUTING -o eth0 -j MASQUERADE\n", "no source"),
            (
                "-A POSTROUTING -s 10.0.0.0/24 -d 8.8.8.8/32 -o eth0 -j MASQUERADE\n",
                "destination match",
            ),
            (
                "-A POSTROUTING -s 10.0.0.0/24 -o eth0 -p udp -j MASQUERADE\n",
                "one protocol",
            ),
            (
                "-A POSTROUTING -s 10.0.0.0/24 -o eth0 -j SNAT --to-source 1.2.3.4-1.2.3.9\n",
                "address range",
            ),
            (
                "-A POSTROUTING -s 10.0.0.0/24 -o eth1 -j MASQUERADE\n",
                "another interface",
            ),
            (
                "-A POSTROUTING -o eth0 -j RETURN\n-A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\n",
                "exception",
            ),
            (
                "-A INPUT -s 10.0.0.0/24 -j SNAT --to-source 10.0.0.1\n",
                "INPUT",
            ),
        ];
        for (rules, why) in cases {
            let dump = format!(
                "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 192.168.9.0/24 -o eth0 -j MASQUERADE\n{rules}COMMIT\n"
            );
            let (line, rule, reason) = unsupported(&dump, Some("eth0"));
            let bad_line = dump.lines().nth(line - 1).unwrap();
            assert_eq!(rule, bad_line, "{rules}");
            assert!(line >= 7, "{rules}: line {line}");
            assert!(reason.contains(why), "{rules}: {reason:?} lacks {why:?}");
            let msg = import_iptables_save(&dump, &opts(Some("eth0")))
                .unwrap_err()
                .to_string();
            assert!(msg.starts_with(&format!("line {line}: ")), "{msg}");
            assert!(
                msg.contains(&rule) && msg.contains("--skip-unsupported"),
                "{msg}"
            );
        }
    }

    #[test]
    fn overlapping_rules_are_refused() {
        let dump = nat(
            "-A PREROUTING -i eth0 -p tcp -m tcp --dport 8000:8010 -j DNAT --to-destination 10.0.0.2\n\
             -A PREROUTING -i eth0 -p tcp -m tcp --dport 8005 -j DNAT --to-destination 10.0.0.3\n",
        );
        let (line, _, reason) = unsupported(&dump, None);
        assert_eq!(line, 8);
        assert!(reason.contains("overlaps line 7"), "{reason}");
        let dump = nat("-A POSTROUTING -s 10.0.0.0/16 -o eth0 -j MASQUERADE\n\
             -A POSTROUTING -s 10.0.1.0/24 -o eth0 -j MASQUERADE\n");
        assert!(unsupported(&dump, None).2.contains("overlaps line 7"));
        let dump = nat("-A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\n\
             -A POSTROUTING -s 10.0.1.0/24 -o eth0 -j SNAT --to-source 192.0.2.1\n");
        assert!(unsupported(&dump, None).2.contains("one outside address"));
    }

    #[test]
    fn skip_unsupported_warns_per_rule() {
        let dump = nat(
            "-A PREROUTING -i eth0 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 8080\n\
             -A PREROUTING -i eth0 -p tcp -m tcp --dport 81 -j DNAT --to-destination 10.0.0.2\n\
             -A POSTROUTING -o eth0 -j MASQUERADE\n\
             -A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\n",
        );
        let i = import_iptables_save(
            &dump,
            &ImportOptions {
                skip_unsupported: true,
                ..opts(None)
            },
        )
        .unwrap();
        assert_eq!(i.skipped.len(), 2, "{:?}", i.skipped);
        assert!(i.skipped[0].starts_with("line 7: skipped: target -j REDIRECT"));
        assert!(i.skipped[0].ends_with("-j REDIRECT --to-ports 8080"));
        assert!(i.skipped[1].starts_with("line 9: skipped: no source"));
        assert_eq!(i.config.publish.len(), 1);
        assert_eq!(i.config.masquerade.len(), 1);
    }

    #[test]
    fn output_only_dnat() {
        // Only for the host's own connections: netbpf would publish it to
        // the uplink as well.
        let dump = nat(
            "-A OUTPUT -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2\n\
             -A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\n",
        );
        assert!(unsupported(&dump, None).2.contains("OUTPUT"));
        // To 127.0.0.1 it is a host-only published port.
        let dump = nat(
            "-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2\n\
             -A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\n",
        );
        let c = import(&dump, None).config;
        assert_eq!(c.publish[0].address, Some(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn dump_errors() {
        let e = import_iptables_save("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", &opts(None))
            .unwrap_err();
        assert!(e.to_string().contains("no *nat table"), "{e}");
        let e = import_iptables_save("-A POSTROUTING -j MASQUERADE\n", &opts(None)).unwrap_err();
        assert!(e.to_string().contains("outside a table"), "{e}");
        let e = import_iptables_save(&nat("-A NOPE -j RETURN\n"), &opts(None)).unwrap_err();
        assert!(e.to_string().contains("chain NOPE is not declared"), "{e}");
        let e = import_iptables_save(
            &nat("-A PREROUTING -j DOCKER\n-A DOCKER -j DOCKER\n"),
            &opts(Some("eth0")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("jumps back into itself"), "{e}");
        let e = import_iptables_save(&nat("-A PREROUTING -j LATER\n"), &opts(Some("eth0")))
            .unwrap_err();
        assert!(e.to_string().contains("LATER is not declared"), "{e}");
    }

    #[test]
    fn unreached_chains_are_noted() {
        let dump = nat(
            "-A DOCKER -i eth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2\n\
             -A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\n",
        );
        let i = import(&dump, None);
        assert!(i.config.publish.is_empty());
        assert!(
            i.notes
                .iter()
                .any(|n| n.contains("DOCKER") && n.contains("not reached"))
        );
    }

    #[test]
    fn words_honour_quotes() {
        assert_eq!(
            words(r#"-A X -m comment --comment "a \"b\" c" -j Y"#).unwrap(),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "Y"
            ]
        );
        assert!(words("\"open").is_err());
    }

    #[test]
    fn sysctl_timeouts_are_adopted() {
        let dir = std::env::temp_dir().join(format!("netbpf-import-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let values = [
            ("nf_conntrack_udp_timeout_stream", "180"),
            ("nf_conntrack_tcp_timeout_established", "432000"),
            ("nf_conntrack_tcp_timeout_syn_sent", "120"),
            ("nf_conntrack_tcp_timeout_syn_recv", "60"),
            ("nf_conntrack_tcp_timeout_fin_wait", "120"),
            ("nf_conntrack_tcp_timeout_close_wait", "60"),
            ("nf_conntrack_tcp_timeout_last_ack", "30"),
            ("nf_conntrack_tcp_timeout_time_wait", "121"),
            ("nf_conntrack_icmp_timeout", "30\n"),
        ];
        for (name, v) in values {
            std::fs::write(dir.join(name), v).unwrap();
        }
        let t = read_sysctl_timeouts(&dir);
        let missing = {
            std::fs::remove_file(dir.join("nf_conntrack_icmp_timeout")).unwrap();
            read_sysctl_timeouts(&dir)
        };
        let _ = std::fs::remove_dir_all(&dir);
        let t = t.unwrap();
        assert_eq!(t.udp, Duration::from_secs(180));
        assert_eq!(t.tcp_established, Duration::from_secs(432000));
        assert_eq!(t.tcp_transitory, Duration::from_secs(121));
        assert_eq!(t.icmp, Duration::from_secs(30));
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("nf_conntrack_icmp_timeout")
        );

        let i = import_iptables_save(
            &nat("-A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\n"),
            &ImportOptions {
                timeouts: Some(t),
                ..opts(None)
            },
        )
        .unwrap();
        assert_eq!(i.config.conntrack.timeouts.udp, t.udp);
        assert_eq!(
            i.config.conntrack.timeouts.tcp_established,
            t.tcp_established
        );
        assert_eq!(i.config.conntrack.timeouts.tcp_transitory, t.tcp_transitory);
        assert_eq!(i.config.conntrack.timeouts.icmp, t.icmp);
        assert!(i.toml.contains("adopted from the kernel's"));
        // Below the RFC minimums: the config says so.
        assert!(i.config.warnings.iter().any(|w| w.contains("icmp_timeout")));
        // Default: the RFC timeouts, and the TOML says which.
        let i = import(
            &nat("-A POSTROUTING -s 10.0.0.0/24 -o eth0 -j MASQUERADE\n"),
            None,
        );
        assert_eq!(
            i.config.conntrack.timeouts,
            crate::config::Timeouts::default()
        );
        assert!(i.toml.contains("netbpf's RFC defaults"));
    }
}
