//! Live control: change the NAT rules of a running datapath without a
//! restart, by writing its pinned maps (`netbpf publish add|del`,
//! `netbpf masquerade add|del`).
//!
//! Rules are validated exactly as the config file validates them (by
//! [`crate::config::publish_entry`] and its kin), and checked against the rules already
//! in the datapath the same way the config checks rules against each
//! other. Flows already open are not touched: removing a rule stops new
//! flows, established ones run until they expire. The config file stays
//! the source of truth: a SIGHUP reload (or a restart) puts the datapath
//! back to what the file says.

use std::{net::Ipv4Addr, path::Path};

use aya::maps::{LpmTrie, Map, MapData, MapError, lpm_trie::Key};
use netbpf_common::{IsolationNet, MasqPrefix, MasqRule, PublishKey, PublishRule, map_names};

use crate::{
    config::{
        ConfigError, Ipv4Cidr, Masquerade, PortRange, Proto, Publish, check_masquerade_source,
        check_publish_to, publish_collides,
    },
    maps::{self, MapsError},
};

/// Why a live change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The rule is invalid (same checks as the config file).
    #[error("invalid rule")]
    Invalid(#[source] ConfigError),
    /// The rule conflicts with one the datapath already has.
    #[error("{0}")]
    Conflict(String),
    /// No such rule in the datapath.
    #[error("{0}")]
    NotFound(String),
    /// Reading the pinned maps failed (is a datapath running?).
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// Writing a map failed.
    #[error("map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: MapError,
    },
}

fn trie<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<LpmTrie<MapData, K, V>, ControlError> {
    let data = maps::open_pinned(pin_dir, name)?;
    LpmTrie::try_from(Map::LpmTrie(data)).map_err(|source| ControlError::Map { name, source })
}

/// A published rule as the datapath holds it: protocol, address, range.
fn held_rules(pin_dir: &Path) -> Result<Vec<(u8, [u8; 4], PublishRule)>, ControlError> {
    let mut rules: Vec<(u8, [u8; 4], PublishRule)> = Vec::new();
    for e in maps::read_publish(pin_dir)? {
        let r = (e.key.proto, e.key.addr, e.rule);
        if !rules.contains(&r) {
            rules.push(r);
        }
    }
    Ok(rules)
}

/// Adds a published port (range) to the running datapath. A target that
/// is one of the host's own addresses (as the datapath holds them) is
/// refused, like the daemon refuses it in the config file.
pub fn publish_add(pin_dir: &Path, p: &Publish) -> Result<(), ControlError> {
    let host = maps::read_local_addrs(pin_dir)?;
    let to = format!("{}:{}", p.to_addr, p.to_port);
    check_publish_to("publish[0].to", &to, p.to_addr, &host).map_err(ControlError::Invalid)?;
    for (proto, held_addr, rule) in held_rules(pin_dir)? {
        let held = PortRange {
            start: rule.host_port_min,
            end: rule.host_port_max,
        };
        let held_at = (held_addr != [0; 4]).then(|| Ipv4Addr::from(held_addr));
        if publish_collides(
            (proto, held_at, held),
            (p.proto.number(), p.address, p.port),
        ) {
            return Err(ControlError::Conflict(format!(
                "{} port {} overlaps the published {} {} on {} → {}:{}",
                p.proto,
                p.port,
                p.proto,
                held,
                host_addr(held_addr),
                Ipv4Addr::from(rule.to_addr),
                rule.to_port
            )));
        }
    }
    let name = map_names::PUBLISH;
    let mut trie: LpmTrie<MapData, PublishKey, PublishRule> = trie(pin_dir, name)?;
    let rule = p.rule();
    for (len, key) in p.blocks() {
        trie.insert(&Key::new(len, key), &rule, 0)
            .map_err(|source| ControlError::Map { name, source })?;
    }
    Ok(())
}

fn host_addr(addr: [u8; 4]) -> String {
    if addr == [0; 4] {
        "*".into()
    } else {
        Ipv4Addr::from(addr).to_string()
    }
}

/// Removes the published rule for exactly this protocol, host port (range)
/// and address.
pub fn publish_del(
    pin_dir: &Path,
    proto: Proto,
    port: PortRange,
    address: Option<Ipv4Addr>,
) -> Result<usize, ControlError> {
    let addr = address.map(|a| a.octets()).unwrap_or([0; 4]);
    let name = map_names::PUBLISH;
    let blocks: Vec<_> = maps::read_publish(pin_dir)?
        .into_iter()
        .filter(|e| {
            e.key.proto == proto.number()
                && e.key.addr == addr
                && e.rule.host_port_min == port.start
                && e.rule.host_port_max == port.end
        })
        .collect();
    if blocks.is_empty() {
        return Err(ControlError::NotFound(format!(
            "no published {proto} port {port} on {} in the datapath (see `netbpf nat list`)",
            host_addr(addr)
        )));
    }
    let mut trie: LpmTrie<MapData, PublishKey, PublishRule> = trie(pin_dir, name)?;
    for e in &blocks {
        match crate::maps::absent_ok(trie.remove(&Key::new(e.prefix_len, e.key))) {
            Ok(()) => {}
            Err(source) => return Err(ControlError::Map { name, source }),
        }
    }
    Ok(blocks.len())
}

/// Adds a masquerade rule; `to` defaults to the address the datapath's
/// other masquerade rules translate to.
pub fn masquerade_add(
    pin_dir: &Path,
    m: &Masquerade,
    to: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, ControlError> {
    let held = maps::read_masquerade(pin_dir)?;
    for e in &held {
        let cidr = Ipv4Cidr {
            addr: Ipv4Addr::from(e.source),
            prefix_len: e.prefix_len as u8,
        };
        if cidr.overlaps(&m.source) {
            return Err(ControlError::Conflict(format!(
                "source {} overlaps the masqueraded {cidr}",
                m.source
            )));
        }
    }
    let to = match to.or_else(|| held.first().map(|e| Ipv4Addr::from(e.rule.to_addr))) {
        Some(to) => to,
        None => {
            return Err(ControlError::NotFound(
                "the datapath has no masquerade rule to take the address from: give --to (the uplink address)"
                    .into(),
            ));
        }
    };
    // The uplink's addresses as the datapath knows them: the address its
    // rules translate to.
    let mut uplink: Vec<Ipv4Addr> = held
        .iter()
        .map(|e| Ipv4Addr::from(e.rule.to_addr))
        .collect();
    uplink.push(to);
    check_masquerade_source("masquerade[0].source", &m.source, &uplink)
        .map_err(ControlError::Invalid)?;
    let name = map_names::MASQ_RULES;
    let mut trie: LpmTrie<MapData, MasqPrefix, MasqRule> = trie(pin_dir, name)?;
    let (port_min, port_max) = m.ports.map(|r| (r.start, r.end)).unwrap_or((0, 0));
    let rule = MasqRule {
        to_addr: to.octets(),
        port_min,
        port_max,
    };
    let key = Key::new(u32::from(m.source.prefix_len), m.source.addr.octets());
    trie.insert(&key, &rule, 0)
        .map_err(|source| ControlError::Map { name, source })?;
    Ok(to)
}

/// Removes the masquerade rule for exactly this source CIDR.
pub fn masquerade_del(pin_dir: &Path, source: Ipv4Cidr) -> Result<(), ControlError> {
    let name = map_names::MASQ_RULES;
    let held = maps::read_masquerade(pin_dir)?;
    if !held
        .iter()
        .any(|e| e.prefix_len == u32::from(source.prefix_len) && e.source == source.addr.octets())
    {
        return Err(ControlError::NotFound(format!(
            "no masquerade rule for {source} in the datapath (see `netbpf nat list`)"
        )));
    }
    let mut trie: LpmTrie<MapData, MasqPrefix, MasqRule> = trie(pin_dir, name)?;
    trie.remove(&Key::new(
        u32::from(source.prefix_len),
        source.addr.octets(),
    ))
    .map_err(|source| ControlError::Map { name, source })
}

/// Replaces the isolated container networks (`ISOLATION`): each subnet
/// with its network's non-zero number; packets between two numbered
/// networks are dropped. Entries not listed are removed. Returns how many
/// entries changed.
pub fn isolation_set(pin_dir: &Path, nets: &[(Ipv4Cidr, u32)]) -> Result<usize, ControlError> {
    let name = map_names::ISOLATION;
    let mut trie: LpmTrie<MapData, [u8; 4], IsolationNet> = trie(pin_dir, name)?;
    let held: Vec<(Key<[u8; 4]>, IsolationNet)> = trie.iter().filter_map(Result::ok).collect();
    let mut changed = 0;
    for (cidr, id) in nets {
        let key = Key::new(u32::from(cidr.prefix_len), cidr.addr.octets());
        let value = IsolationNet { id: *id };
        let same = held.iter().any(|(k, v)| {
            k.prefix_len() == key.prefix_len() && k.data() == key.data() && *v == value
        });
        if !same {
            trie.insert(&key, &value, 0)
                .map_err(|source| ControlError::Map { name, source })?;
            changed += 1;
        }
    }
    for (k, _) in &held {
        let wanted = nets
            .iter()
            .any(|(c, _)| u32::from(c.prefix_len) == k.prefix_len() && c.addr.octets() == k.data());
        if !wanted {
            match crate::maps::absent_ok(trie.remove(k)) {
                Ok(()) => changed += 1,
                Err(source) => return Err(ControlError::Map { name, source }),
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use crate::config::{Proto, masquerade_entry, publish_entry, publish_key};

    #[test]
    fn rules_are_validated_like_the_config() {
        let p = publish_entry("tcp", "8000-8010", "10.77.0.2:4000", None).expect("valid");
        assert_eq!((p.port.start, p.port.end, p.to_port), (8000, 8010, 4000));
        let err = publish_entry("sctp", "80", "10.77.0.2:80", None).expect_err("bad proto");
        assert!(format!("{:#}", anyhow::Error::from(err)).contains("publish[0].proto"));
        let err = publish_entry("tcp", "80", "10.77.0.2", None).expect_err("no port");
        assert!(format!("{:#}", anyhow::Error::from(err)).contains("publish[0].to"));
        let m = masquerade_entry("10.78.0.0/16", Some("20000-30000")).expect("valid");
        assert_eq!(m.source.prefix_len, 16);
        let err = masquerade_entry("10.78.0.1/16", None).expect_err("host bits");
        assert!(format!("{:#}", anyhow::Error::from(err)).contains("host bits"));
        // The config's checks against locking the host out apply here too.
        for (source, why) in [("0.0.0.0/0", "every address"), ("127.0.0.0/8", "loopback")] {
            let err = masquerade_entry(source, None).expect_err(source);
            let msg = format!("{:#}", anyhow::Error::from(err));
            assert!(
                msg.contains("masquerade[0].source") && msg.contains(why),
                "{msg}"
            );
        }
        for to in ["127.0.0.1:22", "0.0.0.0:80", "224.0.0.5:80"] {
            let err = publish_entry("tcp", "80", to, None).expect_err(to);
            assert!(format!("{:#}", anyhow::Error::from(err)).contains("publish[0].to"));
        }
    }

    #[test]
    fn a_rule_to_remove_is_named_by_checked_values() {
        let (proto, port, address) = publish_key("udp", "8000-8010", None).expect("valid");
        assert_eq!(
            (proto, port.start, port.end, address),
            (Proto::Udp, 8000, 8010, None)
        );
        let any = publish_key("tcp", "80", Some(std::net::Ipv4Addr::UNSPECIFIED)).expect("any");
        assert_eq!(any.2, None, "0.0.0.0 means any address, as in the file");
        let err = publish_key("sctp", "0", None).expect_err("bad proto and port");
        let msg = format!("{:#}", anyhow::Error::from(err));
        assert!(
            msg.contains("publish[0].proto") && msg.contains("publish[0].port"),
            "{msg}"
        );
    }
}
