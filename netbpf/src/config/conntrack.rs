//! `[conntrack]`: table capacity and idle timeouts, their defaults and RFC
//! minimums, and their validation (with warnings below the minimums).

use std::time::Duration;

use serde::Deserialize;

use super::{errors::*, types::*};

/// Default conntrack table capacity (maximum number of tracked flows).
pub const DEFAULT_CONNTRACK_CAPACITY: u32 = 262_144;

/// Smallest accepted conntrack table capacity.
pub const MIN_CONNTRACK_CAPACITY: u32 = 1024;

/// Largest accepted conntrack table capacity.
pub const MAX_CONNTRACK_CAPACITY: u32 = 16_777_216;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConntrack {
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
pub(super) fn validate_conntrack(
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
