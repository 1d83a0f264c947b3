//! Where explain reads the datapath's state from: the live pinned maps, or
//! maps held in memory (tests), and the rule maps ([`Rules`]) with the
//! same lookups the kernel makes (through netbpf-common).

use std::{collections::HashMap, net::Ipv4Addr, path::Path};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use netbpf_common::{
    ContainerEntry, ContainerIf, Endpoint, FlowKey, FlowValue, MappingValue, Neighbour, PublishKey,
    PublishRule, RouteUplink, map_names,
};

use crate::maps::{self, MapsError, MasqEntry, NatMaps, PublishEntry};

use super::model::*;

/// Point lookups in the hash maps the programs use.
pub trait Lookup {
    /// `CONNTRACK`.
    fn flow(&self, key: &FlowKey) -> Option<FlowValue>;
    /// `NAT_MAPPINGS`.
    fn mapping(&self, inside: &Endpoint) -> Option<MappingValue>;
    /// `NAT_REVERSE`.
    fn reverse(&self, outside: &Endpoint) -> Option<Endpoint>;
    /// `CONTAINERS` (routed containers by address).
    fn container(&self, addr: Ipv4Addr) -> Option<ContainerEntry>;
    /// `CONTAINER_IFS` (routed containers by veth).
    fn container_if(&self, ifindex: u32) -> Option<ContainerIf>;
    /// `NEIGHBOURS` (next hops on the uplink).
    fn neighbour(&self, addr: Ipv4Addr) -> Option<Neighbour>;
    /// `ROUTE_UPLINK[0]`.
    fn route_uplink(&self) -> Option<RouteUplink>;
    /// The kernel's forwarding decision for `src` → `dst` arriving on
    /// `iif` (what `bpf_fib_lookup` answers; not a map).
    fn fib(&self, src: Ipv4Addr, dst: Ipv4Addr, iif: u32) -> Fib;
}

/// The kernel's forwarding decision for a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fib {
    /// Forwarded out of `ifindex`, to `gateway` (on-link when `None`).
    Via {
        /// Output interface.
        ifindex: u32,
        /// Next hop, if not the destination itself.
        gateway: Option<Ipv4Addr>,
    },
    /// Not forwarded (local, unreachable, blackhole, ...): the kernel's
    /// words.
    NotForwarded(String),
    /// Could not be asked.
    Unknown(String),
}

impl Lookup for NatMaps {
    fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        NatMaps::flow(self, key)
    }
    fn mapping(&self, inside: &Endpoint) -> Option<MappingValue> {
        self.mappings.get(inside, 0).ok()
    }
    fn reverse(&self, outside: &Endpoint) -> Option<Endpoint> {
        self.reverse.get(outside, 0).ok()
    }
    fn container(&self, _: Ipv4Addr) -> Option<ContainerEntry> {
        None
    }
    fn container_if(&self, _: u32) -> Option<ContainerIf> {
        None
    }
    fn neighbour(&self, _: Ipv4Addr) -> Option<Neighbour> {
        None
    }
    fn route_uplink(&self) -> Option<RouteUplink> {
        None
    }
    fn fib(&self, _: Ipv4Addr, _: Ipv4Addr, _: u32) -> Fib {
        Fib::Unknown("routing maps not opened".into())
    }
}

/// The live maps pinned by a running daemon: NAT, and routing if pinned.
pub struct LiveMaps {
    /// The NAT maps.
    pub nat: NatMaps,
    containers: Option<BpfHashMap<MapData, [u8; 4], ContainerEntry>>,
    ifs: Option<BpfHashMap<MapData, u32, ContainerIf>>,
    neighbours: Option<BpfHashMap<MapData, [u8; 4], Neighbour>>,
    uplink: Option<RouteUplink>,
}

impl LiveMaps {
    /// Opens the maps pinned in `dir` (routing maps a datapath without
    /// them does not pin are left out: nothing is routed).
    pub fn open_pinned(dir: &Path) -> Result<Self, MapsError> {
        let nat = NatMaps::open_pinned(dir)?;
        let hash = |name: &'static str| maps::open_pinned(dir, name).ok().map(Map::HashMap);
        let uplink = maps::open_pinned(dir, map_names::ROUTE_UPLINK)
            .ok()
            .and_then(|m| Array::<MapData, RouteUplink>::try_from(Map::Array(m)).ok())
            .and_then(|a| a.get(&0, 0).ok());
        Ok(Self {
            nat,
            containers: hash(map_names::CONTAINERS).and_then(|m| BpfHashMap::try_from(m).ok()),
            ifs: hash(map_names::CONTAINER_IFS).and_then(|m| BpfHashMap::try_from(m).ok()),
            neighbours: hash(map_names::NEIGHBOURS).and_then(|m| BpfHashMap::try_from(m).ok()),
            uplink,
        })
    }
}

impl Lookup for LiveMaps {
    fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.nat.flow(key)
    }
    fn mapping(&self, inside: &Endpoint) -> Option<MappingValue> {
        self.nat.mapping(inside)
    }
    fn reverse(&self, outside: &Endpoint) -> Option<Endpoint> {
        self.nat.reverse(outside)
    }
    fn container(&self, addr: Ipv4Addr) -> Option<ContainerEntry> {
        self.containers.as_ref()?.get(&addr.octets(), 0).ok()
    }
    fn container_if(&self, ifindex: u32) -> Option<ContainerIf> {
        self.ifs.as_ref()?.get(&ifindex, 0).ok()
    }
    fn neighbour(&self, addr: Ipv4Addr) -> Option<Neighbour> {
        self.neighbours.as_ref()?.get(&addr.octets(), 0).ok()
    }
    fn route_uplink(&self) -> Option<RouteUplink> {
        self.uplink
    }
    fn fib(&self, src: Ipv4Addr, dst: Ipv4Addr, iif: u32) -> Fib {
        ip_route_get(src, dst, iif)
    }
}

/// Asks the kernel (`ip -4 -o route get DST from SRC iif IFACE`) how it
/// forwards a packet: the same FIB `bpf_fib_lookup` reads, with the input
/// interface's forwarding and reverse-path checks (not the MTU check).
pub(super) fn ip_route_get(src: Ipv4Addr, dst: Ipv4Addr, iif: u32) -> Fib {
    let iface = ifname(iif);
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "route", "get"])
        .arg(dst.to_string())
        .arg("from")
        .arg(src.to_string())
        .arg("iif")
        .arg(&iface)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return Fib::Unknown(format!("running ip route get: {e}")),
    };
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Fib::NotForwarded(err);
    }
    parse_route_get(&text)
}

/// Parses one line of `ip -o route get` output.
pub fn parse_route_get(text: &str) -> Fib {
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |w: &str| {
        words
            .iter()
            .position(|x| *x == w)
            .and_then(|i| words.get(i + 1))
            .copied()
    };
    if let Some(kind) = words.first()
        && [
            "local",
            "broadcast",
            "multicast",
            "unreachable",
            "blackhole",
            "prohibit",
            "throw",
        ]
        .contains(kind)
    {
        return Fib::NotForwarded(format!("{kind} route: {text}"));
    }
    let Some(dev) = after("dev") else {
        return Fib::Unknown(format!("no output interface in {text:?}"));
    };
    let Ok(ifindex) = crate::netdev::ifindex(dev) else {
        return Fib::Unknown(format!("interface {dev} of {text:?} is gone"));
    };
    Fib::Via {
        ifindex,
        gateway: after("via").and_then(|g| g.parse().ok()),
    }
}

/// In-memory maps (tests).
#[derive(Debug, Default, Clone)]
pub struct MemMaps {
    /// Flows.
    pub flows: HashMap<FlowKey, FlowValue>,
    /// Mappings.
    pub mappings: HashMap<Endpoint, MappingValue>,
    /// Reverse entries.
    pub reverse: HashMap<Endpoint, Endpoint>,
    /// Routed containers.
    pub containers: HashMap<Ipv4Addr, ContainerEntry>,
    /// Routed veths.
    pub container_ifs: HashMap<u32, ContainerIf>,
    /// Neighbours.
    pub neighbours: HashMap<Ipv4Addr, Neighbour>,
    /// The uplink entry.
    pub route_uplink: Option<RouteUplink>,
    /// FIB answers by destination (default: unknown).
    pub fib: HashMap<Ipv4Addr, Fib>,
}

impl Lookup for MemMaps {
    fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key).copied()
    }
    fn mapping(&self, inside: &Endpoint) -> Option<MappingValue> {
        self.mappings.get(inside).copied()
    }
    fn reverse(&self, outside: &Endpoint) -> Option<Endpoint> {
        self.reverse.get(outside).copied()
    }
    fn container(&self, addr: Ipv4Addr) -> Option<ContainerEntry> {
        self.containers.get(&addr).copied()
    }
    fn container_if(&self, ifindex: u32) -> Option<ContainerIf> {
        self.container_ifs.get(&ifindex).copied()
    }
    fn neighbour(&self, addr: Ipv4Addr) -> Option<Neighbour> {
        self.neighbours.get(&addr).copied()
    }
    fn route_uplink(&self) -> Option<RouteUplink> {
        self.route_uplink
    }
    fn fib(&self, _: Ipv4Addr, dst: Ipv4Addr, _: u32) -> Fib {
        self.fib
            .get(&dst)
            .cloned()
            .unwrap_or_else(|| Fib::Unknown("no FIB answer in the test".into()))
    }
}

/// The rule maps (small, read whole) and how full the hash maps are.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// `MASQ_RULES` entries.
    pub masquerade: Vec<MasqEntry>,
    /// `PUBLISH` entries (blocks).
    pub publish: Vec<PublishEntry>,
    /// `LOCAL_ADDRS`.
    pub local_addrs: Vec<Ipv4Addr>,
    /// Whether `CONNTRACK` is full (a new flow would fail).
    pub conntrack_full: bool,
    /// Whether `NAT_MAPPINGS` is full (a new mapping would fail).
    pub mappings_full: bool,
    /// The `[inbound]` policies (`SETTINGS`).
    pub settings: netbpf_common::Settings,
}

impl Rules {
    /// Reads the rule maps pinned in `dir` and the fill of the hash maps.
    pub fn read(dir: &Path, nat: &NatMaps) -> Result<Self, MapsError> {
        let full = |name: &'static str, entries: usize| -> Result<bool, MapsError> {
            Ok(entries as u64 >= u64::from(maps::capacity(dir, name)?))
        };
        Ok(Self {
            masquerade: maps::read_masquerade(dir)?,
            publish: maps::read_publish(dir)?,
            local_addrs: maps::read_local_addrs(dir)?,
            conntrack_full: full(map_names::CONNTRACK, nat.flows()?.len())?,
            mappings_full: full(map_names::NAT_MAPPINGS, nat.mapping_entries()?.len())?,
            settings: maps::read_settings(dir)?,
        })
    }

    /// The longest masquerade prefix holding `addr` (the trie's lookup).
    pub fn masq(&self, addr: Ipv4Addr) -> Option<&MasqEntry> {
        self.masquerade
            .iter()
            .filter(|e| {
                let bits = e.prefix_len.min(32);
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(addr) & mask == u32::from_be_bytes(e.source) & mask
            })
            .max_by_key(|e| e.prefix_len)
    }

    /// A full-length lookup in the published-ports trie (the kernel's
    /// longest-prefix match, through the same `PublishKey::covers`).
    fn publish_lookup(&self, p: u8, addr: [u8; 4], port: u16) -> Option<&PublishEntry> {
        let want = PublishKey::new(p, addr, port);
        self.publish
            .iter()
            .filter(|e| e.key.covers(e.prefix_len, &want))
            .max_by_key(|e| e.prefix_len)
    }

    /// `nat::published`: a rule bound to `addr`, else a rule for any
    /// address if `addr` is one of the host's; never for 127.0.0.0/8.
    /// Returns the rule and whether it was the any-address one.
    pub fn published(&self, p: u8, addr: Ipv4Addr, port: u16) -> Option<(PublishRule, bool)> {
        if addr.octets()[0] == 127 {
            return None;
        }
        if let Some(e) = self.publish_lookup(p, addr.octets(), port) {
            return Some((e.rule, false));
        }
        if !self.local_addrs.contains(&addr) {
            return None;
        }
        self.publish_lookup(p, [0; 4], port).map(|e| (e.rule, true))
    }
}
