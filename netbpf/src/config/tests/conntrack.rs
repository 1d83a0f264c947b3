//! Tests of `[conntrack]`: capacity, timeouts and the RFC-minimum warnings.

use std::time::Duration;

use super::support::*;

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
