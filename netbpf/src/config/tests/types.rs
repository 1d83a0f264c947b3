//! Tests of the value types and parsers: durations, CIDRs, port ranges.

use std::time::Duration;

use super::support::*;
use crate::config::types::*;

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
