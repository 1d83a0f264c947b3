//! Routed containers (`[[container]]`, `netbpf containers ...`): their maps,
//! programs, host routes and ARP announcements.
//!
//! The maps are the source of truth. `CONTAINERS` (address → veth and
//! MACs) and `CONTAINER_IFS` (veth → address) are written by the daemon at
//! start and on SIGHUP (for the config's containers), and by
//! `netbpf containers add|del` on a running daemon. The daemon reconciles
//! the programs with them every [`SYNC_INTERVAL`]: it attaches
//! `netbpf_container` at tc ingress of every veth in `CONTAINER_IFS` (and
//! marks the entry [`container_if_flags::ATTACHED`], which `containers add`
//! waits for), detaches it from veths no longer there, and attaches the
//! uplink's `netbpf_arp` (XDP) and `netbpf_route_in` (tc ingress) once
//! there is a container.
//!
//! Whoever adds a container also routes `address/32` to its veth (so the
//! host's own stack reaches it, and TTL-expired or not-yet-resolved
//! packets the datapath hands to the kernel go the same way), and
//! announces it on the uplink with a gratuitous ARP so neighbours that
//! cached another MAC for the address update it.

use std::{
    borrow::BorrowMut,
    collections::BTreeMap,
    io,
    net::Ipv4Addr,
    os::fd::{AsFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode, tc::SchedClassifierLinkId,
    },
};
use log::{info, warn};
use netbpf_common::{
    ContainerEntry, ContainerIf, Neighbour, RouteUplink, container_if_flags, map_names,
};
use serde::Serialize;

use crate::{
    config::{Config, Container},
    maps::{self, MapsError},
    neigh::{self, NeighSync, format_mac, ifname},
    netdev::{self, NetdevError},
    rtnl::{NeighMonitor, Rtnl, RtnlError},
};

pub use crate::loader::programs;

/// How often the daemon reconciles programs with the container maps.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// Routing failures.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    /// A routed container's address lies in a masquerade CIDR.
    #[error(
        "{key}: {addr} is inside masquerade source {cidr}: a container is either routed ([[container]]) or masqueraded ([[masquerade]]), not both"
    )]
    Masqueraded {
        /// The config key (or command argument).
        key: String,
        /// The address.
        addr: Ipv4Addr,
        /// The masquerade CIDR it is in.
        cidr: String,
    },
    /// The interface is missing or unusable.
    #[error("{key}")]
    Interface {
        /// The config key.
        key: String,
        /// What went wrong.
        #[source]
        source: NetdevError,
    },
    /// An rtnetlink request failed.
    #[error("{key}")]
    Rtnl {
        /// The config key, or what was being done.
        key: String,
        /// What went wrong.
        #[source]
        source: RtnlError,
    },
    /// The interface is not a veth (no peer to learn the container's MAC
    /// from).
    #[error(
        "{key}: {interface:?} is not a veth whose peer netbpf can see (the container's side of a veth pair is needed for its MAC)"
    )]
    NotVeth {
        /// The config key.
        key: String,
        /// The interface.
        interface: String,
    },
    /// The address or the interface is already a routed container.
    #[error("{what} is already a routed container (netbpf containers list)")]
    Exists {
        /// The address or interface.
        what: String,
    },
    /// No routed container has this address.
    #[error("{0} is not a routed container (netbpf containers list)")]
    NotFound(Ipv4Addr),
    /// A map could not be read or written.
    #[error("map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: MapError,
    },
    /// The pinned maps could not be opened.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// A program failed to load, attach or detach.
    #[error("program {name}")]
    Program {
        /// The program.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: ProgramError,
    },
    /// The daemon did not attach the container's program in time.
    #[error(
        "the daemon did not attach netbpf_container to {interface} within {secs} s (is `netbpf daemon` running with this --pin-dir?)"
    )]
    NotAttached {
        /// The veth.
        interface: String,
        /// How long was waited.
        secs: u64,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> ContainersError {
    move |source| ContainersError::Map { name, source }
}

/// A container resolved against the host: its veth's index and both MACs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The container's address.
    pub address: Ipv4Addr,
    /// Host side of its veth.
    pub interface: String,
    /// Index of the host side.
    pub ifindex: u32,
    /// MAC of the host side.
    pub host_mac: [u8; 6],
    /// The container's MAC (the veth peer's).
    pub mac: [u8; 6],
}

/// Refuses routed containers inside a masquerade CIDR.
pub fn check_not_masqueraded(config: &Config) -> Result<(), ContainersError> {
    for (i, c) in config.container.iter().enumerate() {
        if let Some(m) = config
            .masquerade
            .iter()
            .find(|m| m.source.contains(c.address))
        {
            return Err(ContainersError::Masqueraded {
                key: format!("container[{i}].address"),
                addr: c.address,
                cidr: format!("{}/{}", m.source.addr, m.source.prefix_len),
            });
        }
    }
    Ok(())
}

/// Learns a container's veth index and MACs (`key` names it in errors).
pub fn resolve(rtnl: &mut Rtnl, key: &str, c: &Container) -> Result<Resolved, ContainersError> {
    let ikey = format!("{key}.interface");
    let ifindex = netdev::ifindex(&c.interface).map_err(|source| ContainersError::Interface {
        key: ikey.clone(),
        source,
    })?;
    let rt = |source| ContainersError::Rtnl {
        key: ikey.clone(),
        source,
    };
    let host_mac = rtnl.link(ifindex, None).map_err(rt)?.mac;
    let mac = rtnl
        .veth_peer_mac(ifindex)
        .map_err(|source| ContainersError::Rtnl {
            key: ikey.clone(),
            source,
        })?
        .ok_or_else(|| ContainersError::NotVeth {
            key: ikey.clone(),
            interface: c.interface.clone(),
        })?;
    Ok(Resolved {
        address: c.address,
        interface: c.interface.clone(),
        ifindex,
        host_mac,
        mac,
    })
}

/// Typed views of the routing maps (borrowed from a loaded object, or
/// opened from pins).
pub struct RoutingMaps<T> {
    /// Address → veth and MACs.
    pub containers: HashMap<T, [u8; 4], ContainerEntry>,
    /// Veth → address.
    pub ifs: HashMap<T, u32, ContainerIf>,
}

impl RoutingMaps<MapData> {
    /// Opens the maps pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self, ContainersError> {
        let open = |name: &'static str| -> Result<Map, ContainersError> {
            Ok(Map::HashMap(maps::open_pinned(dir, name)?))
        };
        Ok(Self {
            containers: HashMap::try_from(open(map_names::CONTAINERS)?)
                .map_err(map_err(map_names::CONTAINERS))?,
            ifs: HashMap::try_from(open(map_names::CONTAINER_IFS)?)
                .map_err(map_err(map_names::CONTAINER_IFS))?,
        })
    }
}

impl<T: BorrowMut<MapData>> RoutingMaps<T> {
    /// Every routed container: (address, entry).
    pub fn entries(&self) -> Vec<([u8; 4], ContainerEntry)> {
        self.containers.iter().filter_map(Result::ok).collect()
    }

    /// Every routed veth: (ifindex, entry).
    pub fn interfaces(&self) -> Vec<(u32, ContainerIf)> {
        self.ifs.iter().filter_map(Result::ok).collect()
    }

    /// Adds (or replaces) a container: the veth entry first, so the
    /// container's own packets are checked from the moment the uplink
    /// forwards to it.
    pub fn insert(&mut self, r: &Resolved) -> Result<(), ContainersError> {
        let flags = self
            .ifs
            .get(&r.ifindex, 0)
            .map(|v| v.flags)
            .unwrap_or_default();
        self.ifs
            .insert(
                &r.ifindex,
                &ContainerIf {
                    addr: r.address.octets(),
                    host_mac: r.host_mac,
                    flags,
                },
                0,
            )
            .map_err(map_err(map_names::CONTAINER_IFS))?;
        self.containers
            .insert(
                &r.address.octets(),
                &ContainerEntry {
                    ifindex: r.ifindex,
                    host_mac: r.host_mac,
                    mac: r.mac,
                },
                0,
            )
            .map_err(map_err(map_names::CONTAINERS))
    }

    /// Removes a container (address first: the uplink stops forwarding to
    /// it and answering ARP for it), returning its veth index.
    pub fn remove(&mut self, addr: Ipv4Addr) -> Result<u32, ContainersError> {
        let entry = match self.containers.get(&addr.octets(), 0) {
            Ok(e) => e,
            Err(MapError::KeyNotFound) => return Err(ContainersError::NotFound(addr)),
            Err(source) => {
                return Err(ContainersError::Map {
                    name: map_names::CONTAINERS,
                    source,
                });
            }
        };
        ignore_missing(self.containers.remove(&addr.octets()))
            .map_err(map_err(map_names::CONTAINERS))?;
        if self
            .ifs
            .get(&entry.ifindex, 0)
            .is_ok_and(|i| i.addr == addr.octets())
        {
            ignore_missing(self.ifs.remove(&entry.ifindex))
                .map_err(map_err(map_names::CONTAINER_IFS))?;
        }
        Ok(entry.ifindex)
    }

    /// Sets or clears the ATTACHED flag of a veth entry.
    fn mark_attached(&mut self, ifindex: u32, attached: bool) -> Result<(), ContainersError> {
        let Ok(mut v) = self.ifs.get(&ifindex, 0) else {
            return Ok(());
        };
        if attached {
            v.flags |= container_if_flags::ATTACHED;
        } else {
            v.flags &= !container_if_flags::ATTACHED;
        }
        self.ifs
            .insert(&ifindex, &v, 0)
            .map_err(map_err(map_names::CONTAINER_IFS))
    }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

fn borrowed_maps(ebpf: &mut Ebpf) -> Result<RoutingMaps<&mut MapData>, ContainersError> {
    // Two disjoint maps borrowed from one object.
    let mut containers = None;
    let mut ifs = None;
    for (name, map) in ebpf.maps_mut() {
        match name {
            n if n == map_names::CONTAINERS => containers = Some(map),
            n if n == map_names::CONTAINER_IFS => ifs = Some(map),
            _ => {}
        }
    }
    let missing = |name: &'static str| ContainersError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    };
    Ok(RoutingMaps {
        containers: HashMap::try_from(containers.ok_or_else(|| missing(map_names::CONTAINERS))?)
            .map_err(map_err(map_names::CONTAINERS))?,
        ifs: HashMap::try_from(ifs.ok_or_else(|| missing(map_names::CONTAINER_IFS))?)
            .map_err(map_err(map_names::CONTAINER_IFS))?,
    })
}

/// Sends a gratuitous ARP (an RFC 5227 announcement: a request whose
/// sender and target are `addr`) out of `ifindex` from `mac`, so machines on
/// the segment that cached another MAC for `addr` update it.
pub fn announce(ifindex: u32, mac: [u8; 6], addr: Ipv4Addr) -> io::Result<()> {
    const ETH_P_ARP: u16 = 0x0806;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, owned descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&addr.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&addr.octets());
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ARP.to_be();
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    use std::os::fd::AsRawFd;
    // SAFETY: frame and sll outlive the call; the lengths are theirs.
    let n = unsafe {
        libc::sendto(
            fd.as_fd().as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The daemon's routing state: which programs are attached where, and the
/// neighbour map's sync thread.
pub struct Routing {
    uplink_ifindex: u32,
    uplink_mac: [u8; 6],
    uplink_xdp_mode: XdpMode,
    uplink_attached: bool,
    veth_links: BTreeMap<u32, SchedClassifierLinkId>,
    configured: Vec<Container>,
    monitor: Option<NeighMonitor>,
    neigh_sync: Option<NeighSync>,
}

/// Loads `name` as a tc program if it is not loaded yet.
fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, ContainersError> {
    crate::loader::loaded(ebpf, name).map_err(|source| ContainersError::Program { name, source })
}

impl Routing {
    /// Prepares routing in a loaded object before it is pinned: the uplink
    /// entry, the config's containers (maps, programs, host routes,
    /// announcements), the neighbour map. Fails, attaching nothing more, if
    /// a container cannot be resolved.
    pub fn start(
        ebpf: &mut Ebpf,
        config: &Config,
        uplink_ifindex: u32,
    ) -> Result<Self, ContainersError> {
        check_not_masqueraded(config)?;
        let mut rtnl = Rtnl::open().map_err(|source| ContainersError::Rtnl {
            key: "rtnetlink".into(),
            source,
        })?;
        let resolved = config
            .container
            .iter()
            .enumerate()
            .map(|(i, c)| resolve(&mut rtnl, &format!("container[{i}]"), c))
            .collect::<Result<Vec<_>, _>>()?;
        // A non-Ethernet uplink cannot do ARP: routing stays off (and
        // configured containers are an error).
        let (uplink_mac, uplink_xdp_mode) = match rtnl.link(uplink_ifindex, None) {
            // A veth uplink (a lab, or a host that is itself a container):
            // native XDP_TX on a veth only delivers when the peer has NAPI
            // (GRO or an XDP program), which is not ours to set; generic
            // XDP transmits through the stack and always works. A veth is
            // known by its link kind: its peer may have the same index in
            // its own namespace, which the kernel reports as no peer at
            // all. Other stacked devices (vlan, macvlan) report a lower
            // link; the kernel has no native XDP for them either.
            Ok(l) if l.veth || l.peer_ifindex.is_some() => (l.mac, XdpMode::Skb),
            Ok(l) => (l.mac, XdpMode::Default),
            Err(source) if !resolved.is_empty() => {
                return Err(ContainersError::Rtnl {
                    key: "uplink.interface".into(),
                    source,
                });
            }
            Err(_) => ([0; 6], XdpMode::Default),
        };
        let name = map_names::ROUTE_UPLINK;
        let mut up: Array<_, RouteUplink> = Array::try_from(
            ebpf.map_mut(name)
                .ok_or_else(|| map_err(name)(MapError::InvalidName { name: name.into() }))?,
        )
        .map_err(map_err(name))?;
        if uplink_mac != [0; 6] {
            up.set(
                0,
                &RouteUplink {
                    ifindex: uplink_ifindex,
                    mac: uplink_mac,
                    _pad: [0; 2],
                },
                0,
            )
            .map_err(map_err(name))?;
        }
        let mut maps = borrowed_maps(ebpf)?;
        for r in &resolved {
            maps.insert(r)?;
        }
        // Subscribe before the dump, so no change falls in between.
        let monitor = NeighMonitor::open().map_err(|source| ContainersError::Rtnl {
            key: "neighbour table".into(),
            source,
        })?;
        let table = rtnl.neighbours().map_err(|source| ContainersError::Rtnl {
            key: "neighbour table".into(),
            source,
        })?;
        let name = map_names::NEIGHBOURS;
        let mut nmap: HashMap<_, [u8; 4], Neighbour> = HashMap::try_from(
            ebpf.map_mut(name)
                .ok_or_else(|| map_err(name)(MapError::InvalidName { name: name.into() }))?,
        )
        .map_err(map_err(name))?;
        neigh::fill(&mut nmap, uplink_ifindex, &table).map_err(map_err(name))?;
        let mut routing = Self {
            uplink_ifindex,
            uplink_mac,
            uplink_xdp_mode,
            uplink_attached: false,
            veth_links: BTreeMap::new(),
            configured: config.container.clone(),
            monitor: Some(monitor),
            neigh_sync: None,
        };
        routing.sync(ebpf)?;
        for r in &resolved {
            routing.install(&mut rtnl, r);
        }
        Ok(routing)
    }

    /// Host route and announcement for a new container (failures are
    /// logged: the datapath works without them).
    fn install(&self, rtnl: &mut Rtnl, r: &Resolved) {
        install_route_and_announce(rtnl, r, self.uplink_ifindex, self.uplink_mac);
    }

    /// Starts following neighbour changes into the pinned map (call once
    /// the maps are pinned in `pin_dir`).
    pub fn follow_neighbours(&mut self, pin_dir: &Path) -> Result<(), ContainersError> {
        let Some(monitor) = self.monitor.take() else {
            return Ok(());
        };
        let name = map_names::NEIGHBOURS;
        let map = HashMap::try_from(Map::HashMap(maps::open_pinned(pin_dir, name)?))
            .map_err(map_err(name))?;
        self.neigh_sync = Some(NeighSync::spawn(monitor, map, self.uplink_ifindex));
        Ok(())
    }

    /// Reconciles programs with the maps: attaches the uplink programs
    /// once there is a container, `netbpf_container` on every veth in
    /// `CONTAINER_IFS` (marking it attached), and detaches it from veths
    /// no longer there. Returns how many attachments changed.
    pub fn sync(&mut self, ebpf: &mut Ebpf) -> Result<usize, ContainersError> {
        let interfaces = borrowed_maps(ebpf)?.interfaces();
        let mut changed = 0;
        if !interfaces.is_empty() && !self.uplink_attached && self.uplink_mac != [0; 6] {
            self.attach_uplink(ebpf)?;
            changed += 1;
        }
        for (ifindex, cif) in &interfaces {
            if self.veth_links.contains_key(ifindex) {
                if cif.flags & container_if_flags::ATTACHED == 0 {
                    borrowed_maps(ebpf)?.mark_attached(*ifindex, true)?;
                }
                continue;
            }
            let prog = classifier(ebpf, programs::CONTAINER)?;
            match prog.attach(*ifindex, TcAttachType::Ingress) {
                Ok(link) => {
                    self.veth_links.insert(*ifindex, link);
                    borrowed_maps(ebpf)?.mark_attached(*ifindex, true)?;
                    info!(
                        "routing: attached {} to {} (container {})",
                        programs::CONTAINER,
                        ifname(*ifindex),
                        Ipv4Addr::from(cif.addr)
                    );
                    changed += 1;
                }
                Err(e) => warn!(
                    "routing: cannot attach {} to ifindex {ifindex}: {e}",
                    programs::CONTAINER
                ),
            }
        }
        let gone: Vec<u32> = self
            .veth_links
            .keys()
            .filter(|i| !interfaces.iter().any(|(j, _)| j == *i))
            .copied()
            .collect();
        for ifindex in gone {
            if let Some(link) = self.veth_links.remove(&ifindex) {
                // The veth may be gone already, taking the link with it.
                let _ = classifier(ebpf, programs::CONTAINER)?.detach(link);
                info!(
                    "routing: detached {} from ifindex {ifindex}",
                    programs::CONTAINER
                );
                changed += 1;
            }
        }
        Ok(changed)
    }

    fn attach_uplink(&mut self, ebpf: &mut Ebpf) -> Result<(), ContainersError> {
        let name = programs::ARP;
        let err = |source| ContainersError::Program { name, source };
        let xdp: &mut Xdp = crate::loader::loaded(ebpf, name).map_err(err)?;
        xdp.attach(self.uplink_ifindex, self.uplink_xdp_mode)
            .map_err(err)?;
        classifier(ebpf, programs::ROUTE_IN)?
            .attach(self.uplink_ifindex, TcAttachType::Ingress)
            .map_err(|source| ContainersError::Program {
                name: programs::ROUTE_IN,
                source,
            })?;
        self.uplink_attached = true;
        info!(
            "routing: attached {} (XDP, {:?} mode) and {} (tc ingress) to the uplink",
            programs::ARP,
            self.uplink_xdp_mode,
            programs::ROUTE_IN
        );
        Ok(())
    }

    /// Applies a reloaded config's `[[container]]` list: containers that
    /// left the config are removed, new or changed ones are added. Those
    /// added with `netbpf containers add` are left alone. Returns (added,
    /// removed).
    pub fn reload(
        &mut self,
        ebpf: &mut Ebpf,
        config: &Config,
    ) -> Result<(usize, usize), ContainersError> {
        check_not_masqueraded(config)?;
        let mut rtnl = Rtnl::open().map_err(|source| ContainersError::Rtnl {
            key: "rtnetlink".into(),
            source,
        })?;
        // Resolve everything first: a bad entry changes nothing.
        let mut added = Vec::new();
        for (i, c) in config.container.iter().enumerate() {
            if !self.configured.contains(c) {
                added.push(resolve(&mut rtnl, &format!("container[{i}]"), c)?);
            }
        }
        let removed: Vec<Container> = self
            .configured
            .iter()
            .filter(|c| !config.container.contains(c))
            .cloned()
            .collect();
        let mut maps = borrowed_maps(ebpf)?;
        for c in &removed {
            match maps.remove(c.address) {
                Ok(ifindex) => {
                    let _ = rtnl.delete_host_route(c.address, ifindex);
                }
                Err(ContainersError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for r in &added {
            maps.insert(r)?;
        }
        self.configured = config.container.clone();
        self.sync(ebpf)?;
        for r in &added {
            self.install(&mut rtnl, r);
        }
        Ok((added.len(), removed.len()))
    }

    /// Removes the host routes of every routed container and stops the
    /// neighbour thread (the programs detach when the object is dropped).
    pub fn stop(&mut self, ebpf: &mut Ebpf) {
        self.neigh_sync = None;
        let Ok(maps) = borrowed_maps(ebpf) else {
            return;
        };
        let Ok(mut rtnl) = Rtnl::open() else {
            return;
        };
        for (addr, e) in maps.entries() {
            if let Err(err) = rtnl.delete_host_route(Ipv4Addr::from(addr), e.ifindex) {
                warn!(
                    "routing: removing the route to {}: {err}",
                    Ipv4Addr::from(addr)
                );
            }
        }
    }
}

fn install_route_and_announce(rtnl: &mut Rtnl, r: &Resolved, uplink: u32, uplink_mac: [u8; 6]) {
    if let Err(e) = rtnl.replace_host_route(r.address, r.ifindex) {
        warn!(
            "routing: cannot route {}/32 to {}: {e}",
            r.address, r.interface
        );
    }
    if uplink_mac != [0; 6]
        && let Err(e) = announce(uplink, uplink_mac, r.address)
    {
        warn!("routing: gratuitous ARP for {} failed: {e}", r.address);
    }
}

/// One row of `netbpf containers list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerRow {
    /// The container's address.
    pub address: Ipv4Addr,
    /// Host side of its veth (name, or `#index` if it is gone).
    pub interface: String,
    /// Its index.
    pub ifindex: u32,
    /// The container's MAC.
    pub mac: String,
    /// The host side's MAC (what the container's ARP gets).
    pub host_mac: String,
    /// Whether the daemon has attached the veth's program.
    pub attached: bool,
}

impl ContainerRow {
    /// Column headers of [`ContainerRow::cells`].
    pub const HEADER: [&'static str; 5] = ["ADDRESS", "INTERFACE", "MAC", "HOST MAC", "ATTACHED"];

    /// The row as table cells.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.address.to_string(),
            self.interface.clone(),
            self.mac.clone(),
            self.host_mac.clone(),
            if self.attached { "yes" } else { "no" }.to_owned(),
        ]
    }
}

/// The routed containers of the datapath pinned in `dir`, by address.
pub fn list(dir: &Path) -> Result<Vec<ContainerRow>, ContainersError> {
    let maps = RoutingMaps::open_pinned(dir)?;
    let ifs = maps.interfaces();
    let mut rows: Vec<ContainerRow> = maps
        .entries()
        .into_iter()
        .map(|(addr, e)| ContainerRow {
            address: Ipv4Addr::from(addr),
            interface: ifname(e.ifindex),
            ifindex: e.ifindex,
            mac: format_mac(&e.mac),
            host_mac: format_mac(&e.host_mac),
            attached: ifs
                .iter()
                .any(|(i, v)| *i == e.ifindex && v.flags & container_if_flags::ATTACHED != 0),
        })
        .collect();
    rows.sort_by_key(|r| r.address);
    Ok(rows)
}

/// `netbpf containers add`: routes `address` to the container behind
/// `interface` on the running datapath pinned in `dir`, and waits until
/// the daemon has attached the veth's program.
pub fn add(
    dir: &Path,
    address: Ipv4Addr,
    interface: &str,
) -> Result<ContainerRow, ContainersError> {
    for m in maps::read_masquerade(dir)? {
        let cidr = crate::config::Ipv4Cidr {
            addr: Ipv4Addr::from(m.source),
            prefix_len: m.prefix_len as u8,
        };
        if cidr.contains(address) {
            return Err(ContainersError::Masqueraded {
                key: "--address".into(),
                addr: address,
                cidr: format!("{}/{}", cidr.addr, cidr.prefix_len),
            });
        }
    }
    let mut maps = RoutingMaps::open_pinned(dir)?;
    let c = Container {
        address,
        interface: interface.to_owned(),
    };
    let mut rtnl = Rtnl::open().map_err(|source| ContainersError::Rtnl {
        key: "rtnetlink".into(),
        source,
    })?;
    let r = resolve(&mut rtnl, "--interface", &c)?;
    if maps.containers.get(&address.octets(), 0).is_ok() {
        return Err(ContainersError::Exists {
            what: address.to_string(),
        });
    }
    if maps.ifs.get(&r.ifindex, 0).is_ok() {
        return Err(ContainersError::Exists {
            what: interface.to_owned(),
        });
    }
    maps.insert(&r)?;
    let up = uplink(dir)?;
    install_route_and_announce(&mut rtnl, &r, up.ifindex, up.mac);
    // The daemon attaches the veth's program on its next pass.
    let wait = Duration::from_secs(5);
    let deadline = Instant::now() + wait;
    loop {
        if maps
            .ifs
            .get(&r.ifindex, 0)
            .is_ok_and(|v| v.flags & container_if_flags::ATTACHED != 0)
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(ContainersError::NotAttached {
                interface: interface.to_owned(),
                secs: wait.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    list(dir)?
        .into_iter()
        .find(|row| row.address == address)
        .ok_or(ContainersError::NotFound(address))
}

/// `netbpf containers del`: stops routing `address` on the running
/// datapath pinned in `dir` (the daemon detaches the veth's program on its
/// next pass) and removes its host route.
pub fn del(dir: &Path, address: Ipv4Addr) -> Result<(), ContainersError> {
    let mut maps = RoutingMaps::open_pinned(dir)?;
    let ifindex = maps.remove(address)?;
    let mut rtnl = Rtnl::open().map_err(|source| ContainersError::Rtnl {
        key: "rtnetlink".into(),
        source,
    })?;
    rtnl.delete_host_route(address, ifindex)
        .map_err(|source| ContainersError::Rtnl {
            key: format!("route to {address}"),
            source,
        })
}

/// The uplink entry of the datapath pinned in `dir`.
fn uplink(dir: &Path) -> Result<RouteUplink, ContainersError> {
    let name = map_names::ROUTE_UPLINK;
    let arr: Array<MapData, RouteUplink> =
        Array::try_from(Map::Array(maps::open_pinned(dir, name)?)).map_err(map_err(name))?;
    arr.get(&0, 0).map_err(map_err(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routed_containers_must_not_be_masqueraded() {
        let config = Config::from_toml(
            "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n\
             [[container]]\naddress = \"10.0.1.101\"\ninterface = \"veth-r1\"\n\
             [[container]]\naddress = \"10.77.0.9\"\ninterface = \"veth-r2\"\n",
        )
        .expect("config");
        let e = check_not_masqueraded(&config).expect_err("overlap refused");
        let text = e.to_string();
        assert!(
            text.starts_with(
                "container[1].address: 10.77.0.9 is inside masquerade source 10.77.0.0/24"
            ),
            "{text}"
        );
    }

    #[test]
    fn rows_render() {
        let row = ContainerRow {
            address: Ipv4Addr::new(10, 0, 1, 101),
            interface: "veth-r1".into(),
            ifindex: 7,
            mac: "02:00:00:00:00:01".into(),
            host_mac: "02:00:00:00:00:02".into(),
            attached: true,
        };
        assert_eq!(row.cells()[4], "yes");
        assert_eq!(row.cells().len(), ContainerRow::HEADER.len());
    }
}
