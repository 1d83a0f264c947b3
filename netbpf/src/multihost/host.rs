//! One container host of the multi-host lab: its namespace, routed
//! containers, netbpf daemon and BIRD.

use std::{
    collections::BTreeSet,
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command},
};

use super::{bird::BirdDaemon, plan::*, racks::TorSession};
use crate::{
    lab::{self, Container, LabError},
    maps,
    netns::Netns,
};

/// One container host of the multi-host lab.
pub struct Host {
    /// Its routed containers (dropped before the host's namespace).
    pub containers: Vec<Container>,
    /// Its namespace.
    pub ns: Netns,
    /// 1-based index.
    pub index: usize,
    /// Uplink address.
    pub addr: Ipv4Addr,
    /// Where its daemon pins the maps.
    pub pin_dir: PathBuf,
    /// Its files: netbpf.toml, bird.conf, netbpf-bird.conf, logs, socket.
    pub dir: PathBuf,
    /// Its BIRD, once started.
    pub bird: Option<BirdDaemon>,
    /// More `[bgp]` keys for its config (lines such as
    /// `graceful_restart_time = 10`), empty by default.
    pub bgp_extra: String,
    pub(super) daemon: Option<Child>,
}

impl Host {
    /// The netbpf config of this host: its containers so far, `[bgp]` with
    /// every other host of `all` as an iBGP peer (full mesh), the route
    /// reflector as its only neighbour, or (racks) its own AS and an eBGP
    /// session with its rack's router.
    pub fn config_toml(&self, all: &[Ipv4Addr], topology: Topology) -> String {
        let mut s = String::from("[uplink]\ninterface = \"eth0\"\n");
        for c in &self.containers {
            s.push_str(&c.toml());
        }
        let local_as = topology.host_as(self.index);
        s.push_str(&format!(
            "\n[bgp]\nlocal_as = {local_as}\nrouter_id = \"{}\"\nsocket = \"{}\"\nconfig = \"{}\"\nmain_config = \"{}\"\n",
            self.addr,
            self.dir.join("bird.ctl").display(),
            self.dir.join("netbpf-bird.conf").display(),
            self.dir.join("bird.conf").display(),
        ));
        s.push_str(&self.bgp_extra);
        match topology {
            Topology::FullMesh => {
                for peer in all.iter().filter(|a| **a != self.addr) {
                    s.push_str(&format!(
                        "\n[[bgp.peer]]\naddress = \"{peer}\"\nas = {LAB_AS}\n"
                    ));
                }
            }
            Topology::Reflector => {
                s.push_str(&format!(
                    "\n[[bgp.reflector]]\naddress = \"{REFLECTOR_ADDR}\"\n"
                ));
            }
            Topology::HostReflector if self.index == 1 => {
                for client in all.iter().filter(|a| **a != self.addr) {
                    s.push_str(&format!("\n[[bgp.client]]\naddress = \"{client}\"\n"));
                }
            }
            Topology::HostReflector => {
                s.push_str(&format!(
                    "\n[[bgp.reflector]]\naddress = \"{}\"\n",
                    host_addr(1)
                ));
            }
            Topology::Racks(plan) => s.push_str(&tor_peer_toml(&plan.session(self.index))),
        }
        s
    }

    /// BIRD's main config for this host (written by the daemon).
    pub fn bird_conf(&self) -> PathBuf {
        self.dir.join("bird.conf")
    }

    /// Starts (or restarts) this host's BIRD on the config netbpf wrote.
    pub fn start_bird(&mut self, recover: bool) -> Result<(), LabError> {
        if let Some(mut b) = self.bird.take() {
            b.kill();
        }
        self.bird = Some(BirdDaemon::start(
            &self.ns,
            &self.bird_conf(),
            &self.dir,
            recover,
        )?);
        Ok(())
    }

    /// Container addresses in this host's kernel table with `proto bird`:
    /// what BIRD learned and installed.
    pub fn kernel_bgp_routes(&self) -> Result<BTreeSet<Ipv4Addr>, LabError> {
        let out = self.ns.ip(&["-4", "route", "show", "proto", "bird"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|p| p.split('/').next().and_then(|a| a.parse().ok()))
            .collect())
    }

    /// IPv6 addresses in this host's kernel table with `proto bird`: the
    /// other hosts' containers' /128s BIRD learned and installed.
    pub fn kernel_bgp_routes6(&self) -> Result<BTreeSet<Ipv6Addr>, LabError> {
        let out = self.ns.ip(&["-6", "route", "show", "proto", "bird"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|p| p.split('/').next().and_then(|a| a.parse().ok()))
            .collect())
    }

    /// Gives this host and its containers IPv6: [`host_addr6`]/64 on the
    /// uplink (no duplicate address detection), IPv6 forwarding, and
    /// container `i` [`container_addr6`] (see [`Container::wire_ipv6`]),
    /// which its `[[container]]` table then carries, so that the daemon
    /// announces it as a /128 on the sessions' IPv6 channels.
    pub fn wire_ipv6(&mut self) -> Result<(), LabError> {
        let h = self.index;
        let a = format!("{}/64", host_addr6(h));
        self.ns
            .ip(&["-6", "addr", "add", &a, "dev", "eth0", "nodad"])?;
        self.ns.sysctl("net.ipv6.conf.all.forwarding=1")?;
        for (i, c) in self.containers.iter_mut().enumerate() {
            c.wire_ipv6(container_addr6(h, i + 1))?;
        }
        Ok(())
    }

    /// Adds a routed container `10.10.h.i` wired like Calico's (a /32,
    /// default via 169.254.1.1 onlink). netbpf does not know it yet: add it
    /// to the config or with `netbpf containers add`.
    pub fn wire_container(&mut self, prefix: &str, i: usize) -> Result<&Container, LabError> {
        let h = self.index;
        let c = Container::routed(
            &self.ns,
            &format!("{prefix}-h{h}c{i}"),
            format!("veth-c{i}"),
            container_addr(h, i),
        )?;
        self.containers.push(c);
        let last = self.containers.len() - 1;
        Ok(&self.containers[last])
    }

    /// Removes container `addr`'s namespace (call `netbpf containers del`
    /// first).
    pub fn unwire_container(&mut self, addr: Ipv4Addr) {
        self.containers.retain(|c| c.addr != addr);
    }

    /// A `netbpf` command aimed at this host's daemon (`--netns`,
    /// `--pin-dir`); the caller adds the subcommand.
    pub fn netbpf(&self, exe: &Path) -> Command {
        let mut cmd = Command::new(exe);
        cmd.arg("--netns")
            .arg(self.ns.name())
            .arg("--pin-dir")
            .arg(&self.pin_dir);
        cmd
    }

    pub(super) fn start_daemon(
        &mut self,
        exe: &Path,
        all: &[Ipv4Addr],
        topology: Topology,
    ) -> Result<(), LabError> {
        let mut cmd = self.netbpf(exe);
        cmd.arg("daemon");
        lab::launch_daemon(
            cmd,
            &self.dir,
            &self.config_toml(all, topology),
            &["--cgroup", "none"],
            &mut self.daemon,
            &format!("host {}: ", self.index),
        )
    }

    pub(super) fn stop_daemon(&mut self) {
        if let Some(child) = self.daemon.take() {
            crate::lab::terminate(child);
        }
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

/// The `[[bgp.peer]]` of a host's session with its rack's router.
fn tor_peer_toml(t: &TorSession) -> String {
    let mut s = format!(
        "\n[[bgp.peer]]\naddress = \"{}\"\nas = {}\n",
        t.tor_addr, t.tor_as
    );
    if let Some(n) = t.multihop {
        s.push_str(&format!("multihop = {n}\n"));
    }
    if let Some(pw) = t.password {
        s.push_str(&format!("password = \"{pw}\"\n"));
    }
    if let Some(nh) = t.next_hop {
        s.push_str(&format!("next_hop = \"{}\"\n", nh.as_str()));
    }
    s
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop_daemon();
        if let Some(mut b) = self.bird.take() {
            b.kill();
        }
        // The datapath stays pinned after the daemon stops: remove it.
        let _ = maps::unpin_all(&self.pin_dir);
        let _ = crate::owners::remove_all(&self.pin_dir);
    }
}
