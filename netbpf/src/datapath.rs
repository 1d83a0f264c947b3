//! Loading, attaching and configuring the datapath.
//!
//! [`Datapath::start`] does everything or nothing: it resolves the config
//! against the host (interfaces, addresses), loads the object, fills the
//! maps, attaches the programs and only then pins the maps. Any failure
//! before the end drops what was made (aya detaches programs when their
//! links are dropped) and leaves no pins behind.

use std::{
    fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{LpmTrie, MapError, lpm_trie::Key},
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType},
};
use log::{info, warn};
use netbpf_common::{
    MasqPrefix, MasqRule, PUBLISH_KEY_FIXED_BITS, PublishKey, PublishRule, map_names,
};

use crate::{
    config::Config,
    maps::{self, MapsError, NatMaps},
    netdev::{self, NetdevError},
};

/// Names of the programs in the object.
pub mod programs {
    /// tc egress on the uplink (masquerade).
    pub const EGRESS: &str = "netbpf_egress";
    /// tc ingress on the uplink (reverse translation, DNAT).
    pub const INGRESS: &str = "netbpf_ingress";
    /// tc ingress on the interfaces that lead to containers (hairpin).
    pub const INSIDE: &str = "netbpf_inside";
    /// cgroup socket hooks for published ports reached from the host.
    pub const SOCK_ADDR: [&str; 4] = [
        "netbpf_connect4",
        "netbpf_sendmsg4",
        "netbpf_recvmsg4",
        "netbpf_getpeername4",
    ];
}

/// Why the datapath could not start.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The config uses a feature this version cannot apply yet.
    #[error("{key}: {what} is not supported by this version of netbpf yet; remove it to start")]
    Unsupported {
        /// The config key.
        key: String,
        /// The feature.
        what: &'static str,
    },
    /// The uplink named in the config is unusable.
    #[error("uplink.interface")]
    Uplink(#[source] NetdevError),
    /// bpffs is not available.
    #[error("bpffs at {path}")]
    Bpffs {
        /// Where bpffs was expected.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Another datapath is pinned in the directory.
    #[error(
        "a netbpf datapath is already pinned at {0} (another daemon running? stop it, or remove the directory if it is stale)"
    )]
    AlreadyPinned(PathBuf),
    /// Loading the object failed (verifier, permissions, kernel support).
    #[error("loading the eBPF object")]
    Load(#[source] EbpfError),
    /// A program failed to load or attach.
    #[error("program {name}")]
    Program {
        /// The program.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: ProgramError,
    },
    /// A map is missing from the object or could not be written.
    #[error("map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: MapError,
    },
    /// Pinning failed.
    #[error("pinning map {name} at {path}")]
    Pin {
        /// The map.
        name: &'static str,
        /// The pin path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: aya::pin::PinError,
    },
    /// The cgroup for the host-socket hooks is unusable.
    #[error("cgroup {path} (for published ports reached from the host; --cgroup none disables)")]
    Cgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Reading the pinned maps back failed.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// Per-container-IP routing could not be set up.
    #[error(transparent)]
    Routing(#[from] crate::containers::ContainersError),
}

/// The configuration resolved against this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Uplink interface name.
    pub uplink: String,
    /// Uplink interface index.
    pub uplink_ifindex: u32,
    /// Address masqueraded traffic leaves with.
    pub uplink_addr: Ipv4Addr,
    /// The host's IPv4 addresses when the daemon started: published ports
    /// without an address answer on these.
    pub local_addrs: Vec<Ipv4Addr>,
    /// Interfaces that lead to containers (name, index): those the main
    /// routing table sends a masquerade CIDR or a published container
    /// address to. Hairpinning is handled at their ingress.
    pub inside: Vec<(String, u32)>,
}

/// Resolves interface names and the uplink address, and refuses config
/// sections this version cannot apply (rather than ignoring them).
pub fn resolve(config: &Config) -> Result<Resolved, DatapathError> {
    let name = &config.uplink.interface;
    let uplink_ifindex = netdev::ifindex(name).map_err(DatapathError::Uplink)?;
    let uplink_addr = match config.uplink.address {
        Some(addr) => addr,
        None => netdev::first_ipv4(name).map_err(DatapathError::Uplink)?,
    };
    let mut local_addrs = netdev::all_ipv4().map_err(DatapathError::Uplink)?;
    // Loopback addresses are never reachable through the uplink.
    local_addrs.retain(|a| !a.is_loopback());
    if !local_addrs.contains(&uplink_addr) {
        local_addrs.push(uplink_addr);
    }
    let routes = netdev::routes().map_err(DatapathError::Uplink)?;
    let inside = inside_interfaces(config, &routes, name)
        .into_iter()
        .filter_map(|iface| netdev::ifindex(&iface).ok().map(|i| (iface, i)))
        .collect();
    Ok(Resolved {
        uplink: name.clone(),
        uplink_ifindex,
        uplink_addr,
        local_addrs,
        inside,
    })
}

/// Interfaces whose routes lead into a masquerade CIDR or to a published
/// container, other than the uplink and loopback, sorted and unique.
pub fn inside_interfaces(config: &Config, routes: &[netdev::Route], uplink: &str) -> Vec<String> {
    let mut out: Vec<String> = routes
        .iter()
        .filter(|r| r.iface != uplink && r.iface != "lo" && r.prefix_len > 0)
        .filter(|r| {
            let net = crate::config::Ipv4Cidr {
                addr: r.dst,
                prefix_len: r.prefix_len,
            };
            config.masquerade.iter().any(|m| m.source.overlaps(&net))
                || config.publish.iter().any(|p| net.contains(p.to_addr))
        })
        .map(|r| r.iface.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Mounts bpffs at `/sys/fs/bpf` if the pin directory lives there and it is
/// not mounted yet, then creates the pin directory.
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<(), DatapathError> {
    let bpffs = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(bpffs) && !is_bpffs(bpffs) {
        info!("mounting bpffs at {}", bpffs.display());
        nix::mount::mount(
            Some("bpf"),
            bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| DatapathError::Bpffs {
            path: bpffs.to_owned(),
            source: io::Error::from(e),
        })?;
    }
    if maps::pin_path(pin_dir, map_names::CONNTRACK).exists() {
        return Err(DatapathError::AlreadyPinned(pin_dir.to_owned()));
    }
    fs::create_dir_all(pin_dir).map_err(|source| DatapathError::Bpffs {
        path: pin_dir.to_owned(),
        source,
    })?;
    // Checked before anything is loaded or attached, so a bad --pin-dir
    // never leaves programs running without their pins.
    if !is_bpffs(pin_dir) {
        return Err(DatapathError::Bpffs {
            path: pin_dir.to_owned(),
            source: io::Error::other("not on a bpf filesystem (mount -t bpf bpf DIR)"),
        });
    }
    Ok(())
}

/// Whether `path` is a bpffs mount point.
fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: u64 = 0xcafe4a11;
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 as u64 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Loads the embedded object with the config's capacities, without
/// attaching anything. Used by the daemon and by the in-kernel tests.
pub fn load(config: &Config) -> Result<Ebpf, DatapathError> {
    let capacity = config.conntrack.capacity;
    EbpfLoader::new()
        .map_max_entries(map_names::CONNTRACK, capacity)
        .map_max_entries(map_names::NAT_MAPPINGS, capacity)
        .map_max_entries(map_names::NAT_REVERSE, capacity)
        .load(crate::ebpf_object())
        .map_err(DatapathError::Load)
}

/// Writes the masquerade rules into a loaded object.
pub fn fill_masquerade(
    ebpf: &mut Ebpf,
    config: &Config,
    uplink_addr: Ipv4Addr,
) -> Result<(), DatapathError> {
    let name = map_names::MASQ_RULES;
    let map = ebpf.map_mut(name).ok_or(DatapathError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })?;
    let mut trie: LpmTrie<_, MasqPrefix, MasqRule> =
        LpmTrie::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    for m in &config.masquerade {
        let (port_min, port_max) = m.ports.map(|r| (r.start, r.end)).unwrap_or((0, 0));
        let rule = MasqRule {
            to_addr: uplink_addr.octets(),
            port_min,
            port_max,
        };
        let key = Key::new(u32::from(m.source.prefix_len), m.source.addr.octets());
        trie.insert(&key, &rule, 0)
            .map_err(|source| DatapathError::Map { name, source })?;
    }
    Ok(())
}

/// Splits the port range `[start, end]` into the fewest prefix-aligned
/// blocks that cover it: `(first port, prefix bits of the port)`. A block
/// of `2^k` ports aligned on `2^k` is one LPM entry with `16 - k` bits.
pub fn port_blocks(start: u16, end: u16) -> Vec<(u16, u32)> {
    let (mut cur, end) = (u32::from(start), u32::from(end));
    let mut out = Vec::new();
    while cur <= end {
        let mut size: u32 = if cur == 0 {
            1 << 16
        } else {
            1 << cur.trailing_zeros().min(16)
        };
        while cur + size - 1 > end {
            size >>= 1;
        }
        out.push((cur as u16, 16 - size.trailing_zeros()));
        cur += size;
    }
    out
}

/// Writes the published ports and the host's addresses into a loaded
/// object.
pub fn fill_publish(
    ebpf: &mut Ebpf,
    config: &Config,
    local_addrs: &[Ipv4Addr],
) -> Result<(), DatapathError> {
    let name = map_names::PUBLISH;
    let map = ebpf.map_mut(name).ok_or(DatapathError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })?;
    let mut trie: LpmTrie<_, PublishKey, PublishRule> =
        LpmTrie::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    for p in &config.publish {
        let rule = PublishRule {
            to_addr: p.to_addr.octets(),
            to_port: p.to_port,
            host_port_min: p.port.start,
            host_port_max: p.port.end,
            _pad: 0,
        };
        let addr = p.address.map(|a| a.octets()).unwrap_or([0; 4]);
        for (base, bits) in port_blocks(p.port.start, p.port.end) {
            let key = Key::new(
                PUBLISH_KEY_FIXED_BITS + bits,
                PublishKey::new(p.proto.number(), addr, base),
            );
            trie.insert(&key, &rule, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
        }
    }
    let name = map_names::LOCAL_ADDRS;
    let map = ebpf.map_mut(name).ok_or(DatapathError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })?;
    let mut addrs: aya::maps::HashMap<_, [u8; 4], u32> =
        aya::maps::HashMap::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    for a in local_addrs {
        addrs
            .insert(&a.octets(), &1, 0)
            .map_err(|source| DatapathError::Map { name, source })?;
    }
    Ok(())
}

/// Loads and attaches one tc program.
fn attach_tc(
    ebpf: &mut Ebpf,
    name: &'static str,
    ifindex: u32,
    attach: TcAttachType,
) -> Result<(), DatapathError> {
    attach_tc_loaded(ebpf, name, ifindex, attach, true)
}

/// Attaches a tc program, loading it first if `load`.
fn attach_tc_loaded(
    ebpf: &mut Ebpf,
    name: &'static str,
    ifindex: u32,
    attach: TcAttachType,
    load: bool,
) -> Result<(), DatapathError> {
    let err = |source| DatapathError::Program { name, source };
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(DatapathError::Program {
            name,
            source: ProgramError::UnexpectedProgramType,
        })?
        .try_into()
        .map_err(err)?;
    if load {
        prog.load().map_err(err)?;
    }
    // On kernels >= 6.6 aya attaches through tcx (no qdisc needed).
    prog.attach(ifindex, attach).map_err(err)?;
    Ok(())
}

/// A running datapath: programs attached, maps filled and pinned. Dropping
/// it detaches the programs; [`Datapath::stop`] also removes the pins.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    /// What the config resolved to.
    pub resolved: Resolved,
    routing: crate::containers::Routing,
}

/// Where the datapath attaches besides the interfaces in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// cgroup v2 directory whose processes (in the daemon's network
    /// namespace) reach published ports through the socket hooks; `None`
    /// leaves host sockets alone.
    pub cgroup: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cgroup: cgroup2_mount(),
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified
/// systems, often `/sys/fs/cgroup/unified` on hybrid ones), from
/// `/proc/self/mounts`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// The cookie of the calling thread's network namespace.
pub fn netns_cookie() -> io::Result<u64> {
    use std::os::fd::AsRawFd as _;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid socket fd, and a buffer of the length passed.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Attaches the cgroup socket hooks for published ports reached from this
/// network namespace's own processes.
fn attach_sock_hooks(ebpf: &mut Ebpf, cgroup: &Path) -> Result<(), DatapathError> {
    let cg_err = |source| DatapathError::Cgroup {
        path: cgroup.to_owned(),
        source,
    };
    let cookie = netns_cookie().map_err(cg_err)?;
    let name = map_names::SOCK_NETNS;
    let map = ebpf.map_mut(name).ok_or(DatapathError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })?;
    let mut netns: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    netns
        .set(0, &cookie, 0)
        .map_err(|source| DatapathError::Map { name, source })?;
    let file = fs::File::open(cgroup).map_err(cg_err)?;
    for name in programs::SOCK_ADDR {
        let err = |source| DatapathError::Program { name, source };
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(DatapathError::Program {
                name,
                source: ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(err)?;
        prog.load().map_err(err)?;
        // A bpf_link (kernel >= 5.7): links on one cgroup always coexist,
        // so several datapaths (one per namespace) can share it; the link
        // API takes no multi-attach flag.
        prog.attach(&file, CgroupAttachMode::Single).map_err(err)?;
    }
    Ok(())
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
        let resolved = resolve(config)?;
        prepare_pin_dir(pin_dir)?;
        let mut ebpf = load(config)?;
        if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf).map(spawn_log_relay) {
            warn!("kernel log relay unavailable: {e}");
        }
        fill_masquerade(&mut ebpf, config, resolved.uplink_addr)?;
        fill_publish(&mut ebpf, config, &resolved.local_addrs)?;
        attach_tc(
            &mut ebpf,
            programs::EGRESS,
            resolved.uplink_ifindex,
            TcAttachType::Egress,
        )?;
        attach_tc(
            &mut ebpf,
            programs::INGRESS,
            resolved.uplink_ifindex,
            TcAttachType::Ingress,
        )?;
        for (i, (_, ifindex)) in resolved.inside.iter().enumerate() {
            attach_tc_loaded(
                &mut ebpf,
                programs::INSIDE,
                *ifindex,
                TcAttachType::Ingress,
                i == 0,
            )?;
        }
        if let Some(cgroup) = &options.cgroup
            && !config.publish.is_empty()
        {
            attach_sock_hooks(&mut ebpf, cgroup)?;
        }
        let mut routing =
            crate::containers::Routing::start(&mut ebpf, config, resolved.uplink_ifindex)?;
        if let Err(e) = pin_maps(&ebpf, pin_dir) {
            routing.stop(&mut ebpf);
            let _ = maps::unpin_all(pin_dir);
            return Err(e);
        }
        if let Err(e) = routing.follow_neighbours(pin_dir) {
            routing.stop(&mut ebpf);
            let _ = maps::unpin_all(pin_dir);
            return Err(e.into());
        }
        info!(
            "attached to {} (ifindex {}), masquerading {} CIDR(s) to {}, {} published port rule(s); maps pinned in {}",
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
        })
    }

    /// Reconciles the routing programs with the container maps (containers
    /// added or removed by `netbpf containers add|del`); returns how many
    /// attachments changed.
    pub fn sync_routing(&mut self) -> Result<usize, DatapathError> {
        Ok(self.routing.sync(&mut self.ebpf)?)
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

    /// Detaches the programs and removes the pins.
    pub fn stop(mut self) -> Result<(), DatapathError> {
        self.routing.stop(&mut self.ebpf);
        drop(self.ebpf);
        maps::unpin_all(&self.pin_dir)?;
        Ok(())
    }
}

/// Pins every map under `dir`.
fn pin_maps(ebpf: &Ebpf, dir: &Path) -> Result<(), DatapathError> {
    for name in map_names::ALL {
        let map = ebpf.map(name).ok_or(DatapathError::Map {
            name,
            source: MapError::InvalidName {
                name: name.to_owned(),
            },
        })?;
        let path = maps::pin_path(dir, name);
        map.pin(&path)
            .map_err(|source| DatapathError::Pin { name, path, source })?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::port_blocks;

    fn covered(blocks: &[(u16, u32)]) -> Vec<u32> {
        blocks
            .iter()
            .flat_map(|&(base, bits)| {
                let size = 1u32 << (16 - bits);
                assert_eq!(u32::from(base) % size, 0, "block {base}/{bits} aligned");
                u32::from(base)..u32::from(base) + size
            })
            .collect()
    }

    #[test]
    fn blocks_cover_exactly_the_range() {
        for (a, b) in [
            (8080, 8080),
            (8000, 8010),
            (1, 65535),
            (0, 65535),
            (1024, 2047),
            (32768, 60999),
        ] {
            let blocks = port_blocks(a, b);
            let ports = covered(&blocks);
            assert_eq!(
                ports,
                (u32::from(a)..=u32::from(b)).collect::<Vec<_>>(),
                "{a}-{b}"
            );
            assert!(blocks.len() <= 32, "{a}-{b}: {} blocks", blocks.len());
        }
        assert_eq!(port_blocks(8080, 8080), vec![(8080, 16)]);
        assert_eq!(port_blocks(0, 65535), vec![(0, 0)]);
    }

    #[test]
    fn inside_interfaces_come_from_routes_into_the_nat() {
        let config = crate::config::Config::from_toml(
            "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n\
             [[publish]]\nproto = \"tcp\"\nport = 80\nto = \"192.168.5.2:80\"\n",
        )
        .expect("config");
        let routes = crate::netdev::parse_routes(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t027100CB\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t007100CB\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             veth-c1\t02004D0A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
             docker0\t00004D0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
             br1\t0005A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             other\t000A0A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        );
        assert_eq!(routes[2].dst, std::net::Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(routes[2].prefix_len, 32);
        assert_eq!(
            super::inside_interfaces(&config, &routes, "eth0"),
            vec!["br1".to_owned(), "docker0".to_owned(), "veth-c1".to_owned()]
        );
    }
}
