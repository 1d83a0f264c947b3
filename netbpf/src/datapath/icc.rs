//! Docker's `enable_icc=false` (`--icc=false`): containers on one bridge
//! must not reach each other directly. The bridge switches their frames
//! from port to port without any program on the bridge device seeing
//! them, so `netbpf_icc` is attached at tc ingress of each port (the
//! containers' host-side veths, listed over rtnetlink: the bridge's
//! `IFLA_MASTER` links), and `ICC_PORTS` gives it each port's subnet and
//! gateway. The rule owner (the Docker follower) calls
//! [`Datapath::sync_icc`] after every read of its state: ports of new
//! containers get the program, ports that are gone lose their pin and
//! their entry. A restart keeps the pinned links (see
//! [`super::Datapath::start_with`]) until the owner's first sync.

use aya::{
    maps::{HashMap, MapData, MapError},
    programs::TcAttachType,
};
use log::{debug, info};
use netbpf_common::{IccPort, map_names};

use crate::{config::Ipv4Cidr, netdev, pins, rtnl::Rtnl};

use super::{
    Datapath, DatapathError,
    attach::{TcTarget, attach_tc_pinned},
    fill::map_mut,
    programs,
};

/// A bridge whose network has inter-container communication off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IccBridge {
    /// The Linux bridge.
    pub bridge: String,
    /// The network's IPv4 subnet.
    pub subnet: Ipv4Cidr,
}

/// What one [`Datapath::sync_icc`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IccChange {
    /// Ports the program was attached to (or swapped into, after a
    /// restart).
    pub attached: usize,
    /// Ports whose link was removed.
    pub detached: usize,
}

/// A port to guard: its name, index and map entry.
type WantedPort = (String, u32, IccPort);

impl Datapath {
    /// Guards exactly the ports of `bridges` (none: removes every guard).
    pub fn sync_icc(&mut self, bridges: &[IccBridge]) -> Result<IccChange, DatapathError> {
        let wanted = if bridges.is_empty() {
            Vec::new()
        } else {
            wanted_ports(bridges)?
        };
        let mut change = IccChange::default();
        // The entries first: a port is guarded from its first packet on.
        let held: Vec<u32> = {
            let mut map = self.icc_map()?;
            for (_, ifindex, port) in &wanted {
                map.insert(ifindex, port, 0).map_err(icc_map_err)?;
            }
            map.keys().filter_map(Result::ok).collect()
        };
        for (name, ifindex, _) in &wanted {
            if self.icc_ports.contains(&(name.clone(), *ifindex)) {
                continue;
            }
            let target = TcTarget {
                ifname: name,
                ifindex: *ifindex,
                attach: TcAttachType::Ingress,
            };
            attach_tc_pinned(&mut self.ebpf, programs::ICC, target, &self.pin_dir)?;
            self.icc_ports.retain(|(n, _)| n != name);
            self.icc_ports.push((name.clone(), *ifindex));
            info!("no inter-container traffic from {name} (ifindex {ifindex})");
            change.attached += 1;
        }
        let wants = |name: &str| wanted.iter().any(|(n, ..)| n == name);
        for link in pins::pinned_links(&self.pin_dir)? {
            if link.program == programs::ICC && !wants(&link.target) {
                // Mostly severed already (the veth went with its container).
                let _ = pins::link_detach(&link.path);
                pins::remove_file(&link.path)?;
                debug!("{}: {} removed", link.target, programs::ICC);
                change.detached += 1;
            }
        }
        self.icc_ports.retain(|(n, _)| wants(n));
        let mut map = self.icc_map()?;
        for ifindex in held {
            if !wanted.iter().any(|(_, i, _)| *i == ifindex) {
                match crate::maps::absent_ok(map.remove(&ifindex)) {
                    Ok(()) => {}
                    Err(e) => return Err(icc_map_err(e)),
                }
            }
        }
        Ok(change)
    }

    fn icc_map(&mut self) -> Result<HashMap<&mut MapData, u32, IccPort>, DatapathError> {
        HashMap::try_from(map_mut(&mut self.ebpf, map_names::ICC_PORTS)?).map_err(icc_map_err)
    }
}

fn icc_map_err(source: MapError) -> DatapathError {
    DatapathError::Map {
        name: map_names::ICC_PORTS,
        source,
    }
}

/// The current ports of `bridges`, each with its network's entry. A bridge
/// not (yet) there has no ports.
fn wanted_ports(bridges: &[IccBridge]) -> Result<Vec<WantedPort>, DatapathError> {
    let links = Rtnl::open()
        .and_then(|mut r| r.links())
        .map_err(DatapathError::Rtnl)?;
    let mut out = Vec::new();
    for b in bridges {
        let Some(bridge) = links.iter().find(|l| l.name == b.bridge) else {
            continue;
        };
        let subnet = b.subnet.network();
        let gateway = netdev::ipv4_networks(&b.bridge)
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.addr)
            .find(|a| subnet.contains(*a))
            .map_or([0; 4], |a| a.octets());
        let port = IccPort {
            subnet: subnet.addr.octets(),
            gateway,
            prefix_len: subnet.prefix_len,
            _pad: [0; 3],
        };
        out.extend(
            links
                .iter()
                .filter(|l| l.controller == Some(bridge.ifindex))
                .map(|l| (l.name.clone(), l.ifindex, port)),
        );
    }
    Ok(out)
}
