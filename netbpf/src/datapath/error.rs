//! Why the datapath could not start, attach or change.

use std::{io, path::PathBuf};

use aya::{EbpfError, maps::MapError, programs::ProgramError};

use crate::{maps::MapsError, netdev::NetdevError};

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
    /// A container-side interface a rule owner named is unusable.
    #[error("interface {name}")]
    Interface {
        /// The interface.
        name: String,
        /// What went wrong.
        #[source]
        source: NetdevError,
    },
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
    /// A program's pinned link could not be made, adopted or pinned.
    #[error("program {name}")]
    Link {
        /// The program.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: crate::links::LinkError,
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
    /// Listing interfaces over rtnetlink failed (a bridge's ports).
    #[error("listing interfaces")]
    Rtnl(#[source] crate::rtnl::RtnlError),
    /// Per-container-IP routing could not be set up.
    #[error(transparent)]
    Routing(#[from] crate::containers::ContainersError),
}
