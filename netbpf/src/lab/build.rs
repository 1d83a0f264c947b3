//! The lab itself: namespaces, veths and addresses, the daemon started in it, everything removed on drop.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    maps::{self, NatMaps},
    netns::{self, Netns},
};

use super::{error::*, plan::*};

/// A container in the lab.
#[derive(Debug)]
pub struct Container {
    /// Its namespace.
    pub ns: Netns,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Host side of its veth.
    pub host_veth: String,
    /// Its IPv6 address, once [`Container::wire_ipv6`] gave it one (then
    /// the configs the lab writes route it too).
    pub ipv6: Option<Ipv6Addr>,
}

impl Container {
    /// A routed container in a new namespace `name`, wired like Calico's
    /// (a /32, default via 169.254.1.1 onlink) to `host_veth` on `host`.
    pub fn routed(
        host: &Netns,
        name: &str,
        host_veth: String,
        addr: Ipv4Addr,
    ) -> Result<Container, LabError> {
        let ns = Netns::create(name)?;
        netns::veth(host, &host_veth, &ns, "eth0")?;
        netns::wire_calico(&ns, addr)?;
        Ok(Container {
            ns,
            addr,
            host_veth,
            ipv6: None,
        })
    }

    /// Gives the container the IPv6 address `addr`, wired the Calico way
    /// for IPv6: a /128 (no duplicate address detection) and the default
    /// route via `fe80::1`, which netbpf answers for.
    pub fn wire_ipv6(&mut self, addr: Ipv6Addr) -> Result<(), LabError> {
        let a = format!("{addr}/128");
        self.ns
            .ip(&["-6", "addr", "add", &a, "dev", "eth0", "nodad"])?;
        self.ns.ip(&[
            "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
        ])?;
        self.ipv6 = Some(addr);
        Ok(())
    }

    /// Its `[[container]]` table.
    pub fn toml(&self) -> String {
        let mut s = format!(
            "\n[[container]]\naddress = \"{}\"\ninterface = \"{}\"\n",
            self.addr, self.host_veth
        );
        if let Some(v6) = self.ipv6 {
            s.push_str(&format!("ipv6 = \"{v6}\"\n"));
        }
        s
    }
}

/// How the host's uplink is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wiring {
    /// One veth to the outside machine.
    Outside,
    /// A bridge joining the host, the outside machine and a peer.
    Segment,
    /// One veth to a peer, made straight into both namespaces.
    DirectPeer,
}

/// The lab topology. Dropping it stops the daemon and removes every
/// namespace, pin and file it made.
pub struct Lab {
    /// Prefix of every namespace name.
    pub prefix: String,
    /// Containers first, so they are removed before the host.
    pub containers: Vec<Container>,
    /// Routed containers (`[[container]]`, 10.0.1.101...), if any.
    pub routed: Vec<Container>,
    /// A machine on the uplink's segment (present with routed containers).
    pub peer: Option<Netns>,
    /// The segment: a bridge joining the host's uplink, the outside
    /// machine and the peer (present with routed containers; otherwise the
    /// host and the outside machine share a veth pair).
    pub segment: Option<Netns>,
    /// The outside machine.
    pub outside: Netns,
    /// The container host (netbpf runs here).
    pub host: Netns,
    /// Where the daemon pins its maps.
    pub pin_dir: PathBuf,
    /// Scratch directory (config file, daemon log).
    pub dir: PathBuf,
    pub(crate) daemon: Option<Child>,
}

impl Lab {
    /// Builds the topology with `n` containers under namespace prefix
    /// `prefix` (which must be unique to the caller).
    pub fn build(prefix: &str, n: usize) -> Result<Self, LabError> {
        Self::build_with(prefix, n, 0)
    }

    /// Builds the topology with `n` masqueraded containers and `routed`
    /// routed containers. With routed containers the uplink's link is a
    /// bridge (in namespace `{prefix}-seg`) that also holds a peer machine
    /// (`{prefix}-peer`, [`PEER_ADDR`]/24 and nothing else), and the host's
    /// uplink also gets [`SEGMENT_HOST_ADDR`]/24.
    pub fn build_with(prefix: &str, n: usize, routed: usize) -> Result<Self, LabError> {
        let wiring = if routed == 0 {
            Wiring::Outside
        } else {
            Wiring::Segment
        };
        Self::build_wired(prefix, n, routed, wiring)
    }

    /// Builds `routed` routed containers with a peer machine
    /// (`{prefix}-peer`, [`PEER_ADDR`]/24) wired straight to the host's
    /// uplink by one veth made directly into the two fresh namespaces, so
    /// that both ends have the same index (2) in their own namespace. The
    /// outside machine exists but is not wired.
    pub fn build_direct_peer(prefix: &str, routed: usize) -> Result<Self, LabError> {
        Self::build_wired(prefix, 0, routed, Wiring::DirectPeer)
    }

    pub(crate) fn build_wired(
        prefix: &str,
        n: usize,
        routed: usize,
        wiring: Wiring,
    ) -> Result<Self, LabError> {
        let host = Netns::create(&format!("{prefix}-host"))?;
        let outside = Netns::create(&format!("{prefix}-out"))?;
        let dir = std::env::temp_dir().join(prefix);
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut lab = Lab {
            prefix: prefix.to_owned(),
            containers: Vec::new(),
            routed: Vec::new(),
            peer: None,
            segment: None,
            outside,
            host,
            pin_dir: PathBuf::from("/sys/fs/bpf").join(prefix),
            dir,
            daemon: None,
        };
        // Leftovers of an earlier run under the same prefix.
        let _ = maps::unpin_all(&lab.pin_dir);
        let _ = crate::owners::remove_all(&lab.pin_dir);

        match wiring {
            Wiring::Outside => netns::veth(&lab.host, "eth0", &lab.outside, "eth0")?,
            Wiring::Segment => lab.build_segment()?,
            Wiring::DirectPeer => {
                let peer = Netns::create(&format!("{prefix}-peer"))?;
                netns::veth(&lab.host, "eth0", &peer, "eth0")?;
                peer.ip(&["addr", "add", &format!("{PEER_ADDR}/24"), "dev", "eth0"])?;
                lab.peer = Some(peer);
            }
        }
        let up = format!("{UPLINK_ADDR}/24");
        let out = format!("{OUTSIDE_ADDR}/24");
        lab.host.ip(&["addr", "add", &up, "dev", "eth0"])?;
        if wiring != Wiring::DirectPeer {
            lab.outside.ip(&["addr", "add", &out, "dev", "eth0"])?;
        }
        if lab.peer.is_some() {
            // Second, so the uplink's first address (the masquerade
            // address) stays UPLINK_ADDR.
            let seg_host = format!("{SEGMENT_HOST_ADDR}/24");
            lab.host.ip(&["addr", "add", &seg_host, "dev", "eth0"])?;
        }
        // The outside machine is the host's internet: default route to it.
        lab.host
            .ip(&["route", "add", "default", "via", &OUTSIDE_ADDR.to_string()])?;
        lab.host.sysctl("net.ipv4.ip_forward=1")?;
        for i in 1..=n {
            lab.add_container(i)?;
        }
        for i in 1..=routed {
            lab.add_routed(i)?;
        }
        Ok(lab)
    }

    /// The bridge joining host, outside and peer, and the peer.
    pub(crate) fn build_segment(&mut self) -> Result<(), LabError> {
        let seg = Netns::create(&format!("{}-seg", self.prefix))?;
        let peer = Netns::create(&format!("{}-peer", self.prefix))?;
        seg.ip(&["link", "add", "br0", "type", "bridge"])?;
        seg.ip(&["link", "set", "br0", "up"])?;
        for (ns, port) in [
            (&self.host, "p-host"),
            (&self.outside, "p-out"),
            (&peer, "p-peer"),
        ] {
            netns::veth(&seg, port, ns, "eth0")?;
            seg.ip(&["link", "set", port, "master", "br0"])?;
        }
        peer.ip(&["addr", "add", &format!("{PEER_ADDR}/24"), "dev", "eth0"])?;
        self.segment = Some(seg);
        self.peer = Some(peer);
        Ok(())
    }

    /// Routed container `rI`: wired like the others (a /32, default via
    /// 169.254.1.1 onlink), but without proxy_arp and without a host route:
    /// netbpf answers its ARP and installs the route.
    pub(crate) fn add_routed(&mut self, i: usize) -> Result<(), LabError> {
        let c = Container::routed(
            &self.host,
            &format!("{}-r{i}", self.prefix),
            format!("veth-r{i}"),
            Ipv4Addr::new(10, 0, 1, 100 + i as u8),
        )?;
        self.routed.push(c);
        Ok(())
    }

    /// Gives the lab IPv6 next to IPv4 on the uplink's segment: the host's
    /// uplink [`SEGMENT_HOST_ADDR6`]/64, the peer [`PEER_ADDR6`]/64 (both
    /// without duplicate address detection), IPv6 forwarding on the host,
    /// and routed container `rN` [`routed_addr6`]`(N)` (see
    /// [`Container::wire_ipv6`]), which its `[[container]]` table then
    /// carries. Masqueraded containers get none: there is no NAT66.
    pub fn wire_ipv6(&mut self) -> Result<(), LabError> {
        let host6 = format!("{SEGMENT_HOST_ADDR6}/64");
        self.host
            .ip(&["-6", "addr", "add", &host6, "dev", "eth0", "nodad"])?;
        if let Some(peer) = &self.peer {
            let peer6 = format!("{PEER_ADDR6}/64");
            peer.ip(&["-6", "addr", "add", &peer6, "dev", "eth0", "nodad"])?;
        }
        self.host.sysctl("net.ipv6.conf.all.forwarding=1")?;
        for (i, c) in self.routed.iter_mut().enumerate() {
            c.wire_ipv6(routed_addr6(i + 1))?;
        }
        Ok(())
    }

    /// `[[container]]` tables for every routed container.
    pub fn routed_toml(&self) -> String {
        let all: Vec<usize> = (0..self.routed.len()).collect();
        self.routed_toml_for(&all)
    }

    /// `[[container]]` tables for the routed containers at `indexes`.
    pub fn routed_toml_for(&self, indexes: &[usize]) -> String {
        indexes
            .iter()
            .filter_map(|&i| self.routed.get(i))
            .map(Container::toml)
            .collect()
    }

    /// Rewrites the running daemon's config file with `extra` (see
    /// [`Lab::config_toml`]); send SIGHUP to apply what can be reloaded.
    pub fn rewrite_config(&self, extra: &str) -> Result<(), LabError> {
        let config = self.dir.join("netbpf.toml");
        fs::write(&config, self.config_toml(extra))
            .map_err(io_err(format!("writing {}", config.display())))
    }

    /// Sends `signal` to the daemon, if it runs.
    pub fn signal_daemon(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.daemon {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }

    pub(crate) fn add_container(&mut self, i: usize) -> Result<(), LabError> {
        let ns = Netns::create(&format!("{}-c{i}", self.prefix))?;
        let addr = Ipv4Addr::new(10, 77, 0, 1 + i as u8);
        let host_veth = format!("veth-c{i}");
        netns::veth(&self.host, &host_veth, &ns, "eth0")?;
        let a = addr.to_string();
        netns::wire_calico(&ns, addr)?;
        self.host
            .ip(&["route", "add", &format!("{a}/32"), "dev", &host_veth])?;
        self.host
            .sysctl(&format!("net.ipv4.conf.{host_veth}.proxy_arp=1"))?;
        self.containers.push(Container {
            ns,
            addr,
            host_veth,
            ipv6: None,
        });
        Ok(())
    }

    /// The config the lab runs netbpf with; `extra` is appended verbatim.
    pub fn config_toml(&self, extra: &str) -> String {
        format!(
            "[uplink]\ninterface = \"eth0\"\n\n[[masquerade]]\nsource = \"{CONTAINER_CIDR}\"\n{extra}"
        )
    }

    /// Starts `exe daemon` in the host namespace with [`Lab::config_toml`]
    /// and waits until its maps are pinned.
    pub fn start_daemon(&mut self, exe: &Path, extra_toml: &str) -> Result<(), LabError> {
        self.start_daemon_with(exe, extra_toml, &[])
    }

    /// [`Lab::start_daemon`] with extra `daemon` arguments.
    pub fn start_daemon_with(
        &mut self,
        exe: &Path,
        extra_toml: &str,
        daemon_args: &[&str],
    ) -> Result<(), LabError> {
        // `--netns` rather than `ip netns exec`: the latter gives the daemon
        // its own mount namespace, where its pins would be invisible to us.
        let mut cmd = Command::new(exe);
        cmd.arg("--netns")
            .arg(self.host.name())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("daemon");
        let mut args = vec!["--gc-interval", "1"];
        args.extend_from_slice(daemon_args);
        launch_daemon(
            cmd,
            &self.dir,
            &self.config_toml(extra_toml),
            &args,
            &mut self.daemon,
            "",
        )
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Kills the daemon with SIGKILL (no clean-up at all) and waits for it;
    /// returns its log.
    pub fn kill_daemon(&mut self) -> Result<String, LabError> {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default())
    }

    /// Stops the daemon with SIGTERM and waits for it; returns its log.
    pub fn stop_daemon(&mut self) -> Result<String, LabError> {
        if let Some(child) = self.daemon.take() {
            terminate(child);
        }
        Ok(fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default())
    }

    /// The daemon's maps.
    pub fn nat_maps(&self) -> Result<NatMaps, maps::MapsError> {
        NatMaps::open_pinned(&self.pin_dir)
    }
}

/// Stops a daemon child with SIGTERM, waiting up to 10 s before SIGKILL.
pub fn terminate(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.stop_daemon();
        let _ = maps::unpin_all(&self.pin_dir);
        let _ = crate::owners::remove_all(&self.pin_dir);
        let _ = fs::remove_file(crate::ruleslock::RulesLock::path_for(&self.pin_dir));
        let _ = fs::remove_dir_all(&self.dir);
        // Namespaces are removed by their own Drop.
    }
}

/// Starts `cmd` (a `netbpf ... daemon` command) with `--config` (the file
/// `dir/netbpf.toml`, written from `config_toml`) and then `args`, its
/// output in `dir/daemon.log`, into `daemon`; then waits up to 20 s for it
/// to say it runs (maps are pinned as soon as they are created; the log
/// line says everything is attached). If it exits first, `daemon` is
/// cleared again. `who` starts its error messages (`host 2: `, or empty).
pub(crate) fn launch_daemon(
    mut cmd: Command,
    dir: &Path,
    config_toml: &str,
    args: &[&str],
    daemon: &mut Option<Child>,
    who: &str,
) -> Result<(), LabError> {
    let config = dir.join("netbpf.toml");
    fs::write(&config, config_toml).map_err(io_err(format!("writing {}", config.display())))?;
    let log_path = dir.join("daemon.log");
    let log = fs::File::create(&log_path).map_err(io_err("creating the daemon log"))?;
    let log2 = log.try_clone().map_err(io_err("duplicating the log fd"))?;
    let child = cmd
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(io_err("starting the daemon"))?;
    *daemon = Some(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("running; Ctrl-C or SIGTERM stops") {
            return Ok(());
        }
        if let Some(child) = daemon.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            *daemon = None;
            return Err(LabError::Daemon(format!(
                "{who}exited with {status}: {log}"
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(LabError::Daemon(format!(
        "{who}not running after 20 s: {}",
        fs::read_to_string(&log_path).unwrap_or_default()
    )))
}
