//! Tests of `[[container]]`.

use super::support::*;

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

fn dual(addr: &str, ifname: &str, v6: &str) -> String {
    format!("{}ipv6 = \"{v6}\"\n", container(addr, ifname))
}

#[test]
fn container_ipv6_is_read_next_to_the_ipv4_address() {
    let c = ok(&format!(
        "{}{}",
        dual("10.0.0.2", "v1", "2001:db8::2"),
        container("10.0.0.3", "v2")
    ));
    assert_eq!(
        c.container[0].ipv6,
        Some("2001:db8::2".parse().expect("address"))
    );
    assert_eq!(c.container[1].ipv6, None);
}

#[test]
fn container_ipv6_rules() {
    assert_invalid(
        &dual("10.0.0.2", "v1", "10.0.0.2"),
        "container[0].ipv6",
        &["\"10.0.0.2\"", "not an IPv6 address"],
    );
    for bad in ["::", "::1", "fe80::1", "ff02::1", "::ffff:10.0.0.2"] {
        assert_invalid(
            &dual("10.0.0.2", "v1", bad),
            "container[0].ipv6",
            &[
                &format!("{bad:?}"),
                "not a unicast address a router forwards",
            ],
        );
    }
    assert_invalid(
        &format!(
            "{}{}",
            dual("10.0.0.2", "v1", "2001:db8::2"),
            dual("10.0.0.3", "v2", "2001:db8::2")
        ),
        "container[1].ipv6",
        &["already used by container[0].ipv6"],
    );
}
