//! Parsing and validation of netbpf's TOML configuration file.
//!
//! The file has this shape (key names are a user-facing contract):
//!
//! ```toml
//! [uplink]
//! interface = "eth0"            # required: the host's outside interface
//! # address = "203.0.113.1"     # optional: default is the interface's first IPv4 address
//!
//! [[masquerade]]                # iptables -t nat -A POSTROUTING -s 10.77.0.0/24 -o eth0 -j MASQUERADE
//! source = "10.77.0.0/24"       # required IPv4 CIDR, host bits must be zero
//! # ports = "32768-60999"       # optional SNAT source-port range "A-B" or single "A"
//!
//! [[publish]]                   # docker run -p 8080:4000
//! proto = "tcp"                 # tcp | udp
//! port = 8080                   # integer, or a string range "8000-8010"
//! to = "10.77.0.2:4000"         # container address:port (first port of a 1:1 range)
//! # address = "127.0.0.1"       # optional: only answer on this host address
//!
//! [[container]]
//! address = "10.77.0.2"
//! interface = "veth-c1"
//!
//! [conntrack]                   # optional, all keys optional
//! capacity = 262144
//! udp_timeout = "5m"            # integer seconds or "300s", "5m", "2h4m", ...
//! tcp_established_timeout = "2h4m"
//! tcp_transitory_timeout = "4m"
//! icmp_timeout = "60s"
//!
//! [metrics]                     # optional
//! address = "127.0.0.1:9469"    # where the daemon serves Prometheus metrics
//!
//! [docker]                      # optional: follow a dockerd's networks and ports
//! socket = "/var/run/docker.sock"
//! ```
//!
//! [`Config::from_toml`] deserializes the text into private "raw" structs
//! (unknown keys are rejected everywhere) and then validates them into the
//! public types. Validation checks every key and reports every bad value
//! at once ([`ConfigError::Several`] when there is more than one); every
//! [`ConfigError::Invalid`] names the offending key path (for example
//! `masquerade[1].source`), quotes the bad value and says why it is wrong.
//! A syntax error or an unknown key is reported alone: the toml
//! deserializer stops at the first one, before any value is validated.
//! Non-fatal findings (timeouts below the RFC minimums) are collected in
//! [`Config::warnings`]; this module never logs while parsing.
//!
//! This file owns the [`Config`] type and the orchestration: it parses the
//! text into the raw form, hands each section to its validator in the
//! order above, and re-exports the public API. Each concern is a child
//! that never imports this file:
//!
//! - `errors`: [`ConfigError`], the error collection (`Problems`);
//! - `types`: [`Ipv4Cidr`], [`PortRange`], [`Proto`], durations and the
//!   small value parsers;
//! - `hosts`: the checks against the host's own addresses;
//! - one file per section: `uplink`, `masquerade`, `publish`, `container`,
//!   `conntrack`, `inbound`, `metrics`, `bgp`, `docker` (its types, raw form and
//!   validation);
//! - `tests`: the tests, split by the same concerns.
//!
//! A section may use `errors`, `types`, `hosts` and `uplink` (the rules
//! are checked against the uplink); nothing imports a section but this
//! file.

mod bgp;
mod conntrack;
mod container;
mod datapath;
mod docker;
mod errors;
mod hosts;
mod inbound;
mod masquerade;
mod metrics;
mod publish;
#[cfg(test)]
mod tests;
mod types;
mod uplink;

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

pub use bgp::{
    BgpConfig, BgpPassword, BgpPeer, BgpRole, DEFAULT_BGP_GRACEFUL_RESTART_TIME,
    DEFAULT_BGP_RECEIVE_LIMIT, DEFAULT_BIRD_INCLUDE, DEFAULT_BIRD_MAIN_CONFIG, DEFAULT_BIRD_SOCKET,
    MAX_BGP_GRACEFUL_RESTART_TIME, MAX_BGP_MULTIHOP, MAX_BGP_PASSWORD_LEN, MAX_BGP_RECEIVE_LIMIT,
    MIN_BGP_IMPORT_LEN, NextHop, PeerRole, SessionOptions,
};
pub use conntrack::{
    ConntrackConfig, DEFAULT_CONNTRACK_CAPACITY, DEFAULT_UDP_TIMEOUT, MAX_CONNTRACK_CAPACITY,
    MAX_TIMEOUT, MIN_CONNTRACK_CAPACITY, RFC_MIN_ICMP_TIMEOUT, RFC_MIN_TCP_ESTABLISHED_TIMEOUT,
    RFC_MIN_TCP_TRANSITORY_TIMEOUT, RFC_MIN_UDP_TIMEOUT, Timeouts,
};
pub use container::Container;
pub use datapath::{DatapathConfig, XdpModeChoice};
pub use docker::{DEFAULT_DOCKER_SOCKET, DockerConfig, docker_socket};
pub use errors::ConfigError;
pub use hosts::{check_masquerade_source, check_publish_to};
pub use inbound::{
    DEFAULT_NEW_FLOWS_BURST, DEFAULT_NEW_FLOWS_PER_SOURCE, InboundConfig, MAX_NEW_FLOWS,
    UnsolicitedSyn,
};
pub use masquerade::{Masquerade, masquerade_entry};
pub use metrics::{DEFAULT_METRICS_ADDRESS, MetricsConfig};
pub use publish::{Publish, publish_collides, publish_entry, publish_key};
pub use types::{Ipv4Cidr, MAX_INTERFACE_NAME_LEN, PortRange, Proto, parse_duration};
pub use uplink::Uplink;

use bgp::{RawBgp, validate_bgp};
use conntrack::{RawConntrack, validate_conntrack};
use container::{RawContainer, validate_containers};
use datapath::{RawDatapath, validate_datapath};
use docker::{RawDocker, validate_docker};
use errors::{Problems, invalid};
use inbound::{RawInbound, validate_inbound};
use masquerade::{RawMasquerade, validate_masquerade};
use metrics::{RawMetrics, validate_metrics};
use publish::{RawPublish, validate_publish};
use uplink::{RawUplink, validate_uplink};

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The host's outside interface (`[uplink]`).
    pub uplink: Uplink,
    /// Source-NAT rules (`[[masquerade]]`), in file order.
    pub masquerade: Vec<Masquerade>,
    /// Published ports / DNAT rules (`[[publish]]`), in file order.
    pub publish: Vec<Publish>,
    /// Per-container routes (`[[container]]`), in file order.
    pub container: Vec<Container>,
    /// Connection tracking settings (`[conntrack]`, defaults if absent).
    pub conntrack: ConntrackConfig,
    /// The metrics endpoint (`[metrics]`, defaults if absent).
    pub metrics: MetricsConfig,
    /// Policies for traffic from outside (`[inbound]`, defaults if absent).
    pub inbound: InboundConfig,
    /// How packets leave the programs (`[datapath]`, defaults if absent).
    pub datapath: DatapathConfig,
    /// BGP through BIRD (`[bgp]`), if the table is present.
    pub bgp: Option<BgpConfig>,
    /// Following a dockerd (`[docker]`, off if absent).
    pub docker: DockerConfig,
    /// Non-fatal findings, e.g. timeouts below RFC minimums. Each entry
    /// starts with the key path it is about.
    pub warnings: Vec<String>,
}

impl Config {
    /// Parses and validates a configuration from TOML text.
    ///
    /// Syntax errors, unknown keys and type mismatches yield
    /// [`ConfigError::Syntax`] with the toml crate's message (which carries
    /// line and column). That error is always the only one: serde stops at
    /// the first, before any value is validated.
    ///
    /// Otherwise every key is validated and every bad value reported: one
    /// [`ConfigError::Invalid`], or [`ConfigError::Several`] holding each
    /// of them, in the order uplink, masquerade, publish, container,
    /// conntrack, metrics, inbound, bgp, docker (entries in file order). A check
    /// that needs two values (an overlap, a range that must fit its target)
    /// runs only when both are valid, so one mistake is reported once.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        raw.validate()
    }

    /// What the programs read from the `SETTINGS` map: the `[inbound]`
    /// policies and the `[datapath]` choices.
    pub fn settings(&self) -> netbpf_common::Settings {
        let mut settings = self.inbound.settings();
        settings.flags |= self.datapath.settings_flags();
        settings
    }

    /// Reads the file at `path` and parses it with [`Config::from_toml`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Emits every entry of [`Config::warnings`] with `log::warn!`.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            log::warn!("{w}");
        }
    }

    /// Checks the rules against the host's own addresses, which only the
    /// daemon knows (it resolves the uplink): no `[[masquerade]] source`
    /// may contain an address of the uplink (`uplink_addrs`), no
    /// `[[publish]] to` may be one of the host's addresses (`local_addrs`).
    /// The same checks as [`check_masquerade_source`] and
    /// [`check_publish_to`], naming the key; every failing key is reported
    /// ([`ConfigError::Several`] when there is more than one).
    pub fn check_host_addresses(
        &self,
        uplink_addrs: &[Ipv4Addr],
        local_addrs: &[Ipv4Addr],
    ) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        for (i, m) in self.masquerade.iter().enumerate() {
            problems.check(check_masquerade_source(
                &format!("masquerade[{i}].source"),
                &m.source,
                uplink_addrs,
            ));
        }
        for (i, p) in self.publish.iter().enumerate() {
            let to = format!("{}:{}", p.to_addr, p.to_port);
            problems.check(check_publish_to(
                &format!("publish[{i}].to"),
                &to,
                p.to_addr,
                local_addrs,
            ));
        }
        problems.finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    uplink: Option<RawUplink>,
    #[serde(default)]
    masquerade: Vec<RawMasquerade>,
    #[serde(default)]
    publish: Vec<RawPublish>,
    #[serde(default)]
    container: Vec<RawContainer>,
    conntrack: Option<RawConntrack>,
    metrics: Option<RawMetrics>,
    inbound: Option<RawInbound>,
    datapath: Option<RawDatapath>,
    bgp: Option<RawBgp>,
    docker: Option<RawDocker>,
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let mut p = Problems::default();
        let mut warnings = Vec::new();
        let uplink = validate_uplink(self.uplink, &mut p);
        let masquerade = validate_masquerade(self.masquerade, uplink.as_ref(), &mut p);
        let publish = validate_publish(self.publish, uplink.as_ref(), &mut p);
        let container = validate_containers(self.container, uplink.as_ref(), &mut p);
        let conntrack = validate_conntrack(self.conntrack, &mut warnings, &mut p);
        let metrics = validate_metrics(self.metrics, &mut p);
        let inbound = validate_inbound(self.inbound, &mut p);
        let datapath = validate_datapath(self.datapath);
        let bgp = self.bgp.map(|b| validate_bgp(b, &mut p));
        let docker = validate_docker(self.docker, &mut p);
        p.finish()?;
        // A validator gives back `None` only after recording why, so after a
        // clean `finish` the uplink is there and `bgp` is `None` or `Some(Some)`.
        let Some(uplink) = uplink else {
            return Err(invalid("uplink", "could not be validated"));
        };
        Ok(Config {
            uplink,
            masquerade,
            publish,
            container,
            conntrack,
            metrics,
            inbound,
            datapath,
            bgp: bgp.flatten(),
            docker,
            warnings,
        })
    }
}
