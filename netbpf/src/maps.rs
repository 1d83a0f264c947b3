//! The datapath's maps as userspace sees them: pinned under a bpffs
//! directory, opened by name, typed with the layouts from `netbpf-common`.

use std::{
    fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key};
use netbpf_common::{
    Counter, Endpoint, FlowKey, FlowValue, MappingValue, MasqPrefix, MasqRule, PORT_PROBE_BUCKETS,
    PUBLISH_KEY_FIXED_BITS, PublishKey, PublishRule, map_names,
};
use serde::Serialize;

use crate::conntrack::proto_name;

/// Errors reading the pinned maps.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// The pin directory has no such map: no datapath is running there.
    #[error(
        "no netbpf datapath is pinned at {dir} (map {name} missing): is `netbpf daemon` running? (--pin-dir selects another)"
    )]
    NotPinned {
        /// The pin directory.
        dir: PathBuf,
        /// The map that was looked for.
        name: &'static str,
    },
    /// Opening or reading a map failed.
    #[error("map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: MapError,
    },
    /// A filesystem operation on the pin directory failed.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// Path of a map's pin.
pub fn pin_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Opens a pinned map by name.
pub fn open_pinned(dir: &Path, name: &'static str) -> Result<MapData, MapsError> {
    let path = pin_path(dir, name);
    if !path.exists() {
        return Err(MapsError::NotPinned {
            dir: dir.to_owned(),
            name,
        });
    }
    MapData::from_pin(&path).map_err(|source| MapsError::Map { name, source })
}

/// Removes every netbpf pin in `dir` and the directory itself if empty.
pub fn unpin_all(dir: &Path) -> Result<(), MapsError> {
    for name in map_names::ALL {
        let path = pin_path(dir, name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(MapsError::Io { path, source }),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // Someone else's files in there: leave the directory.
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(()),
        Err(source) => Err(MapsError::Io {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Typed handles on the conntrack and NAT maps.
pub struct NatMaps {
    /// Flows.
    pub conntrack: HashMap<MapData, FlowKey, FlowValue>,
    /// Inside endpoint → mapping.
    pub mappings: HashMap<MapData, Endpoint, MappingValue>,
    /// Outside endpoint → inside endpoint.
    pub reverse: HashMap<MapData, Endpoint, Endpoint>,
}

impl NatMaps {
    /// Opens the maps pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            conntrack: hash(
                map_names::CONNTRACK,
                open_pinned(dir, map_names::CONNTRACK)?,
            )?,
            mappings: hash(
                map_names::NAT_MAPPINGS,
                open_pinned(dir, map_names::NAT_MAPPINGS)?,
            )?,
            reverse: hash(
                map_names::NAT_REVERSE,
                open_pinned(dir, map_names::NAT_REVERSE)?,
            )?,
        })
    }

    /// Every flow, as read now. Entries deleted while iterating are skipped.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, MapsError> {
        collect(map_names::CONNTRACK, self.conntrack.iter())
    }

    /// Every mapping, as read now.
    pub fn mapping_entries(&self) -> Result<Vec<(Endpoint, MappingValue)>, MapsError> {
        collect(map_names::NAT_MAPPINGS, self.mappings.iter())
    }

    /// Every reverse entry, as read now.
    pub fn reverse_entries(&self) -> Result<Vec<(Endpoint, Endpoint)>, MapsError> {
        collect(map_names::NAT_REVERSE, self.reverse.iter())
    }
}

/// Converts a map into a typed hash map.
fn hash<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    data: MapData,
) -> Result<HashMap<MapData, K, V>, MapsError> {
    HashMap::try_from(Map::HashMap(data)).map_err(|source| MapsError::Map { name, source })
}

/// Collects a map iterator, skipping keys that vanished mid-iteration.
fn collect<K, V>(
    name: &'static str,
    iter: impl Iterator<Item = Result<(K, V), MapError>>,
) -> Result<Vec<(K, V)>, MapsError> {
    let mut out = Vec::new();
    for item in iter {
        match item {
            Ok(kv) => out.push(kv),
            Err(MapError::KeyNotFound) => continue,
            Err(source) => return Err(MapsError::Map { name, source }),
        }
    }
    Ok(out)
}

/// The datapath's counters, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// `(name, value)` for every [`Counter`], in index order.
    pub counters: Vec<(&'static str, u64)>,
    /// Port allocations by probes needed; the last bucket counts failures.
    pub port_probes: Vec<u64>,
}

impl Stats {
    /// The value of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters
            .get(counter as usize)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }
}

/// Reads and sums the per-CPU counters pinned in `dir`.
pub fn read_stats(dir: &Path) -> Result<Stats, MapsError> {
    let stats = per_cpu(map_names::STATS, open_pinned(dir, map_names::STATS)?)?;
    let probes = per_cpu(
        map_names::PORT_PROBES,
        open_pinned(dir, map_names::PORT_PROBES)?,
    )?;
    let sum = |map: &PerCpuArray<MapData, u64>, name: &'static str, i: u32| {
        map.get(&i, 0)
            .map(|values| values.iter().sum::<u64>())
            .map_err(|source| MapsError::Map { name, source })
    };
    let mut counters = Vec::with_capacity(Counter::ALL.len());
    for c in Counter::ALL {
        counters.push((c.name(), sum(&stats, map_names::STATS, c as u32)?));
    }
    let mut port_probes = Vec::with_capacity(PORT_PROBE_BUCKETS as usize);
    for i in 0..PORT_PROBE_BUCKETS {
        port_probes.push(sum(&probes, map_names::PORT_PROBES, i)?);
    }
    Ok(Stats {
        counters,
        port_probes,
    })
}

fn per_cpu(name: &'static str, data: MapData) -> Result<PerCpuArray<MapData, u64>, MapsError> {
    PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(|source| MapsError::Map { name, source })
}

// ---------------------------------------------------------------------------
// NAT rules: `netbpf nat list`
// ---------------------------------------------------------------------------

/// One entry of the masquerade trie, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasqEntry {
    /// Prefix length of the source CIDR.
    pub prefix_len: u32,
    /// Source network, network order.
    pub source: MasqPrefix,
    /// What matching packets are translated to.
    pub rule: MasqRule,
}

/// One entry of the published-ports trie, as stored (a range is several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishEntry {
    /// Prefix length of the whole key (protocol, address and port bits).
    pub prefix_len: u32,
    /// The key: protocol, host address, first port of the block.
    pub key: PublishKey,
    /// The rule the block belongs to.
    pub rule: PublishRule,
}

impl PublishEntry {
    /// The host ports this block covers, inclusive. Port bits beyond the
    /// prefix are ignored by the trie, so they are masked off here too.
    pub fn ports(&self) -> (u16, u16) {
        let bits = self
            .prefix_len
            .saturating_sub(PUBLISH_KEY_FIXED_BITS)
            .min(16);
        let size = 1u32 << (16 - bits);
        let base = u32::from(u16::from_be_bytes(self.key.port_be)) & !(size - 1);
        (base as u16, (base + size - 1) as u16)
    }
}

/// Reads every masquerade rule pinned in `dir`.
pub fn read_masquerade(dir: &Path) -> Result<Vec<MasqEntry>, MapsError> {
    let name = map_names::MASQ_RULES;
    let trie: LpmTrie<MapData, MasqPrefix, MasqRule> = lpm(name, open_pinned(dir, name)?)?;
    Ok(collect(name, trie.iter())?
        .into_iter()
        .map(|(key, rule)| MasqEntry {
            prefix_len: key.prefix_len(),
            source: key.data(),
            rule,
        })
        .collect())
}

/// Reads every published-port block pinned in `dir`.
pub fn read_publish(dir: &Path) -> Result<Vec<PublishEntry>, MapsError> {
    let name = map_names::PUBLISH;
    let trie: LpmTrie<MapData, PublishKey, PublishRule> = lpm(name, open_pinned(dir, name)?)?;
    Ok(collect(name, trie.iter())?
        .into_iter()
        .map(|(key, rule): (Key<PublishKey>, PublishRule)| PublishEntry {
            prefix_len: key.prefix_len(),
            key: key.data(),
            rule,
        })
        .collect())
}

/// Reads the host addresses that published ports without an address
/// answer on, sorted.
pub fn read_local_addrs(dir: &Path) -> Result<Vec<Ipv4Addr>, MapsError> {
    let name = map_names::LOCAL_ADDRS;
    let map: HashMap<MapData, [u8; 4], u32> = hash(name, open_pinned(dir, name)?)?;
    let mut addrs: Vec<Ipv4Addr> = collect(name, map.iter())?
        .into_iter()
        .map(|(a, _)| Ipv4Addr::from(a))
        .collect();
    addrs.sort();
    Ok(addrs)
}

fn lpm<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    data: MapData,
) -> Result<LpmTrie<MapData, K, V>, MapsError> {
    LpmTrie::try_from(Map::LpmTrie(data)).map_err(|source| MapsError::Map { name, source })
}

/// A masquerade rule, ready to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasqRow {
    /// Source CIDR, e.g. `10.77.0.0/24`.
    pub source: String,
    /// Address the source is translated to.
    pub to_addr: Ipv4Addr,
    /// `"range"` when a port range is set, else `"class-preserving"`
    /// (keep the port if free, else one of the same class: 1–1023 or
    /// 1024–65535).
    pub port_mode: &'static str,
    /// First port of the SNAT range (`null` when class-preserving).
    pub port_min: Option<u16>,
    /// Last port of the SNAT range (`null` when class-preserving).
    pub port_max: Option<u16>,
}

impl MasqRow {
    /// Table header matching [`MasqRow::cells`].
    pub const HEADER: [&'static str; 3] = ["SOURCE", "TO", "PORTS"];

    /// Builds the row of one trie entry.
    pub fn new(e: &MasqEntry) -> Self {
        let class = e.rule.port_min == 0 && e.rule.port_max == 0;
        Self {
            source: format!("{}/{}", Ipv4Addr::from(e.source), e.prefix_len),
            to_addr: Ipv4Addr::from(e.rule.to_addr),
            port_mode: if class { "class-preserving" } else { "range" },
            port_min: (!class).then_some(e.rule.port_min),
            port_max: (!class).then_some(e.rule.port_max),
        }
    }

    /// The row as table cells.
    pub fn cells(&self) -> Vec<String> {
        let ports = match (self.port_min, self.port_max) {
            (Some(a), Some(b)) => port_span(a, b),
            _ => self.port_mode.to_owned(),
        };
        vec![self.source.clone(), self.to_addr.to_string(), ports]
    }
}

/// A published port or port range, ready to print: the blocks of one rule
/// merged back into one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishRow {
    /// `"tcp"` or `"udp"`.
    pub proto: String,
    /// Host address the port answers on; `0.0.0.0` = any of the host's
    /// addresses (printed as `*`).
    pub host_addr: Ipv4Addr,
    /// Whether `host_addr` means any of the host's addresses.
    pub any_host_addr: bool,
    /// First host port.
    pub host_port_min: u16,
    /// Last host port (equal to `host_port_min` for a single port).
    pub host_port_max: u16,
    /// Container address.
    pub to_addr: Ipv4Addr,
    /// Container port of `host_port_min`.
    pub to_port_min: u16,
    /// Container port of `host_port_max` (ranges map 1:1).
    pub to_port_max: u16,
    /// Trie entries (prefix-aligned port blocks) the datapath holds for it.
    pub trie_entries: usize,
    /// Whether the blocks cover exactly the range the rule was written
    /// with. `false` means the map holds only part of a rule (it was
    /// changed by hand, or is being written): the row shows what the
    /// datapath would translate.
    pub complete: bool,
}

impl PublishRow {
    /// Table header matching [`PublishRow::cells`].
    pub const HEADER: [&'static str; 3] = ["PROTO", "HOST", "CONTAINER"];

    /// The row as table cells.
    pub fn cells(&self) -> Vec<String> {
        let host = if self.any_host_addr {
            "*".to_owned()
        } else {
            self.host_addr.to_string()
        };
        let mut to = format!(
            "{}:{}",
            self.to_addr,
            port_span(self.to_port_min, self.to_port_max)
        );
        if !self.complete {
            to.push_str("  (incomplete: part of the rule's range is missing)");
        }
        vec![
            self.proto.clone(),
            format!(
                "{host}:{}",
                port_span(self.host_port_min, self.host_port_max)
            ),
            to,
        ]
    }
}

fn port_span(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// Sorts masquerade entries by source network, then prefix length, and
/// turns them into rows.
pub fn masquerade_rows(entries: &[MasqEntry]) -> Vec<MasqRow> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| (u32::from_be_bytes(e.source), e.prefix_len));
    sorted.iter().map(MasqRow::new).collect()
}

/// Merges the prefix blocks of each published rule back into rows: blocks
/// with the same protocol, host address and rule value that touch each
/// other make one row. Sorted by protocol name, host address (any first),
/// first host port.
pub fn publish_rows(entries: &[PublishEntry]) -> Vec<PublishRow> {
    type Group = (u8, [u8; 4], [u8; 4], u16, u16, u16);
    let mut blocks: Vec<(Group, u16, u16)> = entries
        .iter()
        .map(|e| {
            let r = &e.rule;
            let group = (
                e.key.proto,
                e.key.addr,
                r.to_addr,
                r.to_port,
                r.host_port_min,
                r.host_port_max,
            );
            let (lo, hi) = e.ports();
            (group, lo, hi)
        })
        .collect();
    blocks.sort();
    let mut rows: Vec<PublishRow> = Vec::new();
    let mut open: Option<(Group, u16, u16, usize)> = None;
    let flush = |run: (Group, u16, u16, usize), rows: &mut Vec<PublishRow>| {
        let ((proto, addr, to_addr, to_port, min, max), lo, hi, n) = run;
        let to_of = |p: u16| to_port.wrapping_add(p.wrapping_sub(min));
        rows.push(PublishRow {
            proto: proto_name(proto),
            host_addr: Ipv4Addr::from(addr),
            any_host_addr: addr == [0; 4],
            host_port_min: lo,
            host_port_max: hi,
            to_addr: Ipv4Addr::from(to_addr),
            to_port_min: to_of(lo),
            to_port_max: to_of(hi),
            trie_entries: n,
            complete: lo == min && hi == max,
        });
    };
    for (group, lo, hi) in blocks {
        open = match open {
            Some((g, a, b, n)) if g == group && u32::from(b) + 1 >= u32::from(lo) => {
                Some((g, a, b.max(hi), n + 1))
            }
            Some(run) => {
                flush(run, &mut rows);
                Some((group, lo, hi, 1))
            }
            None => Some((group, lo, hi, 1)),
        };
    }
    if let Some(run) = open {
        flush(run, &mut rows);
    }
    rows.sort_by(|a, b| {
        (&a.proto, u32::from(a.host_addr), a.host_port_min).cmp(&(
            &b.proto,
            u32::from(b.host_addr),
            b.host_port_min,
        ))
    });
    rows
}

/// What `netbpf nat list` shows: the NAT rules as the datapath holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatRules {
    /// Masquerade (source NAT) rules.
    pub masquerade: Vec<MasqRow>,
    /// Published ports (DNAT).
    pub publish: Vec<PublishRow>,
    /// The host addresses a published port with host address `*` answers
    /// on (read by the daemon at start).
    pub local_addrs: Vec<Ipv4Addr>,
}

impl NatRules {
    /// Reads the rules pinned in `dir`.
    pub fn read(dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            masquerade: masquerade_rows(&read_masquerade(dir)?),
            publish: publish_rows(&read_publish(dir)?),
            local_addrs: read_local_addrs(dir)?,
        })
    }

    /// The human-readable listing: two tables and a legend.
    pub fn render(&self) -> String {
        let mut out = String::from("masquerade (source NAT):\n");
        if self.masquerade.is_empty() {
            out.push_str("  none\n");
        } else {
            let cells: Vec<Vec<String>> = self.masquerade.iter().map(MasqRow::cells).collect();
            out.push_str(&indent(&crate::table::render(&MasqRow::HEADER, &cells)));
        }
        out.push_str("published ports (DNAT):\n");
        if self.publish.is_empty() {
            out.push_str("  none\n");
        } else {
            let cells: Vec<Vec<String>> = self.publish.iter().map(PublishRow::cells).collect();
            out.push_str(&indent(&crate::table::render(&PublishRow::HEADER, &cells)));
            let addrs: Vec<String> = self.local_addrs.iter().map(|a| a.to_string()).collect();
            out.push_str(&format!(
                "  * = any of the host's addresses: {}\n",
                if addrs.is_empty() {
                    "none".to_owned()
                } else {
                    addrs.join(", ")
                }
            ));
        }
        out
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbpf_common::proto;

    /// The blocks `datapath::fill_publish` writes for one rule.
    fn entries(
        p: u8,
        addr: [u8; 4],
        min: u16,
        max: u16,
        to: [u8; 4],
        to_port: u16,
    ) -> Vec<PublishEntry> {
        let rule = PublishRule {
            to_addr: to,
            to_port,
            host_port_min: min,
            host_port_max: max,
            _pad: 0,
        };
        crate::datapath::port_blocks(min, max)
            .into_iter()
            .map(|(base, bits)| PublishEntry {
                prefix_len: PUBLISH_KEY_FIXED_BITS + bits,
                key: PublishKey::new(p, addr, base),
                rule,
            })
            .collect()
    }

    #[test]
    fn blocks_merge_back_into_one_row_per_rule() {
        let c1 = [10, 77, 0, 2];
        let c2 = [10, 77, 0, 3];
        let mut all = Vec::new();
        // Stored in an order unlike the sorted one, as a trie walk may.
        all.extend(entries(proto::UDP, [0; 4], 8081, 8081, c1, 4000));
        all.extend(entries(proto::TCP, [0; 4], 9000, 9002, c2, 4000));
        all.extend(entries(proto::TCP, [127, 0, 0, 1], 8090, 8090, c1, 4000));
        all.extend(entries(proto::TCP, [0; 4], 8081, 8081, c1, 4000));
        all.extend(entries(
            proto::TCP,
            [203, 0, 113, 1],
            20000,
            30000,
            c2,
            20000,
        ));
        all.reverse();
        let rows = publish_rows(&all);
        let text: Vec<Vec<String>> = rows.iter().map(PublishRow::cells).collect();
        assert_eq!(
            text,
            vec![
                vec!["tcp", "*:8081", "10.77.0.2:4000"],
                vec!["tcp", "*:9000-9002", "10.77.0.3:4000-4002"],
                vec!["tcp", "127.0.0.1:8090", "10.77.0.2:4000"],
                vec!["tcp", "203.0.113.1:20000-30000", "10.77.0.3:20000-30000"],
                vec!["udp", "*:8081", "10.77.0.2:4000"],
            ]
        );
        assert!(rows.iter().all(|r| r.complete));
        assert_eq!(
            rows[3].trie_entries,
            crate::datapath::port_blocks(20000, 30000).len()
        );
        assert!(rows[3].trie_entries > 1);
        assert_eq!(rows[1].trie_entries, 2, "9000-9001 and 9002");
    }

    #[test]
    fn a_partial_range_is_shown_as_held_and_flagged() {
        let mut e = entries(proto::TCP, [0; 4], 9000, 9002, [10, 77, 0, 3], 4000);
        // Drop the block for 9000-9001: only 9002 remains.
        e.retain(|b| b.ports() == (9002, 9002));
        let rows = publish_rows(&e);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].host_port_min, rows[0].host_port_max), (9002, 9002));
        assert_eq!((rows[0].to_port_min, rows[0].to_port_max), (4002, 4002));
        assert!(!rows[0].complete);
    }

    #[test]
    fn masquerade_rows_sort_and_name_the_port_mode() {
        let rule = |port_min, port_max| MasqRule {
            to_addr: [203, 0, 113, 1],
            port_min,
            port_max,
        };
        let rows = masquerade_rows(&[
            MasqEntry {
                prefix_len: 24,
                source: [10, 78, 0, 0],
                rule: rule(61000, 65535),
            },
            MasqEntry {
                prefix_len: 16,
                source: [10, 77, 0, 0],
                rule: rule(0, 0),
            },
        ]);
        let text: Vec<Vec<String>> = rows.iter().map(MasqRow::cells).collect();
        assert_eq!(
            text,
            vec![
                vec!["10.77.0.0/16", "203.0.113.1", "class-preserving"],
                vec!["10.78.0.0/24", "203.0.113.1", "61000-65535"],
            ]
        );
        assert_eq!(rows[0].port_min, None);
        assert_eq!(rows[1].port_mode, "range");
    }
}
