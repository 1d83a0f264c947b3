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
    PublishKey, PublishRule, ReplyKey, ReplyValue, map_names, proto,
};

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

/// Whether a map operation failed only because the key was not there.
/// aya reports that as `KeyNotFound` for a lookup but as the syscall's
/// `ENOENT` for a delete.
pub fn is_absent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// `r`, with "the key was not there" ([`is_absent`]) as success: for
/// deletes whose goal is that the key is gone.
pub fn absent_ok(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(e) if is_absent(&e) => Ok(()),
        other => other,
    }
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
    /// Flows (their outbound halves).
    pub conntrack: HashMap<MapData, FlowKey, FlowValue>,
    /// The flows' reply halves; `None` for a datapath pinned by a netbpf
    /// from before them.
    pub replies: Option<HashMap<MapData, ReplyKey, ReplyValue>>,
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
            replies: match open_pinned(dir, map_names::CONNTRACK_REPLY) {
                Ok(data) => Some(hash(map_names::CONNTRACK_REPLY, data)?),
                Err(MapsError::NotPinned { .. }) => None,
                Err(e) => return Err(e),
            },
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
pub(crate) fn batch_or_walk<K: aya::Pod, V: aya::Pod>(
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
