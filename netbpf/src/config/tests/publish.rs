//! Tests of `[[publish]]`: proto, port, to, address and overlaps.

use super::support::*;
use crate::config::types::*;

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
