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

mod cli;
mod error;
mod tables;
mod wire;

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, time::Duration};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapError},
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode, tc::SchedClassifierLinkId},
};
use log::{info, warn};
use netbpf_common::{RouteUplink, container_if_flags, map_names};

use crate::{
    config::{Config, Container},
    maps::{self},
    neigh::{self, NeighSync, ifname},
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
    uplink_ifindex: u32,
    uplink_mac: [u8; 6],
    uplink_xdp_mode: XdpMode,
    /// The NAT datapath attached `netbpf_arp` to the uplink already (the
    /// XDP fast path): routing attaches only `netbpf_route_in`.
    uplink_xdp_attached: bool,
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
        uplink_xdp_attached: bool,
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
        let mut nmaps = borrowed_neigh_maps(ebpf)?;
        neigh::fill(&mut nmaps, uplink_ifindex, &table).map_err(map_err(map_names::NEIGHBOURS))?;
        let mut routing = Self {
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
        if !self.uplink_xdp_attached {
            let xdp: &mut Xdp = crate::loader::loaded(ebpf, name).map_err(err)?;
            xdp.attach(self.uplink_ifindex, self.uplink_xdp_mode)
                .map_err(err)?;
        }
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
                    if let Some(v6) = c.ipv6 {
                        let _ = rtnl.delete_host_route(v6, ifindex);
                    }
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
        for (ifindex, i) in maps.interfaces6() {
            let v6 = std::net::Ipv6Addr::from(i.addr);
            if let Err(err) = rtnl.delete_host_route(v6, ifindex) {
                warn!("routing: removing the route to {v6}: {err}");
            }
        }
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
