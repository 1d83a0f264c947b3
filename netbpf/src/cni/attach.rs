//! One CNI attachment's rules in the running datapath: added through
//! [`crate::control`] (the same checks and map writes as `netbpf publish
//! add`; one rule at a time in [`super::rules`]), recorded in the owner registry ([`crate::owners`]) under an
//! owner of their own, removed exactly, checked, and garbage-collected
//! per network. Every step holds the rules lock ([`crate::ruleslock`]),
//! so it never interleaves with the daemon's fills or another plugin.
//!
//! Owner names are `cni-<network hash>-<attachment hash>` (owner files
//! take only `[a-z0-9-]`, container IDs have more); the origin that
//! `netbpf nat list` shows is `cni:<container id>/<ifname>`.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use log::warn;
use netbpf_common::map_names;

use super::{
    rules::{add_rule, covering_masquerade, datapath_err, present, remove_rules},
    spec::CniError,
};
use crate::{
    config::{Masquerade, Publish, masquerade_entry},
    maps, owners,
    owners::{OwnedEntry, OwnedRule},
    pins,
    rows::NatRules,
    ruleslock::{RulesLock, RulesLockError},
};

/// How long an invocation waits for the rules lock before answering
/// "try again later".
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The rules an attachment asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Published ports to the container.
    pub publish: Vec<Publish>,
    /// Routed mode: the container's address and the host side of its veth.
    pub routed: Option<(Ipv4Addr, String)>,
    /// Masquerade of the container's address (a /32).
    pub masquerade: Option<Masquerade>,
    /// Address masqueraded traffic leaves with (default: the datapath's).
    pub masquerade_to: Option<Ipv4Addr>,
}

/// One container's interface on one CNI network, on one datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The datapath's pin directory.
    pub pin_dir: PathBuf,
    /// The CNI network's name.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// FNV-1a, 64 bits: stable across builds and versions (owner names must
/// be found again by the next invocation).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The start of the owner names of `network`'s attachments.
fn network_prefix(network: &str) -> String {
    format!("cni-{:016x}-", fnv1a(&[network]))
}

impl Attachment {
    /// Its owner name in the registry.
    pub fn owner(&self) -> String {
        let att = fnv1a(&[&self.container_id, &self.ifname]);
        format!("{}{att:016x}", network_prefix(&self.network))
    }

    /// The origin `netbpf nat list` shows.
    pub fn origin(&self) -> String {
        format!("cni:{}/{}", self.container_id, self.ifname)
    }

    /// ADD: removes what an earlier ADD of this attachment left (a retry,
    /// or one killed halfway), then adds `wanted`. All or nothing: a rule
    /// refused takes back the ones added before it.
    pub fn add(&self, wanted: &Wanted) -> Result<(), CniError> {
        let _lock = lock(&self.pin_dir)?;
        require_datapath(&self.pin_dir)?;
        let owner = self.owner();
        remove_rules(&self.pin_dir, &read_owner(&self.pin_dir, &owner)?)?;
        let origin = self.origin();
        let mut entries: Vec<OwnedEntry> = wanted
            .publish
            .iter()
            .map(|p| OwnedEntry {
                origin: origin.clone(),
                rule: OwnedRule::publish(p),
            })
            .collect();
        if let Some((address, interface)) = &wanted.routed {
            entries.push(OwnedEntry {
                origin: origin.clone(),
                rule: OwnedRule::Container {
                    address: *address,
                    interface: interface.clone(),
                },
            });
        }
        if let Some(m) = &wanted.masquerade {
            match covering_masquerade(&self.pin_dir, m)? {
                Some(held) => warn!(
                    "{origin}: {} is already masqueraded by {held}; not adding its own rule",
                    m.source
                ),
                None => entries.push(OwnedEntry {
                    origin: origin.clone(),
                    rule: OwnedRule::masquerade(m),
                }),
            }
        }
        // Recorded before the maps change: a plugin killed in between
        // leaves rules with an owner, which DEL, GC or the next ADD remove.
        write_owner(&self.pin_dir, &owner, &entries)?;
        for (i, entry) in entries.iter().enumerate() {
            if let Err(e) = add_rule(&self.pin_dir, &entry.rule, wanted.masquerade_to) {
                let undone = remove_rules(&self.pin_dir, &entries[..i]);
                let forgotten = owners::remove(&self.pin_dir, &owner);
                if let Err(u) = undone {
                    warn!("{origin}: taking back the rules added before the refusal: {u}");
                } else if let Err(f) = forgotten {
                    warn!("{origin}: {f}");
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// DEL: removes what ADD recorded; nothing recorded, no datapath, or
    /// rules already gone are not errors.
    pub fn del(&self) -> Result<(), CniError> {
        let _lock = lock(&self.pin_dir)?;
        forget(&self.pin_dir, &self.owner())
    }

    /// CHECK: every rule `wanted` names is recorded for this attachment
    /// and still in the datapath.
    pub fn check(&self, wanted: &Wanted) -> Result<(), CniError> {
        let _lock = lock(&self.pin_dir)?;
        require_datapath(&self.pin_dir)?;
        let held = read_owner(&self.pin_dir, &self.owner())?;
        for p in &wanted.publish {
            let rule = OwnedRule::publish(p);
            if !held.iter().any(|e| e.rule == rule) {
                return Err(CniError::Missing(format!(
                    "{} was not added for {}",
                    rule.describe(),
                    self.origin()
                )));
            }
        }
        if let Some((address, interface)) = &wanted.routed {
            let rule = OwnedRule::Container {
                address: *address,
                interface: interface.clone(),
            };
            if !held.contains(&OwnedEntry {
                origin: self.origin(),
                rule: rule.clone(),
            }) {
                return Err(CniError::Missing(format!(
                    "{} was not added for {}",
                    rule.describe(),
                    self.origin()
                )));
            }
        }
        let rows = NatRules::read(&self.pin_dir).map_err(datapath_err)?;
        for entry in &held {
            if !present(&self.pin_dir, &rows, &entry.rule) {
                return Err(CniError::Missing(entry.rule.describe()));
            }
        }
        if let Some(m) = &wanted.masquerade
            && !rows.masquerade.iter().any(|row| {
                masquerade_entry(&row.source, None).is_ok_and(|h| h.source.overlaps(&m.source))
            })
        {
            return Err(CniError::Missing(format!("masquerade of {}", m.source)));
        }
        Ok(())
    }
}

/// GC: removes the rules of every attachment of `network` on the
/// datapath in `pin_dir` that `valid` does not list; returns how many
/// attachments were removed.
pub fn gc(pin_dir: &Path, network: &str, valid: &[(String, String)]) -> Result<usize, CniError> {
    let _lock = lock(pin_dir)?;
    let keep: Vec<String> = valid
        .iter()
        .map(|(id, ifname)| {
            Attachment {
                pin_dir: pin_dir.to_owned(),
                network: network.to_owned(),
                container_id: id.clone(),
                ifname: ifname.clone(),
            }
            .owner()
        })
        .collect();
    let prefix = network_prefix(network);
    let names = owners::names(pin_dir).map_err(datapath_err)?;
    let mut removed = 0;
    for name in names.iter().filter(|n| n.starts_with(&prefix)) {
        if !keep.contains(name) {
            forget(pin_dir, name)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// STATUS: ready when a datapath is pinned in `pin_dir` and attached.
pub fn status(pin_dir: &Path) -> Result<(), CniError> {
    if maps::open_pinned(pin_dir, map_names::PUBLISH).is_err() {
        return Err(CniError::NotAvailable(format!(
            "no netbpf datapath pinned in {} (is `netbpf daemon` running?)",
            pin_dir.display()
        )));
    }
    match pins::detached_warning(pin_dir) {
        Ok(None) => Ok(()),
        Ok(Some(text)) => Err(CniError::NotAvailable(text)),
        Err(e) => Err(CniError::NotAvailable(format!(
            "{:#}",
            anyhow::Error::from(e)
        ))),
    }
}

fn lock(pin_dir: &Path) -> Result<RulesLock, CniError> {
    RulesLock::acquire(pin_dir, LOCK_WAIT).map_err(|e| match e {
        RulesLockError::Busy { .. } => CniError::TryAgainLater(e.to_string()),
        RulesLockError::Io { .. } => CniError::Datapath(format!("{:#}", anyhow::Error::from(e))),
    })
}

fn require_datapath(pin_dir: &Path) -> Result<(), CniError> {
    maps::open_pinned(pin_dir, map_names::PUBLISH)
        .map(drop)
        .map_err(|e| CniError::TryAgainLater(format!("{:#}", anyhow::Error::from(e))))
}

fn read_owner(pin_dir: &Path, owner: &str) -> Result<Vec<OwnedEntry>, CniError> {
    owners::read(pin_dir, owner).map_err(datapath_err)
}

fn write_owner(pin_dir: &Path, owner: &str, entries: &[OwnedEntry]) -> Result<(), CniError> {
    owners::write(pin_dir, owner, entries).map_err(datapath_err)
}

/// Removes an owner's rules and its file.
fn forget(pin_dir: &Path, owner: &str) -> Result<(), CniError> {
    remove_rules(pin_dir, &read_owner(pin_dir, owner)?)?;
    owners::remove(pin_dir, owner).map_err(datapath_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_per_network_and_attachment() {
        let a = Attachment {
            pin_dir: PathBuf::from("/sys/fs/bpf/x"),
            network: "podman".into(),
            container_id: "ABC_1.x".into(),
            ifname: "eth0".into(),
        };
        let owner = a.owner();
        assert!(owner.starts_with(&network_prefix("podman")), "{owner}");
        assert!(
            owner
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        let other_if = Attachment {
            ifname: "eth1".into(),
            ..a.clone()
        };
        let other_net = Attachment {
            network: "other".into(),
            ..a.clone()
        };
        assert_ne!(owner, other_if.owner());
        assert!(!other_net.owner().starts_with(&network_prefix("podman")));
        assert_eq!(a.origin(), "cni:ABC_1.x/eth0");
        // Stable: the next invocation (maybe of a newer netbpf) finds it.
        assert_eq!(fnv1a(&["a"]), 0x089b_e207_b544_f1e4);
    }
}
