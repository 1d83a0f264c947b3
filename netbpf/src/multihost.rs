//! The multi-host lab: several container hosts in namespaces on one
//! Ethernet segment, each with routed containers, a netbpf daemon and a
//! BIRD daemon; the hosts peer over iBGP in a full mesh and carry each
//! other's container routes (`netbpf lab --hosts N`, and `tests/bgp.rs`).
//!
//! ```text
//!   {prefix}-h1c1 10.10.1.1 ─┐                                ┌─ {prefix}-h2c1 10.10.2.1
//!   {prefix}-h1c2 10.10.1.2 ─┤ {prefix}-h1                    ├─ {prefix}-h2c2 10.10.2.2
//!                            └ eth0 10.0.0.11 ─┐   ┌─ eth0 10.0.0.12 ┘ {prefix}-h2
//!                                              br0 ({prefix}-seg, 10.0.0.0/24)
//!                                                  └─ eth0 10.0.0.13   {prefix}-h3 ...
//! ```
//!
//! Host `h` has uplink `10.0.0.(10+h)/24`, AS [`LAB_AS`], and routed
//! containers `10.10.h.i/32` (veth `veth-c{i}`). The container addresses
//! are not on the segment's subnet: the only way another host knows where
//! they are is the BGP route BIRD installs (`10.10.2.1 via 10.0.0.12 dev
//! eth0 proto bird`).
//!
//! Everything lives in namespaces, pins under `/sys/fs/bpf/{prefix}-hN`
//! and files under a temporary directory; all of it goes on drop.

use std::{
    collections::BTreeSet,
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    bgp,
    lab::{self, Container, LabError, SERVICE_PORT, Transport, WhoamiServer, io_err},
    maps,
    netns::{self, Netns},
    rows::indent,
};

/// The AS every lab host is in (iBGP full mesh).
pub const LAB_AS: u32 = 64512;

/// The segment's subnet.
pub const SEGMENT: &str = "10.0.0.0/24";

/// Host `h`'s uplink address.
pub fn host_addr(h: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 10 + h as u8)
}

/// Container `i` of host `h`.
pub fn container_addr(h: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 10, h as u8, i as u8)
}

/// A BIRD daemon running in the foreground inside a namespace, with its
/// own config, control socket and pid file. Killed on drop.
pub struct BirdDaemon {
    child: Option<Child>,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    pid_file: PathBuf,
}

impl BirdDaemon {
    /// Starts `bird -f -c CONF -s SOCK -P PID` in `ns` (with `-R`, graceful
    /// restart recovery, when `recover`) and waits until its socket answers.
    pub fn start(ns: &Netns, conf: &Path, dir: &Path, recover: bool) -> Result<Self, LabError> {
        let socket = dir.join("bird.ctl");
        let pid_file = dir.join("bird.pid");
        let log = dir.join("bird.log");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("duplicating the log fd"))?;
        let mut cmd = ns.command("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(&pid_file);
        if recover {
            cmd.arg("-R");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(
                "starting bird (is bird2 installed? `cargo xtask setup`)",
            ))?;
        let mut daemon = BirdDaemon {
            child: Some(child),
            socket,
            log,
            pid_file,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if bgp::BirdClient::connect(&daemon.socket).is_ok() {
                return Ok(daemon);
            }
            if let Some(c) = daemon.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                daemon.child = None;
                return Err(LabError::Daemon(format!(
                    "bird exited with {status}: {}",
                    fs::read_to_string(&daemon.log).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(LabError::Daemon(format!(
                    "bird's socket {} did not answer within 10 s",
                    daemon.socket.display()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills BIRD at once (SIGKILL: no goodbye to its peers, like a crash)
    /// and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(&self.pid_file);
    }
}

impl Drop for BirdDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

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
    daemon: Option<Child>,
}

impl Host {
    /// The netbpf config of this host: its containers so far, `[bgp]` with
    /// every other host of `all` as an iBGP peer.
    pub fn config_toml(&self, all: &[Ipv4Addr]) -> String {
        let mut s = String::from("[uplink]\ninterface = \"eth0\"\n");
        for c in &self.containers {
            s.push_str(&format!(
                "\n[[container]]\naddress = \"{}\"\ninterface = \"{}\"\n",
                c.addr, c.host_veth
            ));
        }
        s.push_str(&format!(
            "\n[bgp]\nlocal_as = {LAB_AS}\nrouter_id = \"{}\"\nsocket = \"{}\"\nconfig = \"{}\"\nmain_config = \"{}\"\n",
            self.addr,
            self.dir.join("bird.ctl").display(),
            self.dir.join("netbpf-bird.conf").display(),
            self.dir.join("bird.conf").display(),
        ));
        for peer in all.iter().filter(|a| **a != self.addr) {
            s.push_str(&format!(
                "\n[[bgp.peer]]\naddress = \"{peer}\"\nas = {LAB_AS}\n"
            ));
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

    fn start_daemon(&mut self, exe: &Path, all: &[Ipv4Addr]) -> Result<(), LabError> {
        let mut cmd = self.netbpf(exe);
        cmd.arg("daemon");
        lab::launch_daemon(
            cmd,
            &self.dir,
            &self.config_toml(all),
            &["--cgroup", "none"],
            &mut self.daemon,
            &format!("host {}: ", self.index),
        )
    }

    fn stop_daemon(&mut self) {
        if let Some(child) = self.daemon.take() {
            crate::lab::terminate(child);
        }
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
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

/// The multi-host lab. Dropping it stops every daemon and removes every
/// namespace, pin and file.
pub struct MultiHost {
    /// Prefix of every namespace name.
    pub prefix: String,
    /// The hosts (dropped before the segment).
    pub hosts: Vec<Host>,
    /// The segment: bridge `br0` joining the hosts' uplinks.
    pub segment: Netns,
    /// Scratch directory.
    pub dir: PathBuf,
}

impl MultiHost {
    /// Builds `hosts` hosts with `per_host` routed containers each
    /// (nothing started yet).
    pub fn build(prefix: &str, hosts: usize, per_host: usize) -> Result<Self, LabError> {
        let dir = std::env::temp_dir().join(prefix);
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let segment = Netns::create(&format!("{prefix}-seg"))?;
        segment.ip(&["link", "add", "br0", "type", "bridge"])?;
        segment.ip(&["link", "set", "br0", "up"])?;
        let mut lab = MultiHost {
            prefix: prefix.to_owned(),
            hosts: Vec::new(),
            segment,
            dir,
        };
        for h in 1..=hosts {
            let ns = Netns::create(&format!("{prefix}-h{h}"))?;
            let port = format!("p-h{h}");
            netns::veth(&lab.segment, &port, &ns, "eth0")?;
            lab.segment.ip(&["link", "set", &port, "master", "br0"])?;
            let addr = host_addr(h);
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ns.sysctl("net.ipv4.ip_forward=1")?;
            let hdir = lab.dir.join(format!("h{h}"));
            fs::create_dir_all(&hdir).map_err(io_err(format!("creating {}", hdir.display())))?;
            let pin_dir = PathBuf::from("/sys/fs/bpf").join(format!("{prefix}-h{h}"));
            let _ = maps::unpin_all(&pin_dir);
            let _ = crate::owners::remove_all(&pin_dir);
            let mut host = Host {
                containers: Vec::new(),
                ns,
                index: h,
                addr,
                pin_dir,
                dir: hdir,
                bird: None,
                daemon: None,
            };
            for i in 1..=per_host {
                host.wire_container(prefix, i)?;
            }
            lab.hosts.push(host);
        }
        Ok(lab)
    }

    /// Every host's uplink address.
    pub fn host_addrs(&self) -> Vec<Ipv4Addr> {
        self.hosts.iter().map(|h| h.addr).collect()
    }

    /// Starts every host's netbpf daemon (which writes BIRD's config) and
    /// then its BIRD.
    pub fn start(&mut self, exe: &Path) -> Result<(), LabError> {
        let all = self.host_addrs();
        for h in &mut self.hosts {
            h.start_daemon(exe, &all)?;
        }
        for h in &mut self.hosts {
            h.start_bird(false)?;
        }
        Ok(())
    }

    /// Waits until every host's kernel has a BGP route for every other
    /// host's containers (and none for addresses no other host has);
    /// returns how long it took.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration, LabError> {
        let start = Instant::now();
        loop {
            let mut missing = Vec::new();
            for h in &self.hosts {
                let want: BTreeSet<Ipv4Addr> = self
                    .hosts
                    .iter()
                    .filter(|o| o.index != h.index)
                    .flat_map(|o| o.containers.iter().map(|c| c.addr))
                    .collect();
                let have = h.kernel_bgp_routes()?;
                if have != want {
                    missing.push(format!("host {}: have {have:?}, want {want:?}", h.index));
                }
            }
            if missing.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(LabError::Daemon(format!(
                    "BGP did not converge within {timeout:?}: {}",
                    missing.join("; ")
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whoami servers (TCP and UDP on [`SERVICE_PORT`]) in every container.
    pub fn serve(&self) -> Result<Vec<WhoamiServer>, LabError> {
        let mut servers = Vec::new();
        for h in &self.hosts {
            for c in &h.containers {
                for t in [Transport::Tcp, Transport::Udp] {
                    servers.push(WhoamiServer::spawn(
                        &c.ns,
                        t,
                        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT),
                        &format!("container {} on host {}: you are", c.addr, h.index),
                    )?);
                }
            }
        }
        Ok(servers)
    }
}

impl Drop for MultiHost {
    fn drop(&mut self) {
        // Hosts (daemons, containers, namespaces) before their files.
        self.hosts.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `netbpf lab --hosts N`: builds the multi-host lab, shows every container
/// reaching every container on the other hosts by its own IP, the BGP
/// sessions and routes that made it possible, then removes everything
/// (after Ctrl-C, or at once with `once`).
pub async fn run_demo(exe: &Path, prefix: &str, hosts: usize, once: bool) -> anyhow::Result<()> {
    let hosts = hosts.clamp(2, 9);
    println!(
        "netbpf multi-host lab: {hosts} hosts on segment {SEGMENT} (namespaces {prefix}-*; the host's own network is not touched)"
    );
    let mut lab = MultiHost::build(prefix, hosts, 2)?;
    for h in &lab.hosts {
        println!(
            "  host {} ({}-h{}): uplink {}/24, AS {LAB_AS}, containers {}",
            h.index,
            prefix,
            h.index,
            h.addr,
            h.containers
                .iter()
                .map(|c| c.addr.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let _servers = lab.serve()?;
    lab.start(exe)?;
    println!("  netbpf and BIRD running on every host (iBGP full mesh); waiting for the routes...");
    let took = lab.wait_converged(Duration::from_secs(30))?;
    println!("  converged in {took:.2?}");
    println!();
    println!("Every container reaches every container on the other hosts at its own IP (no NAT):");
    let seen = |line: String| {
        lab::parse_whoami(&line)
            .map(|a| a.ip().to_string())
            .unwrap_or(line)
    };
    for h in &lab.hosts {
        for c in &h.containers {
            for o in lab.hosts.iter().filter(|o| o.index != h.index) {
                for d in &o.containers {
                    let dst = SocketAddrV4::new(d.addr, SERVICE_PORT);
                    let tcp = lab::tcp_whoami(&c.ns, dst)?;
                    let udp = lab::udp_whoami(&c.ns, 0, dst)?;
                    println!(
                        "  {:<10} (host {}) → {:<10} (host {})  tcp: saw {:<10} udp: saw {}",
                        c.addr,
                        h.index,
                        d.addr,
                        o.index,
                        seen(tcp),
                        seen(udp)
                    );
                }
            }
        }
    }
    println!();
    for h in &lab.hosts {
        if let Some(b) = &h.bird {
            let status = bgp::status(&b.socket)?;
            println!("Host {} (netbpf bgp status):", h.index);
            print!("{}", indent(&status.render()));
            let routes = h.ns.ip(&["-4", "route", "show", "proto", "bird"])?;
            println!("  In its kernel table (ip route show proto bird), used by bpf_fib_lookup:");
            print!(
                "{}",
                indent(&indent(&String::from_utf8_lossy(&routes.stdout)))
            );
            let stats = maps::read_stats(&h.pin_dir)?;
            println!(
                "  routed_out={} routed_in={} route_no_neighbour={}",
                stats.get(netbpf_common::Counter::RoutedOut),
                stats.get(netbpf_common::Counter::RoutedIn),
                stats.get(netbpf_common::Counter::RouteNoNeighbour),
            );
            println!();
        }
    }
    if !once {
        println!("Ctrl-C removes the lab.");
        let mut stop = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = stop.recv() => {}
            _ = term.recv() => {}
        }
    }
    drop(_servers);
    drop(lab);
    println!("lab removed: namespaces, pins and files are gone");
    Ok(())
}
