//! The lab's route reflector (`lab --hosts N --reflector`): a router
//! namespace on the segment running BIRD alone, with every host as its
//! route-reflector client. Its BIRD config is rendered by the same code
//! as a netbpf host's (`bgp::render_main`, `bgp::render_fragment`), from
//! a `[bgp]` with one `[[bgp.client]]` per host.

use std::{
    collections::BTreeSet,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use super::{bird::BirdDaemon, plan::*};
use crate::{
    bgp,
    config::{
        BgpConfig, BgpPeer, DEFAULT_BGP_GRACEFUL_RESTART_TIME, DEFAULT_BGP_RECEIVE_LIMIT, Ipv4Cidr,
        PeerRole,
    },
    lab::{LabError, io_err},
    netns::{self, Netns},
};

/// BIRD as a route reflector in its own namespace. Dropping it stops
/// BIRD, then removes the namespace.
pub struct ReflectorRouter {
    /// Its BIRD, once started (dropped before the namespace).
    pub bird: Option<BirdDaemon>,
    /// Its namespace, `{prefix}-rr`, with `eth0` at [`REFLECTOR_ADDR`].
    pub ns: Netns,
    /// Its files: bird.conf, netbpf-bird.conf, the socket and the log.
    pub dir: PathBuf,
}

impl ReflectorRouter {
    /// Creates the namespace and plugs it into the segment's bridge.
    pub fn build(prefix: &str, segment: &Netns, dir: &Path) -> Result<Self, LabError> {
        let ns = Netns::create(&format!("{prefix}-rr"))?;
        netns::veth(segment, "p-rr", &ns, "eth0")?;
        segment.ip(&["link", "set", "p-rr", "master", "br0"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{REFLECTOR_ADDR}/24"),
            "dev",
            "eth0",
        ])?;
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        Ok(ReflectorRouter {
            bird: None,
            ns,
            dir: dir.to_path_buf(),
        })
    }

    /// The `[bgp]` of the reflector: AS [`LAB_AS`], router id and cluster
    /// id [`REFLECTOR_ADDR`], each of `clients` a `[[bgp.client]]`.
    pub fn bgp_config(&self, clients: &[Ipv4Addr]) -> BgpConfig {
        BgpConfig {
            local_as: LAB_AS,
            router_id: REFLECTOR_ADDR,
            socket: self.dir.join("bird.ctl"),
            config: self.dir.join("netbpf-bird.conf"),
            main_config: self.dir.join("bird.conf"),
            block: None,
            import_min_len: 32,
            receive_limit: DEFAULT_BGP_RECEIVE_LIMIT,
            graceful_restart_time: DEFAULT_BGP_GRACEFUL_RESTART_TIME,
            peers: clients
                .iter()
                .map(|&address| BgpPeer::new(address, LAB_AS, PeerRole::Client))
                .collect(),
            cluster_id: Some(REFLECTOR_ADDR),
        }
    }

    /// Writes the reflector's BIRD config for `clients` and starts BIRD.
    pub fn start(&mut self, clients: &[Ipv4Addr]) -> Result<(), LabError> {
        let cfg = self.bgp_config(clients);
        // Nothing inside the segment is learned (as on the hosts).
        let own = [Ipv4Cidr {
            addr: Ipv4Addr::new(10, 0, 0, 0),
            prefix_len: 24,
        }];
        let err = |e: bgp::BgpError| LabError::Daemon(format!("reflector config: {e}"));
        bgp::write_atomic(&cfg.main_config, &bgp::render_main(&cfg)).map_err(err)?;
        bgp::write_atomic(
            &cfg.config,
            &bgp::render_fragment(&cfg, &own, &BTreeSet::new(), &BTreeSet::new()),
        )
        .map_err(err)?;
        if let Some(mut b) = self.bird.take() {
            b.kill();
        }
        self.bird = Some(BirdDaemon::start(
            &self.ns,
            &cfg.main_config,
            &self.dir,
            false,
        )?);
        Ok(())
    }
}
