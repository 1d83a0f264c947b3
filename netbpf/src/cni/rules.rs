//! The single rules of an attachment against the datapath: adding one
//! through [`crate::control`] or [`crate::containers`], whether it is there
//! exactly as recorded, removing the ones that are, and how each is named
//! in messages.

use std::{net::Ipv4Addr, path::Path};

use super::spec::CniError;
use crate::{
    config::{Ipv4Cidr, Masquerade},
    containers::{self, ContainersError},
    control::{self, ControlError},
    maps,
    owners::{OwnedEntry, OwnedRule},
    rows::NatRules,
};

/// A failure reading or writing the datapath or the records (code 102).
pub(super) fn datapath_err(e: impl Into<anyhow::Error>) -> CniError {
    CniError::Datapath(format!("{:#}", e.into()))
}

/// The held masquerade rule that already covers (or overlaps) `m`.
pub(super) fn covering_masquerade(
    pin_dir: &Path,
    m: &Masquerade,
) -> Result<Option<String>, CniError> {
    let held = maps::read_masquerade(pin_dir).map_err(datapath_err)?;
    Ok(held.iter().find_map(|e| {
        let cidr = Ipv4Cidr {
            addr: Ipv4Addr::from(e.source),
            prefix_len: u8::try_from(e.prefix_len).unwrap_or(32),
        };
        cidr.overlaps(&m.source).then(|| cidr.to_string())
    }))
}

pub(super) fn add_rule(
    pin_dir: &Path,
    rule: &OwnedRule,
    to: Option<Ipv4Addr>,
) -> Result<(), CniError> {
    let refused = |e: ControlError| match e {
        ControlError::Maps(_) | ControlError::Map { .. } => datapath_err(e),
        other => CniError::Refused(format!(
            "{}: {:#}",
            rule.describe(),
            anyhow::Error::from(other)
        )),
    };
    if let OwnedRule::Container { address, interface } = rule {
        return containers::add(pin_dir, *address, interface, None)
            .map(drop)
            .map_err(|e| match e {
                ContainersError::Masqueraded { .. } | ContainersError::Exists { .. } => {
                    CniError::Refused(format!("{}: {:#}", rule.describe(), anyhow::Error::from(e)))
                }
                other => datapath_err(other),
            });
    }
    if let Some(p) = rule.as_publish() {
        let p = p.map_err(|e| CniError::InvalidConfig(format!("{:#}", anyhow::Error::from(e))))?;
        control::publish_add(pin_dir, &p).map_err(refused)
    } else if let Some(m) = rule.as_masquerade() {
        let m = m.map_err(|e| CniError::InvalidConfig(format!("{:#}", anyhow::Error::from(e))))?;
        match control::masquerade_add(pin_dir, &m, to) {
            Err(ControlError::NotFound(_)) => Err(CniError::InvalidConfig(
                "masquerade: the datapath has no masquerade rule to take the outgoing address from; set \"masqueradeTo\" in the plugin's config".to_owned(),
            )),
            other => other.map(drop).map_err(refused),
        }
    } else {
        Ok(())
    }
}

/// Whether `rule` is in the datapath exactly (a publish rule: same
/// protocol, host address and ports, and same target; a routed container:
/// same address behind the same interface).
pub(super) fn present(pin_dir: &Path, rows: &NatRules, rule: &OwnedRule) -> bool {
    if let OwnedRule::Container { address, interface } = rule {
        containers::list(pin_dir).is_ok_and(|list| {
            list.iter()
                .any(|c| c.address == *address && &c.interface == interface)
        })
    } else if let Some(Ok(p)) = rule.as_publish() {
        rows.publish.iter().any(|r| {
            r.proto == p.proto.to_string()
                && r.host_addr == p.address.unwrap_or(Ipv4Addr::UNSPECIFIED)
                && r.host_port_min == p.port.start
                && r.host_port_max == p.port.end
                && r.to_addr == p.to_addr
                && r.to_port_min == p.to_port
        })
    } else if let Some(Ok(m)) = rule.as_masquerade() {
        rows.masquerade
            .iter()
            .any(|r| r.source == m.source.to_string())
    } else {
        false
    }
}

/// Removes the rules in `entries` that the datapath holds exactly as
/// recorded (a port someone else published since is left alone); no
/// datapath means nothing to remove.
pub(super) fn remove_rules(pin_dir: &Path, entries: &[OwnedEntry]) -> Result<(), CniError> {
    if entries.is_empty() {
        return Ok(());
    }
    let Ok(rows) = NatRules::read(pin_dir) else {
        return Ok(());
    };
    for entry in entries.iter().filter(|e| present(pin_dir, &rows, &e.rule)) {
        if let OwnedRule::Container { address, .. } = &entry.rule {
            match containers::del(pin_dir, *address) {
                Ok(()) | Err(ContainersError::NotFound(_)) => continue,
                Err(e) => return Err(datapath_err(e)),
            }
        }
        let result = if let Some(Ok(p)) = entry.rule.as_publish() {
            control::publish_del(pin_dir, p.proto, p.port, p.address).map(drop)
        } else if let Some(Ok(m)) = entry.rule.as_masquerade() {
            control::masquerade_del(pin_dir, m.source)
        } else {
            Ok(())
        };
        match result {
            Ok(()) | Err(ControlError::NotFound(_)) => {}
            Err(e) => return Err(datapath_err(e)),
        }
    }
    Ok(())
}
