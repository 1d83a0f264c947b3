//! The multi-host lab: several container hosts in namespaces on one
//! Ethernet segment, each with routed containers, a netbpf daemon and a
//! BIRD daemon; the hosts peer over iBGP in a full mesh, or each with one
//! route reflector (BIRD in a router namespace `{prefix}-rr` at 10.0.0.2,
//! `--reflector`), and carry each other's container routes (`netbpf lab
//! --hosts N`, and `tests/bgp.rs`, `tests/bgp_rr.rs`). With `--racks R`
//! the hosts sit in racks behind eBGP routers instead (see `racks.rs` and
//! `tests/bgp_tor.rs`).
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

mod bird;
pub mod converge;
mod host;
mod md5;
mod plan;
mod racks;
mod reflector;
mod tor;

use std::{
    collections::BTreeSet,
    fs,
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

pub use bird::BirdDaemon;
pub use host::Host;
pub use md5::tcp_md5_supported;
pub use plan::*;
pub use racks::*;
pub use reflector::ReflectorRouter;
pub use tor::{RackRouter, render_tor};

use crate::{
    bgp,
    lab::{self, LabError, SERVICE_PORT, Transport, WhoamiServer, io_err},
    maps,
    netns::{self, Netns},
    rows::indent,
};

/// The multi-host lab. Dropping it stops every daemon and removes every
/// namespace, pin and file.
pub struct MultiHost {
    /// Prefix of every namespace name.
    pub prefix: String,
    /// The hosts (dropped before the segment).
    pub hosts: Vec<Host>,
    /// How the hosts peer.
    pub topology: Topology,
    /// The route reflector, with [`Topology::Reflector`] (dropped before
    /// the segment).
    pub reflector: Option<ReflectorRouter>,
    /// The top-of-rack routers, with [`Topology::Racks`] (dropped before
    /// the segment).
    pub routers: Vec<RackRouter>,
    /// The segment: bridge `br0` joining the hosts' uplinks.
    pub segment: Netns,
    /// Scratch directory.
    pub dir: PathBuf,
}

impl MultiHost {
    /// Builds `hosts` hosts with `per_host` routed containers each, in an
    /// iBGP full mesh (nothing started yet).
    pub fn build(prefix: &str, hosts: usize, per_host: usize) -> Result<Self, LabError> {
        Self::build_with(prefix, hosts, per_host, Topology::FullMesh)
    }

    /// Like [`MultiHost::build`], peering as `topology` says; with
    /// [`Topology::Reflector`] also the reflector's router namespace.
    pub fn build_with(
        prefix: &str,
        hosts: usize,
        per_host: usize,
        topology: Topology,
    ) -> Result<Self, LabError> {
        let dir = std::env::temp_dir().join(prefix);
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let segment = Netns::create(&format!("{prefix}-seg"))?;
        // br0: the one segment, or the racks' spine; br1..: the racks.
        let racks = match topology {
            Topology::Racks(plan) => plan.racks,
            _ => 0,
        };
        for b in 0..=racks {
            let br = format!("br{b}");
            segment.ip(&["link", "add", &br, "type", "bridge"])?;
            segment.ip(&["link", "set", &br, "up"])?;
        }
        let mut lab = MultiHost {
            prefix: prefix.to_owned(),
            hosts: Vec::new(),
            topology,
            reflector: None,
            routers: Vec::new(),
            segment,
            dir,
        };
        if topology == Topology::Reflector {
            let rr_dir = lab.dir.join("rr");
            lab.reflector = Some(ReflectorRouter::build(prefix, &lab.segment, &rr_dir)?);
        }
        for r in 1..=racks {
            let tor_dir = lab.dir.join(format!("tor{r}"));
            let router = RackRouter::build(prefix, &lab.segment, r, &tor_dir)?;
            lab.routers.push(router);
        }
        for h in 1..=hosts {
            let ns = Netns::create(&format!("{prefix}-h{h}"))?;
            let port = format!("p-h{h}");
            netns::veth(&lab.segment, &port, &ns, "eth0")?;
            let (addr, bridge) = match topology {
                Topology::Racks(plan) => (plan.host_addr(h), format!("br{}", plan.rack(h))),
                _ => (host_addr(h), "br0".to_owned()),
            };
            lab.segment.ip(&["link", "set", &port, "master", &bridge])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ns.sysctl("net.ipv4.ip_forward=1")?;
            if let Topology::Racks(plan) = topology
                && let session = plan.session(h)
                && session.multihop.is_some()
            {
                // The router's loopback is behind its segment address.
                ns.ip(&[
                    "route",
                    "add",
                    &format!("{}/32", session.tor_addr),
                    "via",
                    &tor_addr(session.rack).to_string(),
                ])?;
            }
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
                bgp_extra: String::new(),
                daemon: None,
            };
            for i in 1..=per_host {
                host.wire_container(prefix, i)?;
            }
            lab.hosts.push(host);
        }
        Ok(lab)
    }

    /// Gives the hosts and their containers IPv6 next to IPv4 (call
    /// before [`MultiHost::start`]): see [`Host::wire_ipv6`]; the route
    /// reflector's router, if any, gets [`REFLECTOR_ADDR6`]. Not for
    /// [`Topology::Racks`]: the racks' routers have no IPv6.
    pub fn wire_ipv6(&mut self) -> Result<(), LabError> {
        if let Some(rr) = &self.reflector {
            let a = format!("{REFLECTOR_ADDR6}/64");
            rr.ns
                .ip(&["-6", "addr", "add", &a, "dev", "eth0", "nodad"])?;
        }
        for h in &mut self.hosts {
            h.wire_ipv6()?;
        }
        Ok(())
    }

    /// Every host's uplink address.
    pub fn host_addrs(&self) -> Vec<Ipv4Addr> {
        self.hosts.iter().map(|h| h.addr).collect()
    }

    /// Starts the reflector's BIRD (if any), every host's netbpf daemon
    /// (which writes BIRD's config) and then its BIRD.
    pub fn start(&mut self, exe: &Path) -> Result<(), LabError> {
        let all = self.host_addrs();
        if let Some(rr) = &mut self.reflector {
            rr.start(&all)?;
        }
        if let Topology::Racks(plan) = self.topology {
            for router in &mut self.routers {
                router.start(&plan)?;
            }
        }
        for h in &mut self.hosts {
            h.start_daemon(exe, &all, self.topology)?;
        }
        for h in &mut self.hosts {
            h.start_bird(false)?;
        }
        Ok(())
    }

    /// Stops host `i`'s (0-based) netbpf daemon; its datapath stays pinned
    /// and its BIRD keeps running.
    pub fn stop_daemon(&mut self, i: usize) {
        if let Some(h) = self.hosts.get_mut(i) {
            h.stop_daemon();
        }
    }

    /// Starts host `i`'s (0-based) netbpf daemon again, on its config with
    /// its containers so far.
    pub fn start_daemon(&mut self, i: usize, exe: &Path) -> Result<(), LabError> {
        let all = self.host_addrs();
        let topology = self.topology;
        match self.hosts.get_mut(i) {
            Some(h) => h.start_daemon(exe, &all, topology),
            None => Err(LabError::Daemon(format!("no host {i}"))),
        }
    }

    /// Waits until every host's kernel has a BGP route for every other
    /// host's containers (and none for addresses no other host has), their
    /// IPv6 addresses too; returns how long it took.
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
                let want6: BTreeSet<Ipv6Addr> = self
                    .hosts
                    .iter()
                    .filter(|o| o.index != h.index)
                    .flat_map(|o| o.containers.iter().filter_map(|c| c.ipv6))
                    .collect();
                let have6 = h.kernel_bgp_routes6()?;
                if have6 != want6 {
                    missing.push(format!("host {}: have {have6:?}, want {want6:?}", h.index));
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

    /// Whoami servers (TCP and UDP on [`SERVICE_PORT`]) in every
    /// container, on its IPv6 address too if it has one.
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
                    if let Some(v6) = c.ipv6 {
                        servers.push(WhoamiServer::spawn(
                            &c.ns,
                            t,
                            SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, SERVICE_PORT, 0, 0),
                            &format!("container {v6} on host {}: you are", h.index),
                        )?);
                    }
                }
            }
        }
        Ok(servers)
    }
}

impl Drop for MultiHost {
    fn drop(&mut self) {
        // Hosts (daemons, containers, namespaces) and the reflector
        // before their files.
        self.hosts.clear();
        self.reflector = None;
        self.routers.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Rounds of the convergence measurement the demo prints.
const DEMO_ROUNDS: usize = 3;

/// `netbpf lab --hosts N`: builds the multi-host lab, shows every container
/// reaching every container on the other hosts by its own IP, the BGP
/// sessions and routes that made it possible, then removes everything
/// (after Ctrl-C, or at once with `once`). With [`Topology::Reflector`]
/// the hosts peer with a route reflector instead of each other.
pub async fn run_demo(
    exe: &Path,
    prefix: &str,
    hosts: usize,
    topology: Topology,
    once: bool,
) -> anyhow::Result<()> {
    let hosts = hosts.clamp(2, 10);
    let topology = match topology {
        Topology::Racks(plan) => Topology::Racks(Racks { hosts, ..plan }),
        other => other,
    };
    let segments = match topology {
        Topology::Racks(plan) => format!("{} racks behind their routers", plan.racks),
        _ => format!("segment {SEGMENT}"),
    };
    println!(
        "netbpf multi-host lab: {hosts} hosts on {segments} (namespaces {prefix}-*; the host's own network is not touched)"
    );
    let mut lab = MultiHost::build_with(prefix, hosts, 2, topology)?;
    // IPv6 on one segment; the racks' routers have none.
    let ipv6 = !matches!(topology, Topology::Racks(_));
    if ipv6 {
        lab.wire_ipv6()?;
    }
    if lab.reflector.is_some() {
        println!(
            "  route reflector ({prefix}-rr): BIRD alone at {REFLECTOR_ADDR}/24, AS {LAB_AS}, cluster id {REFLECTOR_ADDR}, every host its client"
        );
    }
    if let Topology::Racks(plan) = topology {
        racks::print_plan(&plan, prefix);
    }
    for h in &lab.hosts {
        let uplink6 = if ipv6 {
            format!(" and {}/64", host_addr6(h.index))
        } else {
            String::new()
        };
        println!(
            "  host {} ({}-h{}): uplink {}/24{uplink6}, AS {}, containers {}",
            h.index,
            prefix,
            h.index,
            h.addr,
            topology.host_as(h.index),
            h.containers
                .iter()
                .map(|c| match c.ipv6 {
                    Some(v6) => format!("{} {v6}", c.addr),
                    None => c.addr.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !ipv6 {
        println!(
            "  IPv4 only: the racks' routers have no IPv6 (the one-segment topologies show the containers' IPv6 /128s over BGP)"
        );
    }
    let _servers = lab.serve()?;
    lab.start(exe)?;
    let peering = match topology {
        Topology::FullMesh => "iBGP full mesh".to_owned(),
        Topology::Reflector => format!("each a client of the route reflector {REFLECTOR_ADDR}"),
        Topology::HostReflector => format!(
            "host 1 ({}) the route reflector, the others its clients",
            host_addr(1)
        ),
        Topology::Racks(_) => "eBGP, each with its rack's router".to_owned(),
    };
    println!("  netbpf and BIRD running on every host ({peering}); waiting for the routes...");
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
    if ipv6 {
        println!();
        println!(
            "And at its own IPv6 address (the /128s travel on the IPv4 sessions' IPv6 channels):"
        );
        let seen6 = |line: &str| {
            let seen = lab::whoami_seen(line);
            seen.parse::<std::net::SocketAddr>()
                .map_or_else(|_| seen.to_owned(), |a| a.ip().to_string())
        };
        for h in &lab.hosts {
            for c in &h.containers {
                let Some(src) = c.ipv6 else { continue };
                for o in lab.hosts.iter().filter(|o| o.index != h.index) {
                    for d in &o.containers {
                        let Some(v6) = d.ipv6 else { continue };
                        let dst = SocketAddrV6::new(v6, SERVICE_PORT, 0, 0);
                        let tcp = lab::tcp_whoami(&c.ns, dst)?;
                        let udp = lab::udp_whoami(&c.ns, 0, dst)?;
                        println!(
                            "  {src:<16} (host {}) → {v6:<16} (host {})  tcp: saw {:<16} udp: saw {}",
                            h.index,
                            o.index,
                            seen6(&tcp),
                            seen6(&udp)
                        );
                    }
                }
            }
        }
    }
    println!();
    println!(
        "Convergence on changes ({DEMO_ROUNDS} rounds: `netbpf containers add` of a new container on host 1, then `del`; BIRD's start excluded):"
    );
    print!(
        "{}",
        converge::measure(&mut lab, exe, DEMO_ROUNDS)?.render()
    );
    println!();
    let all = lab.host_addrs();
    if let Some(rr) = &lab.reflector
        && let Some(b) = &rr.bird
    {
        let status = bgp::status(&b.socket)?.with_config(&rr.bgp_config(&all));
        println!("Route reflector {REFLECTOR_ADDR} (netbpf bgp status on its BIRD):");
        print!("{}", indent(&status.render()));
        println!();
    }
    for router in &lab.routers {
        if let Some(b) = &router.bird {
            let status = bgp::status(&b.socket)?;
            println!(
                "Rack {}'s router (netbpf bgp status on its BIRD):",
                router.rack
            );
            print!("{}", indent(&status.render()));
            println!();
        }
    }
    for h in &lab.hosts {
        if let Some(b) = &h.bird {
            let mut status = bgp::status(&b.socket)?;
            if let Some(cfg) = crate::config::Config::from_toml(&h.config_toml(&all, topology))?.bgp
            {
                status = status.with_config(&cfg);
            }
            println!("Host {} (netbpf bgp status):", h.index);
            print!("{}", indent(&status.render()));
            let routes = h.ns.ip(&["-4", "route", "show", "proto", "bird"])?;
            println!("  In its kernel table (ip route show proto bird), used by bpf_fib_lookup:");
            print!(
                "{}",
                indent(&indent(&String::from_utf8_lossy(&routes.stdout)))
            );
            if ipv6 {
                let routes = h.ns.ip(&["-6", "route", "show", "proto", "bird"])?;
                print!(
                    "{}",
                    indent(&indent(&String::from_utf8_lossy(&routes.stdout)))
                );
            }
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
