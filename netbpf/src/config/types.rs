//! The value types and parsers every section uses: [`Ipv4Cidr`],
//! [`PortRange`], [`Proto`], durations ([`parse_duration`]), ports,
//! interface names, unicast IPv4 addresses, and the `IntOrStr` form of a
//! key written as an integer or a string.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

use super::errors::*;

/// Maximum length in bytes of a Linux interface name (`IFNAMSIZ - 1`).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

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
pub(super) fn format_secs(total: u64) -> String {
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

/// Parses a plain decimal number (ASCII digits only, no sign), at most 10
/// digits.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn parse_port(s: &str) -> Result<u16, String> {
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

pub(super) fn port_range_value(key: &str, v: &IntOrStr) -> Result<PortRange, ConfigError> {
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

pub(super) fn parse_ipv4(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(key, format!("{s:?} is not an IPv4 address")))
}

/// Rejects addresses that can never be a unicast host address.
pub(super) fn check_unicast(key: &str, s: &str, ip: Ipv4Addr) -> Result<(), ConfigError> {
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

/// An integer or a string, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum IntOrStr {
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

pub(super) fn de_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IntOrStr>, D::Error> {
    d.deserialize_any(IntOrStrVisitor(
        "an integer port or a string range like \"8000-8010\"",
    ))
    .map(Some)
}

pub(super) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IntOrStr>, D::Error> {
    d.deserialize_any(IntOrStrVisitor(
        "integer seconds or a duration string like \"5m\" or \"2h4m\"",
    ))
    .map(Some)
}

/// An interface name: present and acceptable to the kernel.
pub(super) fn interface_value(
    key: &str,
    raw: Option<String>,
    what: &str,
) -> Result<String, ConfigError> {
    let name = required(key, raw, what)?;
    check_interface_name(key, &name)?;
    Ok(name)
}

/// A unicast IPv4 address.
pub(super) fn unicast_value(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    let ip = parse_ipv4(key, s)?;
    check_unicast(key, s, ip)?;
    Ok(ip)
}

/// A port as a command line gives it: a number is checked as the file's
/// `port = 80`, anything else as its `port = "8000-8010"`.
pub(super) fn cli_port(port: &str) -> IntOrStr {
    match port.parse() {
        Ok(n) => IntOrStr::Int(n),
        Err(_) => IntOrStr::Str(port.to_owned()),
    }
}
