//! The datapath's maps as userspace sees them: pinned under a bpffs
//! directory, opened by name, typed with the layouts from `netbpf-common`.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use netbpf_common::{
    Counter, Endpoint, FlowKey, FlowValue, MappingValue, PORT_PROBE_BUCKETS, map_names,
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
