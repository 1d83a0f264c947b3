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

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Maximum length in bytes of a Linux interface name (`IFNAMSIZ - 1`).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// Default conntrack table capacity (maximum number of tracked flows).
pub const DEFAULT_CONNTRACK_CAPACITY: u32 = 262_144;

/// Smallest accepted conntrack table capacity.
pub const MIN_CONNTRACK_CAPACITY: u32 = 1024;

/// Largest accepted conntrack table capacity.
pub const MAX_CONNTRACK_CAPACITY: u32 = 16_777_216;

/// Default address of the Prometheus metrics endpoint: loopback only, so
/// nothing is exposed beyond the host unless the config says so.
pub const DEFAULT_METRICS_ADDRESS: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9469));

/// Longest accepted conntrack timeout (365 days).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// UDP mapping timeout minimum from RFC 4787 REQ-5 (2 minutes).
pub const RFC_MIN_UDP_TIMEOUT: Duration = Duration::from_secs(120);

/// Established TCP timeout minimum from RFC 5382 REQ-5 (2 hours 4 minutes).
pub const RFC_MIN_TCP_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(7440);

/// Transitory TCP timeout minimum from RFC 5382 REQ-5 (4 minutes).
pub const RFC_MIN_TCP_TRANSITORY_TIMEOUT: Duration = Duration::from_secs(240);

/// ICMP query mapping timeout minimum from RFC 5508 REQ-1 (60 seconds).
pub const RFC_MIN_ICMP_TIMEOUT: Duration = Duration::from_secs(60);

/// Default UDP mapping timeout: the RFC 4787 recommendation of 5 minutes.
pub const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Everything that can go wrong while loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The path that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The text is not valid TOML, has an unknown key, or a value has the
    /// wrong type. Holds the toml crate's message (with line and column).
    #[error("{0}")]
    Syntax(String),
    /// A value is well-formed TOML but not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// Key path of the offending value, e.g. `publish[0].to`.
        key: String,
        /// Why the value was rejected (quotes the value).
        reason: String,
    },
    /// More than one value is not acceptable: every
    /// [`ConfigError::Invalid`] found, in file order, shown one per line.
    /// A file with a single bad value gives that [`ConfigError::Invalid`]
    /// itself, not a list of one.
    #[error("{}", lines(.0))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// Each error on its own: the items of [`ConfigError::Several`], or
    /// this error alone.
    pub fn each(&self) -> &[ConfigError] {
        match self {
            ConfigError::Several(all) => all,
            one => std::slice::from_ref(one),
        }
    }
}

/// The errors' messages, one per line.
fn lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------
// Public value types
// ---------------------------------------------------------------------------

/// An IPv4 network in CIDR notation, e.g. `10.77.0.0/24`.
///
/// Parsing accepts `a.b.c.d/n` (n in 0..=32) or a bare address (meaning /32).
/// Parsing does not reject host bits; see [`Ipv4Cidr::has_host_bits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// The network mask as a host-order integer (prefix lengths above 32
    /// are treated as 32).
    pub fn mask(&self) -> u32 {
        let p = u32::from(self.prefix_len.min(32));
        if p == 0 { 0 } else { u32::MAX << (32 - p) }
    }

    /// This CIDR with the host bits cleared.
    pub fn network(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            prefix_len: self.prefix_len.min(32),
        }
    }

    /// Whether `addr` has bits set below the prefix.
    pub fn has_host_bits(&self) -> bool {
        u32::from(self.addr) & !self.mask() != 0
    }

    /// Whether `ip` lies within this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.addr) ^ u32::from(ip)) & self.mask() == 0
    }

    /// Whether the two networks share any address (one contains the other).
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let mask = self.mask() & other.mask();
        (u32::from(self.addr) ^ u32::from(other.addr)) & mask == 0
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix_len = match prefix {
            None => 32,
            Some(p) => match parse_decimal(p) {
                Some(n) if n <= 32 => n as u8,
                _ => return Err(format!("prefix length {p:?} is not in 0..=32")),
            },
        };
        Ok(Ipv4Cidr { addr, prefix_len })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// An inclusive range of ports, `start..=end`. A single port has
/// `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port of the range.
    pub start: u16,
    /// Last port of the range (inclusive).
    pub end: u16,
}

impl PortRange {
    /// A range covering the single port `port`.
    pub fn single(port: u16) -> PortRange {
        PortRange {
            start: port,
            end: port,
        }
    }

    /// Number of ports in the range (0 only if `end < start`).
    pub fn len(&self) -> u32 {
        if self.end < self.start {
            0
        } else {
            u32::from(self.end) - u32::from(self.start) + 1
        }
    }

    /// Whether the range is empty (only possible if `end < start`).
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }

    /// Whether `port` is within the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// Whether the two ranges share at least one port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.start <= other.end && other.start <= self.end
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// Parses `"A"` or `"A-B"` with `1 <= A <= B <= 65535`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), Some(b.trim())),
            None => (s.trim(), None),
        };
        let start = parse_port(a)?;
        let end = match b {
            Some(b) => parse_port(b)?,
            None => start,
        };
        if start > end {
            return Err(format!("start {start} is greater than end {end}"));
        }
        Ok(PortRange { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Proto {
    /// The IP protocol number: 6 for TCP, 17 for UDP.
    pub fn number(&self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

// ---------------------------------------------------------------------------
// Config sections
// ---------------------------------------------------------------------------

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
    /// BGP through BIRD (`[bgp]`), if the table is present.
    pub bgp: Option<BgpConfig>,
    /// Non-fatal findings, e.g. timeouts below RFC minimums. Each entry
    /// starts with the key path it is about.
    pub warnings: Vec<String>,
}

/// The `[uplink]` table: the host's outside interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Interface name, e.g. `eth0`.
    pub interface: String,
    /// Address to masquerade to; `None` means "the interface's first IPv4
    /// address" (resolved outside this module).
    pub address: Option<Ipv4Addr>,
}

/// One `[[masquerade]]` entry: SNAT traffic from `source` leaving the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    /// Source network (host bits are zero).
    pub source: Ipv4Cidr,
    /// Optional SNAT source-port range.
    pub ports: Option<PortRange>,
}

/// One `[[publish]]` entry: DNAT host port(s) to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Transport protocol.
    pub proto: Proto,
    /// Host port or port range.
    pub port: PortRange,
    /// Container address.
    pub to_addr: Ipv4Addr,
    /// Container port; for a range, the first port of a 1:1 mapped range.
    pub to_port: u16,
    /// Only answer on this host address (`None` = any; `"0.0.0.0"` in the
    /// file also means any).
    pub address: Option<Ipv4Addr>,
}

impl Publish {
    /// The container port that `host_port` maps to, or `None` if
    /// `host_port` is not published by this entry.
    pub fn target_port(&self, host_port: u16) -> Option<u16> {
        self.port
            .contains(host_port)
            .then(|| self.rule().container_port(host_port))
    }

    /// The rule as the datapath stores it.
    pub fn rule(&self) -> netbpf_common::PublishRule {
        netbpf_common::PublishRule::new(
            self.to_addr.octets(),
            self.to_port,
            self.port.start,
            self.port.end,
        )
    }

    /// Its entries in the published-ports trie: `(prefix length, key)`.
    pub fn blocks(&self) -> netbpf_common::PublishBlocks {
        netbpf_common::publish_blocks(
            self.proto.number(),
            self.address.map_or([0; 4], |a| a.octets()),
            self.port.start,
            self.port.end,
        )
    }
}

/// Whether two published entries, each `(protocol, host address or None
/// for any, host ports)`, would answer the same packets: the one overlap
/// rule for the config file and for `netbpf publish add`.
pub fn publish_collides(
    a: (u8, Option<Ipv4Addr>, PortRange),
    b: (u8, Option<Ipv4Addr>, PortRange),
) -> bool {
    let addresses_collide = match (a.1, b.1) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    a.0 == b.0 && addresses_collide && a.2.overlaps(&b.2)
}

/// One `[[container]]` entry: route `address` via `interface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The container's IPv4 address.
    pub address: Ipv4Addr,
    /// Host side of the container's veth pair.
    pub interface: String,
}

/// The `[conntrack]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Maximum number of tracked flows.
    pub capacity: u32,
    /// Idle timeouts per flow type.
    pub timeouts: Timeouts,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            capacity: DEFAULT_CONNTRACK_CAPACITY,
            timeouts: Timeouts::default(),
        }
    }
}

/// What happens to an opening TCP SYN to the host's address that no
/// mapping, published port or host socket takes (`[inbound] unsolicited_syn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsolicitedSyn {
    /// Dropped silently (RFC 5382 REQ-4), counted as `drop_unsolicited_syn`.
    #[default]
    Drop,
    /// Handed to the host's stack, where netfilter DNAT, IPVS or
    /// kube-proxy may take it (counted as `unsolicited_syns_passed`).
    Pass,
}

/// Default of `[inbound] new_flows_per_source`: new flows per second that
/// one outside address may open. With the 4 min transitory timeout, one
/// source holds at most about 24,000 half-open flows (9% of the default
/// table).
pub const DEFAULT_NEW_FLOWS_PER_SOURCE: u32 = 100;
/// Default of `[inbound] new_flows_burst`.
pub const DEFAULT_NEW_FLOWS_BURST: u32 = 1000;
/// Largest accepted `new_flows_per_source` and `new_flows_burst`.
pub const MAX_NEW_FLOWS: u32 = 1_000_000;

/// The `[inbound]` table: policies for packets from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundConfig {
    /// Unsolicited SYNs to the host's addresses.
    pub unsolicited_syn: UnsolicitedSyn,
    /// New flows per second one outside address may open (to published
    /// ports, or to mappings through endpoint-independent filtering);
    /// 0 = no limit.
    pub new_flows_per_source: u32,
    /// How many of them may come at once.
    pub new_flows_burst: u32,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            unsolicited_syn: UnsolicitedSyn::Drop,
            new_flows_per_source: DEFAULT_NEW_FLOWS_PER_SOURCE,
            new_flows_burst: DEFAULT_NEW_FLOWS_BURST,
        }
    }
}

impl InboundConfig {
    /// The datapath's view of these policies.
    pub fn settings(&self) -> netbpf_common::Settings {
        let flags = match self.unsolicited_syn {
            UnsolicitedSyn::Drop => 0,
            UnsolicitedSyn::Pass => netbpf_common::settings_flags::PASS_UNSOLICITED_SYN,
        };
        netbpf_common::Settings::with_source_budget(
            flags,
            self.new_flows_per_source,
            self.new_flows_burst,
        )
    }
}

/// The `[metrics]` table: where the daemon serves Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Listen address (`address`), [`DEFAULT_METRICS_ADDRESS`] by default.
    pub address: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: DEFAULT_METRICS_ADDRESS,
        }
    }
}

/// Conntrack idle timeouts. The defaults follow RFC 4787, 5382, 5508 and
/// 7857: UDP 5 min, TCP established 2 h 4 min, TCP transitory 4 min,
/// ICMP 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// UDP mapping timeout.
    pub udp: Duration,
    /// Established TCP connection timeout.
    pub tcp_established: Duration,
    /// Transitory TCP (handshake / closing) timeout.
    pub tcp_transitory: Duration,
    /// ICMP query mapping timeout.
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            udp: DEFAULT_UDP_TIMEOUT,
            tcp_established: RFC_MIN_TCP_ESTABLISHED_TIMEOUT,
            tcp_transitory: RFC_MIN_TCP_TRANSITORY_TIMEOUT,
            icmp: RFC_MIN_ICMP_TIMEOUT,
        }
    }
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
    /// conntrack, metrics, inbound, bgp (entries in file order). A check
    /// that needs two values (an overlap, a range that must fit its target)
    /// runs only when both are valid, so one mistake is reported once.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        raw.validate()
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
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// Parses a duration: bare seconds (`"90"`) or number+unit groups with units
/// `h`, `m`, `s`, each at most once and in that order (`"90s"`, `"5m"`,
/// `"2h4m"`, `"1h30m15s"`). Surrounding whitespace is ignored. Zero is
/// accepted here (callers decide whether it is meaningful).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| "number too large".to_string());
    }
    let mut total: u64 = 0;
    let mut last_rank = 3u8;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let (num, after) = rest.split_at(digits);
        let n: u64 = num.parse().map_err(|_| "number too large".to_string())?;
        let Some(unit) = after.chars().next() else {
            return Err(format!("missing unit after {num} (expected h, m or s)"));
        };
        if after.starts_with("ms") {
            return Err("milliseconds are not supported (units are h, m, s)".to_string());
        }
        let (mult, rank) = match unit {
            'h' => (3600u64, 2u8),
            'm' => (60, 1),
            's' => (1, 0),
            other => return Err(format!("unknown unit {other:?} (expected h, m or s)")),
        };
        if rank >= last_rank {
            return Err("units must appear at most once each, in the order h, m, s".to_string());
        }
        last_rank = rank;
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration too large".to_string())?;
        rest = &after[unit.len_utf8()..];
    }
    Ok(Duration::from_secs(total))
}

/// Formats whole seconds compactly: `7440` -> `"2h4m"`, `90` -> `"1m30s"`.
fn format_secs(total: u64) -> String {
    if total == 0 {
        return "0s".to_string();
    }
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

// ---------------------------------------------------------------------------
// Small parsing helpers
// ---------------------------------------------------------------------------

/// Parses a plain decimal number (ASCII digits only, no sign), at most 10
/// digits.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_port(s: &str) -> Result<u16, String> {
    match parse_decimal(s) {
        Some(n @ 1..=65535) => Ok(n as u16),
        Some(n) => Err(format!("port {n} is out of range 1..=65535")),
        None => Err(format!(
            "{s:?} is not a port number (expected \"A\" or \"A-B\" with 1 <= A <= B <= 65535)"
        )),
    }
}

fn port_from_int(key: &str, n: i64) -> Result<u16, ConfigError> {
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(invalid(key, format!("{n} is out of range 1..=65535"))),
    }
}

fn port_range_value(key: &str, v: &IntOrStr) -> Result<PortRange, ConfigError> {
    match v {
        IntOrStr::Int(n) => port_from_int(key, *n).map(PortRange::single),
        IntOrStr::Str(s) => s
            .parse()
            .map_err(|e| invalid(key, format!("{s:?} is not a valid port range: {e}"))),
    }
}

fn check_interface_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| Err(invalid(key, format!("{name:?} {why}")));
    if name.is_empty() {
        return bad("is empty; an interface name is required");
    }
    if name.len() > MAX_INTERFACE_NAME_LEN {
        return bad(&format!(
            "is {} bytes long; interface names are at most {MAX_INTERFACE_NAME_LEN} bytes",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return bad("is not a valid interface name");
    }
    if name.contains('/') {
        return bad("contains '/', which is not allowed in interface names");
    }
    if name.contains(':') {
        return bad("contains ':', which is not allowed in interface names");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    Ok(())
}

fn parse_ipv4(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(key, format!("{s:?} is not an IPv4 address")))
}

/// Rejects addresses that can never be a unicast host address.
fn check_unicast(key: &str, s: &str, ip: Ipv4Addr) -> Result<(), ConfigError> {
    let why = if ip.is_unspecified() {
        "is the unspecified address"
    } else if ip.is_broadcast() {
        "is the broadcast address"
    } else if ip.is_multicast() {
        "is a multicast address"
    } else {
        return Ok(());
    };
    Err(invalid(
        key,
        format!("{s:?} {why}; expected a unicast IPv4 address"),
    ))
}

/// The loopback network: never behind a NAT, never a container.
const LOOPBACK: Ipv4Cidr = Ipv4Cidr {
    addr: Ipv4Addr::new(127, 0, 0, 0),
    prefix_len: 8,
};

/// Refuses a masquerade source that would lock the host out.
///
/// The ingress program drops every packet arriving on the uplink whose
/// source lies in a masquerade CIDR (those addresses are behind the NAT, so
/// such a packet is spoofed). A source that covers the host's own uplink
/// addresses (`0.0.0.0/0`, or `10.0.0.0/8` on a `10.1.2.3` uplink) makes
/// the host's network, its gateway included, "spoofed": nothing reaches the
/// host any more, and since the links are pinned this lasts until
/// `netbpf down`. Loopback is never behind a NAT.
///
/// `host_addrs` are the host's addresses on the uplink: `uplink.address`
/// when the file is checked on its own, every address of the uplink once
/// the daemon has resolved it ([`Config::check_host_addresses`]), the
/// datapath's masquerade address for `netbpf masquerade add`.
pub fn check_masquerade_source(
    key: &str,
    source: &Ipv4Cidr,
    host_addrs: &[Ipv4Addr],
) -> Result<(), ConfigError> {
    let lockout = "every packet arriving on the uplink from there would be dropped as \
                   spoofed, locking the host out until `netbpf down`; give the containers' \
                   subnet";
    if source.prefix_len == 0 {
        return Err(invalid(
            key,
            format!("\"{source}\" covers every address, the host's own included: {lockout}"),
        ));
    }
    if source.overlaps(&LOOPBACK) {
        return Err(invalid(
            key,
            format!(
                "\"{source}\" overlaps the loopback network {LOOPBACK}, which is never behind a NAT"
            ),
        ));
    }
    if let Some(a) = host_addrs.iter().find(|a| source.contains(**a)) {
        return Err(invalid(
            key,
            format!("\"{source}\" contains {a}, an address of the host on the uplink: {lockout}"),
        ));
    }
    Ok(())
}

/// Refuses a published port's target that is not a container: the
/// unspecified, broadcast, multicast or a loopback address, or (with
/// `host_addrs`) one of the host's own addresses. `to` is the value as
/// written, quoted in the message.
pub fn check_publish_to(
    key: &str,
    to: &str,
    addr: Ipv4Addr,
    host_addrs: &[Ipv4Addr],
) -> Result<(), ConfigError> {
    check_unicast(key, to, addr)?;
    if addr.is_loopback() {
        return Err(invalid(
            key,
            format!(
                "{to:?}: {addr} is a loopback address, never a container's; a service of the \
                 host itself needs no published port"
            ),
        ));
    }
    if host_addrs.contains(&addr) {
        return Err(invalid(
            key,
            format!(
                "{to:?}: {addr} is an address of the host itself, not a container's; a service \
                 of the host needs no published port"
            ),
        ));
    }
    Ok(())
}

impl Config {
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

// ---------------------------------------------------------------------------
// Raw (deserialized) form
// ---------------------------------------------------------------------------

/// An integer or a string, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IntOrStr {
    Int(i64),
    Str(String),
}

struct IntOrStrVisitor(&'static str);

impl Visitor<'_> for IntOrStrVisitor {
    type Value = IntOrStr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrStr, E> {
        Ok(IntOrStr::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrStr, E> {
        i64::try_from(v)
            .map(IntOrStr::Int)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrStr, E> {
        Ok(IntOrStr::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<IntOrStr, E> {
        Ok(IntOrStr::Str(v))
    }
}

fn de_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IntOrStr>, D::Error> {
    d.deserialize_any(IntOrStrVisitor(
        "an integer port or a string range like \"8000-8010\"",
    ))
    .map(Some)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IntOrStr>, D::Error> {
    d.deserialize_any(IntOrStrVisitor(
        "integer seconds or a duration string like \"5m\" or \"2h4m\"",
    ))
    .map(Some)
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
    bgp: Option<RawBgp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    unsolicited_syn: Option<String>,
    new_flows_per_source: Option<i64>,
    new_flows_burst: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    interface: Option<String>,
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMasquerade {
    source: Option<String>,
    #[serde(default, deserialize_with = "de_port")]
    ports: Option<IntOrStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    proto: Option<String>,
    #[serde(default, deserialize_with = "de_port")]
    port: Option<IntOrStr>,
    to: Option<String>,
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    address: Option<String>,
    interface: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConntrack {
    capacity: Option<i64>,
    #[serde(default, deserialize_with = "de_duration")]
    udp_timeout: Option<IntOrStr>,
    #[serde(default, deserialize_with = "de_duration")]
    tcp_established_timeout: Option<IntOrStr>,
    #[serde(default, deserialize_with = "de_duration")]
    tcp_transitory_timeout: Option<IntOrStr>,
    #[serde(default, deserialize_with = "de_duration")]
    icmp_timeout: Option<IntOrStr>,
}

fn required<T>(key: &str, v: Option<T>, what: &str) -> Result<T, ConfigError> {
    v.ok_or_else(|| invalid(key, format!("is required ({what})")))
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// The problems found so far while validating one file.
///
/// Each key is checked on its own and a bad one is recorded here instead of
/// ending the pass, so one run reports every bad value in the file. Within
/// one key the first problem wins (a value that does not parse is not also
/// range-checked). A check that needs two keys, such as an overlap between
/// two entries or a range that must fit its target, runs only when both
/// are valid, so one mistake is reported once.
#[derive(Debug, Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    /// The value, or `None` after recording why it was refused.
    fn check<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// `Ok` when nothing was recorded; otherwise the one error, or all of
    /// them in file order as [`ConfigError::Several`].
    fn finish(mut self) -> Result<(), ConfigError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Several(self.0)),
        }
    }
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
        let bgp = self.bgp.map(|b| validate_bgp(b, &mut p));
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
            bgp: bgp.flatten(),
            warnings,
        })
    }
}

/// An interface name: present and acceptable to the kernel.
fn interface_value(key: &str, raw: Option<String>, what: &str) -> Result<String, ConfigError> {
    let name = required(key, raw, what)?;
    check_interface_name(key, &name)?;
    Ok(name)
}

/// A unicast IPv4 address.
fn unicast_value(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    let ip = parse_ipv4(key, s)?;
    check_unicast(key, s, ip)?;
    Ok(ip)
}

/// The uplink, or `None` (recorded in `p`) when it has no usable interface.
/// A bad `uplink.address` is recorded and left out, so the rules that
/// depend on it are still checked against what is known.
fn validate_uplink(raw: Option<RawUplink>, p: &mut Problems) -> Option<Uplink> {
    let Some(raw) = raw else {
        p.check::<()>(Err(invalid(
            "uplink",
            "the [uplink] table is required (it names the host's outside interface)",
        )));
        return None;
    };
    let interface = p.check(interface_value(
        "uplink.interface",
        raw.interface,
        "the host's outside interface, e.g. \"eth0\"",
    ));
    let address = raw
        .address
        .and_then(|s| p.check(unicast_value("uplink.address", &s)));
    Some(Uplink {
        interface: interface?,
        address,
    })
}

/// One `[[masquerade]] source`, checked against the host's addresses and
/// the valid sources before it (`prev`: index in the file, CIDR).
fn masquerade_source(
    key: &str,
    raw: Option<String>,
    host_addrs: &[Ipv4Addr],
    prev: &[(usize, Ipv4Cidr)],
) -> Result<Ipv4Cidr, ConfigError> {
    let s = required(key, raw, "an IPv4 CIDR like \"10.77.0.0/24\"")?;
    let source: Ipv4Cidr = s
        .parse()
        .map_err(|e| invalid(key, format!("{s:?} is not an IPv4 CIDR: {e}")))?;
    if source.has_host_bits() {
        return Err(invalid(
            key,
            format!(
                "{s:?} has host bits set (did you mean \"{}\"?)",
                source.network()
            ),
        ));
    }
    check_masquerade_source(key, &source, host_addrs)?;
    if let Some((j, other)) = prev.iter().find(|(_, other)| other.overlaps(&source)) {
        return Err(invalid(
            key,
            format!("{s:?} overlaps masquerade[{j}].source (\"{other}\")"),
        ));
    }
    Ok(source)
}

fn validate_masquerade(
    raw: Vec<RawMasquerade>,
    uplink: Option<&Uplink>,
    p: &mut Problems,
) -> Vec<Masquerade> {
    let host_addrs: Vec<Ipv4Addr> = uplink.and_then(|u| u.address).into_iter().collect();
    let mut valid: Vec<(usize, Ipv4Cidr)> = Vec::with_capacity(raw.len());
    let mut out: Vec<Masquerade> = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let source = p.check(masquerade_source(
            &format!("masquerade[{i}].source"),
            m.source,
            &host_addrs,
            &valid,
        ));
        let ports = m
            .ports
            .and_then(|v| p.check(port_range_value(&format!("masquerade[{i}].ports"), &v)));
        if let Some(source) = source {
            valid.push((i, source));
            out.push(Masquerade { source, ports });
        }
    }
    out
}

fn publish_proto(key: &str, raw: Option<String>) -> Result<Proto, ConfigError> {
    let proto_s = required(key, raw, "\"tcp\" or \"udp\"")?;
    match proto_s.as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(invalid(
            key,
            format!("{proto_s:?} is not a supported protocol (expected \"tcp\" or \"udp\")"),
        )),
    }
}

/// A `[[publish]] to`: the container's address and port, and the value as
/// written (quoted in later messages).
fn publish_to(
    key: &str,
    raw: Option<String>,
    host_addrs: &[Ipv4Addr],
) -> Result<(Ipv4Addr, u16, String), ConfigError> {
    let to = required(
        key,
        raw,
        "container \"address:port\", e.g. \"10.77.0.2:4000\"",
    )?;
    let (addr_s, port_s) = to.rsplit_once(':').ok_or_else(|| {
        invalid(
            key,
            format!("{to:?} is not \"address:port\" (e.g. \"10.77.0.2:4000\")"),
        )
    })?;
    let to_addr: Ipv4Addr = addr_s
        .parse()
        .map_err(|_| invalid(key, format!("{to:?}: {addr_s:?} is not an IPv4 address")))?;
    check_publish_to(key, &to, to_addr, host_addrs)?;
    let to_port = parse_port(port_s).map_err(|e| invalid(key, format!("{to:?}: {e}")))?;
    Ok((to_addr, to_port, to))
}

/// `[[publish]] address`: `None` for any address (absent or `0.0.0.0`).
fn publish_address(key: &str, s: &str) -> Result<Option<Ipv4Addr>, ConfigError> {
    let ip = parse_ipv4(key, s)?;
    if ip.is_unspecified() {
        return Ok(None);
    }
    check_unicast(key, s, ip)?;
    Ok(Some(ip))
}

fn validate_publish(
    raw: Vec<RawPublish>,
    uplink: Option<&Uplink>,
    p: &mut Problems,
) -> Vec<Publish> {
    let host_addrs: Vec<Ipv4Addr> = uplink.and_then(|u| u.address).into_iter().collect();
    // The valid entries, each with its index in the file.
    let mut valid: Vec<(usize, Publish)> = Vec::with_capacity(raw.len());
    for (i, raw) in raw.into_iter().enumerate() {
        let k = |field: &str| format!("publish[{i}].{field}");
        let proto = p.check(publish_proto(&k("proto"), raw.proto));
        let port = p.check(
            required(
                &k("port"),
                raw.port,
                "a host port like 8080 or a range like \"8000-8010\"",
            )
            .and_then(|v| port_range_value(&k("port"), &v)),
        );
        let to = p.check(publish_to(&k("to"), raw.to, &host_addrs));
        let address = match raw.address {
            None => Some(None),
            Some(s) => p.check(publish_address(&k("address"), &s)),
        };
        let (Some(proto), Some(port), Some((to_addr, to_port, to)), Some(address)) =
            (proto, port, to, address)
        else {
            continue;
        };

        let span = port.end - port.start;
        if u32::from(to_port) + u32::from(span) > 65535 {
            p.check::<()>(Err(invalid(
                k("to"),
                format!(
                    "{to:?}: host ports {port} would map to {}-{}, past 65535",
                    to_port,
                    u32::from(to_port) + u32::from(span)
                ),
            )));
            continue;
        }

        if let Some((j, prev)) = valid.iter().find(|(_, prev)| {
            publish_collides(
                (prev.proto.number(), prev.address, prev.port),
                (proto.number(), address, port),
            )
        }) {
            let prev_where = match prev.address {
                Some(a) => format!(" on {a}"),
                None => String::new(),
            };
            p.check::<()>(Err(invalid(
                k("port"),
                format!(
                    "{proto} port {port} overlaps publish[{j}].port ({} {}{prev_where})",
                    prev.proto, prev.port
                ),
            )));
            continue;
        }

        valid.push((
            i,
            Publish {
                proto,
                port,
                to_addr,
                to_port,
                address,
            },
        ));
    }
    valid.into_iter().map(|(_, p)| p).collect()
}

/// One `[[publish]]` entry from the values `netbpf publish add` takes,
/// checked by the code that checks the file's entries and named like a
/// file's first entry (`publish[0].to`). The host's addresses and the
/// other rules are the datapath's, checked by `control`.
pub fn publish_entry(
    proto: &str,
    port: &str,
    to: &str,
    address: Option<Ipv4Addr>,
) -> Result<Publish, ConfigError> {
    let raw = RawPublish {
        proto: Some(proto.to_owned()),
        port: Some(cli_port(port)),
        to: Some(to.to_owned()),
        address: address.map(|a| a.to_string()),
    };
    let mut p = Problems::default();
    let entry = validate_publish(vec![raw], None, &mut p).pop();
    p.finish()?;
    entry.ok_or_else(|| invalid("publish[0]", "could not be validated"))
}

/// What names a published entry for `netbpf publish del`: protocol, host
/// port (range) and address (`None` for any), checked like
/// [`publish_entry`] checks them.
pub fn publish_key(
    proto: &str,
    port: &str,
    address: Option<Ipv4Addr>,
) -> Result<(Proto, PortRange, Option<Ipv4Addr>), ConfigError> {
    let mut p = Problems::default();
    let proto = p.check(publish_proto("publish[0].proto", Some(proto.to_owned())));
    let port = p.check(port_range_value("publish[0].port", &cli_port(port)));
    let address = match address {
        None => Some(None),
        Some(a) => p.check(publish_address("publish[0].address", &a.to_string())),
    };
    p.finish()?;
    match (proto, port, address) {
        (Some(proto), Some(port), Some(address)) => Ok((proto, port, address)),
        _ => Err(invalid("publish[0]", "could not be validated")),
    }
}

/// One `[[masquerade]]` entry from the values `netbpf masquerade add|del`
/// takes, checked like [`publish_entry`].
pub fn masquerade_entry(source: &str, ports: Option<&str>) -> Result<Masquerade, ConfigError> {
    let raw = RawMasquerade {
        source: Some(source.to_owned()),
        ports: ports.map(|s| IntOrStr::Str(s.to_owned())),
    };
    let mut p = Problems::default();
    let entry = validate_masquerade(vec![raw], None, &mut p).pop();
    p.finish()?;
    entry.ok_or_else(|| invalid("masquerade[0]", "could not be validated"))
}

/// A port as a command line gives it: a number is checked as the file's
/// `port = 80`, anything else as its `port = "8000-8010"`.
fn cli_port(port: &str) -> IntOrStr {
    match port.parse() {
        Ok(n) => IntOrStr::Int(n),
        Err(_) => IntOrStr::Str(port.to_owned()),
    }
}

fn validate_containers(
    raw: Vec<RawContainer>,
    uplink: Option<&Uplink>,
    p: &mut Problems,
) -> Vec<Container> {
    let mut out: Vec<Container> = Vec::with_capacity(raw.len());
    let mut by_addr: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut by_if: HashMap<String, usize> = HashMap::new();
    for (i, c) in raw.into_iter().enumerate() {
        let akey = format!("container[{i}].address");
        let ikey = format!("container[{i}].interface");
        let address = p.check(container_address(&akey, c.address, uplink, &by_addr));
        let interface = p.check(container_interface(&ikey, c.interface, uplink, &by_if));
        if let Some(address) = address {
            by_addr.insert(address, i);
        }
        if let Some(interface) = &interface {
            by_if.insert(interface.clone(), i);
        }
        if let (Some(address), Some(interface)) = (address, interface) {
            out.push(Container { address, interface });
        }
    }
    out
}

/// A `[[container]] address`, unique and not the uplink's.
fn container_address(
    key: &str,
    raw: Option<String>,
    uplink: Option<&Uplink>,
    seen: &HashMap<Ipv4Addr, usize>,
) -> Result<Ipv4Addr, ConfigError> {
    let addr_s = required(key, raw, "the container's IPv4 address")?;
    let address = unicast_value(key, &addr_s)?;
    if let Some(&j) = seen.get(&address) {
        return Err(invalid(
            key,
            format!("{addr_s:?} is already used by container[{j}].address"),
        ));
    }
    if uplink.and_then(|u| u.address) == Some(address) {
        return Err(invalid(
            key,
            format!("{addr_s:?} is the same as uplink.address"),
        ));
    }
    Ok(address)
}

/// A `[[container]] interface`, unique and not the uplink.
fn container_interface(
    key: &str,
    raw: Option<String>,
    uplink: Option<&Uplink>,
    seen: &HashMap<String, usize>,
) -> Result<String, ConfigError> {
    let interface = interface_value(key, raw, "host side of the container's veth")?;
    if let Some(&j) = seen.get(&interface) {
        return Err(invalid(
            key,
            format!("{interface:?} is already used by container[{j}].interface"),
        ));
    }
    if uplink.is_some_and(|u| u.interface == interface) {
        return Err(invalid(
            key,
            format!("{interface:?} is the uplink interface (uplink.interface)"),
        ));
    }
    Ok(interface)
}

fn validate_timeout(
    key: &str,
    raw: Option<IntOrStr>,
    default: Duration,
    rfc_min: Duration,
    rfc: &str,
    warnings: &mut Vec<String>,
) -> Result<Duration, ConfigError> {
    let (d, shown) = match raw {
        None => return Ok(default),
        Some(IntOrStr::Int(n)) => {
            let secs = u64::try_from(n)
                .map_err(|_| invalid(key, format!("{n} is negative; expected seconds > 0")))?;
            (Duration::from_secs(secs), n.to_string())
        }
        Some(IntOrStr::Str(s)) => {
            let d = parse_duration(&s)
                .map_err(|e| invalid(key, format!("{s:?} is not a valid duration ({e})")))?;
            (d, format!("{s:?}"))
        }
    };
    if d.is_zero() {
        return Err(invalid(
            key,
            format!("{shown} is zero; a timeout must be positive"),
        ));
    }
    if d > MAX_TIMEOUT {
        return Err(invalid(
            key,
            format!("{shown} is longer than the maximum of 365 days"),
        ));
    }
    if d < rfc_min {
        warnings.push(format!(
            "{key}: {shown} ({}) is below the {rfc} minimum of {}; flows may expire while still in use",
            format_secs(d.as_secs()),
            format_secs(rfc_min.as_secs())
        ));
    }
    Ok(d)
}

/// `[conntrack]`; a bad key is recorded in `p` and its default kept.
fn validate_conntrack(
    raw: Option<RawConntrack>,
    warnings: &mut Vec<String>,
    p: &mut Problems,
) -> ConntrackConfig {
    let Some(raw) = raw else {
        return ConntrackConfig::default();
    };
    let defaults = Timeouts::default();
    let capacity = match raw.capacity {
        None => DEFAULT_CONNTRACK_CAPACITY,
        Some(n) => match u32::try_from(n) {
            Ok(c) if (MIN_CONNTRACK_CAPACITY..=MAX_CONNTRACK_CAPACITY).contains(&c) => c,
            _ => {
                p.check::<()>(Err(invalid(
                    "conntrack.capacity",
                    format!(
                        "{n} is out of range {MIN_CONNTRACK_CAPACITY}..={MAX_CONNTRACK_CAPACITY}"
                    ),
                )));
                DEFAULT_CONNTRACK_CAPACITY
            }
        },
    };
    let mut timeout = |key: &str, raw: Option<IntOrStr>, default: Duration, min, rfc| {
        p.check(validate_timeout(key, raw, default, min, rfc, warnings))
            .unwrap_or(default)
    };
    let udp = timeout(
        "conntrack.udp_timeout",
        raw.udp_timeout,
        defaults.udp,
        RFC_MIN_UDP_TIMEOUT,
        "RFC 4787",
    );
    let tcp_established = timeout(
        "conntrack.tcp_established_timeout",
        raw.tcp_established_timeout,
        defaults.tcp_established,
        RFC_MIN_TCP_ESTABLISHED_TIMEOUT,
        "RFC 5382",
    );
    let tcp_transitory = timeout(
        "conntrack.tcp_transitory_timeout",
        raw.tcp_transitory_timeout,
        defaults.tcp_transitory,
        RFC_MIN_TCP_TRANSITORY_TIMEOUT,
        "RFC 5382",
    );
    let icmp = timeout(
        "conntrack.icmp_timeout",
        raw.icmp_timeout,
        defaults.icmp,
        RFC_MIN_ICMP_TIMEOUT,
        "RFC 5508",
    );
    ConntrackConfig {
        capacity,
        timeouts: Timeouts {
            udp,
            tcp_established,
            tcp_transitory,
            icmp,
        },
    }
}

/// `[inbound]`; a bad key is recorded in `p` and its default kept.
fn validate_inbound(raw: Option<RawInbound>, p: &mut Problems) -> InboundConfig {
    let defaults = InboundConfig::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let unsolicited_syn = match raw.unsolicited_syn.as_deref() {
        None => defaults.unsolicited_syn,
        Some("drop") => UnsolicitedSyn::Drop,
        Some("pass") => UnsolicitedSyn::Pass,
        Some(other) => {
            p.check::<()>(Err(invalid(
                "inbound.unsolicited_syn",
                format!("{other:?} is not one of \"drop\", \"pass\""),
            )));
            defaults.unsolicited_syn
        }
    };
    let mut count = |key: &str, v: Option<i64>, default: u32, min: u32| match v {
        None => default,
        Some(n) => match u32::try_from(n) {
            Ok(c) if (min..=MAX_NEW_FLOWS).contains(&c) => c,
            _ => {
                p.check::<()>(Err(invalid(
                    key,
                    format!("{n} is out of range {min}..={MAX_NEW_FLOWS}"),
                )));
                default
            }
        },
    };
    InboundConfig {
        unsolicited_syn,
        new_flows_per_source: count(
            "inbound.new_flows_per_source",
            raw.new_flows_per_source,
            defaults.new_flows_per_source,
            0,
        ),
        new_flows_burst: count(
            "inbound.new_flows_burst",
            raw.new_flows_burst,
            defaults.new_flows_burst,
            1,
        ),
    }
}

/// `[metrics]`; a bad address is recorded in `p` and the default kept.
fn validate_metrics(raw: Option<RawMetrics>, p: &mut Problems) -> MetricsConfig {
    let Some(address) = raw.and_then(|r| r.address) else {
        return MetricsConfig::default();
    };
    p.check(metrics_address(&address))
        .map_or_else(MetricsConfig::default, |address| MetricsConfig { address })
}

fn metrics_address(address: &str) -> Result<SocketAddr, ConfigError> {
    let key = "metrics.address";
    let addr: SocketAddr = address.trim().parse().map_err(|_| {
        invalid(
            key,
            format!(
                "{address:?} is not an address:port (e.g. \"{DEFAULT_METRICS_ADDRESS}\", or \"[::1]:9469\")"
            ),
        )
    })?;
    if addr.port() == 0 {
        return Err(invalid(
            key,
            format!("{address:?} has port 0; a scraper needs a fixed port"),
        ));
    }
    if addr.ip().is_multicast() {
        return Err(invalid(
            key,
            format!("{address:?} is a multicast address; expected a local address to listen on"),
        ));
    }
    if let SocketAddr::V4(v4) = addr
        && v4.ip().is_broadcast()
    {
        return Err(invalid(
            key,
            format!("{address:?} is the broadcast address; expected a local address to listen on"),
        ));
    }
    Ok(addr)
}

// ---------------------------------------------------------------------------
// [bgp]: container routes across hosts through BIRD
// ---------------------------------------------------------------------------

/// Default path of BIRD's control socket (Debian's `bird2`).
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";

/// Default path of the BIRD config fragment netbpf renders and owns.
pub const DEFAULT_BIRD_INCLUDE: &str = "/etc/bird/netbpf.conf";

/// Default path of BIRD's main config file.
pub const DEFAULT_BIRD_MAIN_CONFIG: &str = "/etc/bird/bird.conf";

/// Default `[bgp] receive_limit`: routes accepted from one peer before
/// BIRD drops the rest (`receive limit ... action block`). Room for a few
/// thousand hosts' containers as /32s; raise it for more.
pub const DEFAULT_BGP_RECEIVE_LIMIT: u32 = 16_384;

/// Largest accepted `[bgp] receive_limit`.
pub const MAX_BGP_RECEIVE_LIMIT: u32 = 4_000_000;

/// Shortest accepted `[bgp] import_min_len`: a learned prefix is a
/// container (/32) or another host's block, never wider than /8 (the same
/// bound as `block`).
pub const MIN_BGP_IMPORT_LEN: u8 = 8;

/// The `[bgp]` table: announce the routed containers over BGP through
/// BIRD 2 and learn the other hosts' containers from it.
///
/// ```toml
/// [bgp]
/// local_as = 64512                    # required: this host's AS
/// router_id = "10.0.0.11"             # required: BGP router id (an IPv4 address)
/// # socket = "/run/bird/bird.ctl"     # BIRD's control socket
/// # config = "/etc/bird/netbpf.conf"  # the fragment netbpf writes (it owns this file)
/// # main_config = "/etc/bird/bird.conf" # written by netbpf only if missing
/// # block = "10.10.1.0/24"            # announce this block plus the /32s outside it
/// # import_min_len = 32               # learn prefixes this long or longer (default: block's, else 32)
/// # receive_limit = 16384             # routes accepted per peer; BIRD drops the rest
///
/// [[bgp.peer]]
/// address = "10.0.0.12"
/// as = 64512
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// This host's autonomous system number (`local_as`).
    pub local_as: u32,
    /// The BGP router id (`router_id`).
    pub router_id: Ipv4Addr,
    /// BIRD's control socket (`socket`).
    pub socket: PathBuf,
    /// The fragment netbpf renders and owns (`config`); BIRD's main config
    /// includes it.
    pub config: PathBuf,
    /// BIRD's main config (`main_config`): netbpf writes a complete one
    /// only when the file does not exist (or is one it wrote before).
    pub main_config: PathBuf,
    /// A per-host block announced as a whole (`block`); containers outside
    /// it are announced as /32s. `None`: every container as a /32.
    pub block: Option<Ipv4Cidr>,
    /// Shortest prefix learned from a peer (`import_min_len`): /32s, the
    /// containers, by default; with a `block`, the block's length, so the
    /// other hosts' blocks of the same size are learned too. Shorter
    /// prefixes (the default route, aggregates) are rejected, and so is
    /// anything inside the host's own networks.
    pub import_min_len: u8,
    /// Routes accepted from one peer (`receive_limit`); BIRD drops the
    /// routes past it and keeps the session (`action block`).
    pub receive_limit: u32,
    /// BGP neighbours (`[[bgp.peer]]`), in file order.
    pub peers: Vec<BgpPeer>,
}

/// One `[[bgp.peer]]`: a BGP neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BgpPeer {
    /// Its address (on the uplink's segment).
    pub address: Ipv4Addr,
    /// Its AS (`as`): the same as `local_as` makes an iBGP session.
    pub asn: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBgp {
    local_as: Option<i64>,
    router_id: Option<String>,
    socket: Option<String>,
    config: Option<String>,
    main_config: Option<String>,
    block: Option<String>,
    import_min_len: Option<i64>,
    receive_limit: Option<i64>,
    #[serde(default)]
    peer: Vec<RawBgpPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBgpPeer {
    address: Option<String>,
    #[serde(rename = "as")]
    asn: Option<i64>,
}

/// A usable AS number: 1..=4294967294, not AS_TRANS (23456).
fn validate_asn(key: &str, n: i64) -> Result<u32, ConfigError> {
    match u32::try_from(n) {
        Ok(23456) => Err(invalid(
            key,
            "23456 is AS_TRANS (RFC 6793), not a real AS number",
        )),
        Ok(asn) if (1..u32::MAX).contains(&asn) => Ok(asn),
        _ => Err(invalid(
            key,
            format!("{n} is not an AS number in 1..=4294967294"),
        )),
    }
}

/// An absolute path, as given (BIRD is a separate process: relative paths
/// would depend on both working directories).
fn bgp_path(key: &str, raw: Option<String>, default: &str) -> Result<PathBuf, ConfigError> {
    let s = raw.unwrap_or_else(|| default.to_owned());
    if s.is_empty() || !s.starts_with('/') {
        return Err(invalid(key, format!("{s:?} is not an absolute path")));
    }
    if s.contains('"') || s.chars().any(|c| c.is_control()) {
        return Err(invalid(
            key,
            format!(
                "{s:?} contains a quote or control character, which BIRD's include cannot hold"
            ),
        ));
    }
    Ok(PathBuf::from(s))
}

fn bgp_block(s: &str) -> Result<Ipv4Cidr, ConfigError> {
    let cidr: Ipv4Cidr = s
        .parse()
        .map_err(|e| invalid("bgp.block", format!("{s:?} is not an IPv4 CIDR: {e}")))?;
    if cidr.has_host_bits() {
        return Err(invalid(
            "bgp.block",
            format!(
                "{s:?} has host bits set (did you mean \"{}\"?)",
                cidr.network()
            ),
        ));
    }
    if cidr.prefix_len < 8 {
        return Err(invalid(
            "bgp.block",
            format!("{s:?} is wider than /8; a per-host block is a small range"),
        ));
    }
    Ok(cidr)
}

/// One `[[bgp.peer]] address`: not this host and not another peer's.
fn bgp_peer_address(
    key: &str,
    raw: Option<String>,
    router_id: Option<Ipv4Addr>,
    prev: &[(usize, Ipv4Addr)],
) -> Result<Ipv4Addr, ConfigError> {
    let s = required(key, raw, "the neighbour's IPv4 address")?;
    let address = unicast_value(key, &s)?;
    if router_id == Some(address) {
        return Err(invalid(
            key,
            format!("{s:?} is bgp.router_id: a host does not peer with itself"),
        ));
    }
    if let Some((j, _)) = prev.iter().find(|(_, a)| *a == address) {
        return Err(invalid(
            key,
            format!("{s:?} is already bgp.peer[{j}].address"),
        ));
    }
    Ok(address)
}

/// `[bgp]`, or `None` after recording every bad key in `p`.
fn validate_bgp(raw: RawBgp, p: &mut Problems) -> Option<BgpConfig> {
    let local_as = p.check(
        required(
            "bgp.local_as",
            raw.local_as,
            "this host's AS number, e.g. 64512",
        )
        .and_then(|n| validate_asn("bgp.local_as", n)),
    );
    let router_id = p.check(
        required(
            "bgp.router_id",
            raw.router_id,
            "an IPv4 address, usually the uplink's",
        )
        .and_then(|rid| unicast_value("bgp.router_id", &rid)),
    );
    let socket = p.check(bgp_path("bgp.socket", raw.socket, DEFAULT_BIRD_SOCKET));
    let config = p.check(bgp_path("bgp.config", raw.config, DEFAULT_BIRD_INCLUDE));
    let main_config = p.check(bgp_path(
        "bgp.main_config",
        raw.main_config,
        DEFAULT_BIRD_MAIN_CONFIG,
    ));
    if let (Some(config), Some(main_config)) = (&config, &main_config)
        && config == main_config
    {
        p.check::<()>(Err(invalid(
            "bgp.config",
            format!(
                "{:?} is also bgp.main_config; netbpf's fragment must be a file of its own",
                config.display()
            ),
        )));
    }
    let block = match raw.block {
        None => Some(None),
        Some(s) => p.check(bgp_block(&s)).map(Some),
    };
    let import_min_len = match raw.import_min_len {
        None => block.map(|block| block.map_or(32, |b| b.prefix_len)),
        Some(n) => match u8::try_from(n) {
            Ok(len) if (MIN_BGP_IMPORT_LEN..=32).contains(&len) => Some(len),
            _ => p.check(Err(invalid(
                "bgp.import_min_len",
                format!(
                    "{n} is not a prefix length in {MIN_BGP_IMPORT_LEN}..=32 (containers are \
                     /32s, blocks a small range; a default route is never learned)"
                ),
            ))),
        },
    };
    let receive_limit = match raw.receive_limit {
        None => Some(DEFAULT_BGP_RECEIVE_LIMIT),
        Some(n) => match u32::try_from(n) {
            Ok(limit) if (1..=MAX_BGP_RECEIVE_LIMIT).contains(&limit) => Some(limit),
            _ => p.check(Err(invalid(
                "bgp.receive_limit",
                format!("{n} is not a route count in 1..={MAX_BGP_RECEIVE_LIMIT}"),
            ))),
        },
    };
    if raw.peer.is_empty() {
        p.check::<()>(Err(invalid(
            "bgp.peer",
            "at least one [[bgp.peer]] is required (address and as of a BGP neighbour)",
        )));
    }
    let peer_count = raw.peer.len();
    // The valid peer addresses, each with its index in the file.
    let mut addresses: Vec<(usize, Ipv4Addr)> = Vec::with_capacity(peer_count);
    let mut peers: Vec<BgpPeer> = Vec::with_capacity(peer_count);
    for (i, peer) in raw.peer.into_iter().enumerate() {
        let address = p.check(bgp_peer_address(
            &format!("bgp.peer[{i}].address"),
            peer.address,
            router_id,
            &addresses,
        ));
        let skey = format!("bgp.peer[{i}].as");
        let asn = p.check(
            required(&skey, peer.asn, "the neighbour's AS number")
                .and_then(|n| validate_asn(&skey, n)),
        );
        if let Some(address) = address {
            addresses.push((i, address));
        }
        if let (Some(address), Some(asn)) = (address, asn) {
            peers.push(BgpPeer { address, asn });
        }
    }
    if peers.len() != peer_count {
        return None;
    }
    Some(BgpConfig {
        local_as: local_as?,
        router_id: router_id?,
        socket: socket?,
        config: config?,
        main_config: main_config?,
        block: block?,
        import_min_len: import_min_len?,
        receive_limit: receive_limit?,
        peers,
    })
}

#[cfg(test)]
mod bgp_tests {
    use super::*;

    const BASE: &str = "[uplink]\ninterface = \"eth0\"\n";
    const PEER: &str = "\n[[bgp.peer]]\naddress = \"10.0.0.12\"\nas = 64512\n";

    fn parse(bgp: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{BASE}{bgp}"))
    }

    #[track_caller]
    fn assert_invalid(bgp: &str, key: &str, part: &str) {
        match parse(bgp) {
            Err(ConfigError::Invalid { key: k, reason }) => {
                assert_eq!(k, key, "{reason}");
                assert!(reason.contains(part), "{reason:?} should contain {part:?}");
            }
            other => panic!("expected {key} invalid, got {other:?}"),
        }
    }

    #[test]
    fn every_bad_bgp_key_is_reported() {
        let e = parse(
            "[bgp]\nlocal_as = 23456\nrouter_id = \"10.0.0.11\"\nsocket = \"bird.ctl\"\n\
             receive_limit = 0\n\
             [[bgp.peer]]\naddress = \"10.0.0.11\"\nas = 1\n\
             [[bgp.peer]]\naddress = \"10.0.0.12\"\nas = 0\n",
        )
        .unwrap_err();
        let keys: Vec<String> = e
            .each()
            .iter()
            .map(|e| e.to_string().split(':').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "bgp.local_as",
                "bgp.socket",
                "bgp.receive_limit",
                "bgp.peer[0].address",
                "bgp.peer[1].as"
            ],
            "{e}"
        );
    }

    #[test]
    fn absent_means_no_bgp() {
        assert_eq!(parse("").unwrap().bgp, None);
    }

    #[test]
    fn minimal_table_gets_defaults() {
        let c = parse(&format!(
            "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n{PEER}"
        ))
        .unwrap();
        let b = c.bgp.unwrap();
        assert_eq!(b.local_as, 64512);
        assert_eq!(b.router_id, Ipv4Addr::new(10, 0, 0, 11));
        assert_eq!(b.socket, PathBuf::from(DEFAULT_BIRD_SOCKET));
        assert_eq!(b.config, PathBuf::from(DEFAULT_BIRD_INCLUDE));
        assert_eq!(b.main_config, PathBuf::from(DEFAULT_BIRD_MAIN_CONFIG));
        assert_eq!(b.block, None);
        assert_eq!(b.import_min_len, 32, "containers only");
        assert_eq!(b.receive_limit, DEFAULT_BGP_RECEIVE_LIMIT);
        assert_eq!(
            b.peers,
            vec![BgpPeer {
                address: Ipv4Addr::new(10, 0, 0, 12),
                asn: 64512
            }]
        );
    }

    #[test]
    fn full_table_parses() {
        let b = parse(
            "[bgp]\nlocal_as = 4200000001\nrouter_id = \"10.0.0.11\"\nsocket = \"/tmp/b.ctl\"\n\
             config = \"/tmp/netbpf.conf\"\nmain_config = \"/tmp/bird.conf\"\nblock = \"10.10.1.0/24\"\n\
             [[bgp.peer]]\naddress = \"10.0.0.12\"\nas = 64512\n[[bgp.peer]]\naddress = \"10.0.0.1\"\nas = 65000\n",
        )
        .unwrap()
        .bgp
        .unwrap();
        assert_eq!(b.local_as, 4_200_000_001);
        assert_eq!(b.socket, PathBuf::from("/tmp/b.ctl"));
        assert_eq!(b.config, PathBuf::from("/tmp/netbpf.conf"));
        assert_eq!(b.main_config, PathBuf::from("/tmp/bird.conf"));
        assert_eq!(b.block, Some("10.10.1.0/24".parse().unwrap()));
        assert_eq!(b.peers.len(), 2);
        assert_eq!(b.peers[1].asn, 65000);
        assert_eq!(
            b.import_min_len, 24,
            "the other hosts' blocks of the same size"
        );
    }

    #[test]
    fn import_policy_keys() {
        let bgp = |extra: &str| {
            format!("[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n{extra}{PEER}")
        };
        let b = parse(&bgp("import_min_len = 26\nreceive_limit = 500\n"))
            .unwrap()
            .bgp
            .unwrap();
        assert_eq!((b.import_min_len, b.receive_limit), (26, 500));
        for n in ["0", "7", "33", "-1"] {
            assert_invalid(
                &bgp(&format!("import_min_len = {n}\n")),
                "bgp.import_min_len",
                "8..=32",
            );
        }
        for n in ["0", "-5", "4000001"] {
            assert_invalid(
                &bgp(&format!("receive_limit = {n}\n")),
                "bgp.receive_limit",
                "1..=4000000",
            );
        }
    }

    #[test]
    fn required_keys_are_named() {
        assert_invalid(
            &format!("[bgp]\nrouter_id = \"10.0.0.11\"\n{PEER}"),
            "bgp.local_as",
            "is required",
        );
        assert_invalid(
            &format!("[bgp]\nlocal_as = 64512\n{PEER}"),
            "bgp.router_id",
            "is required",
        );
        assert_invalid(
            "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n",
            "bgp.peer",
            "at least one",
        );
        assert_invalid(
            "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n[[bgp.peer]]\nas = 1\n",
            "bgp.peer[0].address",
            "is required",
        );
        assert_invalid(
            "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n[[bgp.peer]]\naddress = \"10.0.0.2\"\n",
            "bgp.peer[0].as",
            "is required",
        );
    }

    #[test]
    fn bad_values_are_rejected_with_their_key() {
        let rid = "router_id = \"10.0.0.11\"\n";
        for (n, why) in [
            ("0", "not an AS number"),
            ("-1", "not an AS number"),
            ("4294967295", "not an AS number"),
            ("4294967296", "not an AS number"),
            ("23456", "AS_TRANS"),
        ] {
            assert_invalid(
                &format!("[bgp]\nlocal_as = {n}\n{rid}{PEER}"),
                "bgp.local_as",
                why,
            );
        }
        let head = |extra: &str| format!("[bgp]\nlocal_as = 64512\n{extra}");
        assert_invalid(
            &head(&format!("router_id = \"10.0.0\"\n{PEER}")),
            "bgp.router_id",
            "not an IPv4 address",
        );
        assert_invalid(
            &head(&format!("router_id = \"0.0.0.0\"\n{PEER}")),
            "bgp.router_id",
            "unspecified",
        );
        assert_invalid(
            &head(&format!("{rid}socket = \"bird.ctl\"\n{PEER}")),
            "bgp.socket",
            "absolute path",
        );
        assert_invalid(
            &head(&format!("{rid}config = \"/etc/bird/a\\\"b\"\n{PEER}")),
            "bgp.config",
            "quote",
        );
        assert_invalid(
            &head(&format!("{rid}config = \"/etc/bird/bird.conf\"\n{PEER}")),
            "bgp.config",
            "main_config",
        );
        assert_invalid(
            &head(&format!("{rid}block = \"10.10.1.1/24\"\n{PEER}")),
            "bgp.block",
            "did you mean \"10.10.1.0/24\"",
        );
        assert_invalid(
            &head(&format!("{rid}block = \"0.0.0.0/4\"\n{PEER}")),
            "bgp.block",
            "wider than /8",
        );
        assert_invalid(
            &head(&format!("{rid}block = \"nope\"\n{PEER}")),
            "bgp.block",
            "not an IPv4 CIDR",
        );
        assert_invalid(
            &head(&format!("{rid}{PEER}{PEER}")),
            "bgp.peer[1].address",
            "already bgp.peer[0]",
        );
        assert_invalid(
            &head(&format!(
                "{rid}[[bgp.peer]]\naddress = \"10.0.0.11\"\nas = 1\n"
            )),
            "bgp.peer[0].address",
            "peer with itself",
        );
        assert_invalid(
            &head(&format!(
                "{rid}[[bgp.peer]]\naddress = \"224.0.0.5\"\nas = 1\n"
            )),
            "bgp.peer[0].address",
            "multicast",
        );
        assert_invalid(
            &head(&format!(
                "{rid}[[bgp.peer]]\naddress = \"10.0.0.2\"\nas = 0\n"
            )),
            "bgp.peer[0].as",
            "not an AS number",
        );
    }

    #[test]
    fn unknown_keys_are_syntax_errors() {
        let e = parse(&format!(
            "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\nasn = 1\n{PEER}"
        ))
        .unwrap_err();
        assert!(matches!(e, ConfigError::Syntax(_)), "{e}");
        assert!(e.to_string().contains("asn"), "{e}");
        let e = parse(
            "[bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\n[[bgp.peer]]\naddress = \"10.0.0.2\"\nas = 1\npassword = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[uplink]
interface = "eth0"
address = "203.0.113.1"

[[masquerade]]
source = "10.77.0.0/24"
ports = "32768-60999"

[[publish]]
proto = "tcp"
port = 8080
to = "10.77.0.2:4000"

[[publish]]
proto = "udp"
port = "8000-8010"
to = "10.77.0.3:9000"
address = "127.0.0.1"

[[container]]
address = "10.77.0.2"
interface = "veth-c1"

[[container]]
address = "10.77.0.3"
interface = "veth-c2"

[conntrack]
capacity = 262144
udp_timeout = "5m"
tcp_established_timeout = "2h4m"
tcp_transitory_timeout = "4m"
icmp_timeout = "60s"
"#;

    const UPLINK: &str = "[uplink]\ninterface = \"eth0\"\n";

    fn ok(extra: &str) -> Config {
        match Config::from_toml(&format!("{UPLINK}{extra}")) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn err_raw(text: &str) -> ConfigError {
        match Config::from_toml(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    fn err(extra: &str) -> String {
        err_raw(&format!("{UPLINK}{extra}")).to_string()
    }

    /// Asserts the error is Invalid with `key`, and its message contains all `parts`.
    fn assert_invalid(extra: &str, key: &str, parts: &[&str]) {
        let e = err_raw(&format!("{UPLINK}{extra}"));
        let msg = e.to_string();
        match &e {
            ConfigError::Invalid { key: k, .. } => assert_eq!(k, key, "message: {msg}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert!(msg.starts_with(&format!("{key}: ")), "{msg}");
        for p in parts {
            assert!(msg.contains(p), "{msg:?} should contain {p:?}");
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    // --- full example and defaults ---

    #[test]
    fn full_example_parses() {
        let c = Config::from_toml(FULL).unwrap();
        assert_eq!(
            c.uplink,
            Uplink {
                interface: "eth0".into(),
                address: Some(ip("203.0.113.1"))
            }
        );
        assert_eq!(
            c.masquerade,
            vec![Masquerade {
                source: cidr("10.77.0.0/24"),
                ports: Some(PortRange {
                    start: 32768,
                    end: 60999
                }),
            }]
        );
        assert_eq!(
            c.publish,
            vec![
                Publish {
                    proto: Proto::Tcp,
                    port: PortRange::single(8080),
                    to_addr: ip("10.77.0.2"),
                    to_port: 4000,
                    address: None,
                },
                Publish {
                    proto: Proto::Udp,
                    port: PortRange {
                        start: 8000,
                        end: 8010
                    },
                    to_addr: ip("10.77.0.3"),
                    to_port: 9000,
                    address: Some(ip("127.0.0.1")),
                },
            ]
        );
        assert_eq!(
            c.container,
            vec![
                Container {
                    address: ip("10.77.0.2"),
                    interface: "veth-c1".into()
                },
                Container {
                    address: ip("10.77.0.3"),
                    interface: "veth-c2".into()
                },
            ]
        );
        assert_eq!(
            c.conntrack,
            ConntrackConfig {
                capacity: 262144,
                timeouts: Timeouts {
                    udp: Duration::from_secs(300),
                    tcp_established: Duration::from_secs(7440),
                    tcp_transitory: Duration::from_secs(240),
                    icmp: Duration::from_secs(60),
                },
            }
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn the_example_file_parses() {
        let c = Config::from_toml(include_str!("../../netbpf.example.toml"))
            .expect("netbpf.example.toml is a valid config");
        assert_eq!(c.masquerade.len(), 1);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = ok("");
        assert_eq!(c.uplink.interface, "eth0");
        assert_eq!(c.uplink.address, None);
        assert!(c.masquerade.is_empty());
        assert!(c.publish.is_empty());
        assert!(c.container.is_empty());
        assert_eq!(c.conntrack, ConntrackConfig::default());
        assert_eq!(c.conntrack.capacity, 262144);
        assert_eq!(c.conntrack.timeouts.udp, Duration::from_secs(300));
        assert_eq!(
            c.conntrack.timeouts.tcp_established,
            Duration::from_secs(7440)
        );
        assert_eq!(
            c.conntrack.timeouts.tcp_transitory,
            Duration::from_secs(240)
        );
        assert_eq!(c.conntrack.timeouts.icmp, Duration::from_secs(60));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn empty_conntrack_table_gets_defaults() {
        let c = ok("[conntrack]\n");
        assert_eq!(c.conntrack, ConntrackConfig::default());
    }

    #[test]
    fn partial_conntrack_keeps_other_defaults() {
        let c = ok("[conntrack]\nudp_timeout = 600\ncapacity = 1024\n");
        assert_eq!(c.conntrack.capacity, 1024);
        assert_eq!(c.conntrack.timeouts.udp, Duration::from_secs(600));
        assert_eq!(c.conntrack.timeouts.icmp, Duration::from_secs(60));
        assert_eq!(
            c.conntrack.timeouts.tcp_established,
            Duration::from_secs(7440)
        );
    }

    #[test]
    fn publish_only_config_is_fine() {
        let c = ok("[[publish]]\nproto = \"udp\"\nport = 53\nto = \"10.0.0.5:53\"\n");
        assert!(c.masquerade.is_empty());
        assert_eq!(c.publish.len(), 1);
        assert_eq!(c.publish[0].proto.number(), 17);
    }

    // --- syntax / unknown keys / types ---

    #[test]
    fn syntax_error_has_line_number() {
        let e = err_raw("[uplink]\ninterface = \"eth0\"\n[[publish]\nproto = \"tcp\"\n");
        match &e {
            ConfigError::Syntax(msg) => assert!(msg.contains("line 3"), "{msg}"),
            other => panic!("expected Syntax, got {other:?}"),
        }
    }

    #[test]
    fn unknown_top_level_key_rejected() {
        let e = err_raw("[uplink]\ninterface = \"eth0\"\n\n[bogus]\nx = 1\n");
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::Syntax(_)));
        assert!(msg.contains("bogus"), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn unknown_nested_keys_rejected() {
        for (extra, word) in [
            (
                "[[masquerade]]\nsource = \"10.0.0.0/8\"\nsrc = \"x\"\n",
                "src",
            ),
            (
                "[[publish]]\nproto = \"tcp\"\nport = 1\nto = \"1.2.3.4:1\"\nhost = \"x\"\n",
                "host",
            ),
            (
                "[[container]]\naddress = \"10.0.0.2\"\ninterface = \"v\"\nmac = \"x\"\n",
                "mac",
            ),
            ("[conntrack]\ntcp_timeout = 5\n", "tcp_timeout"),
        ] {
            let msg = err(extra);
            assert!(msg.contains(word), "{msg}");
            assert!(msg.contains("unknown field"), "{msg}");
        }
        let msg = err_raw("[uplink]\ninterface = \"eth0\"\nname = \"x\"\n").to_string();
        assert!(
            msg.contains("unknown field") && msg.contains("name"),
            "{msg}"
        );
    }

    #[test]
    fn type_errors_include_toml_message() {
        let msg = err("[[publish]]\nproto = \"tcp\"\nport = true\nto = \"1.2.3.4:1\"\n");
        assert!(msg.contains("line 5"), "{msg}");
        assert!(msg.contains("8000-8010"), "{msg}");
        let msg = err("[conntrack]\nudp_timeout = 1.5\n");
        assert!(msg.contains("line 4") && msg.contains("duration"), "{msg}");
        let msg = err("[conntrack]\ncapacity = \"big\"\n");
        assert!(msg.contains("line 4"), "{msg}");
    }

    // --- uplink ---

    #[test]
    fn uplink_required() {
        let e = err_raw("[[container]]\naddress = \"10.0.0.2\"\ninterface = \"v\"\n");
        assert!(matches!(&e, ConfigError::Invalid { key, .. } if key == "uplink"));
        assert!(e.to_string().contains("required"));
        let e = err_raw("[uplink]\naddress = \"1.2.3.4\"\n");
        let msg = e.to_string();
        assert!(msg.starts_with("uplink.interface: "), "{msg}");
        assert!(msg.contains("required"), "{msg}");
    }

    fn uplink_err(name: &str) -> String {
        err_raw(&format!("[uplink]\ninterface = {name:?}\n")).to_string()
    }

    #[test]
    fn uplink_interface_rules() {
        let m = uplink_err("");
        assert!(
            m.starts_with("uplink.interface: \"\"") && m.contains("empty"),
            "{m}"
        );
        let m = uplink_err("abcdefghijklmnop");
        assert!(
            m.contains("uplink.interface") && m.contains("\"abcdefghijklmnop\""),
            "{m}"
        );
        assert!(m.contains("at most 15 bytes"), "{m}");
        let m = uplink_err("eth/0");
        assert!(m.contains("uplink.interface") && m.contains("'/'"), "{m}");
        let m = uplink_err("eth 0");
        assert!(
            m.contains("uplink.interface") && m.contains("whitespace"),
            "{m}"
        );
        let m = uplink_err("eth0\t");
        assert!(m.contains("whitespace"), "{m}");
        let m = uplink_err(".");
        assert!(
            m.contains("uplink.interface") && m.contains("not a valid"),
            "{m}"
        );
        let m = uplink_err("..");
        assert!(m.contains("not a valid"), "{m}");
        let m = uplink_err("eth0:1");
        assert!(m.contains("':'"), "{m}");
        // exactly 15 bytes is fine
        let c = Config::from_toml("[uplink]\ninterface = \"abcdefghijklmno\"\n").unwrap();
        assert_eq!(c.uplink.interface.len(), 15);
        // ... but 15 chars of multi-byte UTF-8 is too long
        let m = uplink_err("ééééééééé");
        assert!(m.contains("18 bytes"), "{m}");
    }

    #[test]
    fn uplink_address_checked() {
        let e = err_raw("[uplink]\ninterface = \"eth0\"\naddress = \"203.0.113\"\n").to_string();
        assert!(e.starts_with("uplink.address: \"203.0.113\""), "{e}");
        assert!(e.contains("not an IPv4 address"), "{e}");
        let e = err_raw("[uplink]\ninterface = \"eth0\"\naddress = \"224.0.0.1\"\n").to_string();
        assert!(
            e.contains("uplink.address") && e.contains("multicast"),
            "{e}"
        );
        let e = err_raw("[uplink]\ninterface = \"eth0\"\naddress = \"::1\"\n").to_string();
        assert!(e.contains("uplink.address") && e.contains("\"::1\""), "{e}");
    }

    // --- masquerade ---

    #[test]
    fn masquerade_host_bits_suggests_network() {
        assert_invalid(
            "[[masquerade]]\nsource = \"10.77.0.1/24\"\n",
            "masquerade[0].source",
            &[
                "\"10.77.0.1/24\"",
                "host bits",
                "did you mean \"10.77.0.0/24\"?",
            ],
        );
        let e = err("[[masquerade]]\nsource = \"10.77.0.1/24\"\n");
        assert_eq!(
            e,
            "masquerade[0].source: \"10.77.0.1/24\" has host bits set (did you mean \"10.77.0.0/24\"?)"
        );
    }

    #[test]
    fn masquerade_bad_cidr() {
        assert_invalid(
            "[[masquerade]]\nsource = \"10.77.0.0/33\"\n",
            "masquerade[0].source",
            &["\"10.77.0.0/33\"", "prefix length"],
        );
        assert_invalid(
            "[[masquerade]]\nsource = \"10.77.0/24\"\n",
            "masquerade[0].source",
            &["not an IPv4 CIDR", "not an IPv4 address"],
        );
        assert_invalid(
            "[[masquerade]]\nsource = \"10.77.0.0/+8\"\n",
            "masquerade[0].source",
            &["prefix length"],
        );
        assert_invalid(
            "[[masquerade]]\nports = 5\n",
            "masquerade[0].source",
            &["required"],
        );
    }

    #[test]
    fn masquerade_bare_address_is_slash_32() {
        let c = ok("[[masquerade]]\nsource = \"10.77.0.9\"\n");
        assert_eq!(c.masquerade[0].source, cidr("10.77.0.9/32"));
    }

    #[test]
    fn masquerade_overlap_names_both_keys() {
        assert_invalid(
            "[[masquerade]]\nsource = \"10.77.0.0/24\"\n[[masquerade]]\nsource = \"192.168.0.0/16\"\n\
             [[masquerade]]\nsource = \"10.0.0.0/8\"\n",
            "masquerade[2].source",
            &[
                "\"10.0.0.0/8\"",
                "overlaps",
                "masquerade[0].source",
                "10.77.0.0/24",
            ],
        );
        // Identical entries overlap too.
        assert_invalid(
            "[[masquerade]]\nsource = \"10.77.0.0/24\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n",
            "masquerade[1].source",
            &["overlaps masquerade[0].source"],
        );
        // Adjacent networks do not overlap.
        let c = ok(
            "[[masquerade]]\nsource = \"10.77.0.0/24\"\n[[masquerade]]\nsource = \"10.77.1.0/24\"\n",
        );
        assert_eq!(c.masquerade.len(), 2);
    }

    #[test]
    fn masquerade_source_that_locks_the_host_out_is_refused() {
        // Everything: every inbound packet would count as spoofed.
        assert_invalid(
            "[[masquerade]]\nsource = \"0.0.0.0/0\"\n",
            "masquerade[0].source",
            &["\"0.0.0.0/0\"", "every address", "spoofed", "netbpf down"],
        );
        // The uplink's own address (when the file gives it).
        let uplink = "[uplink]\ninterface = \"eth0\"\naddress = \"10.1.2.3\"\n";
        let e = err_raw(&format!(
            "{uplink}[[masquerade]]\nsource = \"10.77.0.0/24\"\n[[masquerade]]\nsource = \"10.0.0.0/8\"\n"
        ));
        assert!(
            matches!(&e, ConfigError::Invalid { key, .. } if key == "masquerade[1].source"),
            "{e}"
        );
        assert!(e.to_string().contains("contains 10.1.2.3"), "{e}");
        assert!(
            Config::from_toml(&format!(
                "{uplink}[[masquerade]]\nsource = \"10.77.0.0/16\"\n"
            ))
            .is_ok()
        );
        // Loopback is never behind a NAT.
        for source in ["127.0.0.0/8", "127.0.0.1/32", "96.0.0.0/3"] {
            assert_invalid(
                &format!("[[masquerade]]\nsource = \"{source}\"\n"),
                "masquerade[0].source",
                &["loopback"],
            );
        }
        // The same function, with the addresses the daemon resolved.
        let c = ok("[[masquerade]]\nsource = \"10.0.0.0/8\"\n");
        let e = c
            .check_host_addresses(&[ip("192.0.2.1"), ip("10.1.2.3")], &[])
            .expect_err("10/8 contains the uplink's 10.1.2.3");
        assert!(e.to_string().starts_with("masquerade[0].source: "), "{e}");
        assert!(e.to_string().contains("10.1.2.3"), "{e}");
        c.check_host_addresses(&[ip("192.0.2.1")], &[ip("10.77.0.1")])
            .expect(
                "only the uplink's addresses count: a bridge's own address is inside its subnet",
            );
        assert!(check_masquerade_source("k", &cidr("10.77.0.0/24"), &[ip("10.77.1.1")]).is_ok());
    }

    #[test]
    fn publish_to_must_be_a_container() {
        for (to, why) in [
            ("127.0.0.1:80", "loopback"),
            ("127.1.2.3:80", "loopback"),
            ("0.0.0.0:80", "unspecified"),
            ("255.255.255.255:80", "broadcast"),
            ("224.0.0.1:80", "multicast"),
        ] {
            assert_invalid(
                &publish("tcp", "80", to, None),
                "publish[0].to",
                &[&format!("{to:?}"), why],
            );
        }
        // The host's own address: known to the file when uplink.address
        // is set, otherwise when the daemon resolves the uplink.
        let e = err_raw(
            "[uplink]\ninterface = \"eth0\"\naddress = \"203.0.113.1\"\n\
             [[publish]]\nproto = \"tcp\"\nport = 80\nto = \"203.0.113.1:8080\"\n",
        );
        assert!(e.to_string().starts_with("publish[0].to: "), "{e}");
        assert!(e.to_string().contains("address of the host"), "{e}");
        let c = ok(&publish("tcp", "80", "10.0.0.2:80", None));
        let e = c
            .check_host_addresses(&[], &[ip("203.0.113.1"), ip("10.0.0.2")])
            .expect_err("10.0.0.2 is the host's");
        assert!(e.to_string().starts_with("publish[0].to: "), "{e}");
        c.check_host_addresses(&[], &[ip("203.0.113.1")])
            .expect("a container address");
    }

    #[test]
    fn masquerade_ports() {
        let c = ok("[[masquerade]]\nsource = \"10.0.0.0/8\"\nports = 40000\n");
        assert_eq!(c.masquerade[0].ports, Some(PortRange::single(40000)));
        let c = ok("[[masquerade]]\nsource = \"10.0.0.0/8\"\nports = \"1024\"\n");
        assert_eq!(c.masquerade[0].ports, Some(PortRange::single(1024)));
        assert_invalid(
            "[[masquerade]]\nsource = \"10.0.0.0/8\"\nports = \"60999-32768\"\n",
            "masquerade[0].ports",
            &["\"60999-32768\"", "greater than"],
        );
        assert_invalid(
            "[[masquerade]]\nsource = \"10.0.0.0/8\"\nports = \"0-100\"\n",
            "masquerade[0].ports",
            &["\"0-100\"", "out of range"],
        );
        assert_invalid(
            "[[masquerade]]\nsource = \"10.0.0.0/8\"\nports = 70000\n",
            "masquerade[0].ports",
            &["70000", "out of range"],
        );
        assert_invalid(
            "[[masquerade]]\nsource = \"10.0.0.0/8\"\nports = \"a-b\"\n",
            "masquerade[0].ports",
            &["\"a-b\"", "not a port number"],
        );
    }

    // --- publish ---

    fn publish(proto: &str, port: &str, to: &str, address: Option<&str>) -> String {
        let mut s = format!("[[publish]]\nproto = \"{proto}\"\nport = {port}\nto = \"{to}\"\n");
        if let Some(a) = address {
            s.push_str(&format!("address = \"{a}\"\n"));
        }
        s
    }

    #[test]
    fn publish_proto() {
        assert_invalid(
            &publish("sctp", "80", "10.0.0.2:80", None),
            "publish[0].proto",
            &["\"sctp\"", "\"tcp\" or \"udp\""],
        );
        assert_invalid(
            "[[publish]]\nport = 80\nto = \"10.0.0.2:80\"\n",
            "publish[0].proto",
            &["required"],
        );
        assert_eq!(Proto::Tcp.number(), 6);
        assert_eq!(Proto::Udp.to_string(), "udp");
    }

    #[test]
    fn publish_port() {
        assert_invalid(
            &publish("tcp", "0", "10.0.0.2:80", None),
            "publish[0].port",
            &["0", "out of range"],
        );
        assert_invalid(
            &publish("tcp", "65536", "10.0.0.2:80", None),
            "publish[0].port",
            &["65536", "out of range"],
        );
        assert_invalid(
            &publish("tcp", "-1", "10.0.0.2:80", None),
            "publish[0].port",
            &["-1", "out of range"],
        );
        assert_invalid(
            &publish("tcp", "\"8010-8000\"", "10.0.0.2:80", None),
            "publish[0].port",
            &["\"8010-8000\"", "greater than"],
        );
        assert_invalid(
            &publish("tcp", "\"80-\"", "10.0.0.2:80", None),
            "publish[0].port",
            &["\"80-\"", "not a port number"],
        );
        assert_invalid(
            "[[publish]]\nproto = \"tcp\"\nto = \"10.0.0.2:80\"\n",
            "publish[0].port",
            &["required"],
        );
        let c = ok(&publish("tcp", "\"65535\"", "10.0.0.2:1", None));
        assert_eq!(c.publish[0].port, PortRange::single(65535));
    }

    #[test]
    fn publish_to() {
        assert_invalid(
            &publish("tcp", "80", "10.0.0.2", None),
            "publish[0].to",
            &["\"10.0.0.2\"", "address:port"],
        );
        assert_invalid(
            &publish("tcp", "80", "10.0.0:80", None),
            "publish[0].to",
            &["\"10.0.0:80\"", "not an IPv4 address"],
        );
        assert_invalid(
            &publish("tcp", "80", "10.0.0.2:0", None),
            "publish[0].to",
            &["\"10.0.0.2:0\"", "out of range"],
        );
        assert_invalid(
            &publish("tcp", "80", "10.0.0.2:99999", None),
            "publish[0].to",
            &["\"10.0.0.2:99999\"", "out of range"],
        );
        assert_invalid(
            &publish("tcp", "80", "10.0.0.2:", None),
            "publish[0].to",
            &["not a port number"],
        );
        assert_invalid(
            &publish("tcp", "80", "0.0.0.0:80", None),
            "publish[0].to",
            &["\"0.0.0.0:80\"", "unspecified"],
        );
        assert_invalid(
            "[[publish]]\nproto = \"tcp\"\nport = 80\n",
            "publish[0].to",
            &["required"],
        );
    }

    #[test]
    fn publish_range_must_fit() {
        assert_invalid(
            &publish("tcp", "\"8000-8010\"", "10.0.0.2:65530", None),
            "publish[0].to",
            &["\"10.0.0.2:65530\"", "8000-8010", "65540", "past 65535"],
        );
        let c = ok(&publish("tcp", "\"8000-8010\"", "10.0.0.2:65525", None));
        assert_eq!(c.publish[0].port.len(), 11);
        assert_eq!(c.publish[0].target_port(8010), Some(65535));
        assert_eq!(c.publish[0].target_port(8000), Some(65525));
        assert_eq!(c.publish[0].target_port(8011), None);
    }

    #[test]
    fn publish_address() {
        assert_invalid(
            &publish("tcp", "80", "10.0.0.2:80", Some("localhost")),
            "publish[0].address",
            &["\"localhost\"", "not an IPv4 address"],
        );
        assert_invalid(
            &publish("tcp", "80", "10.0.0.2:80", Some("255.255.255.255")),
            "publish[0].address",
            &["broadcast"],
        );
        let c = ok(&publish("tcp", "80", "10.0.0.2:80", Some("0.0.0.0")));
        assert_eq!(c.publish[0].address, None);
    }

    #[test]
    fn publish_overlap_same_proto_no_address() {
        let text = format!(
            "{}{}",
            publish("tcp", "\"8000-8010\"", "10.0.0.2:80", None),
            publish("tcp", "8005", "10.0.0.3:80", Some("127.0.0.1"))
        );
        assert_invalid(
            &text,
            "publish[1].port",
            &["tcp port 8005", "overlaps publish[0].port", "8000-8010"],
        );
    }

    #[test]
    fn publish_overlap_same_address() {
        let text = format!(
            "{}{}",
            publish("udp", "53", "10.0.0.2:53", Some("127.0.0.1")),
            publish("udp", "\"50-60\"", "10.0.0.3:53", Some("127.0.0.1"))
        );
        assert_invalid(
            &text,
            "publish[1].port",
            &["udp port 50-60", "publish[0].port", "udp 53 on 127.0.0.1"],
        );
    }

    #[test]
    fn publish_no_overlap_cases() {
        // Different protocols.
        let c = ok(&format!(
            "{}{}",
            publish("tcp", "53", "10.0.0.2:53", None),
            publish("udp", "53", "10.0.0.2:53", None)
        ));
        assert_eq!(c.publish.len(), 2);
        // Different explicit addresses.
        let c = ok(&format!(
            "{}{}",
            publish("tcp", "80", "10.0.0.2:80", Some("127.0.0.1")),
            publish("tcp", "80", "10.0.0.3:80", Some("192.0.2.1"))
        ));
        assert_eq!(c.publish.len(), 2);
        // Disjoint ranges.
        let c = ok(&format!(
            "{}{}",
            publish("tcp", "\"8000-8010\"", "10.0.0.2:80", None),
            publish("tcp", "\"8011-8020\"", "10.0.0.3:80", None)
        ));
        assert_eq!(c.publish.len(), 2);
    }

    // --- container ---

    fn container(addr: &str, ifname: &str) -> String {
        format!("[[container]]\naddress = \"{addr}\"\ninterface = \"{ifname}\"\n")
    }

    #[test]
    fn container_address_unique() {
        assert_invalid(
            &format!(
                "{}{}{}",
                container("10.0.0.2", "v1"),
                container("10.0.0.3", "v2"),
                container("10.0.0.2", "v3")
            ),
            "container[2].address",
            &["\"10.0.0.2\"", "already used by container[0].address"],
        );
    }

    #[test]
    fn container_interface_unique() {
        assert_invalid(
            &format!(
                "{}{}",
                container("10.0.0.2", "v1"),
                container("10.0.0.3", "v1")
            ),
            "container[1].interface",
            &["\"v1\"", "already used by container[0].interface"],
        );
    }

    #[test]
    fn container_interface_rules() {
        assert_invalid(
            &container("10.0.0.2", "veth-container-01"),
            "container[0].interface",
            &["\"veth-container-01\"", "at most 15 bytes"],
        );
        assert_invalid(
            &container("10.0.0.2", ""),
            "container[0].interface",
            &["empty"],
        );
        assert_invalid(
            &container("10.0.0.2", "a/b"),
            "container[0].interface",
            &["'/'"],
        );
        assert_invalid(
            &container("10.0.0.2", "a b"),
            "container[0].interface",
            &["whitespace"],
        );
        assert_invalid(
            &container("10.0.0.2", ".."),
            "container[0].interface",
            &["not a valid"],
        );
        assert_invalid(
            &container("10.0.0.2", "eth0"),
            "container[0].interface",
            &["\"eth0\"", "uplink interface"],
        );
        assert_invalid(
            "[[container]]\naddress = \"10.0.0.2\"\n",
            "container[0].interface",
            &["required"],
        );
    }

    #[test]
    fn container_address_rules() {
        assert_invalid(
            &container("10.0.0.256", "v1"),
            "container[0].address",
            &["\"10.0.0.256\"", "not an IPv4 address"],
        );
        assert_invalid(
            &container("239.1.1.1", "v1"),
            "container[0].address",
            &["multicast"],
        );
        assert_invalid(
            "[[container]]\ninterface = \"v1\"\n",
            "container[0].address",
            &["required"],
        );
    }

    #[test]
    fn container_address_not_uplink_address() {
        let text = format!(
            "[uplink]\ninterface = \"eth0\"\naddress = \"10.0.0.1\"\n{}",
            container("10.0.0.1", "v1")
        );
        let msg = err_raw(&text).to_string();
        assert!(
            msg.starts_with("container[0].address: \"10.0.0.1\""),
            "{msg}"
        );
        assert!(msg.contains("uplink.address"), "{msg}");
    }

    // --- conntrack ---

    #[test]
    fn conntrack_capacity_bounds() {
        assert_invalid(
            "[conntrack]\ncapacity = 1023\n",
            "conntrack.capacity",
            &["1023", "out of range 1024..=16777216"],
        );
        assert_invalid(
            "[conntrack]\ncapacity = 16777217\n",
            "conntrack.capacity",
            &["16777217", "out of range"],
        );
        assert_invalid(
            "[conntrack]\ncapacity = -5\n",
            "conntrack.capacity",
            &["-5"],
        );
        assert_eq!(
            ok("[conntrack]\ncapacity = 16777216\n").conntrack.capacity,
            16777216
        );
    }

    #[test]
    fn conntrack_timeout_forms() {
        let c = ok(
            "[conntrack]\nudp_timeout = 300\ntcp_established_timeout = \"3h\"\n\
                    tcp_transitory_timeout = \"300s\"\nicmp_timeout = \"1m30s\"\n",
        );
        let t = c.conntrack.timeouts;
        assert_eq!(t.udp, Duration::from_secs(300));
        assert_eq!(t.tcp_established, Duration::from_secs(10800));
        assert_eq!(t.tcp_transitory, Duration::from_secs(300));
        assert_eq!(t.icmp, Duration::from_secs(90));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn conntrack_timeout_zero_is_error() {
        assert_invalid(
            "[conntrack]\nudp_timeout = 0\n",
            "conntrack.udp_timeout",
            &["0", "zero"],
        );
        assert_invalid(
            "[conntrack]\nicmp_timeout = \"0s\"\n",
            "conntrack.icmp_timeout",
            &["\"0s\"", "zero"],
        );
    }

    #[test]
    fn conntrack_timeout_invalid() {
        assert_invalid(
            "[conntrack]\ntcp_transitory_timeout = \"5x\"\n",
            "conntrack.tcp_transitory_timeout",
            &["\"5x\"", "not a valid duration", "unknown unit"],
        );
        assert_invalid(
            "[conntrack]\ntcp_established_timeout = -1\n",
            "conntrack.tcp_established_timeout",
            &["-1", "negative"],
        );
        assert_invalid(
            "[conntrack]\nudp_timeout = \"400d\"\n",
            "conntrack.udp_timeout",
            &["\"400d\""],
        );
        assert_invalid(
            "[conntrack]\nudp_timeout = \"9000h\"\n",
            "conntrack.udp_timeout",
            &["\"9000h\"", "365 days"],
        );
    }

    #[test]
    fn short_timeouts_warn() {
        let c = ok(
            "[conntrack]\nudp_timeout = \"60s\"\ntcp_established_timeout = \"1h\"\n\
                    tcp_transitory_timeout = 60\nicmp_timeout = \"30s\"\n",
        );
        assert_eq!(c.conntrack.timeouts.udp, Duration::from_secs(60));
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        let w = &c.warnings;
        assert!(
            w[0].starts_with("conntrack.udp_timeout") && w[0].contains("RFC 4787"),
            "{w:?}"
        );
        assert!(w[0].contains("2m"), "{w:?}");
        assert!(
            w[1].starts_with("conntrack.tcp_established_timeout"),
            "{w:?}"
        );
        assert!(w[1].contains("RFC 5382") && w[1].contains("2h4m"), "{w:?}");
        assert!(w[2].starts_with("conntrack.tcp_transitory_timeout") && w[2].contains("4m"));
        assert!(w[3].starts_with("conntrack.icmp_timeout") && w[3].contains("RFC 5508"));
        // Exactly at the minimum: no warning.
        let c = ok(
            "[conntrack]\nudp_timeout = 120\ntcp_established_timeout = 7440\n\
                    tcp_transitory_timeout = 240\nicmp_timeout = 60\n",
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    // --- parse_duration ---

    #[test]
    fn parse_duration_ok() {
        let cases = [
            ("90", 90),
            ("90s", 90),
            ("5m", 300),
            ("2h4m", 7440),
            ("1h", 3600),
            ("1h30m15s", 5415),
            ("1h15s", 3615),
            ("0", 0),
            ("0s", 0),
            (" 5m ", 300),
            ("120m", 7200),
        ];
        for (s, secs) in cases {
            assert_eq!(parse_duration(s), Ok(Duration::from_secs(secs)), "{s}");
        }
    }

    #[test]
    fn parse_duration_errors() {
        for s in [
            "",
            " ",
            "m",
            "5x",
            "1h30",
            "5m1h",
            "1m1m",
            "-5s",
            "+5s",
            "1.5h",
            "5 m",
            "5ms",
            "h5",
            "99999999999999999999s",
            "9999999999999999999h",
            "5M",
        ] {
            assert!(parse_duration(s).is_err(), "{s:?} should fail");
        }
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("1h30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5m1h").unwrap_err().contains("order"));
        assert!(parse_duration("5ms").unwrap_err().contains("milliseconds"));
    }

    #[test]
    fn format_secs_cases() {
        assert_eq!(format_secs(7440), "2h4m");
        assert_eq!(format_secs(90), "1m30s");
        assert_eq!(format_secs(60), "1m");
        assert_eq!(format_secs(0), "0s");
        assert_eq!(format_secs(3601), "1h1s");
    }

    // --- value types ---

    #[test]
    fn cidr_parse_display() {
        let c = cidr("10.77.0.0/24");
        assert_eq!(c.to_string(), "10.77.0.0/24");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert!("10.0.0.0/".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.0/-1".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.0/24/1".parse::<Ipv4Cidr>().is_err());
        assert!("010.0.0.0/8".parse::<Ipv4Cidr>().is_err());
        assert!(cidr("10.77.0.1/24").has_host_bits());
        assert_eq!(cidr("10.77.0.1/24").network(), c);
        assert!(!cidr("10.77.0.1/32").has_host_bits());
    }

    #[test]
    fn cidr_contains() {
        let c = cidr("10.77.0.0/24");
        assert!(c.contains(ip("10.77.0.0")));
        assert!(c.contains(ip("10.77.0.255")));
        assert!(!c.contains(ip("10.77.1.0")));
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(cidr("1.2.3.4/32").contains(ip("1.2.3.4")));
        assert!(!cidr("1.2.3.4/32").contains(ip("1.2.3.5")));
    }

    #[test]
    fn cidr_overlaps() {
        let a = cidr("10.0.0.0/8");
        let b = cidr("10.77.0.0/24");
        let c = cidr("10.77.1.0/24");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!b.overlaps(&c) && !c.overlaps(&b));
        assert!(cidr("0.0.0.0/0").overlaps(&c));
        assert!(b.overlaps(&b));
        assert!(!cidr("192.168.0.0/16").overlaps(&a));
    }

    #[test]
    fn port_range_basics() {
        let r: PortRange = "8000-8010".parse().unwrap();
        assert_eq!(
            r,
            PortRange {
                start: 8000,
                end: 8010
            }
        );
        assert_eq!(r.len(), 11);
        assert!(!r.is_empty());
        assert_eq!(r.to_string(), "8000-8010");
        assert_eq!(PortRange::single(80).to_string(), "80");
        assert_eq!(PortRange::single(80).len(), 1);
        assert_eq!("1-65535".parse::<PortRange>().unwrap().len(), 65535);
        assert_eq!("80-80".parse::<PortRange>().unwrap().to_string(), "80");
        assert!("+80".parse::<PortRange>().is_err());
        assert!("".parse::<PortRange>().is_err());
        assert!("1-2-3".parse::<PortRange>().is_err());
        assert!(r.overlaps(&PortRange::single(8010)));
        assert!(!r.overlaps(&PortRange::single(8011)));
        assert!(r.contains(8000) && !r.contains(7999));
        let bogus = PortRange { start: 5, end: 4 };
        assert_eq!(bogus.len(), 0);
        assert!(bogus.is_empty());
    }

    // --- every error at once ---

    /// The message a file with only `extra` (after the uplink) gives.
    fn single(extra: &str) -> String {
        let e = err_raw(&format!("{UPLINK}{extra}"));
        assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
        e.to_string()
    }

    #[test]
    fn every_error_in_the_file_is_reported_at_once() {
        let masquerade = "[[masquerade]]\nsource = \"10.77.0.1/24\"\n";
        let publish = "[[publish]]\nproto = \"sctp\"\nport = 8080\nto = \"10.77.0.2:4000\"\n";
        let conntrack = "[conntrack]\nudp_timeout = 0\n";
        let e = err_raw(&format!("{UPLINK}{masquerade}{publish}{conntrack}"));
        let ConfigError::Several(all) = &e else {
            panic!("expected Several, got {e:?}");
        };
        let keys: Vec<&str> = all
            .iter()
            .map(|e| match e {
                ConfigError::Invalid { key, .. } => key.as_str(),
                other => panic!("expected Invalid, got {other:?}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "masquerade[0].source",
                "publish[0].proto",
                "conntrack.udp_timeout"
            ]
        );
        assert_eq!(e.each().len(), 3);
        // Each line is exactly what the file with only that mistake says.
        let expected = [single(masquerade), single(publish), single(conntrack)];
        assert_eq!(e.to_string(), expected.join("\n"));
        assert!(
            expected[0].contains("did you mean \"10.77.0.0/24\""),
            "{}",
            expected[0]
        );
    }

    #[test]
    fn one_error_is_invalid_itself_not_a_list_of_one() {
        let e = err_raw(&format!("{UPLINK}[conntrack]\ncapacity = 1\n"));
        assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
        assert_eq!(e.each().len(), 1);
    }

    #[test]
    fn every_key_of_one_entry_and_every_section_is_checked() {
        let e = err_raw(
            "[uplink]\ninterface = \"\"\naddress = \"300.1.1.1\"\n\
             [[publish]]\nproto = \"sctp\"\nport = 0\nto = \"10.77.0.2\"\naddress = \"x\"\n\
             [[container]]\naddress = \"10.9.0.1\"\ninterface = \"a/b\"\n\
             [metrics]\naddress = \"127.0.0.1:0\"\n\
             [inbound]\nunsolicited_syn = \"reject\"\nnew_flows_burst = 0\n",
        );
        let keys: Vec<String> = e
            .each()
            .iter()
            .map(|e| e.to_string().split(':').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "uplink.interface",
                "uplink.address",
                "publish[0].proto",
                "publish[0].port",
                "publish[0].to",
                "publish[0].address",
                "container[0].interface",
                "metrics.address",
                "inbound.unsolicited_syn",
                "inbound.new_flows_burst",
            ],
            "{e}"
        );
    }

    #[test]
    fn a_check_on_two_values_runs_only_when_both_are_valid() {
        // masquerade[1] is bad, so nothing is said about it overlapping
        // masquerade[2]; masquerade[3] overlaps masquerade[2], named by its
        // index in the file.
        let e = err("[[masquerade]]\nsource = \"10.1.0.0/16\"\n\
             [[masquerade]]\nsource = \"10.2.0.1/16\"\n\
             [[masquerade]]\nsource = \"10.2.0.0/16\"\n\
             [[masquerade]]\nsource = \"10.2.3.0/24\"\n");
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(lines[0].starts_with("masquerade[1].source: "), "{e}");
        assert!(
            lines[1].starts_with("masquerade[3].source: ")
                && lines[1].contains("overlaps masquerade[2].source"),
            "{e}"
        );
        // A published range that does not fit its target is not checked
        // when the target is bad; an overlap needs both entries valid.
        let e = err(&format!(
            "{}{}{}",
            publish("tcp", "\"8000-8010\"", "10.77.0.2:x", None),
            publish("tcp", "8005", "10.77.0.3:1", None),
            publish("tcp", "8005", "10.77.0.4:1", None),
        ));
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(lines[0].starts_with("publish[0].to: "), "{e}");
        assert!(
            lines[1].starts_with("publish[2].port: ") && lines[1].contains("publish[1].port"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_stay_single() {
        // serde stops at the unknown key before any value is validated.
        let e = err_raw(&format!(
            "{UPLINK}[[masquerade]]\nsource = \"10.77.0.1/24\"\nsorce = \"x\"\n\
             [conntrack]\ncapacity = 1\n"
        ));
        assert!(matches!(e, ConfigError::Syntax(_)), "{e:?}");
        assert_eq!(e.each().len(), 1);
        let msg = e.to_string();
        assert!(msg.contains("sorce") && !msg.contains("capacity"), "{msg}");
    }

    #[test]
    fn host_address_checks_report_every_key() {
        let c = ok("[[masquerade]]\nsource = \"10.0.0.0/8\"\n\
                    [[publish]]\nproto = \"tcp\"\nport = 8080\nto = \"192.0.2.7:80\"\n");
        let e = c
            .check_host_addresses(&[ip("10.1.2.3")], &[ip("10.1.2.3"), ip("192.0.2.7")])
            .unwrap_err();
        let lines: Vec<String> = e.each().iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(lines[0].starts_with("masquerade[0].source: "), "{e}");
        assert!(lines[1].starts_with("publish[0].to: "), "{e}");
    }

    #[test]
    fn error_display_formats() {
        let e = ConfigError::Invalid {
            key: "publish[0].to".into(),
            reason: "bad".into(),
        };
        assert_eq!(e.to_string(), "publish[0].to: bad");
        let e = Config::load(Path::new("/nonexistent/netbpf-test.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string().contains("/nonexistent/netbpf-test.toml"),
            "{e}"
        );
    }

    #[test]
    fn metrics_address_defaults_to_loopback() {
        let c = ok("");
        assert_eq!(c.metrics.address, "127.0.0.1:9469".parse().unwrap());
        assert!(c.metrics.address.ip().is_loopback());
        assert_eq!(ok("[metrics]\n").metrics, MetricsConfig::default());
    }

    #[test]
    fn metrics_address_accepts_ipv4_and_ipv6() {
        let c = ok("[metrics]\naddress = \"0.0.0.0:9100\"\n");
        assert_eq!(c.metrics.address, "0.0.0.0:9100".parse().unwrap());
        let c = ok("[metrics]\naddress = \"[::1]:9469\"\n");
        assert_eq!(c.metrics.address, "[::1]:9469".parse().unwrap());
    }

    #[test]
    fn metrics_address_rejects_bad_values() {
        for (value, why) in [
            ("127.0.0.1", "is not an address:port"),
            ("localhost:9469", "is not an address:port"),
            ("127.0.0.1:70000", "is not an address:port"),
            ("127.0.0.1:0", "port 0"),
            ("224.0.0.1:9469", "multicast"),
            ("255.255.255.255:9469", "broadcast"),
        ] {
            let e = err(&format!("[metrics]\naddress = \"{value}\"\n"));
            assert!(e.starts_with("metrics.address: "), "{value}: {e}");
            assert!(e.contains(value) && e.contains(why), "{value}: {e}");
        }
        let e = err("[metrics]\nport = 9469\n");
        assert!(e.contains("port"), "unknown key named: {e}");
        let e = err("[metrics]\naddress = 9469\n");
        assert!(e.contains("address") || e.contains("string"), "{e}");
    }

    #[test]
    fn load_reads_file() {
        let path =
            std::env::temp_dir().join(format!("netbpf-config-test-{}.toml", std::process::id()));
        std::fs::write(&path, FULL).unwrap();
        let c = Config::load(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(c.unwrap(), Config::from_toml(FULL).unwrap());
    }
}
