//! The datapath's maps as userspace sees them: pinned under a bpffs
//! directory, opened by name, typed with the layouts from `netbpf-common`.

use std::{
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError, MapInfo, PerCpuArray, lpm_trie::Key};
use netbpf_common::{
    Counter, Endpoint, FlowKey, FlowValue, MappingValue, MasqPrefix, MasqRule, PORT_PROBE_BUCKETS,
    PublishKey, PublishRule, map_names, proto,
};
use serde::Serialize;

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

/// The capacity (`max_entries`) of a pinned map, as the kernel reports it.
pub fn capacity(dir: &Path, name: &'static str) -> Result<u32, MapsError> {
    let path = pin_path(dir, name);
    if !path.exists() {
        return Err(MapsError::NotPinned {
            dir: dir.to_owned(),
            name,
        });
    }
    MapInfo::from_pin(&path)
        .map(|info| info.max_entries())
        .map_err(|source| MapsError::Map { name, source })
}

/// Removes every netbpf pin in `dir` (links first, which detaches the
/// programs, then maps) and the directory itself if empty.
pub fn unpin_all(dir: &Path) -> Result<(), MapsError> {
    crate::pins::down(dir).map(|_| ()).map_err(|e| match e {
        crate::pins::PinsError::Io { path, source } => MapsError::Io { path, source },
        other => MapsError::Io {
            path: dir.to_owned(),
            source: io::Error::other(other.to_string()),
        },
    })
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
        batch_or_walk(map_names::CONNTRACK, &self.conntrack)
    }

    /// Every mapping, as read now.
    pub fn mapping_entries(&self) -> Result<Vec<(Endpoint, MappingValue)>, MapsError> {
        batch_or_walk(map_names::NAT_MAPPINGS, &self.mappings)
    }

    /// Every reverse entry, as read now.
    pub fn reverse_entries(&self) -> Result<Vec<(Endpoint, Endpoint)>, MapsError> {
        batch_or_walk(map_names::NAT_REVERSE, &self.reverse)
    }
}

/// Converts a map into a typed hash map.
fn hash<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    data: MapData,
) -> Result<HashMap<MapData, K, V>, MapsError> {
    HashMap::try_from(Map::HashMap(data)).map_err(|source| MapsError::Map { name, source })
}

/// Protocol name: "tcp", "udp", "icmp", or the number.
pub fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        other => other.to_string(),
    }
}

/// Every entry of a hash map: in a few batch calls where the kernel has
/// them (crate::batch), else walked key by key.
fn batch_or_walk<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    map: &HashMap<MapData, K, V>,
) -> Result<Vec<(K, V)>, MapsError> {
    match crate::batch::entries(map) {
        Ok(Some(entries)) => Ok(entries),
        Ok(None) | Err(_) => collect(name, map.iter()),
    }
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
        self.key.ports(self.prefix_len)
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

/// The `[inbound]` policies the datapath holds (`SETTINGS`); the defaults
/// of a datapath pinned before the map existed.
pub fn read_settings(dir: &Path) -> Result<netbpf_common::Settings, MapsError> {
    let name = map_names::SETTINGS;
    let data = match open_pinned(dir, name) {
        Ok(data) => data,
        Err(MapsError::NotPinned { .. }) => return Ok(netbpf_common::Settings::default()),
        Err(e) => return Err(e),
    };
    let array: aya::maps::Array<MapData, netbpf_common::Settings> =
        aya::maps::Array::try_from(Map::Array(data))
            .map_err(|source| MapsError::Map { name, source })?;
    array
        .get(&0, 0)
        .map_err(|source| MapsError::Map { name, source })
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

// ---------------------------------------------------------------------------
// Table fill and port use: `netbpf stats`, metrics
// ---------------------------------------------------------------------------

/// How full one of the datapath's hash maps is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableFill {
    /// Pinned map name, e.g. `CONNTRACK`.
    pub table: &'static str,
    /// Entries it holds now.
    pub entries: u64,
    /// Entries it can hold (`max_entries`, from the kernel's map info).
    pub capacity: u32,
}

impl TableFill {
    /// Percentage of the capacity in use.
    pub fn percent(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.entries as f64 * 100.0 / f64::from(self.capacity)
        }
    }
}

/// How many outside ports (or ICMP identifiers) of one outside address and
/// protocol are held by NAT mappings, out of how many the masquerade rules
/// allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortUse {
    /// Outside address (a masquerade rule's `to` address).
    pub addr: Ipv4Addr,
    /// `"tcp"`, `"udp"` or `"icmp"`.
    pub proto: String,
    /// Ports held (entries of `NAT_REVERSE`).
    pub used: u64,
    /// Ports the rules for this address allow (the union of their ranges;
    /// published ports inside it are not subtracted).
    pub available: u64,
    /// The ranges, e.g. `61000-65535`, or `class-preserving` (1–65535,
    /// ICMP identifiers 0–65535).
    pub ranges: String,
}

/// Flows of one protocol in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateCount {
    /// `"tcp"`, `"udp"` or `"icmp"`.
    pub proto: String,
    /// The derived state, as `conntrack list` prints it.
    pub state: &'static str,
    /// How many flows.
    pub flows: u64,
}

/// Table fill, port use and flows by state, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Occupancy {
    /// `CONNTRACK`, `NAT_MAPPINGS`, `NAT_REVERSE`.
    pub tables: Vec<TableFill>,
    /// One row per outside address and protocol.
    pub ports: Vec<PortUse>,
    /// Flows by protocol and state, sorted.
    pub flow_states: Vec<StateCount>,
}

impl Occupancy {
    /// Reads the maps pinned in `dir`.
    pub fn read(dir: &Path) -> Result<Self, MapsError> {
        let nat = NatMaps::open_pinned(dir)?;
        let flows = nat.flows()?;
        let mappings = nat.mapping_entries()?.len() as u64;
        let reverse = nat.reverse_entries()?;
        let fill = |table: &'static str, entries: u64| -> Result<TableFill, MapsError> {
            Ok(TableFill {
                table,
                entries,
                capacity: capacity(dir, table)?,
            })
        };
        let tables = vec![
            fill(map_names::CONNTRACK, flows.len() as u64)?,
            fill(map_names::NAT_MAPPINGS, mappings)?,
            fill(map_names::NAT_REVERSE, reverse.len() as u64)?,
        ];
        let masq = read_masquerade(dir)?;
        Ok(Self {
            tables,
            ports: port_use(&masq, &reverse),
            flow_states: flow_states(&flows),
        })
    }

    /// The human-readable form: table fill, then port use per address.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .tables
            .iter()
            .map(|t| {
                vec![
                    t.table.to_owned(),
                    t.entries.to_string(),
                    t.capacity.to_string(),
                    format!("{:.1}%", t.percent()),
                ]
            })
            .collect();
        let mut out = crate::table::render(&["TABLE", "ENTRIES", "CAPACITY", "USE"], &rows);
        out.push('\n');
        if self.ports.is_empty() {
            out.push_str("outside ports: no masquerade rules\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .ports
                .iter()
                .map(|p| {
                    let pct = if p.available == 0 {
                        0.0
                    } else {
                        p.used as f64 * 100.0 / p.available as f64
                    };
                    vec![
                        p.addr.to_string(),
                        p.proto.clone(),
                        p.used.to_string(),
                        p.available.to_string(),
                        format!("{pct:.1}%"),
                        p.ranges.clone(),
                    ]
                })
                .collect();
            out.push_str(&crate::table::render(
                &[
                    "OUTSIDE",
                    "PROTO",
                    "PORTS USED",
                    "AVAILABLE",
                    "USE",
                    "RANGE",
                ],
                &rows,
            ));
        }
        out
    }
}

/// The port ranges a masquerade rule allows for `proto`, inclusive.
fn rule_ranges(rule: &MasqRule, p: u8) -> Vec<(u32, u32)> {
    if rule.port_min != 0 || rule.port_max != 0 {
        return vec![(u32::from(rule.port_min), u32::from(rule.port_max))];
    }
    match p {
        proto::ICMP => vec![(0, 65535)],
        // 1-1023 for privileged source ports, 1024-65535 for the rest.
        _ => vec![(1, 65535)],
    }
}

/// Size of the union of inclusive ranges.
fn union_size(mut ranges: Vec<(u32, u32)>) -> u64 {
    ranges.retain(|(a, b)| a <= b);
    ranges.sort();
    let mut total = 0u64;
    let mut open: Option<(u32, u32)> = None;
    for (a, b) in ranges {
        open = match open {
            Some((x, y)) if a <= y.saturating_add(1) => Some((x, y.max(b))),
            Some((x, y)) => {
                total += u64::from(y - x) + 1;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((x, y)) = open {
        total += u64::from(y - x) + 1;
    }
    total
}

/// Port use per outside address and protocol: every address a masquerade
/// rule translates to gets a row for TCP, UDP and ICMP; an address that
/// holds ports without a rule (rules changed by hand) gets rows too.
pub fn port_use(masq: &[MasqEntry], reverse: &[(Endpoint, Endpoint)]) -> Vec<PortUse> {
    use std::collections::BTreeMap;
    let protos = [proto::TCP, proto::UDP, proto::ICMP];
    /// Ports held, the rules' ranges, the ranges as written.
    type Row = (u64, Vec<(u32, u32)>, Vec<String>);
    let mut rows: BTreeMap<(u32, u8), Row> = BTreeMap::new();
    for e in masq {
        let addr = u32::from_be_bytes(e.rule.to_addr);
        let class = e.rule.port_min == 0 && e.rule.port_max == 0;
        let label = if class {
            "class-preserving".to_owned()
        } else {
            port_span(e.rule.port_min, e.rule.port_max)
        };
        for p in protos {
            let row = rows.entry((addr, p)).or_default();
            row.1.extend(rule_ranges(&e.rule, p));
            if !row.2.contains(&label) {
                row.2.push(label.clone());
            }
        }
    }
    for (outside, _) in reverse {
        let addr = u32::from_be_bytes(outside.addr);
        rows.entry((addr, outside.proto)).or_default().0 += 1;
    }
    let order = |p: u8| protos.iter().position(|q| *q == p).unwrap_or(protos.len());
    let mut out: Vec<PortUse> = rows
        .into_iter()
        .map(|((addr, p), (used, ranges, labels))| PortUse {
            addr: Ipv4Addr::from(addr),
            proto: proto_name(p),
            used,
            available: union_size(ranges),
            ranges: if labels.is_empty() {
                "none (no rule)".to_owned()
            } else {
                labels.join(",")
            },
        })
        .collect();
    out.sort_by_key(|r| {
        (
            u32::from(r.addr),
            order(match r.proto.as_str() {
                "tcp" => proto::TCP,
                "udp" => proto::UDP,
                "icmp" => proto::ICMP,
                _ => 0,
            }),
        )
    });
    out
}

/// Flows counted by protocol and derived state, sorted.
pub fn flow_states(flows: &[(FlowKey, FlowValue)]) -> Vec<StateCount> {
    use std::collections::BTreeMap;
    let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for (k, v) in flows {
        let state = netbpf_common::FlowState::of(k.proto, v.flags).name();
        *counts.entry((proto_name(k.proto), state)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((proto, state), flows)| StateCount {
            proto,
            state,
            flows,
        })
        .collect()
}

impl Stats {
    /// The human-readable counters: one row per counter, then the
    /// port-probe histogram on one line.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .counters
            .iter()
            .map(|(k, v)| vec![(*k).to_owned(), v.to_string()])
            .collect();
        let mut out = crate::table::render(&["COUNTER", "VALUE"], &rows);
        let probes: Vec<String> = self
            .port_probes
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| format!("{i}:{n}"))
            .collect();
        out.push_str(&format!(
            "port allocations by probes needed (last bucket = failed): {}\n",
            if probes.is_empty() {
                "none".to_owned()
            } else {
                probes.join(" ")
            }
        ));
        out
    }

    /// The JSON form: `{"counters": {name: value, ...}, "port_probes": [...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let counters: serde_json::Map<String, serde_json::Value> = self
            .counters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        serde_json::json!({ "counters": counters, "port_probes": self.port_probes })
    }
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
        let rule = PublishRule::new(to, to_port, min, max);
        netbpf_common::publish_blocks(p, addr, min, max)
            .map(|(prefix_len, key)| PublishEntry {
                prefix_len,
                key,
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
            netbpf_common::publish_blocks(proto::TCP, [0; 4], 20000, 30000).count()
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
    fn port_use_counts_held_ports_against_the_rule_ranges() {
        let to = [203, 0, 113, 1];
        let masq = [
            MasqEntry {
                prefix_len: 24,
                source: [10, 77, 0, 0],
                rule: MasqRule {
                    to_addr: to,
                    port_min: 61000,
                    port_max: 61999,
                },
            },
            MasqEntry {
                prefix_len: 24,
                source: [10, 78, 0, 0],
                rule: MasqRule {
                    to_addr: to,
                    port_min: 61500,
                    port_max: 62499,
                },
            },
            MasqEntry {
                prefix_len: 16,
                source: [10, 79, 0, 0],
                rule: MasqRule {
                    to_addr: [198, 51, 100, 1],
                    port_min: 0,
                    port_max: 0,
                },
            },
        ];
        let inside = Endpoint::new(proto::TCP, [10, 77, 0, 2], 1);
        let reverse = vec![
            (Endpoint::new(proto::TCP, to, 61000), inside),
            (Endpoint::new(proto::TCP, to, 61001), inside),
            (Endpoint::new(proto::UDP, to, 61002), inside),
            (Endpoint::new(proto::ICMP, [198, 51, 100, 1], 7), inside),
        ];
        let rows = port_use(&masq, &reverse);
        let text: Vec<(String, &str, u64, u64, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.addr.to_string(),
                    r.proto.as_str(),
                    r.used,
                    r.available,
                    r.ranges.as_str(),
                )
            })
            .collect();
        assert_eq!(
            text,
            vec![
                ("198.51.100.1".into(), "tcp", 0, 65535, "class-preserving"),
                ("198.51.100.1".into(), "udp", 0, 65535, "class-preserving"),
                ("198.51.100.1".into(), "icmp", 1, 65536, "class-preserving"),
                (
                    "203.0.113.1".into(),
                    "tcp",
                    2,
                    1500,
                    "61000-61999,61500-62499"
                ),
                (
                    "203.0.113.1".into(),
                    "udp",
                    1,
                    1500,
                    "61000-61999,61500-62499"
                ),
                (
                    "203.0.113.1".into(),
                    "icmp",
                    0,
                    1500,
                    "61000-61999,61500-62499"
                ),
            ]
        );
    }

    #[test]
    fn flow_states_count_by_proto_and_state() {
        use netbpf_common::flow_flags::*;
        let flow = |p, flags| {
            (
                FlowKey::new(p, [10, 77, 0, 2], 1, [1, 1, 1, 1], 2),
                FlowValue {
                    flags,
                    ..Default::default()
                },
            )
        };
        let counts = flow_states(&[
            flow(proto::TCP, SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | ACK_OUT),
            flow(proto::TCP, SEEN_OUT | SYN_OUT),
            flow(proto::TCP, SEEN_OUT | SYN_OUT | SEEN_IN | SYN_IN | ACK_OUT),
            flow(proto::UDP, SEEN_OUT),
        ]);
        let text: Vec<(&str, &str, u64)> = counts
            .iter()
            .map(|c| (c.proto.as_str(), c.state, c.flows))
            .collect();
        assert_eq!(
            text,
            vec![
                ("tcp", "ESTABLISHED", 2),
                ("tcp", "SYN_SENT", 1),
                ("udp", "UDP", 1)
            ]
        );
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
