//! Routed containers (`[[container]]`, `netbpf containers ...`): their maps,
//! programs, host routes and ARP announcements.
//!
//! The maps are the source of truth. `CONTAINERS` (address → veth and
//! MACs) and `CONTAINER_IFS` (veth → address) are written by the daemon at
//! start and on SIGHUP (for the config's containers, flagged
//! [`container_if_flags::CONFIGURED`]), and by `netbpf containers add|del`
//! on a running daemon. The daemon reconciles the programs with them every
//! [`SYNC_INTERVAL`]: it attaches `netbpf_container` at tc ingress of every
//! veth in `CONTAINER_IFS` (and marks the entry
//! [`container_if_flags::ATTACHED`], which `containers add` waits for),
//! detaches it from veths no longer there, and attaches the uplink's
//! `netbpf_arp` (XDP) and `netbpf_route_in` (tc ingress) once there is a
//! container.
//!
//! Whoever adds a container also routes `address/32` to its veth (so the
//! host's own stack reaches it, and TTL-expired or not-yet-resolved
//! packets the datapath hands to the kernel go the same way), and
//! announces it on the uplink with a gratuitous ARP so neighbours that
//! cached another MAC for the address update it.
//!
//! Like the NAT datapath, routing outlives the daemon: every program is
//! attached through a link pinned under the pin directory
//! (`links/netbpf_container@<veth>`, `links/netbpf_route_in@<uplink>`,
//! `links/netbpf_arp@<uplink>`), and the maps and host routes stay when the
//! daemon stops. The next daemon swaps its programs into those links,
//! rewrites the config's entries in place, and removes only what its
//! config no longer has (entries flagged `CONFIGURED` that it lacks) and
//! the links of veths no longer routed. `netbpf down` removes everything,
//! host routes included ([`remove_host_routes`]).

mod cli;
mod error;
mod tables;
mod wire;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapError},
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode},
};
use log::{info, warn};
use netbpf_common::{RouteUplink, container_if_flags, map_names};

use crate::{
    config::{Config, Container},
    links,
    maps::{self},
    neigh::{self, NeighSync, ifname},
    pins,
    rtnl::{NeighMonitor, Rtnl},
};

pub use crate::loader::programs;
pub use cli::*;
pub use error::*;
pub use tables::*;
pub use wire::*;

/// How often the daemon reconciles programs with the container maps.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// The daemon's routing state: which programs are attached where, and the
/// neighbour map's sync thread.
pub struct Routing {
    pin_dir: PathBuf,
    uplink: String,
    uplink_ifindex: u32,
    uplink_mac: [u8; 6],
    uplink_xdp_mode: XdpMode,
    /// The NAT datapath attached `netbpf_arp` to the uplink already (the
    /// XDP fast path): routing attaches only `netbpf_route_in`.
    uplink_xdp_attached: bool,
    uplink_attached: bool,
    /// Veths whose `netbpf_container` this daemon attached or adopted,
    /// with their link pins.
    veth_links: BTreeMap<u32, PathBuf>,
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
    /// Prepares routing in a loaded object (fresh, or on the maps an
    /// earlier daemon pinned in `pin_dir`): the uplink entry, the config's
    /// containers (maps, programs, host routes, announcements), the
    /// neighbour map. Entries an earlier config added that this one lacks
    /// are removed, and links pinned for veths or an uplink no longer
    /// routed are detached. Fails, attaching nothing more, if a container
    /// cannot be resolved.
    pub fn start(
        ebpf: &mut Ebpf,
        config: &Config,
        uplink: (&str, u32),
        uplink_xdp_attached: bool,
        pin_dir: &Path,
    ) -> Result<Self, ContainersError> {
        let (uplink_name, uplink_ifindex) = uplink;
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
            // Generic XDP on a veth (native XDP_TX there only delivers when
            // the peer has NAPI, which is not ours to set) and on stacked
            // devices: `LinkInfo::uplink_xdp_mode`.
            Ok(l) => (l.mac, l.uplink_xdp_mode()),
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
        for (addr, ifindex) in dropped_from_config(&maps, &resolved) {
            info!("routing: {addr} is no longer in the config: removing it");
            let v6 = maps.ipv6_of(ifindex);
            maps.remove(addr)?;
            if let Err(e) = rtnl.delete_host_route(addr, ifindex) {
                log::debug!("routing: removing the route to {addr}: {e}");
            }
            if let Some(v6) = v6
                && let Err(e) = rtnl.delete_host_route(v6, ifindex)
            {
                log::debug!("routing: removing the route to {v6}: {e}");
            }
        }
        for r in &resolved {
            maps.insert(r, true)?;
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
        let mut nmaps = borrowed_neigh_maps(ebpf)?;
        neigh::fill(&mut nmaps, uplink_ifindex, &table).map_err(map_err(map_names::NEIGHBOURS))?;
        let mut routing = Self {
            pin_dir: pin_dir.to_owned(),
            uplink: uplink_name.to_owned(),
            uplink_ifindex,
            uplink_mac,
            uplink_xdp_mode,
            uplink_xdp_attached,
            uplink_attached: false,
            veth_links: BTreeMap::new(),
            configured: config.container.clone(),
            monitor: Some(monitor),
            neigh_sync: None,
        };
        routing.sync(ebpf)?;
        routing.drop_stale_links()?;
        for r in &resolved {
            routing.install(&mut rtnl, r);
        }
        Ok(routing)
    }

    /// Detaches the links an earlier daemon pinned that this one does not
    /// hold: `netbpf_container` on veths no longer routed, and the uplink's
    /// routing programs on another uplink or when nothing is routed (the
    /// NAT datapath keeps `netbpf_arp` when its XDP fast path wants it).
    fn drop_stale_links(&self) -> Result<(), ContainersError> {
        let pinned = pins::pinned_links(&self.pin_dir).map_err(pins_err)?;
        for link in pinned {
            let stale = match link.program.as_str() {
                programs::CONTAINER => !self.veth_links.values().any(|p| *p == link.path),
                programs::ROUTE_IN => !self.uplink_attached || link.target != self.uplink,
                programs::ARP => {
                    !self.uplink_xdp_attached
                        && (!self.uplink_attached || link.target != self.uplink)
                }
                _ => false,
            };
            if stale {
                info!(
                    "routing: detaching {} from {} (no longer routed)",
                    link.program, link.target
                );
                links::unpin(&link.path).map_err(pins_err)?;
            }
        }
        Ok(())
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
        let open = |name: &'static str| -> Result<Map, ContainersError> {
            Ok(Map::HashMap(maps::open_pinned(pin_dir, name)?))
        };
        let nmaps = neigh::NeighMaps {
            v4: HashMap::try_from(open(map_names::NEIGHBOURS)?)
                .map_err(map_err(map_names::NEIGHBOURS))?,
            v6: HashMap::try_from(open(map_names::NEIGHBOURS6)?)
                .map_err(map_err(map_names::NEIGHBOURS6))?,
        };
        let sync = NeighSync::spawn(monitor, nmaps, self.uplink_ifindex).map_err(|source| {
            ContainersError::Neighbours {
                what: "following neighbour changes",
                source,
            }
        })?;
        self.neigh_sync = Some(sync);
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
            let pin = pins::link_pin(&self.pin_dir, programs::CONTAINER, &ifname(*ifindex));
            match links::attach_tc(prog, *ifindex, TcAttachType::Ingress, &pin) {
                Ok(_) => {
                    self.veth_links.insert(*ifindex, pin);
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
            if let Some(pin) = self.veth_links.remove(&ifindex) {
                // The veth may be gone already, taking the link with it.
                if let Err(e) = links::unpin(&pin) {
                    warn!("routing: detaching {}: {e}", pin.display());
                }
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
        let link_err = |name| move |source| ContainersError::Link { name, source };
        if !self.uplink_xdp_attached {
            let name = programs::ARP;
            let xdp: &mut Xdp = crate::loader::loaded(ebpf, name)
                .map_err(|source| ContainersError::Program { name, source })?;
            let pin = pins::link_pin(&self.pin_dir, name, &self.uplink);
            links::attach_xdp(xdp, self.uplink_ifindex, self.uplink_xdp_mode, &pin)
                .map_err(link_err(name))?;
        }
        let name = programs::ROUTE_IN;
        let pin = pins::link_pin(&self.pin_dir, name, &self.uplink);
        links::attach_tc(
            classifier(ebpf, name)?,
            self.uplink_ifindex,
            TcAttachType::Ingress,
            &pin,
        )
        .map_err(link_err(name))?;
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
                    if let Some(v6) = c.ipv6 {
                        let _ = rtnl.delete_host_route(v6, ifindex);
                    }
                }
                Err(ContainersError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for r in &added {
            maps.insert(r, true)?;
        }
        self.configured = config.container.clone();
        self.sync(ebpf)?;
        for r in &added {
            self.install(&mut rtnl, r);
        }
        Ok((added.len(), removed.len()))
    }

    /// Stops the neighbour thread. Everything else stays: the programs in
    /// their pinned links, the maps and the host routes keep the
    /// containers routed until the next daemon adopts them or `netbpf
    /// down` removes them.
    pub fn stop(&mut self) {
        self.neigh_sync = None;
    }
}

/// The config's containers an earlier daemon put in the maps (flagged
/// [`container_if_flags::CONFIGURED`]) that `resolved` no longer has at
/// the same veth: (address, veth index).
fn dropped_from_config<T: std::borrow::BorrowMut<aya::maps::MapData>>(
    maps: &RoutingMaps<T>,
    resolved: &[Resolved],
) -> Vec<(Ipv4Addr, u32)> {
    maps.interfaces()
        .into_iter()
        .filter(|(_, v)| v.flags & container_if_flags::CONFIGURED != 0)
        .map(|(ifindex, v)| (Ipv4Addr::from(v.addr), ifindex))
        .filter(|(addr, ifindex)| {
            !resolved
                .iter()
                .any(|r| r.address == *addr && r.ifindex == *ifindex)
        })
        .collect()
}

/// Removes the host route of every routed container of the datapath
/// pinned in `pin_dir` (`netbpf down`, before the maps go). Failures are
/// logged: the routes go with the veths anyway.
pub fn remove_host_routes(pin_dir: &Path) {
    let Ok(maps) = RoutingMaps::open_pinned(pin_dir) else {
        return;
    };
    let Ok(mut rtnl) = Rtnl::open() else {
        return;
    };
    for (addr, e) in maps.entries() {
        let addr = Ipv4Addr::from(addr);
        if let Err(err) = rtnl.delete_host_route(addr, e.ifindex) {
            log::debug!("routing: removing the route to {addr}: {err}");
        }
    }
    for (ifindex, i) in maps.interfaces6() {
        let v6 = std::net::Ipv6Addr::from(i.addr);
        if let Err(err) = rtnl.delete_host_route(v6, ifindex) {
            log::debug!("routing: removing the route to {v6}: {err}");
        }
    }
}

fn pins_err(source: pins::PinsError) -> ContainersError {
    ContainersError::Link {
        name: "routing",
        source: links::LinkError::Pins(source),
    }
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
            ipv6: Some("2001:db8:1::101".parse().expect("address")),
            interface: "veth-r1".into(),
            ifindex: 7,
            mac: "02:00:00:00:00:01".into(),
            host_mac: "02:00:00:00:00:02".into(),
            attached: true,
        };
        assert_eq!(row.cells()[1], "2001:db8:1::101");
        assert_eq!(row.cells()[5], "yes");
        assert_eq!(row.cells().len(), ContainerRow::HEADER.len());
    }
}
