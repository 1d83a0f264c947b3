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
    maps::{Array, LpmTrie, MapError, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType,
        cgroup_sock_addr::CgroupSockAddrLink, tc::SchedClassifierLink,
    },
};
use log::{info, warn};
use netbpf_common::{MasqPrefix, MasqRule, PublishKey, PublishRule, map_names};

use crate::{
    config::Config,
    loader,
    maps::{self, MapsError, NatMaps},
    migrate,
    netdev::{self, NetdevError},
    pins,
};

pub use crate::loader::programs;

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
    /// The uplink is not an Ethernet device: the programs parse Ethernet
    /// frames, so on an L3 device (WireGuard, PPP, tun) they would see no
    /// IPv4 and containers' packets would leave untranslated.
    #[error(
        "uplink.interface: {name:?} is not an Ethernet interface (link type {link_type}, \
         ARPHRD {arphrd}; WireGuard, PPP and tun devices carry bare IP packets): netbpf's \
         programs parse Ethernet frames, so containers' packets would leave it untranslated \
         with their private source addresses; use an Ethernet uplink (or route the \
         containers' traffic through one)"
    )]
    NotEthernet {
        /// The interface.
        name: String,
        /// The kernel's name of its link type, lower case (`none`, `ppp`).
        link_type: String,
        /// Its `ARPHRD_*` number.
        arphrd: u16,
    },
    /// Reading the uplink's link type failed.
    #[error("uplink.interface: reading the link type of {name:?}")]
    LinkType {
        /// The interface.
        name: String,
        /// What went wrong.
        #[source]
        source: crate::rtnl::RtnlError,
    },
    /// The config is valid on its own but would lock this host out: a
    /// masquerade source containing the uplink's address, a published
    /// port aimed at one of the host's own addresses.
    #[error("the config does not fit this host")]
    Host(#[source] crate::config::ConfigError),
    /// bpffs is not available.
    #[error("bpffs at {path}")]
    Bpffs {
        /// Where bpffs was expected.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A map pinned by an earlier datapath has another layout or size.
    #[error(
        "the map {name} pinned in {pin_dir} has {property} {actual}, this netbpf expects {expected} \
         (a changed conntrack.capacity, or another netbpf version): it keeps its flows until \
         `netbpf down` removes the datapath (dropping every flow), after which the daemon starts fresh"
    )]
    Incompatible {
        /// The pin directory.
        pin_dir: PathBuf,
        /// The map.
        name: String,
        /// Which property differs.
        property: &'static str,
        /// What this binary expects.
        expected: u64,
        /// What is pinned.
        actual: u64,
    },
    /// Another daemon runs for this pin directory, or the pins are unusable.
    #[error(transparent)]
    Pins(#[from] crate::pins::PinsError),
    /// A pinned map of another layout could not be carried over.
    #[error("migrating a pinned map")]
    Migrate(#[from] crate::migrate::MigrateError),
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
    /// The uplink's IPv4 addresses with their prefix lengths (host bits
    /// kept), e.g. `10.1.2.3/24`: the host's own networks for BGP's import
    /// filter.
    pub uplink_networks: Vec<crate::config::Ipv4Cidr>,
    /// The host's IPv4 addresses when the daemon started: published ports
    /// without an address answer on these.
    pub local_addrs: Vec<Ipv4Addr>,
    /// Interfaces that lead to containers (name, index): those the main
    /// routing table sends a masquerade CIDR or a published container
    /// address to. Hairpinning is handled at their ingress.
    pub inside: Vec<(String, u32)>,
}

/// Resolves interface names and the uplink address, and refuses an uplink
/// or rules that cannot work on this host (a non-Ethernet uplink, a
/// masquerade source containing the uplink's address, a published port
/// aimed at the host itself) before anything is loaded.
pub fn resolve(config: &Config) -> Result<Resolved, DatapathError> {
    let name = &config.uplink.interface;
    let uplink_ifindex = netdev::ifindex(name).map_err(DatapathError::Uplink)?;
    check_ethernet(name, uplink_ifindex)?;
    let uplink_addr = match config.uplink.address {
        Some(addr) => addr,
        None => netdev::first_ipv4(name).map_err(DatapathError::Uplink)?,
    };
    let uplink_networks = netdev::ipv4_networks(name).map_err(DatapathError::Uplink)?;
    let local_addrs = local_addresses(uplink_addr)?;
    config
        .check_host_addresses(
            &uplink_addresses(uplink_addr, &uplink_networks),
            &local_addrs,
        )
        .map_err(DatapathError::Host)?;
    let routes = netdev::routes().map_err(DatapathError::Uplink)?;
    let inside = inside_interfaces(config, &routes, name)
        .into_iter()
        .filter_map(|iface| netdev::ifindex(&iface).ok().map(|i| (iface, i)))
        .collect();
    Ok(Resolved {
        uplink: name.clone(),
        uplink_ifindex,
        uplink_addr,
        uplink_networks,
        local_addrs,
        inside,
    })
}

/// Refuses an uplink whose link type is not Ethernet (asked over
/// rtnetlink, in the daemon's network namespace).
fn check_ethernet(name: &str, ifindex: u32) -> Result<(), DatapathError> {
    use netlink_packet_route::link::LinkLayerType;
    let link_type = crate::rtnl::Rtnl::open()
        .and_then(|mut rtnl| rtnl.link_layer_type(ifindex))
        .map_err(|source| DatapathError::LinkType {
            name: name.to_owned(),
            source,
        })?;
    if link_type == LinkLayerType::Ether {
        return Ok(());
    }
    Err(DatapathError::NotEthernet {
        name: name.to_owned(),
        link_type: link_type.to_string().to_lowercase(),
        arphrd: u16::from(link_type),
    })
}

/// The host's IPv4 addresses (loopback left out: never reachable through
/// the uplink), with the masquerade address among them.
fn local_addresses(uplink_addr: Ipv4Addr) -> Result<Vec<Ipv4Addr>, DatapathError> {
    let mut local = netdev::all_ipv4().map_err(DatapathError::Uplink)?;
    local.retain(|a| !a.is_loopback());
    if !local.contains(&uplink_addr) {
        local.push(uplink_addr);
    }
    Ok(local)
}

/// The host's addresses on the uplink: the masquerade address and every
/// address the interface has.
fn uplink_addresses(uplink_addr: Ipv4Addr, networks: &[crate::config::Ipv4Cidr]) -> Vec<Ipv4Addr> {
    let mut out = vec![uplink_addr];
    out.extend(networks.iter().map(|n| n.addr));
    out.sort();
    out.dedup();
    out
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
    load_with_pins(config, None)
}

/// Loads the object; with `pin_dir`, every map is pinned there, and a map
/// already pinned there (a datapath that outlived its daemon) is reused if
/// its layout is the one this binary expects — so flows survive a restart.
pub fn load_with_pins(config: &Config, pin_dir: Option<&Path>) -> Result<Ebpf, DatapathError> {
    let capacity = config.conntrack.capacity;
    let paths: Vec<(&'static str, PathBuf)> = match pin_dir {
        Some(dir) => map_names::ALL
            .iter()
            .map(|name| (*name, maps::pin_path(dir, name)))
            .collect(),
        None => Vec::new(),
    };
    // A pinned map whose layout is not this object's (an older netbpf, or
    // another capacity) is carried over where that is possible
    // (crate::migrate), else refused.
    let mut carried: Vec<(&'static str, migrate::Carried)> = Vec::new();
    loop {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_names::CONNTRACK, capacity)
            .map_max_entries(map_names::NAT_MAPPINGS, capacity)
            .map_max_entries(map_names::NAT_REVERSE, capacity);
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let err = match loader.load(crate::ebpf_object()) {
            Ok(mut ebpf) => {
                for (name, entries) in carried {
                    let n = migrate::restore(&mut ebpf, name, entries)?;
                    info!("{name}: {n} entries carried over from the old pinned map");
                }
                return Ok(ebpf);
            }
            Err(e) => e,
        };
        if let EbpfError::MapError(MapError::IncompatiblePinnedMap { name, .. }) = &err
            && let Some((map, path)) = paths.iter().find(|(n, _)| *n == name)
            && !carried.iter().any(|(n, _)| n == map)
        {
            match migrate::take(map, path) {
                Ok(entries) => {
                    warn!(
                        "{map}: the pinned map has another layout or size (an older netbpf, or a changed capacity); it is made anew, its entries carried over"
                    );
                    carried.push((map, entries));
                    continue;
                }
                Err(migrate::MigrateError::NotMigratable { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Err(match err {
            EbpfError::MapError(MapError::IncompatiblePinnedMap {
                name,
                property,
                expected,
                actual,
            }) => DatapathError::Incompatible {
                pin_dir: pin_dir.map(Path::to_owned).unwrap_or_default(),
                name,
                property,
                expected,
                actual,
            },
            other => DatapathError::Load(other),
        });
    }
}

/// A map of the loaded object by name.
fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, DatapathError> {
    ebpf.map_mut(name).ok_or(DatapathError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })
}

/// Writes the inbound policies (`[inbound]`) into a loaded object.
pub fn fill_settings(ebpf: &mut Ebpf, config: &Config) -> Result<(), DatapathError> {
    let name = map_names::SETTINGS;
    let map = map_mut(ebpf, name)?;
    let mut array: Array<_, netbpf_common::Settings> =
        Array::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    array
        .set(0, &config.inbound.settings(), 0)
        .map_err(|source| DatapathError::Map { name, source })
}

/// Writes the masquerade rules (and the inbound policies) into a loaded
/// object.
pub fn fill_masquerade(
    ebpf: &mut Ebpf,
    config: &Config,
    uplink_addr: Ipv4Addr,
) -> Result<(), DatapathError> {
    let name = map_names::MASQ_RULES;
    let map = map_mut(ebpf, name)?;
    let mut trie: LpmTrie<_, MasqPrefix, MasqRule> =
        LpmTrie::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    let mut wanted = Vec::new();
    for m in &config.masquerade {
        let (port_min, port_max) = m.ports.map(|r| (r.start, r.end)).unwrap_or((0, 0));
        let rule = MasqRule {
            to_addr: uplink_addr.octets(),
            port_min,
            port_max,
        };
        let prefix = u32::from(m.source.prefix_len);
        let key = Key::new(prefix, m.source.addr.octets());
        trie.insert(&key, &rule, 0)
            .map_err(|source| DatapathError::Map { name, source })?;
        wanted.push((prefix, m.source.addr.octets()));
    }
    prune_trie(&mut trie, name, &wanted)?;
    fill_settings(ebpf, config)
}

/// Removes the entries of a trie (pinned by an earlier daemon) that the
/// config no longer has; entries that stay were overwritten in place, so a
/// restart with a changed config changes only the difference.
fn prune_trie<K: aya::Pod + PartialEq, V: aya::Pod>(
    trie: &mut LpmTrie<&mut aya::maps::MapData, K, V>,
    name: &'static str,
    wanted: &[(u32, K)],
) -> Result<(), DatapathError> {
    let stale: Vec<Key<K>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| {
            !wanted
                .iter()
                .any(|(p, d)| *p == k.prefix_len() && *d == k.data())
        })
        .collect();
    for key in stale {
        match trie.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(DatapathError::Map { name, source }),
        }
    }
    Ok(())
}

/// Writes the published ports and the host's addresses into a loaded
/// object.
pub fn fill_publish(
    ebpf: &mut Ebpf,
    config: &Config,
    local_addrs: &[Ipv4Addr],
) -> Result<(), DatapathError> {
    let name = map_names::PUBLISH;
    let map = map_mut(ebpf, name)?;
    let mut trie: LpmTrie<_, PublishKey, PublishRule> =
        LpmTrie::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    let mut wanted = Vec::new();
    for p in &config.publish {
        let rule = p.rule();
        for (len, key) in p.blocks() {
            trie.insert(&Key::new(len, key), &rule, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
            wanted.push((len, key));
        }
    }
    prune_trie(&mut trie, name, &wanted)?;
    let name = map_names::LOCAL_ADDRS;
    let map = map_mut(ebpf, name)?;
    let mut addrs: aya::maps::HashMap<_, [u8; 4], u32> =
        aya::maps::HashMap::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    for a in local_addrs {
        addrs
            .insert(&a.octets(), &1, 0)
            .map_err(|source| DatapathError::Map { name, source })?;
    }
    let stale: Vec<[u8; 4]> = addrs
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !local_addrs.iter().any(|a| a.octets() == *k))
        .collect();
    for key in stale {
        match addrs.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(DatapathError::Map { name, source }),
        }
    }
    Ok(())
}

/// A tc program, loaded (verified) if it was not yet.
fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    loader::loaded(ebpf, name).map_err(|source| DatapathError::Program { name, source })
}

/// A cgroup sock_addr program, loaded (verified) if it was not yet.
fn sock_addr<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, DatapathError> {
    loader::loaded(ebpf, name).map_err(|source| DatapathError::Program { name, source })
}

/// Where a tc program is attached.
#[derive(Clone, Copy)]
struct TcTarget<'a> {
    ifname: &'a str,
    ifindex: u32,
    attach: TcAttachType,
}

/// Attaches a tc program (loading it first if needed) through a link
/// pinned under `pin_dir`, so it stays attached after the daemon exits. If
/// an earlier daemon pinned that link, the new program replaces the old
/// one in it atomically: no packet sees neither.
fn attach_tc_pinned(
    ebpf: &mut Ebpf,
    name: &'static str,
    target: TcTarget<'_>,
    pin_dir: &Path,
) -> Result<PathBuf, DatapathError> {
    let err = |source| DatapathError::Program { name, source };
    let prog = classifier(ebpf, name)?;
    let pin = pins::link_pin(pin_dir, name, target.ifname);
    if let Some(link) = adopt_link::<SchedClassifierLink>(&pin) {
        match prog.attach_to_link(link) {
            Ok(_) => {
                info!(
                    "{name}: new program swapped into the pinned link on {}",
                    target.ifname
                );
                return Ok(pin);
            }
            // Severed since drop_severed_links looked: attach afresh.
            Err(ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOLINK) =>
            {
                warn!(
                    "{name}: the pinned link on {} was severed (its interface is gone); attaching afresh",
                    target.ifname
                );
                pins::remove_file(&pin)?;
            }
            Err(e) => return Err(err(e)),
        }
    }
    // On kernels >= 6.6 aya attaches through tcx (no qdisc needed).
    let id = prog.attach(target.ifindex, target.attach).map_err(err)?;
    let link = prog.take_link(id).map_err(err)?;
    pin_link(name, link, &pin)?;
    Ok(pin)
}

/// Loads (verifies) the NAT programs a start will attach.
fn load_nat_programs(ebpf: &mut Ebpf, inside: bool, hooks: bool) -> Result<(), DatapathError> {
    classifier(ebpf, programs::EGRESS)?;
    classifier(ebpf, programs::INGRESS)?;
    if inside {
        classifier(ebpf, programs::INSIDE)?;
    }
    if hooks {
        for name in programs::SOCK_ADDR {
            sock_addr(ebpf, name)?;
        }
    }
    Ok(())
}

/// What the rule maps held before a restart changed them.
struct RuleSnapshot {
    masq: Vec<(Key<MasqPrefix>, MasqRule)>,
    publish: Vec<(Key<PublishKey>, PublishRule)>,
    local: Vec<[u8; 4]>,
}

impl RuleSnapshot {
    fn read(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        let name = map_names::MASQ_RULES;
        let masq: LpmTrie<_, MasqPrefix, MasqRule> = LpmTrie::try_from(map_mut(ebpf, name)?)
            .map_err(|source| DatapathError::Map { name, source })?;
        let masq = masq.iter().filter_map(Result::ok).collect();
        let name = map_names::PUBLISH;
        let publish: LpmTrie<_, PublishKey, PublishRule> = LpmTrie::try_from(map_mut(ebpf, name)?)
            .map_err(|source| DatapathError::Map { name, source })?;
        let publish = publish.iter().filter_map(Result::ok).collect();
        let name = map_names::LOCAL_ADDRS;
        let local: aya::maps::HashMap<_, [u8; 4], u32> =
            aya::maps::HashMap::try_from(map_mut(ebpf, name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        let local = local.keys().filter_map(Result::ok).collect();
        Ok(Self {
            masq,
            publish,
            local,
        })
    }

    /// Writes the snapshot back and removes entries it did not have.
    fn restore(self, ebpf: &mut Ebpf) -> Result<(), DatapathError> {
        let name = map_names::MASQ_RULES;
        let mut masq: LpmTrie<_, MasqPrefix, MasqRule> = LpmTrie::try_from(map_mut(ebpf, name)?)
            .map_err(|source| DatapathError::Map { name, source })?;
        for (k, v) in &self.masq {
            masq.insert(k, v, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
        }
        let wanted: Vec<(u32, MasqPrefix)> = self
            .masq
            .iter()
            .map(|(k, _)| (k.prefix_len(), k.data()))
            .collect();
        prune_trie(&mut masq, name, &wanted)?;
        let name = map_names::PUBLISH;
        let mut publish: LpmTrie<_, PublishKey, PublishRule> =
            LpmTrie::try_from(map_mut(ebpf, name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        for (k, v) in &self.publish {
            publish
                .insert(k, v, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
        }
        let wanted: Vec<(u32, PublishKey)> = self
            .publish
            .iter()
            .map(|(k, _)| (k.prefix_len(), k.data()))
            .collect();
        prune_trie(&mut publish, name, &wanted)?;
        let name = map_names::LOCAL_ADDRS;
        let mut local: aya::maps::HashMap<_, [u8; 4], u32> =
            aya::maps::HashMap::try_from(map_mut(ebpf, name)?)
                .map_err(|source| DatapathError::Map { name, source })?;
        let stale: Vec<[u8; 4]> = local
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !self.local.contains(k))
            .collect();
        for a in &self.local {
            local
                .insert(a, &1, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
        }
        for k in stale {
            let _ = local.remove(&k);
        }
        Ok(())
    }
}

/// Removes the pins of links whose interface (or cgroup) is gone, saying
/// so: an interface or namespace deleted, perhaps made again under the same
/// name, while no daemon ran. The kernel refuses to swap a program into
/// such a link, and it carries no traffic; the maps, and so the flows,
/// stay. Returns how many were removed.
fn drop_severed_links(pin_dir: &Path) -> Result<usize, DatapathError> {
    let mut dropped = 0;
    for (link, state) in pins::link_states(pin_dir)? {
        if state == pins::LinkState::Severed {
            warn!(
                "{} on {}: the pinned link was severed (the interface or its network namespace \
                 was deleted while no daemon ran); dropping it and attaching afresh, the maps and \
                 their flows stay",
                link.program, link.target
            );
            pins::remove_file(&link.path)?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// The link pinned at `pin`, if there is one of the right kind.
fn adopt_link<L: TryFrom<aya::programs::links::FdLink>>(pin: &Path) -> Option<L> {
    if !pin.exists() {
        return None;
    }
    let pinned = aya::programs::links::PinnedLink::from_pin(pin).ok()?;
    L::try_from(aya::programs::links::FdLink::from(pinned)).ok()
}

/// Pins a freshly made link at `pin`.
fn pin_link<L>(name: &'static str, link: L, pin: &Path) -> Result<(), DatapathError>
where
    aya::programs::links::FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let err = |e: aya::programs::links::LinkError| DatapathError::Program {
        name,
        source: ProgramError::from(e),
    };
    if let Some(dir) = pin.parent() {
        fs::create_dir_all(dir).map_err(|source| DatapathError::Bpffs {
            path: dir.to_owned(),
            source,
        })?;
    }
    let fd_link = aya::programs::links::FdLink::try_from(link).map_err(err)?;
    // The pin keeps the link (and so the attachment) alive when this
    // process closes its descriptor.
    fd_link.pin(pin).map_err(|source| DatapathError::Pin {
        name,
        path: pin.to_owned(),
        source,
    })?;
    Ok(())
}

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
fn attach_sock_hooks(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    pin_dir: &Path,
) -> Result<Vec<PathBuf>, DatapathError> {
    let cg_err = |source| DatapathError::Cgroup {
        path: cgroup.to_owned(),
        source,
    };
    let cookie = netns_cookie().map_err(cg_err)?;
    let name = map_names::SOCK_NETNS;
    let map = map_mut(ebpf, name)?;
    let mut netns: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    netns
        .set(0, &cookie, 0)
        .map_err(|source| DatapathError::Map { name, source })?;
    let file = fs::File::open(cgroup).map_err(cg_err)?;
    let mut pinned = Vec::new();
    for name in programs::SOCK_ADDR {
        let err = |source| DatapathError::Program { name, source };
        let prog = sock_addr(ebpf, name)?;
        let pin = pins::link_pin(pin_dir, name, "cgroup");
        if let Some(link) = adopt_link::<CgroupSockAddrLink>(&pin) {
            prog.attach_to_link(link).map_err(err)?;
        } else {
            // A bpf_link (kernel >= 5.7): links on one cgroup always
            // coexist, so several datapaths (one per namespace) can share
            // it; the link API takes no multi-attach flag.
            let id = prog.attach(&file, CgroupAttachMode::Single).map_err(err)?;
            let link = prog.take_link(id).map_err(err)?;
            pin_link(name, link, &pin)?;
        }
        pinned.push(pin);
    }
    Ok(pinned)
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
        let lock = pins::DaemonLock::acquire(pin_dir)?;
        let adopting = pins::is_pinned(pin_dir);
        if adopting {
            drop_severed_links(pin_dir)?;
        }
        let result = Self::attach_all(config, pin_dir, options, &resolved, adopting);
        let (ebpf, routing) = match result {
            Ok(parts) => parts,
            Err(e) => {
                // A fresh start leaves nothing behind. When adopting, the
                // earlier datapath keeps running: links not yet swapped
                // still hold the old programs.
                if !adopting {
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
        })
    }

    /// Loads (reusing pinned maps), fills, attaches through pinned links,
    /// and removes link pins the config no longer wants.
    fn attach_all(
        config: &Config,
        pin_dir: &Path,
        options: &Options,
        resolved: &Resolved,
        adopting: bool,
    ) -> Result<(Ebpf, crate::containers::Routing), DatapathError> {
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
        let hooks = options.cgroup.is_some() && !config.publish.is_empty();
        load_nat_programs(&mut ebpf, !resolved.inside.is_empty(), hooks)?;
        // The rule maps are shared with the running programs when adopting:
        // keep what they hold, to put it back if a later step fails.
        let before = if adopting {
            Some(RuleSnapshot::read(&mut ebpf)?)
        } else {
            None
        };
        match Self::fill_and_attach(&mut ebpf, config, pin_dir, options, resolved) {
            Ok(routing) => Ok((ebpf, routing)),
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
    /// program, removes links no longer wanted, and starts routing.
    fn fill_and_attach(
        ebpf: &mut Ebpf,
        config: &Config,
        pin_dir: &Path,
        options: &Options,
        resolved: &Resolved,
    ) -> Result<crate::containers::Routing, DatapathError> {
        fill_masquerade(ebpf, config, resolved.uplink_addr)?;
        fill_publish(ebpf, config, &resolved.local_addrs)?;
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
            wanted.push(attach_tc_pinned(ebpf, programs::INSIDE, target, pin_dir)?);
        }
        if let Some(cgroup) = &options.cgroup
            && !config.publish.is_empty()
        {
            wanted.extend(attach_sock_hooks(ebpf, cgroup, pin_dir)?);
        }
        // Links an earlier daemon pinned that this config does not want
        // (an interface gone, publish removed): unpinning detaches them.
        for link in pins::pinned_links(pin_dir)? {
            if !wanted.contains(&link.path) {
                info!(
                    "detaching {} from {} (no longer configured)",
                    link.program, link.target
                );
                pins::remove_file(&link.path)?;
            }
        }
        let mut routing = crate::containers::Routing::start(ebpf, config, resolved.uplink_ifindex)?;
        if let Err(e) = routing.follow_neighbours(pin_dir) {
            routing.stop(ebpf);
            return Err(e.into());
        }
        Ok(routing)
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
        fill_masquerade(&mut self.ebpf, config, self.resolved.uplink_addr)?;
        fill_publish(&mut self.ebpf, config, &local)?;
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

    /// Stops the daemon's part: routing state is removed, the NAT datapath
    /// stays attached through its pinned links and keeps its flows in the
    /// pinned maps, so traffic keeps flowing until the next daemon adopts
    /// it or [`down`] removes it.
    pub fn stop(mut self) -> Result<(), DatapathError> {
        self.routing.stop(&mut self.ebpf);
        drop(self.ebpf);
        Ok(())
    }
}

/// Removes a pinned datapath: detaches every program (by unpinning its
/// link) and removes the maps, dropping every flow.
pub fn down(pin_dir: &Path) -> Result<pins::DownReport, DatapathError> {
    let _lock = pins::DaemonLock::acquire(pin_dir)?;
    Ok(pins::down(pin_dir)?)
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
