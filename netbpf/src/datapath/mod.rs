//! Loading, attaching and configuring the datapath.
//!
//! [`Datapath::start`] does everything or nothing: it resolves the config
//! against the host (interfaces, addresses), loads the object, fills the
//! maps, attaches the programs and only then pins the maps. Any failure
//! before the end drops what was made (aya detaches programs when their
//! links are dropped) and leaves no pins behind.

mod attach;
mod error;
mod fill;
mod icc;
mod inside;
mod load;
mod resolve;
mod xdp;

use std::path::{Path, PathBuf};

use aya::{Ebpf, programs::TcAttachType};
use log::{info, warn};

use crate::{
    config::Config,
    maps::NatMaps,
    netdev::{self},
    owners, pins,
    ruleslock::RulesLock,
};

/// How long the daemon waits for a CNI plugin to release the rules lock
/// before it fills the maps without it.
const RULES_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

pub use crate::loader::programs;
use attach::{
    TcTarget, attach_sock_hooks, attach_tc_pinned, drop_severed_links, load_nat_programs,
};
pub use attach::{cgroup2_mount, netns_cookie};
pub use error::DatapathError;
use fill::RuleSnapshot;
pub use fill::{
    fill_masquerade, fill_masquerade_keeping, fill_publish, fill_publish_keeping, fill_settings,
};
pub use icc::{IccBridge, IccChange};
pub use load::{load, load_with_pins, prepare_pin_dir};
pub use resolve::{Resolved, inside_interfaces, resolve};
use resolve::{local_addresses, uplink_addresses};

/// A running datapath: programs attached, maps filled and pinned. Dropping
/// it detaches the programs; [`Datapath::stop`] also removes the pins.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    /// What the config resolved to.
    pub resolved: Resolved,
    /// Held while the daemon runs: one daemon per pin directory.
    _lock: pins::DaemonLock,
    routing: crate::containers::Routing,
    /// How the uplink's XDP program sends established inbound flows on
    /// (its flag, `NO_XDP` or `XDP_HANDOFF`, is kept set across reloads).
    xdp: xdp::XdpPath,
    /// Container-side interfaces attached for a rule owner (Docker's
    /// bridges), not for the config: [`Datapath::detach_inside`] may
    /// remove these only.
    owned_inside: Vec<String>,
    /// Bridge ports `netbpf_icc` is attached to in this run (name,
    /// ifindex), for the rule owner's [`Datapath::sync_icc`].
    icc_ports: Vec<(String, u32)>,
}

/// Where the datapath attaches besides the interfaces in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// cgroup v2 directory whose processes (in the daemon's network
    /// namespace) reach published ports through the socket hooks; `None`
    /// leaves host sockets alone.
    pub cgroup: Option<PathBuf>,
    /// Rules may arrive after start from an owner other than the config
    /// (the Docker follower): load the hairpin programs and attach the
    /// socket hooks even when the config has no published port.
    pub dynamic_rules: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cgroup: cgroup2_mount(),
            dynamic_rules: false,
        }
    }
}

impl Datapath {
    /// Validated config in, attached datapath out (or nothing changed),
    /// with the default [`Options`].
    pub fn start(config: &Config, pin_dir: &Path) -> Result<Self, DatapathError> {
        Self::start_with(config, pin_dir, &Options::default())
    }

    /// Validated config in, attached datapath out (or nothing changed).
    pub fn start_with(
        config: &Config,
        pin_dir: &Path,
        options: &Options,
    ) -> Result<Self, DatapathError> {
        let mut resolved = resolve(config)?;
        // Held from reading the owners to the fill: a CNI ADD in between
        // would otherwise lose its rules to the fill.
        let _rules = RulesLock::for_daemon(pin_dir, RULES_LOCK_WAIT);
        // Rules other owners (Docker, CNI) hold stay through a restart,
        // and their bridges keep their hairpin programs.
        let kept = owners::Kept::read(pin_dir).unwrap_or_else(|e| {
            warn!("rule owners unreadable, keeping only the config's rules: {e}");
            owners::Kept::default()
        });
        let mut owned_inside = Vec::new();
        for name in &kept.interfaces {
            if resolved.inside.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Ok(index) = netdev::ifindex(name) {
                resolved.inside.push((name.clone(), index));
                owned_inside.push(name.clone());
            }
        }
        prepare_pin_dir(pin_dir)?;
        let lock = pins::DaemonLock::acquire(pin_dir)?;
        let adopting = pins::is_pinned(pin_dir);
        if adopting {
            drop_severed_links(pin_dir)?;
        }
        let result = Self::attach_all(config, pin_dir, options, &resolved, &kept, adopting);
        let (ebpf, routing, xdp) = match result {
            Ok(parts) => parts,
            Err(e) => {
                // A fresh start leaves nothing behind. When adopting, the
                // earlier datapath keeps running: links not yet swapped
                // still hold the old programs.
                if !adopting {
                    crate::containers::remove_host_routes(pin_dir);
                    let _ = pins::down(pin_dir);
                }
                return Err(e);
            }
        };
        info!(
            "{} {} (ifindex {}), masquerading {} CIDR(s) to {}, {} published port rule(s); pinned in {}",
            if adopting {
                "adopted the pinned datapath on"
            } else {
                "attached to"
            },
            resolved.uplink,
            resolved.uplink_ifindex,
            config.masquerade.len(),
            resolved.uplink_addr,
            config.publish.len(),
            pin_dir.display()
        );
        let inside: Vec<&str> = resolved.inside.iter().map(|(n, _)| n.as_str()).collect();
        info!(
            "hairpinning on {} container-side interface(s): {}",
            inside.len(),
            inside.join(" ")
        );
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.to_owned(),
            resolved,
            routing,
            _lock: lock,
            xdp,
            owned_inside,
            icc_ports: Vec::new(),
        })
    }

    /// Loads (reusing pinned maps), fills, attaches through pinned links,
    /// and removes link pins the config no longer wants.
    fn attach_all(
        config: &Config,
        pin_dir: &Path,
        options: &Options,
        resolved: &Resolved,
        kept: &owners::Kept,
        adopting: bool,
    ) -> Result<(Ebpf, crate::containers::Routing, xdp::XdpPath), DatapathError> {
        let mut ebpf = load_with_pins(config, Some(pin_dir))?;
        if adopting {
            info!(
                "reusing the maps pinned in {}: flows carry over",
                pin_dir.display()
            );
        }
        if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf).map(spawn_log_relay) {
            warn!("kernel log relay unavailable: {e}");
        }
        // Verify every NAT program before anything shared changes: a
        // rejected program leaves an adopted datapath exactly as it was.
        let hooks =
            options.cgroup.is_some() && (!config.publish.is_empty() || options.dynamic_rules);
        let inside = !resolved.inside.is_empty() || options.dynamic_rules;
        load_nat_programs(&mut ebpf, inside, hooks)?;
        if options.dynamic_rules {
            attach::classifier(&mut ebpf, programs::ICC)?;
        }
        // The rule maps are shared with the running programs when adopting:
        // keep what they hold, to put it back if a later step fails.
        let before = if adopting {
            Some(RuleSnapshot::read(&mut ebpf)?)
        } else {
            None
        };
        match Self::fill_and_attach(&mut ebpf, config, pin_dir, options, resolved, kept) {
            Ok((routing, xdp)) => Ok((ebpf, routing, xdp)),
            Err(e) => {
                if let Some(before) = before {
                    match before.restore(&mut ebpf) {
                        Ok(()) => warn!("restart failed: the previous rules were put back"),
                        Err(r) => warn!(
                            "restart failed, and putting the previous rules back failed too: {:#}",
                            anyhow::Error::from(r)
                        ),
                    }
                }
                Err(e)
            }
        }
    }

    /// Fills the rule maps, attaches (or swaps into pinned links) every
    /// program, removes links no longer wanted, and starts routing. Also
    /// says how the uplink's XDP program sends established flows on.
    fn fill_and_attach(
        ebpf: &mut Ebpf,
        config: &Config,
        pin_dir: &Path,
        options: &Options,
        resolved: &Resolved,
        kept: &owners::Kept,
    ) -> Result<(crate::containers::Routing, xdp::XdpPath), DatapathError> {
        fill_masquerade_keeping(ebpf, config, resolved.uplink_addr, &kept.masquerade)?;
        fill_publish_keeping(ebpf, config, &resolved.local_addrs, &kept.publish)?;
        let uplink = |attach| TcTarget {
            ifname: &resolved.uplink,
            ifindex: resolved.uplink_ifindex,
            attach,
        };
        let mut wanted = vec![
            attach_tc_pinned(
                ebpf,
                programs::EGRESS,
                uplink(TcAttachType::Egress),
                pin_dir,
            )?,
            attach_tc_pinned(
                ebpf,
                programs::INGRESS,
                uplink(TcAttachType::Ingress),
                pin_dir,
            )?,
        ];
        for (ifname, ifindex) in &resolved.inside {
            let target = TcTarget {
                ifname,
                ifindex: *ifindex,
                attach: TcAttachType::Ingress,
            };
            // In this order: tcx appends, and the fast path takes only what
            // the hairpin passes.
            wanted.push(attach_tc_pinned(ebpf, programs::INSIDE, target, pin_dir)?);
            wanted.push(attach_tc_pinned(ebpf, programs::FAST_OUT, target, pin_dir)?);
        }
        let xdp_path = match Self::xdp_plan(config, resolved) {
            Some((mode, path, targets)) if path == xdp::XdpPath::Handoff || !targets.is_empty() => {
                xdp::fill_targets(ebpf, &targets)?;
                // The flag before the attach: the program must not redirect
                // natively.
                xdp::set_flags(ebpf, path)?;
                let up = (resolved.uplink.as_str(), resolved.uplink_ifindex);
                wanted.push(xdp::attach_pinned(ebpf, up, mode, pin_dir)?);
                match path {
                    xdp::XdpPath::Handoff => info!(
                        "XDP fast path: established inbound flows translated in XDP ({mode:?} mode), sent on by tc"
                    ),
                    _ => info!(
                        "XDP fast path: established inbound flows to {} interface(s) ({mode:?} mode)",
                        targets.len()
                    ),
                }
                path
            }
            _ => {
                xdp::fill_targets(ebpf, &[])?;
                xdp::set_flags(ebpf, xdp::XdpPath::Off)?;
                xdp::XdpPath::Off
            }
        };
        let xdp_on = xdp_path.on();
        if let Some(cgroup) = &options.cgroup
            && (!config.publish.is_empty() || options.dynamic_rules)
        {
            wanted.extend(attach_sock_hooks(ebpf, cgroup, pin_dir)?);
        }
        // Links an earlier daemon pinned that this config does not want
        // (an interface gone, publish removed): unpinning detaches them.
        for link in pins::pinned_links(pin_dir)? {
            // The owner's bridge ports keep theirs until its first sync
            // says which are still wanted ([`Datapath::sync_icc`]); routing
            // sorts out its own links when it starts.
            let owned = options.dynamic_rules && link.program == programs::ICC;
            let routing = matches!(
                link.program.as_str(),
                programs::CONTAINER | programs::ROUTE_IN
            ) || (link.program == programs::ARP && !xdp_on);
            if !wanted.contains(&link.path) && !owned && !routing {
                info!(
                    "detaching {} from {} (no longer configured)",
                    link.program, link.target
                );
                // At once, not when the kernel frees the unpinned link:
                // routing may attach `netbpf_arp` to the uplink next.
                let _ = pins::link_detach(&link.path);
                pins::remove_file(&link.path)?;
            }
        }
        let mut routing = crate::containers::Routing::start(
            ebpf,
            config,
            (&resolved.uplink, resolved.uplink_ifindex),
            xdp_on,
            pin_dir,
        )?;
        routing.follow_neighbours(pin_dir)?;
        Ok((routing, xdp_path))
    }

    /// The uplink's XDP mode, the way on, and the interfaces XDP may
    /// redirect to, when the config wants the XDP fast path and the uplink
    /// can be read.
    fn xdp_plan(
        config: &Config,
        resolved: &Resolved,
    ) -> Option<(aya::programs::XdpMode, xdp::XdpPath, Vec<u32>)> {
        if !config.datapath.xdp_fast_path() {
            return None;
        }
        let mut rtnl = crate::rtnl::Rtnl::open().ok()?;
        // A veth or a stacked device (`LinkInfo::uplink_xdp_mode`).
        let stacked = rtnl
            .link(resolved.uplink_ifindex, None)
            .ok()?
            .uplink_xdp_mode()
            == aya::programs::XdpMode::Skb;
        let (mode, path) = xdp::plan(config.datapath.xdp_mode, stacked);
        let targets = xdp::targets(&mut rtnl, path, &resolved.inside);
        Some((mode, path, targets))
    }

    /// Reconciles the routing programs with the container maps (containers
    /// added or removed by `netbpf containers add|del`); returns how many
    /// attachments changed.
    pub fn sync_routing(&mut self) -> Result<usize, DatapathError> {
        Ok(self.routing.sync(&mut self.ebpf)?)
    }

    /// Applies a reloaded config's masquerade and publish rules (SIGHUP):
    /// entries that stay are rewritten in place, removed ones are deleted,
    /// flows are not touched. The uplink, capacities and hooks need a
    /// restart.
    pub fn reload_rules(&mut self, config: &Config) -> Result<(), DatapathError> {
        if config.uplink.interface != self.resolved.uplink {
            warn!(
                "SIGHUP: uplink.interface changed to {}: restart the daemon to move the datapath",
                config.uplink.interface
            );
        }
        let local = local_addresses(self.resolved.uplink_addr)?;
        let networks =
            netdev::ipv4_networks(&self.resolved.uplink).map_err(DatapathError::Uplink)?;
        // Checked before any map changes: a reload that would lock the host
        // out leaves the running rules as they are.
        config
            .check_host_addresses(
                &uplink_addresses(self.resolved.uplink_addr, &networks),
                &local,
            )
            .map_err(DatapathError::Host)?;
        let _rules = RulesLock::for_daemon(&self.pin_dir, RULES_LOCK_WAIT);
        let kept = owners::Kept::read(&self.pin_dir).unwrap_or_else(|e| {
            warn!("rule owners unreadable, keeping only the config's rules: {e}");
            owners::Kept::default()
        });
        fill_masquerade_keeping(
            &mut self.ebpf,
            config,
            self.resolved.uplink_addr,
            &kept.masquerade,
        )?;
        xdp::set_flags(&mut self.ebpf, self.xdp)?;
        fill_publish_keeping(&mut self.ebpf, config, &local, &kept.publish)?;
        Ok(())
    }

    /// Applies a reloaded config's `[[container]]` list (SIGHUP); returns
    /// (added, removed).
    pub fn reload_containers(&mut self, config: &Config) -> Result<(usize, usize), DatapathError> {
        Ok(self.routing.reload(&mut self.ebpf, config)?)
    }

    /// The pinned NAT maps of this datapath.
    pub fn nat_maps(&self) -> Result<NatMaps, DatapathError> {
        Ok(NatMaps::open_pinned(&self.pin_dir)?)
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Stops the daemon's part: the NAT datapath and routed containers
    /// stay attached through their pinned links and keep their state in
    /// the pinned maps (and the containers their host routes), so traffic
    /// keeps flowing until the next daemon adopts it or [`down`] removes
    /// it.
    pub fn stop(mut self) -> Result<(), DatapathError> {
        self.routing.stop();
        drop(self.ebpf);
        Ok(())
    }
}

/// Removes a pinned datapath: detaches every program (by unpinning its
/// link) and removes the maps, dropping every flow.
pub fn down(pin_dir: &Path) -> Result<pins::DownReport, DatapathError> {
    let _lock = pins::DaemonLock::acquire(pin_dir)?;
    crate::containers::remove_host_routes(pin_dir);
    let report = pins::down(pin_dir)?;
    // The rules went with the maps: no owner holds any now.
    if let Err(e) = owners::remove_all(pin_dir) {
        warn!("forgetting the rule owners: {e}");
    }
    Ok(report)
}

/// Relays aya-log records from the kernel to the `log` crate.
fn spawn_log_relay(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        // SAFETY: the AsyncFd owns the logger, so the fd it polls stays open
        // for as long as it is registered.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let Ok(mut fd) = registered else {
            warn!("kernel log relay: cannot poll the log buffer");
            return;
        };
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    warn!("kernel log relay stopped: {e}");
                    return;
                }
            }
        }
    });
}
