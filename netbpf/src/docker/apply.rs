//! Putting a full read of Docker's state into the running datapath as a
//! difference: rules Docker no longer asks for are removed, new ones added,
//! everything else (the config's rules, live changes, every flow) left
//! alone. The rules go through [`crate::control`], the same checked path
//! as `netbpf publish add`; what Docker holds is recorded under owner
//! `docker` ([`crate::owners`]), which is how the next pass, a restart and
//! `netbpf nat list` know it.

use log::{info, warn};

use crate::{
    config::publish_key,
    control::{self, ControlError},
    datapath::{Datapath, IccChange},
    origins,
    owners::{self, OwnedEntry, OwnedRule},
    rows::port_span,
};

use super::{
    model::DockerState,
    translate::{DOCKER_OWNER, Others, translate},
};

/// How long a pass waits for a CNI plugin to release the rules lock.
const RULES_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// What one pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rules (and bridges) added.
    pub added: usize,
    /// Rules (and bridges) removed.
    pub removed: usize,
    /// Rules newly refused (conflicts, invalid); each was logged.
    pub refused: usize,
}

/// Applies `state` to `datapath`; failures of single rules are logged and
/// counted, not returned (the rest is still applied). A refusal already
/// in `told` (the previous pass's) is not logged again; `told` becomes
/// this pass's.
pub fn apply(datapath: &mut Datapath, state: &DockerState, told: &mut Vec<String>) -> Applied {
    let pin_dir = datapath.pin_dir().to_owned();
    // Not interleaved with a CNI plugin's read-check-write of the rules.
    let _rules = crate::ruleslock::RulesLock::for_daemon(&pin_dir, RULES_LOCK_WAIT);
    let mut report = Applied::default();
    let previous = match owners::read(&pin_dir, DOCKER_OWNER) {
        Ok(p) => p,
        Err(e) => {
            warn!("docker: what it held is unknown ({e}); treating it as nothing");
            Vec::new()
        }
    };
    let rules = match origins::nat_rules(&pin_dir) {
        Ok(r) => r,
        Err(e) => {
            warn!(
                "docker: not applied, the datapath's rules are unreadable: {:#}",
                anyhow::Error::from(e)
            );
            return report;
        }
    };
    let ours = |rule: &OwnedRule| previous.iter().any(|p| &p.rule == rule);
    let mut others = Others::default();
    for m in &rules.masquerade {
        if let Ok(entry) = crate::config::masquerade_entry(&m.source, None)
            && !ours(&OwnedRule::masquerade(&entry))
        {
            others.masquerade.push((m.origin.clone(), entry.source));
        }
    }
    for p in &rules.publish {
        let to = format!("{}:{}", p.to_addr, p.to_port_min);
        let port = port_span(p.host_port_min, p.host_port_max);
        let address = (!p.any_host_addr).then_some(p.host_addr);
        if let Ok(entry) = crate::config::publish_entry(&p.proto, &port, &to, address)
            && !ours(&OwnedRule::publish(&entry))
        {
            others.publish.push((p.origin.clone(), entry));
        }
    }
    let desired = translate(state, &others);
    for line in desired.refused.iter().filter(|l| !told.contains(l)) {
        warn!("{line}");
        report.refused += 1;
    }
    told.clone_from(&desired.refused);
    match control::isolation_set(&pin_dir, &desired.isolation) {
        Ok(0) => {}
        Ok(n) => info!("docker: isolation between bridge networks: {n} map entry change(s)"),
        Err(e) => warn!("docker: isolating networks: {:#}", anyhow::Error::from(e)),
    }
    // After every read: a container that started has a new bridge port.
    match datapath.sync_icc(&desired.icc_off) {
        Ok(c) if c == IccChange::default() => {}
        Ok(c) => info!(
            "docker: enable_icc=false: {} bridge port(s) guarded, {} gone",
            c.attached, c.detached
        ),
        Err(e) => warn!("docker: enable_icc=false: {:#}", anyhow::Error::from(e)),
    }
    // Whether a rule is in the datapath now (a rule Docker held may have
    // been removed by hand, or by `netbpf down`).
    let present = |rule: &OwnedRule, datapath: &Datapath| match rule {
        OwnedRule::Interface { name } => datapath.has_inside(name),
        OwnedRule::Masquerade { source } => rules.masquerade.iter().any(|m| &m.source == source),
        OwnedRule::Publish { .. } => publish_present(rule, &rules),
        // Docker never holds routed containers (CNI's routed mode does).
        OwnedRule::Container { .. } => true,
    };
    // Removals first: a port that moved from one container to another is
    // free again before it is added.
    for old in &previous {
        if desired.entries.iter().any(|d| d.rule == old.rule) {
            continue;
        }
        match remove(datapath, &old.rule) {
            Ok(()) => {
                info!("{}: removed {}", old.origin, old.rule.describe());
                report.removed += 1;
            }
            Err(e) => warn!("{}: removing {}: {e:#}", old.origin, old.rule.describe()),
        }
    }
    // Recorded before the maps change, so that a crash in between leaves
    // no rule without an owner.
    let mut pending: Vec<OwnedEntry> = desired.entries.clone();
    for p in &previous {
        if !pending.iter().any(|d| d.rule == p.rule) {
            pending.push(p.clone());
        }
    }
    if let Err(e) = owners::write(&pin_dir, DOCKER_OWNER, &pending) {
        warn!("docker: recording its rules: {e}");
    }
    let mut held = Vec::new();
    for entry in desired.entries {
        if present(&entry.rule, datapath) {
            held.push(entry);
            continue;
        }
        match add(datapath, &entry.rule) {
            Ok(()) => {
                info!("{}: added {}", entry.origin, entry.rule.describe());
                report.added += 1;
                held.push(entry);
            }
            Err(e) => {
                warn!("{}: {} refused: {e:#}", entry.origin, entry.rule.describe());
                report.refused += 1;
            }
        }
    }
    if let Err(e) = owners::write(&pin_dir, DOCKER_OWNER, &held) {
        warn!("docker: recording its rules: {e}");
    }
    report
}

/// Whether a publish rule is already in the datapath, exactly.
fn publish_present(rule: &OwnedRule, rules: &crate::rows::NatRules) -> bool {
    let Some(Ok(p)) = rule.as_publish() else {
        return false;
    };
    rules.publish.iter().any(|r| {
        r.proto == p.proto.to_string()
            && r.host_addr == p.address.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)
            && r.host_port_min == p.port.start
            && r.host_port_max == p.port.end
            && r.to_addr == p.to_addr
            && r.to_port_min == p.to_port
    })
}

fn add(datapath: &mut Datapath, rule: &OwnedRule) -> anyhow::Result<()> {
    let pin_dir = datapath.pin_dir().to_owned();
    match rule {
        OwnedRule::Interface { name } => {
            datapath.attach_inside(name)?;
        }
        OwnedRule::Masquerade { .. } => {
            if let Some(m) = rule.as_masquerade() {
                control::masquerade_add(&pin_dir, &m?, Some(datapath.resolved.uplink_addr))?;
            }
        }
        OwnedRule::Publish { .. } => {
            if let Some(p) = rule.as_publish() {
                control::publish_add(&pin_dir, &p?)?;
            }
        }
        OwnedRule::Container { .. } => {}
    }
    Ok(())
}

/// Removes a rule; one already gone is not an error.
fn remove(datapath: &mut Datapath, rule: &OwnedRule) -> anyhow::Result<()> {
    match remove_held(datapath, rule) {
        Err(e)
            if matches!(
                e.downcast_ref::<ControlError>(),
                Some(ControlError::NotFound(_))
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn remove_held(datapath: &mut Datapath, rule: &OwnedRule) -> anyhow::Result<()> {
    let pin_dir = datapath.pin_dir().to_owned();
    match rule {
        OwnedRule::Interface { name } => {
            datapath.detach_inside(name)?;
        }
        OwnedRule::Masquerade { .. } => {
            if let Some(m) = rule.as_masquerade() {
                control::masquerade_del(&pin_dir, m?.source)?;
            }
        }
        OwnedRule::Publish {
            proto,
            port,
            address,
            ..
        } => {
            let (proto, port, address) = publish_key(proto, port, *address)?;
            control::publish_del(&pin_dir, proto, port, address)?;
        }
        OwnedRule::Container { .. } => {}
    }
    Ok(())
}
