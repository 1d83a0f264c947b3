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

mod error;
mod parse;
mod render;
mod sysctl;
#[cfg(test)]
mod tests;
mod walk;

use std::collections::BTreeSet;

use crate::config::Config;
pub use error::ImportError;
use parse::*;
use render::*;
pub use sysctl::{SysctlTimeouts, read_sysctl_timeouts};
use walk::*;

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
