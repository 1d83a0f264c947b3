//! Writing the config's rules and policies into the loaded maps, and putting them back when a restart fails.

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    maps::{Array, LpmTrie, MapError, lpm_trie::Key},
};
use netbpf_common::{MasqPrefix, MasqRule, PublishKey, PublishRule, map_names};

use crate::config::{Config, Masquerade, Publish, publish_collides};

use super::error::*;

/// A map of the loaded object by name.
pub(crate) fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, DatapathError> {
    ebpf.map_mut(name).ok_or(DatapathError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })
}

/// Writes the policies (`[inbound]`, `[datapath]`) into a loaded object.
pub fn fill_settings(ebpf: &mut Ebpf, config: &Config) -> Result<(), DatapathError> {
    let name = map_names::SETTINGS;
    let map = map_mut(ebpf, name)?;
    let mut array: Array<_, netbpf_common::Settings> =
        Array::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    array
        .set(0, &config.settings(), 0)
        .map_err(|source| DatapathError::Map { name, source })
}

/// Writes the masquerade rules (and the inbound policies) into a loaded
/// object.
pub fn fill_masquerade(
    ebpf: &mut Ebpf,
    config: &Config,
    uplink_addr: Ipv4Addr,
) -> Result<(), DatapathError> {
    fill_masquerade_keeping(ebpf, config, uplink_addr, &[])
}

/// [`fill_masquerade`], also writing (and so not pruning) `kept`: the
/// rules other owners hold (Docker's networks). A kept rule that overlaps
/// one of the config's yields to it.
pub fn fill_masquerade_keeping(
    ebpf: &mut Ebpf,
    config: &Config,
    uplink_addr: Ipv4Addr,
    kept: &[Masquerade],
) -> Result<(), DatapathError> {
    let name = map_names::MASQ_RULES;
    let map = map_mut(ebpf, name)?;
    let mut trie: LpmTrie<_, MasqPrefix, MasqRule> =
        LpmTrie::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    let mut wanted = Vec::new();
    let kept = kept.iter().filter(|k| {
        !config
            .masquerade
            .iter()
            .any(|m| m.source.overlaps(&k.source))
    });
    for m in config.masquerade.iter().chain(kept) {
        let (port_min, port_max) = m.ports.map(|r| (r.start, r.end)).unwrap_or((0, 0));
        let rule = MasqRule {
            to_addr: uplink_addr.octets(),
            port_min,
            port_max,
        };
        let prefix = u32::from(m.source.prefix_len);
        let key = Key::new(prefix, m.source.addr.octets());
        trie.insert(&key, &rule, 0)
            .map_err(|source| DatapathError::Map { name, source })?;
        wanted.push((prefix, m.source.addr.octets()));
    }
    prune_trie(&mut trie, name, &wanted)?;
    fill_settings(ebpf, config)
}

/// Removes the entries of a trie (pinned by an earlier daemon) that the
/// config no longer has; entries that stay were overwritten in place, so a
/// restart with a changed config changes only the difference.
pub(crate) fn prune_trie<K: aya::Pod + PartialEq, V: aya::Pod>(
    trie: &mut LpmTrie<&mut aya::maps::MapData, K, V>,
    name: &'static str,
    wanted: &[(u32, K)],
) -> Result<(), DatapathError> {
    let stale: Vec<Key<K>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| {
            !wanted
                .iter()
                .any(|(p, d)| *p == k.prefix_len() && *d == k.data())
        })
        .collect();
    for key in stale {
        match crate::maps::absent_ok(trie.remove(&key)) {
            Ok(()) => {}
            Err(source) => return Err(DatapathError::Map { name, source }),
        }
    }
    Ok(())
}

/// Writes the published ports and the host's addresses into a loaded
/// object.
pub fn fill_publish(
    ebpf: &mut Ebpf,
    config: &Config,
    local_addrs: &[Ipv4Addr],
) -> Result<(), DatapathError> {
    fill_publish_keeping(ebpf, config, local_addrs, &[])
}

/// [`fill_publish`], also writing (and so not pruning) `kept`: the
/// entries other owners hold (Docker's containers). A kept entry that
/// collides with one of the config's yields to it.
pub fn fill_publish_keeping(
    ebpf: &mut Ebpf,
    config: &Config,
    local_addrs: &[Ipv4Addr],
    kept: &[Publish],
) -> Result<(), DatapathError> {
    let name = map_names::PUBLISH;
    let map = map_mut(ebpf, name)?;
    let mut trie: LpmTrie<_, PublishKey, PublishRule> =
        LpmTrie::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    let mut wanted = Vec::new();
    let kept = kept.iter().filter(|k| {
        !config.publish.iter().any(|p| {
            publish_collides(
                (p.proto.number(), p.address, p.port),
                (k.proto.number(), k.address, k.port),
            )
        })
    });
    for p in config.publish.iter().chain(kept) {
        let rule = p.rule();
        for (len, key) in p.blocks() {
            trie.insert(&Key::new(len, key), &rule, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
            wanted.push((len, key));
        }
    }
    prune_trie(&mut trie, name, &wanted)?;
    let name = map_names::LOCAL_ADDRS;
    let map = map_mut(ebpf, name)?;
    let mut addrs: aya::maps::HashMap<_, [u8; 4], u32> =
        aya::maps::HashMap::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    for a in local_addrs {
        addrs
            .insert(&a.octets(), &1, 0)
            .map_err(|source| DatapathError::Map { name, source })?;
    }
    let stale: Vec<[u8; 4]> = addrs
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !local_addrs.iter().any(|a| a.octets() == *k))
        .collect();
    for key in stale {
        match crate::maps::absent_ok(addrs.remove(&key)) {
            Ok(()) => {}
            Err(source) => return Err(DatapathError::Map { name, source }),
        }
    }
    Ok(())
}

/// What the rule maps held before a restart changed them.
pub(crate) struct RuleSnapshot {
    masq: Vec<(Key<MasqPrefix>, MasqRule)>,
    publish: Vec<(Key<PublishKey>, PublishRule)>,
    local: Vec<[u8; 4]>,
}

impl RuleSnapshot {
    pub(crate) fn read(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        let name = map_names::MASQ_RULES;
        let masq: LpmTrie<_, MasqPrefix, MasqRule> = LpmTrie::try_from(map_mut(ebpf, name)?)
            .map_err(|source| DatapathError::Map { name, source })?;
        let masq = masq.iter().filter_map(Result::ok).collect();
        let name = map_names::PUBLISH;
        let publish: LpmTrie<_, PublishKey, PublishRule> = LpmTrie::try_from(map_mut(ebpf, name)?)
            .map_err(|source| DatapathError::Map { name, source })?;
        let publish = publish.iter().filter_map(Result::ok).collect();
        let name = map_names::LOCAL_ADDRS;
        let local: aya::maps::HashMap<_, [u8; 4], u32> =
            aya::maps::HashMap::try_from(map_mut(ebpf, name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        let local = local.keys().filter_map(Result::ok).collect();
        Ok(Self {
            masq,
            publish,
            local,
        })
    }

    /// Writes the snapshot back and removes entries it did not have.
    pub(crate) fn restore(self, ebpf: &mut Ebpf) -> Result<(), DatapathError> {
        let name = map_names::MASQ_RULES;
        let mut masq: LpmTrie<_, MasqPrefix, MasqRule> = LpmTrie::try_from(map_mut(ebpf, name)?)
            .map_err(|source| DatapathError::Map { name, source })?;
        for (k, v) in &self.masq {
            masq.insert(k, v, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
        }
        let wanted: Vec<(u32, MasqPrefix)> = self
            .masq
            .iter()
            .map(|(k, _)| (k.prefix_len(), k.data()))
            .collect();
        prune_trie(&mut masq, name, &wanted)?;
        let name = map_names::PUBLISH;
        let mut publish: LpmTrie<_, PublishKey, PublishRule> =
            LpmTrie::try_from(map_mut(ebpf, name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        for (k, v) in &self.publish {
            publish
                .insert(k, v, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
        }
        let wanted: Vec<(u32, PublishKey)> = self
            .publish
            .iter()
            .map(|(k, _)| (k.prefix_len(), k.data()))
            .collect();
        prune_trie(&mut publish, name, &wanted)?;
        let name = map_names::LOCAL_ADDRS;
        let mut local: aya::maps::HashMap<_, [u8; 4], u32> =
            aya::maps::HashMap::try_from(map_mut(ebpf, name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        let stale: Vec<[u8; 4]> = local
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !self.local.contains(k))
            .collect();
        for a in &self.local {
            local
                .insert(a, &1, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
        }
        for k in stale {
            let _ = local.remove(&k);
        }
        Ok(())
    }
}
