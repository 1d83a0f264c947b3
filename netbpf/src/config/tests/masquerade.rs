//! Tests of `[[masquerade]]`: sources, overlaps and ports.

use super::support::*;
use crate::config::types::*;

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
