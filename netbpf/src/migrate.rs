//! Pinned maps whose layout no longer matches this binary: what a restart
//! does with them instead of refusing to start.
//!
//! A datapath pinned by an older netbpf, or with another `[conntrack]
//! capacity`, has maps the new object cannot reuse as they are. The loader
//! asks [`take`] for each such map (by name and pin path):
//!
//! * Counters (`STATS`, `PORT_PROBES`): the pin is dropped and counting
//!   starts again (a version that adds counters makes `STATS` longer).
//! * The NAT state (`CONNTRACK`, `CONNTRACK_REPLY`, `NAT_MAPPINGS`,
//!   `NAT_REVERSE`): its entries
//!   are read, the pin is dropped, and once the new object is loaded
//!   [`restore`] writes them into the new map (flows of the 64-byte layout
//!   of the first version get zero acknowledgment numbers: "not seen").
//!   A datapath from before reply halves has no `CONNTRACK_REPLY`: the
//!   loader makes it empty, and the tc program writes each carried flow's
//!   half at the flow's next inbound packet (`netbpf_common::reply`).
//!   Entries the old programs make between the read and the swap of the
//!   programs are lost; a new map smaller than the entries keeps those that
//!   fit.
//! * Anything else: not migratable; the loader refuses as before.

use std::path::Path;

use aya::{
    Ebpf, Pod,
    maps::{HashMap, Map, MapData, MapError},
};
use netbpf_common::{Endpoint, FlowKey, FlowValue, MappingValue, ReplyKey, ReplyValue, map_names};
use thiserror::Error;

use crate::pins::{self, PinsError};

/// What [`take`] kept of a map, for [`restore`].
#[derive(Debug)]
pub enum Carried {
    /// Nothing to put back (counters).
    Nothing,
    /// Conntrack flows.
    Flows(Vec<(FlowKey, FlowValue)>),
    /// Their reply halves.
    Replies(Vec<(ReplyKey, ReplyValue)>),
    /// NAT mappings, inside → outside.
    Mappings(Vec<(Endpoint, MappingValue)>),
    /// Reverse entries, outside → inside.
    Reverse(Vec<(Endpoint, Endpoint)>),
}

/// Why a pinned map could not be migrated.
#[derive(Debug, Error)]
pub enum MigrateError {
    /// This map's contents cannot be carried over or dropped.
    #[error("{name}: no migration for this map")]
    NotMigratable {
        /// The map.
        name: String,
    },
    /// Its old layout is not one this version knows.
    #[error("{name}: unknown old layout (key {key_size} B, value {value_size} B)")]
    UnknownLayout {
        /// The map.
        name: String,
        /// Old key size.
        key_size: u32,
        /// Old value size.
        value_size: u32,
    },
    /// Reading the old map or writing the new one failed.
    #[error("{name}")]
    Map {
        /// The map.
        name: String,
        /// What failed.
        #[source]
        source: MapError,
    },
    /// Removing the old pin failed.
    #[error(transparent)]
    Pins(#[from] PinsError),
}

/// Size of `FlowValue` in the first version (no acknowledgment numbers).
const FLOW_VALUE_V1: usize = 64;

/// Reads what is worth keeping of the pinned map `name` at `path` and
/// removes the pin, so the loader creates the map anew.
pub fn take(name: &str, path: &Path) -> Result<Carried, MigrateError> {
    let map_err = |source| MigrateError::Map {
        name: name.to_owned(),
        source,
    };
    let carried = match name {
        map_names::STATS | map_names::PORT_PROBES => Carried::Nothing,
        map_names::CONNTRACK
        | map_names::CONNTRACK_REPLY
        | map_names::NAT_MAPPINGS
        | map_names::NAT_REVERSE => {
            let data = MapData::from_pin(path).map_err(map_err)?;
            let info = data.info().map_err(map_err)?;
            let (key_size, value_size) = (info.key_size(), info.value_size());
            let map = Map::from_map_data(data).map_err(map_err)?;
            let unknown = || MigrateError::UnknownLayout {
                name: name.to_owned(),
                key_size,
                value_size,
            };
            match (name, value_size as usize) {
                (map_names::CONNTRACK, FLOW_VALUE_V1) => Carried::Flows(
                    entries::<FlowKey, [u8; FLOW_VALUE_V1]>(map)
                        .map_err(|_| unknown())?
                        .into_iter()
                        .map(|(k, v)| (k, flow_from_v1(&v)))
                        .collect(),
                ),
                (map_names::CONNTRACK, n) if n == size_of::<FlowValue>() => {
                    Carried::Flows(entries(map).map_err(|_| unknown())?)
                }
                (map_names::CONNTRACK_REPLY, n) if n == size_of::<ReplyValue>() => {
                    Carried::Replies(entries(map).map_err(|_| unknown())?)
                }
                (map_names::NAT_MAPPINGS, n) if n == size_of::<MappingValue>() => {
                    Carried::Mappings(entries(map).map_err(|_| unknown())?)
                }
                (map_names::NAT_REVERSE, n) if n == size_of::<Endpoint>() => {
                    Carried::Reverse(entries(map).map_err(|_| unknown())?)
                }
                _ => return Err(unknown()),
            }
        }
        other => {
            return Err(MigrateError::NotMigratable {
                name: other.to_owned(),
            });
        }
    };
    pins::remove_file(path)?;
    Ok(carried)
}

/// A flow of the first version's layout: the same fields, no
/// acknowledgment numbers yet.
fn flow_from_v1(old: &[u8; FLOW_VALUE_V1]) -> FlowValue {
    let mut bytes = [0u8; size_of::<FlowValue>()];
    bytes[..FLOW_VALUE_V1].copy_from_slice(old);
    // SAFETY: FlowValue is repr(C) plain integers and byte arrays (every
    // bit pattern is valid), exactly `bytes.len()` long; read_unaligned
    // copes with the array's alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlowValue>()) }
}

/// Writes what [`take`] kept into the freshly loaded map. Returns how many
/// entries were written (a smaller new map keeps those that fit).
pub fn restore(ebpf: &mut Ebpf, name: &str, carried: Carried) -> Result<usize, MigrateError> {
    let map_err = |source| MigrateError::Map {
        name: name.to_owned(),
        source,
    };
    if matches!(carried, Carried::Nothing) {
        return Ok(0);
    }
    let map = ebpf.map_mut(name).ok_or_else(|| MigrateError::Map {
        name: name.to_owned(),
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })?;
    match carried {
        Carried::Nothing => Ok(0),
        Carried::Flows(e) => insert_all(map, &e),
        Carried::Replies(e) => insert_all(map, &e),
        Carried::Mappings(e) => insert_all(map, &e),
        Carried::Reverse(e) => insert_all(map, &e),
    }
    .map_err(map_err)
}

/// Every entry of `map`, a hash map of `K` to `V` (entries that cannot be
/// read are left out).
fn entries<K: Pod, V: Pod>(map: Map) -> Result<Vec<(K, V)>, MapError> {
    let old: HashMap<_, K, V> = HashMap::try_from(map)?;
    Ok(old.iter().filter_map(Result::ok).collect())
}

/// Inserts `entries` into `map`, a hash map of `K` to `V`; returns how many
/// went in.
fn insert_all<K: Pod, V: Pod>(map: &mut Map, entries: &[(K, V)]) -> Result<usize, MapError> {
    let mut m: HashMap<_, K, V> = HashMap::try_from(map)?;
    Ok(entries
        .iter()
        .filter(|(k, v)| m.insert(k, v, 0).is_ok())
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_version_flow_keeps_every_field_and_gets_no_acks() {
        let v2 = FlowValue {
            outside_addr: [203, 0, 113, 1],
            outside_port: 40000,
            flags: 0x1ff,
            created_ns: 1,
            last_seen_ns: 2,
            packets_out: 3,
            bytes_out: 4,
            packets_in: 5,
            bytes_in: 6,
            ..Default::default()
        };
        let mut v1 = [0u8; FLOW_VALUE_V1];
        // SAFETY: FlowValue is plain data at least FLOW_VALUE_V1 long.
        let raw = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(&v2).cast::<u8>(), FLOW_VALUE_V1)
        };
        v1.copy_from_slice(raw);
        assert_eq!(flow_from_v1(&v1), v2);
    }
}
